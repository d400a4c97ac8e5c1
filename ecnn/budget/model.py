"""Access to the model being compressed: its state, and candidate weights put in for evaluation.

Torch is imported inside the functions, so importing this module does not
import it.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from ecnn import dtypes
from ecnn.errors import InvalidOption


def state_of(obj) -> tuple[dict, bool]:
    """``({name: tensor}, is_module)``; tied tensors appear once (the first name)."""
    import torch

    if isinstance(obj, torch.nn.Module):
        from ecnn import torch as et

        state = obj.state_dict()
        if any("parametrizations" in k.split(".") for k in state):
            raise InvalidOption(
                "the model has parametrized weights (prepared for ecnn.train?): convert it first with "
                "ecnn.train.convert_, or train to a size budget with ecnn.train.TrainConfig(target_bytes=...)"
            )
        return {g[0]: state[g[0]] for g in et.alias_groups(state)}, True
    if isinstance(obj, Mapping):
        return dict(obj), False
    raise InvalidOption(f"compress takes a torch.nn.Module or a state dict, got {type(obj).__name__}")


class Weights:
    """Puts candidate weights into the model (or a state dict copy) for evaluation, and restores them."""

    def __init__(self, obj, is_module: bool, state: dict):
        self.obj, self.is_module, self.state = obj, is_module, state
        self.orig = {n: t.detach().clone() for n, t in state.items()} if is_module else None

    def apply(self, arrays: Mapping[str, tuple[np.ndarray, dtypes.DType]]):
        """The model with ``arrays`` in place of its weights (for a state dict, a new dict)."""
        import torch

        from ecnn import torch as et

        if not self.is_module:
            out = dict(self.state)
            for n, (a, dt) in arrays.items():
                out[n] = et.from_array(a.copy(), dt).to(self.state[n].device)
            return out
        with torch.no_grad():
            for n, (a, dt) in arrays.items():
                self.state[n].copy_(et.from_array(a, dt))
        return self.obj

    def restore(self) -> None:
        """Put the model's original weights back."""
        if self.is_module:
            import torch

            with torch.no_grad():
                for n, t in self.orig.items():
                    self.state[n].copy_(t)

