"""The shared training loop: files of a run, determinism, resumption, OOM back-off, errors.

A small linear forecaster (one ``Linear(T → pred_len)`` per variable, with dropout so the RNG
matters) trains on real ETTh1 windows (every 16th), read through the real loaders. The OOM
family raises CUDA's own ``torch.OutOfMemoryError`` from its loss when a batch is larger than
it "fits", the code path a GPU takes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from _refuse_imports import REFUSE_PTWT_MATPLOTLIB
from _torch_threads import one_thread  # noqa: F401  # autouse fixture
from torch import nn
from torch.optim.optimizer import register_optimizer_step_pre_hook

from tsfs.errors import InputError, MissingRowsError, OutputError, StoreCorruptError
from tsfs.pipeline.prep import prep_features
from tsfs.pipeline.show import pick_namespace
from tsfs.pipeline.sources import load
from tsfs.pipeline.windows import Dataset
from tsfs.specs import FeatureSpec, WindowSpec
from tsfs.stores.store import Store
from tsfs.training.data import Batch, WindowReader, open_view
from tsfs.training.loop import (
    FitResult,
    TrainingInterrupted,
    TrainSpec,
    fit,
    majority_class_accuracy,
    repeat_last_scores,
    train,
)
from tsfs.training.models import DataInfo
from tsfs.training.models.base import Scores
from tsfs.training.models.diffusion import DiffusionConfig
from tsfs.training.models.layers import forecast_scores

ROOT = Path(__file__).resolve().parents[1]
ETTH1 = ROOT / "data" / "ETTh1.csv"
STRIDE = 16


@dataclass(frozen=True, kw_only=True)
class LinearConfig:
    dropout: float = 0.2
    fits: int = 0  # batches larger than this run out of GPU memory (0: any size fits)


class Linear(nn.Module):
    def __init__(self, info: DataInfo, config: LinearConfig) -> None:
        super().__init__()
        self.config = config
        self.dropout = nn.Dropout(config.dropout)
        self.linear = nn.Linear(info.seq_len, info.pred_len)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = x[:, -1:, :]
        out: torch.Tensor = self.linear(self.dropout(x - last).transpose(1, 2))
        return out.transpose(1, 2) + last


class LinearFamily:
    name = "linear"
    config_type = LinearConfig
    tasks = ("forecast",)
    reads_features = False
    reads_images = False
    image_output = "float"
    monitor = "mse"

    def __init__(self) -> None:
        self.seen: list[torch.Tensor] = []  # window indices of each trained batch

    def build(self, info: DataInfo, config: Any) -> nn.Module:
        return Linear(info, config)

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        fits = model.config.fits
        if fits and len(batch["x"]) > fits:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        self.seen.append(batch["index"].clone())
        pred = model(batch["x"])
        return nn.functional.mse_loss(pred, batch["y"][:, -pred.shape[1] :])

    def score(self, model: nn.Module, batch: Batch) -> Scores:
        return forecast_scores(model(batch["x"]), batch["y"])


@pytest.fixture(scope="module")
def ett() -> Dataset:
    return load(ETTH1, WindowSpec(stride=STRIDE))


def readers_and_info(ett: Dataset, store: Store) -> tuple[dict[str, WindowReader], DataInfo]:
    view = open_view(ett, store, persist=False)
    readers = {name: WindowReader(view, name) for name in ett.splits}
    x = ett.splits["train"].x
    info = DataInfo(
        task="forecast",
        seq_len=x.shape[1],
        label_len=48,
        pred_len=96,
        n_vars=x.shape[2],
        n_marks=4,
        n_classes=0,
        feature_names={},
        image_size=0,
    )
    return readers, info


def run(
    ett: Dataset,
    tmp: Path,
    spec: TrainSpec,
    config: LinearConfig | None = None,
    fam: LinearFamily | None = None,
    notes: list[str] | None = None,
) -> FitResult:
    readers, info = readers_and_info(ett, Store(tmp / "no-store", missing_ok=True))
    return fit(
        fam or LinearFamily(),
        config or LinearConfig(),
        info,
        readers,
        spec,
        notify=(notes.append if notes is not None else lambda _m: None),
    )


def state(result: FitResult) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in result.model.state_dict().items()}


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_run_writes_metrics_checkpoints_and_a_plot(ett: Dataset, tmp_path: Path) -> None:
    import matplotlib.image

    out = tmp_path / "run"
    result = run(ett, tmp_path, TrainSpec(epochs=3, batch_size=32, lr=3e-3, out=out))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(result.metrics))
    assert [e["epoch"] for e in metrics["epochs"]] == [0, 1, 2]
    assert metrics["steps"] == 3 * -(-len(ett.splits["train"]) // 32)
    best = metrics["best"]
    assert best["val"]["mse"] == min(e["val"]["mse"] for e in metrics["epochs"])
    # Test metrics come from the best checkpoint's weights, which load with weights_only.
    ckpt = torch.load(out / "best.pt", weights_only=True)
    assert ckpt["step"] == best["step"]
    assert ckpt["config"] == {"dropout": 0.2, "fits": 0}
    assert same_weights(ckpt["model_state"], result.model.state_dict())
    last = torch.load(out / "last.pt", weights_only=True)
    assert last["step"] == metrics["steps"]
    # The linear model must beat repeating the last value (what the run reports beside it).
    baseline = repeat_last_scores(ett.splits["test"], 96)
    assert metrics["baseline"]["repeat_last"] == pytest.approx(baseline)
    assert metrics["test"]["mse"] < 0.9 * baseline["mse"]
    png = matplotlib.image.imread(out / "curves.png")
    assert png.shape == (320, 800, 4)
    assert len(np.unique(png[..., :3].reshape(-1, 3), axis=0)) > 50  # lines and text drawn


def test_repeat_last_baseline_is_tslib_arithmetic(ett: Dataset) -> None:
    raw = np.loadtxt(ETTH1, delimiter=",", skiprows=1, usecols=range(1, 8))
    data = (raw - raw[:8640].mean(axis=0)) / raw[:8640].std(axis=0)
    starts = np.arange(11520 - 96, 14400 - 96 - 96 + 1, STRIDE)
    errors = np.stack([data[s + 96 : s + 192] - data[s + 95] for s in starts])
    got = repeat_last_scores(ett.splits["test"], 96, chunk=7)
    assert got["mse"] == pytest.approx(float(np.square(errors).mean()), rel=1e-6)
    assert got["mae"] == pytest.approx(float(np.abs(errors).mean()), rel=1e-6)
    # MS: TSLib's f_dim = -1 scores the last column (OT) alone
    ot = repeat_last_scores(ett.splits["test"], 96, target_only=True)
    assert ot["mse"] == pytest.approx(float(np.square(errors[..., -1]).mean()), rel=1e-6)
    assert ot["mae"] == pytest.approx(float(np.abs(errors[..., -1]).mean()), rel=1e-6)


def test_majority_class_baseline_answers_the_most_frequent_training_label(
    tmp_path: Path,
) -> None:
    head = "@problemName Toy\n@univariate true\n@classLabel true up down flat\n@data\n"
    # train: "down" 3 times, "up" twice; test: "down" once in four
    (tmp_path / "Toy_TRAIN.ts").write_text(
        head + "1,2,3:up\n3,2,1:down\n4,3,2:down\n2,3,4:up\n5,4,3:down\n"
    )
    (tmp_path / "Toy_TEST.ts").write_text(head + "1,2,3:up\n3,2,1:down\n1,1,1:flat\n2,3,4:up\n")
    ds = load(tmp_path / "Toy_TRAIN.ts")
    assert majority_class_accuracy(ds.splits["train"], ds.splits["test"]) == 0.25
    with pytest.raises(InputError, match="labelled train and test"):
        majority_class_accuracy(ett_like_split(), ds.splits["test"])


def ett_like_split() -> Any:
    return load(ETTH1, WindowSpec(seq_len=96, stride=512, splits=("train",))).splits["train"]


def test_seeded_runs_repeat_exactly(ett: Dataset, tmp_path: Path) -> None:
    a = run(ett, tmp_path, TrainSpec(epochs=1, seed=3))
    b = run(ett, tmp_path, TrainSpec(epochs=1, seed=3))
    c = run(ett, tmp_path, TrainSpec(epochs=1, seed=4))
    assert same_weights(state(a), state(b))
    assert a.metrics["test"] == b.metrics["test"]
    assert not same_weights(state(a), state(c))


def test_resume_continues_where_a_straight_run_would_be(ett: Dataset, tmp_path: Path) -> None:
    straight = run(ett, tmp_path, TrainSpec(epochs=2, out=tmp_path / "a"))
    # Stop mid-epoch, then again after one epoch, then finish.
    cut = run(ett, tmp_path, TrainSpec(epochs=2, max_steps=5, out=tmp_path / "b"))
    saved = torch.load(tmp_path / "b" / "last.pt", weights_only=True)["loader"]
    assert saved["samples"] == 5 * 32  # trained windows, not the batch fetched after step 5
    # Resumed with the limit it already reached: nothing trains, and nothing is forgotten.
    again = run(ett, tmp_path, TrainSpec(epochs=2, max_steps=5, out=tmp_path / "b", resume=True))
    assert again.metrics["epochs"] == cut.metrics["epochs"]
    assert [e["complete"] for e in again.metrics["epochs"]] == [False]
    run(ett, tmp_path, TrainSpec(epochs=1, out=tmp_path / "b", resume=True))
    resumed = run(ett, tmp_path, TrainSpec(epochs=2, out=tmp_path / "b", resume=True))
    assert same_weights(state(straight), state(resumed))
    assert resumed.metrics["steps"] == straight.metrics["steps"]
    assert resumed.metrics["test"] == straight.metrics["test"]
    # The same record: the epoch cut short is scored whole once resumed, its loss interval
    # carried on across the stop.
    assert resumed.metrics["epochs"] == straight.metrics["epochs"]
    assert [(e["epoch"], e["complete"]) for e in resumed.metrics["epochs"]] == [
        (0, True),
        (1, True),
    ]
    a, b = (torch.load(tmp_path / d / "last.pt", weights_only=True) for d in "ab")
    assert b["losses"] == a["losses"]


def test_resume_after_a_compaction_restarts_the_cut_epoch(ett: Dataset, tmp_path: Path) -> None:
    """The chunk order of an epoch follows where the rows sit in the store: after a
    compaction a run cut short mid-epoch cannot know which windows it had left, so the epoch
    starts again (said once) rather than skipping some."""
    store = Store(tmp_path / "s", mode="a")
    prep_features(ett, FeatureSpec(), store, batch_rows=2000)  # several segments

    def readers() -> tuple[dict[str, WindowReader], DataInfo]:
        named, info = readers_and_info(ett, Store(tmp_path / "s"))
        view = open_view(ett, Store(tmp_path / "s"), persist=False)
        named["train"] = WindowReader(view, "train", features=FeatureSpec())
        return named, info

    named, info = readers()
    spec = TrainSpec(epochs=1, max_steps=5, out=tmp_path / "run")
    fit(LinearFamily(), LinearConfig(), info, named, spec, notify=lambda _m: None)
    Store(tmp_path / "s", mode="a").compact()
    notes: list[str] = []
    fam = LinearFamily()
    named, info = readers()
    resumed = dataclasses.replace(spec, max_steps=None, resume=True)
    result = fit(fam, LinearConfig(), info, named, resumed, notify=notes.append)
    assert notes == [
        f"the store's rows moved since {tmp_path / 'run' / 'last.pt'} was saved (a "
        "compaction?): epoch 1 starts again from its beginning"
    ]
    seen = np.concatenate([i.numpy() for i in fam.seen])
    assert sorted(seen.tolist()) == list(range(len(named["train"])))  # the whole epoch, once
    assert result.metrics["steps"] == 5 + len(fam.seen)


class Worsening(LinearFamily):
    """Scores worse the longer it trains (a step count in its weights): the first epoch is
    always the best, so the best weights are never the last ones."""

    def build(self, info: DataInfo, config: Any) -> nn.Module:
        model = super().build(info, config)
        model.register_buffer("trained", torch.zeros(()))
        return model

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        model.trained += 1
        return super().loss(model, batch)

    def score(self, model: nn.Module, batch: Batch) -> Scores:
        return {"mse": (model.trained * len(batch["x"]), len(batch["x"]))}


def test_a_resumed_run_scores_the_test_split_with_the_best_weights(
    ett: Dataset, tmp_path: Path
) -> None:
    straight = run(ett, tmp_path, TrainSpec(epochs=3, out=tmp_path / "a"), fam=Worsening())
    assert straight.metrics["best"]["epoch"] == 0
    run(ett, tmp_path, TrainSpec(epochs=2, out=tmp_path / "b"), fam=Worsening())
    resumed = run(
        ett, tmp_path, TrainSpec(epochs=3, out=tmp_path / "b", resume=True), fam=Worsening()
    )
    assert resumed.metrics["best"] == straight.metrics["best"]
    assert resumed.metrics["test"] == straight.metrics["test"]
    assert same_weights(state(resumed), state(straight))  # the model returned is the best one
    # nothing left to train: still the best epoch's weights, not the last
    again = run(
        ett, tmp_path, TrainSpec(epochs=3, out=tmp_path / "b", resume=True), fam=Worsening()
    )
    assert again.metrics["test"] == straight.metrics["test"]


def test_an_epoch_cut_short_never_becomes_the_best(ett: Dataset, tmp_path: Path) -> None:
    """Worsening scores best after the fewest steps: a score taken where --max-steps cut an
    epoch short would win, and a resumed run would then keep weights a straight run never
    had."""
    straight = run(ett, tmp_path, TrainSpec(epochs=2, out=tmp_path / "a"), fam=Worsening())
    cut = run(ett, tmp_path, TrainSpec(epochs=2, max_steps=5, out=tmp_path / "b"), fam=Worsening())
    assert cut.metrics["epochs"][-1]["complete"] is False
    assert cut.metrics["best"] is None  # no whole epoch yet
    assert not (tmp_path / "b" / "best.pt").exists()
    resumed = run(
        ett, tmp_path, TrainSpec(epochs=2, out=tmp_path / "b", resume=True), fam=Worsening()
    )
    assert resumed.metrics["best"] == straight.metrics["best"]
    assert resumed.metrics["epochs"] == straight.metrics["epochs"]
    assert resumed.metrics["test"] == straight.metrics["test"]
    a, b = (torch.load(tmp_path / d / "best.pt", weights_only=True) for d in "ab")
    assert same_weights(a["model_state"], b["model_state"])


def test_resume_refuses_changed_optimisation_settings(ett: Dataset, tmp_path: Path) -> None:
    out = tmp_path / "run"
    run(ett, tmp_path, TrainSpec(epochs=1, max_steps=2, out=out))
    for changed, said in (
        ({"lr": 0.5}, "--lr 0.001 (now 0.5)"),
        ({"batch_size": 8}, "--batch-size 32 (now 8)"),
        ({"seed": 1}, "--seed 0 (now 1)"),
    ):
        with pytest.raises(InputError, match=re.escape(said)):
            run(ett, tmp_path, TrainSpec(epochs=1, out=out, resume=True, **changed))
    # what may change: how long, where, with how many workers; --amp on the CPU (float32
    # either way)
    run(ett, tmp_path, TrainSpec(epochs=2, max_steps=3, out=out, resume=True, amp=True))
    run(ett, tmp_path, TrainSpec(epochs=2, max_steps=4, out=out, resume=True, num_workers=1))


def test_nothing_to_resume_leaves_no_out_behind(ett: Dataset, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="nothing to resume"):
        run(ett, tmp_path, TrainSpec(epochs=1, out=tmp_path / "new", resume=True))
    assert not (tmp_path / "new").exists()


def test_out_is_checked_before_training(ett: Dataset, tmp_path: Path) -> None:
    a_file = tmp_path / "afile"
    a_file.write_text("")
    fam = LinearFamily()
    with pytest.raises(InputError, match=r"--out .*afile is a file"):
        run(ett, tmp_path, TrainSpec(epochs=1, out=a_file), fam=fam)
    with pytest.raises(OutputError, match=r"cannot write to --out .*sub"):
        run(ett, tmp_path, TrainSpec(epochs=1, out=a_file / "sub"), fam=fam)
    assert fam.seen == []  # not one step was trained


@dataclass(frozen=True, kw_only=True)
class OtherConfig(LinearConfig):
    width: int = 4


class Other(LinearFamily):
    name = "other"
    config_type = OtherConfig


def test_resume_refuses_what_does_not_fit(ett: Dataset, tmp_path: Path) -> None:
    out = tmp_path / "run"
    with pytest.raises(InputError, match="nothing to resume"):
        run(ett, tmp_path, TrainSpec(epochs=1, out=out, resume=True))
    run(ett, tmp_path, TrainSpec(epochs=1, max_steps=2, out=out))
    with pytest.raises(InputError, match="already holds a run"):
        run(ett, tmp_path, TrainSpec(epochs=1, out=out))
    with pytest.raises(InputError, match=re.escape("with -c dropout=0.2 (now 0.5). Use")):
        run(ett, tmp_path, TrainSpec(epochs=1, out=out, resume=True), LinearConfig(dropout=0.5))
    # another family: its model named, not each of its settings that differ
    with pytest.raises(InputError, match=r"with model linear \(now other\)\. Use"):
        run(ett, tmp_path, TrainSpec(epochs=1, out=out, resume=True), OtherConfig(), Other())
    other = load(ETTH1, dataclasses.replace(ett.spec, stride=STRIDE * 2))
    with pytest.raises(InputError, match=re.escape(f"--stride {STRIDE} (now {STRIDE * 2})")):
        run(other, tmp_path, TrainSpec(epochs=1, out=out, resume=True))
    with pytest.raises(InputError, match="--resume needs --out"):
        TrainSpec(resume=True)
    # a setting the family gained since the checkpoint: whatever it is now, the run resumes
    ckpt = torch.load(out / "last.pt", weights_only=True)
    del ckpt["config"]["dropout"]
    torch.save(ckpt, out / "last.pt")
    run(ett, tmp_path, TrainSpec(epochs=1, max_steps=3, out=out, resume=True))
    run(ett, tmp_path, TrainSpec(epochs=1, max_steps=4, out=out, resume=True))
    # the same family and settings, but weights of other layers: an earlier tsfs's model
    ckpt = torch.load(out / "last.pt", weights_only=True)
    ckpt["model_state"] = {f"old.{k}": v for k, v in ckpt["model_state"].items()}
    torch.save(ckpt, out / "last.pt")
    with pytest.raises(InputError, match=r"its linear weights do not fit .* another --out$"):
        run(ett, tmp_path, TrainSpec(epochs=1, out=out, resume=True))
    # a run of another model: --resume could not continue it, so it is not offered
    with pytest.raises(InputError, match=r"holds a linear run; choose another --out$"):
        run(ett, tmp_path, TrainSpec(epochs=1, out=out), OtherConfig(), Other())


@pytest.mark.parametrize("content", [b"x\n", b"", "tensor"])
def test_a_last_pt_that_is_no_checkpoint_is_one_line(
    ett: Dataset, tmp_path: Path, content: bytes | str
) -> None:
    out = tmp_path / "run"
    out.mkdir()
    if content == "tensor":
        torch.save(torch.zeros(2), out / "last.pt")  # loads with weights_only; not a dict
    else:
        (out / "last.pt").write_bytes(content)  # type: ignore[arg-type]
    with pytest.raises(
        StoreCorruptError, match=r"last\.pt.*; remove it or choose another --out$"
    ) as e:
        run(ett, tmp_path, TrainSpec(epochs=1, out=out, resume=True))
    assert "weights_only" not in str(e.value)  # torch's advice would be the unsafe load
    with pytest.raises(InputError, match=r"holds a last\.pt tsfs cannot read; choose another"):
        run(ett, tmp_path, TrainSpec(epochs=1, out=out))


def test_out_of_memory_halves_the_batch_and_finishes_the_epoch(
    ett: Dataset, tmp_path: Path
) -> None:
    fam, notes = LinearFamily(), []
    result = run(
        ett, tmp_path, TrainSpec(epochs=2, batch_size=40), LinearConfig(fits=10), fam, notes
    )
    assert result.metrics["batch_size"] == 10
    assert [b["batch_size"] for b in result.metrics["backoffs"]] == [20, 10]
    assert len(notes) == 2
    assert "batch size 40 → 20" in notes[0]
    assert "20 → 10" in notes[1]
    # Every training window was trained on exactly once per epoch, despite the failed batches.
    n = len(ett.splits["train"])
    seen = torch.cat(fam.seen).numpy()
    assert len(seen) == 2 * n
    for epoch in (seen[:n], seen[n:]):
        np.testing.assert_array_equal(np.sort(epoch), np.arange(n))
    assert result.metrics["test"]["mse"] < repeat_last_scores(ett.splits["test"], 96)["mse"]


def test_out_of_memory_in_the_optimizers_update_is_an_error_not_a_retry(
    ett: Dataset, tmp_path: Path
) -> None:
    """AdamW builds its state at its first step: an out-of-memory error there leaves it
    half-built, and a retry with half the batch failed on it (KeyError) or applied an update
    twice. Raised from a global optimizer-step hook, torch's own public fault point."""
    calls = []

    def out_of_memory(optimizer: torch.optim.Optimizer, args: object, kwargs: object) -> None:
        calls.append(1)
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    handle = register_optimizer_step_pre_hook(out_of_memory)
    try:
        with pytest.raises(InputError, match=r"optimizer's update at step 0 .* --resume"):
            run(ett, tmp_path, TrainSpec(epochs=1, batch_size=40))
    finally:
        handle.remove()
    assert calls == [1]  # not retried with a smaller batch


