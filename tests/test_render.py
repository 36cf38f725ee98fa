"""Line-plot images against matplotlib's own rendering: identical pixels, not "close".

The oracle is a fresh pyplot figure per image, written out here the way the TimesCLIP recipe
states it; the y-limit rule is restated from the spec. Masks are checked through colour: composed
in colour c they must equal matplotlib's render in colour c, byte for byte.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import matplotlib as mpl

mpl.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import numpy.typing as npt
import pytest
import torch

from tsfs.errors import DataError, InputError
from tsfs.pipeline.compose import (
    _take_channels,
    _take_channels_torch,
    blend_table,
    clip_normalize,
    compose,
    compose_torch,
    palette,
    parse_color,
)
from tsfs.pipeline.normalize import revin
from tsfs.pipeline.render import Renderer, RenderPool, render_rows
from tsfs.specs import ImageSpec

ETTH1 = Path(__file__).resolve().parents[1] / "data" / "ETTh1.csv"
TAB10 = [tuple(round(255 * v) for v in c) for c in mpl.colormaps["tab10"].colors]
PRIMARIES = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (128, 128, 128)]


@pytest.fixture(scope="module")
def etth1() -> npt.NDArray[np.float32]:
    """ETTh1's seven variables, (17420, 7) float32."""
    return np.loadtxt(ETTH1, delimiter=",", skiprows=1, usecols=range(1, 8), dtype=np.float32)


def windows(data: npt.NDArray[np.float32], length: int, count: int) -> npt.NDArray[np.float32]:
    """``count`` rows of ``length`` values, spread over the file and cycling through variables."""
    starts = np.linspace(0, data.shape[0] - length, count).astype(int)
    return np.stack([data[s : s + length, i % data.shape[1]] for i, s in enumerate(starts)])


def pyplot_image(z: npt.NDArray[np.float32], spec: ImageSpec, color: object) -> np.ndarray:
    """What matplotlib draws for one normalised row: (H, W, 3) uint8."""
    if spec.ylim == "sigma":
        bottom, top = -spec.sigma, spec.sigma
    else:
        lo, hi = float(z.min()), float(z.max())
        rng = hi - lo
        bottom, top = (
            (lo - 0.5, hi + 0.5) if rng == 0 else (lo - spec.margin * rng, hi + spec.margin * rng)
        )
    fig = plt.figure(figsize=(spec.size / 100, spec.size / 100), dpi=100, facecolor="white")
    try:
        ax = fig.add_axes((0, 0, 1, 1))
        ax.axis("off")
        ax.plot(z, color=color, linewidth=spec.linewidth, antialiased=spec.antialiased)
        ax.set_xlim(0, len(z) - 1)
        ax.set_ylim(bottom, top)
        fig.canvas.draw()
        return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    finally:
        plt.close(fig)


def masks_of(z: npt.NDArray[np.float32], spec: ImageSpec) -> npt.NDArray[np.uint8]:
    out = np.empty((z.shape[0], spec.size, spec.size), np.uint8)
    Renderer(spec, z.shape[1]).render_masks(z, out)
    return out


def hex_of(rgb: tuple[int, ...]) -> str:
    return "#" + "".join(f"{v:02x}" for v in rgb)


