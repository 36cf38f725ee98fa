"""Colour line-plot coverage masks into RGB exactly as matplotlib's Agg would have drawn them.

Image rows are stored as Agg's coverage mask ``a`` (uint8, 0 = background): how much of each
pixel the anti-aliased line covers. Agg paints an opaque colour ``c`` over opaque white with its
integer "plain" RGBA blender, which for a white destination reduces to

    out = ((256·c − 65025)·a + 65025·256) // (a + 65280)        (per channel, integer division)

For black (c = 0) this gives 255 − a at every level, so a line drawn in black hands back Agg's
coverage unchanged, and one stored mask yields matplotlib's own pixels in any colour. The rounded
float blend ``round(c·a/255 + 255·(1 − a/255))`` is *not* equivalent: it is one level off on a
few percent of the line's pixels.

This module is what training code uses at read time, so it must never import matplotlib (nor
torch at import time: only :func:`compose_torch` and :func:`clip_normalize` need it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, Literal, TypeVar

import numpy as np
import numpy.typing as npt

from tsfs.errors import InputError

if TYPE_CHECKING:
    import torch

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "TAB10",
    "TAB20",
    "blend_table",
    "clip_normalize",
    "compose",
    "compose_torch",
    "palette",
    "parse_color",
]

#: CLIP's image normalisation (``CLIPImageProcessor``), RGB order.
CLIP_MEAN: Final = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: Final = (0.26862954, 0.26130258, 0.27577711)

#: matplotlib's ``tab10`` and ``tab20`` qualitative colour maps, as 8-bit hex.
TAB10: Final = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)  # fmt: skip
TAB20: Final = (
    "#1f77b4", "#aec7e8", "#ff7f0e", "#ffbb78", "#2ca02c", "#98df8a", "#d62728", "#ff9896",
    "#9467bd", "#c5b0d5", "#8c564b", "#c49c94", "#e377c2", "#f7b6d2", "#7f7f7f", "#c7c7c7",
    "#bcbd22", "#dbdb8d", "#17becf", "#9edae5",
)  # fmt: skip

# matplotlib's fixed_blender_rgba_plain with an opaque white destination (p = 255, alpha 255):
# out = ((256·c − 255·255)·a + 255·255·256) // (a + 65280).
_WHITE_SQ: Final = 255 * 255
_OFFSET: Final = _WHITE_SQ * 256
_DENOM_BASE: Final = 65280

Output = Literal["uint8", "float", "clip"]
_T = TypeVar("_T", bound=np.generic)


def parse_color(color: str) -> npt.NDArray[np.uint8]:
    """``"#rrggbb"`` → (3,) uint8."""
    digits = color[1:] if color.startswith("#") else ""
    if len(digits) != 6 or any(ch not in "0123456789abcdefABCDEF" for ch in digits):
        raise InputError(f"colour {color!r} is not of the form #rrggbb (e.g. #1f77b4)")
    return np.array([int(digits[i : i + 2], 16) for i in (0, 2, 4)], dtype=np.uint8)


def palette(n_variables: int) -> npt.NDArray[np.uint8]:
    """One colour per variable, as TimesCLIP: ``tab10`` up to 10 variables, else ``tab20``.

    Beyond 20 variables ``tab20`` repeats (variable ``v`` gets ``tab20[v % 20]``).

    Returns:
        (V, 3) uint8.
    """
    if n_variables < 1:
        raise InputError(f"a palette needs at least one variable, got {n_variables}")
    names = TAB10 if n_variables <= len(TAB10) else TAB20
    return np.stack([parse_color(names[v % len(names)]) for v in range(n_variables)])


def _as_colors(colors: npt.ArrayLike) -> npt.NDArray[np.int32]:
    c = np.asarray(colors)
    if c.ndim == 0 or c.shape[-1] != 3:
        raise InputError(f"colours must have shape (..., 3), got {c.shape}")
    if c.dtype != np.uint8 and (
        not np.issubdtype(c.dtype, np.integer) or c.min(initial=0) < 0 or c.max(initial=0) > 255
    ):
        raise InputError("colours must be 8-bit RGB integers in 0..255")
    return c.astype(np.int32)


def _as_masks(m: npt.NDArray[np.generic]) -> npt.NDArray[np.uint8]:
    if m.dtype != np.uint8 or m.ndim < 2:
        raise InputError(f"masks must be uint8 (..., H, W), got {m.dtype} {m.shape}")
    return m.astype(np.uint8, copy=False)


def blend_table(colors: npt.ArrayLike) -> npt.NDArray[np.uint8]:
    """Agg's pixel for every coverage level, per colour.

    Args:
        colors: (..., 3) 8-bit RGB.

    Returns:
        (..., 256, 3) uint8: ``table[..., a, ch]`` is channel ``ch`` of the colour drawn with
        coverage ``a`` over white.
    """
    c = _as_colors(colors)[..., None, :]
    a = np.arange(256, dtype=np.int32)[:, None]
    return (((256 * c - _WHITE_SQ) * a + _OFFSET) // (a + _DENOM_BASE)).astype(np.uint8)


def compose(masks: npt.ArrayLike, colors: npt.ArrayLike) -> npt.NDArray[np.uint8]:
    """RGB images from coverage masks, one colour per mask (numpy, CPU).

    Args:
        masks: (..., H, W) uint8 coverage.
        colors: (..., 3) 8-bit RGB; leading dimensions broadcast against the masks' (a single
            (3,) colour colours every mask).

    Returns:
        (..., H, W, 3) uint8, equal to matplotlib's render of the same line in that colour.
    """
    m = _as_masks(np.asarray(masks))
    lead, flat_masks, tables = _flatten(m, blend_table(colors), 2)
    out = np.empty((len(flat_masks), *m.shape[-2:], 3), np.uint8)
    for i, mask in enumerate(flat_masks):
        # A per-image gather from a 768-byte table is ~4x faster than one big fancy index.
        np.take(tables[i], mask, axis=0, out=out[i])
    return out.reshape(*lead, *m.shape[-2:], 3)


def compose_torch(
    masks: torch.Tensor,
    colors: npt.ArrayLike | torch.Tensor,
    *,
    device: torch.device | str | None = None,
    output: Output = "uint8",
) -> torch.Tensor:
    """Channel-first RGB images from coverage masks, on any torch device.

    Pixels come from :func:`blend_table`'s table, converted to the output type before the
    gather, so ``"clip"`` output equals :func:`clip_normalize` of the ``"uint8"`` output exactly.

    Args:
        masks: (..., H, W) uint8 coverage.
        colors: (..., 3) 8-bit RGB, broadcast against the masks' leading dimensions.
        device: where the images are made; default the masks' device.
        output: ``"uint8"`` pixels, ``"float"`` pixels / 255 (float32), or ``"clip"``:
            float32 normalised with CLIP's mean and std.

    Returns:
        (..., 3, H, W) uint8 or float32 on ``device``.
    """
    import torch

    if masks.dtype != torch.uint8 or masks.ndim < 2:
        raise InputError(f"masks must be uint8 (..., H, W), got {masks.dtype} {tuple(masks.shape)}")
    c = colors.cpu().numpy() if isinstance(colors, torch.Tensor) else colors
    # (..., 3, 256): one contiguous row of levels per channel.
    table = torch.from_numpy(np.ascontiguousarray(np.swapaxes(blend_table(c), -1, -2)))
    if output == "float":
        table = table.to(torch.float32) / 255
    elif output == "clip":
        table = clip_normalize(table.unsqueeze(-2)).squeeze(-2)
    elif output != "uint8":
        raise InputError(f"output must be 'uint8', 'float' or 'clip', got {output!r}")
    dev = masks.device if device is None else torch.device(device)
    m = masks.to(dev)
    if dev.type == "cpu":
        return torch.from_numpy(_take_channels(m.numpy(), table.numpy()))
    return _take_channels_torch(m, table.to(dev))


def _take_channels(masks: npt.NDArray[np.uint8], table: npt.NDArray[_T]) -> npt.NDArray[_T]:
    """(..., H, W) levels through (..., 3, 256) tables → (..., 3, H, W), with numpy."""
    lead, flat_masks, tables = _flatten(masks, table, 2)
    out = np.empty((len(flat_masks), 3, *masks.shape[-2:]), table.dtype)
    for i, mask in enumerate(flat_masks):
        index = mask.astype(np.intp)  # converted once for the three channels
        for ch in range(3):
            np.take(tables[i, ch], index, out=out[i, ch])
    return out.reshape(*lead, 3, *masks.shape[-2:])


def _take_channels_torch(masks: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """:func:`_take_channels` on the tensors' device (one gather per channel)."""
    import torch

    lead = np.broadcast_shapes(tuple(masks.shape[:-2]), tuple(table.shape[:-2]))
    hw = masks.shape[-2:]
    flat_masks = masks.expand(*lead, *hw).reshape(-1, *hw)
    n = flat_masks.shape[0]
    tables = table.expand(*lead, 3, 256).reshape(-1)
    index = flat_masks.long() + (torch.arange(n, device=masks.device) * 768)[:, None, None]
    out = torch.empty((n, 3, *hw), dtype=table.dtype, device=masks.device)
    for ch in range(3):
        out[:, ch] = tables.take(index + 256 * ch)
    return out.reshape(*lead, 3, *hw)


