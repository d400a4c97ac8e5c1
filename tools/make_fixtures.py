"""Build the conformance vectors under fixtures/v1/.

    python tools/make_fixtures.py            # check the committed fixtures against expected.json
    python tools/make_fixtures.py --write    # add fixtures that do not exist yet (never changes old ones)

valid/NAME.ecnn must decode to the tensors described in valid/expected.json
(dtype, shape, SHA-256 of the little-endian storage bytes). invalid/NAME.ecnn
must be rejected with the error class named in invalid/expected.json.
Fixtures are never deleted: every later version must keep decoding them.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import struct
import sys
from pathlib import Path

import msgpack
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import ecnn.numpy as en  # noqa: E402
from ecnn.config import EncodeConfig  # noqa: E402
from ecnn.container import format as fmt  # noqa: E402
from ecnn.container.compact import varint_bytes  # noqa: E402
from ecnn.container.reader import Container  # noqa: E402
from ecnn import codec  # noqa: E402

OUT = ROOT / "fixtures" / "v1"


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _bf16(x: np.ndarray) -> np.ndarray:
    from ecnn import dtypes, quantize

    return quantize.from_float(x.astype(np.float32), dtypes.get("bfloat16"))


def valid() -> dict[str, tuple[bytes, dict]]:
    """name -> (file bytes, tensors as numpy storage arrays with dtype names)."""
    out = {}

    def add(name, arrays, **kw):
        cfg = kw.pop("config", None)
        data = en.encode(arrays, config=cfg, **kw) if cfg else en.encode(arrays, **kw)
        out[name] = data

    r = _rng(1)
    add(
        "uniform_cat0",
        {"fc.weight": (r.standard_normal((24, 16)) * 0.05).astype(np.float32), "fc.bias": (r.standard_normal(24) * 0.01).astype(np.float32)},
        config=EncodeConfig(bits=4, per_row=False),
        metadata={"model": "tiny mlp", "ecnn.fixture": "uniform_cat0"},
    )
    r = _rng(2)
    add("uniform_float16_float64", {"h": (r.standard_normal((20, 10))).astype(np.float16), "d": r.standard_normal((5, 7))}, config=EncodeConfig(bits=8, per_row=False))
    r = _rng(3)
    add("lossless_planes", {"w": (r.standard_normal((40, 30)) * 0.02).astype(np.float32), "v": (r.standard_normal(100)).astype(np.float64)}, lossless=True)
    r = _rng(4)
    add(
        "ints_and_bools",
        {
            "pos": np.arange(512, dtype=np.int64).reshape(1, 512),
            "mask": r.random((16, 16)) > 0.2,
            "q8": r.integers(-128, 128, (8, 8)).astype(np.int8),
            "u8": np.minimum(r.geometric(0.3, 300), 255).astype(np.uint8),
            "wide": r.integers(-(1 << 40), 1 << 40, 50).astype(np.int64),
        },
        lossless=True,
    )
    add("const_scalar_empty", {"zeros": np.zeros((10, 10), np.float32), "scalar": np.array(2.5, np.float32), "empty": np.zeros((0, 4), np.float32)}, config=EncodeConfig(bits=8, per_row=False))
    r = _rng(5)
    add("chunked", {"w": np.rint(r.laplace(0, 4, (100, 100))).astype(np.float32) * 0.01}, config=EncodeConfig(bits=8, chunk=4096, per_row=False))
    add("no_tensors", {}, metadata={"note": "a file may hold only metadata"})
    r = _rng(6)
    add("align64", {"a": r.standard_normal((9, 9)).astype(np.float32), "b": np.arange(3, dtype=np.int16)}, config=EncodeConfig(lossless=True, align=64))
    # Ancillary keys (leading underscore) in the header, a record and a stream: decoders ignore them.
    base = en.encode({"w": (_rng(7).standard_normal((6, 6)) * 0.1).astype(np.float32)}, config=EncodeConfig(bits=6, per_row=False))
    h, area = split(base)
    h["_comment"] = "ancillary"
    h["tensors"][0]["_note"] = "ancillary"
    h["tensors"][0]["streams"][0]["_x"] = 1
    out["ancillary_fields"] = build(h, area)
    r = _rng(8)
    bf = _bf16(r.standard_normal((12, 12)))
    from ecnn import dtypes as dt_
    from ecnn import file as efile

    arrays = {"bf": (bf, dt_.get("bfloat16")), "bf_exact": (_bf16(r.standard_normal(12)), dt_.get("bfloat16"))}
    out["bfloat16"] = efile.encode(arrays, EncodeConfig(bits=8, per_row=False))
    # Row/column scale contexts: signed (magnitudes + signs) and unsigned (offset) streams, several chunks.
    r = _rng(9)
    rs, cs = np.exp(r.standard_normal(256) * 0.8), np.exp(r.standard_normal(64) * 0.8)
    w = (r.standard_normal((256, 64)) * rs[:, None] * cs[None, :]).astype(np.float32)
    out["rowcol_signs"] = en.encode({"w": w}, config=EncodeConfig(bits=6, chunk=4096, per_row=False))
    u = np.minimum(np.abs(np.rint(w / np.abs(w).max() * 60)), 255).astype(np.uint8) + 2
    out["rowcol_unsigned"] = en.encode({"u": u}, lossless=True)
    # Per-row steps: an outlier row keeps its coarse step, the others get finer power-of-two steps.
    r = _rng(11)
    w = (r.standard_normal((48, 96)) * 0.05).astype(np.float32)
    w[7] *= 30
    h = (r.standard_normal((10, 12)) * 0.5).astype(np.float16)
    out["uniform_rows"] = en.encode({"w": w, "h": h}, config=EncodeConfig(bits=8, per_row=True))
    # codebook (1.1): few distinct values, special ones included, in three float types.
    out["codebook"] = efile.encode(codebook_arrays(), EncodeConfig(lossless=True))
    # fields (1.1): the encoder's choice in three float types, and every stream variant written by hand.
    out["fields"] = efile.encode(fields_arrays(), EncodeConfig(lossless=True))
    out["fields_forced"] = fields_forced_file()
    # fields heads as blocks streams (1.1): the encoder's choice, and row/column classes set by hand.
    out["fields_blocks"] = efile.encode(fields_arrays(), EncodeConfig(lossless=True, chunk=4096))
    out["fields_blocks_forced"] = fields_blocks_file()
    # ctx streams (1.1): the encoder's choice on sparse weights, and every lanes option set by hand.
    arrays, steps = ctx_sparse_arrays()
    out["ctx_sparse"] = en.encode(arrays, config=EncodeConfig(steps=steps, chunk=4096))
    out["ctx_forced"] = ctx_forced_file()
    # ctx model 2 (the encoder wrote it then): rowcol with sign tables by column class (signed), and from an offset (unsigned).
    out["ctx_rowcol"] = en.encode(ctx_rowcol_arrays(), config=EncodeConfig(steps={"w": 0.25, "p": 0.5}, chunk=4096))
    # ctx model 3: the same with the signs class by class (what the encoder wrote then).
    out["ctx_rowcol_by_class"] = en.encode(ctx_rowcol_arrays(), config=EncodeConfig(steps={"w": 0.25, "p": 0.5}, chunk=4096))
    # ctx model 4: the same arrays, magnitudes in blocks order and signs four per symbol (what the encoder writes since),
    # and a hand-built file with several chunks, row classes with runs, sign classes with a zero count, and an offset.
    out["ctx_rowcol_blocks"] = ctx_rowcol_blocks_file()
    out["ctx_rowcol_blocks_forced"] = ctx_rowcol_blocks_forced_file()
    # fields heads as rans streams (1.2): the encoder's choice, and classes, chunks and lanes set by hand.
    out["fields_rans"] = efile.encode(fields_arrays(), EncodeConfig(lossless=True, chunk=4096, format_minor=2))
    out["fields_rans_forced"] = fields_rans_file()
    # ctx model 5 (1.2): model 4 in rANS lanes, in chunks of one lane and in one chunk of three lanes.
    out["ctx_rowcol_rans"] = en.encode(ctx_rowcol_arrays(), config=EncodeConfig(steps={"w": 0.25, "p": 0.5}, chunk=4096, format_minor=2))
    out["ctx_rowcol_rans_lanes"] = en.encode(ctx_rowcol_arrays(), config=EncodeConfig(steps={"w": 0.25, "p": 0.5}, chunk=1 << 15, format_minor=2))
    # ctx model 5 in one chunk of 2^18 symbols, which the encoder deals to 32 lanes (a vector decoder's 4 x 8).
    out["ctx_rowcol_rans_wide"] = en.encode(ctx_rowcol_wide_arrays(), config=EncodeConfig(steps={"w": 1.0}, chunk=1 << 18, format_minor=2))
    out["cat0_noncanonical"] = cat0_noncanonical_file()
    out["packed_streams"] = packed_streams_file()
    # Stored files (1.3): a model folder's small files after the tensors, and a file of stored files only.
    out["stored_files"] = efile.encode(
        {"emb": (np.arange(24, dtype=np.float32).reshape(4, 6) / 8, dt_.get("float32")), "n": (np.arange(3, dtype=np.int8), dt_.get("int8"))},
        EncodeConfig(bits=8),
        {"ecnn.fixture": "stored_files"},
        files=STORED_FILES,
    )
    out["stored_files_only"] = efile.encode({}, EncodeConfig(align=16), files={"README.md": b"# a file of stored files only\n", "a/b/c.txt": b"", "x.json": b"{}"})
    # The compact header (1.4): FORMAT.md Appendix E, and a file with metadata, stored files, align 1 and names
    # that share a prefix ending inside a UTF-8 sequence ("a\xc3" of "a\u00e9" and "a\u00e8").
    out["compact_small"] = en.encode(
        {"fc.weight": np.array([[511, 510, 510, 510], [510, 510, 511, 510]], np.float32), "fc.bias": np.array([1, 2, 3], np.int8)},
        config=EncodeConfig(bits=10, per_row=False),
    )
    r = _rng(12)
    out["compact_metadata_files"] = efile.encode(
        {
            "layer.0.weight": ((r.standard_normal((16, 8)) * 0.1).astype(np.float32), dt_.get("float32")),
            "layer.0.bias": ((r.standard_normal(16) * 0.01).astype(np.float32), dt_.get("float32")),
            "a\u00e9": (np.arange(5, dtype=np.int16), dt_.get("int16")),
            "a\u00e8": (np.array([True, False, True]), dt_.get("bool")),
        },
        EncodeConfig(bits=6, align=1),
        {"ecnn.fixture": "compact_metadata_files", "note": "caf\u00e9"},
        files={"config.json": b'{"a": 1}\n', "sub/config.json": b"{}", "sub/vocab.txt": b"x\n"},
    )
    # Every representation and stream coder in a compact header: older vectors with their headers made compact,
    # payloads unchanged (so each decodes to the tensors of the vector it comes from).
    for name in COMPACT_OF:
        path = OUT / "valid" / f"{name}.ecnn"
        if path.exists():
            out[f"compact_{name}"] = compact_of(path.read_bytes())
    return out


# Older vectors whose headers together use every kind, coder and field of FORMAT.md 6.7.4.
COMPACT_OF = (
    "const_scalar_empty", "ints_and_bools", "lossless_planes", "uniform_rows", "rowcol_signs", "codebook",
    "fields_forced", "fields_blocks_forced", "fields_rans_forced", "ctx_forced", "packed_streams", "stored_files", "no_tensors",
)


def compact_of(data: bytes) -> bytes:
    """The same file with its header in the compact form of FORMAT.md 6.7 (Format_Minor 4), payloads unchanged."""
    from ecnn.container import compact

    c = Container(data)
    return build_raw(compact.encode(c.header), bytes(c.buf[c.data_start :]), align=c.align, minor=4, empty=not c.records and not c.files)


def build_raw(hb: bytes, area: bytes, *, align: int = 8, minor: int = 4, empty: bool = False, crc=None) -> bytes:
    """A file from header bytes as they are (any form), padding to ``align`` unless the file holds no payloads."""
    head = struct.pack("<HHI", 1, minor, len(hb))
    data = fmt.SIGNATURE + head + struct.pack("<I", fmt.crc32(head, hb) if crc is None else crc) + hb
    if not empty:
        data += bytes(fmt.align_up(len(data), align) - len(data))
    return data + area


def invalid_compact(base: bytes) -> dict[str, tuple[bytes, str, str]]:
    """Compact headers (1.4) broken one way each, written byte by byte from FORMAT.md 6.7 (CRC-32s recomputed).

    ``base`` is valid/compact_small: FORMAT.md Appendix E.
    """
    c = Container(base)
    area = bytes(c.buf[c.data_start :])
    w, b = c.records
    ok = {
        "mark": b"\xc1", "flags": b"\x00", "align": b"\x03", "meta": b"", "count": b"\x02",
        "r0": b"\x00\x09fc.weight" + b"\x01" + b"\x02\x02\x04" + struct.pack("<I", w.crc32) + b"\x03" + struct.pack("<I", 0x3F800000) + b"\x01\x04\x0f",
        "r1": b"\x03\x04bias" + b"\x09" + b"\x01\x03" + struct.pack("<I", b.crc32) + b"\x00" + b"\x00\x03",
        "tail": b"",
    }
    assert b"".join(ok.values()) == bytes(c.buf[20 : c.header_end]), "compact_small is no longer Appendix E"
    out = {}

    def add(name, err, why, data=None, **parts):
        hb = b"".join({**ok, **parts}.values())
        out[f"compact_{name}"] = (build_raw(hb, area) if data is None else data, err, why)

    r1_int_raw = b"\x03\x04bias\x09\x01\x03" + struct.pack("<I", b.crc32) + b"\x02\x01\x01\x03\x01\x01"  # kind int, one raw stream
    add("truncated", "MalformedHeader", "the header ends inside record 1's length", r1=ok["r1"][:-1])
    add("trailing_byte", "MalformedHeader", "a byte after the last field", tail=b"\x00")
    add("varint_not_shortest", "MalformedHeader", "Tensor_Count 2 written as 82 00", count=b"\x82\x00")
    add("varint_overflow", "MalformedHeader", "a dimension of 2^64 (ten varint bytes)", r1=ok["r1"].replace(b"\x09\x01\x03", b"\x09\x01" + b"\x80" * 9 + b"\x02", 1))
    add("varint_too_long", "MalformedHeader", "a varint of eleven bytes", r1=ok["r1"].replace(b"\x09\x01\x03", b"\x09\x01" + b"\x80" * 10 + b"\x01", 1))
    add("tensor_count_cap", "MalformedHeader", "Tensor_Count 2^20 + 1", count=varint_bytes((1 << 20) + 1))
    add("tensor_count_past_end", "MalformedHeader", "Tensor_Count 1000: more records than the bytes left can hold", count=varint_bytes(1000))
    add("reserved_flag", "UnknownField", "Flags bit 2 set", flags=b"\x04")
    add("align_log2", "InvalidField", "Align_Log2 13 (align 8192)", align=b"\x0d")
    add("dtype_code", "UnsupportedCoding", "dtype code 15", r1=ok["r1"].replace(b"bias\x09", b"bias\x0f", 1))
    add("kind_code", "UnsupportedCoding", "representation code 7", r0=ok["r0"].replace(b"\x03\x00\x00\x80\x3f", b"\x07\x00\x00\x80\x3f", 1))
    add("coder_code", "UnsupportedCoding", "stream coder code 8", r0=ok["r0"][:-2] + b"\x08\x0f")
    add("ndim_cap", "LimitExceeded", "33 dimensions", r1=ok["r1"].replace(b"\x09\x01\x03", b"\x09\x21" + b"\x01" * 33, 1))
    add("streams_cap", "LimitExceeded", "65 streams", r0=ok["r0"][:-3] + b"\x41" + b"\x00\x00\x00" * 65)
    add("name_prefix", "InvalidField", "record 1 shares 10 bytes of a 9-byte name", r1=b"\x0a" + ok["r1"][1:])
    add("name_too_long", "InvalidField", "a name of 1025 bytes", r1=b"\x03" + varint_bytes(1022) + b"x" * 1022 + ok["r1"][6:])
    add("name_utf8", "MalformedHeader", "record 1's name 'fc.' + ff: not UTF-8", r1=b"\x03\x01\xff" + ok["r1"][6:])
    add("name_empty", "InvalidField", "a name of no bytes", r0=b"\x00\x00" + ok["r0"][11:])
    add("bool_byte", "InvalidField", "a raw stream's signed byte is 2", r1=r1_int_raw[:-1] + b"\x02")
    add("duplicate_metadata_key", "DuplicateKey", "metadata key 'k' twice", flags=b"\x01", meta=b"\x02\x01k\x01a\x01k\x01b")
    add("empty_metadata", "InvalidField", "a metadata block of no entries", flags=b"\x01", meta=b"\x00")
    add("metadata_cap", "MalformedHeader", "65,537 metadata entries", flags=b"\x01", meta=varint_bytes(65537))
    add("duplicate_names", "DuplicateTensorName", "two records named fc.weight", r1=b"\x09\x00" + ok["r1"][6:])
    add("dim_range", "InvalidField", "a dimension of 2^48 + 1", r1=ok["r1"].replace(b"\x09\x01\x03", b"\x09\x01" + varint_bytes((1 << 48) + 1), 1))
    add("step_zero", "InvalidField", "a uniform step of +0.0", r0=ok["r0"].replace(struct.pack("<I", 0x3F800000), bytes(4), 1))
    hb = b"".join({**ok, "r1": ok["r1"][:-1] + b"\x02"}.values())
    add("raw_length", "InvalidField", "a raw record of length 2 for 3 int8 elements", data=build_raw(hb, area[:-1]))
    add("past_end", "TruncatedFile", "record 1's length of 1000 runs past the end", r1=ok["r1"][:-1] + varint_bytes(1000))
    add("payload_checksum", "PayloadChecksumMismatch", "record 0's crc32 off by one bit",
        r0=ok["r0"].replace(struct.pack("<I", w.crc32), struct.pack("<I", w.crc32 ^ 1), 1))
    add("trailing_data", "TrailingData", "a byte after the last payload", data=base + b"\x00")
    blob = b'{"a": 1}\n'
    files = lambda *recs: b"".join([varint_bytes(len(recs))] + list(recs))  # noqa: E731
    frec = lambda p, name, data=blob: varint_bytes(p) + varint_bytes(len(name)) + name + varint_bytes(len(data)) + struct.pack("<I", fmt.crc32(data))  # noqa: E731
    farea = area + bytes(fmt.align_up(len(area), 8) - len(area)) + blob
    add("file_dotdot", "BadFileName", "a stored file named '../config.json'", data=build_raw(b"".join({**ok, "flags": b"\x02", "tail": files(frec(0, b"../config.json"))}.values()), farea))
    add("files_cap", "LimitExceeded", "File_Count 65,537", flags=b"\x02", tail=varint_bytes(65537))
    add("empty_files", "InvalidField", "a files block of no files", flags=b"\x02", tail=b"\x00")
    add("file_name_prefix", "InvalidField", "a file name sharing 1 byte with no previous name", data=build_raw(b"".join({**ok, "flags": b"\x02", "tail": files(frec(1, b"config.json"))}.values()), farea))
    two = files(frec(0, b"config.json"), frec(0, b"CONFIG.json", b""))
    add("file_duplicate_case", "DuplicateFileName", "two stored files named alike but for letter case",
        data=build_raw(b"".join({**ok, "flags": b"\x02", "tail": two}.values()), farea))
    return out


STORED_FILES = {
    "config.json": b'{"architectures": ["BertModel"], "hidden_size": 6, "model_type": "bert"}\n',
    "tokenizer_config.json": b'{"do_lower_case": true}\n',
    "vocab.txt": b"[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello\nworld\n",
    "1_Pooling/config.json": b'{"pooling_mode_mean_tokens": true}\n',
}


def invalid_files(base: bytes) -> dict[str, tuple[bytes, str, str]]:
    """Stored files (1.3) broken one way each: names, layout, checksums, fields."""
    h, area = split(base)
    out = {}

    def files(**changes):
        t = json.loads(json.dumps(h))
        for i, kw in changes.items():
            t["files"][int(i[1:])].update(kw)
        return t

    def add(name, header, err, why, data=None):
        out[name] = (build(header, area if data is None else data, minor=3), err, why)

    add("file_name_dotdot", files(f3={"name": "../config.json"}), "BadFileName", "a stored file named '../config.json'")
    add("file_name_absolute", files(f0={"name": "/etc/config.json"}), "BadFileName", "a stored file named by an absolute path")
    add("file_name_backslash", files(f0={"name": "1_Pooling\\config.json"}), "BadFileName", "a backslash in a stored file's name")
    add("file_name_nul", files(f0={"name": "config.json\u0000.txt"}), "BadFileName", "a NUL character in a stored file's name")
    add("file_name_empty_part", files(f3={"name": "1_Pooling//config.json"}), "BadFileName", "an empty part in a stored file's name")
    add("file_name_device", files(f2={"name": "aux.txt"}), "BadFileName", "a Windows device name as a stored file's name")
    add("file_name_not_string", files(f0={"name": 7}), "InvalidField", "a stored file's name that is an integer")
    add("file_duplicate_case", files(f1={"name": "CONFIG.json"}), "DuplicateFileName", "two stored files named alike but for letter case")
    add("file_folder_clash", files(f3={"name": "config.json/x"}), "DuplicateFileName", "a stored file inside a folder named like another stored file")
    f3 = h["files"][3]
    add("file_past_end", files(f3={"length": f3["length"] + 64}), "TruncatedFile", "the last stored file runs past the end of the file")
    add("file_offset_gap", files(f3={"offset": f3["offset"] + 8}), "BadLayout", "a hole before a stored file")
    add("file_checksum", files(f3={"crc32": f3["crc32"] ^ 1}), "PayloadChecksumMismatch", "a stored file's CRC-32 does not match")
    add("file_unknown_field", files(f0={"mode": 493}), "UnknownField", "an unknown critical field in a file record")
    t = json.loads(json.dumps(h))
    t["files"] = {"config.json": 1}
    add("files_not_array", t, "InvalidField", "files is a map, not an array")
    add("file_trailing_data", files(), "TrailingData", "bytes after the last stored file", data=area + bytes(8))
    return out


def packed_streams_file() -> bytes:
    """The coder packed (1.1) outside fields, which CODING.md section 9 accepts in any stream: int, planes, codebook."""
    tensors = [
        # int8 [1, 2, 3]: one stream of 2-bit fields 01, 10, 11, least significant bit first.
        ("q", "int8", [3], {"kind": "int"}, [(2, bytes([0x39]))]),
        # uint16 [0x0102, 0x0304]: byte planes 02 04 and 01 03, 8 bits each.
        ("p", "uint16", [2], {"kind": "planes"}, [(8, bytes([2, 4])), (8, bytes([1, 3]))]),
        # float32 [0.5, -1.0, 0.5, 0.5]: levels -1.0 and 0.5 as 32-bit patterns, then the 1-bit indices 1, 0, 1, 1.
        ("c", "float32", [4], {"kind": "codebook", "levels": 2, "zero": 0}, [(32, struct.pack("<2I", 0xBF800000, 0x3F000000)), (1, bytes([0x0D]))]),
    ]
    records, area = [], b""
    for name, dtype, shape, rep, streams in tensors:
        payload = b"".join(data for _, data in streams)
        area += bytes(fmt.align_up(len(area), 8) - len(area))
        descs = [{"coder": "packed", "length": len(data), "width": width} for width, data in streams]
        records.append(
            {"name": name, "dtype": dtype, "shape": shape, "offset": len(area), "length": len(payload), "crc32": fmt.crc32(payload), "repr": rep, "streams": descs}
        )
        area += payload
    return build({"align": 8, "metadata": {}, "tensors": records}, area, minor=1)


def cat0_noncanonical_file() -> bytes:
    """FORMAT.md Appendix A with the last bit of w's one range-coder word set (payload CRC recomputed).

    The chunk still decodes to the same symbols and passes the end conditions (a)
    and (b) of CODING.md section 8, but not the stricter checks of RANGE_CODER.md
    section 7, which a decoder must not apply: the file is valid.
    """
    data = en.encode(
        {"w": np.array([[511, 510, 510, 510], [510, 510, 511, 510]], np.float32), "b": np.array([1, 2, 3], np.int8)},
        config=EncodeConfig(bits=10, per_row=False, format_minor=0),
    )
    h, area = split(data)
    w = h["tensors"][0]
    payload = bytearray(area[w["offset"] : w["offset"] + w["length"]])
    assert payload[-4:] == bytes.fromhex("000064cb"), payload.hex()
    payload[-4] = 0x01  # the word 0xcb640000 becomes 0xcb640001
    w["crc32"] = fmt.crc32(payload)
    return build(h, bytes(payload) + area[w["length"] :])


SPECIAL32 = [0x00000000, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000, 0x7FA12345, 0xFFFFFFFF, 0x00000001, 0x807FFFFF, 0x3F800000, 0xBEAAAAAB, 0x00800000]
SPECIAL16 = [0x0000, 0x8000, 0x7C00, 0xFC00, 0x7E01, 0x7C01, 0xFFFF, 0x0001, 0x83FF, 0x3C00, 0xB555, 0x0400]  # float16 patterns; as bfloat16 patterns too


def fields_arrays() -> dict:
    """Weights with rows widened from float16, and special values, in float32, bfloat16 and float16."""
    from ecnn import dtypes as dt_

    r = _rng(15)
    w = (r.standard_normal((24, 40)) * np.exp(r.standard_normal((24, 1)) * 0.5) * 0.05).astype(np.float32)
    w[5:9] = w[5:9].astype(np.float16).astype(np.float32)  # these rows get the shift 13
    h = w.astype(np.float16)
    b = _bf16(w.astype(np.float64))
    w.reshape(-1)[: len(SPECIAL32)] = np.array(SPECIAL32, "<u4").view(np.float32)
    h.reshape(-1)[: len(SPECIAL16)] = np.array(SPECIAL16, "<u2").view(np.float16)
    b.reshape(-1)[: len(SPECIAL16)] = np.array(SPECIAL16, "<u2")
    return {"w32": (w, dt_.get("float32")), "wbf": (b, dt_.get("bfloat16")), "w16": (h, dt_.get("float16"))}


def fields_forced_file() -> bytes:
    """fields records with chosen heads and coders: packed heads, raw tails, an empty tail (k = M), float8 and float64."""
    from ecnn import dtypes as dt_
    from ecnn.repr import fields
    from ecnn.coder import packed, streams
    from ecnn.container import writer
    from ecnn.context import floats

    r = _rng(16)
    records, payloads = [], []

    def add(name, arr, dtype, k, tails_raw=False, heads_packed=False):
        dt = dt_.get(dtype)
        rep, descs, payload = fields.encode(arr, dt, 4096, k=k)
        e_bits, m_bits = floats.layout(dtype)
        rows = floats.row_count(arr.shape)
        s, h, t, a = floats.split(floats.bit_patterns(arr), e_bits, m_bits, k, rows)
        parts = []
        pos = 0
        for d in descs:
            parts.append(payload[pos : pos + d["length"]])
            pos += d["length"]
        if heads_packed:
            data = packed.pack(h, e_bits + k)
            descs[2], parts[2] = {"coder": "packed", "length": len(data), "width": e_bits + k}, data
        if tails_raw:
            descs[3], parts[3] = streams.encode_raw(a, 4 if m_bits - k > 16 else 2, False)
        records.append({"name": name, "dtype": dtype, "shape": list(arr.shape), "repr": rep, "streams": descs})
        payloads.append(b"".join(parts))

    w = (r.standard_normal((6, 10)) * 0.1).astype(np.float32)
    w[2] = w[2].astype(np.float16).astype(np.float32)
    w.reshape(-1)[: len(SPECIAL32)] = np.array(SPECIAL32, "<u4").view(np.float32)
    add("f32_packed_heads", w, "float32", 3, heads_packed=True)
    add("f32_raw_tails", w, "float32", 0, tails_raw=True)
    add("bf16_whole_mantissa", np.array(SPECIAL16, "<u2").reshape(3, 4), "bfloat16", 7)
    add("f16_scalar", np.array(SPECIAL16[4], "<u2").view(np.float16), "float16", 1)
    add("f8_e4m3", r.integers(0, 256, (4, 8)).astype(np.uint8), "float8_e4m3fn", 2)
    add("f8_e5m2", r.integers(0, 256, 16).astype(np.uint8), "float8_e5m2", 0, heads_packed=True)
    add("f64", r.standard_normal((3, 5)), "float64", 4)
    return b"".join(writer.serialize(records, payloads, {"ecnn.fixture": "fields_forced"}, minor=codec.minor_version(records)))


def fields_blocks_file() -> bytes:
    """fields records whose heads are blocks streams with chosen classes and chunks: row and column
    classes over four chunks (rows of two tail widths), row classes only, column classes only, one row."""
    from ecnn import dtypes as dt_
    from ecnn.repr import fields
    from ecnn.coder import blocks
    from ecnn.container import writer
    from ecnn.context import floats, order0
    from ecnn.context import rowcol as rowcol_ctx

    r = _rng(17)
    records, payloads = [], []

    def add(name, arr, dtype, k, nrc, ncc, crows):
        dt = dt_.get(dtype)
        rep, descs, payload = fields.encode(arr, dt, 4096, k=k)
        e_bits, m_bits = floats.layout(dtype)
        rows = floats.row_count(arr.shape)
        _, h, _, _ = floats.split(floats.bit_patterns(arr), e_bits, m_bits, k, rows)
        lo, hi = int(h.min()), int(h.max())
        sym = (h - np.uint64(lo)).astype(np.int32).reshape(rows, -1)
        plan = rowcol_ctx.plan(sym, hi - lo + 1, None, nrc, ncc)
        # The contexts in three tables (the encoder would merge more on so few elements).
        nctx = nrc + ncc - 1
        table_of = np.minimum(np.arange(nctx) * 3 // nctx, nctx - 1)
        tid = table_of[plan.rclass[:, None] + plan.cclass[None, :]]
        fits = [order0.fit(np.bincount(sym[tid == t], minlength=hi - lo + 1)) for t in range(int(table_of.max()) + 1)]
        assert all(f.counts.sum() for f in fits) and (plan.nrc, plan.ncc) == (nrc, ncc)
        plan = dataclasses.replace(plan, table_of=table_of, fits=fits)
        parts, pos = [], 0
        for d in descs:
            parts.append(payload[pos : pos + d["length"]])
            pos += d["length"]
        descs[2], parts[2] = blocks.encode(sym, plan, lo, hi - lo + 1, crows)
        records.append({"name": name, "dtype": dtype, "shape": list(arr.shape), "repr": rep, "streams": descs})
        payloads.append(b"".join(parts))

    scale = np.exp(r.standard_normal((64, 1)) * 1.5) * np.exp(r.standard_normal((1, 48)) * 1.5)
    w = (r.standard_normal((64, 48)) * scale * 0.02).astype(np.float32)
    w[21:27] = w[21:27].astype(np.float16).astype(np.float32)  # rows of a narrower tail width, across a chunk boundary
    w.reshape(-1)[: len(SPECIAL32)] = np.array(SPECIAL32, "<u4").view(np.float32)
    add("f32_rows_cols", w, "float32", 3, 8, 4, 20)
    b = _bf16((r.standard_normal((40, 24)) * np.exp(r.standard_normal((40, 1)) * 2)).astype(np.float64))
    add("bf16_rows", b, "bfloat16", 3, 4, 1, 7)
    h = (r.standard_normal((16, 50)) * np.exp(r.standard_normal((1, 50)) * 2)).astype(np.float16)
    add("f16_cols", h, "float16", 2, 1, 8, 16)
    v = (r.standard_normal(300) * 0.3).astype(np.float32)
    add("f32_one_row", v, "float32", 2, 1, 1, 1)
    return b"".join(writer.serialize(records, payloads, {"ecnn.fixture": "fields_blocks_forced"}, minor=codec.minor_version(records)))


def fields_rans_file() -> bytes:
    """fields records whose heads are rans streams (1.2) with chosen classes, chunks and lanes: row and
    column classes over four chunks of three lanes, row classes only (two lanes), column classes only
    (five lanes), one row in chunks of one row (seven lanes), and a chunk of six symbols in eight lanes."""
    from ecnn import dtypes as dt_
    from ecnn.repr import fields
    from ecnn.coder import rans
    from ecnn.container import writer
    from ecnn.context import floats, order0
    from ecnn.context import rowcol as rowcol_ctx

    r = _rng(23)
    records, payloads = [], []

    def add(name, arr, dtype, k, nrc, ncc, crows, lanes):
        dt = dt_.get(dtype)
        rep, descs, payload = fields.encode(arr, dt, 4096, k=k)
        e_bits, m_bits = floats.layout(dtype)
        rows = floats.row_count(arr.shape)
        _, h, _, _ = floats.split(floats.bit_patterns(arr), e_bits, m_bits, k, rows)
        lo, hi = int(h.min()), int(h.max())
        sym = (h - np.uint64(lo)).astype(np.int32).reshape(rows, -1)
        plan = rowcol_ctx.plan(sym, hi - lo + 1, None, nrc, ncc)
        nctx = nrc + ncc - 1
        table_of = np.minimum(np.arange(nctx) * 3 // nctx, nctx - 1)
        tid = table_of[plan.rclass[:, None] + plan.cclass[None, :]]
        fits = [order0.fit(np.bincount(sym[tid == t], minlength=hi - lo + 1)) for t in range(int(table_of.max()) + 1)]
        assert all(f.counts.sum() for f in fits) and (plan.nrc, plan.ncc) == (nrc, ncc)
        plan = dataclasses.replace(plan, table_of=table_of, fits=fits)
        parts, pos = [], 0
        for d in descs:
            parts.append(payload[pos : pos + d["length"]])
            pos += d["length"]
        descs[2], parts[2] = rans.encode(sym, plan, lo, hi - lo + 1, crows, lanes=lanes)
        records.append({"name": name, "dtype": dtype, "shape": list(arr.shape), "repr": rep, "streams": descs})
        payloads.append(b"".join(parts))

    scale = np.exp(r.standard_normal((64, 1)) * 1.5) * np.exp(r.standard_normal((1, 48)) * 1.5)
    w = (r.standard_normal((64, 48)) * scale * 0.02).astype(np.float32)
    w[21:27] = w[21:27].astype(np.float16).astype(np.float32)  # rows of a narrower tail width, across a chunk boundary
    w.reshape(-1)[: len(SPECIAL32)] = np.array(SPECIAL32, "<u4").view(np.float32)
    add("f32_rows_cols", w, "float32", 3, 8, 4, 20, 3)
    b = _bf16((r.standard_normal((40, 24)) * np.exp(r.standard_normal((40, 1)) * 2)).astype(np.float64))
    add("bf16_rows", b, "bfloat16", 3, 4, 1, 7, 2)
    h = (r.standard_normal((16, 50)) * np.exp(r.standard_normal((1, 50)) * 2)).astype(np.float16)
    add("f16_cols", h, "float16", 2, 1, 8, 16, 5)
    v = (r.standard_normal(300) * 0.3).astype(np.float32)
    add("f32_one_row", v, "float32", 2, 1, 1, 1, 7)
    t = (r.standard_normal((3, 2)) * 0.3).astype(np.float32)
    add("f32_six_symbols", t, "float32", 4, 1, 1, 3, 8)
    return b"".join(writer.serialize(records, payloads, {"ecnn.fixture": "fields_rans_forced"}, minor=codec.minor_version(records)))


def invalid_fields_rans(base: bytes) -> dict[str, tuple[bytes, str, str]]:
    """Bad rans streams, from the forced vector: the coder in another stream, a precision above 15,
    a lane whose initial state is below 2^16, and a lane word changed (the lane does not end at 2^16)."""
    from ecnn.coder import rans
    from ecnn.context import varint

    h, area = split(base)
    t0 = h["tensors"][0]
    assert t0["repr"]["kind"] == "fields" and t0["streams"][2]["coder"] == "rans" and t0["shape"] == [64, 48]
    t = json.loads(json.dumps(h))
    t["tensors"][0]["streams"][0] = {"coder": "rans", "length": t0["streams"][0]["length"]}
    out = {"fields_rans_in_signs": (build(t, area, minor=2), "UnsupportedCoding", "the coder rans in stream 0 of fields")}
    payload = bytes(area[t0["offset"] : t0["offset"] + t0["length"]])
    rel = t0["streams"][0]["length"] + t0["streams"][1]["length"]  # stream 2
    params, _ = varint.decode(payload, 8, rel)
    assert params[6] == 3 and 10 <= params[7] <= 15, params
    prec_at = rel + len(varint.encode(params[:7]))
    ln = rans.parse(payload[rel : rel + t0["streams"][2]["length"]], 64 * 48, 0, (1 << 11) - 1)
    state_at = rel + ln.spans[0][0]
    word_at = state_at + 4 + 2 * ln.sizes[0][0] + 4  # the first word of lane 1 of chunk 0
    assert ln.sizes[0][1] > 0

    def patched(at: int, new: bytes) -> bytes:
        bad = payload[:at] + new + payload[at + len(new) :]
        t = json.loads(json.dumps(h))
        t["tensors"][0]["crc32"] = fmt.crc32(bad)
        return build(t, area[: t0["offset"]] + bad + area[t0["offset"] + t0["length"] :], minor=2)

    out["fields_rans_precision_16"] = (patched(prec_at, bytes([16])), "CorruptPayload", "a rans stream of precision 16")
    out["fields_rans_low_state"] = (patched(state_at, (0xFFFF).to_bytes(4, "little")), "CorruptPayload", "a lane's initial state below 2^16")
    word = int.from_bytes(payload[word_at : word_at + 2], "little") ^ 0x0101
    out["fields_rans_bad_word"] = (patched(word_at, word.to_bytes(2, "little")), "CorruptPayload", "a lane word changed: the lane does not end at state 2^16")
    return out


def invalid_fields_blocks(base: bytes) -> dict[str, tuple[bytes, str, str]]:
    """Bad blocks streams, from the forced vector: the coder in another stream, and rows that do not divide N."""
    from ecnn.context import varint

    h, area = split(base)
    t0 = h["tensors"][0]
    assert t0["repr"]["kind"] == "fields" and t0["streams"][2]["coder"] == "blocks" and t0["shape"] == [64, 48]
    t = json.loads(json.dumps(h))
    t["tensors"][0]["streams"][0] = {"coder": "blocks", "length": t0["streams"][0]["length"]}
    out = {"fields_blocks_in_signs": (build(t, area, minor=1), "UnsupportedCoding", "the coder blocks in stream 0 of fields")}
    at = t0["offset"] + t0["streams"][0]["length"] + t0["streams"][1]["length"]  # stream 2
    payload = bytes(area[t0["offset"] : t0["offset"] + t0["length"]])
    rel = at - t0["offset"]
    params, _ = varint.decode(payload, 6, rel)
    assert params[2] == 64, params
    rows_at = rel + len(varint.encode(params[:2]))
    bad = payload[:rows_at] + bytes([63]) + payload[rows_at + 1 :]
    t = json.loads(json.dumps(h))
    t["tensors"][0]["crc32"] = fmt.crc32(bad)
    data = build(t, area[: t0["offset"]] + bad + area[t0["offset"] + t0["length"] :], minor=1)
    out["fields_blocks_bad_rows"] = (data, "CorruptPayload", "a blocks stream of 63 rows for 3072 symbols")
    return out


def invalid_fields(base: bytes) -> dict[str, tuple[bytes, str, str]]:
    """Bad fields records, from the forced vector: a header field out of range, and damaged tails (CRC recomputed)."""
    h, area = split(base)
    t0 = h["tensors"][0]
    assert t0["repr"]["kind"] == "fields" and t0["streams"][3]["coder"] == "packed"

    def with_record(**kw):
        t = json.loads(json.dumps(h))
        t["tensors"][0].update(kw)
        return build(t, area, minor=1)

    def with_tails(p3: bytes) -> bytes:
        t = json.loads(json.dumps(h))
        rec = t["tensors"][0]
        start = rec["offset"] + rec["length"] - rec["streams"][3]["length"]
        payload = bytes(area[rec["offset"] : start]) + p3
        rec["crc32"] = fmt.crc32(payload)
        return build(t, area[: rec["offset"]] + payload + area[rec["offset"] + rec["length"] :], minor=1)

    p3_at = t0["offset"] + t0["length"] - t0["streams"][3]["length"]
    p3 = bytes(area[p3_at : t0["offset"] + t0["length"]])
    bad_width = [dict(d) for d in t0["streams"]]
    bad_width[3]["width"] = bad_width[3]["width"] + 1
    return {
        "fields_head_out_of_range": (with_record(repr={"kind": "fields", "head": 24}), "InvalidField", "fields head 24 > M = 23 for float32"),
        "fields_tail_width": (with_record(streams=bad_width), "InvalidField", "packed tails whose width is not r = M - head"),
        "fields_tail_pad_bit": (
            with_tails(p3[:-1] + bytes([p3[-1] | 0x80])),
            "CorruptPayload",
            "a non-zero pad bit after the last packed tail",
        ),
    }


def codebook_arrays() -> dict:
    from ecnn import dtypes as dt_

    r = _rng(12)
    levels = np.array([-0.75, -0.25, -0.0, 0.0, 0.125, 0.5, np.inf, np.nan], np.float32)
    w = levels[r.choice(levels.size, size=(32, 24), p=[0.05, 0.15, 0.05, 0.5, 0.1, 0.1, 0.025, 0.025])]
    return {
        "w32": (w, dt_.get("float32")),
        "w16": (w.astype(np.float16), dt_.get("float16")),
        "wbf": (_bf16(w[:8].astype(np.float64)), dt_.get("bfloat16")),
    }


def ctx_sparse_arrays() -> dict:
    """Sparse weights as entropy-constrained training leaves them: rows and columns of their own density."""
    r = _rng(13)
    rd = np.exp(r.standard_normal(64))[:, None]
    cd = np.exp(r.standard_normal(196))[None, :] * (np.arange(196)[None, :] % 14 > 2)
    fc = np.where(r.random((64, 196)) < 0.04 * rd * cd, r.choice([-2, -1, -1, 1], (64, 196)), 0)
    conv = np.where(r.random((24, 8, 3, 3)) < 0.15, r.integers(-3, 4, (24, 8, 3, 3)), 0)
    bias = r.integers(-20, 12, 64)
    steps = {"fc.weight": 0.125, "conv.weight": 0.0625, "fc.bias": 0.015625}
    q = {"fc.weight": fc, "conv.weight": conv, "fc.bias": bias}
    return {k: (v * steps[k]).astype(np.float32) for k, v in q.items()}, steps


def ctx_forced_file() -> bytes:
    """ctx streams with every option of the lanes model set by hand, and an order-0 stream of several chunks."""
    from ecnn import quantize
    from ecnn.coder import ctx
    from ecnn.container import writer
    from ecnn.context import order0, sparse

    r = _rng(14)
    records, payloads = [], []
    # Lanes are the columns (transpose), value tables by sign, two neighbours, three step classes,
    # non-zero values -2..5 (0 skipped), 6 lanes per chunk over 40 steps.
    a = np.where(r.random((40, 24)) < 0.2, r.choice([-2, -1, 1, 2, 3, 5], (40, 24)), 0)
    plan = sparse.fit(a, True, 5, 3, 1, 3, True, 6 * 40)
    d, p = ctx.encode_lanes(a, plan, 6 * 40)
    records.append({"name": "a", "dtype": "float32", "shape": [40, 24], "repr": {"kind": "uniform", "step": quantize.step_bits(0.5)}, "streams": [d]})
    payloads.append(p)
    # One non-zero value (no value tables), rows as lanes, no neighbours, one class, an int8 tensor.
    m = np.where(r.random((12, 30)) < 0.3, 3, 0).astype(np.int8)
    d, p = ctx.encode_lanes(m.astype(np.int64), sparse.fit(m.astype(np.int64), False, 7, 1, 0, 0, False, 1 << 20), 1 << 20)
    records.append({"name": "m", "dtype": "int8", "shape": [12, 30], "repr": {"kind": "int"}, "streams": [d]})
    payloads.append(p)
    # Order-0 with a negative offset and chunks of 7 symbols.
    b = r.integers(-9, 5, 50)
    fit = order0.fit(np.bincount(b + 9, minlength=14))
    d, p = ctx.encode_order0((b + 9).astype(np.int32), -9, 14, fit, 7)
    records.append({"name": "b", "dtype": "float32", "shape": [50], "repr": {"kind": "uniform", "step": quantize.step_bits(0.25)}, "streams": [d]})
    payloads.append(p)
    return b"".join(writer.serialize(records, payloads, {"ecnn.fixture": "ctx_forced"}, minor=codec.minor_version(records)))


def ctx_rowcol_arrays() -> dict:
    """Laplace weights with row and column scales whose columns lean to one sign, and positive ones."""
    r = _rng(15)
    scale = np.exp(r.standard_normal(256) * 0.5)[:, None] * np.exp(r.standard_normal(96) * 0.5)[None, :] * 4
    mag = np.rint(np.abs(r.laplace(0, 1, (256, 96))) * scale)
    w = np.where(r.random((256, 96)) < r.uniform(0.2, 0.8, 96)[None, :], mag, -mag) * 0.25
    p = (np.abs(mag[:128]) + 3) * 0.5
    return {"w": w.astype(np.float32), "p": p.astype(np.float32)}


def ctx_rowcol_wide_arrays() -> dict:
    """A 256 x 1024 matrix of small Laplace integers with row scales: one chunk of 2^18 symbols."""
    r = _rng(16)
    scale = np.exp(r.standard_normal(256) * 0.4)[:, None] * 0.7
    return {"w": np.rint(r.laplace(0, 1, (256, 1024)) * scale).astype(np.float32)}


def _ctx_rowcol_streams(data: bytes) -> list[tuple[int, list[int]]]:
    """(sign class count nsc, the first parameters) of every ctx rowcol stream of a file: model, zigzag offset,
    nsym, rows, nrc, ncc, nsc, chunk_rows."""
    from ecnn.context import varint

    h, area = split(data)
    out = []
    for t in h["tensors"]:
        pos = t["offset"]
        for d in t["streams"]:
            if d["coder"] == "ctx" and area[pos] in (2, 3, 4):
                params, _ = varint.decode(area, 8, pos)
                out.append((params[6], params))
            pos += d["length"]
    return out


def ctx_rowcol_blocks_file() -> bytes:
    """The encoder's choice on ctx_rowcol_arrays(): every rowcol stream model 4, one of them with sign classes
    (nsc > 1) and one without signs, from an offset (nsc = 0)."""
    data = en.encode(ctx_rowcol_arrays(), config=EncodeConfig(steps={"w": 0.25, "p": 0.5}, chunk=4096, format_minor=1))
    streams = _ctx_rowcol_streams(data)
    assert streams and all(p[0] == 4 for _, p in streams), streams
    assert any(nsc > 1 for nsc, _ in streams) and any(nsc == 0 and p[1] != 0 for nsc, p in streams), streams
    return data


def ctx_rowcol_blocks_forced_file() -> bytes:
    """ctx model-4 streams with chosen plans: signs in three sign classes (one all positive, one all negative, so
    that u1 is clamped to 255 and to 1), four row and four column classes over three tables (runs of more than one
    table), chunks of 7 rows whose classes hold numbers of signs that are not multiples of 4; and an unsigned stream
    from a negative offset in two chunks."""
    from ecnn import quantize
    from ecnn.coder import ctx
    from ecnn.container import writer
    from ecnn.context import order0
    from ecnn.context import rowcol as rowcol_ctx

    r = _rng(18)
    records, payloads = [], []

    def tables_of(sym, plan, nsym, ntab):
        nctx = plan.nrc + plan.ncc - 1
        table_of = np.minimum(np.arange(nctx) * ntab // nctx, nctx - 1)
        tid = table_of[plan.rclass[:, None] + plan.cclass[None, :]]
        fits = [order0.fit(np.bincount(sym[tid == t], minlength=nsym)) for t in range(int(table_of.max()) + 1)]
        assert all(f.counts.sum() for f in fits)
        return dataclasses.replace(plan, table_of=table_of, fits=fits)

    # Signed: 30 rows x 20 columns, row and column scales; columns 0..4 all positive, 5..9 all negative.
    scale = np.exp(r.standard_normal((30, 1))) * np.exp(r.standard_normal((1, 20)))
    mag = np.minimum(np.rint(np.abs(r.laplace(0, 2, (30, 20))) * scale), 40).astype(np.int64)
    sgn = np.where(r.random((30, 20)) < 0.6, 1, -1)
    sgn[:, :5], sgn[:, 5:10] = 1, -1
    v = mag * sgn
    sclass = np.array([0] * 5 + [1] * 5 + [2] * 10, np.int64)
    fits = []
    for g in range(3):
        cv = v[:, sclass == g]
        fits.append(order0.fit(np.array([np.count_nonzero(cv < 0), np.count_nonzero(cv > 0)], np.int64)))
    assert fits[0].counts[0] == 0 and fits[1].counts[1] == 0 and fits[2].counts.min() > 0
    signs = rowcol_ctx.SignPlan(3, sclass, fits, order0.fit(np.bincount(sclass, minlength=3)), 0.0)
    nsym = int(mag.max()) + 1
    plan = tables_of(mag, rowcol_ctx.plan(mag, nsym, v, 4, 4), nsym, 3)
    assert (plan.nrc, plan.ncc) == (4, 4)
    crows = 7
    for a in range(0, 30, crows):  # some class of some chunk has a number of signs that is not a multiple of 4
        nz = np.count_nonzero(v[a : a + crows][:, sclass == 2])
        if nz % 4:
            break
    else:
        raise AssertionError("every chunk's sign class 2 has a multiple of 4 signs")
    d, p = ctx.encode_rowcol(mag, v, plan, 0, nsym, crows * 20, signs, model=ctx.MODEL_ROWCOL_BLOCKS)
    records.append({"name": "s", "dtype": "float32", "shape": [30, 20], "repr": {"kind": "uniform", "step": quantize.step_bits(0.125)}, "streams": [d]})
    payloads.append(p)
    # Unsigned from the offset -6: 12 rows x 9 columns, two row and three column classes, chunks of 8 rows.
    u = np.minimum(np.rint(np.abs(r.standard_normal((12, 9))) * np.exp(r.standard_normal((12, 1))) * 3), 17).astype(np.int64)
    plan = tables_of(u, rowcol_ctx.plan(u, 18, None, 2, 3), 18, 2)
    d, p = ctx.encode_rowcol(u, None, plan, -6, 18, 8 * 9, None, model=ctx.MODEL_ROWCOL_BLOCKS)
    records.append({"name": "u", "dtype": "int8", "shape": [12, 9], "repr": {"kind": "int"}, "streams": [d]})
    payloads.append(p)
    data = b"".join(writer.serialize(records, payloads, {"ecnn.fixture": "ctx_rowcol_blocks_forced"}, minor=codec.minor_version(records)))
    streams = _ctx_rowcol_streams(data)
    assert [(nsc, prm[0], prm[1], prm[7]) for nsc, prm in streams] == [(3, 4, 0, 7), (0, 4, 11, 8)], streams
    return data


def invalid_ctx_rowcol(base: bytes) -> dict[str, tuple[bytes, str, str]]:
    """A ctx model-2 stream with more sign classes than columns (payload CRC recomputed)."""
    from ecnn.context import varint

    h, area = split(base)
    t0 = h["tensors"][0]
    payload = bytes(area[t0["offset"] : t0["offset"] + t0["length"]])
    params, _ = varint.decode(payload, 8, 0)
    assert params[0] == 2 and params[6] > 1, params
    at = len(varint.encode(params[:6]))
    bad = payload[:at] + bytes([127]) + payload[at + 1 :]
    t = json.loads(json.dumps(h))
    t["tensors"][0]["crc32"] = fmt.crc32(bad)
    data = build(t, area[: t0["offset"]] + bad + area[t0["offset"] + t0["length"] :], minor=1)
    return {"ctx_rowcol_bad_nsc": (data, "CorruptPayload", "ctx rowcol stream with 127 sign classes for 96 columns")}


def invalid_ctx_model5(base: bytes) -> dict[str, tuple[bytes, str, str]]:
    """Damaged ctx model-5 streams (payload CRC recomputed): a precision of 9, and a lane word changed."""
    from ecnn.context import varint

    h, area = split(base)
    t0 = h["tensors"][0]
    payload = bytes(area[t0["offset"] : t0["offset"] + t0["length"]])
    params, _ = varint.decode(payload, 11, 0)
    assert params[0] == 5 and params[6] > 1 and params[8] == 3 and 10 <= params[9] <= 15, params
    prec_at = len(varint.encode(params[:9]))

    def patched(at: int, new: bytes) -> bytes:
        bad = payload[:at] + new + payload[at + len(new) :]
        t = json.loads(json.dumps(h))
        t["tensors"][0]["crc32"] = fmt.crc32(bad)
        return build(t, area[: t0["offset"]] + bad + area[t0["offset"] + t0["length"] :], minor=2)

    out = {"ctx_model5_precision_9": (patched(prec_at, bytes([9])), "CorruptPayload", "a ctx model 5 stream of precision 9")}
    at = len(payload) - 2  # the last word of the last lane
    word = int.from_bytes(payload[at:], "little") ^ 0x8001
    out["ctx_model5_bad_word"] = (patched(at, word.to_bytes(2, "little")), "CorruptPayload", "a lane word changed: the lane does not end at state 2^16")
    return out


def invalid_ctx(base: bytes) -> dict[str, tuple[bytes, str, str]]:
    """Damage inside the first ctx stream of the forced vector (payload CRC recomputed), and a bad descriptor."""
    from ecnn.context import tables, varint

    h, area = split(base)
    t0 = h["tensors"][0]
    payload = bytes(area[t0["offset"] : t0["offset"] + t0["length"]])

    def with_payload(p: bytes) -> bytes:
        t = json.loads(json.dumps(h))
        t["tensors"][0]["crc32"] = fmt.crc32(p)
        return build(t, area[: t0["offset"]] + p + area[t0["offset"] + t0["length"] :], minor=1)

    params, pos = varint.decode(payload, 10, 0)
    assert params[0] == 1 and params[2] == 3 and params[4] == 3, params  # lanes, transpose + vsign, k = 3
    flags_at = len(varint.encode(params[:2]))
    _, pos = tables.read(payload, pos, params[4])  # the step class stream: table, word count, words
    (nw,), pos = varint.decode(payload, 1, pos)
    sig_at = pos + 4 * nw
    out = {
        "ctx_bad_model": (with_payload(b"\x07" + payload[1:]), "UnsupportedCoding", "ctx stream with the reserved model 7"),
        "ctx_reserved_flag": (
            with_payload(payload[:flags_at] + bytes([payload[flags_at] | 4]) + payload[flags_at + 1 :]),
            "UnsupportedCoding",
            "ctx lanes flags with reserved bit 2 set",
        ),
        "ctx_bad_sig_byte": (
            with_payload(payload[:sig_at] + b"\x7f" + payload[sig_at + 1 :]),
            "CorruptPayload",
            "ctx significance byte with t = 127",
        ),
    }
    t = json.loads(json.dumps(h))
    t["tensors"][0]["streams"][0]["nsym"] = 4
    out["ctx_unknown_field"] = (build(t, area, minor=1), "UnknownField", "ctx descriptor with a key it does not define")
    return out


def invalid_codebook(base: bytes) -> dict[str, tuple[bytes, str, str]]:
    """Broken codebook records (1.1), from the valid codebook vector."""
    h, area = split(base)
    out = {}
    bad = json.loads(json.dumps(h))
    bad["tensors"][0]["repr"]["zero"] = bad["tensors"][0]["repr"]["levels"]
    out["codebook_bad_zero"] = (build(bad, area, minor=1), "InvalidField", "codebook zero is not below levels")
    bad = json.loads(json.dumps(h))
    bad["tensors"][0]["repr"]["levels"] = 65537
    out["codebook_too_many_levels"] = (build(bad, area, minor=1), "InvalidField", "codebook levels above 65536")
    bad = json.loads(json.dumps(h))
    bad["tensors"][0]["dtype"] = "float64"
    bad["tensors"][0]["length"] = bad["tensors"][0]["length"]
    out["codebook_float64"] = (build(bad, area, minor=1), "InvalidField", "codebook of a float64 tensor")
    return out


def split(data: bytes) -> tuple[dict, bytes]:
    c = Container(data)
    return json.loads(json.dumps(c.header)), bytes(c.buf[c.data_start :])


def build(header, area: bytes, *, major=1, minor=0, crc=None, hlen=None) -> bytes:
    """Assemble a file from any header (dict or raw bytes), skipping the writer's checks."""
    hb = header if isinstance(header, bytes) else msgpack.packb(header)
    n = len(hb) if hlen is None else hlen
    head = struct.pack("<HHI", major, minor, n)
    c = fmt.crc32(head, hb) if crc is None else crc
    data = fmt.SIGNATURE + head + struct.pack("<I", c) + hb
    align = header.get("align", 8) if isinstance(header, dict) else 8
    data += bytes(fmt.align_up(len(data), align) - len(data))
    return data + area


