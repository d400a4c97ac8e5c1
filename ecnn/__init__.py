"""ecnn: small neural-network weight files that load back fast.

Quantization plus arithmetic coding with context models, in a ``.ecnn``
container (spec/FORMAT.md). Importing ecnn does not import torch; the
functions that return torch tensors import it when called.
"""

from ecnn import errors
from ecnn.api import decode, encode, load_file, open, save_file
from ecnn.config import EncodeConfig
from ecnn.container.format import FORMAT_MAJOR, FORMAT_MINOR, Limits
from ecnn.file import EcnnFile, TensorInfo

__version__ = "0.1.0"

_LAZY = {"compress": "ecnn.budget", "BudgetConfig": "ecnn.budget"}


def __getattr__(name):  # compress-to-a-budget loads on first use
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ecnn' has no attribute {name!r}")

__all__ = [
    "encode",
    "decode",
    "save_file",
    "load_file",
    "open",
    "EcnnFile",
    "TensorInfo",
    "EncodeConfig",
    "compress",
    "BudgetConfig",
    "Limits",
    "errors",
    "FORMAT_MAJOR",
    "FORMAT_MINOR",
    "__version__",
]
