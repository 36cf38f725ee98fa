"""`tsfs train MODEL DATA`: train a model family on a data set with what a store holds for it."""

from __future__ import annotations

import dataclasses
import math
import sys
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import typer

from tsfs.cli._common import (
    DEFAULT_STORE,
    StoreOpt,
    echo_json,
    interrupt_exit_code,
    reports_errors,
)
from tsfs.cli._data import DataArg, data_options
from tsfs.cli.prep import JsonOpt
from tsfs.errors import InputError
from tsfs.specs import WindowSpec

__all__ = ["HELP", "MODELS", "family_config", "main"]

DEFAULT_RUNS = Path("tsfs-runs")
# Spelled out rather than read from tsfs.training.models.FAMILIES: that import loads torch,
# which every other command would then pay for at start-up (a test keeps the two in step).
MODELS = ("diffusion", "timellm", "timesclip", "unet")

# Paragraphs are single lines: the help renderer keeps line breaks as they are written.
HELP = "\n\n".join(
    [
        "Train a model on a data set; its features and images come from the store.",
        f"Models: {', '.join(MODELS)}.",
        "  diffusion: iTransformer + 1D U-Net diffusion, CRPS scores. After every epoch, "
        "val_windows (256) val windows evenly spread are scored by sampling each "
        "n_samples x sample_steps times (16 x 50); -c val_windows=0 scores all of them, "
        "-c sample_steps=10 takes 5x fewer denoising steps.",
        "  timellm: Time-LLM on stored prompt features (prep features first)",
        "  timesclip: line plots + series, forecast or classify (prep images)",
        "  unet: forecasts by inpainting stored line plots (prep images first)",
        "Model settings: --config KEY=VALUE, repeated; an unknown KEY lists them. A run writes "
        "metrics.json, last.pt, curves.png and (with a val split, after a whole epoch) best.pt "
        "to --out. Ctrl-C stops after the step in flight and saves last.pt there; --resume goes "
        "on. Without a terminal, a line per epoch goes to stderr instead of progress bars.",
        "Examples:",
        "  tsfs train diffusion data/ETTh1.csv --stride 8 --epochs 10 -c sample_steps=10",
        "  tsfs train diffusion data/ETTh1.csv --stride 8 --epochs 20 -c sample_steps=10 --resume",
        "  tsfs train timellm data/ETTh1.csv --seq-len 512 --store tsfs-store",
        "  tsfs train timesclip BasicMotions_TRAIN.ts --store tsfs-store",
    ]
)

ModelArg = Annotated[
    str, typer.Argument(help=f"{' | '.join(MODELS)}.", metavar="MODEL", show_default=False)
]
ConfigOpt = Annotated[
    Optional[list[str]],  # noqa: UP045
    typer.Option("--config", "-c", help="A model setting KEY=VALUE (repeatable)."),
]
OutOpt = Annotated[
    Optional[Path],  # noqa: UP045
    typer.Option(help="Run directory (default: tsfs-runs/MODEL)."),
]
MaxStepsOpt = Annotated[
    Optional[int],  # noqa: UP045
    typer.Option(help="Stop after this many optimizer steps in all."),
]
NamespaceOpt = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option(help="Fingerprint (or its start) of the namespace to read, when several fit."),
]


def _shown(value: object) -> str:
    """A setting's value as --config takes it back: ``channels=16,32,64``, not a tuple."""
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return repr(value)


