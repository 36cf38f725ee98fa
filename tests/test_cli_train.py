"""`tsfs train` as a person meets it: help, a small real run, resumption, one-line errors."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tsfs.cli.main import app
from tsfs.cli.train import MODELS
from tsfs.training.models import FAMILIES

ROOT = Path(__file__).resolve().parents[1]
ETTH1 = ROOT / "data" / "ETTh1.csv"
runner = CliRunner()
# A diffusion model small enough to train and sample in seconds on one CPU thread.
TINY = [
    *("-c", "d_model=8", "-c", "n_heads=1", "-c", "e_layers=1", "-c", "d_ff=8"),
    *("-c", "channels=4", "-c", "steps=10", "-c", "sample_steps=2", "-c", "n_samples=2"),
]


def tsfs(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tsfs", *args],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def test_help_lists_models_with_examples() -> None:
    result = runner.invoke(app, ["train", "--help"])
    assert result.exit_code == 0
    assert tuple(FAMILIES) == MODELS  # the help's list is the registry's
    for name in FAMILIES:
        assert name in result.output
    assert "Example" in result.output
    assert "tsfs train diffusion" in result.output
    assert "--config" in result.output
    assert " train " in runner.invoke(app, ["--help"]).output


def test_a_small_run_then_resume(tmp_path: Path) -> None:
    out, store = tmp_path / "run", tmp_path / "store"
    common = [str(ETTH1), "--stride", "97", "--batch-size", "16", "--store", str(store)]
    first = tsfs("train", "diffusion", *common, *TINY, "--max-steps", "3", "--out", str(out))
    assert first.returncode == 0, first.stderr
    assert "test: mse" in first.stdout
    # no terminal here: a line per epoch scored instead of progress bars
    epoch = r"tsfs: epoch 1/10: step 3, train loss \d+\.\d{4}, val crps \d+\.\d{4}, cut short, "
    assert re.search(epoch + r"\d+\.\d s$", first.stderr, re.MULTILINE), first.stderr
    assert "repeat-last baseline" in first.stdout
    # no whole epoch yet, so no best.pt: an epoch cut short never becomes the best
    assert {p.name for p in out.iterdir()} == {"metrics.json", "last.pt", "curves.png"}
    again = tsfs("train", "diffusion", *common, *TINY, "--out", str(out))
    assert again.returncode == 2
    assert again.stderr.strip().splitlines() == [
        f"tsfs: error: {out} already holds a run (last.pt); pass --resume to continue it or "
        "choose another --out"
    ]
    resumed = tsfs(
        *("train", "diffusion", *common, *TINY, "--max-steps", "5", "--out", str(out)),
        *("--resume", "--json"),
    )
    assert resumed.returncode == 0, resumed.stderr
    printed = json.loads(resumed.stdout)
    assert printed == json.loads((out / "metrics.json").read_text())
    assert printed["steps"] == 5
    assert printed["config"]["channels"] == [4]


def _bad(tmp: Path) -> list[tuple[list[str], str]]:
    data = [str(ETTH1), "--stride", "97", "--store", str(tmp / "empty")]
    return [
        (["nope", *data], "unknown model 'nope': choose one of"),
        (["diffusion", *data, "-c", "nope=1"], "diffusion has no setting 'nope'; its settings: d_"),
        (["diffusion", *data, "-c", "d_model"], "write KEY=VALUE"),
        (["diffusion", *data, "-c", "d_model=big"], "--config d_model: 'big' is not an integer"),
        (["diffusion", *data, "-c", "eta=-"], "--config eta: '-' is not a finite number"),
        (["diffusion", *data, "-c", "eta=nan"], "--config eta: 'nan' is not a finite number"),
        (["diffusion", *data, "-c", "clip_x0=inf"], "'inf' is not a finite number"),
        (["diffusion", *data, "-c", "d_model"], "e.g. --config d_model=64"),
        (["timellm", *data, "-c", "dropout=2"], "dropout must be in [0, 1), got 2.0"),
        (["timellm", *data, "-c", "backbone_width=10"], "backbone_width (10) must be a multiple"),
        (["timesclip", *data, "-c", "d_model=10"], "d_model (10) must be a multiple of n_heads"),
        # the settings are listed as --config takes them back
        (["timesclip", *data, "-c", "nope=1"], "channels=16,32,64,"),
        (["timesclip", *data, "-c", "align_weight=-1"], "align_weight must be 0 or more"),
        (["unet", *data, "-c", "dropout=-1"], "dropout must be in [0, 1)"),
        (["diffusion", *data, "--device", "mps"], "tsfs trains on auto, cpu, cuda or cuda:N"),
        (["diffusion", *data, "--pred-len", "0", "--label-len", "0"], "--pred-len must be at"),
        (["diffusion", *data, "--out", str(ETTH1)], "is a file; give a directory"),
        (["diffusion", *data, "-c", "sampler=euler"], "'euler' is not one of ddim, ddpm"),
        (["diffusion", *data, "-c", "reads_features=maybe"], "'maybe' is not true or false"),
        (["diffusion", *data, "-c", "d_model=30"], "multiple of n_heads"),
        (["diffusion", *data, "--device", "tpu"], "unknown --device 'tpu'"),
        (["diffusion", *data, "--epochs", "0"], "--epochs must be at least 1"),
        (["diffusion", *data, "--resume", "--out", str(tmp / "none")], "nothing to resume"),
        (["diffusion", *data, "--seq-len", "0"], "--seq-len"),
        (["diffusion", str(tmp / "missing.csv")], "missing.csv"),
        (
            ["diffusion", *data, "-c", "reads_features=true"],
            "compute them with: tsfs prep features",
        ),
    ]


def test_bad_input_is_one_line_with_exit_code_2(tmp_path: Path) -> None:
    for args, expected in _bad(tmp_path):
        result = runner.invoke(app, ["train", *args])
        assert result.exit_code == 2, (args, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1, (args, result.output)
        assert lines[0].startswith("tsfs: error: ")
        assert expected in lines[0], (args, lines[0])


@pytest.mark.parametrize("flag", ["--epochs", "--batch-size"])
def test_options_that_are_not_numbers_are_usage_errors(flag: str) -> None:
    result = runner.invoke(app, ["train", "diffusion", str(ETTH1), flag, "x"])
    assert result.exit_code == 2
    assert flag in result.output


def _children(pid: int) -> int:
    """How many live processes have ``pid`` as their parent."""
    count = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        count += fields[1] == str(pid)
    return count


def _training(pid: int, out: Path, workers: int) -> bool:
    """Whether the run has reached its first steps: its --out exists (made once the model is
    built) and, with worker processes, the loader has started them (just before step 1)."""
    return out.exists() and (workers == 0 or _children(pid) >= workers)


def _straight_run(tmp: Path, workers: int) -> dict[str, object]:
    """One uninterrupted epoch of the run the Ctrl-C tests interrupt."""
    common = [str(ETTH1), "--stride", "2", "--batch-size", "16", "--store", str(tmp / "s")]
    cmd = ["train", "diffusion", *common, *TINY, "--epochs", "1", "--workers", str(workers)]
    done = tsfs(*cmd, "--json", "--out", str(tmp / "run"))
    assert done.returncode == 0, done.stderr
    metrics: dict[str, object] = json.loads(done.stdout)
    return metrics


@pytest.mark.parametrize(
    ("workers", "how"), [(0, "ctrl-c"), (2, "ctrl-c"), (0, "sigterm")], ids=lambda v: str(v)
)
def test_ctrl_c_saves_the_step_reached_and_resume_finishes_as_if_never_stopped(
    tmp_path: Path, workers: int, how: str
) -> None:
    straight_run = _straight_run(tmp_path / "straight", workers)
    common = [str(ETTH1), "--stride", "2", "--batch-size", "16", "--store", str(tmp_path / "s")]
    common += ["--workers", str(workers)]
    out = tmp_path / "run"
    cmd = ["train", "diffusion", *common, *TINY, "--epochs", "1", "--out", str(out)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tsfs", *cmd],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        start_new_session=True,  # a process group of its own, as a terminal's foreground job
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 60
    while not _training(proc.pid, out, workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # some steps into the epoch
    if how == "ctrl-c":
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches every process of the group
    else:
        os.kill(proc.pid, signal.SIGTERM)  # `kill`, a job scheduler: the main process only
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == (130 if how == "ctrl-c" else 143), err
    (line,) = err.strip().splitlines()
    match = re.fullmatch(
        rf"tsfs: interrupted after step (\d+); {re.escape(str(out / 'last.pt'))} holds it: "
        "add --resume to continue",
        line,
    )
    assert match, line
    assert (out / "last.pt").exists()
    assert not (out / "metrics.json").exists()
    resumed = tsfs(*cmd, "--resume", "--json")
    assert resumed.returncode == 0, resumed.stderr
    metrics = json.loads(resumed.stdout)
    assert 0 < int(match.group(1)) < metrics["steps"]  # stopped mid-epoch
    assert metrics["steps"] == straight_run["steps"]  # every batch once
    assert metrics["test"] == straight_run["test"]  # and the same weights: bit for bit


def test_a_model_too_large_for_memory_is_one_line(tmp_path: Path) -> None:
    store = tmp_path / "store"
    result = tsfs(*("prep", "features", str(ETTH1), "--stride", "97", "--store", str(store), "-q"))
    assert result.returncode == 0, result.stderr
    huge = tsfs(
        *("train", "timellm", str(ETTH1), "--stride", "97", "--store", str(store)),
        *("--max-steps", "1", "--splits", "train", "-c", "d_model=100000000000", "-q"),
    )
    assert huge.returncode == 1
    assert re.fullmatch(
        r"tsfs: error: out of memory \(an allocation of [\d.]+ TiB failed\); lower "
        r"--batch-size or the model's sizes \(-c d_model=…\), or free memory\n",
        huge.stderr,
    ), huge.stderr


def test_classification_run_names_its_best_epoch_as_the_progress_lines_do(tmp_path: Path) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    labels = np.arange(24) % 2
    x = rng.normal(size=(24, 32, 2)) + labels[:, None, None]
    data = tmp_path / "toy.npz"
    np.savez(data, train_x=x[:12], train_y=labels[:12], val_x=x[12:], val_y=labels[12:])
    store, out = tmp_path / "store", tmp_path / "run"
    made = tsfs("prep", "images", str(data), "--size", "32", "--store", str(store), "-q")
    assert made.returncode == 0, made.stderr
    small = ["-c", "d_model=16", "-c", "channels=4,8", "-c", "patch_len=8", "-c", "stride=4"]
    run = tsfs(
        *("train", "timesclip", str(data), "--store", str(store), "--epochs", "3"),
        *(*small, "--out", str(out)),
    )
    assert run.returncode == 0, run.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["classes"] == ["0", "1"]  # what outputs 0 and 1 stand for
    best = metrics["best"]["epoch"]  # from 0
    assert f"best: epoch {best + 1} (step" in run.stdout
    assert f"tsfs: epoch {best + 1}/3:" in run.stderr
    assert "no training sample has" not in run.stderr  # both classes are in train
    # a class val holds and train does not: said before training
    np.savez(
        tmp_path / "unseen.npz",
        train_x=x[:12],
        train_y=labels[:12] * 0,
        val_x=x[12:],
        val_y=labels[12:],
    )
    made = tsfs(
        "prep", "images", str(tmp_path / "unseen.npz"), "--size", "32", "--store", str(store), "-q"
    )
    assert made.returncode == 0, made.stderr
    unseen = tsfs(
        *("train", "timesclip", str(tmp_path / "unseen.npz"), "--store", str(store)),
        *("--max-steps", "1", *small, "--out", str(tmp_path / "unseen")),
    )
    assert unseen.returncode == 0, unseen.stderr
    assert (
        "tsfs: val holds class(es) 1 that no training sample has (50% of its samples): "
        "no model can get those right" in unseen.stderr
    ), unseen.stderr
    # data without a train split: said of the data, not of --splits
    np.savez(tmp_path / "val_only.npz", val_x=x, val_y=labels)
    alone = tsfs(
        *("train", "timesclip", str(tmp_path / "val_only.npz"), "--store", str(store)),
        *("--no-scale", *small, "--out", str(tmp_path / "alone")),
    )
    assert alone.returncode == 2
    assert "val_only.npz has none (it has val)" in alone.stderr, alone.stderr
