"""numpy variants of the API: arrays in, arrays out, no torch needed.

bfloat16 and float8 tensors come back as unsigned integer arrays holding their
bit patterns (numpy has no such types); ``EcnnFile.info(name).dtype`` names them.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from ecnn import dtypes
from ecnn import file as _file
from ecnn.config import EncodeConfig, from_options
from ecnn.container.format import Limits


def _arrays(arrays: Mapping[str, np.ndarray]):
    out = {}
    for name, a in arrays.items():
        a = np.asarray(a)
        out[name] = (a.astype(a.dtype.newbyteorder("="), copy=False), dtypes.from_numpy(a.dtype))  # native arrays uncopied: encoding only reads them
    return out


def encode(arrays, *, bits=None, step=None, lossless=False, metadata=None, config: EncodeConfig | None = None, effort=None) -> bytes:
    """Encode numpy arrays into ``.ecnn`` bytes (options as in :func:`ecnn.encode`)."""
    return _file.encode(_arrays(arrays), from_options(bits, step, lossless, config, effort), metadata)


def save_file(arrays, path, *, bits=None, step=None, lossless=False, metadata=None, config=None, effort=None) -> int:
    """Encode numpy arrays and write them to ``path`` atomically (options as in :func:`ecnn.encode`)."""
    return _file.save(_arrays(arrays), path, from_options(bits, step, lossless, config, effort), metadata)


def decode(data: bytes, *, limits: Limits = Limits(), workers: int | None = None) -> dict[str, np.ndarray]:
    """Decode ``.ecnn`` bytes into ``{name: storage array}`` (the weights: a packed ONNX graph is left out)."""
    return load_file(data, limits=limits, workers=workers)


def load_file(path, *, limits: Limits = Limits(), workers: int | None = None) -> dict[str, np.ndarray]:
    """Read a ``.ecnn`` file (or its bytes) into ``{name: storage array}``, as :func:`ecnn.load_file` does.

    Raises:
        FormatError: a subclass naming the check the file failed (LimitExceeded over ``limits``).
    """
    with _file.EcnnFile(path, limits) as f:
        return {n: a for n, (a, _) in f.arrays(names=f.weight_names(), workers=workers).items()}
