"""The allocator setting, in fresh processes (it is process-wide and made once).

The measure is the kernel's own count of minor page faults while a loop allocates, touches and
frees 16 MiB in 1 MiB blocks: with glibc's defaults the freed heap top goes back to the kernel
every round and comes back as fresh pages; kept, the second and later rounds fault nothing.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
    reason="glibc's malloc only",
)

_FAULTS = textwrap.dedent(
    """
    import json, resource, sys
    import numpy as np

    def faults():
        before = None
        for round_ in range(5):
            if round_ == 1:
                before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            blocks = [np.ones(1 << 18, np.float32) for _ in range(16)]  # 16 x 1 MiB, touched
            del blocks
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    default = faults()
    {call}
    print(json.dumps({{"default": default, "kept": kept, "after": faults()}}))
    """
)


def _run(call: str, **env: str) -> dict[str, int]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("MALLOC_") and k not in ("GLIBC_TUNABLES", "LD_PRELOAD")
    }
    done = subprocess.run(
        [sys.executable, "-c", _FAULTS.format(call=call)],
        env=clean | env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    result: dict[str, int] = json.loads(done.stdout)
    return result


def test_freed_memory_is_reused_without_page_faults() -> None:
    got = _run("from tsfs._allocator import keep_freed_memory; kept = keep_freed_memory()")
    assert got["kept"] is True
    # 4 rounds x 16 MiB of 4 KiB pages = 16,384 faults where the heap is trimmed each round
    assert got["default"] > 8_000
    assert got["after"] < 500


def test_a_user_tuned_allocator_is_left_alone() -> None:
    got = _run(
        "from tsfs._allocator import keep_freed_memory; kept = keep_freed_memory()",
        MALLOC_TRIM_THRESHOLD_="131072",
    )
    assert got["kept"] is False
    assert got["after"] > 8_000  # the user's threshold still trims the heap


def test_sampling_keeps_freed_memory() -> None:
    call = textwrap.dedent(
        """
        import torch
        from tsfs.training.models.base import DataInfo
        from tsfs.training.models.diffusion import DiffusionConfig, DiffusionForecaster
        info = DataInfo(task="forecast", seq_len=16, label_len=8, pred_len=8, n_vars=2,
                        n_marks=0, n_classes=0, feature_names={}, image_size=0)
        model = DiffusionForecaster(info, DiffusionConfig(d_model=8, n_heads=1, e_layers=1,
                                    d_ff=8, channels=(4,), sample_steps=2)).eval()
        batch = {"x": torch.randn(1, 16, 2), "y": torch.randn(1, 16, 2),
                 "x_mark": torch.zeros(1, 16, 0), "y_mark": torch.zeros(1, 16, 0)}
        model.sample(batch, n_samples=2)
        kept = None
        """
    )
    got = _run(call)
    assert got["default"] > 8_000
    assert got["after"] < 500
