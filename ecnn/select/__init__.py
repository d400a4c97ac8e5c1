"""Choosing the model and coder of each stream, driven by the :class:`ecnn.config.Effort` policy.

The coders (:mod:`ecnn.coder`) only code: integers and a model in, bytes out.
This package decides which coder and model a stream gets:

* :mod:`ecnn.select.stream` -- the cheapest coder of one stream (:func:`choose`,
  :func:`encode_best`, or :func:`encode_choice` to code a choice made before);
* :mod:`ecnn.select.classes` -- class counts for the row/column context models,
  ranked on a sample and planned on every row (also for the ``blocks`` heads of
  ``fields``: :func:`plan_blocks`);
* :mod:`ecnn.select.lanes` -- the parameters of the sparse-lane model, searched
  on a sample of lanes.

Sizes are estimated with :mod:`ecnn.context.rate`. Nothing here imports torch,
the container or the codec.
"""

from ecnn.select.classes import plan_blocks
from ecnn.select.stream import Choice, choose, encode_best, encode_choice, raw_width

__all__ = ["Choice", "choose", "encode_best", "encode_choice", "plan_blocks", "raw_width"]
