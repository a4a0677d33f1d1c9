"""Checks of plain-Python arguments (counts, budgets) that raise ValueError naming the argument."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def check_count(name: str, value: Any) -> int:
    """``value`` as an int if it is an integer >= 1 (not a bool), else ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def check_number(name: str, value: Any, low: float, high: float = math.inf, low_open: bool = False) -> float:
    """``value`` as a float if it is a finite number (not a bool) >= ``low`` (> ``low`` if ``low_open``)
    and <= ``high``, else ValueError naming ``name`` and the allowed range."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not (value > low if low_open else value >= low) or value > high:
        bound = f"> {low}" if low_open else f">= {low}"
        if high < math.inf:
            bound += f" and <= {high}"
        raise ValueError(f"{name} must be a number {bound}, got {value!r}")
    return float(value)


def check_finite_positive(name: str, value: Any) -> float:
    """``value`` as a float if it is a finite number > 0 (not a bool), else ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)
