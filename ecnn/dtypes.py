"""The element types a ``.ecnn`` file can hold (spec/FORMAT.md, "Element types").

Inside ecnn a tensor is a numpy array plus one of these names. Types numpy has
no native form of (bfloat16, float8) travel as unsigned integers of the same
width holding the IEEE-754 bit patterns; the name says how to read them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ecnn.errors import UnsupportedDtype


@dataclass(frozen=True)
class DType:
    name: str
    itemsize: int
    kind: str  # "f" float, "i" signed int, "u" unsigned int, "b" bool
    storage: np.dtype  # numpy dtype of the in-memory array (little-endian)

    @property
    def is_float(self) -> bool:
        return self.kind == "f"

    @property
    def int_range(self) -> tuple[int, int]:
        """Smallest and largest value of an integer or bool type."""
        if self.kind == "b":
            return 0, 1
        info = np.iinfo(self.storage)
        return int(info.min), int(info.max)


_TABLE = [
    DType("float64", 8, "f", np.dtype("<f8")),
    DType("float32", 4, "f", np.dtype("<f4")),
    DType("float16", 2, "f", np.dtype("<f2")),
    DType("bfloat16", 2, "f", np.dtype("<u2")),
    DType("float8_e4m3fn", 1, "f", np.dtype("u1")),
    DType("float8_e5m2", 1, "f", np.dtype("u1")),
    DType("int64", 8, "i", np.dtype("<i8")),
    DType("int32", 4, "i", np.dtype("<i4")),
    DType("int16", 2, "i", np.dtype("<i2")),
    DType("int8", 1, "i", np.dtype("i1")),
    DType("uint64", 8, "u", np.dtype("<u8")),
    DType("uint32", 4, "u", np.dtype("<u4")),
    DType("uint16", 2, "u", np.dtype("<u2")),
    DType("uint8", 1, "u", np.dtype("u1")),
    DType("bool", 1, "b", np.dtype("?")),
]

BY_NAME: dict[str, DType] = {d.name: d for d in _TABLE}

# numpy dtypes that map one-to-one onto a name.
_FROM_NUMPY = {
    np.dtype("float64"): "float64",
    np.dtype("float32"): "float32",
    np.dtype("float16"): "float16",
    np.dtype("int64"): "int64",
    np.dtype("int32"): "int32",
    np.dtype("int16"): "int16",
    np.dtype("int8"): "int8",
    np.dtype("uint64"): "uint64",
    np.dtype("uint32"): "uint32",
    np.dtype("uint16"): "uint16",
    np.dtype("uint8"): "uint8",
    np.dtype("bool"): "bool",
}


# safetensors' dtype codes for the types both formats hold.
SAFETENSORS: dict[str, str] = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U64": "uint64",
    "U32": "uint32",
    "U16": "uint16",
    "U8": "uint8",
    "BOOL": "bool",
}
TO_SAFETENSORS: dict[str, str] = {v: k for k, v in SAFETENSORS.items()}


def get(name: str) -> DType:
    """Look up a dtype by its name in the file."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise UnsupportedDtype(f"unsupported dtype {name!r}") from None


def from_numpy(dtype: np.dtype) -> DType:
    """The ecnn dtype of a numpy array (bfloat16 and float8 come from torch)."""
    dtype = np.dtype(dtype)
    name = _FROM_NUMPY.get(dtype.newbyteorder("=") if dtype.byteorder not in "=|" else dtype)
    if name is None:
        raise UnsupportedDtype(f"unsupported numpy dtype {dtype}")
    return BY_NAME[name]


def contiguous(arr: np.ndarray) -> np.ndarray:
    """C-contiguous version of an array, keeping 0-d arrays 0-d (unlike np.ascontiguousarray)."""
    return arr if arr.flags.c_contiguous else arr.copy(order="C")