def invalid(base: bytes) -> dict[str, tuple[bytes, str, str]]:
    """name -> (file bytes, expected error class, what is wrong)."""
    h, area = split(base)
    out = {}

    def add(name, data, err, why):
        out[name] = (data, err, why)

    def rec(i, **kw):
        t = json.loads(json.dumps(h))
        t["tensors"][i].update(kw)
        return t

    add("bad_signature", b"\x89PNG\r\n\x1a\n" + base[8:], "BadSignature", "PNG signature instead of .ecnn")
    add("empty", b"", "TruncatedFile", "zero bytes")
    add("truncated_preamble", base[:13], "TruncatedFile", "ends inside the 20-byte preamble")
    add("truncated_header", base[:40], "TruncatedFile", "ends inside the header")
    add("truncated_payload", base[:-3], "TruncatedFile", "last payload cut short")
    add("unknown_major", build(h, area, major=2), "UnsupportedVersion", "Format_Major = 2")
    add("header_too_large", build(h, area, hlen=fmt.MAX_HEADER_LENGTH + 1), "HeaderTooLarge", "Header_Length over the 64 MiB cap")
    add("header_checksum", build(h, area, crc=0x12345678), "HeaderChecksumMismatch", "wrong Header_CRC32")
    pb = bytearray(base)
    c = Container(base)
    pb[c.records[0].offset] ^= 0x01
    add("payload_checksum", bytes(pb), "PayloadChecksumMismatch", "one bit flipped in the first payload")
    hb = msgpack.packb(h)
    dup = bytes([hb[0] + 1]) + hb[1:] + msgpack.packb("align") + msgpack.packb(h["align"])
    add("duplicate_key", build(dup, area), "DuplicateKey", "the top-level key 'align' twice")
    add("malformed_msgpack", build(hb[:-1] + b"\xc1", area), "MalformedHeader", "0xC1 (never used) in the header")
    add("float_in_header", build(dict(h, metadata={"k": 1.5}), area), "InvalidField", "a float value in the header")
    nest = 0
    for _ in range(300):
        nest = [nest]
    add(
        "nested_past_guard",
        build(dict(h, _a=1.5, _b=nest), area),
        "MalformedHeader",
        "an ancillary array nested 300 deep after a float: the nesting guard stops the parse first",
    )
    add("unknown_field", build(dict(h, compression="zip"), area), "UnknownField", "unknown critical top-level key")
    add("duplicate_names", build(rec(1, name=h["tensors"][0]["name"]), area), "DuplicateTensorName", "two records named alike")
    add("offset_overlap", build(rec(1, offset=0), area), "BadLayout", "second payload overlaps the first")
    add("offset_gap", build(rec(1, offset=h["tensors"][1]["offset"] + 64), area), "BadLayout", "a hole before the second payload")
    add("length_out_of_range", build(rec(1, length=1 << 40), area), "TruncatedFile", "payload runs past the end of the file")
    add("trailing_data", base + b"\0" * 8, "TrailingData", "bytes after the last payload")
    add("huge_tensor", build(rec(0, shape=[1 << 20, 1 << 20]), area), "LimitExceeded", "declares a 4 TiB tensor")
    add("unknown_dtype", build(rec(0, dtype="complex64"), area), "UnsupportedCoding", "dtype not in the table")
    add("unknown_repr", build(rec(0, repr={"kind": "wavelet"}), area), "UnsupportedCoding", "representation kind not in the spec")
    s0 = dict(h["tensors"][0]["streams"][0], coder="ans")
    add("unknown_coder", build(rec(0, streams=[s0]), area), "UnsupportedCoding", "stream coder not in the spec")
    s0 = dict(h["tensors"][0]["streams"][0], precision=16)
    add("unsupported_precision", build(rec(0, streams=[s0]), area), "UnsupportedCoding", "cat0 precision other than 24")
    # Padding byte set between header and first payload.
    pad = bytearray(base)
    if c.data_start > c.header_end:
        pad[c.header_end] = 0xAA
        add("nonzero_padding", bytes(pad), "NonZeroPadding", "a padding byte after the header is not zero")
    # A cat0 table of all-zero counts (a single-tensor file, so no offsets move), CRC recomputed.
    from ecnn.context import tables

    one = en.encode({"w": (_rng(10).standard_normal((16, 16)) * 0.1).astype(np.float32)}, config=EncodeConfig(bits=4, per_row=False))
    h1, area1 = split(one)
    t0 = h1["tensors"][0]
    s0 = t0["streams"][0]
    if s0["coder"] == "cat0":  # else the encoder now prefers another coder: the committed vector stays
        payload = area1[: t0["length"]]
        _, table_end = tables.read(payload, 0, s0["nsym"])
        payload = tables.serialize(np.zeros(s0["nsym"], np.int64)) + payload[table_end:]
        s0["length"] = t0["length"] = len(payload)
        t0["crc32"] = fmt.crc32(payload)
        add("zero_table", build(h1, payload), "CorruptPayload", "cat0 table with all counts zero")
    return out


