"""The ``ecnn`` command: pack, unpack, info, verify, report."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from ecnn.config import EFFORTS
from ecnn.errors import EcnnError, OutputExists, SameFile

EXAMPLES = """\
examples:
  ecnn pack model.safetensors -o model.ecnn --bits 8     quantize weights to 8 bits
  ecnn pack pytorch_model.bin -o model.ecnn --lossless   keep every bit
  ecnn pack ckpt/ -o model.ecnn --step 0.002             sharded checkpoint folder
  ecnn pack bert/ -o bert.ecnn --bits 8                  Hugging Face folder: config and tokenizer stored too
  ecnn pack model.safetensors --lossless --effort balanced        several times faster to pack
  ecnn info model.ecnn                                   sizes per tensor
  ecnn verify model.ecnn                                 check every checksum, decode all
  ecnn unpack model.ecnn -o model.safetensors            back to safetensors (or .pt)
  ecnn unpack model.ecnn -o ckpt/ --shard-size 2GB       sharded folder, one tensor in memory at a time
  ecnn unpack bert.ecnn -o bert2                         the folder again: transformers loads it
  ecnn pack model.onnx -o model.ecnn --bits 8            ONNX: graph kept, weights packed
  ecnn unpack model.ecnn -o model.onnx                   back to ONNX
  ecnn pack model.onnx --bits 4 --check inputs.npz       ONNX: also run both models, print the deviation
  ecnn pack model.onnx --target-size 2MB --calib-inputs inputs.npz   ONNX: steps per weight measured in ONNX Runtime
  ecnn pack model.safetensors -o model.ecnn --target-size 2MB     steps per tensor to fit 2 MB
  ecnn pack model.pt --max-drop 0.5 --eval my_eval.py:accuracy    smallest file losing <= 0.5
  ecnn report model.ecnn -o report.html                  HTML page with plots
"""


UNPACK_HELP = """\
Decode a .ecnn file. Where -o goes:
  an existing folder, a path ending in '/', or a path without a suffix
  (or any path but FILE.safetensors/.pt/.pth/.bin/.onnx, for a .ecnn that
  holds stored files, such as one packed from a Hugging Face model folder)
      a safetensors checkpoint folder in Hugging Face's layout: one
      model.safetensors when the tensors fit in --shard-size bytes, else
      model-00001-of-0000N.safetensors shards and model.safetensors.index.json;
      with the .ecnn's stored files (config.json, tokenizer files, ...)
      written beside them. Without -o, such a .ecnn unpacks to a folder
      named like it without .ecnn
  FILE.safetensors   one safetensors file
  FILE.pt, .pth, .bin   a torch.save state dict
  FILE.onnx          the ONNX model a .ecnn was packed from

Safetensors output, file or folder, is decoded and written one tensor at a
time: a checkpoint larger than memory unpacks in about the memory of its
largest tensor. A .pt file holds every tensor in memory at once (torch.save
takes the whole dict). Outputs appear complete or not at all. With --force a
folder is replaced only if it holds nothing but .safetensors files, the
index, and files and folders named like the .ecnn's stored files.
"""


def _progress_bar(enabled: bool, desc: str, unit: str = "tensor"):
    """A progress callback drawing a bar on stderr when it is a terminal.

    With ``unit="B"`` the callback's positions are bytes, and the bar shows
    bytes done, MB/s and the time left.
    """
    if not enabled or not sys.stderr.isatty():
        return None, lambda: None
    from tqdm import tqdm

    bar = None

    def update(name: str, i: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            scaled = {"unit_scale": True, "unit_divisor": 1000} if unit == "B" else {}
            bar = tqdm(total=total, desc=desc, unit=unit, leave=False, file=sys.stderr, **scaled)
        bar.n = i
        bar.set_postfix_str(name[-40:], refresh=True)

    def close() -> None:
        if bar is not None:
            bar.close()

    return update, close


def _check_parent(path: Path) -> None:
    """The folder an output goes in must exist (InvalidOption, before any work is done)."""
    folder = path.absolute().parent
    if not folder.is_dir():
        from ecnn.errors import InvalidOption

        raise InvalidOption(f"{folder}: no such folder to write the output in")


def _confirm_overwrite(path: Path, force: bool) -> None:
    """Check that the output's folder exists, and ask before replacing an existing output (unless ``force``)."""
    _check_parent(path)
    if not path.exists() or force:
        return
    if sys.stdin.isatty() and sys.stderr.isatty():
        sys.stderr.write(f"{path} exists. Overwrite? [y/N] ")
        sys.stderr.flush()
        if sys.stdin.readline().strip().lower() in ("y", "yes"):
            return
    raise OutputExists(f"{path} exists; pass --force to overwrite it")


def _ratio(original: int, coded: int) -> str:
    """``original / coded`` as ``4.44x``; never ``0.00x``: below 0.01 it reads ``<0.01x``, and ``-`` without bytes."""
    if original <= 0 or coded <= 0:
        return "-"
    r = original / coded
    return f"{r:.2f}x" if r >= 0.01 else "<0.01x"


def _emit_json(obj: dict) -> None:
    """The one JSON object that ``--json`` prints on stdout."""
    print(json.dumps(obj, indent=1))


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return str(n)


