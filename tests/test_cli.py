"""ecnn/cli.py: the commands, their output and their errors."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from ecnn.cli import main

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def model(tmp_path):
    g = torch.Generator().manual_seed(0)
    sd = {"fc.weight": torch.randn(64, 32, generator=g) * 0.1, "fc.bias": torch.randn(64, generator=g), "idx": torch.arange(7)}
    p = tmp_path / "model.safetensors"
    save_file(sd, p)
    return p, sd


def test_pack_info_verify_unpack(model, tmp_path, capsys):
    src, sd = model
    out = tmp_path / "model.ecnn"
    assert main(["pack", str(src), "-o", str(out), "--bits", "6"]) == 0
    assert "packed 3 tensors" in capsys.readouterr().out
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "fc.weight" in text and "per-row step<=" in text and "bits per value" in text
    assert main(["info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["file_bytes"] == out.stat().st_size and len(info["tensors"]) == 3
    assert main(["verify", str(out)]) == 0
    assert capsys.readouterr().out.startswith("ok:")
    back = tmp_path / "back.safetensors"
    assert main(["unpack", str(out), "-o", str(back)]) == 0
    dec = load_file(back)
    assert torch.equal(dec["fc.bias"], sd["fc.bias"]) and torch.equal(dec["idx"], sd["idx"])
    step = next(t["step"] for t in info["tensors"] if t["name"] == "fc.weight")
    assert (dec["fc.weight"] - sd["fc.weight"]).abs().max() <= step / 2 * 1.0001


def test_lossless_pack_to_pt(model, tmp_path):
    src, sd = model
    out = tmp_path / "m.ecnn"
    assert main(["pack", str(src), "-o", str(out), "--lossless", "-q"]) == 0
    assert main(["unpack", str(out), "-o", str(tmp_path / "m.pt"), "-q"]) == 0
    dec = torch.load(tmp_path / "m.pt", weights_only=True)
    assert all(torch.equal(dec[k], v) for k, v in sd.items())


def test_overwrite_rules(model, tmp_path, capsys):
    src, _ = model
    out = tmp_path / "m.ecnn"
    assert main(["pack", str(src), "-o", str(out), "-q"]) == 0
    before = out.read_bytes()
    assert main(["pack", str(src), "-o", str(out), "--bits", "4", "-q"]) == 1
    assert "--force" in capsys.readouterr().err and out.read_bytes() == before
    assert main(["pack", str(src), "-o", str(out), "--bits", "4", "-q", "--force"]) == 0
    assert out.read_bytes() != before
    assert main(["unpack", str(out), "-o", str(out)]) == 1
    assert "refusing" in capsys.readouterr().err


def _run(argv: list[str], capsys, caplog) -> tuple[int, str, str]:
    """``ecnn ARGV`` in this process: its exit status, stdout and stderr.

    A warning logged or issued on the way would reach stderr in a real run, so each
    is added to the stderr returned here, the way ``ecnn``'s logging would print it.
    """
    import logging
    import warnings

    capsys.readouterr()
    caplog.clear()
    with caplog.at_level(logging.WARNING), warnings.catch_warnings(record=True) as issued:
        warnings.simplefilter("always")
        try:
            status = main(argv)
        except SystemExit as e:  # argparse's own errors and --help
            status = e.code if isinstance(e.code, int) else 1
    out, err = capsys.readouterr()
    err += "".join(f"{r.levelname}: {r.getMessage()}\n" for r in caplog.records if r.levelno >= logging.WARNING)
    err += "".join(f"{w.category.__name__}: {w.message}\n" for w in issued)
    return status, out, err


# One case runs `python -m ecnn` in a child process (test_an_error_from_the_entry_point_is_one_line);
# the others call ecnn.cli.main here, with the same checks.
_ERRORS = [
    (["info", "/nonexistent.ecnn"], "No such file"),
    (["pack", "/nonexistent.safetensors"], "no such file"),
    (["unpack", "{bad}", "-o", "{tmp}/x.safetensors"], "signature"),
    (["verify", "{bad}"], "signature"),
    (["pack", "{model}", "-o", "{tmp}/y.ecnn", "--step", "-1"], "step"),
    (["unpack", "{good}", "-o", "{tmp}/x.npz"], ".safetensors"),
    (["unpack", "{good}", "-o", "{tmp}/", "--force"], "refusing to replace"),  # the folder holds the input
    (["unpack", "{good}", "-o", "{tmp}/x.safetensors", "--shard-size", "1MB"], "folder"),
]


@pytest.fixture
def files(model, tmp_path):
    """The names the argv of _ERRORS uses: a bad .ecnn, a good one, the model, the folder."""
    src, _ = model
    bad = tmp_path / "bad.ecnn"
    bad.write_bytes(b"hello, not a model")
    good = tmp_path / "good.ecnn"
    assert main(["pack", str(src), "-o", str(good), "-q"]) == 0
    return {"bad": bad, "tmp": tmp_path, "model": src, "good": good}


def _check_one_error_line(status: int, stderr: str, needle: str) -> None:
    assert status == 1
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize("argv, needle", _ERRORS)
def test_errors_are_one_line(argv, needle, files, capsys, caplog):
    status, _, err = _run([a.format(**files) for a in argv], capsys, caplog)
    _check_one_error_line(status, err, needle)


def test_an_error_from_the_entry_point_is_one_line(files):
    """`python -m ecnn` in a fresh interpreter: one `error:` line on stderr, exit status 1."""
    argv, needle = _ERRORS[3]  # a typed error, and no torch import to wait for
    argv = [a.format(**files) for a in argv]
    r = subprocess.run([sys.executable, "-m", "ecnn", *argv], cwd=ROOT, capture_output=True, text=True)
    _check_one_error_line(r.returncode, r.stderr, needle)


def test_help_has_examples(capsys, caplog):
    status, out, _ = _run(["--help"], capsys, caplog)
    assert status == 0
    assert "examples:" in out and "ecnn pack" in out
    status, out, _ = _run(["pack", "--help"], capsys, caplog)
    assert status == 0
    assert "--lossless" in out and "examples:" in out


def test_info_into_a_closed_pipe_stops_quietly(tmp_path):
    """``ecnn info m.ecnn | head -1``: the reader leaves with most of the table unwritten; no error line, status 0."""
    import numpy as np

    import ecnn.numpy as en

    p = tmp_path / "many.ecnn"
    en.save_file({f"layer{i}.weight": np.zeros((2, 2), np.float32) for i in range(4000)}, p, lossless=True)
    proc = subprocess.Popen([sys.executable, "-m", "ecnn", "info", str(p)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline().startswith(b"tensor")
    proc.stdout.close()  # far more than a pipe's buffer is still to come
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 0 and err == b""
    # The same through the shell, as people type it.
    r = subprocess.run(
        f"'{sys.executable}' -m ecnn info '{p}' | head -1; exit ${{PIPESTATUS[0]}}",
        shell=True, executable="bash", cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert r.returncode == 0 and r.stdout.startswith("tensor") and r.stderr == "", r.stderr


def _closed_stdout(argv: list[str]) -> tuple[int, bytes]:
    """``ecnn ARGV`` in a child whose stdout is a pipe closed before the child writes: status, stderr."""
    proc = subprocess.Popen([sys.executable, "-m", "ecnn", *argv], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the child is still importing: every write it makes meets a reader that left
    err = proc.stderr.read()
    return proc.wait(timeout=300), err


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["pack", "--help"],
        ["info", "{good}"],
        ["info", "{good}", "--json"],
        ["verify", "{good}"],
        ["verify", "{good}", "--json"],
        ["pack", "{model}", "-o", "{tmp}/piped.ecnn", "--json"],
        ["unpack", "{good}", "-o", "{tmp}/piped.safetensors"],
    ],
)
def test_every_command_into_a_closed_pipe_ends_quietly(argv, files):
    """Output nobody reads any more: the command ends with status 0 and says nothing on stderr."""
    status, err = _closed_stdout([a.format(**files) for a in argv])
    assert status == 0 and err == b"", err
    if "-o" in argv:  # the work is done before the summary is printed
        out = files["tmp"] / Path(argv[3]).name
        assert out.stat().st_size > 0
        if argv[0] == "pack":
            assert main(["verify", str(out), "-q"]) == 0


def test_an_error_into_a_closed_pipe_is_still_status_1(files):
    status, err = _closed_stdout(["verify", str(files["bad"])])
    assert status == 1 and err.decode().startswith("error: ") and b"signature" in err


def test_progress_into_a_closed_pipe_does_not_stop_the_work(files):
    """``ecnn pack --target-size ... 2>&1 | head -1``: the stage lines lose their reader; the pack goes on."""
    out = files["tmp"] / "budget.ecnn"
    cmd = [sys.executable, "-m", "ecnn", "pack", str(files["model"]), "-o", str(out), "--target-size", "4000"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    first = proc.stdout.readline()
    proc.stdout.close()
    # the no-calibration notice or a stage line came first
    assert proc.wait(timeout=300) == 0 and (first.endswith(b"...\n") or first.startswith(b"no calibration data")), first
    assert main(["verify", str(out), "-q"]) == 0 and out.stat().st_size <= 4000
    # stderr alone closed, stdout read: the summary line still comes, and the file is the same.
    again = files["tmp"] / "budget2.ecnn"
    cmd[cmd.index(str(out))] = str(again)
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stderr.close()
    summary = proc.stdout.read()
    assert proc.wait(timeout=300) == 0 and summary.startswith(b"packed 3 tensors"), summary
    assert again.read_bytes() == out.read_bytes()


def _json(argv: list[str], capsys, caplog) -> dict:
    """``ecnn ARGV --json``: status 0, and stdout is one JSON object and nothing else."""
    status, out, err = _run([*argv, "--json"], capsys, caplog)
    assert status == 0, err
    return json.loads(out)  # fails on anything printed beside the object


def test_json_figures(model, files, tmp_path, capsys, caplog):
    src, sd = model
    out = tmp_path / "j.ecnn"
    packed = _json(["pack", str(src), "-o", str(out), "--bits", "6"], capsys, caplog)
    in_bytes = sum(t.numel() * t.element_size() for t in sd.values())
    assert packed["output"] == str(out) and packed["output_bytes"] == out.stat().st_size
    assert packed["input_bytes"] == in_bytes and packed["ratio"] == pytest.approx(in_bytes / out.stat().st_size)
    assert (packed["tensors"], packed["quantized"], packed["exact"]) == (3, 1, 2)  # the weight; the bias and idx exact
    assert 0 <= packed["seconds"] < 600
    lossless = _json(["pack", str(src), "-o", str(tmp_path / "l.ecnn"), "--lossless", "-q"], capsys, caplog)
    assert (lossless["quantized"], lossless["exact"]) == (0, 3)  # --json wins over -q

    checked = _json(["verify", str(out)], capsys, caplog)
    assert checked == {"ok": True, "file": str(out), "tensors": 3, "stored_files": 0, "bytes": out.stat().st_size}

    info = _json(["info", str(out)], capsys, caplog)
    assert info["file_bytes"] == out.stat().st_size and sorted(t["name"] for t in info["tensors"]) == sorted(sd)

    one = _json(["unpack", str(out), "-o", str(tmp_path / "u.safetensors")], capsys, caplog)
    assert one["outputs"] == [str(tmp_path / "u.safetensors")] and one["tensors"] == 3
    assert one["bytes"] == (tmp_path / "u.safetensors").stat().st_size
    pt = _json(["unpack", str(out), "-o", str(tmp_path / "u.pt")], capsys, caplog)
    assert pt["outputs"] == [str(tmp_path / "u.pt")] and pt["tensors"] == 3
    folder = _json(["unpack", str(out), "-o", f"{tmp_path}/shards/", "--shard-size", "1kB"], capsys, caplog)
    names = sorted(p.name for p in (tmp_path / "shards").iterdir())
    assert [Path(p).name for p in folder["outputs"]] == names and "model.safetensors.index.json" in names
    assert folder["tensors"] == 3
    single = _json(["unpack", str(out), "-o", f"{tmp_path}/one/"], capsys, caplog)  # fits one shard: as Hugging Face writes it
    assert [Path(p).name for p in single["outputs"]] == ["model.safetensors"]


@pytest.mark.parametrize("argv", [["verify", "{bad}"], ["info", "{bad}"], ["pack", "{model}", "-o", "{good}"], ["unpack", "{bad}"]])
def test_json_errors_go_to_stderr(argv, files, capsys, caplog):
    status, out, err = _run([a.format(**files) for a in argv] + ["--json"], capsys, caplog)
    assert out == ""
    _check_one_error_line(status, err, "")


def test_quiet_prints_nothing(files, tmp_path, capsys, caplog):
    for argv in (
        ["info", str(files["good"]), "-q"],
        ["verify", str(files["good"]), "-q"],
        ["pack", str(files["model"]), "-o", str(tmp_path / "q.ecnn"), "-q"],
        ["unpack", str(files["good"]), "-o", str(tmp_path / "q.safetensors"), "-q"],
    ):
        assert _run(argv, capsys, caplog) == (0, "", "")
    assert _run(["info", str(files["bad"]), "-q"], capsys, caplog)[0] == 1


def test_ratios_never_read_zero(tmp_path, capsys):
    """A file much larger than its tensors (here: its metadata) has a ratio below 0.01; it never prints as 0.00x."""
    from safetensors.numpy import save_file as save_np

    import numpy as np

    from ecnn.cli import _ratio

    assert [_ratio(*x) for x in ((100, 1), (1, 100), (1, 1000), (0, 5), (5, 0))] == ["100.00x", "0.01x", "<0.01x", "-", "-"]
    save_np({"one": np.ones(1, np.float32), "none": np.ones(0, np.float32)}, str(tmp_path / "tiny.safetensors"))
    out = tmp_path / "tiny.ecnn"
    assert main(["pack", str(tmp_path / "tiny.safetensors"), "-o", str(out), "--metadata", "note=" + "x" * 2000]) == 0
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "0.00x" not in text and "<0.01x" in text, text


def _folder(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint folder, read through its index."""
    index = json.loads((path / "model.safetensors.index.json").read_text())
    out = {}
    for name, shard in index["weight_map"].items():
        out[name] = load_file(path / shard)[name]
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in out.values())
    return out