def _flatten(
    masks: npt.NDArray[np.uint8], tables: npt.NDArray[_T], table_dims: int
) -> tuple[tuple[int, ...], npt.NDArray[np.uint8], npt.NDArray[_T]]:
    """Broadcast masks (..., H, W) and tables (..., *table) to one flat leading dimension."""
    lead = np.broadcast_shapes(masks.shape[:-2], tables.shape[:-table_dims])
    flat_masks = np.broadcast_to(masks, (*lead, *masks.shape[-2:])).reshape(-1, *masks.shape[-2:])
    table_shape = tables.shape[-table_dims:]
    flat_tables = np.broadcast_to(tables, (*lead, *table_shape)).reshape(-1, *table_shape)
    return lead, flat_masks, flat_tables


def clip_normalize(images: torch.Tensor) -> torch.Tensor:
    """CLIP's input normalisation: ``(pixels / 255 − mean) / std`` per channel.

    Args:
        images: (..., 3, H, W) uint8 pixels (e.g. RGB-mode images, moved channel-first).

    Returns:
        (..., 3, H, W) float32 on the images' device.
    """
    import torch

    if images.dtype != torch.uint8 or images.ndim < 3 or images.shape[-3] != 3:
        raise InputError(
            f"images must be uint8 (..., 3, H, W), got {images.dtype} {tuple(images.shape)}"
        )
    mean = torch.tensor(CLIP_MEAN, dtype=torch.float32, device=images.device)[:, None, None]
    std = torch.tensor(CLIP_STD, dtype=torch.float32, device=images.device)[:, None, None]
    return (images.to(torch.float32) / 255 - mean) / std