_UNITS = {"": 1, "k": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mib": 1 << 20, "g": 1 << 30, "gib": 1 << 30, "t": 1 << 40, "tib": 1 << 40}


def _size(text: str) -> int:
    """A byte count for the decoded-size caps: ``4096``, ``512MiB``, ``8G``."""
    t = text.strip().lower().replace(" ", "")
    num = t.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = t[len(num) :]
    if not num.isdigit() or unit not in _UNITS:
        raise argparse.ArgumentTypeError(f"expected a byte count such as 4096, 512MiB or 8GiB, got {text!r}")
    return int(num) * _UNITS[unit]


_DECIMAL_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}


def _shard_size(text: str) -> int:
    """A shard size: what :func:`_size` reads, and Hugging Face's decimal units (``5GB`` = 5,000,000,000 bytes)."""
    t = text.strip().lower().replace(" ", "")
    num = t.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = t[len(num) :]
    scale = _DECIMAL_UNITS.get(unit, _UNITS.get(unit))
    try:
        value = float(num) if scale is not None and num and num[0].isdigit() else -1.0
    except ValueError:
        value = -1.0
    if not (value * (scale or 0) >= 1 and value < float("inf")):
        raise argparse.ArgumentTypeError(
            f"expected a size such as 5GB (5,000,000,000 bytes), 4GiB or 500MB, got {text!r}"
        )
    return int(value * scale)


def _limits(a):
    """The reader's caps from ``--max-tensor-bytes`` and ``--max-total-bytes`` (spec/FORMAT.md, section 9.2)."""
    from ecnn.container.format import Limits

    d = Limits()
    return Limits(
        max_tensor_bytes=d.max_tensor_bytes if a.max_tensor_bytes is None else a.max_tensor_bytes,
        max_total_bytes=d.max_total_bytes if a.max_total_bytes is None else a.max_total_bytes,
        max_file_bytes=d.max_file_bytes if a.max_file_bytes is None else a.max_file_bytes,
        max_files_bytes=d.max_files_bytes if a.max_files_bytes is None else a.max_files_bytes,
    )


def _add_limits(sp) -> None:
    sp.add_argument(
        "--max-tensor-bytes",
        type=_size,
        metavar="SIZE",
        help="refuse files declaring a tensor that decodes to more than SIZE (e.g. 2GiB; default 64GiB)",
    )
    sp.add_argument(
        "--max-total-bytes",
        type=_size,
        metavar="SIZE",
        help="refuse files whose tensors decode to more than SIZE in all (default 1TiB)",
    )
    sp.add_argument(
        "--max-file-bytes",
        type=_size,
        metavar="SIZE",
        help="refuse files holding a stored file (config, tokenizer, ...) larger than SIZE (default 256MiB)",
    )
    sp.add_argument(
        "--max-files-bytes",
        type=_size,
        metavar="SIZE",
        help="refuse files whose stored files take more than SIZE in all (default 1GiB)",
    )


def _metadata(pairs: list[str]) -> dict[str, str]:
    out = {}
    for p in pairs:
        if "=" not in p:
            from ecnn.errors import InvalidOption

            raise InvalidOption(f"--metadata expects KEY=VALUE, got {p!r}")
        k, v = p.split("=", 1)
        out[k] = v
    return out


# --- commands ---------------------------------------------------------------


def cmd_pack(a) -> int:
    from ecnn import file as efile
    from ecnn import io as eio
    from ecnn.config import make_config

    src = Path(a.input)
    out = Path(a.output) if a.output else src.with_suffix(".ecnn")
    if src.is_dir() and not a.output:
        out = src.with_name(src.name + ".ecnn")
    if eio.same_file(src, out) or (src.resolve() == out.resolve()):
        raise SameFile(f"refusing to overwrite the input {src} with the output")
    onnx_in = not src.is_dir() and eio.kind_of(src) == "onnx"
    if a.check is not None and not onnx_in:
        from ecnn.errors import InvalidOption

        raise InvalidOption("--check runs .onnx models")
    if a.target_size is not None or a.max_drop is not None:
        return _pack_budget(a, src, out)
    cfg = make_config(
        bits=a.bits, step=a.step, lossless=a.lossless, exact=tuple(a.exact), per_row=not a.per_tensor, effort=a.effort,
        format_minor=a.format_minor,
    )  # fmt: skip
    _confirm_overwrite(out, a.force)
    t0 = time.perf_counter()
    if onnx_in:
        return _pack_onnx(a, src, out, cfg, t0)
    srcs = eio.open_weights(src)  # read one tensor at a time while encoding: memory stays bounded
    in_bytes = sum(s.nbytes for s in srcs)
    folder = eio.model_folder_files(src) if src.is_dir() and not a.no_files else None
    stored = folder.stored if folder else {}
    update, close = _progress_bar(not a.quiet, "packing", unit="B")
    try:
        size = efile.save_stream(srcs, out, cfg, _metadata(a.metadata), update, files=stored)
    finally:
        close()
    dt = time.perf_counter() - t0
    if a.json:
        figures = _pack_figures(out, in_bytes, size, dt)
        if folder is not None:
            figures["stored_files"] = len(folder.stored)
            figures["stored_bytes"] = folder.nbytes
        _emit_json(figures)
    elif not a.quiet:
        print(
            f"packed {len(srcs)} tensors, {_human(in_bytes)} -> {_human(size)} "
            f"({_ratio(in_bytes, size)}) in {dt:.1f} s: {out}"
        )
        if folder is not None:
            print(_stored_summary(folder))
    return 0


