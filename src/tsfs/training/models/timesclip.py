"""TimesCLIP-style model (arXiv 2506.24124): a line plot and its series, aligned, then a head.

Every variable of every window (N = B·V rows) is seen twice: as its stored line-plot image
(composed to CLIP-normalised RGB in the variable's colour) through an **image branch**, and as
numbers through a **series branch** (a transformer over patches). An InfoNCE loss pulls the
two embeddings of the same row together and pushes the other rows of the batch away; the task
head reads both:

- forecasting (ETT-style): the series tokens, flattened, and the image embedding →
  ``pred_len`` values per row, in RevIN units, de-normalised (RevIN as Time-LLM);
- classification (UEA-style): the two embeddings of each variable, concatenated over the
  variables → class logits. The series branch sees the values as loaded (no RevIN): the
  stored images are drawn per row and carry no amplitude, so the series must.

The image branch is a small CNN by default. ``image_weights`` loads pretrained weights for it
from a local file (a ``state_dict`` saved with ``torch.save``, read with ``weights_only``);
nothing is ever downloaded. ``freeze_image`` keeps those weights fixed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, cast

import torch
import torch.nn.functional as F
from torch import nn

from tsfs.errors import InputError
from tsfs.training.data import Batch
from tsfs.training.models.base import DataInfo, Scores, Task
from tsfs.training.models.layers import (
    FlattenHead,
    PatchEmbedding,
    TransformerEncoder,
    forecast_loss,
    forecast_scores,
    in_chunks,
    patch_count,
    require_divisible,
    require_fraction,
    require_positive,
    revin,
)

__all__ = ["FAMILY", "ImageEncoder", "TimesCLIP", "TimesCLIPConfig", "TimesCLIPFamily", "info_nce"]


@dataclass(frozen=True, kw_only=True)
class TimesCLIPConfig:
    """TimesCLIP's settings (small defaults that train on a CPU).

    Attributes:
        d_model: width of both branches' embeddings.
        patch_len, stride: the series branch's patches.
        n_layers, n_heads, d_ff: the series branch's transformer.
        channels: the image CNN's channels per stage (each stage halves H and W).
        dropout: dropout in the series branch and the heads.
        temperature: InfoNCE temperature (CLIP's initial 0.07).
        align_weight: weight of the InfoNCE loss beside the task loss.
        image_weights: a local ``torch.save`` state_dict of :class:`ImageEncoder` to start from.
        freeze_image: do not train the image branch (with ``image_weights``: a frozen encoder).
    """

    d_model: int = 64
    patch_len: int = 16
    stride: int = 8
    n_layers: int = 2
    n_heads: int = 4
    d_ff: int = 128
    channels: tuple[int, ...] = (16, 32, 64)
    dropout: float = 0.1
    temperature: float = 0.07
    align_weight: float = 0.1
    image_weights: str | None = None
    freeze_image: bool = False

    def __post_init__(self) -> None:
        require_positive(self, ("d_model", "patch_len", "stride", "n_layers", "n_heads", "d_ff"))
        require_divisible(self, "d_model", "n_heads")
        require_fraction(self, "dropout")
        if not self.channels or min(self.channels) < 1:
            raise InputError(f"channels must be positive numbers, got {self.channels}")
        if not self.temperature > 0:  # NaN too
            raise InputError(f"temperature must be positive, got {self.temperature}")
        if not self.align_weight >= 0:  # a negative weight would reward misalignment
            raise InputError(f"align_weight must be 0 or more, got {self.align_weight}")


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """CLIP's symmetric InfoNCE of N pairs: row i of ``a`` belongs with row i of ``b``.

    Args:
        a, b: (N, D) embeddings (normalised here).

    Returns:
        The mean of the cross-entropies of a→b and b→a over the cosine similarities.
    """
    logits = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T / temperature
    target = torch.arange(len(a), device=a.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


class ImageEncoder(nn.Module):
    """(N, 3, H, W) images → (N, D): strided 3×3 convolutions, a 4×4 pool, a linear map.

    The pool keeps a coarse layout (where the line runs), which a line plot is about.
    """

    def __init__(self, *, channels: tuple[int, ...], d_model: int) -> None:
        super().__init__()
        self.first_channels = channels[0]
        stages: list[nn.Module] = []
        before = 3
        for c in channels:
            stages += [nn.Conv2d(before, c, 3, stride=2, padding=1), nn.GELU()]
            before = c
        self.stages = nn.Sequential(*stages, nn.AdaptiveAvgPool2d(4), nn.Flatten())
        self.project = nn.Linear(before * 16, d_model)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) → (N, D)."""
        # the largest activation: the first (stride-2) stage's output
        h, w = -(-images.shape[-2] // 2), -(-images.shape[-1] // 2)
        row_bytes = self.first_channels * h * w * 4
        out: torch.Tensor = self.project(in_chunks(self.stages, images, row_bytes))
        return out


class TimesCLIP(nn.Module):
    """Image and series branches with InfoNCE alignment and a forecasting or class head."""

    def __init__(self, info: DataInfo, config: TimesCLIPConfig) -> None:
        super().__init__()
        self.task = info.task
        self.target_only = info.target_only
        self.config = config
        d = config.d_model
        self.image = ImageEncoder(channels=config.channels, d_model=d)
        if config.image_weights is not None:
            self.image.load_state_dict(_load_weights(config.image_weights))
        self.image.requires_grad_(not config.freeze_image)
        self.n_patches = patch_count(info.seq_len, config.patch_len, config.stride)
        self.patches = PatchEmbedding(
            patch_len=config.patch_len, stride=config.stride, d_model=d, dropout=config.dropout
        )
        self.series = TransformerEncoder(
            d_model=d,
            n_heads=config.n_heads,
            n_layers=config.n_layers,
            d_ff=config.d_ff,
            dropout=config.dropout,
            max_len=self.n_patches,
        )
        self.head: nn.Module
        if info.task == "forecast":
            self.head = FlattenHead(
                n_inputs=d * (self.n_patches + 1), pred_len=info.pred_len, dropout=config.dropout
            )
        else:
            self.head = nn.Sequential(
                nn.Flatten(),
                nn.Dropout(config.dropout),
                nn.Linear(2 * d * info.n_vars, info.n_classes),
            )

    def forward(self, x: torch.Tensor, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Task output and alignment loss.

        Args:
            x: (B, T, V) windows.
            images: (B, V, 3, H, W) their rows' images, CLIP-normalised.

        Returns:
            ``(out, align)``: out (B, pred_len, V) forecast or (B, classes) logits; align the
            InfoNCE loss of the batch's B·V rows.
        """
        b, t, v = x.shape
        if self.task == "forecast":
            z, mean, std = revin(x)
        else:
            z = x
        rows = z.permute(0, 2, 1).reshape(b * v, t)
        tokens = self.series(self.patches(rows))  # (N, P, D)
        series = tokens.mean(dim=1)  # (N, D)
        seen = self.image(images.reshape(b * v, *images.shape[2:]).to(x.dtype))  # (N, D)
        align = info_nce(series, seen, self.config.temperature)
        if self.task == "forecast":
            forecast: torch.Tensor = self.head(torch.cat([tokens, seen[:, None]], dim=1))
            return forecast.view(b, v, -1).permute(0, 2, 1) * std + mean, align
        logits: torch.Tensor = self.head(torch.cat([series, seen], dim=-1).view(b, v, -1))
        return logits, align

    def outputs(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`forward` on a batch's windows and images."""
        out: tuple[torch.Tensor, torch.Tensor] = self(batch["x"], batch["images"])
        return out


def _load_weights(path: str) -> dict[str, torch.Tensor]:
    p = Path(path)
    if not p.is_file():
        raise InputError(
            f"image_weights {path!r} is not a file; give a local torch.save state_dict"
        )
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for a file that is not a checkpoint
        raise InputError(f"image_weights {path!r}: not a readable state_dict ({e})") from None
    if not isinstance(state, dict):
        raise InputError(
            f"image_weights {path!r}: holds a {type(state).__name__}, not a state_dict"
        )
    return state


class TimesCLIPFamily:
    """``tsfs train timesclip``: images and series aligned; forecasting or classification."""

    name: ClassVar[str] = "timesclip"
    config_type: ClassVar[type[TimesCLIPConfig]] = TimesCLIPConfig
    tasks: ClassVar[tuple[Task, ...]] = ("forecast", "classify")
    reads_features: ClassVar[bool] = False
    reads_images: ClassVar[bool] = True
    image_output: ClassVar[str] = "clip"
    # The task loss (mse or cross-entropy): one lower-is-better metric for both tasks.
    monitor: ClassVar[str] = "loss"

    def build(self, info: DataInfo, config: TimesCLIPConfig) -> nn.Module:
        if info.image_size < 1:
            raise InputError("timesclip reads images; prep them with `tsfs prep images` first")
        return TimesCLIP(info, config)

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        net = cast(TimesCLIP, model)
        out, align = net.outputs(batch)
        if "labels" in batch:
            task = F.cross_entropy(out.float(), batch["labels"])
        else:
            task = forecast_loss(out, batch["y"], target_only=net.target_only)
        return task + net.config.align_weight * align

    def score(self, model: nn.Module, batch: Batch) -> Scores:
        net = cast(TimesCLIP, model)
        out, _ = net.outputs(batch)
        if "labels" in batch:
            labels = batch["labels"]
            right = (out.argmax(dim=-1) == labels).sum()
            loss = F.cross_entropy(out.float(), labels, reduction="sum")
            return {"accuracy": (right, len(labels)), "loss": (loss, len(labels))}
        scores = dict(forecast_scores(out, batch["y"], target_only=net.target_only))
        scores["loss"] = scores["mse"]
        return scores


FAMILY = TimesCLIPFamily()
