"""The one training loop every model family shares, and :func:`train`: data + store → a run.

:func:`fit` owns everything a family does not (:mod:`tsfs.training.models.base`): the device
(CUDA when present), mixed precision (bf16, or fp16 with loss scaling, on a GPU; fp32 on the
CPU), gradient clipping, out-of-memory back-off, checkpoints, resumption, seeded determinism,
a progress bar per epoch, and the files of a run in ``out``:

* ``last.pt`` after every epoch (and where ``max_steps`` or Ctrl-C stops mid-epoch: a first
  Ctrl-C stops after the step in flight, saves, and raises :class:`TrainingInterrupted`; a
  second one stops at once), ``best.pt`` when the family's ``monitor`` improves on the
  validation split at the end of a whole epoch (an epoch cut short is scored for the record
  but never becomes the best: a resumed run scores it whole) — each a ``torch.save`` dict of
  tensors and plain values (model, optimizer, step, config, loader position, RNG state) that
  loads with ``weights_only=True``;
* ``metrics.json``: settings, per-epoch history, the best epoch, test metrics of the best
  weights and a naive baseline's test scores (repeat-last-value for forecasting, the
  majority class for classification);
* ``curves.png``: training loss and the monitored metric against the step.

**Determinism.** The model is built and the loader ordered from ``seed``; evaluation runs
under a forked RNG seeded afresh, so sampling families evaluate reproducibly and evaluating
never shifts the training noise. A resumed run therefore continues bit for bit where a
straight run would be (same device and library versions).

**Out of memory.** A CUDA out-of-memory error in a step or an evaluation halves the batch
size and carries on: the epoch continues with the windows not yet trained on (the epoch's
window order does not depend on the batch size, so a half batch covers exactly half of an
old one), and the note says so once per halving.

**Never recomputes.** Nothing here imports ptwt or matplotlib while training: batches come
from the store (:mod:`tsfs.training.data`); matplotlib is imported only to draw
``curves.png`` once training has finished.

A family's config may carry its own ``reads_features`` / ``reads_images`` field (a family
whose store inputs are optional, such as diffusion's DWT conditioning); it overrides the
family's flag of the same name.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import os
import pickle
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from tsfs._allocator import keep_freed_memory
from tsfs.errors import (
    InputError,
    Interrupted,
    MissingRowsError,
    OutputError,
    StoreCorruptError,
    StoreReadOnlyError,
)
from tsfs.pipeline.windows import Dataset, Split
from tsfs.specs import FeatureSpec, ImageSpec, spec_version, strict_json
from tsfs.stores.files import open_files
from tsfs.stores.store import Namespace, Store
from tsfs.training.data import (
    Batch,
    ImageOutput,
    StoreLoader,
    View,
    WindowReader,
    open_view,
    prep_command,
)
from tsfs.training.models import DataInfo, Family, family
from tsfs.training.models.base import Task
from tsfs.training.sampler import ORDERS, Order, mask_from_ranges, ranges_from_mask

__all__ = [
    "FitResult",
    "TrainSpec",
    "TrainingInterrupted",
    "fit",
    "majority_class_accuracy",
    "reads",
    "repeat_last_scores",
    "resolve_device",
    "train",
]

_CHECKPOINT_FORMAT = 1
_LOG_EVERY = 10  # steps between loss read-backs (each one waits for the GPU)

Notify = Callable[[str], None]
S = TypeVar("S", FeatureSpec, ImageSpec)


def _note(message: str) -> None:
    tqdm.write(f"tsfs: {message}", file=sys.stderr)


@dataclass(frozen=True, kw_only=True)
class TrainSpec:
    """How to train (not what: that is the family and its config).

    Attributes:
        epochs: passes over the training split (counted over resumed runs too).
        max_steps: stop after this many optimizer steps in all (None: no limit).
        batch_size: windows per batch (halved on CUDA out-of-memory).
        lr, weight_decay: AdamW's.
        clip: gradient-norm clipping threshold (0 disables).
        device: ``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``.
        amp: mixed precision on a GPU: bf16 where supported, else fp16 with loss scaling.
            The CPU always trains in fp32.
        seed: model initialisation, epoch orders and evaluation noise.
        out: directory for checkpoints, ``metrics.json`` and ``curves.png`` (None: no files).
        resume: continue the run whose ``last.pt`` is in ``out``.
        progress: show a progress bar per epoch (on stderr).
        log_epochs: one line per epoch scored (step, train loss, monitored val score, time)
            through ``notify``: what a log shows where no progress bar does.
        order: the training loader's order: ``chunks`` (chunk-aware, fast), ``random`` or
            ``sequential``.
        num_workers: loader worker processes (0: one background reader thread).
    """

    epochs: int = 10
    max_steps: int | None = None
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    clip: float = 1.0
    device: str = "auto"
    amp: bool = False
    seed: int = 0
    out: Path | None = None
    resume: bool = False
    progress: bool = False
    log_epochs: bool = False
    order: Order = "chunks"
    num_workers: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise InputError("--epochs must be at least 1")
        if self.max_steps is not None and self.max_steps < 1:
            raise InputError("--max-steps must be at least 1 (or omitted for no limit)")
        if self.batch_size < 1:
            raise InputError("--batch-size must be at least 1")
        if not 0 < self.lr < math.inf:
            raise InputError("--lr must be a positive number")
        if not 0 <= self.weight_decay < math.inf or not 0 <= self.clip < math.inf:
            raise InputError("weight decay and --clip must be non-negative numbers")
        if self.order not in ORDERS:
            raise InputError(f"unknown order {self.order!r}; choose one of {', '.join(ORDERS)}")
        if self.num_workers < 0:
            raise InputError("--workers must not be negative")
        if self.resume and self.out is None:
            raise InputError("--resume needs --out: the directory of the run to continue")
        if self.out is not None:
            object.__setattr__(self, "out", Path(self.out))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["out"] = None if self.out is None else str(self.out)
        return d


@dataclass(frozen=True, kw_only=True, eq=False)
class FitResult:
    """What a run produced.

    Attributes:
        metrics: everything ``metrics.json`` holds (also when ``out`` is None).
        model: the network with the best validation weights (the last ones without a
            validation split), in eval mode.
        out: the run's directory, or None.
    """

    metrics: dict[str, Any]
    model: nn.Module
    out: Path | None


def resolve_device(device: str) -> torch.device:
    """``auto`` → CUDA when present, else the CPU; any other name is checked, not guessed."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise InputError(f"unknown --device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type not in ("cpu", "cuda"):
        raise InputError(f"--device {device}: tsfs trains on auto, cpu, cuda or cuda:N")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {device} was asked for, but no CUDA device is available")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise InputError(
            f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s), "
            f"cuda:0 to cuda:{torch.cuda.device_count() - 1}"
        )
    return dev