def _stored_summary(folder) -> str:
    """One line on the files ``pack FOLDER/`` stored, and one per kind of file left out."""
    names = ", ".join(folder.stored)
    n = len(folder.stored)
    lines = [f"stored {n} file{'' if n == 1 else 's'} ({_human(folder.nbytes)}){': ' + names if names else ''}"]
    reasons: dict[str, list[str]] = {}
    for name, why in folder.skipped:
        reasons.setdefault(why, []).append(name)
    for why, names_ in reasons.items():
        shown = ", ".join(names_[:5]) + (f" and {len(names_) - 5} more" if len(names_) > 5 else "")
        lines.append(f"  not stored ({why}): {shown}")
    return "\n".join(lines)


def _pack_figures(out: Path, in_bytes: int, size: int, seconds: float) -> dict:
    """What ``pack --json`` prints: sizes, ratio, tensors quantized and kept exact (read back from the header), time."""
    from ecnn import file as efile

    with efile.EcnnFile(out) as f:
        weights = set(f.weight_names())  # a packed ONNX graph is not a weight
        infos = [i for i in f.infos() if i.name in weights]
    quantized = sum(i.step is not None for i in infos)
    return {
        "output": str(out),
        "input_bytes": in_bytes,
        "output_bytes": size,
        "ratio": in_bytes / size if size else None,
        "tensors": len(infos),
        "quantized": quantized,
        "exact": len(infos) - quantized,
        "seconds": round(seconds, 3),
    }


def _pack_onnx(a, src: Path, out: Path, cfg, t0: float) -> int:
    """``pack model.onnx``: what was quantized, kept exact and left in the graph; ``--check`` runs both models."""
    from ecnn import onnx as eonnx

    feeds = reference = None
    if a.check is not None:  # inputs and the original's run first: a bad .npz fails before any work
        feeds = eonnx.check_inputs(src, None if a.check == "synthetic" else a.check)
        reference = eonnx.run_model(src, feeds)
    update, close = _progress_bar(not a.quiet, "packing", unit="B")
    try:
        r = eonnx.pack(src, out, cfg, _metadata(a.metadata), update)
    finally:
        close()
    if cfg.quantizes and r.quantized[0] == 0:
        print(
            f"warning: {'--bits' if a.bits is not None else '--step'} quantized nothing: the model has no float "
            "weight with 2+ dimensions outside the graph (every tensor was stored exactly or left in the graph)",
            file=sys.stderr,
        )
    devs = eonnx.compare(src, out, feeds, reference=reference) if feeds is not None else None
    if a.json:
        figures = _pack_figures(out, r.quantized[1] + r.exact[1], r.size, time.perf_counter() - t0)
        figures.update(
            model_bytes=r.model_bytes, graph_bytes=r.graph_bytes, quantized_bytes=r.quantized[1],
            exact_bytes=r.exact[1], in_graph=r.in_graph[0], in_graph_bytes=r.in_graph[1],
        )  # fmt: skip
        if devs is not None:
            figures["check"] = _check_figures(a, devs)
        _emit_json(figures)
        return 0
    if not a.quiet:
        q, e, g = r.quantized, r.exact, r.in_graph
        print(
            f"packed ONNX model, {_human(r.model_bytes)} -> {_human(r.size)} ({_ratio(r.model_bytes, r.size)}) "
            f"in {time.perf_counter() - t0:.1f} s: {out}\n"
            f"  quantized:         {q[0]} tensors, {_human(q[1])}\n"
            f"  stored exactly:    {e[0]} tensors, {_human(e[1])}\n"
            f"  left in the graph: {g[0]} tensors, {_human(g[1])} (inside the {_human(r.graph_bytes)} graph, "
            "coded losslessly)"
        )
    if devs is not None and not a.quiet:
        _print_check(a, devs)
    return 0


def _check_figures(a, devs) -> dict:
    """``pack --check --json``: each output's deviation."""
    return {
        "inputs": "synthetic" if a.check == "synthetic" else a.check,
        "outputs": [
            {"name": d.name, "shape": list(d.shape), "max_abs": d.max_abs, "range": d.range,
             "relative": d.relative, "top1": list(d.top1) if d.top1 else None}
            for d in devs
        ],
    }  # fmt: skip


def _print_check(a, devs) -> None:
    """``pack --check``: each output's deviation, one line each."""
    kind = (
        "synthetic inputs made from the graph's declared shapes and dtypes (dynamic dims = 1; not real data)"
        if a.check == "synthetic"
        else f"inputs from {a.check}"
    )
    print(f"check, original vs packed in ONNX Runtime, on {kind}:")
    for d in devs:
        top1 = f"; top-1 agreement {d.top1[0]}/{d.top1[1]}" if d.top1 else ""
        print(
            f"  {d.name} {list(d.shape)}: max |deviation| {d.max_abs:.4g} "
            f"({100 * d.relative:.3g}% of its range {d.range:.4g}){top1}"
        )


