"""TimesCLIP line-plot images, pixel for pixel what matplotlib's Agg draws.

Every row becomes one ``size × size`` image: the row's RevIN-normalised values ``z`` drawn as a
line over ``x = 0 … T−1`` on a white canvas with no axes, exactly as

    fig = plt.figure(figsize=(size / 100, size / 100), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1)); ax.axis("off")
    ax.plot(z, color=c, linewidth=spec.linewidth, antialiased=spec.antialiased)
    ax.set_xlim(0, T - 1); ax.set_ylim(*limits)
    fig.canvas.draw()

would, with matplotlib's default rcParams (a user's style or matplotlibrc never changes the stored
pixels). Instead of drawing a figure per image, a :class:`Renderer` keeps one Agg canvas per
process and replays only what ``Line2D.draw`` hands to Agg: one ``draw_path`` call with the same
graphics context, the same path (vertices in data space) and the same data-to-pixel affine, built
from the same matplotlib transform classes (``transLimits + transAxes``). Everything else a figure
draws is opaque white, so resetting the buffer to white stands in for it. Agg's stroker is then
the whole cost (~0.7 ms at T=512, 224²); many lines per canvas would not be faster and would not
be exact (Agg's joins depend on absolute pixel positions).

Mask mode draws in black and keeps ``255 − gray`` as Agg's coverage; :mod:`tsfs.pipeline.compose`
turns it back into matplotlib's pixels in any colour. RGB mode keeps what Agg drew in the spec's
colour.

:class:`RenderPool` spreads batches over long-lived worker processes, one renderer each, pinned to
one thread, reading rows from and writing images into file-backed shared memory, so no image is
ever pickled. Only the training side's :mod:`~tsfs.pipeline.compose` is needed to read images:
this module is the only one that imports matplotlib.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import multiprocessing.context
import os
import tempfile
import traceback
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from multiprocessing.connection import Connection, Pipe, wait
from types import TracebackType
from typing import Final, Literal, NoReturn

import matplotlib as mpl
import numpy as np
import numpy.typing as npt
from matplotlib.backends.backend_agg import RendererAgg
from matplotlib.figure import Figure
from matplotlib.path import Path
from matplotlib.transforms import Bbox, BboxTransformFrom

from tsfs import errors
from tsfs.errors import DataError, InputError
from tsfs.pipeline.compose import parse_color
from tsfs.pipeline.normalize import revin
from tsfs.specs import ImageSpec

__all__ = ["DPI", "RenderPool", "Renderer", "image_shape", "render_rows", "y_limits"]

#: Dots per inch of the canvas: the figure is ``size / DPI`` inches square, so it is exactly
#: ``size`` pixels, and a line width of ``w`` points is ``w · DPI / 72`` pixels.
DPI: Final = 100

# The rcParams that reach Agg when a Line2D is drawn, pinned to matplotlib's defaults.
_RC_KEYS: Final = (
    "agg.path.chunksize",
    "lines.solid_capstyle",
    "lines.solid_joinstyle",
    "path.simplify",
    "path.simplify_threshold",
)
_WHITE: Final = np.uint32(0xFFFFFFFF)  # one opaque white RGBA pixel
_BLACK: Final = (0.0, 0.0, 0.0, 1.0)
_SHM_DIR: Final = "/dev/shm"
_PROCESS: Final = {
    "fork": mp.context.ForkProcess,
    "forkserver": mp.context.ForkServerProcess,
    "spawn": mp.context.SpawnProcess,
}


@contextmanager
def _default_rc() -> Iterator[None]:
    with mpl.rc_context({key: mpl.rcParamsDefault[key] for key in _RC_KEYS}):
        yield


def image_shape(spec: ImageSpec) -> tuple[int, ...]:
    """Shape of one stored image: (H, W) coverage, or (H, W, 3) in RGB mode."""
    return (spec.size, spec.size, 3) if spec.rgb else (spec.size, spec.size)


def y_limits(z: npt.NDArray[np.float32], spec: ImageSpec) -> npt.NDArray[np.float64]:
    """The y-axis limits of each row's plot.

    ``spec.ylim == "row"``: ``[min − m·rng, max + m·rng]`` with ``rng = max − min`` and
    ``m = spec.margin``, or ``min ± 0.5`` for a constant row; ``"sigma"``: ``±spec.sigma``.

    Args:
        z: (R, T) normalised rows.

    Returns:
        (R, 2) float64 ``(bottom, top)``.
    """
    if spec.ylim == "sigma":
        return np.tile(np.array([-spec.sigma, spec.sigma]), (z.shape[0], 1))
    lo = z.min(axis=1).astype(np.float64)
    hi = z.max(axis=1).astype(np.float64)
    rng = hi - lo
    pad = np.where(rng > 0, spec.margin * rng, 0.5)
    return np.stack([lo - pad, hi + pad], axis=1)


def _check_finite(z: npt.NDArray[np.float32], first_row: int = 0) -> None:
    """Refuse rows that RevIN could not normalise (inputs beyond float32 range, NaN, inf)."""
    bad = np.flatnonzero(~np.isfinite(z).all(axis=1))
    if bad.size:
        raise DataError(
            f"{bad.size} row(s) are not finite after normalisation (first: row "
            f"{first_row + bad[0]}); values must be finite and well inside the float32 range"
        )


class Renderer:
    """One reusable Agg canvas that draws rows as matplotlib would; one per process (not
    thread-safe).

    Args:
        spec: the images to draw.
        length: T, the number of values per row (at least 2).
    """

    def __init__(self, spec: ImageSpec, length: int) -> None:
        if length < 2:
            raise InputError(f"a line plot needs at least 2 values per row, got T={length}")
        self.spec = spec
        self.length = length
        self.image_shape = image_shape(spec)
        fig = Figure(figsize=(spec.size / DPI, spec.size / DPI), dpi=DPI)
        axes = fig.add_axes((0.0, 0.0, 1.0, 1.0))
        # backend_agg is unannotated, hence the ignores on its calls.
        self._agg = RendererAgg(spec.size, spec.size, DPI)  # type: ignore[no-untyped-call]
        # (H, W, 4) view of Agg's own buffer.
        self._pixels = np.asarray(self._agg.buffer_rgba())  # type: ignore[no-untyped-call]
        self._words = self._pixels.view(np.uint32)
        # The red byte of each pixel, read as one contiguous little-endian word per pixel (a
        # strided byte view copies ~5x slower).
        self._red_words = self._pixels.view("<u4")[:, :, 0]
        # Data → pixels as Line2D's transData (transScale is the identity on linear axes).
        self._view = Bbox([[0.0, -1.0], [length - 1.0, 1.0]])
        self._transform = BboxTransformFrom(self._view) + axes.transAxes
        # The path's vertices are updated in place; Path keeps the array it was given.
        self._xy = np.zeros((length, 2))
        self._xy[:, 0] = np.arange(length)
        with _default_rc():
            self._path = Path(self._xy)
        gc = self._agg.new_gc()
        gc.set_clip_rectangle(axes.bbox)
        gc.set_antialiased(spec.antialiased)
        gc.set_linewidth(spec.linewidth)
        gc.set_joinstyle(mpl.rcParamsDefault["lines.solid_joinstyle"])
        gc.set_capstyle(mpl.rcParamsDefault["lines.solid_capstyle"])
        gc.set_snap(None)  # as Line2D: Agg snaps a path to pixel centres only if rectilinear
        gc.set_dashes(0, None)
        self._gc = gc

    def render(self, z: npt.NDArray[np.float32], out: npt.NDArray[np.uint8]) -> None:
        """Draw rows as the spec says: masks, or RGB in ``spec.color``.

        Args:
            z: (R, T) normalised rows.
            out: (R, H, W) uint8, or (R, H, W, 3) in RGB mode.
        """
        if self.spec.rgb:
            self.render_rgb(z, out)
        else:
            self.render_masks(z, out)

    def render_masks(self, z: npt.NDArray[np.float32], out: npt.NDArray[np.uint8]) -> None:
        """Draw rows as Agg coverage masks (0 = background, 255 = fully covered).

        Args:
            z: (R, T) normalised rows.
            out: (R, H, W) uint8, written in place.
        """
        limits = self._check(z, out, (self.spec.size, self.spec.size))
        self._gc.set_foreground(_BLACK, isRGBA=True)
        with _default_rc():
            for i in range(z.shape[0]):
                self._draw(z[i], limits[i])
                # Black over white leaves gray = 255 − coverage in every channel, and 255 − g
                # is ~g in uint8. The cast keeps each word's low byte: red.
                np.copyto(out[i], self._red_words, casting="unsafe")
                np.invert(out[i], out=out[i])

    def render_rgb(
        self,
        z: npt.NDArray[np.float32],
        out: npt.NDArray[np.uint8],
        colors: npt.ArrayLike | None = None,
    ) -> None:
        """Draw rows in colour, keeping exactly the RGB that Agg drew.

        Args:
            z: (R, T) normalised rows.
            out: (R, H, W, 3) uint8, written in place.
            colors: (R, 3) or (3,) 8-bit RGB; default ``spec.color`` for every row.
        """
        limits = self._check(z, out, (self.spec.size, self.spec.size, 3))
        rgb = np.asarray(parse_color(self.spec.color) if colors is None else colors)
        if (
            rgb.shape not in ((3,), (z.shape[0], 3))
            or not np.issubdtype(rgb.dtype, np.integer)
            or rgb.min(initial=0) < 0
            or rgb.max(initial=0) > 255
        ):
            raise InputError(f"colours must be 8-bit RGB of shape (3,) or (R, 3), got {rgb.shape}")
        per_row = np.broadcast_to(rgb, (z.shape[0], 3)).tolist()
        current = None
        with _default_rc():
            for i in range(z.shape[0]):
                if per_row[i] != current:
                    current = per_row[i]
                    # Agg rounds these floats back to exactly the same bytes.
                    self._gc.set_foreground((*(v / 255 for v in current), 1.0), isRGBA=True)
                self._draw(z[i], limits[i])
                for channel in range(3):  # one plane at a time copies ~5x faster than RGB at once
                    np.copyto(out[i, :, :, channel], self._pixels[:, :, channel])

    def _check(
        self,
        z: npt.NDArray[np.float32],
        out: npt.NDArray[np.uint8],
        image: tuple[int, ...],
    ) -> npt.NDArray[np.float64]:
        """Validate a batch; return its y-limits (R, 2)."""
        if z.ndim != 2 or z.shape[1] != self.length:
            raise InputError(f"rows must have shape (R, {self.length}), got {z.shape}")
        if out.dtype != np.uint8 or out.shape != (z.shape[0], *image):
            raise InputError(
                f"out must be uint8 of shape {(z.shape[0], *image)}, got {out.dtype} {out.shape}"
            )
        _check_finite(z)
        return y_limits(z, self.spec)

    def _draw(self, row: npt.NDArray[np.float32], limits: npt.NDArray[np.float64]) -> None:
        """Draw one row over a white canvas (what every figure artist but the line amounts to)."""
        self._words.fill(_WHITE)
        self._xy[:, 1] = row
        self._view.intervaly = limits
        self._agg.draw_path(self._gc, self._path, self._transform)  # type: ignore[no-untyped-call]


def _worker(conn: Connection, spec: ImageSpec, length: int) -> None:
    """A pool worker: one renderer on one thread; rows in and images out through shared files.

    Replies are ``("ok",)`` or a failure: ``("tsfs", error class name, message)`` for a
    deliberate tsfs error, ``("bug", traceback)`` for anything else. Messages: the start-up
    reply comes unasked; ``("map", rows_path, rows_shape, images_path, images_shape)`` maps new
    buffers; ``("run", start, stop)`` renders those rows; ``None`` ends the worker.
    """
    from threadpoolctl import threadpool_limits

    # The cores belong to the processes: library threads on top would only oversubscribe them.
    threadpool_limits(1)
    try:
        renderer = Renderer(spec, length)
    except Exception as e:
        conn.send(_failure(e))
        return
    conn.send(("ok",))
    rows: npt.NDArray[np.float32] = np.empty((0, length), np.float32)
    images: npt.NDArray[np.uint8] = np.empty((0, *renderer.image_shape), np.uint8)
    while (message := conn.recv()) is not None:
        if message[0] == "map":
            _, rows_path, rows_shape, images_path, images_shape = message
            rows = np.memmap(rows_path, np.float32, "r", shape=rows_shape)
            images = np.memmap(images_path, np.uint8, "r+", shape=images_shape)
            conn.send(("ok",))
            continue
        _, start, stop = message
        try:
            z, _, _ = revin(rows[start:stop])
            _check_finite(z, first_row=start)
            renderer.render(z, images[start:stop])
        except Exception as e:
            conn.send(_failure(e))
        else:
            conn.send(("ok",))


def _failure(e: Exception) -> tuple[str, ...]:
    if isinstance(e, errors.TsfsError):
        return ("tsfs", type(e).__name__, str(e))
    return ("bug", traceback.format_exc())


def _shared_file(shape: tuple[int, ...], dtype: type[np.generic]) -> tuple[str, np.memmap]:
    """A new file-backed array that other processes can map by path.

    Prefers tmpfs (``/dev/shm``); space is reserved up front, so a full tmpfs falls back to the
    temporary directory instead of killing a writer with SIGBUS later.
    """
    nbytes = math.prod(shape) * np.dtype(dtype).itemsize
    for directory in (_SHM_DIR, tempfile.gettempdir()):
        if not os.path.isdir(directory):
            continue
        fd, path = tempfile.mkstemp(prefix="tsfs-render-", dir=directory)
        try:
            if hasattr(os, "posix_fallocate"):
                os.posix_fallocate(fd, 0, nbytes)
            else:  # no way to reserve tmpfs pages here (macOS): size the file only
                os.ftruncate(fd, nbytes)
        except OSError:
            os.unlink(path)
            continue
        finally:
            os.close(fd)
        return path, np.memmap(path, dtype, "r+", shape=shape)
    raise OSError(f"no room for a {nbytes}-byte render buffer in {_SHM_DIR} or the temp directory")


class RenderPool:
    """Renders batches of raw rows (RevIN, then draw) on ``jobs`` long-lived processes.

    Reuse one pool for a whole run: workers start once (about a second), then each
    :meth:`render` only hands out row ranges. Rows and images travel through file-backed shared
    memory that the pool owns, never through pickles. ``jobs=1`` renders in this process.

    Args:
        spec: the images to draw.
        length: T, the number of values per row.
        jobs: worker processes; ``-1`` for one per usable core.
        chunk_rows: most rows handed to a worker at a time (small enough to balance the load,
            large enough that messages cost nothing).
        start_method: multiprocessing start method; default ``forkserver`` where available,
            else ``spawn`` (``fork`` is unsafe once torch or other threads run in the parent).

    Use as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        spec: ImageSpec,
        length: int,
        jobs: int = 1,
        *,
        chunk_rows: int = 64,
        start_method: Literal["forkserver", "spawn", "fork"] | None = None,
    ) -> None:
        if jobs == -1:
            jobs = len(os.sched_getaffinity(0))
        if jobs < 1:
            raise InputError(f"--jobs must be at least 1 (or -1 for every core), got {jobs}")
        if chunk_rows < 1:
            raise InputError(f"chunk_rows must be at least 1, got {chunk_rows}")
        self.spec = spec
        self.length = length
        self.jobs = jobs
        self.chunk_rows = chunk_rows
        self.image_shape = image_shape(spec)
        self._closed = False
        self._conns: list[Connection] = []
        self._procs: list[mp.process.BaseProcess] = []
        self._rows: npt.NDArray[np.float32] = np.empty((0, length), np.float32)
        self._images: npt.NDArray[np.uint8] = np.empty((0, *self.image_shape), np.uint8)
        if jobs == 1:
            self._renderer: Renderer | None = Renderer(spec, length)
            return
        self._renderer = None
        if start_method is None:
            start_method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
        process = _PROCESS[start_method]
        try:
            for _ in range(jobs):
                ours, theirs = Pipe()
                proc = process(target=_worker, args=(theirs, spec, length), daemon=True)
                proc.start()
                theirs.close()  # so that a dead worker reads as end-of-file here
                self._conns.append(ours)
                self._procs.append(proc)
            self._collect(self._conns)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> RenderPool:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def render(
        self, rows: npt.ArrayLike, out: npt.NDArray[np.uint8] | None = None
    ) -> npt.NDArray[np.uint8]:
        """RevIN-normalise and draw a batch of rows.

        Args:
            rows: (R, T) raw values (converted to float32, as stored).
            out: (R, H, W) uint8, or (R, H, W, 3) in RGB mode, to write into.

        Returns:
            ``out``; or, without it, a view of the pool's own buffer, valid until the next
            :meth:`render` (copy it to keep it; it stays readable after :meth:`close`).
        """
        x = np.asarray(rows)
        if x.ndim != 2 or x.shape[1] != self.length:
            raise InputError(f"rows must have shape (R, {self.length}), got {x.shape}")
        n = x.shape[0]
        shape = (n, *self.image_shape)
        if out is not None and (out.dtype != np.uint8 or out.shape != shape):
            raise InputError(f"out must be uint8 of shape {shape}, got {out.dtype} {out.shape}")
        if self._closed:
            raise InputError("this RenderPool is closed")
        if self._renderer is not None:
            if out is None:
                out = self._reserve(n)
            z, _, _ = revin(x)
            self._renderer.render(z, out)
            return out
        self._reserve(n)
        self._rows[:n] = x
        self._run(n)
        if out is None:
            return np.asarray(self._images[:n])
        out[...] = self._images[:n]
        return out

    def close(self) -> None:
        """Stop the workers (idempotent). Buffers handed out stay readable."""
        for conn in self._conns:
            with suppress(OSError):  # a worker that is already gone
                conn.send(None)
        for proc in self._procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
                proc.join()
        for conn in self._conns:
            conn.close()
        self._conns, self._procs = [], []
        self._renderer = None
        self._closed = True

    def _reserve(self, n: int) -> npt.NDArray[np.uint8]:
        """Room for ``n`` rows in the buffers; returns the image buffer's first ``n``."""
        if n > self._images.shape[0]:
            if self._renderer is not None:
                self._images = np.empty((n, *self.image_shape), np.uint8)
            else:
                self._map_shared(n)
        return self._images[:n]

    def _map_shared(self, n: int) -> None:
        paths: list[str] = []
        try:
            rows_path, rows = _shared_file((n, self.length), np.float32)
            paths.append(rows_path)
            images_path, images = _shared_file((n, *self.image_shape), np.uint8)
            paths.append(images_path)
            for conn in self._conns:
                self._send(conn, ("map", rows_path, rows.shape, images_path, images.shape))
            self._collect(self._conns)
        finally:
            # Every process has its mapping now; the memory lives until the last one is gone.
            for path in paths:
                os.unlink(path)
        self._rows, self._images = rows, images

    def _run(self, n: int) -> None:
        """Render rows ``[0, n)`` of the shared buffers, handing chunks to idle workers."""
        chunk = max(1, min(self.chunk_rows, -(-n // (4 * len(self._conns)))))
        starts = iter(range(0, n, chunk))
        busy: list[Connection] = []
        failure: tuple[str, ...] | None = None

        def feed(conn: Connection) -> None:
            start = next(starts, None) if failure is None else None
            if start is not None:
                self._send(conn, ("run", start, min(start + chunk, n)))
                busy.append(conn)

        for conn in self._conns:
            feed(conn)
        while busy:
            ready = wait(busy)
            for conn in [c for c in busy if c in ready]:
                busy.remove(conn)
                reply = self._receive(conn)
                if reply[0] != "ok" and failure is None:
                    failure = reply
                feed(conn)
        if failure is not None:
            self._raise(failure)

    def _collect(self, conns: list[Connection]) -> None:
        """Wait for ``("ok",)`` from each worker; raise the first failure."""
        replies = [self._receive(conn) for conn in conns]
        for reply in replies:
            if reply[0] != "ok":
                self._raise(reply)

    def _send(self, conn: Connection, message: tuple[object, ...]) -> None:
        try:
            conn.send(message)
        except OSError:
            self._worker_lost()

    def _receive(self, conn: Connection) -> tuple[str, ...]:
        try:
            reply: tuple[str, ...] = conn.recv()
        except (EOFError, OSError):
            self._worker_lost()
        return reply

    def _worker_lost(self) -> NoReturn:
        self.close()
        raise RuntimeError(
            "a render worker exited unexpectedly (killed, or out of memory?); pool closed"
        ) from None

    @staticmethod
    def _raise(reply: tuple[str, ...]) -> None:
        if reply[0] == "tsfs":
            error = getattr(errors, reply[1], errors.TsfsError)
            raise error(reply[2])
        raise RuntimeError(f"a render worker failed:\n{reply[1]}")


def render_rows(
    rows: npt.ArrayLike,
    spec: ImageSpec,
    *,
    jobs: int = 1,
    out: npt.NDArray[np.uint8] | None = None,
) -> npt.NDArray[np.uint8]:
    """RevIN-normalise and draw rows, once (a :class:`RenderPool` for many batches).

    Args:
        rows: (R, T) raw values.
        spec: the images to draw.
        jobs: worker processes (``-1``: one per core).
        out: (R, H, W) uint8, or (R, H, W, 3) in RGB mode; allocated if not given.

    Returns:
        (R, H, W) coverage masks, or (R, H, W, 3) RGB in RGB mode.
    """
    x = np.asarray(rows)
    if x.ndim != 2:
        raise InputError(f"rows must have shape (R, T), got {x.shape}")
    with RenderPool(spec, x.shape[1], jobs) as pool:
        return pool.render(x, out)
