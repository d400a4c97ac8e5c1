"""Fuzzing every reader of ``.ecnn`` files: ``ecnn.decode``, ``ecnn.open`` and the CLI.

A benchmark, not a test. Each input is a hostile or damaged file, made from the
seed corpus (every file under fixtures/v1, plus small files encoded at start-up
so that every coder the encoder picks today is covered) by one of five
generators:

* ``raw``: bytes flipped, set, inserted, deleted or cut anywhere; two seeds
  spliced; nothing fixed afterwards (the checksums must catch it);
* ``header``: bytes changed inside the header, then the header CRC fixed;
* ``payload``: bytes changed in the data section, then every CRC fixed;
* ``tree``: the header parsed and one to three of its nodes replaced with
  hostile values (huge shapes, offsets past the end, lengths near 2^64,
  chunk counts near the cap, wrong types, deep nesting, unknown or missing
  keys, duplicated, dropped or swapped records, another stream coder), payloads
  resized to the declared lengths, then the layout and CRCs fixed (most of the
  time) so that the damage reaches the record and stream checks;
* ``generate``: a header built from scratch from the field tables
  (``ecnn.container.header.RECORD_FIELDS``, ``ecnn.repr.REPRS``, the stream
  coders of ``ecnn.coder.streams``) with hostile values and random payloads;
* ``compact``: the seed's header written in the compact form of format 1.4
  (spec/FORMAT.md 6.7), its fields sometimes changed first, then its bytes
  damaged where the form is fragile: code bytes set to the last and first
  reserved codes, varints made too long, not shortest or past 2^64, counts
  set to their caps and past them, fields cut or repeated; header CRC fixed.

Targets (``--targets``):

* ``decode``: ``ecnn.decode(data, limits=...)`` (torch tensors);
* ``open``: ``ecnn.open`` on the bytes or on a file (mmap): ``keys``,
  ``metadata``, ``version``, ``infos``, ``info`` and ``get_tensor`` of each
  tensor in a random order, a missing name, ``check_padding``;
* ``cli``: ``ecnn info`` / ``info --json`` / ``verify`` / ``unpack`` through
  ``ecnn.cli.main`` in-process; it must return 0, or 1 with exactly one
  ``error:`` line on stderr.

Anything else (an exception that is not an ``ecnn.errors.EcnnError``, a
traceback, a dead or hung worker) is a crash. Inputs are numbered and made
from ``--seed`` and their number alone, so a crash is replayed with
``--replay TARGET:INDEX``.

Readers run with the caps a service opening untrusted files should set
(``Limits(max_tensor_bytes=64 MiB, max_total_bytes=256 MiB)``, the CLI's
``--max-tensor-bytes``/``--max-total-bytes``): the declared size of a tensor is
what decoding it may allocate (a ``const`` stream of 2^33 values is a valid
3-byte declaration), so the caps are what bounds memory. Per input the worker
measures the wall time and the peak memory: the tracemalloc peak (Python and
numpy allocations) and the resident-set high-water mark (VmHWM, reset per input
through /proc/self/clear_refs, which also sees the range coder's native
buffers), and compares it with the input size plus the declared sizes of the
records that passed validation. Times are taken with tracemalloc on (slower
than a plain run); the slowest inputs are timed again without it.

``--header-bombs`` also measures headers of 1 to 16 MiB made only of the
objects that cost the header parser the most memory or time per byte (empty
arrays and maps, nils, one-entry maps, short strings, deep nesting, records of
64 stream descriptors); ``--targets ''`` runs them alone.

Usage:
    .venv/bin/python tools/fuzz_ecnn.py --inputs 100000 [--targets decode,open,cli] [--workers 2] [--seed 0]
    .venv/bin/python tools/fuzz_ecnn.py --replay decode:1234

Appends inputs tried, crashes, slowest input and peak memory per target to
bench/RESULTS.md (unless --no-append).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import io
import json
import math
import mmap
import os
import random
import resource
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

import msgpack
import numpy as np

from ecnn import dtypes, errors
from ecnn import repr as reprs
from ecnn.coder import streams
from ecnn.container import format as fmt
from ecnn.container.compact import varint_bytes

TARGETS = ("decode", "open", "cli")
GENERATORS = (("raw", 15), ("header", 10), ("payload", 20), ("tree", 30), ("generate", 15), ("compact", 15))
CAP_TENSOR = 64 << 20
CAP_TOTAL = 256 << 20
LIMITS = fmt.Limits(max_tensor_bytes=CAP_TENSOR, max_total_bytes=CAP_TOTAL)
# Memory bound checked per input: peak <= MEM_FACTOR * (input + declared) + MEM_SLACK.
MEM_FACTOR = 8
MEM_SLACK = 4 << 20
HANG_S = 60.0  # a worker silent this long is killed and its input counted as a hang

# --- hostile values ---------------------------------------------------------

BIG_INTS = [
    0, 1, 2, 3, 7, 8, 24, 63, 64, 65, 255, 256, 4095, 4096, 65535, 65536, (1 << 20) - 1, 1 << 20, (1 << 20) + 1,
    1 << 24, (1 << 31) - 1, 1 << 31, (1 << 32) - 1, 1 << 32, 1 << 33, 1 << 40, (1 << 48) - 1, 1 << 48, (1 << 48) + 1,
    1 << 53, (1 << 63) - 1, 1 << 63, (1 << 64) - 1, -1, -2, -128, -(1 << 31), -(1 << 63),
]
STRINGS = ["", "x", "w", "fc.weight", "\u00e9\u00e8", "\x00", "a" * 1025, "_note", "const", "raw", "cat0", "uniform"]


def hostile_int(rng: random.Random) -> int:
    r = rng.random()
    if r < 0.55:
        return rng.choice(BIG_INTS)
    if r < 0.85:
        return rng.randint(-4, 300)
    return rng.randint(-(1 << 63), (1 << 64) - 1)


def deep(rng: random.Random):
    v = []
    for _ in range(rng.choice((15, 16, 17, 18, 40, 200))):
        v = [v]
    return v


def hostile_value(rng: random.Random, like=None):
    """A value to put in place of ``like``: mostly of the same type, sometimes of any."""
    r = rng.random()
    if r < 0.6:
        if type(like) is int:
            return hostile_int(rng)
        if type(like) is bool:
            return not like
        if isinstance(like, str):
            return rng.choice(STRINGS + list(streams._KEYS) + list(reprs.REPRS) + list(dtypes.BY_NAME))
        if isinstance(like, list):
            return rng.choice([[], [hostile_int(rng)], [hostile_int(rng) for _ in range(rng.randint(1, 40))], like + like, like[:-1]])
    choices = [
        lambda: hostile_int(rng),
        lambda: rng.choice((True, False, None)),
        lambda: rng.choice(STRINGS),
        list,
        dict,
        lambda: deep(rng),
        lambda: [hostile_int(rng) for _ in range(rng.randint(0, 8))],
        lambda: {rng.choice(STRINGS): hostile_int(rng)},
    ]
    return rng.choice(choices)()


def hostile_shape(rng: random.Random) -> list:
    r = rng.random()
    if r < 0.35:
        return [rng.randint(0, 12) for _ in range(rng.randint(0, 3))]
    if r < 0.5:
        return [1 << 48, 1 << 48]
    if r < 0.6:
        return [rng.choice(BIG_INTS) for _ in range(rng.randint(1, 4))]
    if r < 0.7:
        return [1 << rng.randint(10, 40), 0]  # no elements, huge dimension
    if r < 0.8:
        return [1] * rng.choice((32, 33, 64))
    if r < 0.9:
        return [rng.choice((1 << 13, 1 << 20, 1 << 26, 1 << 30))]  # up to the caps and over
    return hostile_value(rng, [1])


# --- building files ---------------------------------------------------------


def build(header_obj, payloads: list[bytes], align: int = 8, minor: int = 0, fix_crc: bool = True) -> bytes:
    """Serialize a header object and its payloads (placed one after another, aligned)."""
    return build_bytes(msgpack.packb(header_obj, use_bin_type=True), payloads, align, minor, fix_crc)


def build_bytes(hb: bytes, payloads: list[bytes], align: int = 8, minor: int = 0, fix_crc: bool = True) -> bytes:
    """A file of header bytes as they are (either form) and payloads placed one after another, aligned."""
    head = struct.pack("<HHI", fmt.FORMAT_MAJOR, minor, len(hb))
    crc = fmt.crc32(head, hb) if fix_crc else 0
    out = bytearray(fmt.SIGNATURE + head + struct.pack("<I", crc) + hb)
    a = align if type(align) is int and 1 <= align <= 4096 else 8
    start = fmt.align_up(len(out), a)
    out += bytes(start - len(out))
    pos = 0
    for p in payloads:
        pad = fmt.align_up(pos, a) - pos
        out += bytes(pad)
        out += p
        pos += pad + len(p)
    return bytes(out)


def split(data: bytes):
    """(header object, payloads, align, minor) of a file whose header parses, else None."""
    try:
        from ecnn.container.reader import Container

        c = Container(data)
    except errors.EcnnError:
        try:
            hlen = struct.unpack_from("<I", data, 12)[0]
            obj = msgpack.unpackb(data[20 : 20 + hlen], raw=False, strict_map_key=False)
        except Exception:  # noqa: BLE001 - msgpack raises many types on bad bytes
            return None
        return (obj, [data[20 + hlen :]], 8, 0) if isinstance(obj, dict) else None
    payloads = [bytes(c.buf[r.offset : r.offset + r.length]) for r in c.records]
    out = (c.header, payloads, c.align, c.minor)
    c.release()
    return out


def relayout(h: dict, payloads: list[bytes], rng: random.Random, keep: set) -> list[bytes]:
    """Make offsets, lengths and CRCs agree with the payloads, except the fields in ``keep``."""
    recs = h.get("tensors") if isinstance(h, dict) else None
    if not isinstance(recs, list):
        return payloads
    align = h.get("align") if type(h.get("align")) is int and 1 <= h.get("align") <= 4096 else 8
    out = []
    pos = 0
    for i, r in enumerate(recs):
        p = payloads[i] if i < len(payloads) else bytes(rng.randrange(64))
        if not isinstance(r, dict):
            out.append(p)
            continue
        n = r.get("length")
        if (i, "length") in keep and type(n) is int and 0 <= n <= 1 << 16 and n != len(p):
            p = p[:n] + bytes(rng.randrange(256) for _ in range(max(0, n - len(p))))
        if (i, "length") not in keep:
            r["length"] = len(p)
        pos = fmt.align_up(pos, align)
        if (i, "offset") not in keep:
            r["offset"] = pos
        if (i, "crc32") not in keep:
            r["crc32"] = fmt.crc32(p)
        pos += len(p)
        out.append(p)
    return out


# --- generators -------------------------------------------------------------


def gen_raw(seed: bytes, rng: random.Random, seeds: list[bytes]) -> bytes:
    d = bytearray(seed)
    for _ in range(rng.randint(1, 6)):
        op = rng.random()
        if not d:
            d += bytes(rng.randrange(256) for _ in range(rng.randint(1, 40)))
        elif op < 0.35:
            i = rng.randrange(len(d))
            d[i] ^= 1 << rng.randrange(8)
        elif op < 0.6:
            d[rng.randrange(len(d))] = rng.randrange(256)
        elif op < 0.7:
            i = rng.randrange(len(d) + 1)
            d[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        elif op < 0.8:
            i = rng.randrange(len(d))
            del d[i : i + rng.randint(1, 16)]
        elif op < 0.9:
            del d[rng.randrange(len(d) + 1) :]
        else:
            other = rng.choice(seeds)
            d = d[: rng.randrange(len(d) + 1)] + other[rng.randrange(len(other) + 1) :]
    return bytes(d)


def gen_header(seed: bytes, rng: random.Random, seeds: list[bytes]) -> bytes:
    d = bytearray(seed)
    if len(d) < 21:
        return gen_raw(seed, rng, seeds)
    hlen = min(struct.unpack_from("<I", d, 12)[0], len(d) - 20)
    if hlen == 0:
        return gen_raw(seed, rng, seeds)
    for _ in range(rng.randint(1, 4)):
        i = rng.randrange(20, 20 + hlen)
        d[i] = rng.randrange(256) if rng.random() < 0.6 else d[i] ^ (1 << rng.randrange(8))
    d[16:20] = struct.pack("<I", fmt.crc32(bytes(d[8:16]), bytes(d[20 : 20 + hlen])))
    return bytes(d)


def gen_payload(seed: bytes, rng: random.Random, seeds: list[bytes]) -> bytes:
    parts = split(seed)
    if parts is None or not parts[1] or not any(parts[1]):
        return gen_raw(seed, rng, seeds)
    h, payloads, align, minor = parts
    payloads = [bytearray(p) for p in payloads]
    for _ in range(rng.randint(1, 4)):
        p = rng.choice([p for p in payloads if p] or payloads)
        if not p:
            break
        i = rng.randrange(len(p))
        op = rng.random()
        if op < 0.4:
            p[i] ^= 1 << rng.randrange(8)
        elif op < 0.7:
            p[i] = rng.randrange(256)
        elif op < 0.85:
            p[i : i + 4] = bytes([rng.choice((0, 255))]) * 4
        else:
            p[i] = rng.choice((0, 0x7F, 0x80, 0xFF))
    payloads = [bytes(p) for p in payloads]
    payloads = relayout(h, payloads, rng, set())
    return build(h, payloads, align, minor)


def _nodes(obj, path=()):
    """Every (container, key, path) in a parsed header."""
    if isinstance(obj, dict):
        for k in list(obj):
            yield obj, k, path + (k,)
            yield from _nodes(obj[k], path + (k,))
    elif isinstance(obj, list):
        for i in range(len(obj)):
            yield obj, i, path + (i,)
            yield from _nodes(obj[i], path + (i,))


def _record_field(path) -> tuple[int, str] | None:
    if len(path) >= 3 and path[0] == "tensors" and type(path[1]) is int:
        return path[1], path[2]
    return None


def mutate_tree(h: dict, rng: random.Random, keep: set) -> None:
    nodes = list(_nodes(h))
    recs = h.get("tensors") if isinstance(h.get("tensors"), list) else []
    op = rng.random()
    if op < 0.08 and recs:
        recs.append(json.loads(json.dumps(rng.choice(recs))) if rng.random() < 0.5 else recs[0])
    elif op < 0.14 and recs:
        del recs[rng.randrange(len(recs))]
    elif op < 0.18 and len(recs) > 1:
        i, j = rng.randrange(len(recs)), rng.randrange(len(recs))
        recs[i], recs[j] = recs[j], recs[i]
    elif op < 0.26 and recs:
        r = rng.choice(recs)
        if isinstance(r, dict):
            r["shape"] = hostile_shape(rng)
    elif op < 0.36 and recs:
        # Another stream coder, with some of its fields.
        r = rng.choice(recs)
        if isinstance(r, dict) and isinstance(r.get("streams"), list) and r["streams"]:
            i = rng.randrange(len(r["streams"]))
            r["streams"][i] = random_stream(rng, rng.choice(list(streams._KEYS)))
    elif op < 0.44:
        obj, k, path = rng.choice(nodes) if nodes else (h, "align", ("align",))
        if isinstance(obj, dict) and rng.random() < 0.5:
            del obj[k]
        else:
            obj[k if not isinstance(obj, dict) else rng.choice(STRINGS + ["_x", "colour"])] = hostile_value(rng)
    else:
        if not nodes:
            return
        obj, k, path = rng.choice(nodes)
        obj[k] = hostile_value(rng, obj[k])
        f = _record_field(path)
        if f is not None and len(path) == 3:
            keep.add(f)


def gen_tree(seed: bytes, rng: random.Random, seeds: list[bytes]) -> bytes:
    parts = split(seed)
    if parts is None:
        return gen_raw(seed, rng, seeds)
    h, payloads, align, minor = parts
    keep: set = set()
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        mutate_tree(h, rng, keep)
    if rng.random() < 0.85:
        payloads = relayout(h, payloads, rng, keep)
    try:
        return build(h, payloads, h.get("align", align) if isinstance(h, dict) else align, minor, fix_crc=rng.random() < 0.97)
    except (OverflowError, ValueError, TypeError):
        return build({"align": 8, "metadata": {}, "tensors": []}, [])


def _stream_field(rng: random.Random, key: str):
    if rng.random() < 0.25:
        return hostile_value(rng, 0)
    small = {
        "value": lambda: rng.randint(-3, 3),
        "offset": lambda: rng.randint(-8, 2),
        "nsym": lambda: rng.choice((2, 3, 16, 255, 256, 1 << 20)),
        "chunk": lambda: rng.choice((1, 2, 7, 4096, 1 << 20, (1 << 63) - 1)),
        "precision": lambda: 24,
        "width": lambda: rng.choice((1, 2, 4, 8)),
        "signed": lambda: rng.random() < 0.5,
        "signs": lambda: rng.random() < 0.5,
        "rows": lambda: rng.choice((1, 2, 4, 8)),
        "cols": lambda: rng.choice((1, 2, 4, 8)),
        "nrc": lambda: rng.choice((1, 2, 8, 64)),
        "ncc": lambda: rng.choice((1, 2, 8, 64)),
        "chunk_rows": lambda: rng.choice((1, 2, 4)),
    }
    return small.get(key, lambda: hostile_int(rng))()


def random_stream(rng: random.Random, coder: str) -> dict:
    d = {"coder": coder, "length": 0}
    for k in sorted(streams._KEYS.get(coder, ())):
        if k not in ("coder", "length"):
            d[k] = _stream_field(rng, k)
    if rng.random() < 0.05 and len(d) > 2:
        del d[rng.choice([k for k in d if k != "coder"])]
    return d


def gen_generate(seed: bytes, rng: random.Random, seeds: list[bytes]) -> bytes:
    records, payloads = [], []
    for t in range(rng.choice((0, 1, 1, 2, 3, 4))):
        dt = rng.choice(list(dtypes.BY_NAME))
        shape = hostile_shape(rng)
        kind = rng.choice(list(reprs.REPRS) + ["sparse", "bogus"]) if rng.random() < 0.97 else hostile_value(rng)
        rep = {"kind": kind}
        if kind in ("uniform", "uniform_rows") or rng.random() < 0.05:
            rep["step"] = rng.choice((0x3C23D70A, 0x3F800000, 0x7F800000, 0, 1, 0xFFFFFFFF, hostile_int(rng)))
        n = {"raw": 0, "planes": dtypes.BY_NAME[dt].itemsize, "uniform_rows": 2}.get(kind, 1) if isinstance(kind, str) else 1
        if rng.random() < 0.1:
            n = rng.randint(0, 4)
        descs, body = [], b""
        for _ in range(n):
            d = random_stream(rng, rng.choice(list(streams._KEYS)))
            r = rng.random()
            if r < 0.4:
                p = bytes(rng.randrange(256) for _ in range(rng.randint(0, 64)))
            elif r < 0.7:
                src = rng.choice(seeds)
                i = rng.randrange(len(src) + 1)
                p = src[i : i + rng.randint(0, 300)]
            else:
                p = bytes([rng.choice((0, 1, 0xFF))]) * rng.randint(0, 32)
            if d.get("coder") == "const":
                p = b""
            if rng.random() < 0.9:
                d["length"] = len(p)
            descs.append(d)
            body += p
        if kind == "raw" and rng.random() < 0.8:
            try:
                nb = math.prod(s for s in shape if type(s) is int) * dtypes.BY_NAME[dt].itemsize
            except TypeError:
                nb = 0
            if 0 <= nb <= 4096:
                body = bytes(rng.randrange(256) for _ in range(nb))
        name = rng.choice(["w", "b", f"t{t}", "w", "\u00e9", "a" * rng.choice((1, 1024, 1025))])
        records.append({"name": name, "dtype": dt, "shape": shape, "offset": 0, "length": 0, "crc32": 0, "repr": rep, "streams": descs})
        payloads.append(body)
    h = {"align": rng.choice((1, 8, 8, 64, 4096)), "metadata": {"k": "v"} if rng.random() < 0.3 else {}, "tensors": records}
    keep: set = set()
    if rng.random() < 0.3:
        mutate_tree(h, rng, keep)
    payloads = relayout(h, payloads, rng, keep)
    try:
        return build(h, payloads, h.get("align", 8), rng.choice((0, 0, 1, 2)))
    except (OverflowError, ValueError, TypeError):
        return build({"align": 8, "metadata": {}, "tensors": []}, [])


_COMPACT_BYTES = (0x00, 0x01, 0x06, 0x07, 0x08, 0x0C, 0x0D, 0x0E, 0x0F, 0x20, 0x21, 0x40, 0x41, 0x7F, 0x80, 0xC1, 0xFF)


def gen_compact(seed: bytes, rng: random.Random, seeds: list[bytes]) -> bytes:
    """The seed's header in the compact form (spec/FORMAT.md 6.7), then damaged field-aware."""
    from ecnn.container import compact

    parts = split(seed)
    if parts is None or not isinstance(parts[0], dict):
        return gen_raw(seed, rng, seeds)
    h, payloads, align, _ = parts
    try:
        hb = compact.encode(h)
    except Exception:  # noqa: BLE001 - a header the compact form cannot hold (ancillary keys): the encoder is not under test
        return gen_raw(seed, rng, seeds)
    if rng.random() < 0.4:  # change fields first, then write them compact where the form can hold them
        t = json.loads(json.dumps(h))
        keep: set = set()
        mutate_tree(t, rng, keep)
        moved = relayout(t, list(payloads), rng, {k for k in keep if k[1] != "offset"})
        try:
            hb, payloads = compact.encode(t), moved
        except Exception:  # noqa: BLE001 - as above
            pass
    d = bytearray(hb)
    for _ in range(rng.choice((0, 1, 1, 2, 3))):
        i = rng.randrange(1, len(d) + 1) if len(d) > 1 else 1
        op = rng.random()
        if op < 0.3 and i < len(d):
            d[i] = rng.choice(_COMPACT_BYTES)
        elif op < 0.45:  # a varint too long, not in its shortest form, or of 2^64 and more
            k = rng.randint(1, 11)
            d[i:i] = b"\x80" * k + bytes([rng.choice((0, 1, 2, 3, 0x7F))])
        elif op < 0.6 and i < len(d):  # a count at or past its cap, in place of a byte
            d[i : i + 1] = varint_bytes(rng.choice((32, 33, 64, 65, 65536, 65537, 1 << 20, (1 << 20) + 1, (1 << 48) + 1, (1 << 64) - 1)))
        elif op < 0.75:
            del d[i : i + rng.randint(1, 4)]
        elif op < 0.85:
            del d[i:]
        else:
            j = rng.randrange(1, len(d) + 1) if len(d) > 1 else 1
            d[i:i] = d[j : j + rng.randint(1, 24)]
    return build_bytes(bytes(d), payloads, h.get("align", align), fmt.COMPACT_MINOR, fix_crc=rng.random() < 0.97)


