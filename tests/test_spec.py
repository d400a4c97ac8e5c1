"""The spec agrees with the code: spec/*.md's tables, parsed, against what ecnn implements.

Each test fails on one kind of drift: the version heading, the minor-version rule,
the representations and stream coders with their header keys and versions, the
version tables, the contents, the error names, and the worked example files.
"""

from __future__ import annotations

import hashlib
import re
import struct
import sys
from pathlib import Path

import msgpack
import numpy as np
import pytest

import ecnn
import ecnn.numpy as en
from ecnn import codec, errors
from ecnn.container import compact as compact_header
from ecnn.container import format as fmt
from ecnn.container.reader import Container

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "spec"
sys.path.insert(0, str(ROOT / "tools"))

import ref_decoder  # noqa: E402


def code_vocabulary() -> tuple[dict[str, tuple[int, set[str]]], dict[str, tuple[int, set[str]]]]:
    """What the code implements: ``name -> (minor version, header keys)`` for representations and for coders.

    The only place in this file that knows where the code keeps its vocabulary.
    """
    from ecnn import repr as registry
    from ecnn.coder.registry import CODERS

    reprs = {k: (r.minor, set(r.keys)) for k, r in registry.REPRS.items()}
    coders = {k: (c.minor, set(c.keys)) for k, c in CODERS.items()}  # blocks: only in stream 2 of fields
    return reprs, coders


# --- reading the markdown ---------------------------------------------------------


def text(name: str) -> str:
    return (SPEC / name).read_text(encoding="utf-8")


def section(doc: str, heading: str) -> str:
    """The body of the section whose heading starts with ``heading``, up to the next heading of its level or above."""
    m = re.search(rf"^(#+) {re.escape(heading)}.*$", doc, re.M)
    assert m, f"no section {heading!r}"
    level = len(m.group(1))
    end = re.compile(rf"^#{{1,{level}}} ", re.M).search(doc, m.end())
    return doc[m.end() : end.start() if end else len(doc)]


def tables(body: str) -> list[list[dict[str, str]]]:
    """Every markdown table in ``body``, as a list of rows keyed by the header cells."""
    out, lines = [], body.splitlines()
    i = 0
    while i < len(lines) - 1:
        if lines[i].startswith("|") and re.match(r"^\|(\s*:?-+:?\s*\|)+\s*$", lines[i + 1]):
            head = _cells(lines[i])
            rows = []
            i += 2
            while i < len(lines) and lines[i].startswith("|"):
                rows.append(dict(zip(head, _cells(lines[i]))))
                i += 1
            out.append(rows)
        else:
            i += 1
    return out


def table_with(body: str, column: str) -> list[dict[str, str]]:
    """The one table of ``body`` with a column named ``column``."""
    found = [t for t in tables(body) if t and column in t[0]]
    assert len(found) == 1, f"{len(found)} tables with a column {column!r}"
    return found[0]


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def names(cell: str) -> list[str]:
    """The backquoted names in a cell, quotes around strings removed: `"raw"` and `raw` are both raw."""
    return [n.strip('"') for n in re.findall(r"`([^`]+)`", cell)]


def minor_of(version: str) -> int:
    major, minor = version.strip().split(".")
    assert int(major) == fmt.FORMAT_MAJOR
    return int(minor)


def spec_vocabulary(title: str) -> dict[str, tuple[int, set[str]]]:
    """CODING.md section 3's table whose first column is ``title``: name -> (minor version, fields)."""
    rows = table_with(section(text("CODING.md"), "3. Overview"), title)
    out = {}
    for r in rows:
        (name,) = names(r[title])
        assert name not in out, f"{name} listed twice"
        out[name] = (minor_of(r["Version"]), set(names(r[next(k for k in r if "fields" in k)])))
    return out


# --- version ------------------------------------------------------------------------


@pytest.mark.parametrize("doc", ["FORMAT.md", "CODING.md", "RANGE_CODER.md"])
def test_every_document_is_headed_with_the_version_the_code_writes(doc):
    head = "\n".join(text(doc).splitlines()[:4])
    assert f"Version {fmt.FORMAT_MAJOR}.{fmt.FORMAT_MINOR}." in head
    assert re.findall(r"Version \d+\.\d+", head) == [f"Version {fmt.FORMAT_MAJOR}.{fmt.FORMAT_MINOR}"]


