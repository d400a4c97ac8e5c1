"""The search: the Lagrangian path of allocations, the real size of each, and bisection on the metric.

Sweeping the Lagrange multiplier ``lam`` of ``D + lam * R`` from infinity to 0
moves one tensor at a time one point along the lower convex hull of its
(rate, distortion) candidates (:func:`ecnn.budget.candidates.measure`), the
move removing the most distortion per byte first: a path of allocations whose
size grows and whose distortion falls. :class:`Search` codes allocations along
the path into real files (through :func:`ecnn.codec.encode_tensor`,
:func:`ecnn.codec.encode_quantized` and :func:`ecnn.file.encode_records`),
finds the largest that fits a size (:meth:`Search.fit`), and
:func:`bisect_metric` the smallest that keeps a metric.
"""

from __future__ import annotations

import heapq
import math
from typing import Callable, Mapping

import numpy as np

from ecnn import chunkrun, codec, dtypes, file, quantize
from ecnn.budget.candidates import Tensor, symbols
from ecnn.budget import summary as budget_summary
from ecnn.budget.summary import METADATA_KEY, SUMMARY_CHARS
from ecnn.config import EncodeConfig

FIT_PROBES = 24  # at most this many allocations are coded to fit one size target
HEADER_BYTES = 160  # fit's first guess of a record's bytes in the header (name, shape, streams)
FIT_RTOL = 1e-3  # a size search stops when fitting and failing allocations are this close in estimated rate


def _path(tensors: list[Tensor]) -> list[tuple[int, int]]:
    """The Lagrangian sweep: moves ``(tensor index, hull position)`` from the smallest allocation up.

    Each move advances one tensor to its next hull point, the one removing the
    most distortion per byte; allocations along the path grow in rate and fall
    in distortion.
    """
    heap = []

    def push(i: int, pos: int) -> None:
        hull = tensors[i].hull
        if pos + 1 < len(hull):
            a, b = hull[pos], hull[pos + 1]
            dr = tensors[i].rates[b] - tensors[i].rates[a]
            dd = tensors[i].dists[a] - tensors[i].dists[b]
            slope = dd / dr if dr > 0 else math.inf
            heapq.heappush(heap, (-slope, i, pos + 1))

    for i in range(len(tensors)):
        push(i, 0)
    moves = []
    while heap:
        _, i, pos = heapq.heappop(heap)
        moves.append((i, pos))
        push(i, pos)
    return moves


