"""Entropy-constrained training: prepare a model, add the rate to the loss, convert.

In the style of torchao's prepare / convert::

    ecnn.train.prepare_(model, ecnn.train.TrainConfig(method="ect", lam=0.02))
    ...  # any loop: loss = task_loss + ecnn.train.regularizer(model)
    steps = ecnn.train.convert_(model)
    ecnn.train.narrow_(model, chain)  # with TrainConfig(group_lam=..., chain=chain): drop dead units
    ecnn.save_file(model.state_dict(), "model.ecnn", config=ecnn.train.encode_config(steps))

Importing ``ecnn`` does not import this package (it needs torch).
"""

from ecnn.train.api import (
    BUDGET_CALIBRATE_EVERY,
    BudgetStatus,
    QuantizedParam,
    TensorRate,
    budget_status,
    coder_estimate_bits,
    convert_,
    encode_config,
    estimate_bits,
    param_groups,
    prepare_,
    prune_magnitude_,
    quantized_params,
    rate_bits,
    rate_report,
    regularizer,
    settle_,
    unwrap,
)
from ecnn.train.config import METHODS, TrainConfig
from ecnn.train.structured import Narrowing, dead_units, group_penalty, narrow_

__all__ = [
    "BUDGET_CALIBRATE_EVERY",
    "BudgetStatus",
    "METHODS",
    "Narrowing",
    "QuantizedParam",
    "TensorRate",
    "TrainConfig",
    "budget_status",
    "coder_estimate_bits",
    "convert_",
    "dead_units",
    "encode_config",
    "estimate_bits",
    "group_penalty",
    "narrow_",
    "param_groups",
    "prepare_",
    "prune_magnitude_",
    "quantized_params",
    "rate_bits",
    "rate_report",
    "regularizer",
    "settle_",
    "unwrap",
]