def synthetic_rows(length: int) -> npt.NDArray[np.float32]:
    t = np.arange(length, dtype=np.float32)
    spike = np.zeros(length, np.float32)
    spike[length // 3] = 1.0
    steps = (t >= length // 2).astype(np.float32)
    return np.stack(
        [
            np.full(length, 7.25, np.float32),  # constant: ±0.5 limits, a snapped horizontal line
            spike,
            steps,
            np.sin(t / 3) * np.float32(3e30),  # huge magnitudes
            np.where(t % 2 == 0, 1.0, -1.0).astype(np.float32),  # a zigzag at every sample
        ]
    )


@pytest.mark.parametrize("length", [37, 96, 512, 720])
def test_rgb_mode_equals_matplotlib(etth1: npt.NDArray[np.float32], length: int) -> None:
    spec = ImageSpec(rgb=True)
    rows = np.concatenate([windows(etth1, length, 6), synthetic_rows(length)])
    z, _, _ = revin(rows)
    out = np.empty((len(z), 224, 224, 3), np.uint8)
    Renderer(spec, length).render_rgb(z, out)
    for i, row in enumerate(z):
        np.testing.assert_array_equal(out[i], pyplot_image(row, spec, spec.color), f"row {i}")


@pytest.mark.parametrize("length", [37, 96, 512, 720])
def test_masks_composed_in_any_colour_equal_matplotlib(
    etth1: npt.NDArray[np.float32], length: int
) -> None:
    spec = ImageSpec()
    colors = TAB10 + PRIMARIES
    rows = np.concatenate([windows(etth1, length, len(colors) - 3), synthetic_rows(length)[:3]])
    z, _, _ = revin(rows)
    masks = masks_of(z, spec)
    # Every row in its own colour, plus one row in every colour.
    pairs = [(i, c) for i, c in enumerate(colors)] + [(0, c) for c in colors[1:]]
    for i, color in pairs:
        expected = pyplot_image(z[i], spec, hex_of(color))
        np.testing.assert_array_equal(compose(masks[i], color), expected, f"row {i} in {color}")


def test_rounded_float_blend_is_not_exact(etth1: npt.NDArray[np.float32]) -> None:
    """Why compose uses Agg's integer blend: the textbook float blend misses pixels."""
    z, _, _ = revin(windows(etth1, 512, 1))
    mask = masks_of(z, ImageSpec())[0]
    color = np.array(TAB10[0])
    a = mask[..., None] / 255
    float_blend = np.round(color * a + 255 * (1 - a)).astype(np.uint8)
    expected = pyplot_image(z[0], ImageSpec(), hex_of(TAB10[0]))
    assert (float_blend != expected).any()
    np.testing.assert_array_equal(compose(mask, color), expected)


@pytest.mark.parametrize(
    "spec",
    [
        ImageSpec(ylim="sigma", sigma=1.5),  # rows leave the canvas: clipped by Agg
        ImageSpec(antialiased=False),
        ImageSpec(size=64, linewidth=0.8, margin=0.0),
        ImageSpec(size=101, linewidth=3.0, margin=0.2),
    ],
    ids=["sigma", "aliased", "small-thin", "odd-thick"],
)
def test_other_specs_equal_matplotlib(etth1: npt.NDArray[np.float32], spec: ImageSpec) -> None:
    length = 96
    z, _, _ = revin(np.concatenate([windows(etth1, length, 4), synthetic_rows(length)]))
    masks = masks_of(z, spec)
    color = TAB10[3]
    for i, row in enumerate(z):
        expected = pyplot_image(row, spec, hex_of(color))
        np.testing.assert_array_equal(compose(masks[i], color), expected, f"row {i}")
    if not spec.antialiased:
        assert set(np.unique(masks)) == {0, 255}


def test_normalised_values_outside_the_canvas_are_clipped_exactly() -> None:
    """z is normally bounded by RevIN; the renderer still matches Agg for any finite input."""
    spec = ImageSpec(ylim="sigma", sigma=3.5)
    z = np.linspace(-1e6, 1e6, 96, dtype=np.float32)[None, :] * np.sin(np.arange(96))[None, :]
    z = z.astype(np.float32)
    out = np.empty((1, 224, 224, 3), np.uint8)
    Renderer(ImageSpec(ylim="sigma", sigma=3.5, rgb=True), 96).render_rgb(z, out)
    np.testing.assert_array_equal(out[0], pyplot_image(z[0], spec, "#1f77b4"))


def test_user_style_does_not_change_pixels(etth1: npt.NDArray[np.float32]) -> None:
    z, _, _ = revin(windows(etth1, 512, 3))
    expected = masks_of(z, ImageSpec())
    style = {
        "path.simplify": False,
        "path.simplify_threshold": 0.5,
        "agg.path.chunksize": 128,
        "lines.solid_joinstyle": "miter",
        "lines.solid_capstyle": "butt",
        "lines.antialiased": False,
    }
    with mpl.rc_context(style):
        np.testing.assert_array_equal(masks_of(z, ImageSpec()), expected)


def test_colour_spec_is_the_rgb_mode_colour(etth1: npt.NDArray[np.float32]) -> None:
    spec = ImageSpec(rgb=True, color="#D62728")
    z, _, _ = revin(windows(etth1, 96, 2))
    out = np.empty((2, 224, 224, 3), np.uint8)
    renderer = Renderer(spec, 96)
    renderer.render_rgb(z, out)
    np.testing.assert_array_equal(out[1], pyplot_image(z[1], spec, "tab:red"))
    per_row = np.empty_like(out)
    renderer.render_rgb(z, per_row, colors=np.array([TAB10[0], TAB10[2]], np.uint8))
    np.testing.assert_array_equal(per_row[1], pyplot_image(z[1], spec, "tab:green"))


def test_renderer_refuses_bad_input() -> None:
    renderer = Renderer(ImageSpec(), 16)
    out = np.empty((1, 224, 224), np.uint8)
    with pytest.raises(InputError, match="shape"):
        renderer.render_masks(np.zeros((1, 17), np.float32), out)
    with pytest.raises(InputError, match="out must be"):
        renderer.render_masks(np.zeros((1, 16), np.float32), np.empty((1, 224, 224, 3), np.uint8))
    bad = np.zeros((2, 16), np.float32)
    bad[1, 3] = np.nan
    with pytest.raises(DataError, match="row 1"):
        renderer.render_masks(bad, np.empty((2, 224, 224), np.uint8))
    with pytest.raises(InputError, match="at least 2"):
        Renderer(ImageSpec(), 1)


# --- compose --------------------------------------------------------------------------------


def test_blend_table_is_agg_integer_blend() -> None:
    """Restated from matplotlib's fixed_blender_rgba_plain over an opaque white pixel."""
    colors = np.array(TAB10 + PRIMARIES, np.int64)
    table = blend_table(colors)
    assert table.shape == (len(colors), 256, 3)
    for c, t in zip(colors, table, strict=True):
        for a in range(256):
            alpha = ((a + 255) << 8) - a * 255  # the blended pixel's alpha · 256
            expected = [((ch * 256 - 255 * 255) * a + 255 * 255 * 256) // alpha for ch in c]
            assert t[a].tolist() == expected
    np.testing.assert_array_equal(table[:, 0], 255)  # no coverage: white
    np.testing.assert_array_equal(table[:, 255], colors)  # full coverage: the colour
    # Drawing in black loses nothing: 255 − the black pixel is the coverage, at every level,
    # so masks reproduce every colour, not just the ones tested against matplotlib here.
    np.testing.assert_array_equal(255 - blend_table([0, 0, 0])[:, 0].astype(int), np.arange(256))


def test_compose_broadcasts_one_colour_per_mask() -> None:
    rng = np.random.default_rng(0)
    masks = rng.integers(0, 256, size=(2, 3, 5, 4), dtype=np.uint8)  # (B, V, H, W)
    colors = palette(3)  # (V, 3)
    rgb = compose(masks, colors)
    assert rgb.shape == (2, 3, 5, 4, 3)
    for b in range(2):
        for v in range(3):
            np.testing.assert_array_equal(rgb[b, v], blend_table(colors[v])[masks[b, v]])
    np.testing.assert_array_equal(compose(masks, colors[0]), blend_table(colors[0])[masks])


def test_compose_torch_matches_numpy_and_clip_normalises() -> None:
    rng = np.random.default_rng(1)
    masks = rng.integers(0, 256, size=(4, 3, 6, 5), dtype=np.uint8)
    colors = palette(3)
    expected = np.moveaxis(compose(masks, colors), -1, -3)  # (..., 3, H, W)
    t = torch.from_numpy(masks)
    rgb = compose_torch(t, colors)
    assert rgb.dtype == torch.uint8
    np.testing.assert_array_equal(rgb.numpy(), expected)
    np.testing.assert_array_equal(compose_torch(t, torch.from_numpy(colors)).numpy(), expected)
    unit = compose_torch(t, colors, output="float")
    np.testing.assert_allclose(unit.numpy(), expected / 255, rtol=1e-6)
    clip = compose_torch(t, colors, output="clip")
    mean = np.array([0.48145466, 0.4578275, 0.40821073])[:, None, None]
    std = np.array([0.26862954, 0.26130258, 0.27577711])[:, None, None]
    np.testing.assert_allclose(clip.numpy(), (expected / 255 - mean) / std, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(clip_normalize(rgb).numpy(), clip.numpy())
    with pytest.raises(InputError):
        compose_torch(t.float(), colors)
    with pytest.raises(InputError):
        compose_torch(t, colors, output="rgb")  # type: ignore[arg-type]
    with pytest.raises(InputError):
        clip_normalize(rgb.float())


def test_device_gather_equals_cpu_gather() -> None:
    """The gather used on accelerators, run here on CPU tensors (CI has no GPU)."""
    rng = np.random.default_rng(2)
    masks = torch.from_numpy(rng.integers(0, 256, size=(2, 1, 6, 5), dtype=np.uint8))
    table = torch.from_numpy(np.swapaxes(blend_table(palette(3)), -1, -2).copy())  # (3, 3, 256)
    for t in (table, table.float() / 255):
        expected = _take_channels(masks.numpy(), t.numpy())
        assert expected.shape == (2, 3, 3, 6, 5)
        np.testing.assert_array_equal(_take_channels_torch(masks, t).numpy(), expected)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_compose_torch_on_gpu_equals_cpu() -> None:
    masks = torch.randint(0, 256, (8, 7, 64, 64), dtype=torch.uint8)
    colors = palette(7)
    cpu = compose_torch(masks, colors, output="clip")
    gpu = compose_torch(masks, colors, device="cuda", output="clip")
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu)
    np.testing.assert_array_equal(
        compose_torch(masks.cuda(), colors).cpu().numpy(), compose_torch(masks, colors).numpy()
    )


def test_palette_is_matplotlib_tab10_then_tab20() -> None:
    tab20 = [tuple(round(255 * v) for v in c) for c in mpl.colormaps["tab20"].colors]
    assert [tuple(c) for c in palette(7)] == TAB10[:7]
    assert [tuple(c) for c in palette(10)] == TAB10
    assert [tuple(c) for c in palette(12)] == tab20[:12]
    assert [tuple(c) for c in palette(25)] == tab20 + tab20[:5]
    with pytest.raises(InputError):
        palette(0)


def test_colours_are_validated() -> None:
    assert parse_color("#FF7f0E").tolist() == [255, 127, 14]
    for bad in ("red", "#ff7f0", "#gg0000", "ff7f0e1"):
        with pytest.raises(InputError):
            parse_color(bad)
    with pytest.raises(InputError):
        compose(np.zeros((2, 2), np.uint8), [256, 0, 0])
    with pytest.raises(InputError):
        compose(np.zeros((2, 2), np.float32), [0, 0, 0])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"color": "blue"},
        {"margin": -0.1},
        {"margin": float("nan")},
        {"sigma": 0.0},
        {"linewidth": float("inf")},
        {"size": 4},
    ],
)
def test_image_spec_validation(kwargs: dict[str, object]) -> None:
    with pytest.raises(InputError):
        ImageSpec(**kwargs)  # type: ignore[arg-type]


