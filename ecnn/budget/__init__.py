"""Compress to a budget: rate-distortion allocation of quantization steps across tensors.

:func:`compress` chooses one quantization step per tensor so that the file
meets a size target (``target_bytes``) or, given an evaluation function, is
the smallest file whose metric stays within ``max_metric_drop`` of the float
model's. The steps go into the file through ``EncodeConfig.steps`` (the
``uniform`` representation, spec/CODING.md), so nothing here changes the format.

How the steps are chosen (Lagrangian rate-distortion optimization):

0. Which tensors are allocated. Without calibration data, exactly those plain
   ``pack`` quantizes (:func:`ecnn.codec.wants_quantization` with ``--bits``'s
   rule): 1-D tensors (biases, norms, BatchNorm statistics) and integer
   buffers stay exact, and each tensor's error is weighted by a proxy, one over
   its squared norm (:func:`weight_proxy`: the sum of the tensors' relative
   errors is minimized). With calibration data, every float tensor with at
   least ``BudgetConfig.min_ndim`` dimensions except running statistics
   (:func:`running_statistics`, always exact); the tensors plain ``pack``
   keeps exact also get an exact candidate.
1. Every allocated tensor gets the grids of plain ``pack --bits N``
   (:data:`PLAIN_BITS`, per-row steps, exactly the records ``pack`` writes) and
   candidate steps on a geometric grid, ``absmax / L`` with ``L = 2**(k / steps_per_octave)``
   from ``L = 1/2`` (every symbol is zero) to ``L = 2**max_bits``. A tensor
   that already lies on a uniform grid (weights trained with ``ecnn.train``
   and converted, or decoded from a file; :func:`grid_step`) also gets that
   grid's own step, which keeps it exactly, and multiples of it
   (:data:`GRID_MULTIPLES`) in place of the finer geometric steps.
2. For each candidate the tensor (or, for large tensors, an evenly spaced
   sample of its rows) is quantized exactly as the codec does it; its rate is
   a cheap proxy, the order-0 code length of the symbols plus table costs,
   calibrated per tensor and rounding against the codec's own size estimate
   (:func:`ecnn.rate.estimate_bytes`) at a few anchor steps, and its
   distortion is the squared error weighted by the tensor's
   sensitivity: ``sum_j h_j (w_j - Q(w_j))**2``. ``h`` is the diagonal of the
   Gauss-Newton matrix of the output error on a calibration batch (estimated
   with random output probes), the diagonal of the Fisher information when the
   output is a batch of logits, or the proxy without calibration data (then
   every candidate rounds to nearest).
   With a module and calibration data, the weight of each ``nn.Linear`` also
   gets error-compensated candidates (:func:`quantize_compensated`: each
   column's rounding error is pushed onto the columns not yet rounded, as in
   OPTQ/GPTQ), and all of that tensor's candidates are measured by the layer's
   output error, ``sum_i g_i e_i H e_i^T`` with ``H`` the second moment of
   the layer's inputs on the batch and ``g_i`` the row's sensitivity per unit
   of input energy. The table of each ``nn.Embedding`` is compensated along
   its rows the same way, ``H`` then being the second moment of the
   gradients of the looked-up rows' outputs (summed per row), so that a row's
   error is pushed into directions the layers after the table are blind to.
3. For a Lagrange multiplier ``lam`` each tensor takes the candidate
   minimizing ``D + lam * R``. Sweeping ``lam`` from infinity to 0 moves one
   tensor at a time one point along the lower convex hull of its (rate,
   distortion) candidates, the one with the most distortion removed per byte:
   a path of allocations whose size grows and whose distortion falls
   monotonically. ``target_bytes`` picks the largest allocation on the path
   whose real file (tensors coded one by one, header included) fits, found by
   coding a few allocations that the corrected rates predict to fit;
   ``max_metric_drop`` bisects the path with the caller's ``evaluate``.
4. With ``target_bytes`` alone, the largest plain ``--bits N`` file that fits
   is compared with the allocation by the same objective (by the metric, given
   ``evaluate``), and kept when it is no worse (``CompressResult.plain_bits``):
   so at the size of a plain ``--bits N`` file the result is never worse than
   that file by the objective.

Everything is deterministic: fixed probe seeds, ties broken by tensor order.
Importing this module imports neither torch nor matplotlib.

Example:
    >>> import torch, ecnn
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4))
    >>> res = ecnn.compress(model, target_bytes=3000, calibration=torch.randn(64, 32))
    >>> res.size <= 3000
    True

The package, one job per module (each imports, at run time, only those above it):

- ``config``: :class:`BudgetConfig`, the results, checks of the arguments, :func:`parse_size`.
- ``rate_proxy``: the search's cheap size proxy (order-0 code length plus tables).
- ``rounding``: rate-distortion optimized and error-compensated rounding.
- ``candidates``: each tensor's candidate steps, their rates and distortions, their hull.
- ``sensitivity``: Gauss-Newton / Fisher diagonals and input moments on a calibration batch.
- ``model``: the model's state, and candidate weights put in for evaluation.
- ``summary``: the JSON summary stored in the file.
- ``search``: the Lagrangian path, the real size of an allocation, bisection on the metric.
- ``allocate``: :func:`plan`, :class:`Plan` and :func:`compress`.
- ``measured``: models run without gradients (ONNX Runtime): sensitivities measured on the outputs,
  :func:`ecnn.budget.measured.compress_onnx`.
"""

from ecnn.budget.allocate import RUNNING_STATISTICS, Plan, compress, plan, running_statistics, weight_proxy
from ecnn.budget.candidates import PLAIN_BITS, ANCHOR_BITS, COMPENSATE_CACHE, GRID_LEVELS, GRID_MULTIPLES, SMALL, grid_step
from ecnn.budget.config import (
    NO_CALIBRATION,
    COMPENSATE_MAX_IN,
    COMPENSATE_MIN_ROWS,
    SENSITIVITIES,
    BudgetConfig,
    CompressResult,
    Progress,
    SweepPoint,
    load_callable,
    parse_size,
)
from ecnn.budget.rate_proxy import TABLE_BITS
from ecnn.budget.rounding import COMPENSATE_BLOCK, quantize_compensated, quantize_rdo
from ecnn.budget.search import FIT_PROBES, FIT_RTOL
from ecnn.budget.summary import METADATA_KEY, SUMMARY_CHARS, SUMMARY_MIN, SUMMARY_SHARE

__all__ = [
    "compress",
    "NO_CALIBRATION",
    "PLAIN_BITS",
    "RUNNING_STATISTICS",
    "running_statistics",
    "weight_proxy",
    "plan",
    "Plan",
    "BudgetConfig",
    "CompressResult",
    "SweepPoint",
    "Progress",
    "parse_size",
    "load_callable",
    "grid_step",
    "quantize_rdo",
    "quantize_compensated",
    "METADATA_KEY",
    "SENSITIVITIES",
    "SUMMARY_CHARS",
    "SUMMARY_SHARE",
    "SUMMARY_MIN",
    "TABLE_BITS",
    "SMALL",
    "ANCHOR_BITS",
    "FIT_PROBES",
    "FIT_RTOL",
    "GRID_MULTIPLES",
    "GRID_LEVELS",
    "COMPENSATE_BLOCK",
    "COMPENSATE_CACHE",
    "COMPENSATE_MIN_ROWS",
    "COMPENSATE_MAX_IN",
]
