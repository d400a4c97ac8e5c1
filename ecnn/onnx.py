"""ONNX models in ``.ecnn`` files: pack, unpack, and run with ONNX Runtime from memory.

A packed ONNX model is an ordinary ``.ecnn`` file (spec/FORMAT.md, "Appendix:
ONNX models"). Its weights are found wherever exporters put them: the
initializers of the main graph and of every subgraph (If branches, Loop and
Scan bodies, at any depth) and the values of ``Constant`` nodes (``value``,
``value_floats``, ``sparse_value``), in graphs and in model-local functions. Each is a tensor of the file, quantized
by the library's policy (float tensors with two or more dimensions; integer
tensors, such as the int8 weights of a QDQ model, always exact); shapes,
axes, indices and other tiny tensors stay in the graph. The graph itself --
the ``ModelProto`` with every stored tensor replaced by an external-data stub
-- is the uint8 tensor ``onnx::model``, coded losslessly. The metadata key
``ecnn.onnx`` is ``"1"``, or ``"2"`` when a stub sits in a Constant node or
names a tensor apart from its own name (initializers of different graphs may
share a name).

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

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
# Files with Constant stubs or stubs named apart from their tensor (spec/FORMAT.md, Appendix C).
METADATA_VERSION_SUBGRAPHS = "2"
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
_SCALAR_ATTRS = ("value_float", "value_int", "value_ints", "value_string", "value_strings")
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


def _scopes(model: onnx.ModelProto) -> Iterator[tuple[onnx.GraphProto | onnx.FunctionProto, bool]]:
    """``(graph or function body, inside a function)``: the main graph and its subgraphs depth-first, then
    every model-local function (``model.functions``) and the subgraphs in its nodes (spec/FORMAT.md, C.2)."""
    for g in _graphs(model.graph):
        yield g, False
    for fn in model.functions:
        yield fn, True
        for node in fn.node:
            for attr in node.attribute:
                subs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else attr.graphs
                for sub in subs:
                    for g in _graphs(sub):
                        yield g, True


def _is_constant(node: onnx.NodeProto) -> bool:
    return node.op_type == "Constant" and node.domain in ("", "ai.onnx")


@dataclass
class _Place:
    """Where one tensor of the model lives (spec/FORMAT.md, Appendix C).

    ``tensor`` is the ``TensorProto`` itself: an initializer of ``graph``, the
    ``value`` of a Constant ``node``, one half (``part``: ``values`` or
    ``indices``) of its ``sparse_value``, or, for ``value_floats``, ``None``
    until the list is turned into a stub.
    """

    graph: onnx.GraphProto | onnx.FunctionProto
    main: bool  # an initializer of the main graph
    tensor: TensorProto | None
    node: onnx.NodeProto | None = None
    attr: onnx.AttributeProto | None = None
    part: str = ""
    in_function: bool = False  # in a model-local function, which sees no outer scope

    @property
    def label(self) -> str:
        """The name the tensor goes by in the model: an initializer's name or the Constant's output."""
        if self.node is None:
            return self.tensor.name
        out = self.node.output[0] if self.node.output else self.node.name
        return f"{out}::{self.part}" if self.part else out


def _places(model: onnx.ModelProto) -> Iterator[_Place]:
    """Every initializer and Constant tensor of a model in model order (spec/FORMAT.md, C.2)."""
    for g, fn in _scopes(model):
        main = g is model.graph
        for t in g.initializer if isinstance(g, onnx.GraphProto) else ():
            yield _Place(g, main, t, in_function=fn)
        for node in g.node:
            if not _is_constant(node):
                continue
            for attr in node.attribute:
                if attr.name == "value" and attr.type == onnx.AttributeProto.TENSOR:
                    yield _Place(g, False, attr.t, node, attr, in_function=fn)
                elif attr.name == "value_floats" and attr.type in (onnx.AttributeProto.FLOATS, onnx.AttributeProto.TENSOR):
                    t = attr.t if attr.type == onnx.AttributeProto.TENSOR else None
                    yield _Place(g, False, t, node, attr, in_function=fn)
                elif attr.name == "sparse_value" and attr.type == onnx.AttributeProto.SPARSE_TENSOR:
                    yield _Place(g, False, attr.sparse_tensor.values, node, attr, "values", fn)
                    yield _Place(g, False, attr.sparse_tensor.indices, node, attr, "indices", fn)


def _stub_name(p: _Place) -> str | None:
    """The file tensor a stub names (spec/FORMAT.md, C.3), or None for a place that is no stub.

    Raises:
        InvalidField: the place's external data says ``location`` = ``ecnn`` but it is no well-formed stub.
    """
    t = p.tensor
    if not any(e.key == "location" and e.value == STUB_LOCATION for e in t.external_data):
        return None
    keys = [e.key for e in t.external_data]
    info = {e.key: e.value for e in t.external_data}
    if (
        t.data_location != TensorProto.EXTERNAL
        or len(keys) != len(set(keys))
        or not set(keys) <= {"location", "tensor"}
        or any(t.HasField(f) if f == "raw_data" else len(getattr(t, f)) for f in _DATA_FIELDS)
        or (p.main and "tensor" in info)
    ):
        raise InvalidField(f"{p.label!r}: a malformed stub (spec/FORMAT.md, Appendix C.3)")
    return info.get("tensor", t.name)


def _stub(t: TensorProto, name: str | None = None) -> None:
    for f in _DATA_FIELDS:
        t.ClearField(f)
    del t.external_data[:]
    t.data_location = TensorProto.EXTERNAL
    e = t.external_data.add()
    e.key, e.value = "location", STUB_LOCATION
    if name is not None and name != t.name:
        e = t.external_data.add()
        e.key, e.value = "tensor", name


def _fill(t: TensorProto, arr: np.ndarray) -> None:
    for f in _DATA_FIELDS:
        t.ClearField(f)
    del t.external_data[:]
    t.ClearField("data_location")
    t.raw_data = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()


def _fill_place(p: _Place, arr: np.ndarray) -> None:
    """Put decoded values back where a stub stood; ``value_floats`` becomes a list of floats again."""
    if p.attr is not None and p.attr.name == "value_floats":
        p.attr.ClearField("t")
        p.attr.type = onnx.AttributeProto.FLOATS
        p.attr.floats[:] = arr.reshape(-1).tolist()
    else:
        _fill(p.tensor, arr)


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
    t.ClearField("data_location")
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


def _nbytes(t: TensorProto) -> int:
    """Bytes of a tensor's values (its protobuf size for types the format has no name for)."""
    if t.data_type in _ONNX_TO_ECNN:
        return int(np.prod(t.dims, dtype=np.int64)) * dtypes.get(_ONNX_TO_ECNN[t.data_type]).itemsize
    return t.ByteSize()