def test_unpack_to_a_folder(model, tmp_path, capsys):
    """-o DIR/, an existing folder or a path without a suffix: a sharded folder equal to a direct decode."""
    import ecnn

    src, _ = model
    packed = tmp_path / "m.ecnn"
    assert main(["pack", str(src), "-o", str(packed), "--bits", "8", "-q"]) == 0
    direct = ecnn.load_file(packed)
    (tmp_path / "empty").mkdir()
    for target, shown in [(f"{tmp_path}/a/", "a"), (str(tmp_path / "empty"), "empty"), (str(tmp_path / "plain"), "plain")]:
        assert main(["unpack", str(packed), "-o", target, "--shard-size", "4KiB"]) == 0
        assert f"unpacked 3 tensors to {tmp_path / shown} in 2 shards" in capsys.readouterr().out
        back = _folder(tmp_path / shown)
        assert set(back) == set(direct) and all(torch.equal(back[k], v) for k, v in direct.items())
        shards = sorted(p.name for p in (tmp_path / shown).glob("*.safetensors"))
        assert shards == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".ecnn-")]
    # The default shard size (5GB) puts everything in one model.safetensors, as Hugging Face writes it
    # (no index); replacing needs --force, and the old shards and index go with the old folder.
    assert main(["unpack", str(packed), "-o", f"{tmp_path}/a/", "-q"]) == 1
    assert "--force" in capsys.readouterr().err
    assert main(["unpack", str(packed), "-o", f"{tmp_path}/a/", "-q", "--force"]) == 0
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["model.safetensors"]
    # A folder holding anything else is never replaced.
    (tmp_path / "a" / "notes.txt").write_text("keep me")
    assert main(["unpack", str(packed), "-o", f"{tmp_path}/a/", "-q", "--force"]) == 1
    assert "notes.txt" in capsys.readouterr().err and (tmp_path / "a" / "notes.txt").read_text() == "keep me"