def _pack_budget(a, src: Path, out: Path) -> int:
    """``pack --target-size`` / ``--max-drop``: steps chosen per tensor by ``ecnn.compress``."""
    from ecnn import budget
    from ecnn import io as eio
    from ecnn.errors import InvalidOption

    if a.bits is not None or a.step is not None or a.lossless or a.per_tensor or a.effort != "best" or a.format_minor != 4:
        raise InvalidOption(
            "--target-size and --max-drop choose the steps and search at full effort in the current format; "
            "drop --bits, --step, --lossless, --per-tensor, --effort and --format-minor"
        )
    if not src.is_dir() and eio.kind_of(src) == "onnx":
        return _pack_onnx_budget(a, src, out)
    if a.calib_inputs is not None or a.drop_metric is not None:
        raise InvalidOption("--calib-inputs and --drop-metric are for .onnx models; weight files take --calib and --eval")
    if a.max_drop is not None and not a.eval:
        raise InvalidOption("--max-drop needs --eval module:function")
    target = budget.parse_size(a.target_size) if a.target_size is not None else None
    evaluate = budget.load_callable(a.eval) if a.eval else None
    calibration = budget.load_callable(a.calib) if a.calib else None
    _confirm_overwrite(out, a.force)
    t0 = time.perf_counter()
    tensors = eio.load_weights(src)
    in_bytes = sum(t.numel() * t.element_size() for t in tensors.values())
    folder = eio.model_folder_files(src) if src.is_dir() and not a.no_files else None  # counted in --target-size
    cfg = budget.BudgetConfig(exact=tuple(a.exact))
    if calibration is None and not a.quiet:
        print(budget.NO_CALIBRATION, file=sys.stderr)
    res = budget.compress(
        tensors, out, target_bytes=target, max_metric_drop=a.max_drop, evaluate=evaluate,
        calibration=calibration, config=cfg, metadata=_metadata(a.metadata), progress=_stage_logger(a.quiet),
        files=folder.stored if folder else None,
    )  # fmt: skip
    if a.json:
        figures = _pack_figures(out, in_bytes, res.size, time.perf_counter() - t0)
        if res.metric is not None:
            figures.update(base_metric=res.base_metric, metric=res.metric)
        if folder is not None:
            figures["stored_files"] = len(folder.stored)
            figures["stored_bytes"] = folder.nbytes
        _emit_json(figures)
    elif not a.quiet:
        extra = f"; metric {res.base_metric:.6g} -> {res.metric:.6g}" if res.metric is not None else ""
        extra += f"; the plain --bits {res.plain_bits} file (no better allocation found)" if res.plain_bits else ""
        print(
            f"packed {len(tensors)} tensors ({len(res.steps)} with chosen steps), {_human(in_bytes)} -> {_human(res.size)} "
            f"({_ratio(in_bytes, res.size)}) in {time.perf_counter() - t0:.1f} s{extra}: {out}"
        )
        if folder is not None:
            print(_stored_summary(folder))
    return 0


CALIB_SYNTHETIC_DYNAMIC = 16  # dynamic dims of synthetic calibration inputs (1 if the model cannot run so)


def _pack_onnx_budget(a, src: Path, out: Path) -> int:
    """``pack model.onnx --target-size`` / ``--max-drop``: steps chosen per weight on the model's outputs
    in ONNX Runtime (:func:`ecnn.budget.measured.compress_onnx`)."""
    import dataclasses

    from ecnn import budget
    from ecnn import onnx as eonnx
    from ecnn.budget import measured
    from ecnn.errors import InvalidOption

    if a.eval or a.calib:
        raise InvalidOption(
            "for .onnx models the budget measures the model's outputs in ONNX Runtime: give --calib-inputs "
            "inputs.npz (and --drop-metric for --max-drop) instead of --eval and --calib"
        )
    target = budget.parse_size(a.target_size) if a.target_size is not None else None
    if a.calib_inputs is None:
        feeds = None
        for dynamic in (CALIB_SYNTHETIC_DYNAMIC, 1):  # a batch of rows where the graph lets the size vary
            feeds = eonnx.check_inputs(src, None, dynamic=dynamic)
            try:
                eonnx.run_model(src, feeds)
                break
            except InvalidOption:
                if dynamic == 1:
                    raise
        dims = "dynamic dims = 1" if dynamic == 1 else f"dynamic dims = {dynamic}"
        print(
            f"warning: no --calib-inputs: the budget is measured on synthetic inputs made from the graph's declared "
            f"shapes and dtypes ({dims}; standard normal floats, integers 0 or 1), not real data; the steps it "
            "chooses can be far from what real inputs need. Give --calib-inputs inputs.npz with typical inputs",
            file=sys.stderr,
        )
    else:
        feeds = eonnx.check_inputs(src, a.calib_inputs)
    check = reference = None
    if a.check is not None:  # held-out inputs, read and run first: a bad .npz fails before any work
        check = eonnx.check_inputs(src, None if a.check == "synthetic" else a.check)
        reference = eonnx.run_model(src, check)
    _confirm_overwrite(out, a.force)
    t0 = time.perf_counter()
    res = measured.compress_onnx(
        src, out, feeds, target_bytes=target, max_drop=a.max_drop, metric=a.drop_metric,
        config=dataclasses.replace(measured.ONNX_CONFIG, exact=tuple(a.exact)), metadata=_metadata(a.metadata),
        progress=_stage_logger(a.quiet),
    )  # fmt: skip
    in_bytes = src.stat().st_size
    name = measured.metric_of(res.data)
    devs = eonnx.compare(src, out, check, reference=reference) if check is not None else None
    if a.json:
        figures = _pack_figures(out, in_bytes, res.size, time.perf_counter() - t0)
        figures.update(
            base_metric=res.base_metric, metric=res.metric, metric_name=name, calib_inputs=a.calib_inputs or "synthetic",
            plain_bits=res.plain_bits,
        )  # fmt: skip
        if devs is not None:
            figures["check"] = _check_figures(a, devs)
        _emit_json(figures)
    elif not a.quiet:
        print(
            f"packed ONNX model, {len(res.steps)} weights with chosen steps, {_human(in_bytes)} -> {_human(res.size)} "
            f"({_ratio(in_bytes, res.size)}) in {time.perf_counter() - t0:.1f} s; {name} on the calibration inputs "
            f"{res.base_metric:.4g} -> {res.metric:.4g}"
            + (f"; the plain --bits {res.plain_bits} file (no better allocation found)" if res.plain_bits else "")
            + f": {out}"
        )
        if devs is not None:
            _print_check(a, devs)
    return 0