def reads(fam: Family, config: Any) -> tuple[bool, bool]:
    """Whether a run of ``fam`` with ``config`` reads (features, images) from the store."""
    return (
        bool(getattr(config, "reads_features", fam.reads_features)),
        bool(getattr(config, "reads_images", fam.reads_images)),
    )


def repeat_last_scores(
    split: Split, pred_len: int, *, target_only: bool = False, chunk: int = 1024
) -> dict[str, float]:
    """MSE and MAE of repeating each window's last value over the horizon (scaled values).

    The naive baseline every forecaster must beat; computed ``chunk`` windows at a time, over
    every variable or (``target_only``, ``--features MS``) the last one.
    """
    v = slice(-1, None) if target_only else slice(None)
    if split.y is None:
        raise InputError(f"split {split.name!r} has no forecasting targets")
    sq = ab = 0.0
    n = 0
    for start in range(0, len(split), chunk):
        x = np.asarray(split.x[start : start + chunk, -1:, v], dtype=np.float64)
        y = np.asarray(split.y[start : start + chunk, -pred_len:, v], dtype=np.float64)
        error = y - x
        sq += float(np.square(error).sum())
        ab += float(np.abs(error).sum())
        n += error.size
    return {"mse": sq / n, "mae": ab / n}


def majority_class_accuracy(train: Split, test: Split) -> float:
    """Test accuracy of always answering the training split's most frequent class.

    The naive baseline every classifier must beat (ties go to the lowest class code, as
    :func:`numpy.argmax` breaks them).
    """
    if train.labels is None or test.labels is None or not len(train.labels):
        raise InputError("the majority-class baseline needs labelled train and test splits")
    majority = int(np.argmax(np.bincount(train.labels)))
    return float(np.mean(test.labels == majority)) if len(test.labels) else float("nan")


# --------------------------------------------------------------------------------------------
# the loop


def _amp_dtype(device: torch.device, amp: bool) -> torch.dtype | None:
    if not amp or device.type != "cuda":
        return None
    # bf16 where the GPU computes it natively (compute capability 8.0, Ampere, and later);
    # torch.cuda.is_bf16_supported() also says yes where it is only emulated (T4, V100),
    # slowly, and the fp16 path with loss scaling is the one meant for those.
    native = torch.cuda.get_device_capability(device) >= (8, 0)
    return torch.bfloat16 if native else torch.float16


def _config_dict(config: Any) -> dict[str, Any]:
    """The config as plain JSON values (tuples become lists), for files and comparisons."""
    d: dict[str, Any] = json.loads(json.dumps(dataclasses.asdict(config)))
    return d


@contextmanager
def _writing(path: Path, kept: str) -> Iterator[Path]:
    """Write ``path`` by way of a temp file beside it, synced, then renamed over it: a crash
    or a full disk leaves the previous file (``kept`` says which) and no half-written one."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        with suppress(OSError):  # e.g. a read-only file system: the error is e
            tmp.unlink(missing_ok=True)
        raise OutputError(
            f"cannot write {path}: {e.strerror or e}; {kept}. Free space (or choose another "
            "--out) and continue with --resume"
        ) from e


# TrainSpec fields a resumed run must share with the run it continues.
_RUN_SETTINGS = ("batch_size", "lr", "weight_decay", "clip", "seed", "order", "amp")


def _option(field: str) -> str:
    return "weight decay" if field == "weight_decay" else f"--{field.replace('_', '-')}"


def _check_out(out: Path) -> None:
    """Refuse a run directory that cannot be written, before any training (not after an
    epoch). Nothing is created yet: the directory is made once the run is built."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file; give a directory for the run")
    base = out
    while not base.exists() and base != base.parent:
        base = base.parent
    # access() also answers EROFS for a read-only mount, where a root user's W_OK would pass
    if not base.is_dir() or not os.access(base, os.W_OK | os.X_OK):
        why = "a file" if base.exists() and not base.is_dir() else "not writable"
        raise OutputError(f"cannot write to --out {out}: {base} is {why}; choose another --out")


