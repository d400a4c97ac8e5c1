"""ecnn/container: preamble, strict header, layout checks, atomic writes."""

import os
import struct

import msgpack
import numpy as np
import pytest

import ecnn.numpy as en
from ecnn.container import format as fmt
from ecnn.container import header as hdr
from ecnn.container.reader import Container
from ecnn.container.writer import atomic_write, serialize
from ecnn.errors import (
    BadLayout,
    BadSignature,
    DuplicateKey,
    DuplicateTensorName,
    FormatError,
    HeaderChecksumMismatch,
    HeaderTooLarge,
    InvalidField,
    LimitExceeded,
    MalformedHeader,
    NonZeroPadding,
    PayloadChecksumMismatch,
    TrailingData,
    TruncatedFile,
    UnknownField,
    UnsupportedVersion,
)


def small_file() -> bytes:
    rng = np.random.default_rng(0)
    return en.encode(
        {
            "w": (rng.standard_normal((6, 5)) * 0.1).astype(np.float32),
            "b": np.arange(5, dtype=np.int8),
            "e": np.zeros((0,), np.float32),
        },
        bits=4,
        metadata={"k": "v"},
    )


def rebuild(header: dict | bytes, payload_area: bytes, major=1, minor=0, fix_crc=True) -> bytes:
    """A file with an arbitrary header (not checked), for malformed inputs."""
    hb = header if isinstance(header, bytes) else msgpack.packb(header)
    head = struct.pack("<HHI", major, minor, len(hb))
    crc = fmt.crc32(head, hb) if fix_crc else 0
    out = fmt.SIGNATURE + head + struct.pack("<I", crc) + hb
    align = header.get("align", 8) if isinstance(header, dict) else 8
    align = align if type(align) is int and align > 0 and not align & (align - 1) else 8
    out += bytes(fmt.align_up(len(out), align) - len(out))
    return out + payload_area


def _flip(data: bytes, i: int) -> bytes:
    return data[:i] + bytes([data[i] ^ 0x10]) + data[i + 1 :]


def parts(data: bytes):
    c = Container(data)
    return dict(c.header), bytes(c.buf[c.data_start :])


def test_signature_has_a_non_ascii_byte_and_crlf():
    assert len(fmt.SIGNATURE) == 8 and fmt.SIGNATURE[0] >= 0x80 and b"\r\n" in fmt.SIGNATURE


def test_roundtrip_and_layout():
    data = small_file()
    c = Container(data)
    assert c.names() == ["w", "b", "e"] and c.metadata == {"k": "v"}
    for r in c.records:
        assert r.offset % c.align == 0
        c.payload(r)
    c.check_padding()


def test_empty_file_roundtrip():
    data = en.encode({}, metadata={"only": "metadata"})
    assert en.decode(data) == {}
    assert Container(data).metadata == {"only": "metadata"}


@pytest.mark.parametrize(
    "mutate, err",
    [
        (lambda d: b"\x89PNG\r\n\x1a\n" + d[8:], BadSignature),
        (lambda d: d[:5], TruncatedFile),
        (lambda d: b"", TruncatedFile),
        (lambda d: d[:25], TruncatedFile),
        (lambda d: d[:-1], TruncatedFile),
        (lambda d: d + b"\0", TrailingData),
        (lambda d: d[:8] + struct.pack("<H", 2) + d[10:], UnsupportedVersion),
        (lambda d: d[:12] + struct.pack("<I", fmt.MAX_HEADER_LENGTH + 1) + d[16:], HeaderTooLarge),
        (lambda d: d[:16] + bytes([d[16] ^ 1]) + d[17:], HeaderChecksumMismatch),
        (lambda d: _flip(d, Container(d).records[0].offset + 1), PayloadChecksumMismatch),  # inside "w"
    ],
)
def test_damaged_files(mutate, err):
    with pytest.raises(err):
        en.decode(mutate(small_file()))


def test_higher_minor_version_is_read():
    h, area = parts(small_file())
    en.decode(rebuild(h, area, minor=7))


def test_header_strictness():
    h, area = parts(small_file())
    dup = msgpack.packb(h)
    # Duplicate a top-level key by hand: map header byte + 1, append "align": 8 again.
    assert dup[0] & 0xF0 == 0x80
    dup = bytes([dup[0] + 1]) + dup[1:] + msgpack.packb("align") + msgpack.packb(8)
    with pytest.raises(DuplicateKey):
        en.decode(rebuild(dup, area))
    with pytest.raises(MalformedHeader):
        en.decode(rebuild(msgpack.packb(h) + b"\xc1", area))
    with pytest.raises(MalformedHeader):
        en.decode(rebuild(b"\xde\xff", area))
    for key, value, err in [
        ("align", 3, InvalidField),
        ("align", 8.0, InvalidField),
        ("metadata", {"a": 1}, InvalidField),
        ("frobnicate", 1, UnknownField),
    ]:
        bad = dict(h, **{key: value})
        with pytest.raises(err):
            en.decode(rebuild(bad, area))
    en.decode(rebuild(dict(h, _comment="ancillary keys are ignored"), area))


