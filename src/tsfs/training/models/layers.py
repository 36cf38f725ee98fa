"""Small blocks the model families share: RevIN, patching, a transformer encoder, heads, scores.

Shapes: B batch, T time, V variables, N = B·V rows (channel-independent models treat every
variable of every window as its own row), P patches, D model width.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from tsfs.errors import InputError
from tsfs.pipeline.normalize import REVIN_EPS
from tsfs.training.models.base import Scores

__all__ = [
    "FlattenHead",
    "PatchEmbedding",
    "TransformerEncoder",
    "forecast_loss",
    "forecast_scores",
    "in_chunks",
    "patch_count",
    "require_positive",
    "revin",
    "row_positions",
]


# On the CPU, glibc maps every allocation above 32 MiB afresh and the kernel zeroes each of
# its pages; activations under this size are recycled from the heap instead.
_CPU_ACTIVATION_BYTES = 24 << 20


def in_chunks(
    fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, row_bytes: int
) -> torch.Tensor:
    """``fn(x)`` of a row-wise ``fn`` (each output row depends on its input row only), run on
    the CPU over chunks of rows whose largest activation, ``row_bytes`` a row, stays under
    24 MiB.

    A whole batch of images through a convolutional net allocates hundreds of MB a layer; on
    the CPU those pages cost more than the arithmetic (a 64-px U-Net step over 224 canvases:
    17–31 s whole, 11 s in chunks of 8, system time from ~50% to nil). Gradients flow through
    the chunks as through the whole batch. Elsewhere (CUDA keeps freed blocks) ``fn(x)``.

    Args:
        fn: (N, ...) → (N, ...).
        x: (N, ...) rows.
        row_bytes: bytes of ``fn``'s largest intermediate tensor per row.
    """
    rows = max(1, _CPU_ACTIVATION_BYTES // max(1, row_bytes))
    if x.device.type != "cpu" or len(x) <= rows:
        return fn(x)
    return torch.cat([fn(x[i : i + rows]) for i in range(0, len(x), rows)])


def require_positive(config: object, names: Iterable[str]) -> None:
    """Check a config's sizes: each field in ``names`` must be at least 1.

    Raises:
        InputError: naming the first field that is not, and its value.
    """
    for name in names:
        value = getattr(config, name)
        if value < 1:
            raise InputError(f"{name} must be at least 1, got {value}")


def require_fraction(config: object, name: str) -> None:
    """Check a probability such as dropout: in [0, 1).

    Raises:
        InputError: naming the field and its value.
    """
    value = getattr(config, name)
    if not 0 <= value < 1:  # NaN fails too
        raise InputError(f"{name} must be in [0, 1), got {value}")


def require_divisible(config: object, width: str, heads: str) -> None:
    """Check that attention's width splits evenly over its heads.

    Raises:
        InputError: naming both fields and their values.
    """
    w, h = getattr(config, width), getattr(config, heads)
    if w % h:
        raise InputError(f"{width} ({w}) must be a multiple of {heads} ({h})")


def revin(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Time-LLM's ``Normalize(affine=False)``: each variable of each window to zero mean.

    Args:
        x: (B, T, V) windows.

    Returns:
        ``(z, mean, std)``: z (B, T, V); mean and std (B, 1, V), ``std = sqrt(var_pop + 1e-5)``,
        so a forecast ``f`` in z units is ``f * std + mean`` in the data's units.
    """
    mean = x.mean(dim=1, keepdim=True)
    std = torch.sqrt(x.var(dim=1, keepdim=True, unbiased=False) + REVIN_EPS)
    return (x - mean) / std, mean, std


def patch_count(seq_len: int, patch_len: int, stride: int) -> int:
    """Patches of a padded row: Time-LLM's ``int((seq_len - patch_len) / stride + 2)``.

    Raises:
        InputError: ``patch_len`` longer than the rows.
    """
    if patch_len > seq_len:
        raise InputError(
            f"patch_len ({patch_len}) exceeds the rows' length ({seq_len}); set a shorter one "
            "with -c patch_len=N"
        )
    return (seq_len - patch_len) // stride + 2