def _stays(p: _Place, count: int, data_type: int) -> bool:
    """Whether a tensor stays in the graph with its data (spec/FORMAT.md, Appendix C)."""
    if data_type not in _ONNX_TO_ECNN:
        return True
    if data_type in _INLINE_TYPES and count <= INLINE_MAX_ELEMENTS:
        return True
    return p.node is not None and count <= INLINE_MAX_ELEMENTS  # tiny Constants: scalars, scales, fill values


@dataclass
class Split:
    """What :func:`split` took out of a model and what it left in.

    Attributes:
        arrays: ``{file tensor name: (storage array, dtype)}`` (external data is memory-mapped).
        in_graph: ``(label, bytes)`` of each initializer or Constant tensor left in the graph with its data.
        moved: whether any stub is a Constant's or is named apart from its tensor (the model then
            needs ``ecnn.onnx`` = ``"2"``).
    """

    arrays: dict[str, tuple[np.ndarray, dtypes.DType]] = field(default_factory=dict)
    in_graph: list[tuple[str, int]] = field(default_factory=list)
    moved: bool = False


def _unique(name: str, taken: set[str]) -> str:
    """``name``, or ``name~k`` with the smallest k >= 2 not yet taken."""
    if name and name not in taken and name != GRAPH_TENSOR:
        return name
    k = 2
    while f"{name}~{k}" in taken:
        k += 1
    return f"{name}~{k}"