class Search:
    """The allocations along the path of a plan's tensors, and the real files they make.

    Allocation ``k`` is the one after the first ``k`` moves of the path; ``cum_rate[k]``
    and ``cum_dist[k]`` are its estimated rate and predicted distortion. Records are
    coded once per (tensor, candidate) and cached.
    """

    def __init__(self, arrays, tensors: list[Tensor], exact_cfg: EncodeConfig, metadata, files=None):
        self.arrays = arrays  # all tensors: {name: (array, dtype)}
        self.tensors = tensors
        self.by_name = {t.name: t for t in tensors}
        self.moves = _path(tensors)
        self.metadata = dict(metadata or {})
        self.files = dict(files or {})  # stored files (a model folder's config, tokenizer): in every size
        self.exact_cfg = exact_cfg
        self.summary = "x" * SUMMARY_CHARS  # room for the summary written with the file
        self._records: dict = {}  # (name, step or None) -> (record, payload)
        self.ratio: dict[str, float] = {}  # per tensor: coded payload / estimated rate, where measured
        # cumulative rate and distortion along the path
        pos = [0] * len(tensors)
        r0 = sum(t.rates[t.hull[0]] for t in tensors)
        d0 = sum(t.dists[t.hull[0]] for t in tensors)
        self.cum_rate, self.cum_dist = [r0], [d0]
        self._move_tensor = np.array([i for i, _ in self.moves], np.int64)
        drate = []
        for i, p in self.moves:
            t = tensors[i]
            a, b = t.hull[pos[i]], t.hull[p]
            pos[i] = p
            drate.append(t.rates[b] - t.rates[a])
            self.cum_rate.append(self.cum_rate[-1] + t.rates[b] - t.rates[a])
            self.cum_dist.append(self.cum_dist[-1] + t.dists[b] - t.dists[a])
        self._move_drate = np.array(drate, np.float64)

    @property
    def last(self) -> int:
        """The largest allocation: every tensor at the end of its hull."""
        return len(self.moves)

    def choice(self, k: int) -> dict[str, int]:
        """Candidate index of each tensor after ``k`` moves."""
        pos = [0] * len(self.tensors)
        for i, p in self.moves[:k]:
            pos[i] = p
        return {t.name: t.hull[pos[i]] for i, t in enumerate(self.tensors)}

    def steps(self, k: int | dict) -> dict[str, float]:
        """The step of each tensor after ``k`` moves (or of a choice), tensors kept exact left out."""
        choice = self.choice(k) if isinstance(k, (int, np.integer)) else k
        return {n: float(self.by_name[n].steps[c]) for n, c in choice.items() if not self.by_name[n].cands[c].exact}

    def plain(self, bits: int) -> dict[str, int] | None:
        """The choice that is plain ``pack --bits bits``: every tensor plain pack quantizes on
        its plain grid, the others exact (None if some tensor lacks that candidate)."""
        choice = {t.name: t.plain_index(bits) for t in self.tensors}
        return None if any(c is None for c in choice.values()) else choice

    def distortion(self, choice: dict[str, int]) -> float:
        """The predicted distortion of a choice (the search's objective)."""
        return float(sum(self.by_name[n].dists[c] for n, c in choice.items()))

    def grid(self, name: str, c: int) -> np.ndarray:
        """Candidate ``c`` of a tensor as the dequantized storage array the file will hold."""
        t = self.by_name[name]
        if t.cands[c].exact:
            return t.arr
        s = float(t.steps[c])
        codes = t.row_codes(c)
        if codes is not None:
            return quantize.dequantize_rows(symbols(t, c), t.dt, s, codes).reshape(t.arr.shape)
        return quantize.dequantize(symbols(t, c), t.dt, s).reshape(t.arr.shape)

    def record(self, name: str, c: int | None) -> tuple[dict, bytes]:
        """The record and payload of tensor ``name`` as candidate ``c`` (None: stored exactly), cached."""
        key = (name, c)
        if key not in self._records:
            arr, dt = self.arrays[name]
            t = self.by_name.get(name)
            cand = None if c is None else t.cands[c]
            if cand is None or cand.exact:
                if (name, None) not in self._records:
                    self._records[(name, None)] = codec.encode_tensor(name, arr, dt, self.exact_cfg)
                self._records[key] = self._records[(name, None)]
            elif cand.bits:  # what plain `pack --bits` writes, byte for byte
                cfg = EncodeConfig(bits=cand.bits, chunk=self.exact_cfg.chunk, align=self.exact_cfg.align)
                self._records[key] = codec.encode_tensor(name, arr, dt, cfg)
            elif cand.rows:  # uniform_rows with the candidate's own row codes
                self._records[key] = codec.encode_quantized(name, dt, arr.shape, symbols(t, c), float(t.steps[c]), t.codes, self.exact_cfg)
            else:
                step = float(self.by_name[name].steps[c])
                cfg = EncodeConfig(steps=((name, step),), chunk=self.exact_cfg.chunk, align=self.exact_cfg.align)
                self._records[key] = codec.encode_tensor(name, self.grid(name, c), dt, cfg)
        return self._records[key]

    def _ensure(self, keys: list) -> None:
        """Code the records of ``keys`` (``(name, candidate)``) not yet cached, side by side
        on :func:`ecnn.chunkrun.workers` workers, as plain ``pack`` does."""
        todo = [key for key in dict.fromkeys(keys) if key not in self._records]
        if len(todo) < 2:
            return
        costs = [self.arrays[n][0].size for n, _ in todo]
        for i, (rec, pay) in chunkrun.imap_packed(len(todo), lambda i: self.record(*todo[i]), costs):
            self._records[todo[i]] = (rec, bytes(pay))

    def _parts(self, k: int | dict, metadata: Mapping[str, str]) -> list[bytes]:
        """The file of allocation ``k`` (or of a choice) with ``metadata``, as byte strings, from the cached records."""
        choice = self.choice(k) if isinstance(k, (int, np.integer)) else k
        self._ensure([(name, choice.get(name)) for name in self.arrays])
        recs, pays = [], []
        for name in self.arrays:
            rec, pay = self.record(name, choice.get(name))
            recs.append(rec)
            pays.append(pay)
        return file.encode_records(recs, pays, metadata, self.exact_cfg.align, files=self.files)

    def size(self, k: int | dict, summary: str | None = "") -> int:
        """The real file size of allocation ``k`` (or of a choice; tensors coded one by one,
        cached), with ``self.summary`` (or room for it; ``summary`` instead when given, None:
        no summary) as the budget metadata."""
        md = dict(self.metadata)
        text = self.summary if summary == "" else summary
        if text is not None:
            md[METADATA_KEY] = text
        return sum(len(p) for p in self._parts(k, md))

    def dequantized(self, k: int | dict) -> dict[str, tuple[np.ndarray, dtypes.DType]]:
        """The allocated tensors of allocation ``k`` (or of a choice) as the file will hold them."""
        choice = self.choice(k) if isinstance(k, (int, np.integer)) else k
        return {n: (self.grid(n, c), self.arrays[n][1]) for n, c in choice.items()}

    def write(self, choice: dict, summ: dict, limit: int, target: int | None, plain_bits: int | None, metadata, path) -> bytes:
        """The final file of ``choice`` with the budget summary ``summ`` (at most ``limit`` characters) among
        ``metadata``, written atomically to ``path`` if given. When the plain ``--bits plain_bits`` file was
        kept, the summary goes in only where it still fits ``target``: whole, else its version and
        ``plain_bits``, else not at all."""
        import json

        md = dict(metadata or {})
        if plain_bits is None:
            md[METADATA_KEY] = budget_summary.summary_json(summ, limit)
        else:
            summ["plain_bits"] = plain_bits
            for text in (budget_summary.summary_json(summ, limit), json.dumps({"version": budget_summary.VERSION, "plain_bits": plain_bits})):
                if self.size(choice, text) <= target:
                    md[METADATA_KEY] = text
                    break
        data = self.encode(choice, md)
        if path is not None:
            from ecnn.container.writer import atomic_write

            atomic_write(path, [data])
        return data

    def encode(self, k: int | dict, metadata: Mapping[str, str]) -> bytes:
        """The file of allocation ``k`` (or of a choice) with ``metadata``, from the cached records (as
        ``ecnn.encode`` with the allocation's steps would write it, byte for byte)."""
        return b"".join(self._parts(k, metadata))

    def _payload_ratios(self, k: int) -> None:
        """Update each tensor's ratio of coded payload to estimated rate from allocation ``k``'s records."""
        for name, c in self.choice(k).items():
            est = float(self.by_name[name].rates[c])
            if est >= 64.0 and (name, c) in self._records:
                self.ratio[name] = len(self._records[(name, c)][1]) / est

    def fit(self, target: int, lo: int = 0) -> int:
        """The largest ``k >= lo`` whose real file fits in ``target`` bytes (``lo - 1`` if none).

        The search predicts real sizes from the estimated rates, corrected by the
        coded size of the last allocation that fitted and, per tensor, by the
        ratio of its coded payload to its estimate; each prediction is then
        coded (only the tensors whose step changed). It stops at a fitting
        allocation whose next one along the path does not fit, or whose
        estimated rate is within ``FIT_RTOL`` of the target of the smallest
        known not to fit.
        """
        if lo == 0 and self.last > 0:
            # A first probe from the estimates alone, so that the smallest allocation,
            # seldom the answer, is coded only when that probe does not fit.
            self._ensure([(n, None) for n in self.arrays if n not in self.by_name])
            fixed = sum(len(self._records[(n, None)][1]) for n in self.arrays if n not in self.by_name)
            room = target - fixed - HEADER_BYTES * len(self.arrays) - len(self.summary)
            k = int(np.searchsorted(np.asarray(self.cum_rate), room, side="right")) - 1
            if k > 0 and self.size(k) <= target:
                lo = k
        if self.size(lo) > target:
            return lo - 1
        self._payload_ratios(lo)
        good, bad = lo, self.last + 1  # fits; smallest known not to fit
        cum = np.asarray(self.cum_rate, np.float64)
        for _ in range(FIT_PROBES):
            if bad - good <= 1 or cum[bad - 1] - cum[good] <= FIT_RTOL * target:
                break
            f = np.array([self.ratio.get(t.name, 1.0) for t in self.tensors])
            inc = f[self._move_tensor[good:bad - 1]] * self._move_drate[good:bad - 1]
            pred = self.size(good) + np.cumsum(inc)  # predicted size of good+1 .. bad-1
            k = good + int(np.searchsorted(pred, target, side="right"))
            k = min(max(k, good + 1), bad - 1)
            if self.size(k) <= target:
                good = k
            else:
                bad = k
            self._payload_ratios(k)
        return good


def bisect_metric(search: Search, run: Callable[[int], float], hi: int, metric_hi: float, floor_metric: float, rtol: float, report):
    """The smallest allocation on the path (<= hi) whose metric is >= floor_metric, by bisection on size.

    Assumes the metric grows with the allocation; the returned allocation was
    evaluated and passed.
    """
    good, good_m = hi, metric_hi
    bad = -1
    # Bisect in log-size between a failing and a passing allocation.
    steps = 0
    while good - bad > 1:
        lo_r = search.cum_rate[max(bad, 0)]
        hi_r = search.cum_rate[good]
        if bad >= 0 and hi_r <= lo_r * (1 + rtol):
            break
        mid_r = math.sqrt(max(lo_r, 1.0) * hi_r)
        mid = int(np.searchsorted(np.asarray(search.cum_rate), mid_r))
        mid = min(max(mid, bad + 1), good - 1)
        steps += 1
        report("evaluate", steps, steps + max(1, int(math.log2(max(good - bad, 2)))))
        m = run(mid)
        if m >= floor_metric:
            good, good_m = mid, m
        else:
            bad = mid
    return good, good_m