def test_unpack_to_safetensors_streams_with_metadata(model, tmp_path):
    from safetensors import safe_open

    src, sd = model
    packed = tmp_path / "m.ecnn"
    assert main(["pack", str(src), "-o", str(packed), "--lossless", "--metadata", "who=me", "-q"]) == 0
    assert main(["unpack", str(packed), "-o", str(tmp_path / "b.safetensors"), "-q"]) == 0
    back = load_file(tmp_path / "b.safetensors")
    assert all(torch.equal(back[k], v) for k, v in sd.items())
    with safe_open(tmp_path / "b.safetensors", "pt") as f:
        assert f.metadata() == {"format": "pt", "who": "me"}  # "format": "pt" as Hugging Face writes it


@pytest.mark.parametrize(
    "text, size",
    [("5GB", 5 * 10**9), ("4GiB", 4 << 30), ("500MB", 500 * 10**6), ("100kB", 100_000), ("2k", 2048), ("1.5GB", 1_500_000_000),
     ("123", 123), ("8 M", 8 << 20), ("1TB", 10**12)],
)  # fmt: skip
def test_shard_size_units(text, size):
    from ecnn.cli import _shard_size

    assert _shard_size(text) == size


@pytest.mark.parametrize("text", ["", "0", "GB", "-1GB", "5XB", "nanGB", "infGB", "0.1"])
def test_bad_shard_sizes_are_refused(text, capsys, caplog, files):
    status, _, err = _run(["unpack", str(files["good"]), "-o", str(files["tmp"] / "o/"), "--shard-size", text], capsys, caplog)
    assert status == 2 and "--shard-size" in err