def _stage_logger(quiet: bool):
    """A progress callback printing each stage once on stderr."""
    if quiet:
        return None
    seen = set()

    def update(stage: str, done: int, total: int) -> None:
        if stage not in seen and stage != "done":
            seen.add(stage)
            print(f"{stage}...", file=sys.stderr, flush=True)

    return update


def cmd_report(a) -> int:
    from ecnn import budget, report
    from ecnn import io as eio

    out = Path(a.output) if a.output else Path(a.input).with_suffix(".html")
    _confirm_overwrite(out, a.force)
    evaluate = budget.load_callable(a.eval) if a.eval else None
    original = eio.load_weights(Path(a.original)) if a.original else None
    path = report.write_report(a.input, out, evaluate=evaluate, original=original, progress=_stage_logger(a.quiet), limits=_limits(a))
    if not a.quiet:
        print(f"wrote {path} (plots in {path.with_name(path.stem + '_files')})")
    return 0


def _unpack_kind(text: str | None, out: Path, has_files: bool = False) -> str:
    """What ``unpack -o`` writes: ``folder`` (an existing folder, a path ending in ``/``, or one without a suffix),
    else ``safetensors``, ``torch`` or ``onnx`` by the suffix; for a file with stored files, a folder unless
    the suffix names one of those."""
    from ecnn import io as eio
    from ecnn.errors import InvalidOption, UnreadableInput

    if out.is_dir() or (text is not None and text.endswith(("/", os.sep))) or not out.suffix:
        return "folder"
    try:
        kind = eio.kind_of(out)
    except UnreadableInput:
        kind = None
    if has_files and kind not in ("safetensors", "torch", "onnx"):
        return "folder"  # e.g. -o bert.restored: the model folder the stored files come from
    if kind not in ("safetensors", "torch", "onnx"):
        raise InvalidOption(
            f"{out}: unpack writes .safetensors, .pt, .pth, .bin, .onnx or a folder (a path ending in /)"
        )
    return kind


def cmd_unpack(a) -> int:
    from ecnn import file as efile
    from ecnn import io as eio
    from ecnn.errors import InvalidOption

    src = Path(a.input)
    out = Path(a.output) if a.output else src.with_suffix(".safetensors")
    limits = _limits(a)
    with efile.EcnnFile(src, limits) as f:  # the header only: what the file holds decides the output's kind
        stored_names = f.file_names()
        if not a.output and f.metadata().get(efile.ONNX_METADATA_KEY) in efile.ONNX_METADATA_VERSIONS:
            out = src.with_suffix(".onnx")  # a packed ONNX model unpacks to .onnx
        elif not a.output and stored_names:
            out = src.with_suffix("")  # a packed model folder unpacks to a folder
    if eio.same_file(src, out) or src.resolve() == out.resolve():
        raise SameFile(f"refusing to overwrite the input {src} with the output")
    kind = _unpack_kind(a.output, out, bool(stored_names))
    if a.shard_size is not None and kind != "folder":
        raise InvalidOption("--shard-size is for folder output (-o DIR/)")
    if kind == "folder":
        _check_parent(out)
        if eio.check_output_folder(out, stored_names):  # refuses folders holding anything ecnn does not write
            _confirm_overwrite(out, a.force)
    else:
        _confirm_overwrite(out, a.force)
    if kind == "onnx":
        from ecnn import onnx as eonnx

        model = eonnx.load_model(src, limits=limits)
        size = eonnx.write_model(model, out)
        inits, consts = eonnx.weight_count(model)
        if a.json:
            data = out.with_name(out.name + ".data")  # large models keep their weights beside the graph
            paths = [out, data] if data.exists() else [out]
            _emit_json({**_unpack_figures(paths, inits, size), "constants": consts})
        elif not a.quiet:
            print(f"unpacked ONNX model with {inits} initializers and {consts} Constant nodes (all graphs) to {out} ({_human(size)})")
        return 0
    if kind == "torch":  # torch.save takes the whole dict: every tensor is in memory at once
        from ecnn import torch as et

        update, close = _progress_bar(not a.quiet, "unpacking")
        try:
            with efile.EcnnFile(src, limits) as f:
                arrays = f.arrays(update, names=f.weight_names())  # a packed ONNX graph is not a weight
                metadata = f.metadata()
        finally:
            close()
        tensors = {n: et.from_array(arr, dt) for n, (arr, dt) in arrays.items()}
        size = eio.save_weights(tensors, out, metadata)
        if a.json:
            _emit_json(_unpack_figures([out], len(tensors), size))
        elif not a.quiet:
            print(f"unpacked {len(tensors)} tensors to {out} ({_human(size)}){_files_left(stored_names)}")
        return 0
    # safetensors, one file or a folder of shards: one tensor decoded and written at a time.
    shard_size = eio.DEFAULT_SHARD_SIZE if a.shard_size is None else a.shard_size
    update, close = _progress_bar(not a.quiet, "unpacking", unit="B")
    try:
        with efile.EcnnFile(src, limits) as f:
            names = f.weight_names()  # a packed ONNX graph is not a weight
            specs = [eio.TensorSpec(n, f.record(n).dtype, f.record(n).shape) for n in names]
            metadata = {"format": "pt", **f.metadata()}  # as Hugging Face writes it; transformers checks it
            if kind == "folder":
                stored = f.files()  # each checked against its CRC-32 before any tensor is decoded
                decoded = _only_arrays(f.iter_arrays(names, update, count_bytes=True))
                size = eio.write_sharded(out, specs, decoded, metadata, shard_size, overwrite=True, files=stored, single=True)
            else:
                decoded = _only_arrays(f.iter_arrays(names, update, count_bytes=True))
                size = eio.write_safetensors(out, specs, decoded, metadata)
    finally:
        close()
    if a.json:
        paths = sorted(p for p in out.rglob("*") if p.is_file()) if kind == "folder" else [out]  # stored files too
        _emit_json(_unpack_figures(paths, len(specs), size))
    elif not a.quiet:
        count = len(eio.plan_shards(specs, shard_size))
        shards = f" in {count} shard{'s' if count > 1 else ''}" if kind == "folder" else ""
        if kind == "folder" and stored_names:
            shards += f" with {len(stored_names)} stored files"
        left = _files_left(stored_names) if kind != "folder" else ""
        print(f"unpacked {len(specs)} tensors to {out}{shards} ({_human(size)}){left}")
    return 0


