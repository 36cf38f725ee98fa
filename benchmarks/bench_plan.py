"""Planner accuracy: predicted bytes, files and seconds beside what prep then really does.

Runs `plan` then `prep` on fresh stores for features and images on ETTh1 (T=96 and T=512) and
BasicMotions, and prints prediction, actual and their ratio, plus how long the plan took.

    python benchmarks/bench_plan.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from tsfs.pipeline.prep import plan_features, plan_images, prep_features, prep_images
from tsfs.pipeline.sources import load
from tsfs.specs import FeatureSpec, ImageSpec, WindowSpec
from tsfs.stores.store import Store

ROOT = Path(__file__).resolve().parents[1]
ETTH1 = ROOT / "data" / "ETTh1.csv"
BASIC = ROOT.parent / "shared" / "data" / "BasicMotions_TRAIN.ts"


def _measure(
    label: str, data_path: Path, window: WindowSpec, spec: FeatureSpec | ImageSpec, jobs: int
) -> None:
    data = load(data_path, window)
    tmp = Path(tempfile.mkdtemp(prefix="tsfs-bench-plan-"))
    try:
        t0 = time.perf_counter()
        if isinstance(spec, ImageSpec):
            est = plan_images(data, spec, Store(tmp / "s", missing_ok=True), jobs=jobs)
        else:
            est = plan_features(data, spec, Store(tmp / "s", missing_ok=True), jobs=jobs)
        plan_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        store = Store(tmp / "s", mode="a")
        if isinstance(spec, ImageSpec):
            prep_images(data, spec, store, jobs=jobs, force=True)
        else:
            prep_features(data, spec, store, jobs=jobs, force=True)
        real_s = time.perf_counter() - t1
        info = Store(tmp / "s").info()
        nbytes = info["bytes"] - (tmp / "s" / "zarr.json").stat().st_size
        files = info["files"] - 1
        print(
            f"{label:<34} bytes {est.bytes_on_disk:>12,} / {nbytes:>12,} = "
            f"{est.bytes_on_disk / nbytes:5.3f}   files {est.files:>5} / {files:>5}   "
            f"time {est.seconds:7.2f} / {real_s:7.2f} s = {est.seconds / real_s:5.2f}   "
            f"plan took {plan_s:5.2f} s"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smaller image runs (stride 8)")
    args = ap.parse_args()
    jobs = len(os.sched_getaffinity(0))
    print(f"predicted / actual, --jobs {jobs}")
    img_stride = 8 if args.quick else 1
    cases: list[tuple[str, Path, WindowSpec]] = [
        ("ETTh1 T=96", ETTH1, WindowSpec(seq_len=96)),
        ("ETTh1 T=512", ETTH1, WindowSpec(seq_len=512)),
    ]
    if BASIC.exists():
        cases.append(("BasicMotions", BASIC, WindowSpec(preset="uea")))
    for label, path, window in cases:
        _measure(f"features {label}", path, window, FeatureSpec(), jobs)
    for label, path, window in cases:
        w = replace(window, stride=img_stride) if path == ETTH1 else window
        if path == ETTH1:
            w = replace(w, splits=("val",))  # 2,785 windows x 7 rows: minutes, not hours
        _measure(f"images (mask 224) {label}", path, w, ImageSpec(), jobs)
        _measure(f"images (rgb 224) {label}", path, w, ImageSpec(rgb=True), jobs)


if __name__ == "__main__":
    main()
