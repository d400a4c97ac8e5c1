"""ONNX models in ``.ecnn`` files: pack, unpack, and run with ONNX Runtime from memory.

A packed ONNX model is an ordinary ``.ecnn`` file (spec/FORMAT.md, "Appendix:
ONNX models"): the initializers are tensors under their ONNX names, quantized
by the library's policy (float initializers with two or more dimensions;
integer initializers, such as the int8 weights of a QDQ model, always exact),
and the graph itself -- the ``ModelProto`` with every stored initializer
replaced by an external-data stub -- is the uint8 tensor ``onnx::model``,
coded losslessly. The metadata key ``ecnn.onnx`` is ``"1"``.

Example:
    >>> import ecnn.onnx                                          # doctest: +SKIP
    >>> ecnn.onnx.save_model("model.onnx", "model.ecnn", bits=8)
    >>> sess = ecnn.onnx.inference_session("model.ecnn", providers=["CPUExecutionProvider"])
    >>> proto = ecnn.onnx.load_model("model.ecnn")                # passes onnx.checker

Exporting a model trained with :mod:`ecnn.train` and packing it. The default
exporter, ``torch.onnx.export(..., dynamo=True)``, needs ``onnxscript`` (in
ecnn's ``dev`` extra); it keeps parameter names as initializer names, so the
learned per-tensor steps apply to the ONNX file too and the weights, already
on their grids, are stored without further loss::

    ecnn.train.prepare_(model, ecnn.train.TrainConfig(method="ect", lam=0.05))
    ...  # train with loss = task_loss + ecnn.train.regularizer(model)
    steps = ecnn.train.convert_(model)
    torch.onnx.export(model.eval(), (example,), "model.onnx", dynamo=True)
    ecnn.onnx.save_model("model.onnx", "model.ecnn", config=ecnn.train.encode_config(steps))
    sess = ecnn.onnx.inference_session("model.ecnn")

From the command line, ``ecnn pack model.onnx -o model.ecnn --bits 8`` and
``ecnn unpack model.ecnn -o model.onnx``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from ecnn import codec, dtypes, parallel
from ecnn import file as _file
from ecnn.container.format import Limits
from ecnn.config import EncodeConfig, from_options
from ecnn.container.writer import atomic_write
from ecnn.errors import CorruptPayload, InvalidField, InvalidOption, UnreadableInput, UnsafeInput

log = logging.getLogger(__name__)

GRAPH_TENSOR = _file.ONNX_GRAPH_TENSOR
METADATA_KEY = _file.ONNX_METADATA_KEY
METADATA_VERSION = _file.ONNX_METADATA_VERSION
STUB_LOCATION = "ecnn"
# Above this many initializer bytes, unpack writes the weights beside the .onnx
# file as external data: one protobuf message cannot exceed 2 GiB.
EXTERNAL_DATA_THRESHOLD = 1 << 30
# Small int32/int64 initializers stay in the graph: they are shapes, axes and
# indices (Reshape, Slice, Expand...) that ONNX Runtime reads while it resolves
# the graph, before it is handed the external initializers. They are coded
# losslessly with the graph.
INLINE_MAX_ELEMENTS = 64
_INLINE_TYPES = (TensorProto.INT64, TensorProto.INT32)

_ONNX_TO_ECNN = {
    TensorProto.FLOAT: "float32",
    TensorProto.DOUBLE: "float64",
    TensorProto.FLOAT16: "float16",
    TensorProto.BFLOAT16: "bfloat16",
    TensorProto.FLOAT8E4M3FN: "float8_e4m3fn",
    TensorProto.FLOAT8E5M2: "float8_e5m2",
    TensorProto.INT8: "int8",
    TensorProto.INT16: "int16",
    TensorProto.INT32: "int32",
    TensorProto.INT64: "int64",
    TensorProto.UINT8: "uint8",
    TensorProto.UINT16: "uint16",
    TensorProto.UINT32: "uint32",
    TensorProto.UINT64: "uint64",
    TensorProto.BOOL: "bool",
}
_DATA_FIELDS = ("raw_data", "float_data", "int32_data", "string_data", "int64_data", "double_data", "uint64_data")


# --- walking a model ----------------------------------------------------------


def _graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """A graph and every subgraph in its nodes' attributes (If, Loop, Scan bodies)."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _graphs(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from _graphs(g)


def _initializers(model: onnx.ModelProto) -> Iterator[TensorProto]:
    for g in _graphs(model.graph):
        yield from g.initializer


