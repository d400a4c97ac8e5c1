"""The allocation summary stored in the file (metadata key :data:`METADATA_KEY`), read by ``ecnn report``.

A compact JSON object: the budget asked for, the sensitivity used, the
metrics, the allocations evaluated or coded (``sweep``: ``[bytes,
distortion, metric]``) and about 32 points of the path (``path``:
``[predicted bytes, distortion]``). It is thinned to fit the room reserved
for it, so that the file's size is known before the summary is written.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ecnn.budget.config import SweepPoint
    from ecnn.budget.search import Search

METADATA_KEY = "ecnn.budget"  # JSON summary of the allocation, read by `ecnn report`
SUMMARY_CHARS = 1024  # the summary is thinned to fit; sizes are computed with this much room
SUMMARY_SHARE = 0.01  # ... or less: at most this share of the target (or largest) file, so small files pay little
SUMMARY_MIN = 256  # ... but room for the summary's plain fields
VERSION = 1


def build(search: Search, sweep: list[SweepPoint], target: int | None, drop: float | None, sensitivity: str, base=None, metric=None) -> dict:
    """The summary of a search as a dict (:func:`summary_json` makes it text).

    Args:
        search: the search (its path is summarized).
        sweep: the allocations evaluated or coded so far.
        target: ``target_bytes`` asked for, or None.
        drop: ``max_metric_drop`` asked for, or None.
        sensitivity: the sensitivity used (``"output"``, ``"fisher"`` or ``"weights"``).
        base: the original weights' metric, or None.
        metric: the file's metric, or None.
    """
    return {
        "version": VERSION,
        "target_bytes": target,
        "max_metric_drop": drop,
        "sensitivity": sensitivity,
        "base_metric": base,
        "metric": metric,
        "sweep": [[p.size, p.distortion, p.metric] for p in sorted(sweep, key=lambda p: p.size)],
        "path": _path_summary(search),
    }


def _g(x, digits: int = 4):
    """``x`` rounded to ``digits`` significant digits (None stays None)."""
    return None if x is None else float(f"{x:.{digits}g}")


def _thin(points: list, n: int) -> list:
    """About ``n`` evenly spaced points, the first and last included."""
    if len(points) <= n:
        return points
    idx = sorted({int(round(i * (len(points) - 1) / (n - 1))) for i in range(n)})
    return [points[i] for i in idx]


def _path_summary(search: Search, points: int = 32) -> list[list[float]]:
    """About ``points`` (predicted bytes, distortion) pairs along the path, for plots."""
    n = search.last
    ks = sorted({int(round(i * n / (points - 1))) for i in range(points)}) if n else [0]
    return [[round(float(search.cum_rate[k])), _g(search.cum_dist[k])] for k in ks]


def summary_room(size: int) -> int:
    """Characters reserved for the allocation summary in a file of about ``size`` bytes."""
    return int(min(SUMMARY_CHARS, max(SUMMARY_MIN, SUMMARY_SHARE * size)))


def summary_json(summary: dict, limit: int = SUMMARY_CHARS) -> str:
    """The summary as compact JSON of at most ``limit`` characters (path and sweep thinned)."""
    s = dict(summary)
    s["sweep"] = [[a, _g(b), _g(c, 6)] for a, b, c in s["sweep"]]
    for n in (32, 24, 16, 12, 8, 4, 2, 0):
        s["path"] = _thin(summary["path"], n) if n else []
        s["sweep"] = _thin(s["sweep"], max(n, 2)) if n else []
        text = json.dumps(s, separators=(",", ":"))
        if len(text) <= limit:
            return text
    return json.dumps({"version": VERSION}, separators=(",", ":"))

