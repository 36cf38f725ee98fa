"""Side by side: the per-window DWT prompt baseline and tsfs's feature computation.

ETTh1, T=512, 7 variables, db4 level 3: ours on all windows of all splits (13,603 distinct
starts), the baseline on ~300 windows spread over them; medians of several runs, one process,
torch and BLAS pinned to one thread (DESIGN §7). Prints windows/s of both, the ratio, the time
of each part of ours and the peak resident memory.

Each measured path is a function ``(series, starts) -> windows/s`` (see ``PATHS``), so an
end-to-end path that also hashes and writes a store can be added beside the math.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))

from baseline_dwt_prompt import baseline_windows_per_second, ett_windows

from tsfs.pipeline.dwt import window_plan
from tsfs.pipeline.features import _EXPLICIT_BLOCK, _explicit, compute_windows
from tsfs.pipeline.stats import sliding_extrema, sliding_order_statistic, sliding_top_lags
from tsfs.specs import FeatureSpec

Series = npt.NDArray[np.float32]
Starts = npt.NDArray[np.int64]
SEQ_LEN = 512


def features_windows_per_second(series: Series, starts: Starts) -> float:
    """Our per-row features of every window (no hashing, no store)."""
    t0 = time.perf_counter()
    compute_windows(series, seq_len=SEQ_LEN, starts=starts, spec=FeatureSpec())
    return starts.size / (time.perf_counter() - t0)


def _pin() -> None:
    torch.set_num_threads(1)
    threadpool_limits(limits=1)


def _features(series: Series, starts: Starts) -> int:
    compute_windows(series, seq_len=SEQ_LEN, starts=starts, spec=FeatureSpec())
    return starts.size


_POOL: ProcessPoolExecutor | None = None


def features_two_processes(series: Series, starts: Starts) -> float:
    """The same math split over two one-thread worker processes (math only: the features stay
    in the workers, as prep's workers write their own segments)."""
    assert _POOL is not None
    t0 = time.perf_counter()
    done = sum(_POOL.map(_features, [series, series], np.array_split(starts, 2)))
    return done / (time.perf_counter() - t0)


PATHS: dict[str, Callable[[Series, Starts], float]] = {
    "features (math only)": features_windows_per_second,
    "features, 2 processes (math only)": features_two_processes,
}


def parts_ms(series: Series, starts: Starts) -> dict[str, float]:
    """Milliseconds of the separable parts of ``compute_windows`` on the same windows."""
    xt = np.ascontiguousarray(series.T)
    spec = FeatureSpec()
    plan = window_plan(spec.wavelet, spec.mode, SEQ_LEN, 3)

    def lags() -> None:
        sliding_top_lags(xt, SEQ_LEN, starts, spec.top_k)

    def order() -> None:
        sliding_extrema(xt, SEQ_LEN, starts)
        sliding_order_statistic(xt, SEQ_LEN, starts, (SEQ_LEN - 1) // 2)

    def explicit() -> None:
        _explicit(series, starts, plan, _EXPLICIT_BLOCK)

    def total() -> None:
        compute_windows(series, seq_len=SEQ_LEN, starts=starts, spec=spec)

    parts = {
        "lags (sliding autocorrelation + top-k)": lags,
        "min/max/median": order,
        "DWT boundary products": explicit,
        "total": total,
    }
    out = {}
    for name, fn in parts.items():
        runs = []
        for _ in range(5):
            t0 = time.perf_counter()
            fn()
            runs.append(time.perf_counter() - t0)
        out[name] = 1e3 * statistics.median(runs)
    out["DWT sums, RevIN moments, assembly (rest)"] = out["total"] - sum(
        ms for name, ms in out.items() if name != "total"
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per path (median reported)")
    parser.add_argument("--baseline-windows", type=int, default=300)
    args = parser.parse_args()

    global _POOL
    torch.set_num_threads(1)
    series, starts = ett_windows(seq_len=SEQ_LEN)
    _POOL = ProcessPoolExecutor(2, initializer=_pin)
    list(_POOL.map(_features, [series] * 2, [starts[:16]] * 2))  # start and warm the workers
    sample = starts[np.linspace(0, starts.size - 1, args.baseline_windows).astype(np.int64)]
    with threadpool_limits(limits=1):
        base = statistics.median(
            baseline_windows_per_second(series, sample, seq_len=SEQ_LEN) for _ in range(args.runs)
        )
        print(f"baseline (per-window generator): {base:>10,.0f} windows/s")
        for name, path in PATHS.items():
            ours = statistics.median(path(series, starts) for _ in range(args.runs))
            print(f"{name:32s} {ours:>10,.0f} windows/s  {ours / base:6.1f}x baseline")
        for name, ms in parts_ms(series, starts).items():
            print(f"  {name:42s} {ms:8.1f} ms")
    _POOL.shutdown()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(
        f"peak resident memory: {peak:,.0f} MiB, workers {workers:,.0f} MiB "
        f"({starts.size:,} windows, T={SEQ_LEN})"
    )


if __name__ == "__main__":
    main()
