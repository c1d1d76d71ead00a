"""How numbers read in every view: the report, the gate's messages and the TUI.

NaN is "n/a" for a statistic that cannot be computed and "not measured" for a
measurement that was not taken; nothing is filled in.
"""
from __future__ import annotations

import math
from typing import Any

NA = "n/a"
NOT_MEASURED = "not measured"


def is_missing(x: Any) -> bool:
    """None, NaN, or a value that reads as NaN."""
    if x is None:
        return True
    try:
        return math.isnan(float(x))
    except (TypeError, ValueError):
        return False


def pct(x: Any, missing: str = NA) -> str:
    return missing if is_missing(x) else f"{100 * float(x):.1f}%"


def pts(x: Any, missing: str = NA) -> str:
    """An absolute change of a proportion, in percentage points."""
    return missing if is_missing(x) else f"{100 * float(x):+.1f} pts"


def num(x: Any, digits: int = 3, missing: str = NA) -> str:
    return missing if is_missing(x) else f"{float(x):.{digits}g}"


def fixed(x: Any, digits: int = 2, missing: str = NA) -> str:
    return missing if is_missing(x) else f"{float(x):.{digits}f}"


def count(x: Any) -> str:
    return NA if is_missing(x) else str(int(x))


def pvalue(x: Any) -> str:
    if is_missing(x):
        return NA
    return "<1e-4" if float(x) < 1e-4 else f"{float(x):.4f}"


def size_mb(x: Any) -> str:
    return NOT_MEASURED if is_missing(x) else f"{float(x) / 1e6:.1f} MB"


def ratio(x: Any) -> str:
    return NOT_MEASURED if is_missing(x) else f"{float(x):.2f}x"


def with_range(median: Any, low: Any, high: Any, digits: int = 1) -> str:
    if is_missing(median):
        return NOT_MEASURED
    text = f"{float(median):.{digits}f}"
    if not (is_missing(low) or is_missing(high)):
        text += f" ({float(low):.{digits}f}-{float(high):.{digits}f})"
    return text


def ci(low: Any, high: Any) -> str:
    return NA if is_missing(low) or is_missing(high) else f"[{100 * float(low):.1f}, {100 * float(high):.1f}]"


def level_text(x: Any) -> str:
    return "-" if is_missing(x) else f"{float(x):g}"