class PatchEmbedding(nn.Module):
    """Rows → overlapping patches → D-wide tokens (Time-LLM / PatchTST patching).

    The row is padded at its end by repeating its last value ``stride`` times (as Time-LLM's
    ``ReplicationPad1d((0, stride))``), so the last steps get a patch of their own.

    ``mix_neighbours``: Time-LLM's ``TokenEmbedding``, a bias-free circular convolution of
    width 3 along the patches (Kaiming-initialised), so that each token sees its neighbours
    too; otherwise PatchTST's linear projection of each patch alone.
    """

    def __init__(
        self,
        *,
        patch_len: int,
        stride: int,
        d_model: int,
        dropout: float,
        mix_neighbours: bool = False,
    ) -> None:
        super().__init__()
        self.patch_len = patch_len
        self.stride = stride
        self.project: nn.Module
        if mix_neighbours:
            self.project = nn.Conv1d(
                patch_len, d_model, 3, padding=1, padding_mode="circular", bias=False
            )
            nn.init.kaiming_normal_(self.project.weight, mode="fan_in", nonlinearity="leaky_relu")
        else:
            self.project = nn.Linear(patch_len, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        """(N, T) → (N, P, D) with P = :func:`patch_count`."""
        padded = F.pad(rows[:, None, :], (0, self.stride), mode="replicate")[:, 0]
        patches = padded.unfold(-1, self.patch_len, self.stride)  # (N, P, patch_len)
        if isinstance(self.project, nn.Conv1d):  # along the patches: (N, patch_len, P)
            tokens = self.project(patches.transpose(1, 2)).transpose(1, 2)
        else:
            tokens = self.project(patches)
        out: torch.Tensor = self.dropout(tokens)
        return out


class TransformerEncoder(nn.Module):
    """Pre-norm transformer encoder with a learned position embedding and a final LayerNorm."""

    def __init__(
        self,
        *,
        d_model: int,
        n_heads: int,
        n_layers: int,
        d_ff: int,
        dropout: float,
        max_len: int,
    ) -> None:
        super().__init__()
        self.position = nn.Parameter(torch.zeros(1, max_len, d_model))
        nn.init.normal_(self.position, std=0.02)
        layer = nn.TransformerEncoderLayer(
            d_model,
            n_heads,
            dim_feedforward=d_ff,
            dropout=dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        # Nested tensors are never used with pre-norm layers; saying so avoids a warning.
        self.layers = nn.TransformerEncoder(
            layer, n_layers, norm=nn.LayerNorm(d_model), enable_nested_tensor=False
        )

    def forward(self, tokens: torch.Tensor, padding: torch.Tensor | None = None) -> torch.Tensor:
        """(N, L, D) tokens (``padding`` (N, L) bool, True = ignore) → (N, L, D).

        Positions count a row's own tokens, padding skipped: a left-padded row's first token
        is at position 0 however long its batch-mates are, so its output does not depend on
        them.
        """
        if padding is None:
            position = self.position[:, : tokens.shape[1]]
        else:
            position = self.position[0, row_positions(padding)]
        out: torch.Tensor = self.layers(tokens + position, src_key_padding_mask=padding)
        return out


def row_positions(padding: torch.Tensor) -> torch.Tensor:
    """(N, L) bool padding (True = not a token) → (N, L) int64 position of each token in its
    row, padding skipped (0 on the padding itself)."""
    return ((~padding).cumsum(dim=1) - 1).clamp(min=0)


class FlattenHead(nn.Module):
    """Time-LLM's head: the tokens of one row, flattened, → ``pred_len`` values."""

    def __init__(self, *, n_inputs: int, pred_len: int, dropout: float) -> None:
        super().__init__()
        self.linear = nn.Linear(n_inputs, pred_len)
        self.dropout = nn.Dropout(dropout)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(N, ...) → (N, pred_len)."""
        out: torch.Tensor = self.dropout(self.linear(tokens.flatten(1)))
        return out


def forecast_loss(
    forecast: torch.Tensor, y: torch.Tensor, *, target_only: bool = False
) -> torch.Tensor:
    """Mean squared error of a (B, pred_len, V) forecast against the last pred_len steps of y
    (of the last variable alone with ``target_only``: ``--features MS``)."""
    v = slice(-1, None) if target_only else slice(None)
    return F.mse_loss(forecast[..., v].float(), y[:, -forecast.shape[1] :, v].float())


def forecast_scores(
    forecast: torch.Tensor, y: torch.Tensor, *, target_only: bool = False
) -> Scores:
    """Squared and absolute errors of a point forecast over the target steps, summed.

    Args:
        forecast: (B, pred_len, V) point forecast.
        y: (B, label_len + pred_len, V) the batch's targets; the last ``pred_len`` steps count
            (as Time-Series-Library scores them, on the scaled values).
        target_only: score the last variable alone (``--features MS``, TSLib's f_dim = -1).

    Returns:
        ``mse`` and ``mae`` as (sum, element count), so a split's mean is exact.
    """
    v = slice(-1, None) if target_only else slice(None)
    error = forecast[..., v].float() - y[:, -forecast.shape[1] :, v].float()
    n = error.numel()
    return {"mse": (error.square().sum(), n), "mae": (error.abs().sum(), n)}
