"""Where the stages meet: tensors to records and payloads, and back.

A tensor's record has a representation (``repr``, one of :data:`ecnn.repr.REPRS`)
saying how its values become integer symbol streams, and one descriptor per
stream saying how the stream is coded (spec/CODING.md). The encoder tries the
representations that apply and keeps the smallest payload.

Every loader decodes through this module, to values (:func:`decode_tensor`) or,
for quantized tensors, to symbols that are reconstructed on the target device
(:func:`decode_host`, :func:`host_values`).
"""

from __future__ import annotations

import fnmatch
import logging
from dataclasses import dataclass

import msgpack
import numpy as np

from ecnn import dtypes, quantize, repr as reprs
from ecnn.coder import ctx
from ecnn.coder.registry import coder_minor
from ecnn.config import EncodeConfig
from ecnn.container.reader import TensorRecord
from ecnn.dtypes import DType
from ecnn.dtypes import contiguous as _contig
from ecnn.errors import InvalidField, InvalidOption, UnknownField, UnsupportedCoding
from ecnn.repr import raw, uniform

log = logging.getLogger(__name__)


# --- encoding ---------------------------------------------------------------


def _exact(arr: np.ndarray, dt: DType, cfg: EncodeConfig, own: bool = True) -> list:
    """Candidates for a tensor stored exactly, in the order that breaks ties: raw, byte
    planes, with ``own`` the type's own (integers, or a float codebook), and ``fields``.
    Unless the effort policy says ``planes_with_fields``, matrices where ``fields``
    applies skip the byte planes, which seldom win there. ``fields`` is built first
    where it applies, and the others are told its cost (a bound they may give up at)."""
    fields_ok = reprs.fields.applies(dt) and cfg.format_minor >= 1
    names = ["raw"]
    if cfg.policy.planes_with_fields or arr.ndim < 2 or not fields_ok:
        names.append("planes")
    if own:
        names.append("int" if not dt.is_float else "codebook")
    names.append("fields")
    got = {"fields": reprs.REPRS["fields"].encode(arr, dt, cfg)}
    bound = cost(got["fields"]) if got["fields"] is not None else None
    for n in names[:-1]:
        got[n] = reprs.REPRS[n].encode(arr, dt, cfg, bound=bound)
    return [got[n] for n in names if got[n] is not None]


def cost(cand) -> int:
    """Bytes a candidate adds to the file: its payload plus its header entries."""
    rep, descs, payload = cand
    return len(payload) + len(msgpack.packb(rep)) + len(msgpack.packb(descs))


def _smallest(cands):
    return min(cands, key=cost)


def _record(name: str, arr: np.ndarray, dt: DType, cand) -> tuple[dict, bytes]:
    rep, descs, payload = cand
    return {"name": name, "dtype": dt.name, "shape": [int(s) for s in arr.shape], "repr": rep, "streams": descs}, payload


def encode_tensor(name: str, arr: np.ndarray, dt: DType, cfg: EncodeConfig) -> tuple[dict, bytes]:
    """Encode one tensor (numpy storage array) into a record and its payload.

    The record lacks ``offset``, ``length`` and ``crc32``; the container fills them.
    """
    arr = _contig(arr)
    if arr.dtype != dt.storage:
        raise InvalidOption(f"tensor {name!r}: array dtype {arr.dtype} does not match {dt.name}")
    if arr.size == 0:
        cand = raw.encode(arr)
    elif dt.is_float and wants_quantization(name, arr, dt, cfg):
        fixed = cfg.step_for(name)
        step = quantize.check_step(fixed) if fixed is not None else quantize.step_for_bits(arr, dt, cfg.bits)
        per_row = fixed is None and cfg.per_row and arr.ndim >= 2
        try:
            cand = reprs.REPRS["uniform_rows" if per_row else "uniform"].encode(arr, dt, cfg, step)
        except InvalidOption as e:
            log.warning("tensor %r kept exact: %s", name, e)
            cand = _smallest(_exact(arr, dt, cfg, own=False))
    else:
        cand = _smallest(_exact(arr, dt, cfg))
    return _record(name, arr, dt, cand)


