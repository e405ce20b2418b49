"""Argument checks shared by the modules: errors that name the bad value."""

import numbers


def check_integer(name, value, minimum):
    """Raises a ValueError naming `name` and `value` unless `value` is an integer >= `minimum` (bools are not)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"`{name}` must be {kind}. Received: {name}={value!r}")
