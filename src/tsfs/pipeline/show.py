"""Looking at what a store holds for one window: prompt text and a contact sheet of images.

Everything here reads stored values; nothing is recomputed (a missing row is an error naming
the prep command that fills it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tsfs.errors import InputError, MissingRowsError, OutputError
from tsfs.pipeline.prep import dataset_blocks
from tsfs.pipeline.windows import Dataset
from tsfs.specs import spec_version
from tsfs.stores.store import Namespace, Store

__all__ = [
    "SHEET_VARIABLES",
    "pick_namespace",
    "pick_split",
    "pick_variables",
    "window_keys",
    "window_prompts",
    "window_rows",
    "write_contact_sheet",
]

Keys = npt.NDArray[np.uint8]


def pick_namespace(
    store: Store,
    kind: str,
    fingerprint: str | None = None,
    *,
    option: str = "--namespace",
    holding: tuple[Dataset, str, int] | None = None,
) -> Namespace:
    """The store's namespace of ``kind``: its only one, the one whose fingerprint starts with
    ``fingerprint`` (given with ``option``, which messages name), or among several the only one
    holding the rows of window ``holding = (dataset, split, window)``."""
    spaces = [ns for ns in store.namespaces(current=True) if ns.kind == kind]
    if fingerprint:
        named = [ns for ns in spaces if ns.fingerprint.startswith(fingerprint)]
        if not named and spaces:
            held = ", ".join(ns.fingerprint for ns in spaces)
            raise InputError(
                f"store {store.url} has no {kind} namespace {fingerprint} ({option}); its "
                f"{kind} namespaces are {held} (`tsfs store info {store.url}` shows their specs)"
            )
        spaces = named
    if len(spaces) > 1 and holding is not None:
        keys = window_keys(*holding, store.key)
        with_rows = [ns for ns in spaces if ns.lookup(keys).found.all()]
        spaces = with_rows or spaces
    if len(spaces) == 1:
        return spaces[0]
    if not spaces:
        fill = f"`tsfs prep {kind} DATA --store {store.url}`"
        old = [
            ns
            for ns in store.namespaces()
            if ns.kind == kind
            and not ns.current
            and (not fingerprint or ns.fingerprint.startswith(fingerprint))
        ]
        if old:
            raise MissingRowsError(
                f"store {store.url} holds {kind} namespace {old[0].fingerprint} of another "
                f"spec version than this tsfs computes (version {spec_version(kind)}), whose "
                f"values it does not read; {fill} computes the current one"
            )
        raise MissingRowsError(
            f"store {store.url} has no {kind}"
            + (f" namespace {fingerprint}" if fingerprint else "")
            + f"; run {fill} first"
        )
    listed = ", ".join(ns.fingerprint for ns in spaces)
    raise InputError(
        f"store {store.url} has several {kind} namespaces ({listed}); pick one with {option}"
    )


def pick_split(dataset: Dataset, split: str | None) -> str:
    """The split ``--split`` names; by default test, or the only split loaded (``--splits val``)."""
    if split is not None:
        return split
    loaded = [b.name for b in dataset_blocks(dataset)]
    if "test" in loaded or len(loaded) != 1:
        return "test"  # window_keys names the loaded ones if test is not among them
    return loaded[0]


def window_keys(dataset: Dataset, split: str, window: int, key_algorithm: str) -> Keys:
    """(V, 16) keys of the rows of one window."""
    blocks = {b.name: b for b in dataset_blocks(dataset)}
    if split not in blocks:
        raise InputError(f"--split {split!r} is not loaded; choose one of {', '.join(blocks)}")
    block = blocks[split]
    if not 0 <= window < block.n_windows:
        raise InputError(
            f"--window {window} is out of range: split {split} has {block.n_windows} windows"
        )
    one = (
        replace(block, samples=block.samples[window : window + 1])
        if block.samples is not None
        else replace(block, starts=np.asarray(block.starts)[window : window + 1])
    )
    keys: Keys = one.keys(key_algorithm)[0]
    return keys


def window_rows(
    dataset: Dataset, namespace: Namespace, split: str, window: int, names: list[str] | None
) -> dict[str, npt.NDArray[Any]]:
    """Stored outputs of the V rows of one window: each (V, ...)."""
    loc = namespace.lookup(window_keys(dataset, split, window, namespace.store.key))
    if not loc.found.all():
        raise MissingRowsError(
            f"window {window} of {split} is not in {namespace.kind}/{namespace.fingerprint}; "
            f"run `tsfs prep {namespace.kind}` on this data with the same options first"
        )
    return namespace.read(loc, names)


def window_prompts(
    dataset: Dataset,
    namespace: Namespace,
    split: str,
    window: int,
    *,
    description: str | None = None,
) -> tuple[list[str], str]:
    """Time-LLM's prompt of each variable of a window, and the window's DWT prompt."""
    from tsfs.pipeline.features import pool_window
    from tsfs.pipeline.prompts import TIMELLM_DESCRIPTION, dwt_prompt, timellm_prompt

    rows = window_rows(dataset, namespace, split, window, None)
    # The rows' own length: UEA samples ignore --seq-len (their length is the file's).
    seq_len = int(dataset.splits[split].x.shape[1])
    pred_len = dataset.spec.pred_len
    desc = TIMELLM_DESCRIPTION if description is None else description
    per_variable = [
        timellm_prompt(
            min=float(rows["min"][v]),
            max=float(rows["max"][v]),
            median=float(rows["median"][v]),
            trend=float(rows["trend"][v]),
            lags=[int(x) for x in rows["lags"][v]],
            seq_len=seq_len,
            pred_len=pred_len,
            description=desc,
        )
        for v in range(len(rows["min"]))
    ]
    pooled = pool_window({k: a[None] for k, a in rows.items()})
    window_text = dwt_prompt(
        min=float(pooled["min"][0]),
        max=float(pooled["max"][0]),
        median=float(pooled["median"][0]),
        lags=[int(x) for x in pooled["lags"][0]],
        entropy=float(pooled["entropy"][0]),
        dominant=int(pooled["dominant"][0]),
        dominant_energy=float(pooled["dominant_energy"][0]),
        trend_sign=[int(x) for x in pooled["trend_sign"][0]],
        consistency=float(pooled["consistency"][0]),
        snr_db=float(pooled["snr_db"][0]),
        difficulty=float(pooled["difficulty"][0]),
        seq_len=seq_len,
        pred_len=pred_len,
        description=desc,
    )
    return per_variable, window_text


#: Panels a contact sheet shows unless told which: a sheet is 2.6 inches tall per variable,
#: so a 1,000-variable data set would make a picture no viewer opens.
SHEET_VARIABLES = 16


def pick_variables(dataset: Dataset, chosen: str | None) -> list[int]:
    """0-based variable indices from ``--variables`` (comma-separated names or indices; a
    name wins over an index that reads the same), or the first :data:`SHEET_VARIABLES`."""
    names = list(dataset.variables)
    if chosen is None:
        return list(range(min(len(names), SHEET_VARIABLES)))
    picked: list[int] = []
    for item in (part.strip() for part in chosen.split(",")):
        if item in names:
            picked.append(names.index(item))
        elif item.isdigit() and int(item) < len(names):
            picked.append(int(item))
        else:
            shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
            raise InputError(
                f"--variables: {item!r} is neither a variable of {dataset.path.name} ({shown}) "
                f"nor an index below {len(names)}"
            )
    if not picked:
        raise InputError("--variables names no variable; give names or indices, e.g. 0,3,OT")
    return list(dict.fromkeys(picked))  # in the order given, each once


def write_contact_sheet(
    dataset: Dataset,
    images: Namespace,
    features: Namespace | None,
    split: str,
    window: int,
    out: Path,
    *,
    variables: Sequence[int] | None = None,
) -> None:
    """An image file of one window's stored images in colour (one panel per variable), with
    its stored statistics beside each when a features namespace is given.

    ``variables``: the 0-based variables to show, in order (default: every one). Colours stay
    each variable's own palette colour, whichever are shown. The format follows ``out``'s
    suffix (``.png``; any other that matplotlib writes, such as ``.svg`` or ``.pdf``, works
    too).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.backend_bases import FigureCanvasBase

    fmt = out.suffix[1:].lower()
    formats = FigureCanvasBase.get_supported_filetypes()
    if out.is_dir() or fmt not in formats:
        what = " is a directory;" if out.is_dir() else ":"
        raise InputError(
            f"--out {out}{what} give a file name ending in .png "
            f"(or another format matplotlib writes: {', '.join(sorted(formats))})"
        )

    from tsfs.pipeline.compose import compose, palette

    name = "rgb" if images.spec.get("rgb") else "mask"
    pix = window_rows(dataset, images, split, window, [name])[name]
    shown = list(range(len(pix))) if variables is None else list(variables)
    rgb = pix if name == "rgb" else compose(pix, palette(len(pix)))
    stats = window_rows(dataset, features, split, window, None) if features else None
    fig, axes = plt.subplots(
        len(shown), 2 if stats else 1, figsize=(8 if stats else 3, 2.6 * len(shown)), squeeze=False
    )
    for row, i in enumerate(shown):
        ax = axes[row, 0]
        ax.imshow(rgb[i])
        ax.set_axis_off()
        # Column names are text, not mathtext: "price $/kWh" must not be parsed as a formula.
        title = dataset.variables[i] if i < len(dataset.variables) else f"var {i}"
        ax.set_title(title, fontsize=9, parse_math=False)
        if stats:
            text = "\n".join(
                [
                    f"min {stats['min'][i]:.3f}  max {stats['max'][i]:.3f}",
                    f"median {stats['median'][i]:.3f}  trend {stats['trend'][i]:+.3f}",
                    f"lags {list(map(int, stats['lags'][i]))}",
                    "energy ratio " + " ".join(f"{r:.2f}" for r in stats["energy_ratio"][i]),
                    f"dominant band {int(stats['dominant'][i])}  SNR {stats['snr_db'][i]:.1f} dB",
                    f"difficulty {stats['difficulty'][i]:.1f}",
                ]
            )
            axes[row, 1].text(0, 0.5, text, va="center", family="monospace", fontsize=8)
            axes[row, 1].set_axis_off()
    heading = fig.suptitle(
        f"{dataset.path.name}\n{split} window {window}", fontsize=10, parse_math=False
    )
    # A long file name must not run off the sheet: widen the figure to the title.
    extent = heading.get_window_extent()
    if extent.width / fig.dpi + 0.2 > fig.get_figwidth():
        fig.set_figwidth(extent.width / fig.dpi + 0.2)
    # The title a tenth of an inch from the top and the panels below it, in inches: by
    # fractions of the height (suptitle's and tight_layout's own), a tall sheet's first
    # panel climbed into the title.
    height = fig.get_figheight()
    heading.set_y(1 - 0.1 / height)
    heading.set_verticalalignment("top")
    fig.tight_layout(rect=(0, 0, 1, 1 - (extent.height / fig.dpi + 0.25) / height))
    try:
        fig.savefig(out, dpi=100, format=fmt)
    except OSError as e:
        # as a training run's outputs: a file that could not be written, not a bad option
        raise OutputError(f"cannot write {out}: {e.strerror}; choose another --out") from e
    finally:
        plt.close(fig)