def test_out_of_memory_mid_epoch_keeps_the_trained_part(ett: Dataset, tmp_path: Path) -> None:
    class Growing(LinearFamily):
        """Fits 32 until the fourth step, then only 8 (memory taken by something else)."""

        def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
            if len(self.seen) >= 3 and len(batch["x"]) > 8:
                raise torch.OutOfMemoryError("CUDA out of memory")
            return super().loss(model, batch)

    fam = Growing()
    result = run(ett, tmp_path, TrainSpec(epochs=1, batch_size=32), fam=fam)
    assert result.metrics["batch_size"] == 8
    seen = torch.cat(fam.seen).numpy()
    np.testing.assert_array_equal(np.sort(seen), np.arange(len(ett.splits["train"])))
    assert [len(b) for b in fam.seen[:4]] == [32, 32, 32, 8]


def test_one_window_that_does_not_fit_is_an_error(ett: Dataset, tmp_path: Path) -> None:
    class Never(LinearFamily):
        def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
            raise torch.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(InputError, match="even with batch size 1"):
        run(ett, tmp_path, TrainSpec(epochs=1, batch_size=4), fam=Never())


def test_missing_namespace_names_the_prep_command(tmp_path: Path) -> None:
    ds = load(ETTH1, WindowSpec(stride=64, seq_len=96))
    config = DiffusionConfig(reads_features=True)
    spec = TrainSpec(epochs=1, max_steps=1)
    with pytest.raises(MissingRowsError, match=r"tsfs prep features .*ETTh1\.csv --stride 64"):
        train("diffusion", ds, tmp_path / "empty", spec, config)
    # A namespace holding part of the data (only the test split) is the one to complete.
    store = Store(tmp_path / "s", mode="a")
    part = load(ETTH1, WindowSpec(stride=64, splits=("test",)))
    prep_features(part, FeatureSpec(wavelet="haar"), store)
    with pytest.raises(MissingRowsError, match="--wavelet haar"):
        train("diffusion", ds, store, spec, config)