def split(model: onnx.ModelProto, base_dir=None) -> Split:
    """Take every tensor the file will hold out of a model, leaving stubs in it (modifies ``model``).

    The tensors are the initializers of the main graph and of every subgraph
    (If branches, Loop and Scan bodies, at any depth) and the values of
    ``Constant`` nodes (``value``, ``value_floats``, ``sparse_value``), except
    those that stay in the graph: integer tensors of at most 64 elements
    (shapes, axes, indices), Constants of at most 64 elements, and element
    types the format has no name for. Main-graph initializers keep their
    names; every other tensor is stored under its initializer name or its
    Constant's output name, made unique with a ``~k`` suffix when taken.

    Args:
        model: the model; tensors with external data are read from ``base_dir``.
        base_dir: the folder of the ``.onnx`` file.

    Returns:
        A :class:`Split`.

    Raises:
        UnsafeInput: external data outside ``base_dir``.
        UnreadableInput: external data missing or inconsistent.
        InvalidOption: two main-graph initializers share a name, or one is named ``onnx::model``.
    """
    base = Path(base_dir) if base_dir is not None else None
    out = Split()
    for g, _ in _scopes(model):  # Constant scalars and integer lists: always in the graph
        for node in filter(_is_constant, g.node):
            for a in node.attribute:
                if a.name in _SCALAR_ATTRS:
                    size = 4 * (a.name == "value_float") + 8 * (len(a.ints) + (a.name == "value_int"))
                    size += len(a.s) + sum(len(s) for s in a.strings)
                    out.in_graph.append((node.output[0] if node.output else node.name, size))
    for p in list(_places(model)):
        if p.tensor is None:  # value_floats: a list of floats, stored as a 1-D float32 tensor
            n = len(p.attr.floats)
            if n <= INLINE_MAX_ELEMENTS:
                out.in_graph.append((p.label, 4 * n))
                continue
            arr, dt = np.asarray(p.attr.floats, dtype=np.float32), dtypes.get("float32")
            p.attr.ClearField("floats")
            p.attr.type = onnx.AttributeProto.TENSOR
            p.attr.t.data_type = TensorProto.FLOAT
            p.attr.t.dims[:] = [n]
            p.tensor = p.attr.t
        else:
            t = p.tensor
            if _stays(p, int(np.prod(t.dims, dtype=np.int64)), t.data_type):
                if t.data_location == TensorProto.EXTERNAL:
                    _inline_external(t, base)
                out.in_graph.append((p.label, _nbytes(t)))
                continue
            arr, dt = _array(t, base)
        if p.main:
            if p.tensor.name == GRAPH_TENSOR or p.tensor.name in out.arrays:
                raise InvalidOption(f"initializer name {p.tensor.name!r} is used twice or is reserved")
            name = p.tensor.name
        else:
            name = _unique(p.label, out.arrays.keys())
        out.arrays[name] = (arr, dt)
        _stub(p.tensor, name)
        out.moved |= p.node is not None or name != p.tensor.name
    return out


def split_model(model: onnx.ModelProto, base_dir=None) -> dict[str, tuple[np.ndarray, dtypes.DType]]:
    """The arrays of :func:`split` (``{file tensor name: (storage array, dtype)}``); modifies ``model``."""
    return split(model, base_dir).arrays


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


@dataclass(frozen=True)
class PackResult:
    """What :func:`pack` wrote.

    Attributes:
        size: bytes of the ``.ecnn`` file.
        model_bytes: bytes of the model read (its protobuf plus any external data).
        graph_bytes: bytes of the graph as stored (``onnx::model`` before coding, stubs in it).
        quantized: ``(count, bytes)`` of the tensors stored quantized.
        exact: ``(count, bytes)`` of the tensors stored exactly (integers, 1-D floats, ``--lossless``).
        in_graph: ``(count, bytes)`` of the initializer and Constant tensors left in the graph.
    """

    size: int
    model_bytes: int
    graph_bytes: int
    quantized: tuple[int, int]
    exact: tuple[int, int]
    in_graph: tuple[int, int]


