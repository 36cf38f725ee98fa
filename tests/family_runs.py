"""What the model family tests share: a store's readers and DataInfo, runs of the shared loop,
and the repeat-last-value baseline written out.

Runs use one torch thread: on this project's busy 2-core machines, small convolutions with two
intra-op threads ran up to ~17× slower (a U-Net run: 12 s with one thread, 204 s with two).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from tsfs.pipeline.windows import Dataset
from tsfs.specs import FeatureSpec, ImageSpec
from tsfs.stores.store import Store
from tsfs.training.data import ImageOutput, WindowReader, open_view
from tsfs.training.loop import FitResult, TrainSpec, train
from tsfs.training.models import DataInfo


@dataclass
class Run:
    """A data set's store, what a family learns about the data, and a reader per split."""

    dataset: Dataset
    store: Store
    features: FeatureSpec | None
    images: ImageSpec | None
    info: DataInfo
    readers: dict[str, WindowReader]


def prepare(
    dataset: Dataset,
    store: Store,
    *,
    features: FeatureSpec | None = None,
    images: ImageSpec | None = None,
    image_output: ImageOutput = "clip",
) -> Run:
    view = open_view(dataset, store)
    readers = {
        split: WindowReader(
            view, split, features=features, images=images, image_output=image_output
        )
        for split in dataset.splits
    }
    first = next(iter(dataset.splits.values()))
    columns = next(iter(readers.values())).features
    forecast = first.y is not None
    info = DataInfo(
        task="forecast" if forecast else "classify",
        seq_len=first.x.shape[1],
        label_len=dataset.spec.label_len if forecast else 0,
        pred_len=dataset.spec.pred_len if forecast else 0,
        n_vars=first.x.shape[2],
        n_marks=first.x_mark.shape[2] if first.x_mark is not None else 0,
        n_classes=0 if forecast else len(dataset.classes or ()),
        feature_names=dict(columns.shapes) if columns is not None else {},
        image_size=images.size if images is not None else 0,
        image_spec=images,
    )
    return Run(
        dataset=dataset,
        store=store,
        features=features,
        images=images,
        info=info,
        readers=readers,
    )


@contextmanager
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def trained(
    model: str, run: Run, config: Any, *, steps: int, batch_size: int, lr: float
) -> FitResult:
    """``tsfs.training.loop.train`` for ``steps`` optimizer steps on the CPU (one thread)."""
    n_train = len(run.dataset.splits["train"])
    spec = TrainSpec(
        epochs=-(-steps * batch_size // n_train),
        max_steps=steps,
        batch_size=batch_size,
        lr=lr,
        device="cpu",
    )
    with one_thread():
        return train(
            model, run.dataset, run.store, spec, config, features=run.features, images=run.images
        )


def repeat_last_mse(dataset: Dataset, split: str) -> float:
    """MSE of repeating each window's last value over the pred_len target steps."""
    s = dataset.splits[split]
    assert s.y is not None
    target = s.y[:, -dataset.spec.pred_len :].astype(np.float64)
    return float(np.mean((target - s.x[:, -1:].astype(np.float64)) ** 2))