def test_namespaces_of_another_tsfs_version_are_not_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store filled by a tsfs whose features spec was version 1 (values computed otherwise):
    that namespace is neither read nor a rival to the one prep makes now."""
    ds = load(ETTH1, WindowSpec(stride=64, seq_len=96))
    store = Store(tmp_path / "s", mode="a")
    with monkeypatch.context() as old:
        old.setattr(FeatureSpec, "version", 1)
        prep_features(ds, FeatureSpec(), store)
    config = DiffusionConfig(reads_features=True)
    spec = TrainSpec(epochs=1, max_steps=1)
    with pytest.raises(
        MissingRowsError, match=r"tsfs prep features \S*ETTh1\.csv --stride 64 --store"
    ):
        train("diffusion", ds, store, spec, config)
    # named with --namespace, or picked by `show`: the old one is named as such, not missing
    (stale,) = store.namespaces()
    with pytest.raises(MissingRowsError, match=rf"{stale.fingerprint} .* another spec version"):
        train("diffusion", ds, store, spec, config, features=stale.fingerprint[:6])
    with pytest.raises(MissingRowsError, match=rf"{stale.fingerprint} of another spec version"):
        pick_namespace(store, "features")
    prep_features(ds, FeatureSpec(), store)
    # the training split alone, and a tiny model: nothing to score, so one step is quick
    few = dataclasses.replace(ds, splits={"train": ds.splits["train"]})
    fast = dataclasses.replace(config, d_model=8, n_heads=1, e_layers=1, d_ff=8, channels=(4,))
    assert train("diffusion", few, store, spec, fast).metrics["steps"] == 1
    versions = {ns["spec"]["version"]: ns["current"] for ns in store.info()["namespaces"]}
    assert versions == {1: False, FeatureSpec.version: True}


def test_a_family_that_does_not_fit_the_data_is_refused(tmp_path: Path) -> None:
    samples = np.random.default_rng(0).standard_normal((20, 16, 2)).astype(np.float32)
    np.save(tmp_path / "x.npy", samples)
    ds = load(tmp_path / "x.npy", WindowSpec(preset="array"))
    with pytest.raises(InputError, match=r"diffusion trains on forecasting data; x\.npy is"):
        train("diffusion", ds, tmp_path / "s", TrainSpec())
    with pytest.raises(InputError, match="unknown model"):
        train("nope", ds, tmp_path / "s", TrainSpec())


_NO_RECOMPUTE = REFUSE_PTWT_MATPLOTLIB + textwrap.dedent(
    """

    from tsfs.pipeline.sources import load
    from tsfs.specs import WindowSpec
    from tsfs.training.loop import TrainSpec, train
    from tsfs.training.models.diffusion import DiffusionConfig

    data, store = sys.argv[1], sys.argv[2]
    ds = load(data, WindowSpec(stride=97))
    config = DiffusionConfig(
        d_model=8, n_heads=1, e_layers=1, d_ff=8, channels=(4,), steps=10, sample_steps=2,
        n_samples=2, reads_features=True,
    )
    result = train("diffusion", ds, store, TrainSpec(epochs=1, max_steps=3), config)
    print(json.dumps({
        "steps": result.metrics["steps"], "test": sorted(result.metrics["test"]),
        "loaded": sorted(m for m in sys.modules if m.split(".")[0] in ("ptwt", "matplotlib")),
    }))
    """
)


def test_training_never_imports_ptwt_or_matplotlib(tmp_path: Path) -> None:
    store = Store(tmp_path / "s", mode="a")
    prep_features(load(ETTH1, WindowSpec(stride=97)), FeatureSpec(), store)
    done = subprocess.run(
        [sys.executable, "-c", _NO_RECOMPUTE, str(ETTH1), str(store.path)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["loaded"] == []
    assert report["steps"] == 3
    assert "crps" in report["test"]


class Diverged(LinearFamily):
    """Scores NaN, as a run whose forecasts overflowed would."""

    def score(self, model: nn.Module, batch: Batch) -> Scores:
        return {"mse": (torch.tensor(float("nan")), len(batch["x"]))}


def test_a_diverged_run_is_an_error_even_between_loss_checks(ett: Dataset, tmp_path: Path) -> None:
    """--max-steps may end a run before the loss is next read back: the monitored score (and
    the loss left pending) still say the model diverged, rather than an exit 0 with NaN."""
    with pytest.raises(InputError, match=r"scoring val after step 1 gave mse nan: .*lower --lr"):
        run(ett, tmp_path, TrainSpec(epochs=1, max_steps=1, out=tmp_path / "r"), fam=Diverged())
    assert not (tmp_path / "r" / "metrics.json").exists()
    with pytest.raises(InputError, match=r"training loss became (nan|inf) by step 3"):
        run(ett, tmp_path, TrainSpec(epochs=1, max_steps=3, lr=1e30, out=tmp_path / "s"))


class UndefinedCRPS(LinearFamily):
    """A finite monitored score beside one that is undefined on these targets."""

    def score(self, model: nn.Module, batch: Batch) -> Scores:
        return {**super().score(model, batch), "crps": (torch.tensor(float("nan")), 1)}


def test_metrics_json_stays_strict_json_when_a_score_is_nan(ett: Dataset, tmp_path: Path) -> None:
    result = run(
        ett, tmp_path, TrainSpec(epochs=1, max_steps=1, out=tmp_path / "r"), fam=UndefinedCRPS()
    )
    assert np.isnan(result.metrics["test"]["crps"])

    def refuse(token: str) -> None:
        raise AssertionError(f"bare {token} in metrics.json")

    written = json.loads((tmp_path / "r" / "metrics.json").read_text(), parse_constant=refuse)
    assert written["test"]["crps"] is None
    assert math.isfinite(written["test"]["mse"])


class InterruptedWhileScoring(LinearFamily):
    """Ctrl-C lands while the validation split is scored (diffusion's scoring samples and can
    take longer than its epoch): Python raises KeyboardInterrupt there."""

    def score(self, model: nn.Module, batch: Batch) -> Scores:
        raise KeyboardInterrupt


def test_an_interrupt_while_scoring_keeps_the_trained_epoch(ett: Dataset, tmp_path: Path) -> None:
    straight = run(ett, tmp_path, TrainSpec(epochs=2, out=tmp_path / "a"))
    fam = InterruptedWhileScoring()
    with pytest.raises(TrainingInterrupted) as stopped:
        run(ett, tmp_path, TrainSpec(epochs=2, out=tmp_path / "b"), fam=fam)
    epoch_steps = straight.metrics["epochs"][0]["step"]
    assert stopped.value.step == epoch_steps  # the whole first epoch is kept
    assert stopped.value.checkpoint == tmp_path / "b" / "last.pt"
    saved = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    assert saved["unscored"]["epoch"] == 0
    assert saved["history"] == []
    fam = LinearFamily()
    resumed = run(ett, tmp_path, TrainSpec(epochs=2, out=tmp_path / "b", resume=True), fam=fam)
    # scored, not trained again: the resumed run trains the second epoch only
    assert sum(len(i) for i in fam.seen) == len(ett.splits["train"])
    assert resumed.metrics["epochs"] == straight.metrics["epochs"]
    assert resumed.metrics["best"] == straight.metrics["best"]
    assert resumed.metrics["test"] == straight.metrics["test"]
    assert same_weights(state(resumed), state(straight))
    assert resumed.metrics["seconds"] >= saved["seconds"]  # the whole run's time