def pack(source, path, config: EncodeConfig, metadata: Mapping[str, str] | None = None, progress=None, base_dir=None) -> PackResult:
    """Pack an ONNX model (a ``.onnx`` path or a ``ModelProto``) into ``path``.

    Returns:
        A :class:`PackResult`: the file size and what was quantized, kept exact and left in the graph.
    """
    model, base = _load_onnx(source, base_dir)
    model_bytes = model.ByteSize()
    s = split(model, base)
    model_bytes += sum(a.nbytes for a, _ in s.arrays.values() if isinstance(a, np.memmap))  # external data
    graph = np.frombuffer(model.SerializeToString(), dtype=np.uint8)
    md = dict(metadata or {})
    md[METADATA_KEY] = METADATA_VERSION_SUBGRAPHS if s.moved else METADATA_VERSION
    everything = {GRAPH_TENSOR: (graph, dtypes.get("uint8")), **s.arrays}
    size = _file.save(everything, path, config, md, progress)
    with _file.EcnnFile(path) as f:
        steps = {n: f.info(n).step for n in s.arrays}
    q = [a.nbytes for n, (a, _) in s.arrays.items() if steps[n] is not None]
    e = [a.nbytes for n, (a, _) in s.arrays.items() if steps[n] is None]
    return PackResult(
        size=size,
        model_bytes=model_bytes,
        graph_bytes=graph.nbytes,
        quantized=(len(q), sum(q)),
        exact=(len(e), sum(e)),
        in_graph=(len(s.in_graph), sum(b for _, b in s.in_graph)),
    )


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
    """Pack an ONNX model into a ``.ecnn`` file: the graph kept, the weights compressed.

    The weights are the initializers of every graph (subgraphs of If, Loop and
    Scan included) and the values of ``Constant`` nodes; see :func:`split`.

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
    return pack(model, path, from_options(bits, step, lossless, config, effort), metadata, base_dir=base_dir).size


# --- unpacking ------------------------------------------------------------------


def _graph(f: _file.EcnnFile) -> onnx.ModelProto:
    if f.metadata().get(METADATA_KEY) not in _file.ONNX_METADATA_VERSIONS or GRAPH_TENSOR not in f:
        raise UnreadableInput(
            f"the file holds no ONNX model (no {GRAPH_TENSOR!r} tensor and {METADATA_KEY!r} in "
            f"{_file.ONNX_METADATA_VERSIONS})"
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


def _check(p: _Place, name: str, f: _file.EcnnFile) -> None:
    t = p.tensor
    if name not in f or name == GRAPH_TENSOR:
        raise InvalidField(f"{p.label!r}: its stub names {name!r}, which has no tensor in the file")
    info = f.info(name)
    if t.data_type not in _ONNX_TO_ECNN or info.dtype != _ONNX_TO_ECNN[t.data_type]:
        raise InvalidField(f"{p.label!r}: the file's dtype {info.dtype} does not match the graph")
    if tuple(info.shape) != tuple(int(d) for d in t.dims):
        raise InvalidField(f"{p.label!r}: the file's shape {info.shape} does not match the graph")
    if p.attr is not None and p.attr.name == "value_floats" and (t.data_type != TensorProto.FLOAT or len(t.dims) != 1):
        raise InvalidField(f"{p.label!r}: a value_floats stub must be a 1-D FLOAT tensor")


def _stubs(model: onnx.ModelProto, f: _file.EcnnFile) -> list[tuple[_Place, str]]:
    """Every stub of the model with the file tensor it names, checked against the file."""
    out = []
    for p in _places(model):
        if p.tensor is None:
            continue
        name = _stub_name(p)
        if name is None:
            continue
        _check(p, name, f)
        out.append((p, name))
    return out


def load_model(path, *, limits: Limits = Limits()) -> onnx.ModelProto:
    """Rebuild the ONNX model of a packed ``.ecnn`` file, every tensor back in its place.

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
        for p, name in _stubs(model, f):
            arr, _ = f.get_array(name)
            _fill_place(p, arr)
    return model


def weight_count(model: onnx.ModelProto) -> tuple[int, int]:
    """``(initializers, Constant nodes)`` of a model across all its graphs and functions."""
    inits = consts = 0
    for g, _ in _scopes(model):
        inits += len(g.initializer) if isinstance(g, onnx.GraphProto) else 0
        consts += sum(1 for n in g.node if _is_constant(n))
    return inits, consts


def write_model(model: onnx.ModelProto, path) -> int:
    """Write a model to ``path`` (atomically); large models get their weights in ``<name>.data``."""
    path = Path(path)
    total = sum(len(p.tensor.raw_data) for p in _places(model) if p.tensor is not None)
    if total < EXTERNAL_DATA_THRESHOLD:
        return atomic_write(path, [model.SerializeToString()])
    location = path.name + ".data"
    onnx.save_model(
        model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=location, size_threshold=1024,
        convert_attribute=True,  # Constant values too: every large tensor leaves the protobuf
    )
    return path.stat().st_size + (path.parent / location).stat().st_size


# --- ONNX Runtime -----------------------------------------------------------------


def _ort_value(ort, arr: np.ndarray, dt: dtypes.DType, onnx_type: int):
    arr = np.ascontiguousarray(arr) if arr.ndim else arr.copy()
    if dt.name in ("bfloat16", "float8_e4m3fn", "float8_e5m2"):
        return ort.OrtValue.ortvalue_from_numpy_with_onnx_type(arr, onnx_type)
    return ort.OrtValue.ortvalue_from_numpy(arr)


