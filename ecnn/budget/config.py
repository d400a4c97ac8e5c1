"""Options and results of :func:`ecnn.budget.compress`, and the checks of what callers pass.

:class:`BudgetConfig` holds the search's options; :class:`CompressResult` and
:class:`SweepPoint` what it made. :func:`parse_size` and
:func:`load_callable` turn the command line's strings into a size and a
function.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ecnn.errors import InvalidOption

NO_CALIBRATION = (
    "no calibration data (--calib): each tensor's error is weighted by a proxy (its relative squared error), "
    "and the tensors plain pack keeps exact (1-D tensors: biases, norms, BatchNorm statistics; integer buffers) "
    "stay exact; every tensor may still take the plain --bits N grid, and the plain file is kept when nothing "
    "better fits. To weight errors by their effect on the model's output, give --calib module:function, a "
    "function taking the weights {name: tensor} and returning the model's output on a batch of typical inputs."
)
Progress = Callable[[str, int, int], None]  # (stage, done, total)
SENSITIVITIES = ("auto", "output", "fisher", "weights")
COMPENSATE_MIN_ROWS = 2  # input rows (e.g. tokens) per input feature that compensation needs
COMPENSATE_MAX_IN = 8192  # layers with more inputs are not compensated (the moments are in**2 float64s)


@dataclass(frozen=True)
class BudgetConfig:
    """How :func:`compress` searches. None of these fields shapes the bitstream
    directly; they change which steps are chosen (and so the file).

    Attributes:
        steps_per_octave: candidate steps per factor of two.
        max_bits: the finest candidate step is ``absmax / 2**max_bits``.
        min_ndim: float tensors with fewer dimensions are stored exactly; with
            1 (the default) and calibration data, biases and norms are allocated
            too (without calibration data, only what plain ``pack`` quantizes is).
        exact: glob patterns of tensor names to keep bit-exact.
        sensitivity: ``"output"`` (Gauss-Newton diagonal of the mean squared
            output error on the calibration batch), ``"fisher"`` (Fisher
            diagonal, the output's last dimension being logits), ``"weights"``
            (each tensor's relative squared weight error,
            :func:`ecnn.budget.weight_proxy`), or ``"auto"`` (``"output"`` with
            calibration data, else ``"weights"``).
        probes: random output probes (backward passes) for the sensitivity.
        floor: a tensor's mean sensitivity is raised to at least ``floor``
            times the median over tensors, so that a tensor the calibration
            batch does not exercise is not zeroed. Within a matrix, rows the
            batch does not reach share an embedding table's sensitivity evenly
            with the rows it reaches (tokens absent from the batch); so do a
            matrix's when at least half its rows are unreached.
        rate_sample: tensors with more elements are rated (and their distortion
            measured) on evenly spaced rows totalling about this many elements,
            scaled up; the real file size is always checked by coding. On
            all-MiniLM-L6-v2 the search's rate of a chosen step is within 2.5%
            of the coded size from 1 bit a weight up, and their sums within
            0.4% (bench/RESULTS.md).
        rtol: ``max_metric_drop`` search stops when the largest failing and the
            smallest passing allocation differ by less than this fraction of size.
        strengths: rate-distortion optimized quantization strengths tried at
            each step (0: round to nearest; see :func:`quantize_rdo`).
        rows: also try, for matrices whose sensitivity varies between rows, a
            step per row (the ``uniform_rows`` representation): rows get steps
            finer than the tensor's in proportion to ``1 / sqrt(mean row
            sensitivity)`` (the high-rate optimum), the least sensitive 5% of
            rows keeping the tensor's step; the allocation picks it where the
            predicted distortion falls. Rounds to nearest. Off by default: on
            the MNIST CNN it was never picked, and on all-MiniLM-L6-v2 it was
            picked for about 30 matrices and lowered the real metric (minimum
            embedding cosine 0.980 instead of 0.985 at 10 MB, 0.989 instead of
            0.993 at 12 MB).
        compensate: for ``nn.Linear`` weights of a module with calibration
            data, also try error-compensated rounding (:func:`quantize_compensated`,
            the OPTQ/GPTQ column update) at every step, with the layer's input
            second moments on the calibration batch; tensors taking it are
            rated and their distortion measured with those moments. The tables
            of ``nn.Embedding`` layers get it along their rows, with the
            second moments of the probes' output gradients summed per looked-up
            row (:mod:`ecnn.budget.sensitivity`); on all-MiniLM-L6-v2 the word
            table rounded so at a step of 0.0195 (3.56 bits a value) gave
            0.74x the sentence-embedding error of rounding to nearest, at the
            same rate, on sentences outside the calibration batch. Weights
            that more than one module holds (tied weights) are not
            compensated. Layers with more than :data:`COMPENSATE_MAX_IN`
            inputs (table columns), or whose calibration batch has fewer than
            :data:`COMPENSATE_MIN_ROWS` input rows (samples, or tokens for a
            sequence model; for a table, looked-up rows times probes) per
            input, are not compensated: on
            all-MiniLM-L6-v2, 16 calibration sentences (about 240 token rows
            for 384 and 1536 inputs) gave no consistent gain; with 272 the
            mean cosine rose at 10-12 MB (bench/RESULTS.md).
        damp: the compensation's ridge: the input second-moment matrix gets
            ``damp`` times its mean diagonal added to its diagonal.
        seed: seed of the random probes.
    """

    steps_per_octave: int = 4
    max_bits: int = 12
    min_ndim: int = 1
    exact: tuple[str, ...] = ()
    sensitivity: str = "auto"
    probes: int = 16
    floor: float = 1e-3
    rate_sample: int = 1 << 16
    strengths: tuple[float, ...] = (0.0, 0.12)
    rtol: float = 0.01
    seed: int = 0
    rows: bool = False
    compensate: bool = True
    damp: float = 0.01
    version: int = field(default=1, repr=False)

    def __post_init__(self):
        if isinstance(self.exact, str):
            object.__setattr__(self, "exact", (self.exact,))
        if type(self.steps_per_octave) is not int or not 1 <= self.steps_per_octave <= 16:
            raise InvalidOption(f"steps_per_octave must be an integer in [1, 16], got {self.steps_per_octave!r}")
        if type(self.max_bits) is not int or not 1 <= self.max_bits <= 20:
            raise InvalidOption(f"max_bits must be an integer in [1, 20], got {self.max_bits!r}")
        if self.sensitivity not in SENSITIVITIES:
            raise InvalidOption(f"sensitivity must be one of {SENSITIVITIES}, got {self.sensitivity!r}")
        if type(self.probes) is not int or self.probes < 1:
            raise InvalidOption(f"probes must be a positive integer, got {self.probes!r}")
        if not 0 <= self.floor < 1:
            raise InvalidOption(f"floor must be in [0, 1), got {self.floor!r}")
        if self.rate_sample < 4096:
            raise InvalidOption(f"rate_sample must be at least 4096, got {self.rate_sample!r}")
        object.__setattr__(self, "strengths", tuple(float(v) for v in self.strengths))
        if not self.strengths or any(not 0 <= v < 10 for v in self.strengths):
            raise InvalidOption(f"strengths must be numbers in [0, 10), got {self.strengths!r}")
        if not 0 < self.damp < 1e3:
            raise InvalidOption(f"damp must be in (0, 1000), got {self.damp!r}")
        if not 0 < self.rtol < 1:
            raise InvalidOption(f"rtol must be in (0, 1), got {self.rtol!r}")


@dataclass(frozen=True)
class SweepPoint:
    """One evaluated allocation: its file size, predicted distortion and metric (None if not evaluated)."""

    size: int
    distortion: float
    metric: float | None


@dataclass(frozen=True)
class CompressResult:
    """What :func:`compress` made.

    Attributes:
        data: the file's bytes.
        size: ``len(data)``; with ``path`` given, the bytes written there.
        steps: the chosen step of each allocated tensor.
        metric: the evaluated metric of the file's weights (None without ``evaluate``).
        base_metric: the metric of the original weights (None without ``evaluate``).
        distortion: the allocation's predicted distortion (sum over tensors).
        sweep: the allocations evaluated or coded during the search, by size.
        tensors: per allocated tensor: ``{"name", "numel", "step", "strength", "rows",
            "compensated", "bytes", "estimate", "sensitivity"}`` (``rows``: a step
            per row, ``step`` being the tensor's; ``compensated``: rounded by
            :func:`quantize_compensated`); ``bits``: plain ``pack --bits`` grid
            (None otherwise); ``exact``: stored bit-exact); ``bytes`` is the coded
            payload, ``estimate`` the search's rate for it.
        plain_bits: N when the file is exactly plain ``pack --bits N`` (the
            allocation found nothing better within the target), else None.
        calibrated: whether calibration data weighted the errors (else a proxy did:
            each tensor's relative squared error, tensors plain ``pack`` keeps
            exact kept exact).
    """

    data: bytes
    size: int
    steps: dict[str, float]
    metric: float | None
    base_metric: float | None
    distortion: float
    sweep: tuple[SweepPoint, ...]
    tensors: tuple[dict, ...]
    plain_bits: int | None = None
    calibrated: bool = False

    @property
    def drop(self) -> float | None:
        """``base_metric - metric``, or None."""
        return None if self.metric is None or self.base_metric is None else self.base_metric - self.metric


# --- checks of the budget arguments ---------------------------------------------


def check_target(target_bytes) -> int | None:
    """``target_bytes`` checked: None or a positive integer."""
    if target_bytes is None:
        return None
    if isinstance(target_bytes, bool) or not isinstance(target_bytes, (int, np.integer)) or target_bytes <= 0:
        raise InvalidOption(f"target_bytes must be a positive integer, got {target_bytes!r}")
    return int(target_bytes)


def check_drop(max_metric_drop, evaluate) -> float | None:
    """``max_metric_drop`` checked: None, or a finite number >= 0 given with ``evaluate``."""
    if max_metric_drop is None:
        return None
    if evaluate is None:
        raise InvalidOption("max_metric_drop needs an evaluate function")
    if isinstance(max_metric_drop, bool) or not (
        isinstance(max_metric_drop, (int, float)) and math.isfinite(max_metric_drop) and max_metric_drop >= 0
    ):
        raise InvalidOption(f"max_metric_drop must be a finite number >= 0, got {max_metric_drop!r}")
    return float(max_metric_drop)


# --- command-line helpers ---------------------------------------------------------

_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "kib": 1 << 10,
    "m": 1000**2, "mb": 1000**2, "mib": 1 << 20,
    "g": 1000**3, "gb": 1000**3, "gib": 1 << 30,
}  # fmt: skip


def parse_size(text: str) -> int:
    """A file size such as ``2MB`` (10**6 bytes), ``1.5MiB`` (2**20), ``800kB`` or ``123456``.

    Raises:
        InvalidOption: not a positive size.
    """
    t = str(text).strip().lower().replace(" ", "").replace("_", "")
    num = t.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = t[len(num) :]
    try:
        value = float(num)
    except ValueError:
        value = -1.0
    if unit not in _SIZE_UNITS or not (math.isfinite(value) and value > 0) or value * _SIZE_UNITS[unit] < 1:
        raise InvalidOption(f"expected a size such as 2MB, 1.5MiB or 800000, got {text!r}")
    return int(value * _SIZE_UNITS[unit])


def load_callable(spec: str) -> Callable:
    """``module:function`` (an importable module or a path to a ``.py`` file) to the function.

    This runs the module's code: pass only code you trust.

    Raises:
        InvalidOption: malformed spec, or the module or function cannot be found.
    """
    import importlib
    import importlib.util

    if not isinstance(spec, str) or ":" not in spec:
        raise InvalidOption(f"expected module:function, got {spec!r}")
    mod_name, _, fn_name = spec.rpartition(":")
    try:
        if mod_name.endswith(".py") or os.sep in mod_name:
            name = "ecnn_user_" + os.path.splitext(os.path.basename(mod_name))[0]
            s = importlib.util.spec_from_file_location(name, mod_name)
            if s is None or s.loader is None:
                raise ImportError(mod_name)
            mod = importlib.util.module_from_spec(s)
            s.loader.exec_module(mod)
        else:
            mod = importlib.import_module(mod_name)
    except (ImportError, OSError) as e:
        raise InvalidOption(f"cannot import {mod_name!r}: {e}") from None
    fn = getattr(mod, fn_name, None)
    if not callable(fn):
        raise InvalidOption(f"{mod_name!r} has no function {fn_name!r}")
    return fn