def test_compose_never_imports_matplotlib_or_torch() -> None:
    code = (
        "import sys, tsfs.pipeline.compose\n"
        "bad = [m for m in ('matplotlib', 'torch') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- pools ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pool() -> Iterator[RenderPool]:
    with RenderPool(ImageSpec(), 96, jobs=2, chunk_rows=16) as p:
        yield p


def test_pool_equals_one_process_and_reuses_buffers(
    etth1: npt.NDArray[np.float32], pool: RenderPool
) -> None:
    rows = windows(etth1, 96, 150)
    expected = render_rows(rows, ImageSpec())
    z, _, _ = revin(rows)
    np.testing.assert_array_equal(expected, masks_of(z, ImageSpec()))
    small = pool.render(rows[:10]).copy()
    np.testing.assert_array_equal(small, expected[:10])
    big = pool.render(rows)  # grows the shared buffers
    np.testing.assert_array_equal(big, expected)
    out = np.zeros_like(expected[:40])
    assert pool.render(rows[40:80], out=out) is out
    np.testing.assert_array_equal(out, expected[40:80])


def test_pool_reports_bad_rows_and_keeps_working(
    etth1: npt.NDArray[np.float32], pool: RenderPool
) -> None:
    rows = windows(etth1, 96, 40)
    overflow = rows.copy()
    overflow[33, :2] = 3.4e38  # finite, but x − mean overflows float32 inside RevIN
    overflow[33, 2:] = -3.4e38
    with pytest.raises(DataError, match="row 33"):
        pool.render(overflow)
    nan = rows.copy()
    nan[5, 7] = np.nan
    with pytest.raises(DataError, match="row 5"):
        pool.render(nan)
    with pytest.raises(InputError):
        pool.render(rows[:, :95])
    np.testing.assert_array_equal(pool.render(rows), render_rows(rows, ImageSpec()))


def test_pool_rgb_mode_and_closed_pool(etth1: npt.NDArray[np.float32]) -> None:
    spec = ImageSpec(rgb=True, size=48)
    rows = windows(etth1, 37, 9)
    images = render_rows(rows, spec, jobs=2)  # stays readable after the pool is gone
    z, _, _ = revin(rows)
    for i in (0, 8):
        np.testing.assert_array_equal(images[i], pyplot_image(z[i], spec, spec.color))
    with RenderPool(spec, 37) as one_process:
        np.testing.assert_array_equal(one_process.render(rows), images)
    with pytest.raises(InputError, match="closed"):
        one_process.render(rows)
    with pytest.raises(InputError):
        RenderPool(spec, 37, jobs=0)
    with pytest.raises(InputError, match="at least 2 values"):  # raised in a worker
        RenderPool(spec, 1, jobs=2)


def test_pool_raises_when_a_worker_dies(etth1: npt.NDArray[np.float32]) -> None:
    rows = windows(etth1, 37, 8)
    pool = RenderPool(ImageSpec(size=32), 37, jobs=2)
    pool.render(rows)
    victim = pool._procs[0]
    victim.kill()
    victim.join()
    with pytest.raises(RuntimeError, match="exited unexpectedly"):
        pool.render(rows)
    with pytest.raises(InputError, match="closed"):
        pool.render(rows)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"margin": 1e308}, "--margin must be a fraction of the row's range from 0 to 1000"),
        ({"margin": -0.1}, "--margin must be"),
        ({"ylim": "sigma", "sigma": 1e-300}, "--sigma must be from 0.001 to 1e"),
        ({"ylim": "sigma", "sigma": float("inf")}, "ImageSpec.sigma must be a finite number"),
    ],
)
def test_y_limits_that_matplotlib_would_not_draw_are_refused(
    settings: dict[str, object], message: str
) -> None:
    """A margin of 1e308 overflows the limits to ±inf (blank masks where matplotlib raises);
    a sigma of 1e-300 is widened by matplotlib to ±0.05, so its pixels would differ."""
    with pytest.raises(InputError, match=message):
        ImageSpec(**settings)  # type: ignore[arg-type]