def _names(model: onnx.ModelProto) -> set[str]:
    """Every value name used anywhere in a model (inputs, outputs, initializers, node ends, value_info)."""
    out: set[str] = set()
    for g in _graphs(model.graph):
        out.update(v.name for v in (*g.input, *g.output, *g.value_info))
        out.update(t.name for t in g.initializer)
        out.update(t.values.name for t in g.sparse_initializer)
        for n in g.node:
            out.update(n.input)
            out.update(n.output)
    return out


def _defines(g: onnx.GraphProto, name: str) -> bool:
    return (
        any(v.name == name for v in g.input)
        or any(t.name == name for t in g.initializer)
        or any(name in n.output for n in g.node)
    )


def _rename_uses(g: onnx.GraphProto, old: str, new: str) -> None:
    """Make the nodes of ``g`` read ``new`` where they read ``old``, down every subgraph that does not redefine ``old``."""
    for node in g.node:
        if old in node.input:
            node.input[:] = [new if i == old else i for i in node.input]
        for attr in node.attribute:
            subs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
            for sg in subs:
                if not _defines(sg, old):
                    _rename_uses(sg, old, new)


def _lift(model: onnx.ModelProto, stubs: list[tuple[_Place, str]]) -> tuple[dict[str, list[tuple[str, int]]], dict[str, list[_Place]]]:
    """Make every dense stub a main-graph initializer that ONNX Runtime takes from memory (modifies ``model``).

    ONNX Runtime takes external initializers for the main graph only. A
    subgraph's initializer moves to the main graph under a name fresh in the
    whole model, and the nodes of its subgraph (and of nested subgraphs that
    do not define the name again) read it there: subgraphs see the outer
    scope, and renaming the uses keeps shadowing as it was. A Constant node
    with a stubbed ``value`` or ``value_floats`` becomes an ``Identity`` of a
    new main-graph initializer, keeping its place and output.

    Returns:
        ``({file tensor: [(runtime name, ONNX type)]}, {file tensor: [places filled in the graph]})``,
        the latter for sparse Constants, which have no dense initializer form, and for tensors in
        model-local functions, which cannot read the main graph.
    """
    used = _names(model)
    feed: dict[str, list[tuple[str, int]]] = {}
    fill: dict[str, list[_Place]] = {}
    drop: list[tuple[onnx.GraphProto, str]] = []
    for p, name in stubs:
        t = p.tensor
        if p.main:
            feed.setdefault(name, []).append((t.name, t.data_type))
            continue
        if p.part or p.in_function or (p.node is None and t.name in {v.name for v in (*p.graph.output, *p.graph.input)}):
            # no dense form; in a function, which sees no main graph; or a subgraph's output or input
            fill.setdefault(name, []).append(p)
            continue
        fresh = _unique(f"ecnn::{name}", used)
        used.add(fresh)
        new = model.graph.initializer.add()
        new.name, new.data_type = fresh, t.data_type
        new.dims[:] = t.dims
        _stub(new)
        feed.setdefault(name, []).append((fresh, t.data_type))
        if p.node is None:
            drop.append((p.graph, t.name))
            _rename_uses(p.graph, t.name, fresh)
        else:
            node = p.node
            del node.attribute[:]
            node.op_type, node.domain = "Identity", ""
            node.input[:] = [fresh]
    for g, tname in drop:
        for i in reversed(range(len(g.initializer))):
            if g.initializer[i].name == tname:
                del g.initializer[i]
    return feed, fill