def _make_out(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(
            f"cannot write to --out {out}: {e.strerror or e}; choose another --out"
        ) from e


def _save(obj: dict[str, Any], path: Path) -> None:
    """Save a checkpoint whole, or keep the previous one."""
    # Serialised in memory first: written by torch, a full disk surfaces as an opaque
    # RuntimeError ("unexpected pos"), written here as the OSError it is.
    data = io.BytesIO()
    torch.save(obj, data)
    with _writing(path, "the previous checkpoint is kept") as tmp, open(tmp, "wb") as f:
        f.write(data.getbuffer())


@contextmanager
def _batches(loader: StoreLoader) -> Iterator[Iterator[Batch]]:
    """Iterate ``loader``, stopping its reader when the caller leaves early (or fails)."""
    batches = iter(loader)
    try:
        yield batches
    finally:
        batches.close()  # type: ignore[attr-defined]  # a generator: joins the reader thread


class _Run:
    """One fit: the model, optimizer and loader, and the bookkeeping a checkpoint holds."""

    def __init__(
        self,
        fam: Family,
        config: Any,
        info: DataInfo,
        readers: Mapping[str, WindowReader],
        spec: TrainSpec,
        notify: Notify,
    ) -> None:
        self.family, self.config, self.info, self.readers, self.spec = (
            fam,
            config,
            info,
            readers,
            spec,
        )
        self.notify = notify
        # what is read per split: val at most the config's ``val_windows`` windows (0: all),
        # evenly spread, what a family that samples to score can afford per epoch
        self.scored = {split: self._scored(split) for split in readers}
        self.device = resolve_device(spec.device)
        self.amp = _amp_dtype(self.device, spec.amp)
        if spec.amp and self.amp is None:
            notify("--amp applies on a GPU only; training in float32 on the CPU")
        torch.manual_seed(spec.seed)
        self.model = fam.build(info, config).to(self.device)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay
        )
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp == torch.float16)
        self.batch_size = spec.batch_size
        self.step = 0
        self.history: list[dict[str, Any]] = []
        self.losses: list[list[float]] = []  # [step, mean loss since the previous entry]
        # (sum, steps) of the losses since the last entry, when training stopped before the
        # next one: a resumed run carries on the same interval, as if never stopped
        self.pending: tuple[float, int] = (0.0, 0)
        self.best: dict[str, Any] | None = None
        self.best_state: dict[str, torch.Tensor] | None = None  # weights of the best epoch
        self.backoffs: list[dict[str, Any]] = []
        # An epoch trained but not yet scored (its record without "val"): the checkpoint saved
        # before scoring keeps it, so an interrupt while scoring loses no training.
        self.unscored: dict[str, Any] | None = None
        self.seconds_before = 0.0  # time the run took before it was resumed
        self.started = time.perf_counter()
        self.identity = {
            "model": fam.name,
            "config": _config_dict(config),
            "data": readers["train"].dataset.fingerprint,
        }
        self.loader = self._loader()
        self.done = np.zeros(len(self.loader), dtype=bool)  # batches trained on this epoch
        self.samples_done = 0  # windows trained on this epoch (the loader counts fetched ones)
        self.stop_requested = False  # Ctrl-C: stop after the step in flight
        self.stop_signal = int(signal.SIGINT)  # the signal that asked for it

    # ---- loaders and out-of-memory back-off --------------------------------------------

    def _loader(self, split: str = "train") -> StoreLoader:
        return StoreLoader(
            self.scored[split],
            batch_size=self.batch_size,
            order=self.spec.order if split == "train" else "sequential",
            seed=self.spec.seed,
            rank=0,
            world_size=1,
            num_workers=self.spec.num_workers,
            device=self.device,
        )

    def _scored(self, split: str) -> WindowReader:
        """The reader of ``split`` (see :attr:`scored`)."""
        reader = self.readers[split]
        limit = int(getattr(self.config, "val_windows", 0) or 0)
        if split != "val" or not 0 < limit < len(reader):
            return reader
        return reader.subset(np.unique(np.linspace(0, len(reader) - 1, limit).round().astype(int)))

    def _loader_state(self) -> dict[str, Any]:
        state = self.loader.state_dict()
        state["batches"] = ranges_from_mask(self.done)
        state["samples"] = self.samples_done
        return state

    def _halve(self, where: str, error: torch.OutOfMemoryError) -> None:
        if self.batch_size == 1:
            raise InputError(
                f"out of GPU memory {where} even with batch size 1; use a smaller model "
                "(--config) or --amp"
            ) from error
        self.optimizer.zero_grad(set_to_none=True)
        torch.cuda.empty_cache()
        old = self.batch_size
        self.batch_size = max(1, old // 2)
        self.backoffs.append({"step": self.step, "where": where, "batch_size": self.batch_size})
        self.notify(
            f"out of GPU memory {where} at step {self.step}: batch size {old} → "
            f"{self.batch_size}, carrying on"
        )
        # Window order does not depend on the batch size: old batch i is new batches 2i, 2i+1.
        epoch = self.loader.epoch
        self.loader = self._loader()
        done = np.repeat(self.done, 2)[: len(self.loader)]
        state = self.loader.state_dict() | {
            "epoch": epoch,
            "samples": self.samples_done,
            "batches": ranges_from_mask(done),
        }
        self.loader.load_state_dict(state)
        self.done = done

    # ---- training -------------------------------------------------------------------------

    def _autocast(self) -> torch.autocast:
        return torch.autocast(
            self.device.type, dtype=self.amp or torch.float32, enabled=self.amp is not None
        )

    def _reached(self) -> bool:
        if self.stop_requested:
            return True
        return self.spec.max_steps is not None and self.step >= self.spec.max_steps

    def _train_step(self, batch: Any) -> torch.Tensor:
        self.model.train()
        with self._autocast():
            loss = self.family.loss(self.model, batch)
        scaled: torch.Tensor = self.scaler.scale(loss)
        scaled.backward()  # type: ignore[no-untyped-call]
        # From here on an out-of-memory error cannot be retried with a smaller batch: the
        # optimizer's state (AdamW's moments, made at its first step) and the scaler's may be
        # half updated, and a retry would fail on them or apply an update twice.
        try:
            if self.spec.clip > 0:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), self.spec.clip)
            self.scaler.step(self.optimizer)
        except torch.OutOfMemoryError as e:
            raise InputError(
                f"out of GPU memory in the optimizer's update at step {self.step} (its state "
                "is partly written, so a smaller batch cannot retry it); use a smaller model "
                "(--config) or --amp, and --resume from the last checkpoint"
            ) from e
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return loss.detach().float()

    def _check_loss(self, mean: float) -> None:
        if not math.isfinite(mean):
            raise InputError(
                f"the training loss became {mean} by step {self.step}; lower --lr, keep "
                "--clip on, or train in float32"
            )

    def _check_monitored(self, split: str, scores: Mapping[str, float]) -> None:
        """A monitored score that is not finite means the model diverged (a run that ends
        between loss read-backs would otherwise finish with NaN scores and exit 0). Other
        scores may be undefined on some data (a CRPS normalised by all-zero targets) and are
        recorded as null."""
        value = scores.get(self.family.monitor)
        if value is not None and not math.isfinite(value):
            raise InputError(
                f"scoring {split} after step {self.step} gave {self.family.monitor} {value}: "
                "the model diverged; lower --lr, keep --clip on, or train in float32"
            )

    def _log_loss(self, total: torch.Tensor, count: int, bar: tqdm[Any]) -> None:
        mean = float(total) / count
        self._check_loss(mean)
        self.losses.append([self.step, mean])
        bar.set_postfix(loss=f"{mean:.4f}", batch=self.batch_size)

    def train_epoch(self) -> bool:
        """Train until the epoch ends (True) or ``max_steps`` is reached (False)."""
        epoch = self.loader.epoch
        with tqdm(
            total=len(self.loader),
            initial=int(self.done.sum()),
            desc=f"epoch {epoch + 1}/{self.spec.epochs}",
            unit="batch",
            disable=not self.spec.progress,
            dynamic_ncols=True,
            leave=False,
        ) as bar:
            total = torch.full((), self.pending[0], device=self.device)
            count, self.pending = self.pending[1], (0.0, 0)
            while True:
                try:
                    with _batches(self.loader) as batches:
                        for batch in batches:
                            if self._reached():
                                self.pending = (float(total), count)
                                total, count = torch.zeros((), device=self.device), 0
                                if self.pending[1]:  # checked now: no later entry will be
                                    self._check_loss(self.pending[0] / self.pending[1])
                                return False
                            total += self._train_step(batch)
                            count += 1
                            self.done[batch["batch"]] = True
                            self.samples_done += len(batch["index"])
                            bar.update()
                            if count == _LOG_EVERY:
                                self._log_loss(total, count, bar)
                                total, count = torch.zeros((), device=self.device), 0
                    break
                except torch.OutOfMemoryError as e:
                    self._halve("in a training step", e)
                    bar.reset(total=len(self.loader))
                    bar.update(int(self.done.sum()))
                finally:
                    if count:
                        self._log_loss(total, count, bar)
                        total, count = torch.zeros((), device=self.device), 0
        self.done = np.zeros(len(self.loader), dtype=bool)
        self.samples_done = 0
        return True

    # ---- evaluation -----------------------------------------------------------------------

    def evaluate(self, split: str) -> dict[str, float]:
        """The family's scores over a whole split: sums and counts added, divided once."""
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        while True:
            try:
                with torch.random.fork_rng(devices=devices), torch.no_grad():
                    torch.manual_seed(self.spec.seed)
                    self.model.eval()
                    sums: dict[str, torch.Tensor] = {}
                    counts: dict[str, float] = {}
                    loader = self._loader(split)
                    with (
                        _batches(loader) as batches,
                        tqdm(
                            total=len(loader),
                            desc=f"scoring {split}",
                            unit="batch",
                            disable=not self.spec.progress,
                            dynamic_ncols=True,
                            leave=False,
                        ) as bar,
                    ):
                        for batch in batches:
                            with self._autocast():
                                scores = self.family.score(self.model, batch)
                            for name, (value, n) in scores.items():
                                sums[name] = value.detach().double() + sums.get(name, 0)
                                counts[name] = counts.get(name, 0.0) + float(n)
                            bar.update()
                    result = {name: float(sums[name]) / counts[name] for name in sums}
                    self._check_monitored(split, result)
                    return result
            except torch.OutOfMemoryError as e:
                self._halve(f"evaluating {split}", e)

    # ---- checkpoints ----------------------------------------------------------------------

    def checkpoint(self) -> dict[str, Any]:
        cuda = self.device.type == "cuda"
        return {
            "format": _CHECKPOINT_FORMAT,
            **self.identity,
            "train": self.spec.to_dict(),
            "step": self.step,
            "batch_size": self.batch_size,
            "model_state": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "loader": self._loader_state(),
            "rng": torch.get_rng_state(),
            # the training GPU's own: another machine may have fewer GPUs, or number them
            # otherwise, and a resume restores this one onto whichever GPU it trains on
            "cuda_rng": [torch.cuda.get_rng_state(self.device)] if cuda else [],
            "history": self.history,
            "losses": self.losses,
            "pending_loss": list(self.pending),
            "best": self.best,
            "backoffs": self.backoffs,
            "unscored": self.unscored,
            "seconds": self.seconds_before + time.perf_counter() - self.started,
            # what the data fingerprint was made from, to name a changed option on resume
            "window": strict_json(dataclasses.asdict(self.readers["train"].dataset.spec)),
        }

    def _same(self, key: str, ckpt: dict[str, Any]) -> bool:
        """Whether the checkpoint's ``key`` (model, config, data) is this run's. Settings a
        family gained after the checkpoint was written take any value: the run resumes with
        what is given now (default or ``-c``)."""
        was, now = ckpt.get(key), self.identity[key]
        if key == "config" and isinstance(was, dict) and isinstance(now, dict):
            return was == {k: v for k, v in now.items() if k in was}
        return bool(was == now)

    def _difference(self, key: str, ckpt: dict[str, Any]) -> str:
        """What differs in ``key`` (model, config, data) between a checkpoint and this run."""
        was, now = ckpt.get(key), self.identity[key]
        if key == "config" and isinstance(was, dict) and isinstance(now, dict):
            return "-c " + ", -c ".join(
                f"{k}={was.get(k)} (now {now.get(k)})"
                for k in sorted(was)
                if was.get(k) != now.get(k)
            )
        if key == "data":
            dataset = self.readers["train"].dataset
            try:
                window = json.loads(ckpt.get("window", "{}"))
            except (TypeError, ValueError):
                window = {}
            current = json.loads(strict_json(dataclasses.asdict(dataset.spec)))
            options = [
                f"{_option(k)} {window[k]} (now {current[k]})"
                for k in sorted(current)
                if k in window and window[k] != current[k]
            ]
            if options:
                return ", ".join(options)
            return f"other data in {dataset.path.name} (its contents or columns changed)"
        return f"{key} {was} (now {now})"

    def restore(self, path: Path) -> None:
        if not path.is_file():
            raise InputError(f"nothing to resume: {path} does not exist; drop --resume")
        ckpt = _load_checkpoint(path)
        if ckpt.get("format") != _CHECKPOINT_FORMAT:
            raise InputError(f"{path} is not a tsfs checkpoint this version reads")
        differ = [k for k in self.identity if not self._same(k, ckpt)]
        if "model" in differ:  # another family's settings are all different: say the model
            differ = [k for k in differ if k != "config"]
        if differ:
            said = "; ".join(self._difference(k, ckpt) for k in differ)
            raise InputError(
                f"cannot resume {path}: it was trained with {said}. Use the same model, "
                "--config and data options, or another --out"
            )
        # A resumed run must be the run it continues: settings that shape the optimisation
        # may not change under it (epochs, steps, device, workers and bars may).
        was, now = ckpt["train"], self.spec.to_dict()
        # AMP is float32 on the CPU whatever --amp says: a CPU run may resume either way.
        ignored = {"amp"} if self.device.type != "cuda" else set()
        changed = [k for k in _RUN_SETTINGS if k not in ignored and was.get(k) != now[k]]
        if changed:
            said = ", ".join(f"{_option(k)} {was.get(k)} (now {now[k]})" for k in changed)
            raise InputError(
                f"cannot resume {path}: it was trained with {said}; resume with the same "
                "settings, or start another --out"
            )
        try:
            self.model.load_state_dict(ckpt["model_state"])
        except RuntimeError:  # same family and settings, other layers: an earlier tsfs's model
            raise InputError(
                f"cannot resume {path}: its {self.identity['model']} weights do not fit this "
                "tsfs version's model (the model changed since); start another --out"
            ) from None
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.step = int(ckpt["step"])
        self.batch_size = int(ckpt["batch_size"])
        # An epoch cut short was scored where it stopped; its record stays until the resumed
        # run scores that epoch again (whole, or cut short elsewhere) and replaces it.
        self.history = list(ckpt["history"])
        self.losses, self.best, self.backoffs = ckpt["losses"], ckpt["best"], ckpt["backoffs"]
        self.unscored = ckpt.get("unscored")
        self.seconds_before = float(ckpt.get("seconds", 0.0))
        total, count = ckpt.get("pending_loss", (0.0, 0))
        self.pending = (float(total), int(count))
        self.loader = self._loader()
        if self.loader.load_state_dict(ckpt["loader"], if_moved="restart"):
            # The rows moved in the store (a compaction) since the epoch was cut short: its
            # remaining order is gone, so the epoch starts again rather than skip windows.
            self.notify(
                f"the store's rows moved since {path} was saved (a compaction?): epoch "
                f"{self.loader.epoch + 1} starts again from its beginning"
            )
            self.done = np.zeros(len(self.loader), dtype=bool)
            self.samples_done = 0
        else:
            self.done = mask_from_ranges(ckpt["loader"]["batches"], len(self.loader))
            self.samples_done = int(ckpt["loader"]["samples"])
        torch.set_rng_state(ckpt["rng"].cpu())
        if ckpt["cuda_rng"] and self.device.type == "cuda":
            # one state (the training GPU's); an earlier tsfs saved every GPU's, in order
            saved = ckpt["cuda_rng"]
            state = saved[min(self.device.index or 0, len(saved) - 1)]
            torch.cuda.set_rng_state(state.cpu(), self.device)
        if self.best is not None:
            # The best epoch's weights score the test split, as in a run never interrupted.
            best = path.with_name("best.pt")
            try:
                saved = torch.load(best, map_location="cpu", weights_only=True)
            except _UNREADABLE as e:
                raise StoreCorruptError(
                    f"cannot read {best}, the weights of the best epoch "
                    f"({self.best['epoch']}) that this run continues: {e}"
                ) from None
            self.best_state = saved["model_state"]


