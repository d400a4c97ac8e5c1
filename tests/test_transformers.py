"""ecnn.transformers, and Hugging Face model folders through pack and unpack (offline, local paths only).

A tiny random BERT (hidden size 32, 2 layers, a 100-word vocab.txt written here)
is saved with ``save_pretrained``, packed with ``ecnn pack FOLDER/ --bits 8``,
and read back both ways: ``ecnn.transformers.from_pretrained`` and
``ecnn unpack -o FOLDER2`` loaded with ``AutoModel.from_pretrained``. The
examples of docs/huggingface.md run in tests/test_readme.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may reach the network
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import ecnn  # noqa: E402
import ecnn.transformers as etf  # noqa: E402
from ecnn import errors  # noqa: E402
from ecnn.cli import main  # noqa: E402
from ecnn.file import EcnnFile, save_stream  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
WORDS = (
    "the a cat dog sat on mat hello world model small file weights compress bits network layer "
    "token vocab embed hidden state mean pool test run fast slow big little red green blue one two "
    "three four five six seven eight nine ten is was be are and or not of to in it this that with "
    "for as at by from up down left right new old good bad day night time year way man woman child "
    "house car tree water fire air earth light dark"
).split()
SENTENCES = ["hello world", "the cat sat on the mat", "a small model file is fast", "the red car and the blue tree"]


def write_vocab(path: Path) -> None:
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    tokens += [f"##x{i}" for i in range(100 - len(tokens))]
    path.write_text("\n".join(tokens[:100]) + "\n")


def tiny_config(**kw):
    return transformers.BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=64, **kw,
    )  # fmt: skip


def make_folder(folder: Path, cls=None, seed: int = 0) -> torch.nn.Module:
    """A model folder as save_pretrained writes it, plus a sentence-transformers subfolder and files never stored."""
    folder.mkdir(parents=True)
    write_vocab(folder / "vocab.txt")
    transformers.BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    torch.manual_seed(seed)
    model = (cls or transformers.BertModel)(tiny_config()).eval()
    with torch.no_grad():  # larger weights than the init's, so that quantization error shows
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    model.save_pretrained(folder)
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text('{"pooling_mode_mean_tokens": true}\n')
    (folder / ".gitattributes").write_text("*.safetensors filter=lfs\n")
    (folder / "modeling_evil.py").write_text("raise SystemExit('never run')\n")
    return model


def embed(model, tok) -> torch.Tensor:
    batch = tok(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**{k: v.to(model.device) for k, v in batch.items()}).last_hidden_state.float().cpu()
    mask = batch["attention_mask"].unsqueeze(-1).float()
    return (hidden * mask).sum(1) / mask.sum(1)


def cosine(a, b) -> float:
    return torch.nn.functional.cosine_similarity(a, b).min().item()


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hf")
    folder = tmp / "bert"
    original = make_folder(folder)
    out = tmp / "bert.ecnn"
    assert main(["pack", f"{folder}/", "-o", str(out), "--bits", "8", "-q"]) == 0
    return folder, out, original


def test_pack_stores_the_folder_s_small_files_and_says_so(packed, tmp_path, capsys):
    folder, out, _ = packed
    with EcnnFile(out) as f:
        names = f.file_names()
        assert f.version == (1, 3)
        stored = f.files()
    want = sorted(["config.json", "vocab.txt", "tokenizer.json", "tokenizer_config.json", "1_Pooling/config.json"])
    assert set(want) <= set(names)
    assert names == sorted(names)
    assert not [n for n in names if n.endswith((".py", ".safetensors")) or n.startswith(".")], names
    for n in names:
        assert stored[n] == (folder / n).read_bytes(), n
    # The summary names counts and bytes, and what was left out and why.
    assert main(["pack", f"{folder}/", "-o", str(tmp_path / "b.ecnn"), "--bits", "8"]) == 0
    text = capsys.readouterr().out
    assert re.search(rf"stored {len(names)} files \([\d.]+ KiB\)", text), text
    assert "modeling_evil.py" in text and "code or a pickle" in text and "model.safetensors" in text
    # --no-files: the weights only, a file older decoders read.
    assert main(["pack", str(folder), "-o", str(tmp_path / "c.ecnn"), "--bits", "8", "--no-files", "-q"]) == 0
    with EcnnFile(tmp_path / "c.ecnn") as f:
        assert f.file_names() == [] and f.version[1] <= 2


def test_info_lists_and_verify_checks_stored_files(packed, tmp_path, capsys):
    _, out, _ = packed
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "stored files: " in text and "1_Pooling/config.json" in text and "(format 1.3)" in text
    assert main(["info", "--json", str(out)]) == 0
    files = json.loads(capsys.readouterr().out)["files"]
    assert {"name": "config.json", "bytes": len(etf.stored_files(out)["config.json"])} in files
    assert main(["verify", str(out)]) == 0
    assert "stored files" in capsys.readouterr().out
    # One flipped byte inside a stored file: verify names the damage.
    data = bytearray(out.read_bytes())
    with EcnnFile(out) as f:
        rec = f._c.file_record("vocab.txt")
    data[rec.offset + 3] ^= 0x20
    bad = tmp_path / "bad.ecnn"
    bad.write_bytes(bytes(data))
    assert main(["verify", "-q", str(bad)]) == 1
    assert "vocab.txt" in capsys.readouterr().err
    with pytest.raises(errors.PayloadChecksumMismatch):
        etf.tokenizer(bad)


def test_from_pretrained_matches_the_original(packed):
    folder, out, original = packed
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    model = etf.from_pretrained(out)
    assert type(model) is transformers.BertModel and not model.training
    assert all(not t.is_meta for t in [*model.parameters(), *model.buffers()])
    # Non-persistent buffers are never in a checkpoint: they keep the values the model computes.
    assert torch.equal(model.embeddings.position_ids, original.embeddings.position_ids)
    assert torch.equal(model.embeddings.token_type_ids, original.embeddings.token_type_ids)
    assert cosine(embed(model, tok), embed(original, tok)) > 0.999
    # Not bit-exact: the weights went through 8-bit quantization.
    assert not torch.equal(model.encoder.layer[0].output.dense.weight, original.encoder.layer[0].output.dense.weight)


def test_unpack_restores_a_folder_transformers_loads(packed, tmp_path, capsys):
    folder, out, original = packed
    target = tmp_path / "bert2"  # no trailing slash, and a name with a dot after it would do too
    assert main(["unpack", str(out), "-o", str(target)]) == 0
    assert "with " in capsys.readouterr().out
    names = sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file())
    assert "model.safetensors" in names and "model.safetensors.index.json" not in names
    assert "modeling_evil.py" not in names and ".gitattributes" not in names
    for n in etf.stored_files(out):
        assert (target / n).read_bytes() == (folder / n).read_bytes()
    from safetensors import safe_open

    with safe_open(target / "model.safetensors", "pt") as f:
        assert f.metadata() == {"format": "pt"}
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float32}  # dtypes as stored  # noqa: SIM118
    loaded = transformers.AutoModel.from_pretrained(target, local_files_only=True).eval()
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    tok2 = transformers.AutoTokenizer.from_pretrained(target, local_files_only=True)
    ids = tok(SENTENCES, padding=True)["input_ids"]
    assert tok2(SENTENCES, padding=True)["input_ids"] == ids
    assert etf.tokenizer(out)(SENTENCES, padding=True)["input_ids"] == ids
    assert cosine(embed(loaded, tok), embed(original, tok)) > 0.999
    # The two ways back give the same model: same decoded weights.
    direct = etf.from_pretrained(out)
    assert torch.equal(embed(direct, tok), embed(loaded, tok))
    # A name with a suffix that is no weights format is a folder too, for a file with stored files.
    assert main(["unpack", str(out), "-o", str(tmp_path / "bert.restored"), "-q"]) == 0
    assert (tmp_path / "bert.restored" / "config.json").exists()
    # Without -o: a folder named like the file.
    copy = tmp_path / "again.ecnn"
    copy.write_bytes(out.read_bytes())
    assert main(["unpack", str(copy), "-q"]) == 0
    assert (tmp_path / "again" / "tokenizer.json").exists()
    # Replacing needs --force, and works on a folder of stored files and weights only.
    assert main(["unpack", str(out), "-o", str(target), "-q"]) == 1
    assert main(["unpack", str(out), "-o", str(target), "-q", "--force"]) == 0
    (target / "notes.txt").write_text("mine")
    assert main(["unpack", str(out), "-o", str(target), "-q", "--force"]) == 1
    assert (target / "notes.txt").read_text() == "mine"


def test_unpack_shards_a_large_model_with_an_index(packed, tmp_path):
    _, out, original = packed
    one, many = tmp_path / "one", tmp_path / "many"
    assert main(["unpack", str(out), "-o", str(one), "-q"]) == 0
    assert main(["unpack", str(out), "-o", f"{many}/", "--shard-size", "40kB", "-q"]) == 0
    shards = sorted(p.name for p in many.glob("*.safetensors"))
    assert len(shards) > 1 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    index = json.loads((many / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == set(shards)
    assert (many / "config.json").read_bytes() == (one / "config.json").read_bytes()
    a = transformers.AutoModel.from_pretrained(one, local_files_only=True).eval()
    b = transformers.AutoModel.from_pretrained(many, local_files_only=True).eval()
    tok = transformers.AutoTokenizer.from_pretrained(one, local_files_only=True)
    assert torch.equal(embed(a, tok), embed(b, tok))


def test_tied_weights_stay_tied(tmp_path):
    folder = tmp_path / "mlm"
    original = make_folder(folder, transformers.BertForMaskedLM)
    out = tmp_path / "mlm.ecnn"
    assert main(["pack", str(folder), "-o", str(out), "--bits", "8", "-q"]) == 0
    with EcnnFile(out) as f:
        assert "cls.predictions.decoder.weight" not in f.keys()  # save_pretrained stores a tied tensor once
    model = etf.from_pretrained(out)
    assert type(model) is transformers.BertForMaskedLM
    emb = model.bert.embeddings.word_embeddings.weight
    assert model.cls.predictions.decoder.weight.data_ptr() == emb.data_ptr()
    batch = transformers.AutoTokenizer.from_pretrained(folder)(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        got, want = model(**batch).logits, original(**batch).logits
    assert torch.nn.functional.cosine_similarity(got.flatten(), want.flatten(), dim=0) > 0.999
    # The same file as the base model (heads dropped), and the base model's file into a model with a head.
    base = etf.from_pretrained(out, model_class="BertModel")
    assert type(base) is transformers.BertModel
    assert torch.equal(base.embeddings.word_embeddings.weight, emb)


def test_weights_missing_from_the_file_are_initialized_not_left_on_meta(packed, caplog):
    _, out, original = packed  # a BertModel's weights: no masked-LM head
    with caplog.at_level("WARNING", logger="ecnn.transformers"):
        model = etf.from_pretrained(out, model_class=transformers.BertForMaskedLM)
    assert "newly initialized" in caplog.text and "cls.predictions" in caplog.text
    assert all(not t.is_meta for t in [*model.parameters(), *model.buffers()])
    head = model.cls.predictions.transform
    assert head.dense.weight.abs().sum() > 0 and torch.equal(head.LayerNorm.weight, torch.ones(32))
    assert torch.equal(model.bert.encoder.layer[1].output.dense.bias, original.encoder.layer[1].output.dense.bias)
    assert model.cls.predictions.decoder.weight.data_ptr() == model.bert.embeddings.word_embeddings.weight.data_ptr()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, "float16"])
def test_torch_dtype_is_honoured(packed, dtype):
    _, out, original = packed
    model = etf.from_pretrained(out, torch_dtype=dtype)
    want = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    assert {p.dtype for p in model.parameters()} == {want}
    assert model.embeddings.position_ids.dtype == torch.int64
    tok = etf.tokenizer(out)
    assert cosine(embed(model, tok), embed(original, tok)) > 0.99


def test_auto_dtype_is_the_stored_one(tmp_path):
    folder = tmp_path / "half"
    make_folder(folder)
    model = transformers.AutoModel.from_pretrained(folder).to(torch.bfloat16)
    model.save_pretrained(folder)
    out = tmp_path / "half.ecnn"
    assert main(["pack", str(folder), "-o", str(out), "-q"]) == 0
    assert {p.dtype for p in etf.from_pretrained(out).parameters()} == {torch.bfloat16}
    assert main(["unpack", str(out), "-o", str(tmp_path / "back"), "-q"]) == 0
    from safetensors import safe_open

    with safe_open(tmp_path / "back" / "model.safetensors", "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}  # noqa: SIM118


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_from_pretrained_on_cuda(packed):
    _, out, original = packed
    model = etf.from_pretrained(out, device="cuda")
    assert {t.device.type for t in [*model.parameters(), *model.buffers()]} == {"cuda"}
    tok = etf.tokenizer(out)
    assert cosine(embed(model, tok), embed(original, tok)) > 0.999


def test_a_file_without_stored_config_is_a_clear_error(packed, tmp_path):
    folder, _, _ = packed
    out = tmp_path / "weights.ecnn"
    assert main(["pack", str(folder / "model.safetensors"), "-o", str(out), "-q"]) == 0
    for call in (etf.from_pretrained, etf.tokenizer, etf.config):
        with pytest.raises(errors.NoStoredConfig, match="stores no config.json"):
            call(out)
    with pytest.raises(errors.InvalidOption):
        etf.tokenizer(packed[1], trust_remote_code=True)


def test_config_and_no_temporary_folder_left_behind(packed, tmp_path, monkeypatch):
    import tempfile

    _, out, _ = packed
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    cfg = etf.config(out)
    assert cfg.hidden_size == 32 and cfg.architectures == ["BertModel"]
    assert etf.config_json(out)["num_hidden_layers"] == 2
    etf.tokenizer(out)
    etf.from_pretrained(out)
    assert list(scratch.iterdir()) == []


def test_missing_transformers_is_a_typed_error(packed, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import fails as if it were not installed
    with pytest.raises(errors.MissingDependency, match=r"ecnn\[hf\]"):
        etf.config(packed[1])


def test_importing_ecnn_does_not_import_transformers():
    code = "import sys, ecnn, ecnn.file, ecnn.io, ecnn.cli; assert 'transformers' not in sys.modules, 'imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_stored_files_through_the_python_api(tmp_path):
    import numpy as np

    from ecnn import dtypes
    from ecnn.config import EncodeConfig
    from ecnn.file import sources

    src = sources({"w": (np.ones((4, 4), np.float32), dtypes.get("float32"))})
    files = {"config.json": b'{"model_type": "bert"}', "sub/dir/notes.txt": b"hi"}
    save_stream(src, tmp_path / "a.ecnn", EncodeConfig(), files=files)
    with ecnn.open(tmp_path / "a.ecnn") as f:
        assert f.files() == files and f.file_sizes() == {"config.json": 22, "sub/dir/notes.txt": 2}
        with pytest.raises(errors.FileNotStored):
            f.read_file("nope.json")
    for bad in ["../up.json", "/abs", "a\\b", "x/../../y", "con.json", "dup.json"]:
        with pytest.raises(errors.InvalidFileName):
            save_stream(src, tmp_path / "b.ecnn", EncodeConfig(), files={"DUP.json": b"", bad: b"x"})
    assert not (tmp_path / "b.ecnn").exists()
    # A stored file that would overwrite the weights of a restored folder is refused by unpack.
    save_stream(src, tmp_path / "c.ecnn", EncodeConfig(), files={"model.safetensors": b"not weights"})
    assert main(["unpack", str(tmp_path / "c.ecnn"), "-o", str(tmp_path / "c"), "-q"]) == 1
    assert not (tmp_path / "c").exists()