def inference_session(path, providers=None, sess_options=None, *, workers: int | None = None, limits: Limits = Limits(), **kwargs):
    """An ``onnxruntime.InferenceSession`` built from a packed file, in memory.

    The graph goes to ONNX Runtime with its weights still external stubs; the
    decoded arrays are handed over with
    ``SessionOptions.add_external_initializers``, one at a time as they are
    decoded. Weights of subgraphs (If, Loop, Scan) and of Constant nodes are
    first made main-graph initializers that their subgraph or node reads
    through an ``Identity`` (ONNX Runtime takes external initializers for the
    main graph only); sparse Constants and weights inside model-local
    functions (which see no outer scope) are filled in the graph. No protobuf
    copy of the dense weights is made and nothing is written to disk, so
    models over 2 GiB take the same path, and the peak memory stays close to
    that of a session built from the ``.onnx`` file, well under that of
    serializing the model :func:`load_model` rebuilds (``tools/bench_onnx.py``,
    bench/RESULTS.md). The session keeps the arrays alive.

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
        feed, fill = _lift(model, _stubs(model, f))
        names, values = [], []
        for h in parallel.iter_host(f, sorted(set(feed) | set(fill)), workers):
            arr = codec.host_values(h).reshape(h.shape)
            for p in fill.get(h.name, ()):
                _fill_place(p, arr)
            for rt_name, onnx_type in feed.get(h.name, ()):
                v = _ort_value(ort, arr, h.dtype, onnx_type)
                keep.append(arr)
                names.append(rt_name)
                values.append(v)
    if names:
        so.add_external_initializers(names, values)
    sess = ort.InferenceSession(model.SerializeToString(), sess_options=so, providers=providers, **kwargs)
    sess._ecnn_initializers = (keep, values)  # ONNX Runtime may use these buffers in place
    return sess


# --- checking a packed model against its original ------------------------------------


@dataclass(frozen=True)
class Deviation:
    """How far one output of the packed model is from the original's.

    Attributes:
        name: the output's name.
        shape: its shape (as the original model computed it).
        max_abs: the largest absolute difference.
        range: the original output's max minus min.
        top1: ``(agreeing rows, rows)`` of the argmax over the last axis for float outputs
            whose last dimension is at least 2 (classifier-like), else None.
    """

    name: str
    shape: tuple[int, ...]
    max_abs: float
    range: float
    top1: tuple[int, int] | None

    @property
    def relative(self) -> float:
        """``max_abs`` over ``range`` (0 when both are 0, inf for a deviation on a constant output)."""
        if self.range > 0:
            return self.max_abs / self.range
        return 0.0 if self.max_abs == 0 else float("inf")


def _graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """The inputs a caller feeds: graph inputs that are not initializers (IR < 4 lists both)."""
    inits = {t.name for t in model.graph.initializer}
    return [v for v in model.graph.input if v.name not in inits]


def _input_spec(v: onnx.ValueInfoProto) -> tuple[np.dtype, list[int | None] | None]:
    """An input's numpy dtype and declared shape (None for a dynamic dim; None for no shape at all)."""
    if not v.type.HasField("tensor_type"):
        raise InvalidOption(f"input {v.name!r} is not a tensor; only models with tensor inputs can be checked")
    tt = v.type.tensor_type
    try:
        dt = np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type))
    except Exception:
        raise InvalidOption(f"input {v.name!r}: ONNX element type {tt.elem_type} has no numpy dtype") from None
    if not tt.HasField("shape"):
        return dt, None
    return dt, [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]


def check_inputs(model, npz=None, *, seed: int = 0, dynamic: int = 1) -> dict[str, np.ndarray]:
    """Inputs for :func:`compare`: read from an ``.npz`` named as the graph's inputs, or synthetic.

    Synthetic inputs follow the declared shapes and dtypes, with every dynamic
    dimension ``dynamic`` (1 by default): standard normal floats, integers 0 or 1, random booleans.
    They test that the packed model computes what the original does, not how
    well either works on real data.

    Args:
        model: the original ``.onnx`` path or ``ModelProto``.
        npz: an ``.npz`` file with one array per graph input, or None for synthetic inputs.
        seed: seed of the synthetic inputs.
        dynamic: the size of every dynamic dimension of the synthetic inputs.

    Returns:
        ``{input name: array}``.

    Raises:
        UnreadableInput: the ``.npz`` cannot be read (or holds pickled objects).
        InvalidOption: an input is missing, extra, or of the wrong dtype or shape; or, without
            ``npz``, an input has no declared shape or an element type numpy has no name for.
    """
    m = model if isinstance(model, onnx.ModelProto) else _load_onnx(model)[0]
    specs = {v.name: _input_spec(v) for v in _graph_inputs(m)}
    if npz is None:
        rng = np.random.default_rng(seed)
        out = {}
        for name, (dt, shape) in specs.items():
            if shape is None:
                raise InvalidOption(f"input {name!r} declares no shape, so no synthetic input can be made: give an .npz")
            shape = [dynamic if d is None or d == 0 else d for d in shape]
            if dt.kind == "f":
                out[name] = rng.standard_normal(shape).astype(dt)
            elif dt.kind in "iu":
                out[name] = rng.integers(0, 2, size=shape).astype(dt)
            elif dt.kind == "b":
                out[name] = rng.integers(0, 2, size=shape).astype(bool)
            else:
                raise InvalidOption(f"input {name!r}: no synthetic inputs of dtype {dt}: give an .npz")
        return out
    try:
        with np.load(npz, allow_pickle=False) as z:
            given = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError) as e:
        raise UnreadableInput(f"{npz}: not a readable .npz of arrays ({e})") from None
    missing = [n for n in specs if n not in given]
    extra = [n for n in given if n not in specs]
    if missing or extra:
        raise InvalidOption(f"{npz}: the graph's inputs are {sorted(specs)}; missing {missing}, not inputs {extra}")
    for name, (dt, shape) in specs.items():
        a = given[name]
        if a.dtype != dt:
            raise InvalidOption(f"{npz}: input {name!r} is {a.dtype}, the graph declares {dt}")
        if shape is not None and (
            a.ndim != len(shape) or any(d is not None and d != 0 and d != s for d, s in zip(shape, a.shape))
        ):
            raise InvalidOption(f"{npz}: input {name!r} has shape {list(a.shape)}, the graph declares {shape}")
    return given