def _files_left(names: list[str]) -> str:
    """A note that a single-file output leaves the stored files out."""
    if not names:
        return ""
    return f"; its {len(names)} stored files are written only with folder output (-o DIR/)"


def _unpack_figures(paths: list[Path], tensors: int, size: int) -> dict:
    """What ``unpack --json`` prints: the files written, the tensors and the bytes they hold."""
    return {"outputs": [str(p) for p in paths], "tensors": tensors, "bytes": size}


def _only_arrays(items):
    """The arrays of ``(name, array, dtype)`` items, holding none once the next is asked for."""
    for _, arr, _ in items:
        yield arr
        del arr


def cmd_info(a) -> int:
    from ecnn import file as efile

    with efile.EcnnFile(a.input, _limits(a)) as f:
        infos = f.infos()
        meta = f.metadata()
        size = f.size
        version = f.version
        stored = f.file_sizes()
    if a.json:
        rows = [
            {
                "name": i.name,
                "shape": list(i.shape),
                "dtype": i.dtype,
                "representation": i.representation,
                "step": i.step,
                "coders": list(i.coders),
                "coded_bytes": i.coded_bytes,
                "bits_per_value": i.bits_per_value,
            }
            for i in infos
        ]
        files = [{"name": n, "bytes": b} for n, b in stored.items()]
        _emit_json({"version": list(version), "file_bytes": size, "metadata": meta, "tensors": rows, "files": files})
        return 0
    if a.quiet:
        return 0
    print(format_table(infos))
    raw = sum(i.nbytes for i in infos)
    params = sum(i.numel for i in infos)
    bpp = 8 * size / params if params else 0.0
    print(
        f"\n{len(infos)} tensors, {params:,} values, {_human(raw)} decoded; file {_human(size)} "
        f"(format {version[0]}.{version[1]}): {_ratio(raw, size)}, {bpp:.3f} bits per value"
    )
    if meta:
        print("metadata: " + ", ".join(f"{k}={v}" for k, v in sorted(meta.items())))
    if stored:
        print(f"stored files: {len(stored)}, {_human(sum(stored.values()))}")
        width = max(len(n) for n in stored)
        for n, b in stored.items():
            print(f"  {n.ljust(width)}  {b:>12,} bytes")
    return 0


def format_table(infos) -> str:
    head = ("tensor", "shape", "dtype", "quantizer", "coder", "bytes", "bits/value", "ratio")
    rows = []
    for i in infos:
        if i.representation == "uniform_rows":
            quant = f"per-row step<={i.step:.4g}"
        elif i.step is not None:
            quant = f"uniform step={i.step:.4g}"
        else:
            quant = f"exact ({i.representation})"
        coders = "+".join(sorted(set(i.coders))) if i.coders else "raw"
        ratio = _ratio(i.nbytes, i.coded_bytes)
        rows.append(
            (i.name, "x".join(map(str, i.shape)) or "scalar", i.dtype, quant, coders, f"{i.coded_bytes:,}", f"{i.bits_per_value:.3f}", ratio)
        )
    widths = [max(len(h), *(len(r[k]) for r in rows)) if rows else len(h) for k, h in enumerate(head)]
    right = {5, 6, 7}

    def fmt(r):
        return "  ".join(c.rjust(w) if k in right else c.ljust(w) for k, (c, w) in enumerate(zip(r, widths)))

    return "\n".join([fmt(head), fmt(tuple("-" * w for w in widths))] + [fmt(r) for r in rows])


