"""TimesCLIP family: InfoNCE against its definition, image weights from a local file only, and
short runs on stored images: BasicMotions accuracy and ETTh1 96→96 against repeating the last
value.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from family_runs import Run, prepare, repeat_last_mse, trained

from tsfs.errors import InputError
from tsfs.pipeline.prep import prep_images
from tsfs.pipeline.sources import load
from tsfs.pipeline.windows import Dataset
from tsfs.specs import ImageSpec, WindowSpec
from tsfs.stores.store import Store
from tsfs.training.data import StoreLoader
from tsfs.training.loop import FitResult
from tsfs.training.models import family
from tsfs.training.models.timesclip import ImageEncoder, TimesCLIP, TimesCLIPConfig, info_nce

REPO = Path(__file__).resolve().parents[1]
ETTH1 = REPO / "data" / "ETTh1.csv"
BASIC_MOTIONS = REPO.parent / "shared" / "data" / "BasicMotions_TRAIN.ts"
IMAGES = ImageSpec(size=32)
SMALL = TimesCLIPConfig(d_model=32, n_layers=1, d_ff=64, channels=(8, 16, 32))
# The forecasting run weighs alignment more than the default, so a short run shows it too.
TRAINED = dataclasses.replace(SMALL, align_weight=0.5)


def stored_images(tmp: Path, dataset: Dataset) -> Run:
    store = Store(tmp / "store", mode="a")
    prep_images(dataset, IMAGES, store)
    return prepare(dataset, store, images=IMAGES, image_output="clip")


@pytest.fixture(scope="module")
def ett(tmp_path_factory: pytest.TempPathFactory) -> Run:
    # Every 8th window: 1,057 train and 349 test windows, 7 images each.
    dataset = load(ETTH1, WindowSpec(seq_len=96, label_len=48, pred_len=96, stride=8))
    return stored_images(tmp_path_factory.mktemp("timesclip-ett"), dataset)


def test_info_nce_is_clips_symmetric_cross_entropy() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(6, 5)), rng.normal(size=(6, 5))
    t = 0.1
    an = a / np.linalg.norm(a, axis=1, keepdims=True)
    bn = b / np.linalg.norm(b, axis=1, keepdims=True)
    logits = an @ bn.T / t

    def cross_entropy(rows: np.ndarray) -> float:
        # -log softmax(row)[i] for row i, averaged
        return float(np.mean([np.log(np.exp(r).sum()) - r[i] for i, r in enumerate(rows)]))

    want = (cross_entropy(logits) + cross_entropy(logits.T)) / 2
    got = info_nce(torch.from_numpy(a), torch.from_numpy(b), t)
    assert float(got) == pytest.approx(want, rel=1e-9)


def test_image_weights_come_from_a_local_file_only(ett: Run, tmp_path: Path) -> None:
    run = ett
    source = ImageEncoder(channels=SMALL.channels, d_model=SMALL.d_model)
    torch.save(source.state_dict(), tmp_path / "image.pt")
    config = dataclasses.replace(SMALL, image_weights=str(tmp_path / "image.pt"), freeze_image=True)
    model = family("timesclip").build(run.info, config)
    assert isinstance(model, TimesCLIP)
    for name, p in model.image.state_dict().items():
        assert torch.equal(p, source.state_dict()[name])
    assert not any(p.requires_grad for p in model.image.parameters())
    assert all(p.requires_grad for p in model.series.parameters())

    with pytest.raises(InputError, match="not a file"):
        family("timesclip").build(run.info, dataclasses.replace(SMALL, image_weights="absent.pt"))
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(InputError, match="not a state_dict"):
        family("timesclip").build(
            run.info, dataclasses.replace(SMALL, image_weights=str(tmp_path / "list.pt"))
        )


def test_build_without_images_names_the_prep_step(ett: Run) -> None:
    run = ett
    with pytest.raises(InputError, match="tsfs prep images"):
        family("timesclip").build(dataclasses.replace(run.info, image_size=0), SMALL)


@pytest.fixture(scope="module")
def forecaster(ett: Run) -> FitResult:
    return trained("timesclip", ett, TRAINED, steps=60, batch_size=16, lr=2e-3)


def test_images_and_series_of_a_row_align(ett: Run, forecaster: FitResult) -> None:
    """A short run lowers InfoNCE on test rows clearly below chance (log of the batch's rows)."""
    model = forecaster.model
    assert isinstance(model, TimesCLIP)
    batch = next(iter(StoreLoader(ett.readers["test"], batch_size=16, order="sequential")))
    with torch.no_grad():
        _, align = model.outputs(batch)
    print(f"timesclip InfoNCE on 112 test rows {float(align):.3f}, chance {np.log(112):.3f}")
    assert float(align) < 0.88 * np.log(16 * 7)


def test_etth1_96_beats_repeating_the_last_value(ett: Run, forecaster: FitResult) -> None:
    test = forecaster.metrics["test"]
    baseline = repeat_last_mse(ett.dataset, "test")
    print(f"timesclip test mse {test['mse']:.4f} mae {test['mae']:.4f}, repeat-last {baseline:.4f}")
    assert test["loss"] == test["mse"]
    assert test["mse"] < 0.8 * baseline


@pytest.mark.skipif(not BASIC_MOTIONS.exists(), reason="BasicMotions is not in ../shared/data")
def test_basicmotions_accuracy(tmp_path: Path) -> None:
    result = trained(
        "timesclip",
        stored_images(tmp_path, load(BASIC_MOTIONS)),
        SMALL,
        steps=80,
        batch_size=8,
        lr=1e-3,
    )
    accuracy = result.metrics["test"]["accuracy"]
    print(f"timesclip BasicMotions test accuracy {accuracy:.3f}")
    assert accuracy >= 0.8
    # 10 of each of the 4 classes in both files: the majority class is right on 10 of 40
    assert result.metrics["baseline"] == {"majority_class": {"accuracy": 0.25}}