def invalid_uniform_rows(base: bytes) -> dict[str, tuple[bytes, str, str]]:
    """A uniform_rows record of 2^25 rows and no elements: its row codes alone would be 2^25 symbols."""
    h, _ = split(base)
    t0 = dict(h["tensors"][0], shape=[1 << 25, 0], offset=0, length=0, crc32=fmt.crc32(b""))
    t0["streams"] = [{"coder": "const", "length": 0, "value": 0}, {"coder": "const", "length": 0, "value": 0}]
    assert t0["repr"]["kind"] == "uniform_rows", t0["repr"]
    t = dict(h, tensors=[t0])
    return {"uniform_rows_empty": (build(t, b""), "InvalidField", "uniform_rows of shape [2^25, 0]: no elements, 2^25 row codes")}


def invalid_rowcol(base: bytes) -> dict[str, tuple[bytes, str, str]]:
    """Damage inside a rowcol stream, with the payload CRC recomputed so that the coder's check fires."""
    from ecnn.context import tables, varint

    h, area = split(base)
    t0 = h["tensors"][0]
    d = t0["streams"][0]
    assert d["coder"] == "rowcol" and d["nrc"] > 1 and d["ncc"] > 1, d
    payload = bytearray(area[t0["offset"] : t0["offset"] + t0["length"]])
    pos = 0
    for k, n in ((d["nrc"], d["rows"]), (d["ncc"], d["cols"])):
        _, pos = tables.read(payload, pos, k)
        (w,), pos = varint.decode(payload, 1, pos)
        pos += 4 * w
    assert payload[pos] == 0  # the table map starts at 0
    payload[pos] = 1
    t = json.loads(json.dumps(h))
    t["tensors"][0]["crc32"] = fmt.crc32(bytes(payload))
    bad_area = area[: t0["offset"]] + bytes(payload) + area[t0["offset"] + t0["length"] :]
    return {"rowcol_bad_map": (build(t, bad_area), "CorruptPayload", "rowcol table map not starting at 0")}


