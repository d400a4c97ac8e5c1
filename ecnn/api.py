"""The public API: a small, symmetric set of functions in the style of safetensors.

Tensors go in as a mapping of names to ``torch.Tensor`` or numpy arrays and
come out as ``torch.Tensor`` (``ecnn.numpy`` has the numpy variants).
"""

from __future__ import annotations

import os
from typing import Mapping

from ecnn import file as _file
from ecnn.config import EncodeConfig, from_options
from ecnn.container.format import Limits


class File(_file.EcnnFile):
    """An opened ``.ecnn`` file whose tensors decode as ``torch.Tensor`` (what :func:`open` returns).

    Opening checks the header and every record; torch is imported only when a
    tensor is decoded.
    """

    def get_tensor(self, name: str, device="cpu"):
        """Decode one tensor as a ``torch.Tensor`` on ``device``."""
        from ecnn import torch as et

        arr, dt = self.get_array(name)
        return et.from_array(arr, dt, device)


def _arrays(tensors):
    from ecnn import torch as et

    return et.to_arrays(tensors)


def encode(
    tensors: Mapping,
    *,
    bits: int | None = None,
    step: float | None = None,
    lossless: bool = False,
    metadata: Mapping[str, str] | None = None,
    config: EncodeConfig | None = None,
    effort: str | None = None,
) -> bytes:
    """Encode tensors into the bytes of a ``.ecnn`` file.

    Args:
        tensors: names to ``torch.Tensor`` or numpy arrays (a state dict).
        bits: quantize float weights (2-D and up) to this many bits per tensor.
        step: quantize float weights with this fixed step instead.
        lossless: keep every value bit-exact.
        metadata: string-to-string map stored in the file.
        config: a full :class:`~ecnn.config.EncodeConfig` instead of the other options.
        effort: how hard the encoder searches for context models: ``"best"`` (the
            default), ``"balanced"`` or ``"fast"`` (see ``EncodeConfig.effort``).

    With none of ``bits``, ``step`` and ``lossless``, weights are quantized to 8 bits.
    1-D float tensors (biases, norms) and integer tensors are always stored exactly.

    Returns:
        The file's bytes.

    Raises:
        InvalidOption, UnsupportedDtype, InvalidTensorName.

    Example:
        >>> import torch, ecnn
        >>> data = ecnn.encode({"w": torch.ones(4, 4)}, bits=8)
        >>> ecnn.decode(data)["w"].shape
        torch.Size([4, 4])
    """
    return _file.encode(_arrays(tensors), from_options(bits, step, lossless, config, effort), metadata)


def save_file(
    tensors: Mapping,
    path: str | os.PathLike,
    *,
    bits: int | None = None,
    step: float | None = None,
    lossless: bool = False,
    metadata: Mapping[str, str] | None = None,
    config: EncodeConfig | None = None,
    effort: str | None = None,
) -> int:
    """Encode tensors and write them to ``path`` atomically; returns the file size.

    Options as in :func:`encode`.
    """
    return _file.save(_arrays(tensors), path, from_options(bits, step, lossless, config, effort), metadata)


def decode(data: bytes, *, device="cpu", limits: Limits = Limits()) -> dict:
    """Decode the bytes of a ``.ecnn`` file into ``{name: torch.Tensor}``, as :func:`load_file` does.

    Raises:
        FormatError: a subclass naming the check the data failed.
    """
    return load_file(data, device, limits=limits)


def load_file(path: str | os.PathLike, device="cpu", *, limits: Limits = Limits()) -> dict:
    """Read a ``.ecnn`` file into ``{name: torch.Tensor}`` on ``device``.

    The same tensors as :func:`ecnn.torch.load_file` gives (which this calls):
    the weights, without the graph of a packed ONNX model.

    Raises:
        FormatError: a subclass naming the check the file failed (LimitExceeded over ``limits``).
    """
    with _file.EcnnFile(path, limits) as f:  # the file's checks run before torch is imported
        f.check_padding()
        from ecnn import torch as et

        return dict(et.iter_tensors(f, f.weight_names(), device))


def open(path, *, limits: Limits = Limits()) -> _file.EcnnFile:  # noqa: A001 - mirrors safe_open
    """Open a ``.ecnn`` file (or its bytes) to list tensors and decode them one at a time.

    Example:
        >>> import torch, ecnn
        >>> f = ecnn.open(ecnn.encode({"a": torch.zeros(3), "b": torch.ones(2, 2)}))
        >>> f.keys()
        ['a', 'b']
        >>> f.get_tensor("b").sum().item()
        4.0
    """
    return File(path, limits)