def test_record_strictness():
    h, area = parts(small_file())
    recs = h["tensors"]

    def with_record(i, **kw):
        t = [dict(r) for r in recs]
        t[i].update(kw)
        return dict(h, tensors=t)

    with pytest.raises(DuplicateTensorName):
        en.decode(rebuild(with_record(1, name="w"), area))
    with pytest.raises(BadLayout):
        en.decode(rebuild(with_record(1, offset=recs[1]["offset"] + 8), area))
    with pytest.raises(BadLayout):
        en.decode(rebuild(with_record(1, offset=0), area))
    with pytest.raises(TruncatedFile):
        en.decode(rebuild(with_record(2, length=1 << 40), area))
    with pytest.raises(LimitExceeded):
        en.decode(rebuild(with_record(0, shape=[1 << 30, 1 << 10]), area))
    with pytest.raises(InvalidField):
        en.decode(rebuild(with_record(0, shape=[-1]), area))
    with pytest.raises(UnknownField):
        en.decode(rebuild(with_record(0, colour="red"), area))
    en.decode(rebuild(with_record(0, _note="ancillary"), area))


def test_nonzero_padding_is_detected():
    data = bytearray(small_file())
    c = Container(bytes(data))
    gaps = [(c.header_end, c.records[0].offset)] + [
        (a.offset + a.length, b.offset) for a, b in zip(c.records, c.records[1:])
    ]
    a, b = next((a, b) for a, b in gaps if b > a)
    data[a] = 1
    with pytest.raises(NonZeroPadding):
        en.decode(bytes(data))


def test_every_truncation_is_detected():
    data = small_file()
    for n in range(len(data)):
        with pytest.raises(FormatError):
            en.decode(data[:n])


def test_every_single_bit_flip_is_detected():
    data = small_file()
    for i in range(len(data)):
        for bit in range(8):
            bad = bytearray(data)
            bad[i] ^= 1 << bit
            with pytest.raises(FormatError):
                en.decode(bytes(bad))


def test_header_encoder_checks_what_it_writes():
    with pytest.raises(InvalidField):
        hdr.encode({"align": 8, "metadata": {}, "tensors": [{"name": ""}]})


def test_writer_output_is_deterministic():
    assert small_file() == small_file()


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "out.ecnn"
    target.write_bytes(b"old contents")

    def chunks():
        yield b"new"
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, chunks())
    assert target.read_bytes() == b"old contents"
    assert os.listdir(tmp_path) == ["out.ecnn"]


def test_atomic_write_replaces(tmp_path):
    target = tmp_path / "out.ecnn"
    n = atomic_write(target, serialize([], [], {}, minor=0))
    assert target.stat().st_size == n
    assert en.load_file(target) == {}


def test_header_type_rules():
    h, area = parts(small_file())
    ts = msgpack.packb(dict(h, _when=msgpack.Timestamp(1, 0)), datetime=False)
    with pytest.raises(MalformedHeader):
        en.decode(rebuild(ts, area))
    with pytest.raises(MalformedHeader):
        en.decode(rebuild(msgpack.packb(dict(h, _b=b""), use_bin_type=True), area))
    with pytest.raises(InvalidField):
        en.decode(rebuild(dict(h, _m={1.5: "x"}), area))
    # An ancillary map whose keys are the integer 1 and the boolean true: different keys.
    top = msgpack.packb(h)
    assert top[0] & 0xF0 == 0x80  # a fixmap
    pair_map = b"\x82\x01" + msgpack.packb("a") + b"\xc3" + msgpack.packb("b")
    en.decode(rebuild(bytes([top[0] + 1]) + top[1:] + msgpack.packb("_m") + pair_map, area))
    same = b"\x82\x01" + msgpack.packb("a") + b"\x01" + msgpack.packb("b")
    with pytest.raises(DuplicateKey):
        en.decode(rebuild(bytes([top[0] + 1]) + top[1:] + msgpack.packb("_m") + same, area))


def test_a_spool_is_copied_after_the_header_and_cut_short_behind_the_copy(tmp_path, monkeypatch):
    import os as _os

    from ecnn.container import writer

    monkeypatch.setattr(writer.FileSpan, "BLOCK", 1000)
    data = bytes(range(256)) * 37  # 9472 bytes: ten blocks, the first one short
    spool = writer.Spool(tmp_path, align=8)
    rec: dict = {}
    spool.add(rec, data)
    assert (rec["offset"], rec["length"]) == (0, len(data))
    fd = spool._file.fileno()
    sizes = []
    real = writer.FileSpan._copy

    def copy(self, dst, src_pos, dst_pos, left):
        sizes.append(_os.fstat(fd).st_size)  # the spool's size before each block: it only shrinks
        real(self, dst, src_pos, dst_pos, left)

    monkeypatch.setattr(writer.FileSpan, "_copy", copy)
    n = writer.atomic_write(tmp_path / "out.bin", [b"HEAD", spool.chunk(), b"TAIL"])
    assert (tmp_path / "out.bin").read_bytes() == b"HEAD" + data + b"TAIL" and n == len(data) + 8
    assert sizes == [len(data) - 1000 * k for k in range(len(sizes))] and len(sizes) == 10
    assert _os.fstat(fd).st_size == 0
    spool.close()
