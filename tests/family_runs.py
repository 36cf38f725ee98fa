"""A minimal training run of a model family over a real store, for the model family tests.

Only what a family needs from a loop: build it from the data, take optimiser steps on its
``loss``, and average its ``score`` over a split as (sum, count) pairs. Runs use one torch
thread: small convolutions with two threads on a busy 2-core machine ran 10× slower.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from tsfs.pipeline.windows import Dataset
from tsfs.specs import FeatureSpec, ImageSpec
from tsfs.stores.store import Store
from tsfs.training.data import ImageOutput, StoreLoader, WindowReader, open_view
from tsfs.training.models import DataInfo, Family


@dataclass
class Run:
    store: Store
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
    reader = next(iter(readers.values()))
    forecast = first.y is not None
    info = DataInfo(
        task="forecast" if forecast else "classify",
        seq_len=first.x.shape[1],
        label_len=dataset.spec.label_len if forecast else 0,
        pred_len=dataset.spec.pred_len if forecast else 0,
        n_vars=first.x.shape[2],
        n_marks=first.x_mark.shape[2] if first.x_mark is not None else 0,
        n_classes=len(dataset.classes or ()) if not forecast else 0,
        feature_names=(
            {n: reader.features.shapes[n] for n in reader.features.names}
            if reader.features is not None
            else {}
        ),
        image_size=images.size if images is not None else 0,
        image_spec=images,
    )
    return Run(store=store, info=info, readers=readers)


@contextmanager
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def fit(
    family: Family,
    run: Run,
    config: Any,
    *,
    steps: int,
    batch_size: int = 32,
    lr: float = 1e-3,
    seed: int = 0,
) -> nn.Module:
    """``steps`` AdamW steps on the train split, in random order, from seed ``seed``."""
    torch.manual_seed(seed)
    model = family.build(run.info, config)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr)
    loader = StoreLoader(run.readers["train"], batch_size=batch_size, order="random", seed=seed)
    model.train()
    done = 0
    with one_thread():
        while done < steps:
            for batch in loader:
                loss = family.loss(model, batch)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                done += 1
                if done == steps:
                    break
    return model


def evaluate(family: Family, model: nn.Module, run: Run, split: str) -> dict[str, float]:
    """Every metric of ``split``: the sum over its batches divided by the count."""
    sums: dict[str, list[float]] = {}
    model.eval()
    with torch.no_grad(), one_thread():
        for batch in StoreLoader(run.readers[split], batch_size=64, order="sequential"):
            for name, (total, count) in family.score(model, batch).items():
                acc = sums.setdefault(name, [0.0, 0.0])
                acc[0] += float(total)
                acc[1] += count
    return {name: total / count for name, (total, count) in sums.items()}


def repeat_last_mse(dataset: Dataset, split: str) -> float:
    """MSE of repeating each window's last value over the pred_len target steps."""
    s = dataset.splits[split]
    assert s.y is not None
    target = s.y[:, -dataset.spec.pred_len :].astype(np.float64)
    return float(np.mean((target - s.x[:, -1:].astype(np.float64)) ** 2))
