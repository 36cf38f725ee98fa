"""tsfs: a time-series feature store.

Expensive per-window work (DWT prompt features, line-plot images) is computed once into
content-addressed Zarr v3 stores, so training loops read it at memory speed.
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
