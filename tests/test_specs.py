"""Specs and the library's run arguments, as Python callers pass them: wrong types are refused
by name, and values equal in Python name one namespace."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tsfs.errors import InputError
from tsfs.pipeline.prep import plan_images, prep_features, prep_images
from tsfs.pipeline.sources import load
from tsfs.specs import FeatureSpec, ImageSpec, WindowSpec
from tsfs.stores.store import Store
from tsfs.training.metrics import crps_ensemble, quantile_loss, sample_quantiles

ETTH1 = Path(__file__).resolve().parents[1] / "data" / "ETTh1.csv"


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (ImageSpec(linewidth=2), ImageSpec(linewidth=2.0)),
        (ImageSpec(margin=0), ImageSpec(margin=0.0)),
        (ImageSpec(size=np.int64(64)), ImageSpec(size=64)),
        (ImageSpec(linewidth=np.float32(1.5)), ImageSpec(linewidth=1.5)),
        (ImageSpec(rgb=np.bool_(True)), ImageSpec(rgb=True)),
        (FeatureSpec(level=np.int64(3)), FeatureSpec(level=3)),
    ],
)
def test_equal_specs_name_one_namespace(a: Any, b: Any) -> None:
    """The CLI gives --linewidth 2 as 2.0: a Python caller's 2 must find the same rows."""
    assert a == b
    assert a.fingerprint == b.fingerprint
    assert a.to_json() == b.to_json()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: WindowSpec(seq_len="96"), r"WindowSpec\.seq_len must be an integer, got '96'"),
        (lambda: WindowSpec(seq_len=96.5), r"WindowSpec\.seq_len must be an integer"),
        (lambda: WindowSpec(stride=True), r"WindowSpec\.stride must be an integer, got True"),
        (lambda: WindowSpec(scale="no"), r"WindowSpec\.scale must be True or False"),
        (lambda: WindowSpec(splits="train"), r"WindowSpec\.splits must be a tuple"),
        (lambda: WindowSpec(splits=("train", "train")), r"--splits names a split twice"),
        (lambda: FeatureSpec(level=2.5), r"FeatureSpec\.level must be an integer, got 2\.5"),
        (lambda: FeatureSpec(top_k=float("nan")), r"FeatureSpec\.top_k must be an integer"),
        (lambda: FeatureSpec(store_coefficients="no"), r"store_coefficients must be True or"),
        (lambda: ImageSpec(size=16.5), r"ImageSpec\.size must be an integer, got 16\.5"),
        (lambda: ImageSpec(sigma="3"), r"ImageSpec\.sigma must be a finite number, got '3'"),
        (lambda: ImageSpec(linewidth=float("inf")), r"ImageSpec\.linewidth must be a finite"),
        (lambda: ImageSpec(linewidth=1e300), r"--linewidth must be a positive number of points"),
        (lambda: ImageSpec(color=123), r"ImageSpec\.color must be a str, got 123"),
    ],
)
def test_wrong_types_are_refused_by_field(make: Any, message: str) -> None:
    with pytest.raises(InputError, match=message):
        make()


def test_a_list_of_splits_is_kept_as_a_hashable_tuple() -> None:
    spec = WindowSpec(splits=["train", "test"])  # type: ignore[arg-type]
    assert spec.splits == ("train", "test")
    assert hash(spec) == hash(WindowSpec(splits=("train", "test")))


@pytest.fixture(scope="module")
def small() -> Any:
    return load(ETTH1, WindowSpec(seq_len=48, label_len=24, pred_len=24, splits=("val",)))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda d, s: prep_features(d, FeatureSpec(), s, jobs=0), r"jobs \(--jobs\) must be"),
        (lambda d, s: prep_features(d, FeatureSpec(), s, jobs="2"), r"jobs \(--jobs\) must be"),
        (
            lambda d, s: prep_features(d, FeatureSpec(), s, batch_rows=1.5),
            r"batch_rows \(--batch-rows\) must be a positive integer, got 1\.5",
        ),
        (lambda d, s: prep_features(d, FeatureSpec(), s, batch_rows=0), r"batch_rows"),
        (lambda d, s: prep_features(d, FeatureSpec(), s, executor="bogus"), r"executor 'bogus'"),
        (lambda d, s: prep_features(d, FeatureSpec(), s, device="tpu"), r"device 'tpu'"),
        (lambda d, s: prep_images(d, ImageSpec(), s, codec="gzip"), r"codec 'gzip'"),
        (
            lambda d, s: prep_features(d, ImageSpec(), s),
            r"spec must be of type FeatureSpec, got ImageSpec",
        ),
        (
            lambda d, s: prep_images(d, FeatureSpec(), s),
            r"spec must be of type ImageSpec, got FeatureSpec",
        ),
        (lambda d, s: prep_images(str(ETTH1), ImageSpec(), s), r"dataset must be a tsfs Data"),
        (lambda d, s: plan_images(d, ImageSpec(), "st"), r"store must be a tsfs Store"),
    ],
)
def test_run_arguments_are_refused_before_any_work(
    small: Any, tmp_path: Path, call: Any, message: str
) -> None:
    store = Store(tmp_path / "s", mode="a", create="on_write")
    with pytest.raises(InputError, match=message):
        call(small, store)
    assert not (tmp_path / "s").exists()  # nothing written


def test_store_modes_are_r_or_a(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"mode must be 'r' \(read\) or 'a'"):
        Store(tmp_path / "x", mode="x")  # type: ignore[arg-type]
    assert not (tmp_path / "x").exists()
    with pytest.raises(InputError, match="a store location is a path or URL, got 3"):
        Store(3)  # type: ignore[arg-type]


def test_metrics_refuse_what_would_be_a_wrong_number() -> None:
    x = torch.arange(9.0).reshape(9, 1)
    y = torch.zeros(1)
    for levels in ((-0.1,), (1.1,)):  # a negative level would index from the end
        with pytest.raises(InputError, match=r"quantile levels must be in \[0, 1\]"):
            sample_quantiles(x, levels)
        with pytest.raises(InputError, match=r"quantile levels must be in \[0, 1\]"):
            quantile_loss(x, y, levels)
    with pytest.raises(InputError, match=r"\(S, \.\.\.\) with S ≥ 1, got \(0, 3\)"):
        crps_ensemble(torch.empty(0, 3), torch.zeros(3))
    with pytest.raises(InputError, match=r"samples must be floating point, got torch\.int64"):
        crps_ensemble(torch.arange(6).reshape(3, 2), torch.zeros(2))
    with pytest.raises(InputError, match="must be torch tensors"):
        crps_ensemble(np.zeros((3, 2)), torch.zeros(2))  # type: ignore[arg-type]
    # levels at the ends are np.quantile's min and max
    np.testing.assert_array_equal(sample_quantiles(x, (0.0, 1.0))[:, 0], [0.0, 8.0])


def test_load_takes_a_path_and_a_window_spec() -> None:
    with pytest.raises(InputError, match="load\\(\\) takes a WindowSpec, got FeatureSpec"):
        load(ETTH1, FeatureSpec())  # type: ignore[arg-type]
    with pytest.raises(InputError, match="load\\(\\) takes a file path, got 3"):
        load(3)  # type: ignore[arg-type]