def run_model(model, feeds: Mapping[str, np.ndarray], providers=None) -> dict[str, np.ndarray]:
    """Run an ONNX model in ONNX Runtime: ``{output name: array}``, in the graph's output order.

    Args:
        model: a ``.onnx`` path (its external data beside it) or ``ModelProto``.
        feeds: ``{input name: array}``.
        providers: ONNX Runtime execution providers (default: CPU).

    Raises:
        InvalidOption: ONNX Runtime cannot load the model or run it on these inputs.
    """
    import onnxruntime as ort

    src = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    try:
        sess = ort.InferenceSession(src, providers=providers or ["CPUExecutionProvider"])
        return dict(zip((o.name for o in sess.get_outputs()), sess.run(None, dict(feeds))))
    except Exception as e:  # ONNX Runtime raises its own exception types
        raise InvalidOption(f"ONNX Runtime cannot run the original model on these inputs ({e})") from None


def compare(model, packed, feeds: Mapping[str, np.ndarray], providers=None, reference=None) -> list[Deviation]:
    """Run the original model and the packed one in ONNX Runtime on ``feeds`` and measure the outputs' deviation.

    Args:
        model: the original ``.onnx`` path (its external data beside it) or ``ModelProto``.
        packed: the ``.ecnn`` file (run with :func:`inference_session`).
        feeds: ``{input name: array}``, e.g. from :func:`check_inputs`.
        providers: ONNX Runtime execution providers (default: CPU).
        reference: the original's outputs from :func:`run_model`, if already computed.

    Returns:
        One :class:`Deviation` per output of the model, in order (outputs other than floats
        are compared for equality: ``max_abs`` 0 or 1).

    Raises:
        InvalidOption: ONNX Runtime cannot run the original model on ``feeds``.
    """
    providers = providers or ["CPUExecutionProvider"]
    reference = reference if reference is not None else run_model(model, feeds, providers)
    sess = inference_session(packed, providers=providers)
    got = sess.run(None, dict(feeds))
    out = []
    for (name, a), b in zip(reference.items(), got):
        a, b = np.asarray(a), np.asarray(b)
        if a.dtype.kind != "f":
            out.append(Deviation(name, a.shape, float(not np.array_equal(a, b)), 0.0, None))
            continue
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        dev = float(np.max(np.abs(a64 - b64))) if a.size else 0.0
        rng_ = float(a64.max() - a64.min()) if a.size else 0.0
        top1 = None
        if a.ndim >= 1 and a.shape[-1] >= 2 and a.size:
            ia, ib = a.reshape(-1, a.shape[-1]).argmax(-1), b.reshape(-1, a.shape[-1]).argmax(-1)
            top1 = (int((ia == ib).sum()), int(ia.size))
        out.append(Deviation(name, a.shape, dev, rng_, top1))
    return out


# --- packing to a budget ------------------------------------------------------------

# Element types of the weights a WeightSession feeds as plain numpy inputs (a budget allocates these).
FEED_DTYPES = ("float32", "float64", "float16")


