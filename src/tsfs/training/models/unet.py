"""A 2D U-Net that forecasts by inpainting a line plot (VisionTS / ViTime style).

Each variable of each window (N = B·V rows) is one canvas: the stored coverage mask of the
window's line plot (its ``T`` steps over ``W`` columns) with a blank region to its right wide
enough for ``pred_len`` more steps at the same scale, plus a channel that marks the blank
region. The U-Net paints the canvas; in each column of the blank region a softmax over the
pixel rows says where the line runs, and its expectation over the rows' y values — the
stored plot's own y axis — is the forecast in that column. Column values are interpolated to
the ``pred_len`` steps and de-normalised with the window's RevIN statistics, so the scores are
comparable with any forecaster's (mse and mae over the scaled target steps).

The y axis is the images' (:class:`tsfs.specs.ImageSpec`): ``ylim="row"`` plots run from
``min − m·rng`` to ``max + m·rng`` of the window's RevIN values, so a forecast can leave the
window's range only by that margin; ``ylim="sigma"`` plots span ``±sigma``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tsfs.errors import InputError
from tsfs.specs import ImageSpec
from tsfs.training.data import Batch
from tsfs.training.models.base import DataInfo, Scores, Task
from tsfs.training.models.layers import (
    forecast_loss,
    forecast_scores,
    in_chunks,
    require_fraction,
    require_positive,
    revin,
)

__all__ = [
    "FAMILY",
    "UNet",
    "UNetConfig",
    "UNetFamily",
    "column_weights",
    "decode_columns",
    "y_limits",
]


@dataclass(frozen=True, kw_only=True)
class UNetConfig:
    """The U-Net's size.

    Attributes:
        channels: feature maps at full resolution; each level down doubles them.
        depth: levels down (each halves H and W; the canvas is padded to fit).
        dropout: dropout at the bottom of the U.
    """

    channels: int = 32
    depth: int = 3
    dropout: float = 0.1

    def __post_init__(self) -> None:
        require_positive(self, ("channels", "depth"))
        require_fraction(self, "dropout")


def y_limits(z: torch.Tensor, spec: ImageSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """The y limits of each row's stored plot (``tsfs.pipeline.render.y_limits`` in torch).

    Restated rather than imported: training never imports the renderer (it needs matplotlib).

    Args:
        z: (N, T) RevIN-normalised rows.

    Returns:
        ``(bottom, top)``, each (N,).
    """
    if spec.ylim == "sigma":
        bottom = torch.full(z.shape[:1], -spec.sigma, dtype=z.dtype, device=z.device)
        return bottom, -bottom
    lo, hi = z.min(dim=1).values, z.max(dim=1).values
    span = hi - lo
    pad = torch.where(span > 0, spec.margin * span, torch.full_like(span, 0.5))
    return lo - pad, hi + pad


def decode_columns(logits: torch.Tensor, bottom: torch.Tensor, top: torch.Tensor) -> torch.Tensor:
    """Where the line runs in each column, as a value on the plot's y axis.

    Args:
        logits: (N, H, C) per-pixel logits of the line; a softmax over the H rows of a column
            says where it runs.
        bottom, top: (N,) the plot's y limits (:func:`y_limits`).

    Returns:
        (N, C): the expectation of the rows' y values. Row ``r``'s centre lies ``(r + ½)/H``
        of the way down from ``top`` (pixel row 0 is the top of the image).
    """
    h = logits.shape[1]
    where = torch.softmax(logits.float(), dim=1)
    fraction = (torch.arange(h, device=logits.device) + 0.5) / h
    rows = top[:, None] - fraction[None] * (top - bottom)[:, None]  # (N, H)
    return torch.einsum("nhc,nh->nc", where, rows.float())


def column_weights(seq_len: int, pred_len: int, width: int, columns: int) -> torch.Tensor:
    """(pred_len, columns) linear interpolation from forecast columns to forecast steps.

    The plot puts step ``t`` at ``t / (T − 1)`` of its ``width`` pixels; forecast column ``c``
    (right of the plot) has its centre at step ``T − 1 + (c + ½)·(T − 1)/width``. Steps before
    the first centre or after the last take that column's value.
    """
    centres = seq_len - 1 + (np.arange(columns) + 0.5) * (seq_len - 1) / width
    steps = seq_len - 1 + np.arange(1, pred_len + 1, dtype=np.float64)
    # Interpolating each unit vector gives that column's weight at every step.
    weights = np.stack([np.interp(steps, centres, unit) for unit in np.eye(columns)], axis=1)
    return torch.from_numpy(weights).float()


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1),
        nn.GroupNorm(min(8, c_out), c_out),
        nn.GELU(),
        nn.Conv2d(c_out, c_out, 3, padding=1),
        nn.GroupNorm(min(8, c_out), c_out),
        nn.GELU(),
    )


class UNet(nn.Module):
    """The inpainting U-Net and its decoding to values (see the module docs)."""

    def __init__(self, info: DataInfo, config: UNetConfig) -> None:
        super().__init__()
        if info.image_spec is None:
            raise InputError("unet reads images; prep them with `tsfs prep images` first")
        self.spec = info.image_spec
        self.seq_len, self.pred_len = info.seq_len, info.pred_len
        self.target_only = info.target_only
        size = info.image_size
        # Blank columns for pred_len steps at the plot's own scale: W/(T − 1) columns a step.
        self.columns = max(1, math.ceil(info.pred_len * size / max(info.seq_len - 1, 1)))
        unit = 2**config.depth
        self.height = -(-size // unit) * unit
        self.width = -(-(size + self.columns) // unit) * unit
        self.size = size
        self.register_buffer(
            "steps", column_weights(info.seq_len, info.pred_len, size, self.columns)
        )
        self.channels = config.channels
        widths = [config.channels * 2**i for i in range(config.depth + 1)]
        self.down = nn.ModuleList(
            _block(c_in, c_out) for c_in, c_out in zip([2, *widths[:-2]], widths[:-1], strict=True)
        )
        self.bottom = nn.Sequential(_block(widths[-2], widths[-1]), nn.Dropout2d(config.dropout))
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(c, c // 2, 2, stride=2) for c in reversed(widths[1:])
        )
        self.merge = nn.ModuleList(_block(c, c // 2) for c in reversed(widths[1:]))
        self.paint = nn.Conv2d(widths[0], 1, 1)

    def canvas(self, masks: torch.Tensor) -> torch.Tensor:
        """(N, H, W) uint8 coverage → (N, 2, H', W') float: the plot and the blank-region mark."""
        n, h, w = masks.shape
        plot = torch.zeros(n, self.height, self.width, device=masks.device)
        plot[:, :h, :w] = masks.float() / 255
        blank = torch.zeros_like(plot)
        blank[:, :h, w : w + self.columns] = 1
        return torch.stack([plot, blank], dim=1)

    def paint_logits(self, canvas: torch.Tensor) -> torch.Tensor:
        """(N, 2, H', W') → (N, H', W') per-pixel logits of the line."""
        skips = []
        h = canvas
        for block in self.down:
            h = block(h)
            skips.append(h)
            h = F.max_pool2d(h, 2)
        h = self.bottom(h)
        for up, merge in zip(self.up, self.merge, strict=True):
            h = merge(torch.cat([skips.pop(), up(h)], dim=1))
        out: torch.Tensor = self.paint(h)[:, 0]
        return out

    def forward(self, x: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Forecast.

        Args:
            x: (B, T, V) windows.
            masks: (B, V, H, W) uint8 stored coverage masks of their rows.

        Returns:
            (B, pred_len, V) forecast in the units of ``x``.
        """
        b, t, v = x.shape
        z, mean, std = revin(x)
        bottom, top = y_limits(z.permute(0, 2, 1).reshape(b * v, t), self.spec)
        canvas = self.canvas(masks.reshape(b * v, *masks.shape[2:]))
        # the largest activation: the full-resolution merge's skip and upsampled halves
        row_bytes = 2 * self.channels * self.height * self.width * 4
        logits = in_chunks(self.paint_logits, canvas, row_bytes)
        region = logits[:, : self.size, self.size : self.size + self.columns]  # (N, H, C)
        forecast = self.decode(region, bottom, top).view(b, v, -1).permute(0, 2, 1)
        return forecast * std + mean

    def decode(self, region: torch.Tensor, bottom: torch.Tensor, top: torch.Tensor) -> torch.Tensor:
        """(N, H, C) logits of the forecast columns, (N,) y limits → (N, pred_len) in RevIN
        units. In float32 under ``--amp`` too: autocast would run the expectation and the
        column → step interpolation as bf16 matmuls (errors of ~0.015 in RevIN units)."""
        with torch.autocast(region.device.type, enabled=False):
            columns = decode_columns(region, bottom.float(), top.float())  # (N, C)
            steps = cast(torch.Tensor, self.steps).float()
            out: torch.Tensor = columns @ steps.T
        return out

    def forecast(self, batch: Batch) -> torch.Tensor:
        """(B, pred_len, V) forecast of a batch from its windows and stored masks."""
        out: torch.Tensor = self(batch["x"], batch["images"])
        return out


class UNetFamily:
    """``tsfs train unet``: forecasting by inpainting the stored line plots."""

    name: ClassVar[str] = "unet"
    config_type: ClassVar[type[UNetConfig]] = UNetConfig
    tasks: ClassVar[tuple[Task, ...]] = ("forecast",)
    reads_features: ClassVar[bool] = False
    reads_images: ClassVar[bool] = True
    image_output: ClassVar[str] = "mask"
    monitor: ClassVar[str] = "mse"

    def build(self, info: DataInfo, config: UNetConfig) -> nn.Module:
        if info.task != "forecast":
            raise InputError("unet forecasts; train it on a forecasting data set (ETT-style)")
        if info.image_spec is not None and info.image_spec.rgb:
            raise InputError(
                "unet reads coverage masks; these images are stored as RGB (prep them without "
                "--rgb)"
            )
        return UNet(info, config)

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        net = cast(UNet, model)
        return forecast_loss(net.forecast(batch), batch["y"], target_only=net.target_only)

    def score(self, model: nn.Module, batch: Batch) -> Scores:
        net = cast(UNet, model)
        return forecast_scores(net.forecast(batch), batch["y"], target_only=net.target_only)


FAMILY = UNetFamily()
