"""What every model family gives the shared training loop (:func:`tsfs.training.loop.fit`).

A family is a small object with a frozen keyword-only config class and four methods. The loop
owns everything else — device, AMP, OOM back-off, gradient clipping, checkpoints, resumption,
progress, metrics files — so a family only says how to build its network, what one batch
costs, and how to score a batch.

Batches are :class:`tsfs.training.data.Batch` dicts already on the model's device:
``x`` (B, T, V); forecasting adds ``y`` (B, label_len + pred_len, V), ``x_mark``, ``y_mark``;
classification adds ``labels`` (B,); ``features`` name → (B, V, ...) when the family reads
features; ``images`` (B, V, 3, H, W) float (CLIP-normalised when ``image_output="clip"``) when
it reads images.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import torch
from torch import nn

from tsfs.specs import ImageSpec
from tsfs.training.data import Batch

__all__ = ["DataInfo", "Family", "FamilyConfig", "Scores"]

Task = Literal["forecast", "classify"]

# A batch's scores: metric name → (sum over the batch's items, number of items). The loop adds
# sums and counts over an evaluation pass and divides once, so every metric is an exact mean
# over the split whatever the batch size. A ratio over the whole split (CSDI's normalised CRPS:
# quantile loss / Σ|y|) gives its numerator and denominator in the same way, hence the float.
Scores = Mapping[str, tuple[torch.Tensor, float]]


@dataclass(frozen=True, kw_only=True)
class DataInfo:
    """What a family needs to know about the data to build its network.

    Attributes:
        task: ``forecast`` (ETT-style windows) or ``classify`` (UEA-style samples).
        seq_len: T, the input length.
        label_len, pred_len: forecasting target layout (0 for classification).
        n_vars: V, variables per window.
        n_marks: time-feature columns of ``x_mark`` / ``y_mark`` (0 for classification).
        n_classes: classes (classification only, else 0).
        feature_names: the feature outputs the batch carries, with their per-row shapes
            (after B and V), e.g. ``{"energy": (4,), "min": ()}``; empty when not read.
        image_size: H = W of the stored images; 0 when not read.
        image_spec: how the stored images were drawn (y limits, margin), for families that
            map pixels back to values; None when images are not read.
        target_only: ``--features MS``: losses and scores cover only the last variable, the
            target, as Time-Series-Library's ``f_dim = -1`` does (inputs stay all variables).
    """

    task: Task
    seq_len: int
    label_len: int
    pred_len: int
    n_vars: int
    n_marks: int
    n_classes: int
    feature_names: Mapping[str, tuple[int, ...]]
    image_size: int
    image_spec: ImageSpec | None = None
    target_only: bool = False


class FamilyConfig(Protocol):
    """A family's config: a frozen keyword-only dataclass whose every field has a default.

    A config may have ``val_windows: int``: the loop then scores at most that many val windows
    after each epoch, evenly spread (0: all), for families whose scoring is costly.
    """

    def __init__(self, **kwargs: Any) -> None: ...


class Family(Protocol):
    """One model family, registered by name in :data:`tsfs.training.models.FAMILIES`.

    Attributes:
        name: the ``tsfs train MODEL`` name.
        config_type: the family's config dataclass (``config_type()`` gives the defaults).
        tasks: the tasks the family trains on.
        reads_features: the loader must read the features namespace.
        reads_images: the loader must read the images namespace.
        image_output: how the loader composes images (``clip``, ``float``, ``uint8``, ``mask``).
        monitor: the validation metric that picks the best checkpoint (lower is better).
    """

    name: str
    config_type: type[Any]
    tasks: tuple[Task, ...]
    reads_features: bool
    reads_images: bool
    image_output: str
    monitor: str

    def build(self, info: DataInfo, config: Any) -> nn.Module:
        """The family's network for this data."""
        ...

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        """The scalar training loss of one batch (called under autocast by the loop)."""
        ...

    def score(self, model: nn.Module, batch: Batch) -> Scores:
        """Evaluation scores of one batch (called under ``torch.no_grad`` in eval mode).

        Forecasters report at least ``mse`` and ``mae`` of their point forecast over the
        ``pred_len`` target steps (on the scaled values, as Time-Series-Library reports them);
        classifiers report ``accuracy``.
        """
        ...