def test_minor_version_rule_is_the_one_the_writer_follows():
    doc = text("FORMAT.md")
    preamble = table_with(section(doc, "5. Preamble"), "Field")
    (minor,) = [r for r in preamble if r["Field"] == "Format_Minor"]
    assert "lowest" in minor["Value"]
    assert sorted(int(v) for v in names(minor["Value"])) == list(range(fmt.FORMAT_MINOR + 1))
    assert not re.search(r"MUST\s+write\s+`?0`?", doc), "left from 1.0: an encoder writes the lowest minor version"
    assert re.search(r"MUST write the lowest (Format_Minor|minor\s+version)", section(doc, "11. Versions"))
    # The writer follows it: a file of 1.0 features with the MessagePack header gets minor 0 even with
    # options that allow 1.1; with the default options its header is compact, a feature of 1.4.
    raw_only = en.encode({"b": np.array([1, 2, 3], np.int8)}, config=ecnn.EncodeConfig(format_minor=3))
    assert struct.unpack_from("<H", raw_only, 10) == (0,)
    compact = en.encode({"b": np.array([1, 2, 3], np.int8)})
    assert struct.unpack_from("<H", compact, 10) == (4,) and compact[20] == 0xC1
    assert struct.unpack_from("<H", appendix_file("B")[0], 10) == (1,)  # a ctx stream
    assert struct.unpack_from("<H", appendix_file("A")[0], 10) == (0,)


# --- representations and coders -----------------------------------------------------


def test_representations_and_their_repr_keys_match_the_code():
    reprs, _ = code_vocabulary()
    assert spec_vocabulary("Representation") == reprs
    # Section 4.1: the kinds the `kind` field lists, and each field's kinds.
    rows = table_with(section(text("CODING.md"), "4.1 The `repr` map"), "Kinds")
    keys: dict[str, set[str]] = {k: set() for k in reprs}
    for r in rows:
        (field,) = names(r["Field"])
        for kind in reprs if r["Kinds"] == "all" else names(r["Kinds"]):
            keys[kind].add(field)
        if field == "kind":
            assert set(names(r["Meaning"])) == set(reprs)
    assert keys == {k: v for k, (_, v) in reprs.items()}


def test_stream_coders_and_their_descriptor_keys_match_the_code():
    _, coders = code_vocabulary()
    assert spec_vocabulary("Stream coder") == coders
    # Section 5.1: the coders the `coder` field lists, and each field's coders.
    rows = table_with(section(text("CODING.md"), "5.1 Descriptor"), "Coders")
    keys: dict[str, set[str]] = {k: set() for k in coders}
    for r in rows:
        fields = names(r["Field"])
        for coder in coders if r["Coders"] == "all" else [c for c in names(r["Coders"])]:
            keys[coder].update(fields)
        if fields == ["coder"]:
            assert set(names(r["Range"])) == set(coders)
    assert keys == {k: v for k, (_, v) in coders.items()}


def test_encoding_order_lists_every_header_key():
    """FORMAT.md section 12 names the field order of every repr and descriptor field."""
    body = section(text("FORMAT.md"), "12. Encoding a file")
    reprs, coders = code_vocabulary()
    rep = re.search(r"^  - `repr`:(.*?)(?=^  - )", body, re.M | re.S).group(1)
    desc = re.search(r"^  - stream descriptors:(.*?)(?=^  - )", body, re.M | re.S).group(1)
    for kind, (_, keys) in reprs.items():
        assert set(keys) - {"kind"} <= set(names(rep)), kind
        if keys != {"kind"}:
            assert kind in names(rep), kind
    for coder, (_, keys) in coders.items():
        assert coder in names(desc) and keys - {"coder", "length"} <= set(names(desc)), coder


@pytest.mark.parametrize("doc, heading", [("FORMAT.md", "13. Version changes"), ("CODING.md", "12. Version changes")])
def test_version_tables_list_every_feature_of_each_minor_version(doc, heading):
    reprs, coders = code_vocabulary()
    rows = table_with(section(text(doc), heading), "Version")
    for m in range(1, fmt.FORMAT_MINOR + 1):
        (row,) = [r for r in rows if r["Version"] == f"{fmt.FORMAT_MAJOR}.{m}"]
        listed = set(names(row["Changes"]))
        new = {k for k, (v, _) in {**reprs, **coders}.items() if v == m}
        assert new <= listed, f"{doc} {heading}: version 1.{m} omits {sorted(new - listed)}"