GEN = {"raw": gen_raw, "header": gen_header, "payload": gen_payload, "tree": gen_tree, "generate": gen_generate, "compact": gen_compact}


def load_seeds() -> list[bytes]:
    """Every file under fixtures/v1, and small files from today's encoder."""
    import ecnn.numpy as en
    from ecnn.config import EncodeConfig

    seeds = [p.read_bytes() for p in sorted((ROOT / "fixtures").rglob("*.ecnn"))]
    r = np.random.default_rng(7)
    w = (r.standard_normal((48, 40)) * 0.05).astype(np.float32)
    sparse = w * (r.random((48, 40)) < 0.2)
    made = [
        ({"w": w, "b": w[0].copy()}, {"bits": 4}),
        ({"w": w}, {"config": EncodeConfig(bits=6, per_row=False, chunk=4096)}),
        ({"w": w.astype(np.float16), "i": np.arange(-5, 30, dtype=np.int64)}, {"lossless": True}),
        ({"s": sparse}, {"bits": 5}),
        ({"s": sparse, "m": (r.random((40, 30)) < 0.5)}, {"lossless": True}),
        ({"e": (r.standard_normal((256, 64)) * np.linspace(0.01, 1, 64)).astype(np.float32)}, {"bits": 3}),
        ({"z": np.zeros((16, 16), np.float32), "k": np.full(9, 7, np.int8)}, {"bits": 8}),
    ]
    for arrays, kw in made:
        try:
            seeds.append(en.encode(arrays, **kw))
        except Exception as e:  # noqa: BLE001 - the encoder is not under test here
            print(f"seed not made: {type(e).__name__}: {e}", file=sys.stderr)
    return seeds