class WeightSession:
    """A model in ONNX Runtime with some of its weights as graph inputs, to run it with candidate weights.

    The stubs of a split model are lifted as :func:`inference_session` lifts
    them (subgraph initializers and Constant values become main-graph
    initializers); those of the tensors in ``names`` then become graph inputs,
    and every other tensor is filled back in with its data. One session serves
    every candidate: :meth:`run` feeds the replaced tensors with the inputs,
    so nothing is rebuilt between candidates (ONNX Runtime reads initializers
    once, when it builds a session).

    Args:
        model: the model after :func:`split` (stubs in it; not modified).
        arrays: the arrays :func:`split` took out.
        names: file tensors to feed as inputs (each must be lifted: not a sparse Constant
            or a tensor of a model-local function; see :func:`feedable`).
        feeds: the model's own inputs.
        providers: ONNX Runtime execution providers (default: CPU).

    Raises:
        InvalidOption: ONNX Runtime cannot load the model or run it on ``feeds``.
    """

    def __init__(self, model: onnx.ModelProto, arrays: Mapping, names, feeds: Mapping[str, np.ndarray], providers=None):
        import onnxruntime as ort

        m = onnx.ModelProto()
        m.CopyFrom(model)
        stubs = [(p, n) for p in _places(m) if p.tensor is not None and (n := _stub_name(p)) is not None]
        feed, fill = _lift(m, stubs)
        names = set(names)
        for name, places in fill.items():
            for p in places:
                _fill_place(p, arrays[name][0])
        self.inputs: dict[str, list[str]] = {}
        runtime = {rt: (name, t) for name, rts in feed.items() for rt, t in rts}
        declared = {v.name for v in m.graph.input}
        kept = []
        for t in m.graph.initializer:
            if t.name not in runtime:
                kept.append(t)
                continue
            name, onnx_type = runtime[t.name]
            if name not in names:
                _fill(t, arrays[name][0])
                kept.append(t)
                continue
            self.inputs.setdefault(name, []).append(t.name)
            if t.name not in declared:
                m.graph.input.append(helper.make_tensor_value_info(t.name, onnx_type, list(t.dims)))
        del m.graph.initializer[:]
        m.graph.initializer.extend(kept)
        missing = names - set(self.inputs)
        if missing:
            raise InvalidOption(f"tensors that cannot be fed to the session: {sorted(missing)[:5]}")
        self.arrays, self.feeds = arrays, dict(feeds)
        try:
            self.session = ort.InferenceSession(m.SerializeToString(), providers=providers or ["CPUExecutionProvider"])
            self.run({})
        except InvalidOption:
            raise
        except Exception as e:  # ONNX Runtime raises its own exception types
            raise InvalidOption(f"ONNX Runtime cannot run the model on these inputs ({e})") from None

    def run(self, replaced: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """The model's outputs with ``replaced`` (``{file tensor: storage array}``) in place of those tensors."""
        inputs = dict(self.feeds)
        for name, rts in self.inputs.items():
            arr = np.ascontiguousarray(replaced.get(name, self.arrays[name][0]))
            for rt in rts:
                inputs[rt] = arr
        try:
            return self.session.run(None, inputs)
        except Exception as e:  # ONNX Runtime raises its own exception types
            raise InvalidOption(f"ONNX Runtime cannot run the model on these inputs ({e})") from None


def feedable(model: onnx.ModelProto) -> set[str]:
    """The file tensors of a split model that a :class:`WeightSession` can feed (its dense stubs
    outside model-local functions)."""
    out, other = set(), set()
    for p in _places(model):
        if p.tensor is None or (name := _stub_name(p)) is None:
            continue
        graph_io = p.node is None and not p.main and p.tensor.name in {v.name for v in (*p.graph.output, *p.graph.input)}
        (other if p.part or p.in_function or graph_io else out).add(name)
    return out - other


@dataclass(frozen=True)
class Packable:
    """What :func:`pack` would write for a model, before any coding (see :func:`packable`).

    Attributes:
        model: the model with its stored tensors replaced by stubs.
        tensors: the file's tensors, ``{name: (storage array, dtype)}``, the graph ``onnx::model`` first.
        metadata: the ``ecnn.onnx`` entry the file needs.
        feedable: the tensors a :class:`WeightSession` can feed (see :func:`feedable`).
    """

    model: onnx.ModelProto
    tensors: dict
    metadata: dict
    feedable: set


def packable(source, base_dir=None) -> Packable:
    """The tensors and metadata of the file :func:`pack` writes, for callers that code them their own way
    (a budget: :func:`ecnn.budget.measured.compress_onnx`).

    Args:
        source: a ``.onnx`` path or an ``onnx.ModelProto`` (not modified).
        base_dir: folder of the model's external data (default: the ``.onnx`` file's folder).

    Raises:
        As :func:`split`; UnreadableInput for a file that is no ONNX model.
    """
    model, base = _load_onnx(source, base_dir)
    s = split(model, base)
    graph = np.frombuffer(model.SerializeToString(), dtype=np.uint8)
    return Packable(
        model=model,
        tensors={GRAPH_TENSOR: (graph, dtypes.get("uint8")), **s.arrays},
        metadata={METADATA_KEY: METADATA_VERSION_SUBGRAPHS if s.moved else METADATA_VERSION},
        feedable=feedable(model),
    )