def _is_stub(t: TensorProto) -> bool:
    return (
        t.data_location == TensorProto.EXTERNAL
        and len(t.external_data) == 1
        and t.external_data[0].key == "location"
        and t.external_data[0].value == STUB_LOCATION
    )


def _stub(t: TensorProto) -> None:
    for f in _DATA_FIELDS:
        t.ClearField(f)
    del t.external_data[:]
    t.data_location = TensorProto.EXTERNAL
    e = t.external_data.add()
    e.key, e.value = "location", STUB_LOCATION


def _fill(t: TensorProto, arr: np.ndarray) -> None:
    for f in _DATA_FIELDS:
        t.ClearField(f)
    del t.external_data[:]
    t.data_location = TensorProto.DEFAULT
    t.raw_data = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()


# --- reading initializers -----------------------------------------------------


def _external_info(t: TensorProto) -> dict[str, str]:
    return {e.key: e.value for e in t.external_data}


def _external_path(t: TensorProto, base: Path | None) -> Path:
    """The file holding an initializer's external data, refused if it leaves the model's folder."""
    loc = _external_info(t).get("location")
    if not loc:
        raise UnreadableInput(f"initializer {t.name!r}: external data without a location")
    if base is None:
        raise UnreadableInput(f"initializer {t.name!r}: external data, but no folder to read it from")
    folder = base.resolve()
    p = Path(loc)
    if p.is_absolute() or p.drive:
        raise UnsafeInput(f"initializer {t.name!r}: external data path {loc!r} is absolute")
    full = (folder / p).resolve()
    if full != folder and folder not in full.parents:
        raise UnsafeInput(f"initializer {t.name!r}: external data path {loc!r} is outside the model's folder")
    if not full.is_file():
        raise UnreadableInput(f"initializer {t.name!r}: external data file {loc!r} not found")
    return full


def _read_external(t: TensorProto, base: Path | None, storage: np.dtype, count: int) -> np.ndarray:
    """An initializer's external data as a read-only memory map (nothing is read until used)."""
    path = _external_path(t, base)
    info = _external_info(t)
    try:
        offset = int(info.get("offset", 0))
        length = int(info["length"]) if "length" in info else count * storage.itemsize
    except ValueError:
        raise UnreadableInput(f"initializer {t.name!r}: bad external data offset or length") from None
    size = path.stat().st_size
    if length != count * storage.itemsize or offset < 0 or offset + length > size:
        raise UnreadableInput(f"initializer {t.name!r}: external data range does not match its shape or file")
    if count == 0:
        return np.empty(0, storage)
    return np.memmap(path, dtype=storage, mode="r", offset=offset, shape=(count,))


def _inline_external(t: TensorProto, base: Path | None) -> None:
    """Read an initializer that ecnn cannot store (e.g. int4) back into the graph."""
    path = _external_path(t, base)
    info = _external_info(t)
    offset = int(info.get("offset", 0))
    with open(path, "rb") as fh:
        fh.seek(offset)
        data = fh.read(int(info["length"])) if "length" in info else fh.read()
    del t.external_data[:]
    t.data_location = TensorProto.DEFAULT
    t.raw_data = data


def _array(t: TensorProto, base: Path | None) -> tuple[np.ndarray, dtypes.DType]:
    dt = dtypes.get(_ONNX_TO_ECNN[t.data_type])
    shape = tuple(int(d) for d in t.dims)
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if t.data_location == TensorProto.EXTERNAL:
        arr = _read_external(t, base, dt.storage, count)
    elif t.HasField("raw_data"):
        if len(t.raw_data) != count * dt.itemsize:
            raise UnreadableInput(
                f"initializer {t.name!r}: raw_data has {len(t.raw_data)} bytes, expected {count * dt.itemsize}"
            )
        arr = np.frombuffer(t.raw_data, dtype=dt.storage)
    else:
        a = np.ascontiguousarray(numpy_helper.to_array(t))
        arr = a.reshape(-1).view(dt.storage) if a.size else np.empty(0, dt.storage)
    return arr.reshape(shape), dt