def cmd_verify(a) -> int:
    from ecnn import file as efile

    update, close = _progress_bar(not a.quiet, "verifying", unit="B")
    try:
        with efile.EcnnFile(a.input, _limits(a)) as f:
            f.verify(update, count_bytes=True)  # the stored files' checksums too
            n, size, files = len(f), f.size, len(f.file_names())
    finally:
        close()
    if a.json:
        _emit_json({"ok": True, "file": str(a.input), "tensors": n, "stored_files": files, "bytes": size})
    elif not a.quiet:
        stored = f" and {files} stored files" if files else ""
        print(f"ok: {a.input}: {n} tensors{stored}, {size:,} bytes, every checksum matches and every tensor decodes")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from ecnn import __version__

    p = argparse.ArgumentParser(
        prog="ecnn",
        description="Make trained neural networks small and load them back fast.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"ecnn {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sp = sub.add_parser(
        "pack",
        help="compress a weights file into .ecnn",
        description="Compress .safetensors, sharded safetensors (folder or index.json), .pt/.pth/.bin "
        "state dicts or .onnx models (graph kept; weights packed: initializers of every graph and subgraph and "
        "Constant node values) into a .ecnn file. Float tensors with 2+ dimensions are quantized "
        "(8 bits unless told otherwise); biases, norms and integer tensors are kept exact.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sp.add_argument("input", help="weights file or checkpoint folder")
    sp.add_argument("-o", "--output", help="output .ecnn file (default: input name with .ecnn)")
    g = sp.add_mutually_exclusive_group()
    g.add_argument("--bits", type=int, help="bits per weight for the uniform quantizer, 2..16 (default 8)")
    g.add_argument("--step", type=float, help="fixed quantization step instead of --bits")
    g.add_argument("--lossless", action="store_true", help="keep every value bit-exact")
    sp.add_argument("--exact", action="append", default=[], metavar="PATTERN", help="keep tensors whose name matches this glob exact (repeatable)")
    sp.add_argument(
        "--per-tensor",
        action="store_true",
        help="with --bits, one step per tensor instead of one per row (smaller, but outliers coarsen every row)",
    )
    sp.add_argument("--metadata", action="append", default=[], metavar="KEY=VALUE", help="store a metadata entry (repeatable)")
    sp.add_argument(
        "--no-files",
        action="store_true",
        help="for a folder input, store only the weights, not the folder's small files (config.json, tokenizer "
        "files, vocabularies, subfolders' configs; stored by default, so that one .ecnn is the whole model)",
    )
    sp.add_argument(
        "--format-minor",
        type=int,
        choices=range(5),
        default=4,
        metavar="N",
        help="write files that decoders of format 1.N read: 4 (default) the compact header, 3 or 2 the MessagePack "
        "header with rANS coders, 1 without rANS, 0 the features of format 1.0 (a folder's stored files need 3)",
    )
    sp.add_argument(
        "--effort",
        choices=EFFORTS,
        default="best",
        help="how hard to search for small context models: best (default, smallest files), balanced (one 8x8 grid "
        "of row/column classes per stream; a few times faster, files up to about 0.5%% larger) or fast "
        "(one table per stream; fastest, files 0.2-3%% larger for dense weights, up to about 30%% for pruned ones)",
    )
    b = sp.add_argument_group(
        "compress to a budget",
        "ecnn.compress chooses a step for each float tensor by rate-distortion optimization; the plain --bits N "
        "grid is always a candidate, and the plain file is kept when nothing better fits. Without --calib the errors "
        "are weighted by a proxy (each tensor's relative error) and what plain pack keeps exact (1-D tensors, "
        "BatchNorm statistics, integer buffers) stays exact; with --calib, biases and norms are allocated too "
        "(running statistics never). FUNC is module:function (an importable module or a .py file). The --eval function "
        "receives the candidate weights as a dict {name: torch.Tensor} and returns a float, higher is better "
        "(e.g. accuracy in percent); the --calib function receives the same dict and returns an output tensor of the "
        "model on a calibration batch computed from those tensors (e.g. with torch.func.functional_call), "
        "which weights each tensor's error by its effect on that output. For .onnx models no functions are "
        "needed: each weight's sensitivity is measured in ONNX Runtime on --calib-inputs, and --max-drop "
        "limits --drop-metric on them.",
    )
    b.add_argument("--target-size", metavar="SIZE", help="the file must fit in SIZE (2MB = 2,000,000 bytes, 2MiB, 800kB, 123456)")
    b.add_argument("--max-drop", type=float, metavar="X", help="the smallest file whose --eval metric (for .onnx models: --drop-metric) is at most X below the original's")
    b.add_argument("--eval", metavar="FUNC", help="evaluation function for --max-drop (reported with --target-size)")
    b.add_argument("--calib", metavar="FUNC", help="calibration output function for the sensitivities (default: each tensor's relative weight error)")
    b.add_argument(
        "--calib-inputs",
        metavar="NPZ",
        help="for .onnx models: calibration inputs, an .npz with one array per graph input, named as the graph's "
        "inputs (a few hundred typical samples). Each weight's sensitivity is the output error ONNX Runtime "
        "computes on them with that weight rounded; --max-drop is measured on them too. Without it, synthetic "
        "inputs are made from the graph's declared shapes (a warning says so)",
    )
    b.add_argument(
        "--drop-metric",
        choices=("top1", "cosine"),
        help="for .onnx models, what --max-drop X limits, in points out of 100, on the calibration inputs: top1 "
        "(percent of rows of the first float output whose argmax over the last axis agrees with the original "
        "model's; X=1: at most 1%% of predictions change) or cosine (100 times the mean cosine similarity of its "
        "rows to the original's; X=0.5: mean cosine at least 0.995). Default: top1 when that output's last "
        "dimension is at least 2, else cosine. The original scores 100",
    )
    sp.add_argument(
        "--check",
        metavar="INPUTS",
        help="for .onnx models: run the original and the packed model in ONNX Runtime and print each output's "
        "largest deviation (absolute and relative to the output's range) and, for classifier-like outputs, top-1 "
        "agreement. INPUTS is an .npz with one array per graph input, named as the graph's inputs, or 'synthetic': "
        "random inputs made from the graph's declared shapes and dtypes (dynamic dimensions = 1), which show that "
        "the packed model computes what the original does, not how well it works on real data",
    )
    sp.add_argument("-f", "--force", action="store_true", help="overwrite the output if it exists")
    sp.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    sp.add_argument("--json", action="store_true", help="print one JSON object with the figures on stdout instead of the summary line")
    sp.set_defaults(func=cmd_pack)

    sp = sub.add_parser(
        "report",
        help="write an HTML page with plots about a .ecnn file",
        description="Write an offline HTML page (PNG plots in a folder beside it): bits and bytes per tensor, "
        "value histograms, the allocation stored by ecnn.compress, and with --eval a rate-accuracy sweep "
        "(the weights recompressed at fractions of the file's size and with uniform bits). Needs matplotlib "
        "(pip install 'ecnn[report]').",
    )
    sp.add_argument("input", help=".ecnn file")
    sp.add_argument("-o", "--output", help="output .html (default: input name with .html)")
    sp.add_argument("--eval", metavar="FUNC", help="module:function taking {name: torch.Tensor}, returning a float (higher is better)")
    sp.add_argument("--original", metavar="WEIGHTS", help="the original weights file: histograms before/after, and the sweep starts from it")
    _add_limits(sp)
    sp.add_argument("-f", "--force", action="store_true", help="overwrite the output if it exists")
    sp.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    sp.set_defaults(func=cmd_report)

    sp = sub.add_parser(
        "unpack",
        help="decode .ecnn back to .safetensors (a file or a sharded folder), .pt or .onnx",
        description=UNPACK_HELP,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sp.add_argument("input", help=".ecnn file")
    sp.add_argument(
        "-o",
        "--output",
        help="output folder (DIR/), .safetensors, .pt or .onnx (default: input name with .safetensors, "
        "or .onnx for a packed ONNX model)",
    )
    sp.add_argument(
        "--shard-size",
        type=_shard_size,
        metavar="SIZE",
        help="with folder output, the most tensor bytes in a shard: 5GB (the default, 5,000,000,000 bytes), "
        "4GiB, 500MB; a larger tensor gets a shard of its own",
    )
    sp.add_argument("-f", "--force", action="store_true", help="overwrite the output if it exists")
    sp.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    sp.add_argument("--json", action="store_true", help="print one JSON object with the figures on stdout instead of the summary line")
    _add_limits(sp)
    sp.set_defaults(func=cmd_unpack)

    sp = sub.add_parser("info", help="list tensors with their sizes and coding")
    sp.add_argument("input", help=".ecnn file")
    sp.add_argument("--json", action="store_true", help="print JSON instead of a table")
    sp.add_argument("-q", "--quiet", action="store_true", help="print nothing; the exit status says whether the header is valid")
    _add_limits(sp)
    sp.set_defaults(func=cmd_info)

    sp = sub.add_parser("verify", help="check every checksum and decode every tensor")
    sp.add_argument("input", help=".ecnn file")
    sp.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    sp.add_argument("--json", action="store_true", help="print one JSON object with the figures on stdout instead of the summary line")
    _add_limits(sp)
    sp.set_defaults(func=cmd_verify)
    return p


class _ReaderLeft(Exception):
    """The reader of stdout went away (``ecnn info m.ecnn | head -1``)."""


class _Guarded:
    """``sys.stdout`` or ``sys.stderr`` for the length of one command, for a reader that may leave early.

    A write to stdout whose reader has gone raises :class:`_ReaderLeft`, which ends the
    command quietly with status 0: the output is not wanted any more. On stderr (progress
    and stage lines) the writes stop and the work goes on: losing the progress is no
    reason to abandon a pack. Either way the file descriptor is pointed at /dev/null,
    so that the interpreter's last flush at exit does not fail once more.
    """

    def __init__(self, stream, stop: bool):
        self._stream, self._stop, self._gone = stream, stop, False

    def _left(self) -> None:
        self._gone = True
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
        except (OSError, ValueError, AttributeError):  # not a real file (captured output)
            pass
        if self._stop:
            raise _ReaderLeft

    def write(self, text: str) -> int:
        if not self._gone:
            try:
                return self._stream.write(text)
            except BrokenPipeError:
                self._left()
        return len(text)

    def flush(self) -> None:
        if not self._gone:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._left()

    def __getattr__(self, name):  # isatty, fileno, encoding, ...: the stream's own
        return getattr(self._stream, name)


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns its exit status (0: done, 1: an error, printed on stderr as one line).

    A reader of stdout that leaves early (``ecnn info m.ecnn | head -1``, ``ecnn --help | head -1``)
    ends the command quietly with status 0, as does a closed stderr for the progress output.
    """
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Guarded(out, stop=True), _Guarded(err, stop=False)
    try:
        try:
            status = _main(argv)
        except SystemExit:  # argparse's --help, --version and usage errors
            sys.stdout.flush()
            raise
        sys.stdout.flush()  # output still buffered for a pipe meets a reader that left here
        return status
    except _ReaderLeft:
        return 0
    finally:
        sys.stdout, sys.stderr = out, err


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if a.verbose else logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        return a.func(a)
    except EcnnError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"error: {e.strerror or e}: {e.filename}" if e.filename else f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