def test_error_names_are_the_code_s_format_errors():
    rows = table_with(section(text("FORMAT.md"), "10.1 Errors"), "Error")
    listed = [names(r["Error"])[0] for r in rows]
    code = [n for n, c in vars(errors).items() if isinstance(c, type) and issubclass(c, errors.FormatError)]
    assert sorted(listed) == sorted(set(code) - {"FormatError"})


# --- structure ----------------------------------------------------------------------


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    s = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return s.replace(" ", "-")


@pytest.mark.parametrize("doc", ["FORMAT.md", "CODING.md"])
def test_contents_list_every_section_and_appendix(doc):
    body = text(doc)
    contents = section(body, "Contents")
    links = re.findall(r"\]\(#([^)]+)\)", contents)
    headings = [h for h in re.findall(r"^## (.+)$", body, re.M) if h != "Contents"]
    assert links == [slug(h) for h in headings]
    assert any(h.startswith("Appendix") for h in headings)


@pytest.mark.parametrize("doc", ["FORMAT.md", "CODING.md", "RANGE_CODER.md"])
def test_no_implementation_paths_and_no_library_authority(doc):
    body = text(doc)
    assert not re.findall(r"`?\b(?:ecnn|tools|tests|bench)/[\w./]*", body)
    assert not re.search(r"normative for .*constriction", body, re.S | re.I)


# --- worked example files -----------------------------------------------------------


def code_blocks(body: str) -> list[tuple[str, str]]:
    """The fenced code blocks of ``body`` as ``(info string, code)``."""
    return [tuple(b.split("\n", 1)) for b in body.split("```")[1::2]]


def appendix_file(letter: str) -> tuple[bytes, str]:
    """The bytes of FORMAT.md Appendix ``letter``'s hex dump, and the appendix's text."""
    body = section(text("FORMAT.md"), f"Appendix {letter}.")
    (dump,) = [code for info, code in code_blocks(body) if code.startswith("00000000:")]
    data = b""
    for line in dump.strip().splitlines():
        off, rest = line.split(": ", 1)
        assert int(off, 16) == len(data)
        data += bytes.fromhex(rest[:47])
    return data, body


def check_appendix_dump(data: bytes, body: str) -> int:
    """The appendix's Python call writes ``data``, its text gives the file's SHA-256 and length, and every
    table row that gives an offset and bytes shows the file's bytes there; returns the number of such rows."""
    (code,) = [code for info, code in code_blocks(body) if info == "python"]
    scope: dict = {}
    exec(code, scope)  # the call the appendix says produced the file
    assert scope["data"] == data
    assert hashlib.sha256(data).hexdigest() in body
    assert f"{len(data)}-byte file" in body
    rows = 0
    for t in tables(body):
        for r in t:
            if "Offset" in r and "Bytes" in r:
                m = re.match(r"(\d+) \(0x|0x([0-9a-f]+)", r["Offset"])
                start = int(m.group(1)) if m.group(1) else int(m.group(2), 16)
                want = bytes.fromhex(names(r["Bytes"])[0])
                assert data[start : start + len(want)] == want, r
                rows += 1
    return rows


@pytest.mark.parametrize("letter", ["A", "B"])
def test_worked_example_is_what_the_encoder_writes(letter):
    data, body = appendix_file(letter)
    rows = check_appendix_dump(data, body)
    (hlen,) = struct.unpack_from("<I", data, 12)
    assert struct.unpack_from("<H", data, 10)[0] == codec.minor_version(msgpack.unpackb(data[20 : 20 + hlen])["tensors"])
    assert rows > 30


def test_worked_example_b_decodes_by_the_spec_alone():
    data, _ = appendix_file("B")
    tensors = ref_decoder.decode_file(data)
    values = [511, 510, 510, 510, 510, 510, 511, 510]
    assert tensors["w"] == ("float32", [2, 4], struct.pack("<8f", *values))
    assert tensors["b"] == ("int8", [3], bytes([1, 2, 3]))
    assert struct.unpack_from("<H", data, 10) == (1,)