def test_image_batches_are_sized_by_bytes() -> None:
    """A worker holds a batch whole: 2,048 masks of 224² (98 MiB), but 1024² RGB images
    (3 MiB each) 85 at a time, never more than 256 MiB."""
    from tsfs.pipeline.prep import _image_batch_rows

    assert _image_batch_rows(ImageSpec()) == 2048
    for size, rgb in ((1024, True), (2048, True), (512, False)):
        rows = _image_batch_rows(ImageSpec(size=size, rgb=rgb))
        per_image = size * size * (3 if rgb else 1)
        assert rows * per_image <= 256 << 20 < (rows + 1) * per_image
    assert _image_batch_rows(ImageSpec(size=1024, rgb=True)) == 85


def test_rows_that_would_overflow_when_normalised_are_refused_before_any_write(
    tmp_path: Path,
) -> None:
    """Values near float32's limit overflow in RevIN: refused as the file is read, in one
    line naming the cell, no numpy warning, no store (a batch's check came after thousands
    of rows were committed)."""
    stamps = np.datetime64("2020-01-01T00:00") + np.arange(60) * np.timedelta64(1, "h")
    lines = ["date,a,OT"] + [
        f"{str(t).replace('T', ' ')}:00,{3e38 * np.sin(i):.6g},{i}" for i, t in enumerate(stamps)
    ]
    (tmp_path / "big.csv").write_text("\n".join(lines) + "\n")
    done = subprocess.run(
        [
            sys.executable, "-m", "tsfs", "prep", "images", str(tmp_path / "big.csv"),
            "--seq-len", "8", "--label-len", "1", "--pred-len", "1", "--no-scale", "--size", "16",
            "--store", str(tmp_path / "s"), "-q", "--jobs", "1",
        ],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    (line,) = done.stderr.splitlines()
    assert "big.csv line 3, column 'a': 2.52441e+38 is beyond ±1e+38" in line
    assert not (tmp_path / "s").exists()
