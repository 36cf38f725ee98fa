"""Line-plot images: a pyplot figure per image vs tsfs's render pool, same pixels.

Prints images/s for each case (median and range of several runs, the cases taking turns) and its
ratio to the baseline, checks that the pool's masks, coloured, are the baseline's pixels, then
bytes per image for blosc-zstd-compressed chunks of masks and of RGB images.

    python benchmarks/bench_images.py [--length 512] [--rows 2048] [--repeats 5]

The baseline is what TimesCLIP-style pipelines commonly run per image: ``plt.figure``, ``plot``,
``axis("off")``, ``canvas.draw()``, buffer to array, ``plt.close``. Every case is an entry in
``CASES``: a context manager taking the same :class:`Setup` and yielding one timed run; an
end-to-end case that writes into a store adds one entry there.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import matplotlib as mpl

mpl.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import numpy.typing as npt
from numcodecs import Blosc

from tsfs.pipeline.compose import compose, parse_color
from tsfs.pipeline.normalize import revin
from tsfs.pipeline.render import RenderPool, y_limits
from tsfs.specs import ImageSpec

ETTH1 = Path(__file__).resolve().parents[1] / "data" / "ETTh1.csv"
CHUNK = 64  # images per compressed chunk


@dataclass(frozen=True)
class Setup:
    """What every case gets: the spec, the raw rows (R, T) and how many timed runs."""

    spec: ImageSpec
    rows: npt.NDArray[np.float32]
    repeats: int


def load_rows(length: int, count: int) -> npt.NDArray[np.float32]:
    """``count`` ETTh1 rows of ``length`` values: windows spread over the file, all variables."""
    data = np.loadtxt(ETTH1, delimiter=",", skiprows=1, usecols=range(1, 8), dtype=np.float32)
    starts = np.linspace(0, data.shape[0] - length, -(-count // data.shape[1])).astype(int)
    return np.stack([data[s : s + length, v] for s in starts for v in range(data.shape[1])])[:count]


def pyplot_image(row: npt.NDArray[np.float32], spec: ImageSpec) -> npt.NDArray[np.uint8]:
    """The baseline: one fresh pyplot figure for one raw row → (H, W, 3) uint8."""
    z, _, _ = revin(row[None, :])
    bottom, top = y_limits(z, spec)[0]
    fig = plt.figure(figsize=(spec.size / 100, spec.size / 100), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.axis("off")
    ax.plot(z[0], color=spec.color, linewidth=spec.linewidth, antialiased=spec.antialiased)
    ax.set_xlim(0, row.size - 1)
    ax.set_ylim(bottom, top)
    fig.canvas.draw()
    image = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return image


# A case opens whatever it needs (untimed), then yields (images per run, run). Cases take turns,
# run by run, so load from other processes on the machine falls on all of them alike.
Run = tuple[int, Callable[[], object]]
Case = Callable[[Setup], AbstractContextManager[Run]]


@contextmanager
def baseline(setup: Setup) -> Iterator[Run]:
    rows = setup.rows[:150]
    yield len(rows), lambda: [pyplot_image(r, setup.spec) for r in rows]


@contextmanager
def reused_figure(setup: Setup) -> Iterator[Run]:
    """One pyplot figure kept for all images: ``set_ydata``, ``set_ylim``, ``canvas.draw()``."""
    rows = setup.rows[:300]
    spec = setup.spec
    fig = plt.figure(figsize=(spec.size / 100, spec.size / 100), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.axis("off")
    (line,) = ax.plot(rows[0], color=spec.color, linewidth=spec.linewidth)
    ax.set_xlim(0, rows.shape[1] - 1)
    out = np.empty((len(rows), spec.size, spec.size, 3), np.uint8)

    def run() -> None:
        z, _, _ = revin(rows)
        for i, (row, (bottom, top)) in enumerate(zip(z, y_limits(z, spec), strict=True)):
            line.set_ydata(row)
            ax.set_ylim(bottom, top)
            fig.canvas.draw()
            out[i] = np.asarray(fig.canvas.buffer_rgba())[..., :3]

    yield len(rows), run
    plt.close(fig)


def pool_case(jobs: int, *, copy_out: bool) -> Case:
    """A long-lived pool rendering the rows as one batch (start-up not timed)."""

    @contextmanager
    def case(setup: Setup) -> Iterator[Run]:
        rows = setup.rows if jobs > 1 else setup.rows[: len(setup.rows) // 2]
        out = np.empty((len(rows), setup.spec.size, setup.spec.size), np.uint8)
        with RenderPool(setup.spec, rows.shape[1], jobs=jobs) as pool:
            pool.render(rows)  # maps the buffers, warms the workers
            if copy_out:
                yield len(rows), lambda: pool.render(rows, out=out)
            else:
                yield len(rows), lambda: pool.render(rows)

    return case


CASES: dict[str, Case] = {
    "pyplot figure per image (baseline)": baseline,
    "reused pyplot figure, canvas.draw()": reused_figure,
    "RenderPool jobs=1, into array": pool_case(1, copy_out=True),
    "RenderPool jobs=2, into array": pool_case(2, copy_out=True),
    "RenderPool jobs=2, pool buffer": pool_case(2, copy_out=False),
}


def images_per_s(setup: Setup) -> dict[str, list[float]]:
    """Images/s of every run of every case, the cases taking turns run by run."""
    with ExitStack() as stack:
        runs = {name: stack.enter_context(case(setup)) for name, case in CASES.items()}
        rates: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(setup.repeats):
            for name, (count, run) in runs.items():
                start = time.perf_counter()
                run()
                rates[name].append(count / (time.perf_counter() - start))
    return rates


def check_exact(setup: Setup, count: int = 24) -> bool:
    """The pool's masks, coloured, equal the baseline's pixels."""
    rows = setup.rows[:count]
    with RenderPool(setup.spec, rows.shape[1], jobs=2) as pool:
        masks = pool.render(rows)
        composed = compose(masks, parse_color(setup.spec.color))
    return all(np.array_equal(composed[i], pyplot_image(r, setup.spec)) for i, r in enumerate(rows))


def compression(setup: Setup, count: int = 4 * CHUNK) -> list[tuple[str, float, float]]:
    """(codec, bytes per image, encode MB/s) for chunks of CHUNK masks and RGB images."""
    rows = setup.rows[:count]
    with RenderPool(setup.spec, rows.shape[1], jobs=2) as pool:
        masks = pool.render(rows).copy()
    with RenderPool(dataclasses.replace(setup.spec, rgb=True), rows.shape[1], jobs=2) as pool:
        rgb = pool.render(rows).copy()
    results = []
    # Byte shuffle is a no-op on 1-byte items, so only bit shuffle is worth comparing.
    shuffles = {"noshuffle": Blosc.NOSHUFFLE, "bitshuffle": Blosc.BITSHUFFLE}
    for kind, images in (("mask", masks), ("rgb", rgb)):
        chunks = [images[i : i + CHUNK] for i in range(0, len(images), CHUNK)]
        for shuffle_name, shuffle in shuffles.items():
            for level in (1, 3, 5):
                codec = Blosc(cname="zstd", clevel=level, shuffle=shuffle)
                start = time.perf_counter()
                nbytes = sum(len(codec.encode(c)) for c in chunks)
                seconds = time.perf_counter() - start
                name = f"{kind:4s} zstd {shuffle_name:10s} level {level}"
                results.append((name, nbytes / len(images), images.nbytes / seconds / 1e6))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=512, help="T, values per row")
    parser.add_argument("--rows", type=int, default=2048, help="rows per pool run")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per case")
    args = parser.parse_args()
    setup = Setup(ImageSpec(), load_rows(args.length, args.rows), args.repeats)
    print(f"ETTh1 rows, T={args.length}, {setup.spec.size}² px, medians of {args.repeats} runs")
    rates = images_per_s(setup)
    base = statistics.median(next(iter(rates.values())))
    for name, runs in rates.items():
        rate = statistics.median(runs)
        spread = f"({min(runs):.0f}-{max(runs):.0f})"
        print(f"  {name:38s} {rate:6.0f} images/s {spread:12s} {rate / base:5.1f}x")
    print(f"pool masks coloured == pyplot pixels: {check_exact(setup)}")
    print(f"bytes per {setup.spec.size}² image, blosc chunks of {CHUNK} images:")
    for name, per_image, speed in compression(setup):
        print(f"  {name}  {per_image:8.0f} B  {speed:7.0f} MB/s encode")


if __name__ == "__main__":
    main()