def wants_quantization(name: str, arr: np.ndarray, dt: DType, cfg: EncodeConfig) -> bool:
    """Whether the config quantizes this tensor (others are stored exactly)."""
    if not cfg.quantizes or not quantize.quantizable(dt):
        return False
    if any(fnmatch.fnmatchcase(name, p) for p in cfg.exact):
        return False
    if name in dict(cfg.steps):
        return True  # an explicit per-tensor step overrides the dimension rule
    return arr.ndim >= cfg.min_ndim and (cfg.bits is not None or cfg.step is not None)


def encode_quantized(
    name: str,
    dt: DType,
    shape,
    q: np.ndarray,
    step: float,
    row_codes: np.ndarray | None = None,
    config: EncodeConfig | None = None,
) -> tuple[dict, bytes]:
    """Encode a tensor whose quantization symbols are already chosen.

    For callers that pick the symbols themselves (a rate-distortion search),
    instead of letting :func:`encode_tensor` round to nearest. The record and
    payload are those :func:`encode_tensor` writes for a tensor that quantizes
    to ``q`` (and, for ``uniform_rows``, to ``row_codes``), byte for byte.

    Args:
        name: the tensor's name.
        dt: its dtype (a float type).
        shape: its shape.
        q: the integer symbols, ``prod(shape)`` of them in C order.
        step: the tensor's step (stored as float32).
        row_codes: ``None`` for the ``uniform`` representation; else one row
            step code per row (first dimension) for ``uniform_rows``
            (spec/CODING.md).
        config: ``chunk``, ``format_minor`` and ``effort`` are used.

    Returns:
        ``(record, payload)``; the record lacks ``offset``, ``length`` and
        ``crc32``, which the container fills.

    Raises:
        InvalidOption: a non-float dtype, symbols or row codes that do not
            fit the shape or the representation's range, or a bad step.
    """
    cfg = EncodeConfig() if config is None else config
    shape = [int(s) for s in shape]
    numel = int(np.prod(shape, dtype=np.int64))
    q = np.asarray(q)
    if not quantize.quantizable(dt):
        raise InvalidOption(f"tensor {name!r}: {dt.name} cannot be stored quantized")
    if q.dtype.kind not in "iu" or q.size != numel or numel == 0:
        raise InvalidOption(f"tensor {name!r}: expected {numel} integer symbols (at least one), got {q.size} of {q.dtype}")
    m = quantize.qmax(dt)
    if int(q.min()) < -m or int(q.max()) > m:
        raise InvalidOption(f"tensor {name!r}: symbols outside [{-m}, {m}]")
    step = quantize.check_step(step)
    if row_codes is not None:
        codes = np.asarray(row_codes)
        if not shape or codes.dtype.kind not in "iu" or codes.shape != (shape[0],) or not 0 <= int(codes.min()) <= int(codes.max()) <= quantize.MAX_ROW_CODE:
            raise InvalidOption(f"tensor {name!r}: uniform_rows needs one row code in [0, {quantize.MAX_ROW_CODE}] per row (first dimension)")
        row_codes = codes
    rows = shape[0] if len(shape) >= 2 else None
    rep, descs, payload = uniform.encode_symbols(q, step, cfg, rows, row_codes)
    return {"name": name, "dtype": dt.name, "shape": shape, "repr": rep, "streams": descs}, payload


def minor_version(records: list[dict], payloads: list | None = None) -> int:
    """The lowest Format_Minor whose features cover every record (spec/FORMAT.md section 11).

    With the ``payloads``, a ``ctx`` stream counts with the version of its model
    (model 5 is of 1.2); without, with the version of the coder.
    """
    minor = 0
    for i, rec in enumerate(records):
        minor = max(minor, reprs.REPRS[rec["repr"]["kind"]].minor)
        pos = 0
        for st in rec["streams"]:
            minor = max(minor, coder_minor(st["coder"]))
            if payloads is not None:
                if st["coder"] == "ctx":
                    minor = max(minor, ctx.model_minor(memoryview(payloads[i])[pos : pos + st["length"]]))
                pos += st["length"]
    return minor