def split_model(model: onnx.ModelProto, base_dir=None) -> dict[str, tuple[np.ndarray, dtypes.DType]]:
    """Take the initializers out of a model, leaving stubs in it (modifies ``model``).

    Args:
        model: the model; initializers with external data are read from ``base_dir``.
        base_dir: the folder of the ``.onnx`` file.

    Returns:
        ``{initializer name: (storage array, dtype)}`` (external data is memory-mapped).

    Raises:
        UnsafeInput: external data outside ``base_dir``.
        UnreadableInput: external data missing or inconsistent.
        InvalidOption: two initializers share a name, or one is named ``onnx::model``.
    """
    base = Path(base_dir) if base_dir is not None else None
    out: dict[str, tuple[np.ndarray, dtypes.DType]] = {}
    for t in _initializers(model):
        if t.data_type in _INLINE_TYPES and int(np.prod(t.dims, dtype=np.int64)) <= INLINE_MAX_ELEMENTS:
            if t.data_location == TensorProto.EXTERNAL:
                _inline_external(t, base)
            continue
        if t.data_type not in _ONNX_TO_ECNN:
            if t.data_location == TensorProto.EXTERNAL:
                _inline_external(t, base)
            log.info("initializer %r (ONNX type %d) stays in the graph", t.name, t.data_type)
            continue
        if t.name == GRAPH_TENSOR or t.name in out:
            raise InvalidOption(f"initializer name {t.name!r} is used twice or is reserved")
        out[t.name] = _array(t, base)
        _stub(t)
    return out


# --- packing --------------------------------------------------------------------


def _load_onnx(source, base_dir=None) -> tuple[onnx.ModelProto, Path | None]:
    if isinstance(source, onnx.ModelProto):
        m = onnx.ModelProto()
        m.CopyFrom(source)
        return m, Path(base_dir) if base_dir is not None else None
    p = Path(source)
    if not p.is_file():
        raise UnreadableInput(f"{source}: no such file")
    try:
        m = onnx.load(str(p), load_external_data=False)
    except Exception as e:  # protobuf raises its own DecodeError
        raise UnreadableInput(f"{source}: not a readable ONNX model ({e})") from None
    return m, (Path(base_dir) if base_dir is not None else p.parent)


def pack(source, path, config: EncodeConfig, metadata: Mapping[str, str] | None = None, progress=None, base_dir=None):
    """Pack an ONNX model (a ``.onnx`` path or a ``ModelProto``) into ``path``.

    Returns:
        ``(file size, number of initializers stored, bytes of those initializers)``.
    """
    model, base = _load_onnx(source, base_dir)
    arrays = split_model(model, base)
    graph = np.frombuffer(model.SerializeToString(), dtype=np.uint8)
    md = dict(metadata or {})
    md[METADATA_KEY] = METADATA_VERSION
    everything = {GRAPH_TENSOR: (graph, dtypes.get("uint8")), **arrays}
    size = _file.save(everything, path, config, md, progress)
    return size, len(arrays), sum(a.nbytes for a, _ in arrays.values())


def save_model(
    model,
    path,
    *,
    bits: int | None = None,
    step: float | None = None,
    lossless: bool = False,
    metadata: Mapping[str, str] | None = None,
    config: EncodeConfig | None = None,
    base_dir=None,
    effort: str | None = None,
) -> int:
    """Pack an ONNX model into a ``.ecnn`` file: the graph kept, the initializers compressed.

    Args:
        model: a ``.onnx`` path or an ``onnx.ModelProto`` (not modified).
        path: the ``.ecnn`` file to write (atomically).
        bits, step, lossless, metadata, config, effort: as in :func:`ecnn.save_file`.
        base_dir: folder of the model's external data (default: the ``.onnx`` file's folder).

    Returns:
        The file size.

    Raises:
        UnsafeInput: external data whose path leaves the model's folder.
        UnreadableInput, InvalidOption.
    """
    return pack(model, path, from_options(bits, step, lossless, config, effort), metadata, base_dir=base_dir)[0]


# --- unpacking ------------------------------------------------------------------


def _graph(f: _file.EcnnFile) -> onnx.ModelProto:
    if f.metadata().get(METADATA_KEY) != METADATA_VERSION or GRAPH_TENSOR not in f:
        raise UnreadableInput(
            f"the file holds no ONNX model (no {GRAPH_TENSOR!r} tensor and {METADATA_KEY!r}={METADATA_VERSION!r})"
        )
    arr, dt = f.get_array(GRAPH_TENSOR)
    if dt.name != "uint8" or arr.ndim != 1:
        raise InvalidField(f"{GRAPH_TENSOR!r} must be a 1-D uint8 tensor")
    m = onnx.ModelProto()
    try:
        m.ParseFromString(arr.tobytes())
    except Exception as e:
        raise CorruptPayload(f"{GRAPH_TENSOR!r} is not an ONNX ModelProto ({e})") from None
    return m


