"""PyTorch side: tensors to and from ecnn's numpy storage arrays, and loaders.

Example:
    >>> import torch, ecnn.torch                       # doctest: +SKIP
    >>> sd = ecnn.torch.load_file("model.ecnn", device="cpu")
"""

from __future__ import annotations

import numpy as np

import torch

from ecnn import dtypes
from ecnn.dtypes import contiguous as _contig
from ecnn.errors import UnsupportedDtype

_TORCH_NAMES = {
    torch.float64: "float64",
    torch.float32: "float32",
    torch.float16: "float16",
    torch.bfloat16: "bfloat16",
    torch.int64: "int64",
    torch.int32: "int32",
    torch.int16: "int16",
    torch.int8: "int8",
    torch.uint8: "uint8",
    torch.bool: "bool",
}
for _n in ("uint16", "uint32", "uint64", "float8_e4m3fn", "float8_e5m2"):
    if hasattr(torch, _n):
        _TORCH_NAMES[getattr(torch, _n)] = _n
_BY_NAME = {v: k for k, v in _TORCH_NAMES.items()}
# Types numpy lacks travel through a same-width integer view.
_VIEW_AS = {"bfloat16": torch.int16, "float8_e4m3fn": torch.uint8, "float8_e5m2": torch.uint8}


def to_array(t: torch.Tensor) -> tuple[np.ndarray, dtypes.DType]:
    """A CPU numpy storage array holding a tensor's values, and its ecnn dtype."""
    name = _TORCH_NAMES.get(t.dtype)
    if name is None:
        raise UnsupportedDtype(f"unsupported torch dtype {t.dtype}")
    dt = dtypes.get(name)
    t = t.detach().to("cpu").contiguous()
    if name in _VIEW_AS:
        t = t.view(_VIEW_AS[name])
    return t.numpy().view(dt.storage), dt


def from_array(arr: np.ndarray, dt: dtypes.DType, device="cpu") -> torch.Tensor:
    """A torch tensor from a numpy storage array (shares memory when on CPU)."""
    if dt.name not in _BY_NAME:
        raise UnsupportedDtype(f"this torch build has no {dt.name}")
    shape = arr.shape
    if arr.size == 0:  # numpy may give empty arrays zero strides; torch's views dislike them
        return torch.empty(shape, dtype=_BY_NAME[dt.name], device=device)
    arr = _contig(arr)
    if dt.name in _VIEW_AS:
        flat = arr.reshape(-1)
        t = torch.from_numpy(flat.view(np.int16) if dt.itemsize == 2 else flat).view(_BY_NAME[dt.name]).reshape(shape)
    else:
        t = torch.from_numpy(arr)
    return t.to(device) if str(device) != "cpu" else t


def to_arrays(tensors) -> dict[str, tuple[np.ndarray, dtypes.DType]]:
    """Convert a mapping of torch tensors and/or numpy arrays."""
    out = {}
    for name, v in tensors.items():
        if isinstance(v, torch.Tensor):
            out[name] = to_array(v)
        else:
            a = np.asarray(v)
            out[name] = (a.astype(a.dtype.newbyteorder("=")), dtypes.from_numpy(a.dtype))
    return out


def load_file(path, device="cpu", dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """Decode a ``.ecnn`` file into a state dict on ``device``.

    Args:
        path: the ``.ecnn`` file.
        device: where the tensors go.
        dtype: if given, floating-point tensors are cast to it.
    """
    from ecnn.file import EcnnFile

    out = {}
    with EcnnFile(path) as f:
        f.check_padding()
        for name in f.keys():
            t = f.get_tensor(name, device)
            if dtype is not None and t.is_floating_point():
                t = t.to(dtype)
            out[name] = t
    return out
