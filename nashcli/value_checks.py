"""Checks of plain values read back from files (state.pt holds Python ints and floats), where
isinstance alone misleads: a bool is an int, and a float may be NaN or infinite."""

import math


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_finite_number(value: object) -> bool:
    """An int, or a float that is neither NaN nor infinite (never a bool)."""
    return is_int(value) or (isinstance(value, float) and math.isfinite(value))
