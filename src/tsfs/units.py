"""Sizes as people write and read them."""

from __future__ import annotations

import math

from tsfs.errors import InputError

__all__ = ["human_bytes", "parse_size"]

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def human_bytes(n: float) -> str:
    """``1536`` → ``"1.5 KiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def parse_size(text: str, option: str = "--budget") -> int:
    """``"500M"``, ``"2.5G"``, ``"10GiB"``, ``"123456"`` → bytes (binary units)."""
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = t[-1:] if t[-1:] in _UNITS else ""
    number = t[: len(t) - len(unit)] if unit else t
    try:
        value = float(number)
    except ValueError:
        raise InputError(
            f"cannot read size {text!r} (option {option}); write e.g. 500M, 2.5G or 10GiB"
        ) from None
    if not math.isfinite(value):
        raise InputError(f"{option} must be a finite size, got {text!r}")
    size = int(value * _UNITS[unit])
    if size < 1:  # 0.5 would truncate to 0 bytes: a budget nothing fits
        raise InputError(f"{option} must be at least one byte, got {text!r}")
    return size