def test_info_reads_no_payload(model, tmp_path, capsys):
    """A damaged payload is listed by info (which reads the header only) and caught by verify."""
    src, _ = model
    out = tmp_path / "m.ecnn"
    assert main(["pack", str(src), "-o", str(out), "-q"]) == 0
    data = bytearray(out.read_bytes())
    data[-1] ^= 0xFF  # inside the last payload: the file ends where it ends
    out.write_bytes(bytes(data))
    assert main(["info", str(out)]) == 0
    assert main(["verify", str(out)]) == 1
    assert "damaged" in capsys.readouterr().err


def test_unpack_and_verify_bars_count_bytes(model, tmp_path, capsys, monkeypatch):
    src, _ = model
    out = tmp_path / "m.ecnn"
    assert main(["pack", str(src), "-o", str(out), "-q"]) == 0
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    for argv in (["verify", str(out)], ["unpack", str(out), "-o", f"{tmp_path}/d/"]):
        capsys.readouterr()
        assert main(argv) == 0
        err = capsys.readouterr().err
        assert "B/s" in err, err  # bytes per second: the bar counts bytes


@pytest.mark.parametrize("command", ["pack", "unpack-file", "unpack-folder"])
def test_an_output_in_a_missing_folder_is_a_clear_error(tmp_path, capsys, command):
    import numpy as np
    from safetensors.numpy import save_file

    from ecnn.cli import main as cli_main

    save_file({"w": np.ones((4, 4), np.float32)}, str(tmp_path / "m.safetensors"))
    assert cli_main(["pack", str(tmp_path / "m.safetensors"), "-o", str(tmp_path / "m.ecnn"), "-q"]) == 0
    missing = tmp_path / "no" / "such"
    argv = {
        "pack": ["pack", str(tmp_path / "m.safetensors"), "-o", str(missing / "x.ecnn")],
        "unpack-file": ["unpack", str(tmp_path / "m.ecnn"), "-o", str(missing / "x.safetensors")],
        "unpack-folder": ["unpack", str(tmp_path / "m.ecnn"), "-o", str(missing / "out") + "/"],
    }[command]
    capsys.readouterr()
    assert cli_main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no such folder to write the output in" in err and ".tmp" not in err
    assert not (tmp_path / "no").exists()


