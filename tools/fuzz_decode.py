"""Mutation fuzzing of the decoder (a benchmark, not a test; tools/fuzz_ecnn.py also fuzzes
ecnn.open and the CLI, generates hostile headers and measures memory per input).

Takes the valid conformance vectors in fixtures/v1/valid, damages them and
decodes the result with ``ecnn.numpy.decode``. Anything other than an
``ecnn.errors.EcnnError`` is a crash. Three kinds of damage:

* ``payload``: bytes changed in the data section, then every payload CRC and
  the header CRC recomputed, so the damage reaches the stream decoders;
* ``header``: bytes changed in the header, then the header CRC recomputed, so
  the damage reaches the strict MessagePack parser, or the compact header's
  parser (format 1.4: the vectors named ``compact_*``), and the field checks;
* ``raw``: bytes changed anywhere and nothing fixed (the checksums must catch it).

Usage:
    .venv/bin/python tools/fuzz_decode.py [--seconds 60] [--seed 0] [--no-append]

Prints inputs tried, crashes, the slowest input and the peak RSS, and appends
them to bench/RESULTS.md with the command.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import random
import resource
import struct
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import msgpack  # noqa: E402

import ecnn.numpy as en  # noqa: E402
from ecnn import errors  # noqa: E402
from ecnn.container import compact  # noqa: E402
from ecnn.container import format as fmt  # noqa: E402
from ecnn.container.reader import Container  # noqa: E402


def _rebuild_with_crcs(data: bytes) -> bytes:
    """Recompute every payload CRC and the header CRC of a file whose header still parses."""
    try:
        c = Container(data)
    except errors.EcnnError:
        return data
    h = c.header
    for r, rec in zip(h["tensors"], c.records):
        r["crc32"] = fmt.crc32(bytes(c.buf[rec.offset : rec.offset + rec.length]))
    hb = compact.encode(h) if data[fmt.PREAMBLE_SIZE] == compact.MARK else msgpack.packb(h)  # the seed's header form
    head = struct.pack("<HHI", fmt.FORMAT_MAJOR, fmt.FORMAT_MINOR, len(hb))
    out = fmt.SIGNATURE + head + struct.pack("<I", fmt.crc32(head, hb)) + hb
    out += bytes(fmt.align_up(len(out), h["align"]) - len(out))
    return out + bytes(c.buf[c.data_start :])


def mutate(data: bytes, kind: str, rng: random.Random) -> bytes:
    d = bytearray(data)
    hlen = struct.unpack_from("<I", d, 12)[0]
    for _ in range(rng.randint(1, 4)):
        if kind == "payload":
            start = 20 + hlen
            i = rng.randrange(start, len(d)) if len(d) > start else rng.randrange(len(d))
        elif kind == "header":
            i = rng.randrange(20, 20 + hlen)
        else:
            i = rng.randrange(len(d))
        d[i] = rng.randrange(256) if rng.random() < 0.7 else d[i] ^ (1 << rng.randrange(8))
    if kind == "payload":
        return _rebuild_with_crcs(bytes(d))
    if kind == "header":
        d[16:20] = struct.pack("<I", fmt.crc32(bytes(d[8:16]), bytes(d[20 : 20 + hlen])))
    return bytes(d)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0, help="time per kind of damage (default 60)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-append", action="store_true", help="do not append to bench/RESULTS.md")
    a = ap.parse_args()
    seeds = [p.read_bytes() for p in sorted((ROOT / "fixtures" / "v1" / "valid").glob("*.ecnn"))]
    rng = random.Random(a.seed)
    rows = []
    all_crashes: dict[str, str] = {}
    for kind in ("payload", "header", "raw"):
        n, rejected, slowest, t0 = 0, 0, 0.0, time.perf_counter()
        while time.perf_counter() - t0 < a.seconds:
            data = mutate(rng.choice(seeds), kind, rng)
            t = time.perf_counter()
            try:
                en.decode(data)
            except errors.EcnnError:
                rejected += 1
            except Exception as e:  # a crash: anything that is not a typed ecnn error
                all_crashes.setdefault(f"{kind}: {type(e).__name__}: {str(e)[:80]}", traceback.format_exc()[-800:])
            slowest = max(slowest, time.perf_counter() - t)
            n += 1
        crashes = sum(1 for k in all_crashes if k.startswith(kind + ":"))
        rows.append((kind, n, rejected, n - rejected, crashes, slowest))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    lines = ["| damage | inputs | rejected (typed error) | decoded | crash kinds | slowest input s |", "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {k} | {n:,} | {r:,} | {d:,} | {c} | {s:.4f} |" for k, n, r, d, c, s in rows]
    table = "\n".join(lines)
    print(table)
    print(f"peak RSS {peak:.0f} MiB; largest seed {max(map(len, seeds)):,} bytes")
    for k, v in all_crashes.items():
        print("CRASH", k, v, sep="\n")
    if not a.no_append:
        from benchlib import command_line, machine, record_results

        now = _dt.datetime.now(_dt.timezone.utc).strftime("%a %b %d %H:%M:%S UTC %Y")
        record_results(
            "fuzz_decode",
            f"## fuzz_decode: mutated conformance vectors ({now})\n\n"
            f"- machine: {machine()}\n"
            f"- command: `{command_line()}`\n"
            f"- seeds: the {len(seeds)} files of fixtures/v1/valid; peak RSS of the whole run {peak:.0f} MiB\n\n{table}\n"
        )
    return 1 if all_crashes else 0


if __name__ == "__main__":
    raise SystemExit(main())
