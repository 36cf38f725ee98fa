"""Planner accuracy: predicted bytes, files and seconds beside what prep then really does.

For features and images on ETTh1 (T=96 and T=512) and BasicMotions: `tsfs plan` (in process)
then `tsfs prep` as a user runs it (a fresh process; its own `seconds`, which exclude Python's
start-up, the same span the plan predicts), on fresh stores. Prints prediction / actual and
their ratio, and how long the plan took.

    python benchmarks/bench_plan.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tsfs.pipeline.prep import plan_features, plan_images
from tsfs.pipeline.sources import load
from tsfs.specs import FeatureSpec, ImageSpec, WindowSpec
from tsfs.stores.store import Store

ROOT = Path(__file__).resolve().parents[1]
ETTH1 = ROOT / "data" / "ETTh1.csv"
BASIC = ROOT.parent / "shared" / "data" / "BasicMotions_TRAIN.ts"


def _measure(label: str, path: Path, window: WindowSpec, cli: list[str], rgb: bool | None) -> None:
    jobs = len(os.sched_getaffinity(0))
    data = load(path, window)
    tmp = Path(tempfile.mkdtemp(prefix="tsfs-bench-plan-"))
    try:
        t0 = time.perf_counter()
        if rgb is None:
            est = plan_features(data, FeatureSpec(), Store(tmp / "s", missing_ok=True), jobs=jobs)
            kind = "features"
        else:
            spec = ImageSpec(rgb=rgb)
            est = plan_images(data, spec, Store(tmp / "s", missing_ok=True), jobs=jobs)
            kind = "images"
        plan_s = time.perf_counter() - t0
        cmd = [sys.executable, "-m", "tsfs", "prep", kind, str(path), *cli]
        cmd += ["--store", str(tmp / "s"), "--json", "--force", "--jobs", str(jobs)]
        cmd += ["--rgb"] if rgb else []
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        real_s = json.loads(out)["seconds"]
        info = Store(tmp / "s").info()
        nbytes = info["bytes"] - (tmp / "s" / "zarr.json").stat().st_size
        files = info["files"] - 1
        print(
            f"{label:<30} bytes {est.bytes_on_disk:>11,} / {nbytes:>11,} = "
            f"{est.bytes_on_disk / nbytes:5.3f}  files {est.files:>4} / {files:>4}  "
            f"time {est.seconds:6.2f} / {real_s:6.2f} s = {est.seconds / real_s:4.2f}  "
            f"plan {plan_s:4.2f} s"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="images on every 8th window only")
    args = ap.parse_args()
    print(f"predicted / actual, --jobs {len(os.sched_getaffinity(0))}")
    stride = 8 if args.quick else 1
    cases: list[tuple[str, Path, WindowSpec, list[str]]] = [
        ("ETTh1 T=96", ETTH1, WindowSpec(seq_len=96), ["--seq-len", "96"]),
        ("ETTh1 T=512", ETTH1, WindowSpec(seq_len=512), ["--seq-len", "512"]),
    ]
    if BASIC.exists():
        cases.append(("BasicMotions", BASIC, WindowSpec(preset="uea"), ["--preset", "uea"]))
    for label, path, window, cli in cases:
        _measure(f"features {label}", path, window, cli, None)
    for label, path, window, cli in cases:
        if path == ETTH1:  # the validation split: minutes, not hours
            window = WindowSpec(seq_len=window.seq_len, stride=stride, splits=("val",))
            cli = [*cli, "--stride", str(stride), "--splits", "val"]
        for rgb in (False, True):
            name = f"images {'rgb' if rgb else 'mask'} {label}"
            _measure(name, path, window, cli, rgb)


if __name__ == "__main__":
    main()