def make_input(seeds: list[bytes], seed: int, target: str, index: int) -> tuple[str, bytes]:
    rng = random.Random(f"{seed}:{target}:{index}")
    names = [g for g, _ in GENERATORS]
    gen = rng.choices(names, weights=[w for _, w in GENERATORS])[0]
    base = rng.choice(seeds)
    try:
        return gen, GEN[gen](base, rng, seeds)
    except (OverflowError, ValueError, TypeError, RecursionError):  # msgpack cannot pack what the generator made
        return "raw", gen_raw(base, rng, seeds)


# --- targets ----------------------------------------------------------------


class Rejected(Exception):
    """The target rejected the input the allowed way (a typed error, or the CLI's exit code 1)."""

    def __init__(self, what: str):
        super().__init__(what)
        self.what = what


def run_decode(data: bytes, rng: random.Random, work: Path) -> None:
    import ecnn

    try:
        ecnn.decode(data, limits=LIMITS)
    except errors.EcnnError as e:
        raise Rejected(type(e).__name__) from None


def run_open(data: bytes, rng: random.Random, work: Path) -> None:
    import ecnn

    src = data
    if rng.random() < 0.2:
        src = work / "in.ecnn"
        src.write_bytes(data)
    try:
        with ecnn.open(src, limits=LIMITS) as f:
            names = f.keys()
            f.metadata()
            _ = f.version
            len(f)
            f.infos()
            assert all(n in f for n in names)
            order = list(names)
            rng.shuffle(order)
            first = None
            for n in order:
                f.info(n)
                try:
                    f.get_tensor(n)
                except errors.EcnnError as e:
                    first = first or e  # lazy access: one bad tensor must not stop the others
            try:
                f.get_tensor("\x00no such tensor")
                raise AssertionError("a missing tensor was returned")
            except errors.TensorNotFound:
                pass
            f.check_padding()
            for n in f.file_names():  # stored files (format 1.3): each checked against its CRC-32 when read
                try:
                    f.read_file(n)
                except errors.EcnnError as e:
                    first = first or e
            try:
                f.read_file("no/such/file")
                raise AssertionError("a missing stored file was returned")
            except errors.FileNotStored:
                pass
            if first is not None:
                raise first
    except errors.EcnnError as e:
        raise Rejected(type(e).__name__) from None