def _parse(text: str, kind: Any, where: str) -> Any:
    """``text`` as a value of the annotation ``kind`` (scalars, Literal, tuples, X | None)."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and text.lower() in ("none", "null"):
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _parse(text, inner, where)
    if origin is Literal:
        if text not in args:
            raise InputError(f"{where}: {text!r} is not one of {', '.join(map(str, args))}")
        return text
    if origin is tuple:
        items = [t.strip() for t in text.split(",") if t.strip()]
        return tuple(_parse(t, args[0], where) for t in items)
    if kind is bool:
        words = {"true": True, "yes": True, "on": True, "1": True}
        words |= {"false": False, "no": False, "off": False, "0": False}
        if text.lower() not in words:
            raise InputError(f"{where}: {text!r} is not true or false")
        return words[text.lower()]
    if kind in (int, float):
        noun = "an integer" if kind is int else "a finite number"
        try:
            value = kind(text)
        except ValueError:
            raise InputError(f"{where}: {text!r} is not {noun}") from None
        if not math.isfinite(value):  # nan and inf parse as floats
            raise InputError(f"{where}: {text!r} is not {noun}")
        return value
    if kind is str:
        return text
    raise InputError(f"{where} cannot be set from the command line")


def family_config(config_type: type[Any], pairs: Sequence[str], model: str) -> Any:
    """``config_type`` with the ``KEY=VALUE`` settings of ``pairs`` (others at defaults).

    Raises:
        InputError: a pair that is not KEY=VALUE, an unknown key (the message lists every
            setting with its default), or a value of the wrong type or range.
    """
    fields = {f.name: f for f in dataclasses.fields(config_type)}
    hints = typing.get_type_hints(config_type)
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            example = next(iter(fields))
            raise InputError(
                f"--config {pair!r}: write KEY=VALUE, e.g. --config {example}="
                f"{getattr(config_type(), example)!r}"
            )
        if key not in fields:
            defaults = config_type()
            known = ", ".join(f"{name}={_shown(getattr(defaults, name))}" for name in fields)
            raise InputError(f"--config: {model} has no setting {key!r}; its settings: {known}")
        values[key] = _parse(text.strip(), hints[key], f"--config {key}")
    return config_type(**values)


def _summary(metrics: dict[str, Any], out: Path) -> None:
    windows = " / ".join(f"{k} {v:,}" for k, v in metrics["windows"].items())
    typer.echo(
        f"{metrics['model']}: {metrics['steps']:,} steps, batch {metrics['batch_size']}, "
        f"{metrics['device']}, {metrics['seconds']:.1f} s (windows: {windows})"
    )

    def line(scores: dict[str, float]) -> str:
        return "  ".join(f"{k} {v:.4f}" for k, v in scores.items())

    best = metrics.get("best")
    if best:
        # numbered as the progress lines number epochs, from 1 (metrics.json counts from 0)
        typer.echo(f"best: epoch {best['epoch'] + 1} (step {best['step']:,}): {line(best['val'])}")
    if "test" in metrics:
        typer.echo(f"test: {line(metrics['test'])}")
    for key, label in (("repeat_last", "repeat-last"), ("majority_class", "majority-class")):
        baseline = metrics.get("baseline", {}).get(key)
        if baseline:
            typer.echo(f"{label} baseline, test: {line(baseline)}")
    names = ("metrics.json", "last.pt", "best.pt", "curves.png")
    typer.echo(f"wrote {out}/: {', '.join(n for n in names if (out / n).exists())}")


@reports_errors
@data_options
def main(
    model: ModelArg,
    data: DataArg,
    window: WindowSpec,
    store: StoreOpt = DEFAULT_STORE,
    epochs: Annotated[int, typer.Option(help="Passes over the train split.")] = 10,
    max_steps: MaxStepsOpt = None,
    batch_size: Annotated[int, typer.Option(help="Windows per batch.")] = 32,
    lr: Annotated[float, typer.Option(help="Learning rate (AdamW).")] = 1e-3,
    clip: Annotated[float, typer.Option(help="Gradient-norm clipping (0: off).")] = 1.0,
    seed: Annotated[int, typer.Option(help="Initialisation, order and sampling seed.")] = 0,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N.")] = "auto",
    amp: Annotated[bool, typer.Option("--amp", help="Mixed precision on a GPU.")] = False,
    config: ConfigOpt = None,
    namespace: NamespaceOpt = None,
    workers: Annotated[int, typer.Option(help="Loader processes (0: a thread).")] = 0,
    out: OutOpt = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out.")] = False,
    json_out: JsonOpt = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    from tsfs.pipeline.sources import load
    from tsfs.training.loop import TrainingInterrupted, TrainSpec, resolve_device, train
    from tsfs.training.models import family

    fam = family(model)
    settings = family_config(fam.config_type, config or [], model)
    resolve_device(device)
    run_dir = out if out is not None else DEFAULT_RUNS / model
    spec = TrainSpec(
        epochs=epochs,
        max_steps=max_steps,
        batch_size=batch_size,
        lr=lr,
        clip=clip,
        device=device,
        amp=amp,
        seed=seed,
        out=run_dir,
        resume=resume,
        progress=not quiet and not json_out and sys.stderr.isatty(),
        # without a terminal (a log file, CI) a line per epoch shows the run is alive
        log_epochs=not quiet and not json_out and not sys.stderr.isatty(),
        num_workers=workers,
    )
    dataset = load(data, window)
    try:
        result = train(model, dataset, store, spec, settings, features=namespace, images=namespace)
    except TrainingInterrupted as e:
        where = f"; {e.checkpoint} holds it: add --resume to continue" if e.checkpoint else ""
        typer.echo(f"tsfs: interrupted after step {e.step}{where}", err=True)
        raise typer.Exit(interrupt_exit_code(e)) from None
    except KeyboardInterrupt as e:
        # A second Ctrl-C, or one outside a training epoch, stops at once: what is on disk
        # is the last epoch's checkpoint, if one was written.
        if (run_dir / "last.pt").exists():
            note = f"--resume continues from the last checkpoint in {run_dir}"
        else:
            note = f"no checkpoint was written to {run_dir} yet; run the command again"
        typer.echo(f"tsfs: interrupted; {note}", err=True)
        raise typer.Exit(interrupt_exit_code(e)) from None
    if json_out:
        echo_json(result.metrics)
    else:
        _summary(result.metrics, run_dir)