def test_worked_example_d_is_what_the_encoder_writes_and_decodes_by_the_spec_alone():
    data, body = appendix_file("D")
    rows = check_appendix_dump(data, body)
    assert struct.unpack_from("<H", data, 10) == (3,)  # stored files: version 1.3
    assert rows >= 18
    metadata, tensors, files = ref_decoder.decode_all(data)
    assert tensors == {"b": ("int8", [3], bytes([1, 2, 3]))} and files == {"config.json": b'{"a": 1}\n'}


# --- the compact header (FORMAT.md 6.7) ----------------------------------------------


def test_compact_codes_are_the_code_s_and_the_spec_s_tables():
    rows = table_with(section(text("FORMAT.md"), "6.7.3 Codes"), "Code")
    for col, table in (("`dtype` (section 7)", compact_header.DTYPE_CODES), ("`repr` `kind` (CODING.md 4)", compact_header.KIND_CODES),
                       ("stream `coder` (CODING.md 5)", compact_header.CODER_CODES)):
        listed = [names(r[col])[0] for r in rows if names(r[col])]
        assert listed == list(table), col
        assert [int(r["Code"]) for r in rows][: len(listed)] == list(range(len(listed)))
    # Every dtype of section 7, kind and coder of CODING.md 3 has a code, and the reference decoder uses the same.
    reprs, coders = code_vocabulary()
    assert set(compact_header.KIND_CODES) == set(reprs) and set(compact_header.CODER_CODES) == set(coders)
    assert list(ref_decoder.COMPACT_DTYPES) == list(compact_header.DTYPE_CODES)
    assert list(ref_decoder.COMPACT_KINDS) == list(compact_header.KIND_CODES)
    assert list(ref_decoder.COMPACT_CODERS) == list(compact_header.CODER_CODES)


def test_compact_fields_are_the_spec_s_and_cover_every_field():
    rows = table_with(section(text("FORMAT.md"), "6.7.4 Records"), "Kind or coder")
    spec: dict[str, list[tuple[str, str]]] = {}
    for r in rows:
        fields = re.findall(r"`([a-z_]+)` \(([uswb])\)", r["Fields"])
        for who in names(r["Kind or coder"]):
            spec.setdefault(who, fields)  # `raw` is both a kind and a coder; neither has repr-side fields to confuse
    reprs, coders = code_vocabulary()
    for kind, (_, keys) in reprs.items():
        table = compact_header.KIND_FIELDS[kind]
        assert {k for k, _ in table} | {"kind"} == keys, kind
        assert list(table) == list(ref_decoder.COMPACT_KINDS[kind])
        if kind != "raw":
            assert list(table) == spec[kind], kind
    for coder, (_, keys) in coders.items():
        table = compact_header.CODER_FIELDS[coder]
        assert {k for k, _ in table} | {"coder", "length"} == keys, coder
        assert list(table) == list(ref_decoder.COMPACT_CODERS[coder])
        if coder != "raw":
            assert list(table) == spec[coder], coder
    assert spec["raw"] == [] and compact_header.CODER_FIELDS["raw"] == (("width", "u"), ("signed", "b"))


def test_worked_example_e_is_what_the_encoder_writes_and_decodes_by_the_spec_alone():
    data, body = appendix_file("E")
    rows = check_appendix_dump(data, body)
    assert struct.unpack_from("<H", data, 10) == (4,) and data[20] == 0xC1
    assert rows >= 20
    values = [511, 510, 510, 510, 510, 510, 511, 510]
    assert ref_decoder.decode_file(data) == {
        "fc.weight": ("float32", [2, 4], struct.pack("<8f", *values)),
        "fc.bias": ("int8", [3], bytes([1, 2, 3])),
    }
    # The same payloads as Appendix B, and the header stands for B's with the new names (6.7.5).
    b, _ = appendix_file("B")
    cb, ce = Container(b), Container(data)
    assert [bytes(cb.payload(r)) for r in cb.records] == [bytes(ce.payload(r)) for r in ce.records]
    for rb, re_ in zip(cb.header["tensors"], ce.header["tensors"]):
        assert {**rb, "name": re_["name"]} == re_