CLI_COMMANDS = (
    ["info", "{in}"],
    ["info", "--json", "{in}"],
    ["verify", "-q", "{in}"],
    ["unpack", "{in}", "-o", "{out}", "-f", "-q"],
    ["unpack", "{in}", "-o", "{outdir}", "-f", "-q"],  # a folder: the stored files too
)


def run_cli(data: bytes, rng: random.Random, work: Path) -> None:
    from ecnn.cli import main

    src = work / "in.ecnn"
    src.write_bytes(data)
    argv = [a.format(**{"in": str(src), "out": str(work / "out.safetensors"), "outdir": str(work / "outdir") + "/"}) for a in rng.choice(CLI_COMMANDS)]
    argv += ["--max-tensor-bytes", str(CAP_TENSOR), "--max-total-bytes", str(CAP_TOTAL)]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as e:  # argparse
            rc = f"SystemExit({e.code})"
    text = err.getvalue()
    if rc == 0:
        return
    if rc == 1 and text.startswith("error: ") and text.count("\n") == 1 and "Traceback" not in text:
        raise Rejected("exit 1")
    raise AssertionError(f"ecnn {argv[0]}: exit {rc}, stderr {text[:300]!r}")


RUN = {"decode": run_decode, "open": run_open, "cli": run_cli}