# What torch.load raises for a file that is no checkpoint (cut short, another format, a
# pickle that weights_only refuses — whose message would advise the unsafe weights_only=False).
_UNREADABLE = (RuntimeError, OSError, EOFError, pickle.UnpicklingError, ValueError)


def _load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint's dict, loaded with ``weights_only``; anything else is a one-line error."""
    try:
        # Onto the CPU: load_state_dict moves weights and moments to their parameters, and
        # leaves AdamW's step counters on the CPU, where reading them costs no device sync.
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except _UNREADABLE as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if isinstance(e, pickle.UnpicklingError):  # torch's text advises the unsafe load
            first = "not a checkpoint, or one holding more than tensors and plain values"
        raise StoreCorruptError(
            f"cannot read checkpoint {path} ({first}); remove it or choose another --out"
        ) from None
    if not isinstance(ckpt, dict):
        raise StoreCorruptError(
            f"{path} is not a tsfs checkpoint (it holds a {type(ckpt).__name__}); remove it "
            "or choose another --out"
        )
    return ckpt


class TrainingInterrupted(Interrupted):
    """Ctrl-C stopped training between two steps.

    Attributes:
        step: the optimizer steps taken.
        checkpoint: the ``last.pt`` saved at that step (None without an ``out`` directory),
            from which ``resume`` continues mid-epoch as if never stopped.
        signum: the signal that asked to stop (SIGINT for Ctrl-C, SIGTERM for ``kill``).
    """

    def __init__(self, step: int, checkpoint: Path | None, *, signum: int = signal.SIGINT) -> None:
        super().__init__(step, checkpoint, signum=signum)
        self.step = step
        self.checkpoint = checkpoint


