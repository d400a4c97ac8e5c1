"""The demo behind ``bash tools/demo.sh``: train a small classifier for a few
seconds, then pack its weights with the ``ecnn`` command at 8 bits, 4 bits and
losslessly, show the size table, unpack, and compare the decoded model's
accuracy and weight error with the original.

The task is synthetic (no downloads): 16-dimensional points labelled by a
fixed random teacher network into 10 classes.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

import ecnn
from ecnn.cli import main as ecnn_cli


def make_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1234)  # the teacher is the same for every split
    teacher = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.Tanh(), torch.nn.Linear(64, 10))
    with torch.no_grad():
        for p in teacher.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    x = torch.randn(n, 16, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        y = teacher(x).argmax(1)
    return x, y


def make_model() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Linear(16, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10)
    )


def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item() * 100


def train(seconds: float) -> tuple[torch.nn.Module, tuple]:
    torch.manual_seed(0)
    xtr, ytr = make_data(20_000, seed=1)
    test = make_data(5_000, seed=2)
    model = make_model()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    t0, epoch = time.time(), 0
    while time.time() - t0 < seconds:
        perm = torch.randperm(len(xtr))
        for i in range(0, len(xtr), 256):
            idx = perm[i : i + 256]
            loss = torch.nn.functional.cross_entropy(model(xtr[idx]), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        epoch += 1
    print(f"trained {sum(p.numel() for p in model.parameters()):,} parameters for {epoch} epochs: test accuracy {accuracy(model, *test):.2f}%")
    return model, test


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="demo-out", help="folder for the files (default: demo-out)")
    ap.add_argument("--seconds", type=float, default=8.0, help="training time (default: 8)")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)

    model, test = train(a.seconds)
    src = out / "model.safetensors"
    save_file(model.state_dict(), src)
    print(f"\nsaved {src} ({src.stat().st_size:,} bytes)\n")

    for args in (["--bits", "8"], ["--bits", "4"], ["--lossless"]):
        name = out / f"model-{args[-1].strip('-')}.ecnn"
        print("$ ecnn pack", src, "-o", name, *args, "--force")
        ecnn_cli(["pack", str(src), "-o", str(name), *args, "--force"])
    print(f"\n$ ecnn info {out / 'model-8.ecnn'}")
    ecnn_cli(["info", str(out / "model-8.ecnn")])

    print("\ndecoded models against the original:")
    original = model.state_dict()
    for tag in ("8", "4", "lossless"):
        path = out / f"model-{tag}.ecnn"
        back = out / f"model-{tag}.safetensors"
        ecnn_cli(["unpack", str(path), "-o", str(back), "--force", "-q"])
        sd = load_file(back)
        decoded = make_model()
        decoded.load_state_dict(sd)
        with ecnn.open(path) as f:
            worst = 0.0
            for name, t in original.items():
                err = (sd[name].double() - t.double()).abs().max().item() if t.numel() else 0.0
                step = f.info(name).step
                worst = max(worst, err / (step / 2)) if step else worst
                if step is None:
                    assert err == 0.0, name
        size = path.stat().st_size
        bound = f"max error {worst:.4f} x step/2" if tag != "lossless" else "bit-exact"
        print(
            f"  {tag:>8}: {size:>8,} bytes ({src.stat().st_size / size:5.2f}x smaller), "
            f"test accuracy {accuracy(decoded, *test):.2f}%, {bound}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
