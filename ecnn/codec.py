"""Where the stages meet: tensors to records and payloads, and back.

A tensor's record has a representation (``repr``) saying how its values become
integer symbol streams, and one descriptor per stream saying how the stream is
coded (spec/CODING.md). The encoder tries the representations that apply and
keeps the smallest payload.
"""

from __future__ import annotations

import fnmatch
import logging

import msgpack
import numpy as np

from ecnn import chunkrun, dtypes, fields, quantize, select
from ecnn.coder import streams
from ecnn.config import EncodeConfig, Effort
from ecnn.container.reader import TensorRecord
from ecnn.dtypes import DType
from ecnn.dtypes import contiguous as _contig
from ecnn.errors import CorruptPayload, InvalidField, InvalidOption, UnknownField, UnsupportedCoding

log = logging.getLogger(__name__)

REPRS = ("raw", "planes", "int", "uniform", "uniform_rows", "codebook")
_REPR_KEYS = {
    "raw": {"kind"},
    "planes": {"kind"},
    "int": {"kind"},
    "uniform": {"kind", "step"},
    "uniform_rows": {"kind", "step"},
    "codebook": {"kind", "levels", "zero"},
}
# codebook (spec/CODING.md section 4.8): at most this many levels; the encoder
# tries it when a sample of the tensor shows at most Effort.codebook_probe distinct values.
MAX_LEVELS = 1 << 16
CODEBOOK_DTYPES = ("float32", "float16", "bfloat16")

REPRS += (fields.KIND,)  # format 1.1
_REPR_KEYS[fields.KIND] = fields.KEYS


# --- encoding ---------------------------------------------------------------


def _raw(arr: np.ndarray) -> tuple[dict, list, bytes]:
    data = _contig(arr).astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
    return {"kind": "raw"}, [], data


def _planes(arr: np.ndarray, dt: DType, chunk: int, effort: str = "best") -> tuple[dict, list, bytes]:
    b = _contig(arr).reshape(-1).view(np.uint8).reshape(-1, dt.itemsize)
    descs, parts = [], []
    rows = _rows(arr)
    for k in range(dt.itemsize):
        d, p = select.encode_best(b[:, k], 1, False, chunk, rows=rows, effort=effort)
        descs.append(d)
        parts.append(p)
    return {"kind": "planes"}, descs, b"".join(parts)


def _ints(arr: np.ndarray, dt: DType, chunk: int, effort: str = "best"):
    values = arr.ravel().astype(np.uint8) if dt.kind == "b" else arr.ravel()
    d, p = select.encode_best(values, dt.itemsize, dt.kind != "u", chunk, rows=_rows(arr), effort=effort)
    if d["coder"] == "raw":
        return None  # the raw representation stores the same bytes more simply
    return {"kind": "int"}, [d], p


def _rows(arr: np.ndarray) -> int | None:
    """Rows of the matrix view used by row/column contexts: the first dimension."""
    return int(arr.shape[0]) if arr.ndim >= 2 else None


def _fields_ok(dt: DType, cfg: EncodeConfig) -> bool:
    return fields.applies(dt) and cfg.format_minor >= 1


def _fields(arr: np.ndarray, dt: DType, cfg: EncodeConfig) -> list:
    """The ``fields`` candidate of a float tensor stored exactly, where the config allows format 1.1."""
    if not _fields_ok(dt, cfg):
        return []
    return [fields.encode(arr, dt, cfg.chunk, effort=cfg.effort)]


def _exact(arr: np.ndarray, dt: DType, cfg: EncodeConfig, own: bool = True) -> list:
    """Candidates for a tensor stored exactly: raw, byte planes, ``fields``, and with
    ``own`` the type's own (integers, or a float codebook). Below effort ``"best"``,
    matrices where ``fields`` applies skip the byte planes, which seldom win there."""
    cands = [_raw(arr)]
    if cfg.policy.planes_with_fields or arr.ndim < 2 or not _fields_ok(dt, cfg):
        cands.append(_planes(arr, dt, cfg.chunk, cfg.effort))
    if own and not dt.is_float:
        cands.append(_ints(arr, dt, cfg.chunk, cfg.effort))
    elif own and cfg.format_minor >= 1:
        cands.append(_codebook(arr, dt, cfg.chunk, cfg.effort))
    return [c for c in cands if c is not None] + _fields(arr, dt, cfg)


def _uniform(arr: np.ndarray, dt: DType, step: float, chunk: int, contexts: bool, effort: str) -> tuple[dict, list, bytes]:
    q = quantize.quantize(arr, dt, step)
    d, p = select.encode_best(q.ravel(), 4, True, chunk, rows=_rows(arr), contexts=contexts, effort=effort)
    return {"kind": "uniform", "step": quantize.step_bits(step)}, [d], p