def test_json_figures_of_an_onnx_model(tmp_path, capsys, caplog):
    """An ONNX model's graph is not a weight: pack --json counts the initializers only; unpack --json names the .onnx."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    w = numpy_helper.from_array(np.linspace(-1, 1, 32 * 16, dtype=np.float32).reshape(32, 16), "w")
    b = numpy_helper.from_array(np.zeros(16, np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Add", ["h", "b"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 32])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 16])],
        [w, b],
    )
    src = tmp_path / "m.onnx"
    onnx.save_model(helper.make_model(graph), str(src))
    packed = _json(["pack", str(src), "-o", str(tmp_path / "m.ecnn")], capsys, caplog)
    assert (packed["tensors"], packed["quantized"], packed["exact"]) == (2, 1, 1)
    assert packed["input_bytes"] == (32 * 16 + 16) * 4
    back = _json(["unpack", str(tmp_path / "m.ecnn"), "-o", str(tmp_path / "back.onnx")], capsys, caplog)
    assert back["outputs"] == [str(tmp_path / "back.onnx")] and back["tensors"] == 2
    assert back["bytes"] == (tmp_path / "back.onnx").stat().st_size


@pytest.mark.parametrize("minor, written", [(0, 0), (1, 1), (3, 2), (4, 4)])
def test_pack_format_minor_writes_files_older_decoders_read(tmp_path, capsys, minor, written):
    """The file's minor version is the lowest that covers what it uses (spec/FORMAT.md 3): a file
    without stored files written for 1.3 decoders is a 1.2 file."""
    import ecnn

    torch.manual_seed(0)
    sd = {"w": torch.randn(64, 96), "b": torch.randn(64)}
    src = tmp_path / "m.safetensors"
    save_file(sd, src)
    out = tmp_path / "old.ecnn"
    assert main(["pack", str(src), "-o", str(out), "--format-minor", str(minor), "-q"]) == 0
    assert main(["pack", str(src), "-o", str(tmp_path / "new.ecnn"), "-q"]) == 0
    assert main(["info", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["version"] == [1, written]
    assert (out.read_bytes()[20] == 0xC1) == (minor == 4)  # the compact header's first byte (spec/FORMAT.md 6.7)
    dec, new = ecnn.load_file(out), ecnn.load_file(tmp_path / "new.ecnn")
    assert all(torch.equal(dec[k], new[k]) for k in sd)  # the same tensors, in whichever version
    assert torch.equal(dec["b"], sd["b"]) and not torch.equal(dec["w"], sd["w"])


def test_pack_format_minor_is_refused_with_a_budget(tmp_path, capsys):
    src = tmp_path / "m.safetensors"
    save_file({"w": torch.randn(64, 96)}, src)
    assert main(["pack", str(src), "--target-size", "3000", "--format-minor", "3"]) == 1
    assert "--format-minor" in capsys.readouterr().err