# --- measuring --------------------------------------------------------------


def _status_kib(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1])
    return 0


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def declared_bytes(data: bytes) -> int:
    """Decoded size of every record that passes validation (0 if the file is rejected when opened)."""
    from ecnn.file import EcnnFile

    try:
        with EcnnFile(data, LIMITS) as f:
            return sum(i.nbytes for i in f.infos())
    except errors.EcnnError:
        return 0


def worker(target: str, seed: int, start: int, stop: int, progress_path: str, out_path: str) -> None:
    """Run inputs ``start..stop-1`` of a target; write stats to ``out_path`` as JSON."""
    resource.setrlimit(resource.RLIMIT_DATA, (6 << 30, 6 << 30))  # a bomb raises MemoryError, not the OOM killer
    import warnings

    warnings.simplefilter("ignore")  # e.g. torch's "non-writable buffer"; not a failure
    seeds = load_seeds()
    work = Path(tempfile.mkdtemp(prefix="ecnn-fuzz-"))
    run = RUN[target]
    for s in seeds:  # warm-up: first-call imports are not the input's cost
        try:
            run(s, random.Random(0), work)
        except Exception:  # noqa: BLE001, S110 - only warming up
            pass
    fd = os.open(progress_path, os.O_RDWR)
    prog = mmap.mmap(fd, 8)
    hwm_ok = _reset_hwm()
    stats = {
        "inputs": 0, "outcomes": {}, "by_generator": {}, "crashes": [], "slowest": [], "peak_traced": [0, None],
        "peak_rss": [0, None], "worst_ratio": [0.0, None], "over_bound": 0, "max_declared": 0, "hwm": hwm_ok,
    }
    tracemalloc.start()
    for i in range(start, stop):
        prog[:8] = struct.pack("<q", i)
        gen, data = make_input(seeds, seed, target, i)
        rng = random.Random(f"{seed}:{target}:{i}:run")
        rss0 = _status_kib("VmRSS") if hwm_ok else 0
        if hwm_ok:
            _reset_hwm()
        tracemalloc.reset_peak()
        cur0 = tracemalloc.get_traced_memory()[0]
        t = time.perf_counter()
        try:
            run(data, rng, work)
            outcome = "accepted"
        except Rejected as r:
            outcome = r.what
        except Exception as e:  # noqa: BLE001 - the point: anything else is a crash
            outcome = "CRASH"
            stats["crashes"].append(
                {"index": i, "generator": gen, "error": f"{type(e).__name__}: {str(e)[:200]}", "trace": traceback.format_exc()[-1500:]}
            )
        dt = time.perf_counter() - t
        traced = tracemalloc.get_traced_memory()[1] - cur0
        rss = max(0, _status_kib("VmHWM") - rss0) * 1024 if hwm_ok else 0
        stats["inputs"] += 1
        stats["outcomes"][outcome] = stats["outcomes"].get(outcome, 0) + 1
        g = stats["by_generator"].setdefault(gen, [0, 0])
        g[0] += 1
        g[1] += outcome == "accepted"
        stats["slowest"] = sorted(stats["slowest"] + [[dt, i, gen, len(data)]], reverse=True)[:5]
        peak = max(traced, rss)
        if peak > 1 << 20 or outcome == "accepted":
            dec = declared_bytes(data)
            stats["max_declared"] = max(stats["max_declared"], dec)
            ratio = peak / (len(data) + dec)
            if peak > 1 << 20 and ratio > stats["worst_ratio"][0]:
                stats["worst_ratio"] = [ratio, {"index": i, "generator": gen, "size": len(data), "declared": dec, "peak": peak}]
            if peak > MEM_FACTOR * (len(data) + dec) + MEM_SLACK:
                stats["over_bound"] += 1
        if traced > stats["peak_traced"][0]:
            stats["peak_traced"] = [traced, {"index": i, "generator": gen, "size": len(data)}]
        if rss > stats["peak_rss"][0]:
            stats["peak_rss"] = [rss, {"index": i, "generator": gen, "size": len(data)}]
    tracemalloc.stop()
    # The slowest inputs again, without tracemalloc.
    for row in stats["slowest"]:
        gen, data = make_input(seeds, seed, target, row[1])
        t = time.perf_counter()
        try:
            run(data, random.Random(f"{seed}:{target}:{row[1]}:run"), work)
        except Exception:  # noqa: BLE001, S110 - timed again; its outcome is already counted
            pass
        row.append(time.perf_counter() - t)
    Path(out_path).write_text(json.dumps(stats))


# --- the driver -------------------------------------------------------------


def merge(results: list[dict], deaths: list[dict]) -> dict:
    """One target's figures from its workers' outputs."""
    total = {"inputs": len(deaths), "outcomes": {}, "by_generator": {}, "crashes": [], "slowest": [], "over_bound": 0}
    for key in ("peak_traced", "peak_rss", "worst_ratio"):
        total[key] = max((r[key] for r in results), key=lambda x: x[0], default=[0, None])
    total["max_declared"] = max((r["max_declared"] for r in results), default=0)
    total["hwm"] = all(r["hwm"] for r in results)
    for r in results:
        total["inputs"] += r["inputs"]
        total["over_bound"] += r["over_bound"]
        total["crashes"] += r["crashes"]
        total["slowest"] = sorted(total["slowest"] + r["slowest"], reverse=True)[:5]
        for k, v in r["outcomes"].items():
            total["outcomes"][k] = total["outcomes"].get(k, 0) + v
        for k, (c, acc) in r["by_generator"].items():
            g = total["by_generator"].setdefault(k, [0, 0])
            g[0] += c
            g[1] += acc
    total["deaths"] = deaths
    return total


