"""Training from the stores: loaders, the shared fit loop, the model families and metrics.

Nothing here imports ptwt or matplotlib: features and images come from the store, and a row
the store lacks is an error naming the ``tsfs prep`` command that fills it.

* :mod:`tsfs.training.data` — :func:`~tsfs.training.data.open_view`,
  :class:`~tsfs.training.data.WindowReader`, the fast
  :class:`~tsfs.training.data.StoreLoader` (chunk-aware order, resumable, sharded) and the
  map-style :class:`~tsfs.training.data.WindowDataset` with a Time-Series-Library tuple mode.
* :mod:`tsfs.training.sampler` — the epoch orders (chunk-aware, random, sequential).
* :mod:`tsfs.training.loop` — :func:`~tsfs.training.loop.train` and
  :func:`~tsfs.training.loop.fit`, what ``tsfs train`` runs.
* :mod:`tsfs.training.models` — the ``diffusion``, ``timellm``, ``timesclip`` and ``unet``
  families; :mod:`tsfs.training.metrics` — CRPS in four forms.

Example (a TSLib loop swapping its Dataset for the store's)::

    from tsfs.pipeline.sources import load
    from tsfs.specs import WindowSpec
    from tsfs.stores.store import Store
    from tsfs.training.data import WindowDataset, WindowReader, open_view

    data = load("data/ETTh1.csv", WindowSpec(seq_len=96))
    view = open_view(data, Store("tsfs-store"))
    train_set = WindowDataset(WindowReader(view, "train"), tslib=True)
    x, y, x_mark, y_mark = train_set[0]
"""