# --- validation -------------------------------------------------------------


def validate_record(rec: TensorRecord) -> None:
    """Check a record's representation and streams before decoding anything.

    Raises:
        UnsupportedCoding, UnknownField, InvalidField, LimitExceeded.
    """
    dt = dtypes.get(rec.dtype)
    if any(type(k) is not str for k in rec.repr):
        raise InvalidField(f"tensor {rec.name!r}: repr keys must be strings")
    try:
        rep = reprs.get(rec.repr.get("kind"))
    except UnsupportedCoding as e:
        raise type(e)(f"tensor {rec.name!r}: {e}") from None
    extra = {k for k in rec.repr if k not in rep.keys and not k.startswith("_")}
    if extra:
        raise UnknownField(f"tensor {rec.name!r}: unknown repr field(s) {sorted(extra)}")
    rep.validate(rec, dt)


# --- decoding ---------------------------------------------------------------


def decode_tensor(rec: TensorRecord, payload) -> np.ndarray:
    """Decode a validated record's CRC-checked payload into its numpy storage array."""
    return reprs.REPRS[rec.repr["kind"]].decode(rec, payload, dtypes.get(rec.dtype))


@dataclass(frozen=True)
class HostTensor:
    """One decoded tensor on the host, before it reaches its runtime.

    Attributes:
        name: tensor name.
        dtype: the tensor's element type.
        shape: its shape.
        data: the storage array (``step is None``) or the quantized symbols, in
            the narrowest integer type that holds them (int8 for 8 bits or fewer).
        step: the float32 quantization step, or None for exactly stored tensors.
        row_steps: for per-row quantization, the step of each row (float32, or
            float64 for float64 tensors); None otherwise.
    """

    name: str
    dtype: DType
    shape: tuple[int, ...]
    data: np.ndarray
    step: float | None
    row_steps: np.ndarray | None = None

    @property
    def nbytes(self) -> int:
        return self.data.nbytes


def _symbolic(rec: TensorRecord) -> bool:
    return reprs.REPRS[rec.repr["kind"]].quantized and rec.numel > 0


def host_dtype(rec: TensorRecord, head=None) -> tuple[np.dtype, bool]:
    """The dtype :func:`decode_host` gives a tensor's data, and whether it may narrow after decoding.

    Args:
        rec: a validated record.
        head: the first bytes of its last stream (unchecked), which for some
            coders tell the symbols' range.
    """
    if not _symbolic(rec):
        return dtypes.get(rec.dtype).storage, False
    sym = reprs.REPRS[rec.repr["kind"]].symbol_dtype(rec, head)
    return sym, sym.itemsize > 1


def symbol_head(rec: TensorRecord, payload) -> memoryview:
    """The start of a record's last stream in its payload, enough for :func:`host_dtype`."""
    start = rec.length - rec.streams[-1]["length"] if rec.streams else rec.length
    return memoryview(payload)[start : start + 64]


def decode_host(rec: TensorRecord, payload) -> HostTensor:
    """Decode a tensor for a loader: the symbols of a quantized tensor, the storage array otherwise.

    Args:
        rec: a validated record.
        payload: its CRC-checked payload.

    Raises:
        FormatError: a subclass naming the check the payload failed.
    """
    dt = dtypes.get(rec.dtype)
    if not _symbolic(rec):
        return HostTensor(rec.name, dt, rec.shape, decode_tensor(rec, payload), None)
    s = reprs.REPRS[rec.repr["kind"]].symbols(rec, payload, dt)
    return HostTensor(rec.name, dt, rec.shape, s.q, s.step, s.row_steps)


def host_values(h: HostTensor) -> np.ndarray:
    """The storage array of a host tensor (the numpy reference for the device path)."""
    if h.step is None:
        return h.data
    return uniform.values(reprs.Symbols(h.data, h.step, h.row_steps), h.dtype)
