"""U-Net family: its y axis against matplotlib's plots, the column-to-step interpolation, and a
short ETTh1 96→96 run on stored 16-pixel plots that beats repeating the last value.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from family_runs import Run, prepare, repeat_last_mse, trained

from tsfs.errors import InputError
from tsfs.pipeline.normalize import revin
from tsfs.pipeline.prep import prep_images
from tsfs.pipeline.render import render_rows
from tsfs.pipeline.render import y_limits as render_y_limits
from tsfs.pipeline.sources import load
from tsfs.specs import ImageSpec, WindowSpec
from tsfs.stores.store import Store
from tsfs.training.models import family
from tsfs.training.models.unet import UNetConfig, column_weights, decode_columns, y_limits

REPO = Path(__file__).resolve().parents[1]
ETTH1 = REPO / "data" / "ETTh1.csv"
# Small plots and a narrow U-Net: a CPU run takes seconds.
IMAGES = ImageSpec(size=16)
SMALL = UNetConfig(channels=8, depth=3)


@pytest.fixture(scope="module")
def ett(tmp_path_factory: pytest.TempPathFactory) -> Run:
    # Every 8th window: 1,057 train and 349 test windows, 7 masks each.
    dataset = load(ETTH1, WindowSpec(seq_len=96, label_len=48, pred_len=96, stride=8))
    store = Store(tmp_path_factory.mktemp("unet") / "store", mode="a")
    prep_images(dataset, IMAGES, store)
    return prepare(dataset, store, images=IMAGES, image_output="mask")


@pytest.mark.parametrize("spec", [ImageSpec(), ImageSpec(ylim="sigma", sigma=2.0)])
def test_y_limits_are_the_renderers(spec: ImageSpec) -> None:
    rng = np.random.default_rng(0)
    rows = np.concatenate([rng.normal(size=(5, 96)), np.full((1, 96), 3.0)]).astype(np.float32)
    z, _, _ = revin(rows)
    want = render_y_limits(z, spec)
    bottom, top = y_limits(torch.from_numpy(z), spec)
    np.testing.assert_allclose(bottom.numpy(), want[:, 0], rtol=1e-6)
    np.testing.assert_allclose(top.numpy(), want[:, 1], rtol=1e-6)


@pytest.mark.parametrize("spec", [ImageSpec(size=64), ImageSpec(size=64, ylim="sigma")])
def test_columns_of_a_matplotlib_plot_decode_to_the_line(spec: ImageSpec) -> None:
    """A column's coverage, taken as the distribution over rows, decodes to the line's value
    at the column's centre: the decoder's y axis is the plot matplotlib drew."""
    t = np.arange(96)
    rows = np.stack([0.02 * t, 5 - 0.3 * t, np.sin(t / 9.0) + 0.01 * t]).astype(np.float32)
    masks = render_rows(rows, spec).astype(np.float64)  # (3, H, W)
    z, _, _ = revin(rows)
    bottom, top = y_limits(torch.from_numpy(z), spec)
    decoded = decode_columns(torch.from_numpy(np.log(masks + 1e-12)), bottom, top).numpy()
    centres = (np.arange(spec.size) + 0.5) * 95 / spec.size
    pixels = [
        (decoded[i] - np.interp(centres, t, z[i])) / float(top[i] - bottom[i]) * spec.size
        for i in range(3)
    ]
    # Straight lines: the stroke is symmetric about the centre, to a twentieth of a pixel.
    assert np.abs(pixels[0]).max() < 0.05
    assert np.abs(pixels[1]).max() < 0.05
    # A curve: within half a pixel (curvature shifts a column's centroid), ends aside (half
    # the stroke's cap is clipped there).
    assert np.abs(pixels[2][1:-1]).max() < 0.5


def test_column_weights_interpolate_linearly_between_column_centres() -> None:
    seq_len, pred_len, width, columns = 96, 96, 16, 17
    weights = column_weights(seq_len, pred_len, width, columns).numpy()
    assert weights.shape == (pred_len, columns)
    np.testing.assert_allclose(weights.sum(axis=1), 1, rtol=1e-6)
    centres = seq_len - 1 + (np.arange(columns) + 0.5) * (seq_len - 1) / width
    steps = seq_len - 1 + np.arange(1, pred_len + 1)
    line = 0.3 * centres - 2  # a straight line through the column centres…
    got = weights @ line
    inside = (steps >= centres[0]) & (steps <= centres[-1])
    np.testing.assert_allclose(got[inside], (0.3 * steps - 2)[inside], rtol=1e-5)  # …is kept
    np.testing.assert_allclose(got[~inside], line[np.where(steps[~inside] < centres[0], 0, -1)])


def test_build_refuses_what_it_cannot_read(ett: Run) -> None:
    run = ett
    with pytest.raises(InputError, match="tsfs prep images"):
        family("unet").build(dataclasses.replace(run.info, image_spec=None), SMALL)
    rgb = dataclasses.replace(IMAGES, rgb=True)
    with pytest.raises(InputError, match="without --rgb"):
        family("unet").build(dataclasses.replace(run.info, image_spec=rgb), SMALL)
    with pytest.raises(InputError, match="depth"):
        UNetConfig(depth=0)


def test_forecast_has_the_target_shape_and_stays_on_the_plot(ett: Run) -> None:
    run = ett
    torch.manual_seed(0)
    model = family("unet").build(run.info, SMALL)
    batch = run.readers["test"].read(np.arange(4))
    x, masks = torch.from_numpy(batch.x), torch.from_numpy(batch.images)
    with torch.no_grad():
        out = model(x, masks)
    assert out.shape == (4, 96, 7)
    # Every value lies within the plot's y range, mapped back to the data's units.
    z, mean, std = revin(batch.x.transpose(0, 2, 1).reshape(-1, 96))
    limits = render_y_limits(z, IMAGES) * std[:, None] + mean[:, None]
    values = out.numpy().transpose(0, 2, 1).reshape(-1, 96)
    assert (values >= limits[:, :1] - 1e-4).all()
    assert (values <= limits[:, 1:] + 1e-4).all()


def test_decoding_stays_float32_under_mixed_precision(ett: Run) -> None:
    """--amp: autocast ran the decoding's matmuls in bf16 (errors ~0.015 in RevIN units)."""
    model = family("unet").build(ett.info, SMALL)
    g = torch.Generator().manual_seed(0)
    region = torch.randn(6, IMAGES.size, model.columns, generator=g) * 4
    bottom, top = -torch.rand(6, generator=g) - 1, torch.rand(6, generator=g) + 1
    plain = model.decode(region, bottom, top)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = model.decode(region.bfloat16(), bottom, top)
    assert mixed.dtype == torch.float32
    # the only difference left: the logits rounded to bf16 on the way in
    torch.testing.assert_close(mixed, model.decode(region.bfloat16().float(), bottom, top))
    assert (mixed - plain).abs().max() < 0.05


def test_etth1_96_beats_repeating_the_last_value(ett: Run) -> None:
    result = trained("unet", ett, SMALL, steps=80, batch_size=16, lr=3e-3)
    test = result.metrics["test"]
    baseline = repeat_last_mse(ett.dataset, "test")
    print(f"unet test mse {test['mse']:.4f} mae {test['mae']:.4f}, repeat-last {baseline:.4f}")
    assert test["mse"] < 0.8 * baseline
