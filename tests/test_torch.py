"""ecnn/torch.py and ecnn/parallel.py: state dicts on a device, load_into, save_model."""

import numpy as np
import pytest
import torch

import ecnn
import ecnn.torch as et
from ecnn import codec, parallel
from ecnn.config import EncodeConfig
from ecnn.errors import FormatError

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    a, b = a.detach().cpu().reshape(-1).contiguous(), b.detach().cpu().reshape(-1).contiguous()
    return bytes(a.view(torch.uint8).numpy()) == bytes(b.view(torch.uint8).numpy())


def _mixed_state(seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(48, 40, generator=g) * 0.05
    return {
        "f32": w,
        "f16": w.half(),
        "bf16": w.bfloat16(),
        "f64": w.double(),
        "conv": torch.randn(8, 3, 3, 3, generator=g),
        "bias": torch.randn(48, generator=g),
        "scalar": torch.tensor(1.5),
        "empty": torch.zeros(0, 4),
        "ids": torch.arange(-5, 50),
        "mask": torch.rand(7, 7, generator=g) > 0.5,
        "u8": torch.randint(0, 255, (20,), generator=g, dtype=torch.uint8),
        "const": torch.full((16, 16), 0.25),
    }


@pytest.fixture(params=[False, True], ids=["per_tensor", "per_row"])
def mixed_file(tmp_path, request):
    if request.param:  # uniform_rows: an outlier row gets its own step
        p = tmp_path / "mixed_rows.ecnn"
        sd = _mixed_state()
        for k in ("f32", "f16", "bf16", "f64"):
            sd[k] = sd[k].clone()
            sd[k][3] *= 50
        ecnn.save_file(sd, p, config=EncodeConfig(bits=8, per_row=True))
        with ecnn.open(p) as f:
            assert f.info("f32").representation == "uniform_rows"
        return p
    p = tmp_path / "mixed.ecnn"
    ecnn.save_file(_mixed_state(), p, config=EncodeConfig(bits=8, per_row=False))  # per-tensor steps: the symbols + device-dequantize path
    return p


@pytest.mark.parametrize("config", [
    EncodeConfig(bits=8), EncodeConfig(bits=4), EncodeConfig(bits=12), EncodeConfig(bits=16),
    EncodeConfig(step=1e-6), EncodeConfig(lossless=True), EncodeConfig(bits=6, chunk=4096),
], ids=["b8", "b4", "b12", "b16", "tiny-step-int32", "lossless", "b6-chunks"])  # fmt: skip
def test_load_file_is_bit_identical_to_the_numpy_path(tmp_path, config):
    p = tmp_path / "m.ecnn"
    ecnn.save_file(_mixed_state(), p, config=config)
    ref = ecnn.load_file(p)
    got = et.load_file(p, device="cpu")
    assert list(got) == list(ref)
    for k in ref:
        assert _same_bits(got[k], ref[k]), k


def test_symbols_are_narrow_and_dequantize_on_device_matches_host(mixed_file):
    with ecnn.open(mixed_file) as f:
        h = f.get_host("f32")
        assert h.step is not None and h.data.dtype == np.int8
        for name in f.keys():
            h = f.get_host(name)
            host = codec.host_values(h)
            arr, dt = f.get_array(name)
            assert host.dtype == arr.dtype and host.tobytes() == arr.tobytes(), name
            assert _same_bits(et.materialize(h, device=torch.device("cpu")), et.from_array(arr, dt)), name
            if h.step is not None:  # what the CUDA path runs on the device, run on the CPU
                dev = et.dequantize(torch.from_numpy(h.data), h.dtype, h.step, row_steps=h.row_steps)
                assert _same_bits(dev, et.from_array(arr, dt)), name


@pytest.mark.parametrize("name", ["f32", "f64", "f16", "bf16"])
def test_dequantize_into_out_matches(mixed_file, name):
    with ecnn.open(mixed_file) as f:
        h = f.get_host(name)
        ref = f.get_tensor(name)
    out = torch.full(h.shape, float("nan"), dtype=ref.dtype)
    res = et.materialize(h, "cpu", out=out)
    assert _same_bits(res, ref) and _same_bits(out, ref)
    out2 = torch.full(h.shape, float("nan"), dtype=ref.dtype)
    res2 = et.dequantize(torch.from_numpy(h.data), h.dtype, h.step, out=out2, row_steps=h.row_steps)  # the device function
    assert _same_bits(res2, ref) and _same_bits(out2, ref)


def test_dequantize_rounds_to_dtype_like_numpy():
    q = torch.arange(-(1 << 15), 1 << 15, 7, dtype=torch.int32)
    for name in ("float16", "bfloat16", "float32", "float64"):
        dt = ecnn.dtypes.get(name)
        for step in (1e-3, 0.37, 3.0e38 / 2**15, 1e-42):
            with np.errstate(over="ignore"):  # the largest products overflow float16 on purpose
                ref = ecnn.quantize.dequantize(q.numpy(), dt, step)
            got = et.dequantize(q, dt, step)
            assert _same_bits(got, et.from_array(ref, dt)), (name, step)


def test_load_file_dtype_casts_floats_only(mixed_file):
    sd = et.load_file(mixed_file, dtype=torch.float16)
    assert sd["f32"].dtype == torch.float16 and sd["bf16"].dtype == torch.float16
    assert sd["ids"].dtype == torch.int64 and sd["mask"].dtype == torch.bool


def test_load_file_from_bytes(mixed_file):
    ref = ecnn.load_file(mixed_file)
    got = et.load_file(mixed_file.read_bytes())
    assert all(_same_bits(got[k], ref[k]) for k in ref)


def test_worker_threads_give_the_same_tensors(tmp_path):
    p = tmp_path / "m.ecnn"
    sd = _mixed_state()
    sd["big"] = torch.randn(40, 1000)
    ecnn.save_file(sd, p, config=EncodeConfig(bits=8, chunk=4096))
    ref = ecnn.load_file(p)
    got = et.load_file(p, workers=2)
    assert list(got) == list(ref)
    assert all(_same_bits(got[k], ref[k]) for k in ref)


@pytest.mark.parametrize("format_minor", [0, 1])
def test_split_decoding_gives_the_same_tensors(tmp_path, monkeypatch, splits, format_minor):
    from ecnn import chunkrun

    p = tmp_path / "m.ecnn"
    sd = _mixed_state()
    sd["big"] = torch.randn(40, 1000)
    sd["rows"] = torch.randn(64, 300) * torch.linspace(0.1, 3, 64)[:, None]
    sd["sparse"] = torch.where(torch.rand(200, 64) < 0.1, torch.randn(200, 64), torch.zeros(200, 64))
    ecnn.save_file(sd, p, config=EncodeConfig(bits=6, chunk=4096, format_minor=format_minor))
    with chunkrun.using(1):
        ref = et.load_file(p)
    monkeypatch.setattr(chunkrun, "MIN_SPLIT_BYTES", 0)
    monkeypatch.setattr(parallel, "LARGE", 20000)  # "big" and "sparse" by chunks, the rest in batches
    monkeypatch.setattr(parallel, "BATCH_BYTES", 3000)
    got = et.load_file(p, workers=3)
    assert len(splits) >= 2 and set(splits) == {2}  # the caller and two pool threads each time
    assert list(got) == list(ref)
    assert all(_same_bits(got[k], ref[k]) for k in ref)
    m = torch.nn.Module()
    for k, v in ref.items():
        m.register_buffer(k.replace(".", "_"), torch.zeros_like(v))
    renamed = tmp_path / "r.ecnn"
    ecnn.save_file({k.replace(".", "_"): v for k, v in sd.items()}, renamed, config=EncodeConfig(bits=6, chunk=4096))
    with chunkrun.using(1):
        want = et.load_file(renamed)
    et.load_into(m, renamed, workers=2)
    assert all(_same_bits(getattr(m, k), want[k]) for k in want)


def test_small_tensors_before_a_large_one_come_out_in_order(tmp_path, monkeypatch, splits):
    from ecnn import chunkrun

    torch.manual_seed(3)
    sd = {}
    for i, shape in enumerate([(30,), (20, 10), (100, 300), (40,), (120, 300), (100, 300), (7,), (3, 3)]):
        sd[f"t{i}"] = torch.randn(*shape)
    p = tmp_path / "m.ecnn"
    ecnn.save_file(sd, p, config=EncodeConfig(bits=6, chunk=4096))
    with chunkrun.using(1):
        ref = et.load_file(p)
    monkeypatch.setattr(chunkrun, "MIN_SPLIT_BYTES", 0)
    monkeypatch.setattr(parallel, "LARGE", 20000)  # t2, t4 and t5 (two in a row) by chunks
    with ecnn.open(p) as f:
        hosts = list(parallel.iter_host(f, list(sd), workers=2))
    assert [h.name for h in hosts] == list(sd)
    for h in hosts:
        got = torch.from_numpy(codec.host_values(h).reshape(h.shape))
        assert _same_bits(got, ref[h.name]), h.name
    assert len(splits) >= 3


def test_damaged_file_raises_format_error(mixed_file):
    data = bytearray(mixed_file.read_bytes())
    data[-3] ^= 0xFF
    with pytest.raises(FormatError):
        et.load_file(bytes(data))


# --- modules ----------------------------------------------------------------


class Net(torch.nn.Module):
    def __init__(self, tie=True):
        super().__init__()
        self.emb = torch.nn.Embedding(50, 16)
        self.conv = torch.nn.Conv1d(16, 16, 3, padding=1)
        self.bn = torch.nn.BatchNorm1d(16)
        self.head = torch.nn.Linear(16, 50, bias=False)
        if tie:
            self.head.weight = self.emb.weight
        self.register_buffer("scale", torch.tensor(2.0))
        self.register_buffer("cache", torch.zeros(4), persistent=False)

    def forward(self, ids):
        x = self.emb(ids).transpose(1, 2)
        x = self.bn(self.conv(x)).transpose(1, 2)
        return self.head(x) * self.scale


def _trained(seed=0):
    torch.manual_seed(seed)
    m = Net()
    with torch.no_grad():
        m.bn.running_mean.uniform_(-1, 1)
        m.bn.running_var.uniform_(0.5, 2)
        m.bn.num_batches_tracked.fill_(7)
        m.scale.fill_(3.0)
    return m.eval()


def test_save_model_stores_tied_weights_once_and_load_into_fills_every_name(tmp_path):
    m = _trained()
    p = tmp_path / "net.ecnn"
    et.save_model(m, p, bits=8)
    keys = ecnn.open(p).keys()
    assert "emb.weight" in keys and "head.weight" not in keys and "cache" not in keys
    fresh = Net()
    fresh.cache.fill_(9)
    res = et.load_into(fresh, p)
    assert res.missing_keys == [] and res.unexpected_keys == []
    assert fresh.head.weight is fresh.emb.weight  # still tied
    ref = ecnn.load_file(p)
    for k, v in fresh.state_dict().items():
        assert _same_bits(v, ref["emb.weight" if k == "head.weight" else k]), k
    assert torch.equal(fresh.cache, torch.full((4,), 9.0))  # non-persistent: untouched
    ids = torch.randint(0, 50, (2, 5))
    a, b = fresh.eval()(ids), m(ids)
    assert (a - b).abs().max() < 0.05 * b.abs().max()


def test_load_into_lossless_is_exact_and_file_with_both_tied_names_loads(tmp_path):
    m = _trained()
    p = tmp_path / "full.ecnn"
    ecnn.save_file(m.state_dict(), p, lossless=True)  # both tied names stored
    fresh = Net()
    assert et.load_into(fresh, p) == ([], [])
    for (k, a), b in zip(m.state_dict().items(), fresh.state_dict().values()):
        assert _same_bits(a, b), k


def test_load_into_converts_to_the_parameter_dtype(tmp_path):
    m = _trained()
    p = tmp_path / "net.ecnn"
    et.save_model(m, p, bits=8)
    half = Net().half()
    et.load_into(half, p)
    ref = ecnn.load_file(p)
    assert half.conv.weight.dtype == torch.float16
    assert torch.equal(half.conv.weight, ref["conv.weight"].half())


def test_load_into_strict_reports_missing_and_unexpected_before_writing(tmp_path):
    m = _trained()
    sd = m.state_dict()
    sd.pop("conv.bias")
    sd["extra"] = torch.ones(3)
    p = tmp_path / "bad.ecnn"
    ecnn.save_file(sd, p, lossless=True)
    fresh = Net()
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    with pytest.raises(RuntimeError, match=r"(?s)Missing key.*conv\.bias.*Unexpected key.*extra"):
        et.load_into(fresh, p)
    assert all(torch.equal(before[k], v) for k, v in fresh.state_dict().items())
    res = et.load_into(fresh, p, strict=False)
    assert res.missing_keys == ["conv.bias"] and res.unexpected_keys == ["extra"]
    assert torch.equal(fresh.conv.weight, m.conv.weight)


def test_load_into_size_mismatch_raises_even_when_not_strict(tmp_path):
    p = tmp_path / "lin.ecnn"
    et.save_model(torch.nn.Linear(4, 3), p)
    with pytest.raises(RuntimeError, match="size mismatch for weight"):
        et.load_into(torch.nn.Linear(5, 3), p, strict=False)


def test_untied_model_loads_file_saved_from_tied_one_only_partly(tmp_path):
    p = tmp_path / "net.ecnn"
    et.save_model(_trained(), p)
    untied = Net(tie=False)
    with pytest.raises(RuntimeError, match="head.weight"):
        et.load_into(untied, p)
    res = et.load_into(untied, p, strict=False)
    assert res.missing_keys == ["head.weight"]


def _on_meta(**kw):
    with torch.device("meta"):
        return Net(**kw)


@pytest.mark.parametrize("save", ["tied-once", "lossless-both-names"])
def test_load_into_meta_module_equals_load_into_a_built_one(tmp_path, save):
    m = _trained()
    p = tmp_path / "net.ecnn"
    if save == "tied-once":
        et.save_model(m, p, bits=8)
    else:
        ecnn.save_file(m.state_dict(), p, lossless=True)
    built, meta = Net(), _on_meta()
    assert meta.conv.weight.is_meta
    assert et.load_into(built, p) == ([], [])
    assert et.load_into(meta, p) == ([], [])
    got = meta.state_dict()
    for k, v in built.state_dict().items():
        if k == "cache":  # non-persistent: not in the file, stays on meta
            assert got[k].is_meta
            continue
        assert got[k].device.type == "cpu" and _same_bits(got[k], v), k
    assert meta.head.weight is meta.emb.weight  # tied weights stay tied
    assert isinstance(meta.conv.weight, torch.nn.Parameter) and meta.conv.weight.requires_grad
    assert not isinstance(meta.scale, torch.nn.Parameter)
    meta.cache = torch.zeros(4)
    ids = torch.randint(0, 50, (2, 5))
    assert torch.equal(meta.eval()(ids), built.eval()(ids))


def test_load_into_meta_keeps_the_meta_dtype_and_requires_grad(tmp_path):
    p = tmp_path / "net.ecnn"
    et.save_model(_trained(), p, bits=8)  # float32
    with torch.device("meta"):
        meta = Net().to(torch.bfloat16)
    meta.conv.weight.requires_grad_(False)
    et.load_into(meta, p)
    ref = ecnn.load_file(p)
    assert meta.conv.weight.dtype == torch.bfloat16 and torch.equal(meta.conv.weight, ref["conv.weight"].bfloat16())
    assert meta.bn.num_batches_tracked.dtype == torch.int64 and int(meta.bn.num_batches_tracked) == 7
    assert not meta.conv.weight.requires_grad and meta.conv.bias.requires_grad
    assert meta.head.weight is meta.emb.weight


def test_load_into_meta_missing_names_fail_under_strict_and_stay_meta_otherwise(tmp_path):
    p = tmp_path / "net.ecnn"
    sd = _trained().state_dict()
    sd.pop("conv.bias")
    ecnn.save_file(sd, p, lossless=True)
    meta = _on_meta()
    with pytest.raises(RuntimeError, match=r"Missing key.*conv\.bias"):
        et.load_into(meta, p)
    assert meta.conv.weight.is_meta  # nothing written
    res = et.load_into(meta, p, strict=False)
    assert res.missing_keys == ["conv.bias"]
    assert meta.conv.bias.is_meta and not meta.conv.weight.is_meta


def test_load_into_assign_flag(tmp_path):
    p = tmp_path / "net.ecnn"
    et.save_model(_trained(), p, bits=8)
    with pytest.raises(RuntimeError, match="cannot copy into meta"):
        et.load_into(_on_meta(), p, assign=False)
    fresh = Net()
    old = fresh.conv.weight
    et.load_into(fresh, p, assign=True)
    assert fresh.conv.weight is not old and fresh.head.weight is fresh.emb.weight
    assert _same_bits(fresh.conv.weight, ecnn.load_file(p)["conv.weight"])
    kept = Net()
    old = kept.conv.weight
    et.load_into(kept, p)  # default on a built module: in place
    assert kept.conv.weight is old


class _WithComputed(torch.nn.Module):
    """A module whose state dict holds an entry that is neither a parameter nor a buffer."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 2)

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        destination[prefix + "computed"] = torch.empty(4, device="meta")


def test_load_into_meta_entry_with_no_slot_fails_before_writing(tmp_path):
    p = tmp_path / "m.ecnn"
    sd = {"lin.weight": torch.ones(2, 3), "lin.bias": torch.ones(2), "computed": torch.ones(4)}
    ecnn.save_file(sd, p, lossless=True)
    with torch.device("meta"):
        m = _WithComputed()
    with pytest.raises(RuntimeError, match="cannot assign 'computed'"):
        et.load_into(m, p)
    assert m.lin.weight.is_meta


# --- CUDA -------------------------------------------------------------------


@CUDA
@pytest.mark.parametrize("config", [EncodeConfig(bits=8), EncodeConfig(bits=12), EncodeConfig(lossless=True)], ids=str)
def test_cuda_load_file_is_bit_identical(tmp_path, config):
    p = tmp_path / "m.ecnn"
    ecnn.save_file(_mixed_state(), p, config=config)
    ref = ecnn.load_file(p)
    got = et.load_file(p, device="cuda")
    for k in ref:
        assert got[k].device.type == "cuda"
        assert _same_bits(got[k], ref[k]), k
    half = et.load_file(p, device=torch.device("cuda"), dtype=torch.float16)
    assert half["f32"].dtype == torch.float16 and torch.equal(half["f32"].cpu(), ref["f32"].half())


@CUDA
def test_cuda_load_into(tmp_path):
    m = _trained()
    p = tmp_path / "net.ecnn"
    et.save_model(m, p, bits=8)
    fresh = Net().cuda()
    et.load_into(fresh, p)
    ref = ecnn.load_file(p)
    assert _same_bits(fresh.conv.weight, ref["conv.weight"])
    assert fresh.head.weight is fresh.emb.weight


@CUDA
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_cuda_load_into_meta_module(tmp_path, dtype):
    p = tmp_path / "net.ecnn"
    et.save_model(_trained(), p, bits=8)
    with torch.device("meta"):
        meta = Net().to(dtype)
    et.load_into(meta, p, device="cuda")
    ref = ecnn.load_file(p)
    assert meta.conv.weight.device.type == "cuda" and meta.conv.weight.dtype == dtype
    assert _same_bits(meta.conv.weight, ref["conv.weight"].to(dtype))
    assert meta.head.weight is meta.emb.weight
    built = Net().cuda().to(dtype)
    et.load_into(built, p)
    for k, v in built.state_dict().items():
        if k != "cache":
            assert _same_bits(meta.state_dict()[k], v), k
