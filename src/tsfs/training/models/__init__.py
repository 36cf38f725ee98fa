"""Model families for ``tsfs train``: a plain registry of name → family.

Families are imported on first use, so ``tsfs train diffusion`` never pays for the others.
"""

from __future__ import annotations

import importlib

from tsfs.errors import InputError
from tsfs.training.models.base import DataInfo, Family, Scores

__all__ = ["FAMILIES", "DataInfo", "Family", "Scores", "family"]

# name → "module:attribute" of the family object
FAMILIES: dict[str, str] = {
    "diffusion": "tsfs.training.models.diffusion:FAMILY",
    "timellm": "tsfs.training.models.timellm:FAMILY",
    "timesclip": "tsfs.training.models.timesclip:FAMILY",
    "unet": "tsfs.training.models.unet:FAMILY",
}


def family(name: str) -> Family:
    """The registered family called ``name``.

    Raises:
        InputError: no family has that name (the message lists the ones there are).
    """
    target = FAMILIES.get(name)
    if target is None:
        raise InputError(f"unknown model {name!r}: choose one of {', '.join(sorted(FAMILIES))}")
    module, attribute = target.split(":")
    found: Family = getattr(importlib.import_module(module), attribute)
    return found