def _uniform_rows(arr: np.ndarray, dt: DType, step: float, chunk: int, contexts: bool, effort: str) -> tuple[dict, list, bytes]:
    codes = quantize.row_codes(arr, dt, step)
    q = quantize.quantize_rows(arr, dt, step, codes)
    d0, p0 = select.encode_best(codes, 1, False, chunk, contexts=contexts, effort=effort)
    d1, p1 = select.encode_best(q.ravel(), 4, True, chunk, rows=_rows(arr), contexts=contexts, effort=effort)
    return {"kind": "uniform_rows", "step": quantize.step_bits(step)}, [d0, d1], p0 + p1


def _order_keys(bits: np.ndarray, width: int) -> np.ndarray:
    """Keys that sort IEEE bit patterns by value: negatives reversed below positives, -0 just below +0."""
    sign = np.array(1 << (8 * width - 1), dtype=bits.dtype)
    return np.where(bits & sign, ~bits, bits | sign)


def _codebook(arr: np.ndarray, dt: DType, chunk: int, effort: str = "best"):
    """Levels and signed level indices (spec/CODING.md section 4.8), or None when there are too many levels."""
    if dt.name not in CODEBOOK_DTYPES or arr.size < 2:
        return None
    utype = np.dtype(f"<u{dt.itemsize}")
    bits = _contig(arr).reshape(-1).view(utype)
    probe = Effort.of(effort).codebook_probe
    sample = bits[:: max(1, bits.size // (4 * probe))]
    if np.unique(sample).size > probe:
        return None
    levels, inverse = np.unique(bits, return_inverse=True)  # sorted by bit pattern
    k = int(levels.size)
    if k > min(MAX_LEVELS, bits.size // 2):
        return None
    keys = _order_keys(levels, dt.itemsize)
    order = np.argsort(keys, kind="stable")
    levels, keys = levels[order], keys[order]
    rank = np.empty(k, np.int64)
    rank[order] = np.arange(k)
    zero = min(int(np.searchsorted(keys, _order_keys(np.zeros(1, utype), dt.itemsize)[0])), k - 1)
    q = rank[inverse.reshape(-1)] - zero
    d0, p0 = select.encode_best(levels, dt.itemsize, False, chunk, contexts=True, effort=effort)  # codebook is 1.1 itself
    d1, p1 = select.encode_best(q, 4, True, chunk, rows=_rows(arr), contexts=True, effort=effort)
    return {"kind": "codebook", "levels": k, "zero": zero}, [d0, d1], p0 + p1


def _cost(cand) -> int:
    """Bytes a candidate adds to the file: its payload plus its header entries."""
    rep, descs, payload = cand
    return len(payload) + len(msgpack.packb(rep)) + len(msgpack.packb(descs))


def _smallest(cands):
    return min(cands, key=_cost)


def encode_tensor(name: str, arr: np.ndarray, dt: DType, cfg: EncodeConfig) -> tuple[dict, bytes]:
    """Encode one tensor (numpy storage array) into a record and its payload.

    The record lacks ``offset``, ``length`` and ``crc32``; the container fills them.
    """
    arr = _contig(arr)
    if arr.dtype != dt.storage:
        raise InvalidOption(f"tensor {name!r}: array dtype {arr.dtype} does not match {dt.name}")
    if arr.size == 0:
        rep, descs, payload = _raw(arr)
    elif dt.is_float and wants_quantization(name, arr, dt, cfg):
        fixed = cfg.step_for(name)
        step = quantize.check_step(fixed) if fixed is not None else quantize.step_for_bits(arr, dt, cfg.bits)
        per_row = fixed is None and cfg.per_row and arr.ndim >= 2
        try:
            rep, descs, payload = (_uniform_rows if per_row else _uniform)(arr, dt, step, cfg.chunk, cfg.format_minor >= 1, cfg.effort)
        except InvalidOption as e:
            log.warning("tensor %r kept exact: %s", name, e)
            rep, descs, payload = _smallest(_exact(arr, dt, cfg, own=False))
    else:
        rep, descs, payload = _smallest(_exact(arr, dt, cfg))
    rec = {"name": name, "dtype": dt.name, "shape": [int(s) for s in arr.shape], "repr": rep, "streams": descs}
    return rec, payload


def wants_quantization(name: str, arr: np.ndarray, dt: DType, cfg: EncodeConfig) -> bool:
    """Whether the config quantizes this tensor (others are stored exactly)."""
    if not cfg.quantizes or not quantize.quantizable(dt):
        return False
    if any(fnmatch.fnmatchcase(name, p) for p in cfg.exact):
        return False
    if name in dict(cfg.steps):
        return True  # an explicit per-tensor step overrides the dimension rule
    return arr.ndim >= cfg.min_ndim and (cfg.bits is not None or cfg.step is not None)


# --- validation -------------------------------------------------------------


def validate_record(rec: TensorRecord) -> None:
    """Check a record's representation and streams before decoding anything.

    Raises:
        UnsupportedCoding, UnknownField, InvalidField, LimitExceeded.
    """
    dt = dtypes.get(rec.dtype)
    if any(type(k) is not str for k in rec.repr):
        raise InvalidField(f"tensor {rec.name!r}: repr keys must be strings")
    kind = rec.repr.get("kind")
    if kind not in REPRS:
        raise UnsupportedCoding(f"tensor {rec.name!r}: unknown representation {kind!r}")
    extra = {k for k in rec.repr if k not in _REPR_KEYS[kind] and not k.startswith("_")}
    if extra:
        raise UnknownField(f"tensor {rec.name!r}: unknown repr field(s) {sorted(extra)}")
    count = rec.numel
    if kind == "raw":
        _nstreams(rec, 0)
        if rec.length != rec.nbytes:
            raise InvalidField(f"tensor {rec.name!r}: raw payload length {rec.length} != {rec.nbytes}")
        return
    if kind == fields.KIND:
        fields.validate(rec.name, rec.repr, rec.streams, rec.shape, dt)
        if sum(d["length"] for d in rec.streams) != rec.length:
            raise InvalidField(f"tensor {rec.name!r}: stream lengths do not sum to the payload length {rec.length}")
        return
    if kind == "planes":
        _nstreams(rec, dt.itemsize)
    elif kind == "int":
        if dt.is_float:
            raise InvalidField(f"tensor {rec.name!r}: int representation of a float dtype")
        _nstreams(rec, 1)
    elif kind == "codebook":
        if dt.name not in CODEBOOK_DTYPES:
            raise InvalidField(f"tensor {rec.name!r}: {dt.name} cannot use the codebook representation")
        k, z = rec.repr.get("levels"), rec.repr.get("zero")
        if type(k) is not int or not 1 <= k <= MAX_LEVELS:
            raise InvalidField(f"tensor {rec.name!r}: codebook levels must be an integer in 1..{MAX_LEVELS}")
        if type(z) is not int or not 0 <= z < k:
            raise InvalidField(f"tensor {rec.name!r}: codebook zero must be an integer in 0..levels-1")
        _nstreams(rec, 2)
    else:
        if not quantize.quantizable(dt):
            raise InvalidField(f"tensor {rec.name!r}: {dt.name} cannot use the {kind} representation")
        s = rec.repr.get("step")
        if type(s) is not int or not 0 <= s <= 0xFFFFFFFF:
            raise InvalidField(f"tensor {rec.name!r}: step must be a uint32 bit pattern")
        v = quantize.step_from_bits(s)
        if not (np.isfinite(v) and v > 0):
            raise InvalidField(f"tensor {rec.name!r}: step is not a positive finite float32")
        if kind == "uniform_rows":
            if len(rec.shape) < 1:
                raise InvalidField(f"tensor {rec.name!r}: uniform_rows needs at least one dimension")
            if rec.numel == 0:  # else its row codes alone could cost memory no declared size accounts for
                raise InvalidField(f"tensor {rec.name!r}: uniform_rows of a tensor with no elements")
            _nstreams(rec, 2)
        else:
            _nstreams(rec, 1)
    lo, hi = _symbol_range(dt, kind)
    total = 0
    for i, d in enumerate(rec.streams):
        if kind == "uniform_rows" and i == 0:
            streams.validate(d, rec.shape[0], 0, quantize.MAX_ROW_CODE)  # the row step codes
        elif kind == "codebook":
            streams.validate(d, *_codebook_stream(rec, dt, i))
        else:
            streams.validate(d, count, lo, hi)
        total += d["length"]
    if total != rec.length:
        raise InvalidField(f"tensor {rec.name!r}: stream lengths sum to {total}, payload is {rec.length}")


def _codebook_stream(rec: TensorRecord, dt: DType, i: int) -> tuple[int, int, int]:
    """Symbols and range ``(count, lo, hi)`` of stream ``i`` of a codebook record."""
    k = rec.repr["levels"]
    if i == 0:
        return k, 0, (1 << (8 * dt.itemsize)) - 1
    return rec.numel, -(k - 1), k - 1  # symmetric, for coders of magnitudes and signs; checked on decoding


def _nstreams(rec: TensorRecord, n: int) -> None:
    if len(rec.streams) != n:
        raise InvalidField(f"tensor {rec.name!r}: {rec.repr['kind']} needs {n} streams, has {len(rec.streams)}")


# --- decoding ---------------------------------------------------------------


def _symbol_range(dt: DType, kind: str) -> tuple[int, int]:
    if kind == "planes":
        return 0, 255
    if kind == "int":
        return dt.int_range
    qmax = quantize.QMAX_FLOAT64 if dt.name == "float64" else quantize.QMAX_FLOAT32
    return -qmax, qmax


def decode_tensor(rec: TensorRecord, payload) -> np.ndarray:
    """Decode a validated record's payload into its numpy storage array."""
    dt = dtypes.get(rec.dtype)
    kind = rec.repr["kind"]
    count = rec.numel
    if kind == "raw":
        if dt.kind == "b":
            return _bools(np.frombuffer(payload, dtype=np.uint8, count=count), rec)
        arr = np.frombuffer(payload, dtype=dt.storage.newbyteorder("<") if dt.itemsize > 1 else dt.storage, count=count)
        return arr.astype(dt.storage).reshape(rec.shape)  # copies: the result owns its memory
    parts = _split(rec, payload)
    if kind == fields.KIND:
        return fields.decode(rec.name, rec.repr, parts, rec.shape, dt)
    if kind == "planes":
        out = np.empty((count, dt.itemsize), dtype=np.uint8)
        for k, (d, p) in enumerate(parts):
            out[:, k] = streams.decode(d, p, count, np.uint8, 0, 255, runner=chunkrun)
        if dt.kind == "b":
            return _bools(out[:, 0], rec)
        return out.view(dt.storage.newbyteorder("<") if dt.itemsize > 1 else dt.storage).reshape(rec.shape).astype(dt.storage, copy=False)
    if kind == "codebook":
        (d0, p0), (d1, p1) = parts
        utype = np.dtype(f"<u{dt.itemsize}")
        k, lo0, hi0 = _codebook_stream(rec, dt, 0)
        levels = streams.decode(d0, p0, k, utype, lo0, hi0, runner=chunkrun)
        _, lo1, hi1 = _codebook_stream(rec, dt, 1)
        q = streams.decode(d1, p1, count, np.int32, lo1, hi1, runner=chunkrun)
        idx = q.astype(np.int64) + rec.repr["zero"]
        if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= k):
            raise CorruptPayload(f"tensor {rec.name!r}: a codebook index lies outside the {k} levels")
        out = levels[idx]
        return out.view(dt.storage.newbyteorder("<") if dt.itemsize > 1 else dt.storage).astype(dt.storage, copy=False).reshape(rec.shape)
    lo, hi = _symbol_range(dt, kind)
    if kind == "uniform_rows":
        (d0, p0), (d1, p1) = parts
        codes = streams.decode(d0, p0, rec.shape[0], np.int32, 0, quantize.MAX_ROW_CODE, runner=chunkrun)
        q = streams.decode(d1, p1, count, np.int32, lo, hi, runner=chunkrun)
        return quantize.dequantize_rows(q, dt, quantize.step_from_bits(rec.repr["step"]), codes).reshape(rec.shape)
    ((d, p),) = parts
    if kind == "int":
        if dt.kind == "b":
            v = streams.decode(d, p, count, np.uint8, lo, hi, runner=chunkrun)
            return v.view(np.bool_).reshape(rec.shape)
        return streams.decode(d, p, count, dt.storage, lo, hi, runner=chunkrun).reshape(rec.shape)
    q = streams.decode(d, p, count, np.int32, lo, hi, runner=chunkrun)
    return quantize.dequantize(q, dt, quantize.step_from_bits(rec.repr["step"])).reshape(rec.shape)


def _bools(values: np.ndarray, rec: TensorRecord) -> np.ndarray:
    """Bytes of a bool tensor: only 0 and 1 are valid."""
    if values.size and int(values.max()) > 1:
        raise CorruptPayload(f"tensor {rec.name!r}: bool bytes other than 0 and 1")
    return values.astype(np.bool_).reshape(rec.shape)


def _split(rec: TensorRecord, payload):
    mv = memoryview(payload)
    pos = 0
    out = []
    for d in rec.streams:
        out.append((d, mv[pos : pos + d["length"]]))
        pos += d["length"]
    if pos != len(mv):
        raise CorruptPayload(f"tensor {rec.name!r}: streams do not cover the payload")
    return out