def run_target(target: str, seed: int, n: int, workers: int, log) -> dict:
    """Run ``n`` inputs of one target across worker processes; restart a worker that dies."""
    per = math.ceil(n / workers)
    ranges = [(k * per, min(n, (k + 1) * per)) for k in range(workers) if k * per < n]
    tmp = Path(tempfile.mkdtemp(prefix="ecnn-fuzz-driver-"))
    results, deaths = [], []
    pending = list(ranges)
    running = []
    while pending or running:
        while pending and len(running) < workers:
            a, b = pending.pop(0)
            prog = tmp / f"p{a}"
            prog.write_bytes(struct.pack("<q", a - 1))
            out = tmp / f"o{a}.json"
            cmd = [sys.executable, __file__, "--worker", target, str(seed), str(a), str(b), str(prog), str(out)]
            p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            running.append([p, a, b, prog, out, a - 1, time.monotonic()])
        time.sleep(0.5)
        for item in list(running):
            p, a, b, prog, out, last, _ = item
            cur = struct.unpack("<q", prog.read_bytes()[:8])[0]
            if cur != last:
                item[5], item[6] = cur, time.monotonic()
            rc = p.poll()
            if rc is None and time.monotonic() - item[6] > HANG_S:
                p.kill()
                p.wait()
                rc = "hang"
            if rc is None:
                continue
            running.remove(item)
            err = p.stderr.read().decode(errors="replace")[-1500:]
            if rc == 0 and out.exists():
                results.append(json.loads(out.read_text()))
                continue
            deaths.append({"index": cur, "exit": rc, "stderr": err})
            log(f"{target}: worker died at input {cur} ({rc}); restarting after it")
            if cur + 1 < b:
                pending.append((cur + 1, b))
    return merge(results, deaths)