def sha256_of(arr: np.ndarray) -> str:
    a = np.ascontiguousarray(arr)
    if a.dtype.itemsize > 1:
        a = a.astype(a.dtype.newbyteorder("<"))
    return hashlib.sha256(a.tobytes()).hexdigest()


def describe(data: bytes) -> dict:
    from ecnn.file import EcnnFile

    with EcnnFile(data) as f:
        tensors = {}
        for name in f.keys():
            arr, dt = f.get_array(name)
            tensors[name] = {"dtype": dt.name, "shape": list(arr.shape), "sha256": sha256_of(arr)}
        out = {"metadata": f.metadata(), "tensors": tensors}
        stored = f.files()
        if stored:  # 1.3: the stored files' sizes and SHA-256 (fixtures/README.md)
            out["files"] = {n: {"size": len(b), "sha256": hashlib.sha256(b).hexdigest()} for n, b in stored.items()}
        return out


def _check_invalid(data: bytes, err: str) -> str | None:
    from ecnn import errors

    from ecnn.file import EcnnFile

    try:
        en.decode(data)
        with EcnnFile(data) as f:  # the verification path: stored files' checksums too (FORMAT.md 10)
            f.verify()
    except errors.FormatError as e:
        return None if type(e).__name__ == err else f"raises {type(e).__name__}, expected {err}"
    return f"decodes, expected {err}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--write", action="store_true", help="add missing fixtures (existing files are never changed)")
    a = ap.parse_args()
    v = valid()
    vdir = OUT / "valid"

    def base(name: str) -> bytes:
        """The committed valid vector (the encoder's choices may have changed since), else a fresh one."""
        path = vdir / f"{name}.ecnn"
        return path.read_bytes() if path.exists() else v[name]

    inv = invalid(base("uniform_cat0"))
    inv.update(invalid_fields(base("fields_forced")))
    inv.update(invalid_fields_blocks(base("fields_blocks_forced")))
    inv.update(invalid_fields_rans(base("fields_rans_forced")))
    inv.update(invalid_rowcol(base("rowcol_signs")))
    inv.update(invalid_uniform_rows(base("uniform_rows")))
    inv.update(invalid_codebook(base("codebook")))
    inv.update(invalid_ctx(base("ctx_forced")))
    inv.update(invalid_ctx_rowcol(base("ctx_rowcol")))
    inv.update(invalid_ctx_model5(base("ctx_rowcol_rans_lanes")))
    inv.update(invalid_files(base("stored_files")))
    inv.update(invalid_compact(base("compact_small")))
    vdir, idir = OUT / "valid", OUT / "invalid"
    vexp_path, iexp_path = vdir / "expected.json", idir / "expected.json"
    vexp = json.loads(vexp_path.read_text()) if vexp_path.exists() else {}
    iexp = json.loads(iexp_path.read_text()) if iexp_path.exists() else {}
    problems, added = [], []

    def present(path: Path, data: bytes) -> bool:
        """Whether the fixture exists, writing it first when asked to add missing ones."""
        if path.exists():
            return True
        if a.write:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            added.append(path)
            return True
        problems.append(f"missing {path.relative_to(ROOT)}")
        return False

    for name, data in v.items():
        path = vdir / f"{name}.ecnn"
        if not present(path, data):
            continue
        got = describe(path.read_bytes())
        if name in vexp and vexp[name] != got:
            problems.append(f"{path.relative_to(ROOT)} no longer decodes to its expected tensors")
        vexp.setdefault(name, got)
    for name, (data, err, why) in inv.items():
        path = idir / f"{name}.ecnn"
        if not present(path, data):
            continue
        iexp.setdefault(name, {"error": err, "why": why})
        bad = _check_invalid(path.read_bytes(), iexp[name]["error"])
        if bad:
            problems.append(f"{path.relative_to(ROOT)} {bad}")
    if a.write and not problems:
        vexp_path.write_text(json.dumps(vexp, indent=1, sort_keys=True) + "\n")
        iexp_path.write_text(json.dumps(iexp, indent=1, sort_keys=True) + "\n")
    for p in added:
        print(f"added {p.relative_to(ROOT)}")
    for p in problems:
        print(f"problem: {p}")
    print("fixtures ok" if not problems else f"{len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
