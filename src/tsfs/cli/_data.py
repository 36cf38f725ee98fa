"""The data options every data-taking command shares, and the one function that applies them."""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from tsfs.errors import InputError
from tsfs.specs import SPLITS, WindowSpec

__all__ = [
    "DataArg",
    "FeaturesOpt",
    "FreqOpt",
    "LabelLenOpt",
    "NanOpt",
    "PredLenOpt",
    "PresetOpt",
    "ScaleOpt",
    "SeqLenOpt",
    "SplitsOpt",
    "StrideOpt",
    "TargetOpt",
    "UnequalOpt",
    "data_options",
    "window_spec",
]

# Typer needs Optional[...] spelled out for options whose default is None.
DataArg = Annotated[
    Path,
    typer.Argument(
        help="Data file: TSLib-style CSV (date + variables), UEA .ts, or .npy/.npz (N, T, V).",
        metavar="DATA",
        show_default=False,
    ),
]
PresetOpt = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option(
        help="ett_hour | ett_minute | custom | uea | array (default: inferred from the file name)."
    ),
]
SeqLenOpt = Annotated[int, typer.Option(help="Input window length T.")]
LabelLenOpt = Annotated[int, typer.Option(help="Decoder start tokens taken from the input.")]
PredLenOpt = Annotated[int, typer.Option(help="Forecast horizon.")]
FeaturesOpt = Annotated[str, typer.Option(help="M (all variables), S (target only), MS.")]
TargetOpt = Annotated[str, typer.Option(help="Target column for S / MS.")]
StrideOpt = Annotated[int, typer.Option(help="Step between window starts.")]
SplitsOpt = Annotated[str, typer.Option(help="Comma-separated subset of train,val,test.")]
FreqOpt = Annotated[str, typer.Option(help="Time-feature frequency (TSLib's --freq): h, t, d, …")]
ScaleOpt = Annotated[
    bool, typer.Option("--scale/--no-scale", help="Standardise with train-split statistics.")
]
UnequalOpt = Annotated[
    str, typer.Option(help="Samples of unequal length (UEA): pad (repeat last) | truncate.")
]
NanOpt = Annotated[
    str, typer.Option(help="NaN/inf cells: error (name the position) | interpolate | zero.")
]


def window_spec(
    *,
    preset: str | None,
    seq_len: int,
    label_len: int,
    pred_len: int,
    features: str,
    target: str,
    stride: int,
    splits: str,
    nan: str,
    freq: str = "h",
    scale: bool = True,
    unequal: str = "pad",
) -> WindowSpec:
    """Build the :class:`WindowSpec` the options describe (validation happens there)."""
    split_names = tuple(s.strip() for s in splits.split(",") if s.strip())
    kwargs: dict[str, Any] = {
        "preset": preset,
        "seq_len": seq_len,
        "label_len": label_len,
        "pred_len": pred_len,
        "features": features,
        "target": target,
        "stride": stride,
        "splits": split_names,
        "nan": nan,
        "freq": freq,
        "scale": scale,
        "unequal": unequal,
    }
    if not split_names:
        raise InputError(f"--splits is empty; use a subset of {','.join(SPLITS)}")
    return WindowSpec(**kwargs)


# name → (annotation, default) of the shared data options, in --help order.
_DATA_OPTIONS: dict[str, tuple[Any, Any]] = {
    "preset": (PresetOpt, None),
    "seq_len": (SeqLenOpt, 96),
    "label_len": (LabelLenOpt, 48),
    "pred_len": (PredLenOpt, 96),
    "features": (FeaturesOpt, "M"),
    "target": (TargetOpt, "OT"),
    "stride": (StrideOpt, 1),
    "splits": (SplitsOpt, ",".join(SPLITS)),
    "nan": (NanOpt, "error"),
    "freq": (FreqOpt, "h"),
    "scale": (ScaleOpt, True),
    "unequal": (UnequalOpt, "pad"),
}


_CONTEXT = "_data_options_context"
# Options that shape the windows of one long series (CSV data) and nothing else (--pred-len
# also sets the horizon Time-LLM's prompt names, for any data).
_SERIES_ONLY = ("seq_len", "label_len", "stride", "features", "target", "freq")


def _refuse_what_does_not_apply(ctx: typer.Context, data: Any, preset: str | None) -> None:
    """A series-windowing option given for sample data (UEA ``.ts``, ``.npy``) would be
    ignored without a word: each sample is one window of its own length."""
    from tsfs.errors import DataError
    from tsfs.pipeline.sources import infer_preset

    if data is None:
        return

    def typed(name: str) -> bool:
        source = ctx.get_parameter_source(name)
        return source is not None and source.name == "COMMANDLINE"

    given = [n for n in _SERIES_ONLY if typed(n)]
    if not given:
        return
    try:
        kind = preset or infer_preset(data)
    except DataError:
        return  # loading it says what is wrong with the path
    if kind in ("uea", "array"):
        flags = ", ".join("--" + n.replace("_", "-") for n in given)
        raise InputError(
            f"{flags} shape{'s' if len(given) == 1 else ''} the windows of a series (CSV data); "
            f"{Path(data).name} holds samples ({kind}), each one window of its own length: "
            f"drop {'it' if len(given) == 1 else 'them'}"
        )


def data_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Give a command the shared data options, folded into one ``window: WindowSpec`` argument.

    The decorated function declares ``window: WindowSpec`` (and usually ``data: DataArg``);
    Typer sees ``--preset``, ``--seq-len`` … in its place, declared once here for every command.
    """
    hints = typing.get_type_hints(fn, include_extras=True)
    own = [
        p.replace(annotation=hints[p.name])
        for p in inspect.signature(fn).parameters.values()
        if p.name != "window"
    ]
    shared = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=ann)
        for name, (ann, default) in _DATA_OPTIONS.items()
    ]
    params = [p for p in own if p.default is inspect.Parameter.empty]
    params += shared + [p for p in own if p.default is not inspect.Parameter.empty]
    params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in params]
    # Typer passes the click context to a parameter of this type: which options were typed
    params.append(
        inspect.Parameter(_CONTEXT, inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context)
    )

    @functools.wraps(fn)
    def wrapper(**kwargs: Any) -> Any:
        options = {name: kwargs.pop(name) for name in _DATA_OPTIONS}
        _refuse_what_does_not_apply(kwargs.pop(_CONTEXT), kwargs.get("data"), options["preset"])
        return fn(window=window_spec(**options), **kwargs)

    wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    return wrapper