def _bomb_headers(nbytes: int) -> list[tuple[str, bytes]]:
    """Headers of about ``nbytes`` made of the objects that cost a parser the most memory or time per byte."""
    import msgpack

    top = b"\x83\xa5align\x08\xa8metadata\x80\xa7tensors"
    anc = b"\x84\xa5align\x08\xa8metadata\x80\xa7tensors\x90\xa2_x"

    def arrays(el: bytes, n: int) -> bytes:  # n elements in 16 arrays
        k = n // 16
        return b"\xdc\x00\x10" + (b"\xdd" + k.to_bytes(4, "big") + el * k) * 16

    def records(streams: list) -> bytes:
        rec = {"name": "a", "dtype": "int8", "shape": [], "offset": 0, "length": 0, "crc32": 0, "repr": {"kind": "raw"}, "streams": streams}
        one = msgpack.packb(rec)
        n = nbytes // len(one)
        return top + b"\xdd" + n.to_bytes(4, "big") + one * n

    # The compact form (1.4): records of 12 bytes (name "a", int8, no dimensions, raw, length 0), as many
    # as the 2^20-record cap allows; they parse to the end and fail only as duplicate names.
    one = b"\x00\x01a\x09\x00" + bytes(4) + b"\x00\x00\x00"
    n = min(nbytes // len(one), 1 << 20)
    compact_records = b"\xc1\x00\x03" + varint_bytes(n) + one * n
    return [
        ("compact records of 12 bytes", compact_records),
        ("empty arrays", top + arrays(b"\x90", nbytes)),
        ("empty maps", top + arrays(b"\x80", nbytes)),
        ("nils", top + arrays(b"\xc0", nbytes)),
        ("ancillary one-entry maps", anc + arrays(b"\x81\x00\x00", nbytes // 3)),
        ("ancillary two-character strings", anc + arrays(b"\xa2ab", nbytes // 3)),
        ("ancillary arrays nested 200 deep", anc + arrays(b"\x91" * 200 + b"\x00", nbytes // 201)),
        ("records of 64 shortest stream descriptors", records([{"coder": "ctx", "length": 0}] * 64)),
    ]


def header_bombs() -> list[tuple]:
    """Time and traced peak memory of opening headers made of the densest objects, each in a fresh process."""
    rows = []
    for mib in (1, 4, 16):
        for what, hb in _bomb_headers(mib << 20):
            data = build_raw_header(hb)
            if what.startswith(("records", "compact")):
                data += bytes(-len(data) % 8)  # the data section of records with empty payloads
            code = (
                "import sys, time, resource, tracemalloc; sys.path.insert(0, %r)\n"
                "from ecnn.file import EcnnFile\nfrom ecnn import errors\n"
                "data = open(%r, 'rb').read()\n"
                "def run():\n    try:\n        EcnnFile(data)\n        return 'opened'\n"
                "    except errors.EcnnError as e:\n        return type(e).__name__\n"
                "t = time.perf_counter(); r = run(); t = time.perf_counter() - t\n"
                "tracemalloc.start(); run(); peak = tracemalloc.get_traced_memory()[1]\n"
                "print(r, t, peak)\n"
            )
            with tempfile.NamedTemporaryFile(suffix=".ecnn", delete=False) as f:
                f.write(data)
            try:
                out = subprocess.run([sys.executable, "-c", code % (str(ROOT), f.name)], capture_output=True, text=True, timeout=600, check=False)
                err, secs, rss = out.stdout.split()
                rows.append((what, len(data), err, float(secs), int(rss)))
            except (subprocess.TimeoutExpired, ValueError):
                rows.append((what, len(data), "timeout/failed", float("nan"), 0))
            finally:
                os.unlink(f.name)
    return rows


def small_model(format_minor: int = 1) -> bytes:
    """A small packed model: two layers at 8 bits, exact biases, an int and a bool tensor, and an
    embedding kept bit-exact (format 1.1: ctx, fields, packed and blocks; 1.0: cat0 and planes)."""
    import ecnn.numpy as en
    from ecnn.config import EncodeConfig

    r = np.random.default_rng(3)
    model = {
        "fc1.weight": (r.standard_normal((32, 24)) * 0.1).astype(np.float32),
        "fc1.bias": (r.standard_normal(32) * 0.01).astype(np.float32),
        "fc2.weight": (r.standard_normal((10, 32)) * 0.1).astype(np.float32),
        "fc2.bias": np.zeros(10, np.float32),
        "emb.weight": (r.standard_normal((24, 16)) * 0.02).astype(np.float32),
        "steps": r.integers(0, 9, (4, 6)).astype(np.int32),
        "mask": r.random((8, 8)) < 0.3,
    }
    return en.encode(model, metadata={"model": "mlp"}, config=EncodeConfig(bits=8, exact=("emb.*",), format_minor=format_minor))


def describe(data: bytes) -> str:
    """``name dtype shape: kind [coders]`` for each tensor of a file."""
    from ecnn.container.reader import Container

    c = Container(data)
    out = "; ".join(
        f"{r.name} {r.dtype} {'x'.join(map(str, r.shape))}: {r.repr['kind']} [{', '.join(d['coder'] for d in r.streams)}]"
        for r in c.records
    )
    c.release()
    return out


def corruption_files(fixtures: bool = False) -> list[tuple[str, bytes]]:
    """The small packed model (format 1.1 and 1.0 coders), and with ``fixtures`` every valid conformance vector."""
    files = [("small packed model", small_model()), ("small packed model, format 1.0 coders", small_model(0))]
    if fixtures:
        files += [(f"fixtures/v1/valid/{p.name}", p.read_bytes()) for p in sorted((ROOT / "fixtures" / "v1" / "valid").glob("*.ecnn"))]
    return files


_CORRUPT: list = []  # (name, bytes, reference tensors) per file, set before the workers fork


def _damage_outcome(bad: bytes, ref: dict) -> str:
    import ecnn.numpy as en

    try:
        got = en.decode(bad)
    except errors.EcnnError:
        return "detected"
    except Exception as e:  # noqa: BLE001 - anything untyped is a crash
        return f"crash: {type(e).__name__}: {e}"
    same = got.keys() == ref.keys() and all(
        got[k].dtype == ref[k].dtype and np.array_equal(got[k], ref[k], equal_nan=True) for k in ref
    )
    return "same tensors" if same else "silent"


def _corrupt_range(task: tuple[int, int, int]) -> dict:
    """Every bit flip of bytes ``start..stop-1`` of file ``f``, and every truncation to those lengths."""
    f, start, stop = task
    _, data, ref = _CORRUPT[f]
    reset = _reset_hwm()
    base = _status_kib("VmRSS")
    out = {"file": f, "flips": 0, "flips_found": 0, "cuts": 0, "cuts_found": 0, "bad": [], "slowest": (0.0, "")}
    bad = bytearray(data)
    def tally(damaged: bytes, key: str, label: str) -> None:
        t = time.perf_counter()
        what = _damage_outcome(damaged, ref)
        t = time.perf_counter() - t
        out[key] += 1
        out[key + "_found"] += what == "detected"
        if what != "detected":
            out["bad"].append(f"{label}: {what}")
        if t > out["slowest"][0]:
            out["slowest"] = (t, label)

    for i in range(start, stop):
        for bit in range(8):
            bad[i] = data[i] ^ (1 << bit)
            tally(bytes(bad), "flips", f"flip of bit {bit} of byte {i}")
        bad[i] = data[i]
        tally(data[:i], "cuts", f"cut to {i} bytes")
    out["peak_kib"] = (_status_kib("VmHWM") - base) if reset else -1
    return out


def corruption(files, workers: int = 2) -> list[dict]:
    """Every single-bit flip and every truncation of each file, over ``workers`` forked processes.

    Returns one row per file: bytes, flips and truncations tried and detected (a typed error),
    the damaged inputs not detected (each described), the slowest decode and the peak RSS rise.
    """
    import multiprocessing

    import ecnn.numpy as en

    _CORRUPT[:] = [(name, data, en.decode(data)) for name, data in files]
    tasks = []
    for f, (_, data, _) in enumerate(_CORRUPT):
        step = max(64, len(data) // (8 * workers))
        tasks += [(f, a, min(a + step, len(data))) for a in range(0, len(data), step)]
    tasks.sort(key=lambda t: t[1] - t[2])  # the longest first
    if workers > 1:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            parts = pool.map(_corrupt_range, tasks, chunksize=1)
    else:
        parts = [_corrupt_range(t) for t in tasks]
    rows = []
    for f, (name, data, _) in enumerate(_CORRUPT):
        mine = [p for p in parts if p["file"] == f]
        row = {"name": name, "bytes": len(data), "bad": [b for p in mine for b in p["bad"]]}
        for k in ("flips", "flips_found", "cuts", "cuts_found"):
            row[k] = sum(p[k] for p in mine)
        row["slowest"] = max(p["slowest"] for p in mine)
        row["peak_kib"] = max(p["peak_kib"] for p in mine)
        rows.append(row)
    _CORRUPT.clear()
    return rows


def build_raw_header(hb: bytes) -> bytes:
    head = struct.pack("<HHI", fmt.FORMAT_MAJOR, 0, len(hb))
    return fmt.SIGNATURE + head + struct.pack("<I", fmt.crc32(head, hb)) + hb


def _mib(n: float) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def report(results: dict, seconds: dict, nseeds: int) -> str:
    lines = [
        "| target | inputs | accepted | rejected (typed error / exit 1) | crashes | dead or hung workers | slowest input, s (traced / plain) | peak traced | peak RSS rise | worst peak / (input + declared) | over bound | inputs/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for t, r in results.items():
        acc = r["outcomes"].get("accepted", 0)
        crashes = r["outcomes"].get("CRASH", 0)
        rej = r["inputs"] - acc - crashes - len(r["deaths"])
        slow = r["slowest"][0] if r["slowest"] else [0, 0, "-", 0, 0]
        wr = r["worst_ratio"]
        wr_s = f"{wr[0]:.1f} ({wr[1]['generator']} #{wr[1]['index']}, {wr[1]['size']:,} B + {wr[1]['declared']:,} B declared)" if wr[1] else "-"
        lines.append(
            f"| {t} | {r['inputs']:,} | {acc:,} | {rej:,} | {crashes} | {len(r['deaths'])} | "
            f"{slow[0]:.3f} / {slow[4]:.3f} ({slow[2]}, {slow[3]:,} B) | {_mib(r['peak_traced'][0])} | {_mib(r['peak_rss'][0])} | "
            f"{wr_s} | {r['over_bound']} | {r['inputs'] / max(seconds[t], 1e-9):,.0f} |"
        )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--inputs", type=int, default=100_000, help="inputs per target (default 100000)")
    ap.add_argument("--targets", default=",".join(TARGETS), help="comma-separated: decode,open,cli")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--header-bombs", action="store_true", help="also time headers of 1-16 MiB of the densest objects (alone with --targets '')")
    ap.add_argument("--corruption", action="store_true", help="only: every bit flip and truncation of a small packed model")
    ap.add_argument("--fixtures", action="store_true", help="with --corruption: also every valid conformance vector")
    ap.add_argument("--replay", metavar="TARGET:INDEX", help="rebuild one input, run it and print what happens")
    ap.add_argument("--save", metavar="PATH", help="with --replay: write the input to PATH")
    ap.add_argument("--no-append", action="store_true", help="do not append to bench/RESULTS.md")
    ap.add_argument(
        "--collect",
        nargs="+",
        metavar="TARGET=DIR:SECONDS",
        help="report from the worker outputs (o*.json) left in a driver's folder by a run that was stopped",
    )
    ap.add_argument("--worker", nargs=6, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        target, seed, start, stop, prog, out = a.worker
        worker(target, int(seed), int(start), int(stop), prog, out)
        return 0
    if a.replay:
        target, index = a.replay.split(":")
        seeds = load_seeds()
        gen, data = make_input(seeds, a.seed, target, int(index))
        if a.save:
            Path(a.save).write_bytes(data)
        print(f"{target}:{index}: generator {gen}, {len(data):,} bytes")
        try:
            RUN[target](data, random.Random(f"{a.seed}:{target}:{index}:run"), Path(tempfile.mkdtemp()))
            print("accepted")
        except Rejected as r:
            print("rejected:", r.what)
        return 0
    if a.corruption:
        return corruption_main(a)
    targets = [t for t in a.targets.split(",") if t]
    seeds = load_seeds()
    results, seconds = {}, {}
    for spec in a.collect or ():
        t, rest = spec.split("=", 1)
        folder, secs = rest.rsplit(":", 1)
        results[t] = merge([json.loads(f.read_text()) for f in sorted(Path(folder).glob("o*.json"))], [])
        seconds[t] = float(secs)
        targets = []
    for t in targets:
        t0 = time.perf_counter()
        results[t] = run_target(t, a.seed, a.inputs, a.workers, lambda m: print(m, file=sys.stderr))
        seconds[t] = time.perf_counter() - t0
        print(f"{t}: {results[t]['inputs']:,} inputs in {seconds[t]:.0f} s", file=sys.stderr)
    table = report(results, seconds, len(seeds))
    print(table)
    notes = []
    for t, r in results.items():
        for c in r["crashes"][:5]:
            notes.append(f"CRASH {t}:{c['index']} ({c['generator']}): {c['error']}\n{c['trace']}")
        for d in r["deaths"]:
            notes.append(f"DEAD {t}:{d['index']}: exit {d['exit']}\n{d['stderr']}")
    for n in notes:
        print(n)
    outcomes = {t: dict(sorted(r["outcomes"].items(), key=lambda kv: -kv[1])) for t, r in results.items()}
    gens = {t: r["by_generator"] for t, r in results.items()}
    print(json.dumps({"outcomes": outcomes, "generators (inputs, accepted)": gens}, indent=1))
    bombs = header_bombs() if a.header_bombs else []
    btable = ""
    if bombs:
        btable = "| header made of | file bytes | outcome | seconds | peak traced memory | traced bytes per file byte |\n|---|---:|---|---:|---:|---:|\n" + "\n".join(
            f"| {w} | {n:,} | {e} | {s:.2f} | {_mib(m)} | {m / n:.1f} |" for w, n, e, s, m in bombs
        )
        print(btable)
    if not a.no_append:
        from benchlib import command_line, machine, record_results

        now = _dt.datetime.now(_dt.timezone.utc).strftime("%a %b %d %H:%M:%S UTC %Y")
        crash_lines = "".join(f"- {n.splitlines()[0]}\n" for n in notes) or "- no crashes, no dead or hung workers\n"
        ran = [t for t in TARGETS if t in results]
        bench = "fuzz_ecnn" if len(ran) == len(TARGETS) else f"fuzz_ecnn --targets {','.join(ran) or 'none'}"
        section = (
            f"## {bench}: decode, open and the CLI on hostile files ({now})\n\n"
            f"- machine: {machine()} (shared with other work while it ran: times are upper bounds)\n"
            f"- command: `{command_line()}`\n"
            f"- seeds: {len(seeds)} (every file under fixtures/, and small files from the current encoder); "
            f"generators raw, header, payload, tree, generate (tools/fuzz_ecnn.py); readers capped at "
            f"max_tensor_bytes {CAP_TENSOR >> 20} MiB, max_total_bytes {CAP_TOTAL >> 20} MiB\n"
            f"- peak memory per input: tracemalloc peak and VmHWM rise (reset per input); bound checked: "
            f"peak <= {MEM_FACTOR} x (input bytes + declared decoded bytes of the validated records) + {MEM_SLACK >> 20} MiB; "
            f"largest declared size seen {max((r['max_declared'] for r in results.values()), default=0):,} bytes\n\n"
            f"{table}\n\n{crash_lines}"
            f"\nOutcomes per target: `{json.dumps(outcomes)}`\n"
        )
        bnote = (
            "Headers made only of the densest MessagePack objects, each opened with `EcnnFile(bytes)` in its own process "
            "(no caps lowered): seconds of one plain run, then the tracemalloc peak of a second run (it includes the "
            "reader's copy of the header bytes, 1 byte per byte):"
        )
        if btable and not results:
            bench = "fuzz_ecnn --header-bombs"
            section = (
                f"## fuzz_ecnn --header-bombs: parsing the densest headers ({now})\n\n"
                f"- machine: {machine()} (shared with other work while it ran: times are upper bounds)\n"
                f"- command: `{command_line()}`\n\n{bnote}\n\n{btable}\n"
            )
        elif btable:
            section += f"\n{bnote}\n\n{btable}\n"
        record_results(bench, section)
    bad = any(r["crashes"] or r["deaths"] for r in results.values())
    return 1 if bad else 0


def corruption_main(a) -> int:
    t0 = time.perf_counter()
    rows = corruption(corruption_files(a.fixtures), a.workers)
    secs = time.perf_counter() - t0
    lines = [
        "| file | bytes | bit flips detected / tried | truncations detected / tried | not detected | silent wrong tensors | slowest decode, ms | peak RSS rise |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def line(name, r):
        silent = sum("silent" in b for b in r["bad"])
        peak = f"{r['peak_kib'] / 1024:.1f} MiB" if r["peak_kib"] >= 0 else "-"
        return (
            f"| {name} | {r['bytes']:,} | {r['flips_found']:,} / {r['flips']:,} | {r['cuts_found']:,} / {r['cuts']:,} | "
            f"{len(r['bad'])} | {silent} | {r['slowest'][0] * 1e3:.1f} ({r['slowest'][1]}) | {peak} |"
        )

    lines += [line(r["name"], r) for r in rows]
    if len(rows) > 1:
        tot = {k: sum(r[k] for r in rows) for k in ("bytes", "flips", "flips_found", "cuts", "cuts_found", "peak_kib")}
        tot.update(bad=[b for r in rows for b in r["bad"]], slowest=max(r["slowest"] for r in rows), peak_kib=max(r["peak_kib"] for r in rows))
        lines.append(line("all", tot))
    table = "\n".join(lines)
    print(table)
    bad = [f"{r['name']}: {b}" for r in rows for b in r["bad"]]
    for b in bad[:20]:
        print(b)
    print(f"{secs:.0f} s on {a.workers} workers")
    if not a.no_append:
        from benchlib import command_line, machine, record_results

        now = _dt.datetime.now(_dt.timezone.utc).strftime("%a %b %d %H:%M:%S UTC %Y")
        listed = "".join(f"- {b}\n" for b in bad[:20]) or "- every damaged file was rejected with a typed error\n"
        record_results(
            "fuzz_ecnn --corruption",
            f"## fuzz_ecnn --corruption: every single-bit flip and every truncation ({now})\n\n"
            f"- machine: {machine()} (shared with other work while it ran: times are upper bounds)\n"
            f"- command: `{command_line()}`\n"
            f"- each damaged file (every bit of every byte flipped, one at a time; the file cut to every length "
            f"from 0 to its size - 1) is decoded whole with `ecnn.numpy.decode`; detected = a typed `ecnn.errors` error; "
            f"silent = decoded without an error to tensors that differ from the original's. "
            f"The small packed model is tools/fuzz_ecnn.py `small_model` (8 bits, emb.weight kept bit-exact), as the "
            f"encoder codes it by default (tensor: representation [stream coders]: {describe(small_model())}) and with "
            f"the coders of format 1.0 ({describe(small_model(0))}). Slowest decode: one damaged input, "
            f"wall clock; peak RSS rise: VmHWM above the worker's RSS at the start of its share; {secs:.0f} s in all "
            f"on {a.workers} worker processes\n\n{table}\n\n{listed}"
        )
    return 0 if not bad else 1


if __name__ == "__main__":
    raise SystemExit(main())