def _check(t: TensorProto, f: _file.EcnnFile) -> None:
    if t.name not in f or t.name == GRAPH_TENSOR:
        raise InvalidField(f"initializer {t.name!r} has no tensor in the file")
    info = f.info(t.name)
    if t.data_type not in _ONNX_TO_ECNN or info.dtype != _ONNX_TO_ECNN[t.data_type]:
        raise InvalidField(f"initializer {t.name!r}: the file's dtype {info.dtype} does not match the graph")
    if tuple(info.shape) != tuple(int(d) for d in t.dims):
        raise InvalidField(f"initializer {t.name!r}: the file's shape {info.shape} does not match the graph")


def _stubs(model: onnx.ModelProto, f: _file.EcnnFile) -> list[TensorProto]:
    stubs = [t for t in _initializers(model) if _is_stub(t)]
    for t in stubs:
        _check(t, f)
    return stubs


def load_model(path, *, limits: Limits = Limits()) -> onnx.ModelProto:
    """Rebuild the ONNX model of a packed ``.ecnn`` file, initializers inline.

    Args:
        path: the ``.ecnn`` file (or its bytes).
        limits: caps on what the file may make the reader allocate (:class:`ecnn.Limits`).

    Returns:
        The ``onnx.ModelProto``; for models under 2 GiB it passes ``onnx.checker``.

    Raises:
        UnreadableInput: the file holds no ONNX model.
        FormatError: a subclass naming the check the file failed (LimitExceeded over ``limits``).
    """
    with _file.EcnnFile(path, limits) as f:
        f.check_padding()
        model = _graph(f)
        for t in _stubs(model, f):
            arr, _ = f.get_array(t.name)
            _fill(t, arr)
    return model


def write_model(model: onnx.ModelProto, path) -> int:
    """Write a model to ``path`` (atomically); large models get their weights in ``<name>.data``."""
    path = Path(path)
    total = sum(len(t.raw_data) for t in _initializers(model))
    if total < EXTERNAL_DATA_THRESHOLD:
        return atomic_write(path, [model.SerializeToString()])
    location = path.name + ".data"
    onnx.save_model(
        model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=location, size_threshold=1024
    )
    return path.stat().st_size + (path.parent / location).stat().st_size


# --- ONNX Runtime -----------------------------------------------------------------


def _ort_value(ort, arr: np.ndarray, dt: dtypes.DType, onnx_type: int):
    arr = np.ascontiguousarray(arr) if arr.ndim else arr.copy()
    if dt.name in ("bfloat16", "float8_e4m3fn", "float8_e5m2"):
        return ort.OrtValue.ortvalue_from_numpy_with_onnx_type(arr, onnx_type)
    return ort.OrtValue.ortvalue_from_numpy(arr)


def inference_session(path, providers=None, sess_options=None, *, workers: int | None = None, limits: Limits = Limits(), **kwargs):
    """An ``onnxruntime.InferenceSession`` built from a packed file, in memory.

    The graph goes to ONNX Runtime with its initializers still external stubs;
    the decoded arrays are handed over with
    ``SessionOptions.add_external_initializers``, one at a time as they are
    decoded. No protobuf copy of the weights is made and nothing is written to
    disk, so models over 2 GiB take the same path. The session keeps the
    arrays alive.

    Args:
        path: the ``.ecnn`` file (or its bytes).
        providers: ONNX Runtime execution providers, e.g. ``["CUDAExecutionProvider", "CPUExecutionProvider"]``.
        sess_options: ``onnxruntime.SessionOptions`` to start from (it receives the initializers).
        workers: threads for range decoding (see :mod:`ecnn.parallel`; None: ``ECNN_WORKERS``
            or the CPU count, at most 8; 1: the calling thread only).
        limits: caps on what the file may make the reader allocate (:class:`ecnn.Limits`).
        **kwargs: passed to ``InferenceSession``.

    Raises:
        UnreadableInput: the file holds no ONNX model.
        FormatError: a subclass naming the check the file failed (LimitExceeded over ``limits``).
    """
    import onnxruntime as ort

    so = sess_options if sess_options is not None else ort.SessionOptions()
    keep = []
    with _file.EcnnFile(path, limits) as f:
        f.check_padding()
        model = _graph(f)
        stubs = {t.name: t for t in _stubs(model, f)}
        names, values = [], []
        for h in parallel.iter_host(f, list(stubs), workers):
            arr = codec.host_values(h).reshape(h.shape)
            v = _ort_value(ort, arr, h.dtype, stubs[h.name].data_type)
            keep.append(arr)
            names.append(h.name)
            values.append(v)
    if names:
        so.add_external_initializers(names, values)
    sess = ort.InferenceSession(model.SerializeToString(), sess_options=so, providers=providers, **kwargs)
    sess._ecnn_initializers = (keep, values)  # ONNX Runtime may use these buffers in place
    return sess
