"""Checks of descriptor fields shared by the coders."""

from __future__ import annotations

from ecnn.errors import InvalidField


def int_field(desc: dict, key: str, lo: int, hi: int) -> int:
    """``desc[key]``, which must be an integer (not a bool) in ``[lo, hi]``.

    Raises:
        InvalidField: missing, not an integer, or out of range.
    """
    v = desc.get(key)
    if type(v) is not int:  # bool is not an int here
        raise InvalidField(f"stream field {key!r} must be an integer")
    if not lo <= v <= hi:
        raise InvalidField(f"stream field {key!r}={v} out of range [{lo}, {hi}]")
    return v