@contextmanager
def _stop_on_interrupt(run: _Run) -> Iterator[None]:
    """While ``run`` trains, a first Ctrl-C (or SIGTERM, where handled in Python) asks it to
    stop after the step in flight (so the checkpoint holds whole steps); a second one
    interrupts at once.

    Handlers are replaced only on the main thread (the one that receives signals).
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread receives signals
        return

    def request_stop(signum: int, frame: object) -> None:
        if run.stop_requested:
            raise Interrupted(signum=signum)
        run.stop_requested = True
        run.stop_signal = signum

    # SIGINT where Python's own handler has it; SIGTERM where the process handles it in
    # Python (the CLI makes it an interrupt). A default action (end the process), an ignored
    # signal or another SIGINT handler is left alone.
    taken = {
        sig: handler
        for sig, handler in (
            (signal.SIGINT, signal.getsignal(signal.SIGINT)),
            (signal.SIGTERM, signal.getsignal(signal.SIGTERM)),
        )
        if handler is signal.default_int_handler or (sig == signal.SIGTERM and callable(handler))
    }
    for sig in taken:
        signal.signal(sig, request_stop)
    try:
        yield
    finally:
        for sig, handler in taken.items():
            signal.signal(sig, handler)


def _score_epoch(run: _Run, fam: Family) -> None:
    """Score ``run.unscored``, the epoch just trained, on val (where there is one), keep the
    best whole epoch, add the record to the history and save ``last.pt``.

    An interrupt while scoring (a first Ctrl-C stops at once: scores have no side effects)
    leaves the checkpoint saved before it, which resumes here.
    """
    record = run.unscored
    assert record is not None
    out = run.spec.out
    if "val" in run.readers:
        try:
            record["val"] = run.evaluate("val")
        except KeyboardInterrupt as e:
            if out is None:
                raise
            raise TrainingInterrupted(
                run.step, out / "last.pt", signum=getattr(e, "signum", signal.SIGINT)
            ) from None
        monitor = fam.monitor
        value = record["val"].get(monitor)
        if value is None:
            raise InputError(f"{fam.name} monitors {monitor!r} but its scores lack it")
        # Only whole epochs compete: one cut short (--max-steps, Ctrl-C) is scored for the
        # record, and a resumed run would not have scored it at all.
        if record["complete"] and (run.best is None or value < run.best["val"][monitor]):
            run.best = {"epoch": record["epoch"], "step": run.step, "val": record["val"]}
            if out is not None:
                _save(run.checkpoint(), out / "best.pt")
            run.best_state = {
                k: v.detach().cpu().clone() for k, v in run.model.state_dict().items()
            }
    # one record per epoch: a resumed epoch's replaces the one scored where it was cut short
    run.history = [r for r in run.history if r["epoch"] != record["epoch"]]
    run.history.append(record)
    run.unscored = None
    if out is not None:
        _save(run.checkpoint(), out / "last.pt")
    if run.spec.log_epochs:
        run.notify(_epoch_line(run, record, fam.monitor))


def _epoch_line(run: _Run, record: Mapping[str, Any], monitor: str) -> str:
    """``epoch 2/10: step 68, train loss 0.4123, val crps 0.3301, 41.2 s``."""
    parts = [f"epoch {record['epoch'] + 1}/{run.spec.epochs}: step {record['step']}"]
    if "train_loss" in record:
        parts.append(f"train loss {record['train_loss']:.4f}")
    if "val" in record:
        scored, windows = len(run.scored["val"]), len(run.readers["val"])
        of = f" ({scored:,} of {windows:,} windows)" if scored < windows else ""
        parts.append(f"val {monitor} {record['val'][monitor]:.4f}{of}")
    if not record["complete"]:
        parts.append("cut short")
    seconds = run.seconds_before + time.perf_counter() - run.started
    return ", ".join([*parts, f"{seconds:.1f} s"])


def fit(
    fam: Family,
    config: Any,
    info: DataInfo,
    readers: Mapping[str, WindowReader],
    spec: TrainSpec,
    *,
    notify: Notify = _note,
) -> FitResult:
    """Train ``fam`` on ``readers["train"]``, pick the best epoch on ``"val"``, score ``"test"``.

    Args:
        fam: the model family; ``config`` its config (an instance of ``fam.config_type``).
        info: what the family needs to know about the data.
        readers: split name → reader; ``train`` is required, ``val`` and ``test`` optional.
        spec: how to train.
        notify: where one-line notes go (out-of-memory back-off, ignored ``--amp``).

    Raises:
        InputError: bad settings, a checkpoint that does not fit, ``out`` holding another
            run (without ``resume``), or a loss that stopped being finite.
    """
    if "train" not in readers:
        raise InputError("training needs the train split; add train to --splits")
    # PyTorch's per-step activations would otherwise be page-faulted in afresh at every step
    # on the CPU (a quarter of a diffusion step's time): see tsfs._allocator.
    keep_freed_memory()
    out = spec.out
    if out is not None:
        _check_out(out)
    if out is not None and not spec.resume and (out / "last.pt").exists():
        try:
            saved = _load_checkpoint(out / "last.pt").get("model")
        except StoreCorruptError:
            saved = None
        if saved != fam.name:  # --resume could not continue it: do not suggest it
            what = f"a {saved} run" if isinstance(saved, str) else "a last.pt tsfs cannot read"
            raise InputError(f"{out} already holds {what}; choose another --out")
        raise InputError(
            f"{out} already holds a run (last.pt); pass --resume to continue it or choose "
            "another --out"
        )
    t0 = time.perf_counter()
    run = _Run(fam, config, info, readers, spec, notify)
    if out is not None:
        fresh = not out.exists()
        _make_out(out)
        if spec.resume:
            try:
                run.restore(out / "last.pt")
            except InputError:
                if fresh:  # nothing to resume: leave no empty --out behind
                    with contextlib.suppress(OSError):
                        out.rmdir()
                raise
    if run.unscored is not None:  # resumed while an epoch's scores were being computed
        _score_epoch(run, fam)
    while run.loader.epoch < spec.epochs and not run._reached():
        epoch = run.loader.epoch
        with _stop_on_interrupt(run):
            complete = run.train_epoch()
        if run.stop_requested:
            checkpoint = None if out is None else out / "last.pt"
            if checkpoint is not None:
                _save(run.checkpoint(), checkpoint)
            raise TrainingInterrupted(run.step, checkpoint, signum=run.stop_signal)
        record: dict[str, Any] = {"epoch": epoch, "step": run.step, "complete": complete}
        if run.pending[1]:  # cut short within a loss interval
            record["train_loss"] = run.pending[0] / run.pending[1]
        elif run.losses:
            record["train_loss"] = run.losses[-1][1]
        run.unscored = record
        if out is not None and "val" in readers:
            # Scoring may take longer than the epoch (diffusion samples): an interrupt while
            # it runs resumes from here, with the training kept.
            _save(run.checkpoint(), out / "last.pt")
        _score_epoch(run, fam)
    if run.best_state is not None:
        run.model.load_state_dict(run.best_state)
    metrics: dict[str, Any] = {
        **run.identity,
        "train": spec.to_dict(),
        "windows": {name: len(reader) for name, reader in readers.items()},
        "device": str(run.device),
        "amp": None if run.amp is None else str(run.amp).removeprefix("torch."),
        "batch_size": run.batch_size,
        "steps": run.step,
        "epochs": run.history,
        "best": run.best,
        "backoffs": run.backoffs,
    }
    classes = readers["train"].dataset.classes
    if classes is not None:
        # what the model's outputs 0, 1, … mean (.ts files keep @classLabel's order)
        metrics["classes"] = list(classes)
    if "test" in readers:
        metrics["test"] = run.evaluate("test")
        if info.task == "forecast":
            split = readers["test"].split
            metrics["baseline"] = {
                "repeat_last": repeat_last_scores(
                    split, info.pred_len, target_only=info.target_only
                )
            }
        elif "train" in readers:
            metrics["baseline"] = {
                "majority_class": {
                    "accuracy": majority_class_accuracy(
                        readers["train"].split, readers["test"].split
                    )
                }
            }
    # the whole run's time, resumed parts included
    metrics["seconds"] = run.seconds_before + time.perf_counter() - t0
    run.model.eval()
    if out is not None:
        with _writing(out / "metrics.json", "last.pt holds the trained run") as tmp:
            tmp.write_text(strict_json(metrics, indent=2) + "\n")
        # The steps since the last loss entry, drawn too (last.pt keeps them pending).
        total, count = run.pending
        losses = run.losses + ([[run.step, total / count]] if count else [])
        with _writing(out / "curves.png", "last.pt holds the trained run") as tmp:
            _plot(tmp, losses, run.history, fam.monitor, fam.name)
    return FitResult(metrics=metrics, model=run.model, out=out)


def _plot(
    path: Path,
    losses: list[list[float]],
    history: list[dict[str, Any]],
    monitor: str,
    title: str,
) -> None:
    """Training loss and the validation metric against the step, as a PNG."""
    # Imported here, once training is over: tsfs.training never draws while it trains.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 3.2), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    if losses:
        steps, values = zip(*losses, strict=True)
        # a marker too when there are few points: a single point draws no line
        left.plot(steps, values, color="#1f77b4", marker="o" if len(steps) < 20 else None)
    left.set(title=f"{title}: training loss", xlabel="step")
    val = [(h["step"], h["val"][monitor]) for h in history if monitor in h.get("val", {})]
    if val:
        steps, values = zip(*val, strict=True)
        right.plot(steps, values, marker="o", color="#d62728")
    right.set(title=f"validation {monitor}", xlabel="step")
    fig.savefig(path, format="png")


# --------------------------------------------------------------------------------------------
# data set + store → readers → fit


_TASKS: dict[str, Task] = {"forecast": "forecast", "classification": "classify"}


def _spec_of(namespace: Namespace, cls: type[S]) -> S:
    """The spec a namespace was written for, rebuilt from its attributes and checked."""
    fields = {k: v for k, v in namespace.spec.items() if k not in ("kind", "version")}
    try:
        spec = cls(**fields)
    except (TypeError, ValueError) as e:
        raise StoreCorruptError(
            f"{namespace.path}: its spec is not one this tsfs reads ({e})"
        ) from None
    if spec.fingerprint != namespace.fingerprint:
        raise StoreCorruptError(
            f"{namespace.path}: its spec does not give its name (written by another tsfs version?)"
        )
    return spec


def _namespace_spec(view: View, requested: S | str | None, cls: type[S]) -> S:
    """The ``cls`` spec whose namespace to read: asked for, or the one holding the data."""
    if requested is not None and not isinstance(requested, str):
        return requested  # the reader names the prep command if rows are missing
    kind: Literal["features", "images"] = "features" if cls is FeatureSpec else "images"
    store, dataset = view.store, view.dataset
    candidates = [ns for ns in store.namespaces(current=True) if ns.kind == kind]
    if requested is not None:
        candidates = [ns for ns in candidates if ns.fingerprint.startswith(requested)]
        old = [
            ns
            for ns in store.namespaces()
            if ns.kind == kind and not ns.current and ns.fingerprint.startswith(requested)
        ]
        if not candidates and old:
            raise MissingRowsError(
                f"{kind} namespace {old[0].fingerprint} of store {store.url} (--namespace) is of "
                f"another spec version than this tsfs reads (version {spec_version(kind)}); "
                f"re-run the `tsfs prep {kind}` command that made it to compute the current one"
            )
        if not candidates:
            raise InputError(
                f"store {store.url} has no {kind} namespace {requested!r} (--namespace); "
                f"`tsfs store info {store.url}` lists them"
            )
    keys = np.concatenate([k.reshape(-1, 16) for k in view.keys.values()])
    complete = [ns for ns in candidates if bool(ns.lookup(keys).found.all())]
    if not complete:
        # A namespace that holds part of the data is the one to complete; else the defaults.
        spec = _spec_of(candidates[0], cls) if len(candidates) == 1 else cls()
        command = prep_command(kind, dataset, spec, store)
        raise MissingRowsError(
            f"no {kind} namespace in store {store.url} holds every row of "
            f"{dataset.path.name} with these data options; compute them with: {command}"
        )
    if len(complete) > 1:
        listed = ", ".join(ns.fingerprint for ns in complete)
        raise InputError(
            f"several {kind} namespaces of store {store.url} hold this data ({listed}); "
            "pick one with --namespace"
        )
    return _spec_of(complete[0], cls)


def _open_store(store: Store | str | os.PathLike[str]) -> Store:
    """An existing store for reading (writable when possible, so views persist), or an empty
    stand-in where none exists (a family that reads nothing from it still trains)."""
    if isinstance(store, Store):
        return store
    if open_files(store).exists("zarr.json"):
        try:
            return Store(store, mode="a")
        except StoreReadOnlyError:
            return Store(store, mode="r")
    return Store(store, mode="r", missing_ok=True)


def train(
    model: str,
    dataset: Dataset,
    store: Store | str | os.PathLike[str],
    spec: TrainSpec,
    config: Any = None,
    *,
    features: FeatureSpec | str | None = None,
    images: ImageSpec | str | None = None,
    notify: Notify = _note,
) -> FitResult:
    """Train family ``model`` on ``dataset`` with what ``store`` holds for it.

    Args:
        model: a registered family name (:data:`tsfs.training.models.FAMILIES`).
        dataset: the windows (:func:`tsfs.pipeline.sources.load`); its splits are trained on
            (``train``), monitored (``val``) and scored (``test``).
        store: the store ``tsfs prep`` filled (a Store or its directory).
        spec: how to train.
        config: the family's config (default: its defaults).
        features, images: the namespace to read when the family reads one: a spec, a
            namespace fingerprint (or its start), or None for the store's one namespace
            that holds every row of the data.

    Raises:
        MissingRowsError: the store lacks rows the family reads; names the ``tsfs prep``
            command that computes them.
        InputError: the family does not train on this kind of data, a bad config, ….
    """
    fam = family(model)
    config = fam.config_type() if config is None else config
    if not isinstance(config, fam.config_type):
        raise InputError(f"{model} takes a {fam.config_type.__name__}, not {type(config)}")
    task = _TASKS.get(dataset.kind)
    if task is None or task not in fam.tasks:
        nouns = {"forecast": "forecasting", "classify": "classification"}
        raise InputError(
            f"{model} trains on {' or '.join(nouns[t] for t in fam.tasks)} data; "
            f"{dataset.path.name} is {dataset.kind} data"
        )
    if task == "forecast" and dataset.spec.pred_len < 1:
        raise InputError(f"--pred-len must be at least 1 to train a forecaster ({model})")
    if "train" not in dataset.splits and "train" in dataset.spec.splits:
        raise InputError(
            f"training needs a train split, and {dataset.path.name} has none (it has "
            f"{', '.join(dataset.splits)}); load a file with training samples (a UEA _TRAIN "
            "file brings its _TEST sibling)"
        )
    view = open_view(dataset, _open_store(store))
    want_features, want_images = reads(fam, config)
    fspec = _namespace_spec(view, features, FeatureSpec) if want_features else None
    ispec = _namespace_spec(view, images, ImageSpec) if want_images else None
    output: ImageOutput = fam.image_output  # type: ignore[assignment]
    readers = {
        name: WindowReader(view, name, features=fspec, images=ispec, image_output=output)
        for name in dataset.splits
    }
    first = next(iter(readers.values())).split
    w = dataset.spec
    info = DataInfo(
        task=task,
        seq_len=int(first.x.shape[1]),
        label_len=w.label_len if task == "forecast" else 0,
        pred_len=w.pred_len if task == "forecast" else 0,
        n_vars=int(first.x.shape[2]),
        n_marks=int(first.x_mark.shape[2]) if first.x_mark is not None else 0,
        n_classes=len(dataset.classes or ()),
        feature_names=_feature_shapes(readers),
        image_size=ispec.size if ispec is not None else 0,
        image_spec=ispec,
        target_only=task == "forecast" and w.features == "MS",
    )
    if task == "classify" and "train" in dataset.splits and dataset.classes:
        _note_unseen_classes(dataset, notify)
    return fit(fam, config, info, readers, spec, notify=notify)


def _note_unseen_classes(dataset: Dataset, notify: Notify) -> None:
    """Say so when val or test hold classes no training sample has: the model cannot
    predict them, so part of the accuracy is lost before training starts."""
    classes = dataset.classes or ()
    train = dataset.splits["train"].labels
    if train is None:
        return
    seen = set(np.unique(train).tolist())
    for name, split in dataset.splits.items():
        if name == "train" or split.labels is None:
            continue
        unseen = sorted(set(np.unique(split.labels).tolist()) - seen)
        if unseen:
            share = np.isin(split.labels, unseen).mean()
            notify(
                f"{name} holds class(es) {', '.join(classes[c] for c in unseen)} that no "
                f"training sample has ({share:.0%} of its samples): no model can get those right"
            )


def _feature_shapes(readers: Mapping[str, WindowReader]) -> dict[str, tuple[int, ...]]:
    columns = next(iter(readers.values())).features
    return dict(columns.shapes) if columns is not None else {}
