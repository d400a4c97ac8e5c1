"""Conformance vectors in fixtures/v1: never skipped, never deleted."""

import hashlib
import json
import struct
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest

import ecnn.numpy as en
from ecnn import errors
from ecnn.file import EcnnFile
from make_fixtures import sha256_of

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "v1"
VALID = json.loads((FIX / "valid" / "expected.json").read_text())
INVALID = json.loads((FIX / "invalid" / "expected.json").read_text())


def record_order(data: bytes) -> list[str]:
    """Tensor names in the order of the header's records, read with a plain MessagePack parser.

    FORMAT.md section 6.3: a decoder lists the tensors in this order. (expected.json
    stores its objects sorted by key, so it cannot give the order itself.)
    """
    (hlen,) = struct.unpack_from("<I", data, 12)
    return [t["name"] for t in msgpack.unpackb(data[20 : 20 + hlen])["tensors"]]


def test_every_fixture_file_has_an_expectation():
    assert sorted(p.stem for p in (FIX / "valid").glob("*.ecnn")) == sorted(VALID)
    assert sorted(p.stem for p in (FIX / "invalid").glob("*.ecnn")) == sorted(INVALID)
    assert len(VALID) >= 10 and len(INVALID) >= 20


@pytest.mark.parametrize("name", sorted(VALID))
def test_valid_fixture_decodes_to_expected_tensors(name):
    want = VALID[name]
    data = (FIX / "valid" / f"{name}.ecnn").read_bytes()
    with EcnnFile(data) as f:
        f.verify()
        assert f.metadata() == want["metadata"]
        order = record_order(data)
        assert sorted(order) == sorted(want["tensors"])
        assert f.keys() == order
        for tname, t in want["tensors"].items():
            arr, dt = f.get_array(tname)
            assert dt.name == t["dtype"] and list(arr.shape) == t["shape"]
            assert sha256_of(arr) == t["sha256"], tname
        # Stored files (1.3): none in the older vectors, each one's bytes exactly in the newer ones.
        stored = f.files()
        assert f.file_names() == list(stored)
        assert {n: {"size": len(b), "sha256": hashlib.sha256(b).hexdigest()} for n, b in stored.items()} == want.get("files", {})
        if not stored:
            assert f.version[1] <= 2, "only a file with stored files has Format_Minor 3"
    assert list(en.decode(data)) == order


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_fixture_raises_its_error(name):
    err = getattr(errors, INVALID[name]["error"])
    data = (FIX / "invalid" / f"{name}.ecnn").read_bytes()
    with pytest.raises(errors.FormatError) as info:
        en.decode(data)
        with EcnnFile(data) as f:  # the verification path also checks the stored files (FORMAT.md 10)
            f.verify()
    assert type(info.value) is err, f"{name}: got {type(info.value).__name__}: {info.value}"


def test_cli_prints_one_line_for_every_invalid_fixture():
    # One interpreter for all files keeps this fast; each file goes through the real CLI entry point.
    code = (
        "import sys, io, contextlib\n"
        "from ecnn.cli import main\n"
        "for p in sys.argv[1:]:\n"
        "    err = io.StringIO()\n"
        "    with contextlib.redirect_stderr(err):\n"
        "        rc = main(['verify', '-q', p])\n"
        "    print(rc, repr(err.getvalue()))\n"
    )
    files = [str(FIX / "invalid" / f"{n}.ecnn") for n in sorted(INVALID)]
    r = subprocess.run([sys.executable, "-c", code, *files], capture_output=True, text=True, check=True)
    lines = r.stdout.splitlines()
    assert len(lines) == len(files)
    for f, line in zip(files, lines):
        rc, text = line.split(" ", 1)
        text = eval(text)  # repr of a str printed above
        assert rc == "1", f
        assert text.startswith("error: ") and text.count("\n") == 1 and "Traceback" not in text, (f, text)
