"""Baseline: per-window DWT prompt features and Time-LLM statistics, as commonly written.

A re-creation (our own code, restating the logic) of the public SWT-Time
``layers/DWTPromptGenerator.py`` wired into Time-LLM's ``forecast()`` (domain-specs §1, §6):
one call per window, RevIN in torch, Time-LLM's statistics on the (V, T, 1) rows,
``ptwt.wavedec`` on (V, 1, T), every feature read back with ``.item()`` and Python loops, and
the text built for the window. This is the work our offline pipeline replaces.

Run ``python benchmarks/baseline_dwt_prompt.py`` for its windows/s on ETTh1 (T=512, db4 L3).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt
import ptwt
import torch

__all__ = ["baseline_window", "baseline_windows_per_second", "ett_windows"]

ROOT = Path(__file__).resolve().parents[1]
_DESCRIPTION = (
    "The Electricity Transformer Temperature (ETT) is a crucial indicator in the electric "
    "power long-term deployment."
)


def ett_windows(
    csv: Path = ROOT / "data" / "ETTh1.csv", *, seq_len: int = 512, pred_len: int = 96
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """ETTh1 scaled as Time-Series-Library does, and the distinct window starts of all splits.

    Returns:
        ``(series, starts)``: series (14400, 7) float32 (train-fitted StandardScaler);
        starts (N,) int64 absolute starts of the train/val/test windows (domain-specs §2).
    """
    data = np.genfromtxt(csv, delimiter=",", skip_header=1, usecols=range(1, 8))[:14400]
    train = data[:8640]
    series = ((data - train.mean(axis=0)) / train.std(axis=0)).astype(np.float32)
    b1 = [0, 8640 - seq_len, 11520 - seq_len]
    b2 = [8640, 11520, 14400]
    starts = [np.arange(a, b - seq_len - pred_len + 1) for a, b in zip(b1, b2, strict=True)]
    return series, np.unique(np.concatenate(starts)).astype(np.int64)


def _label(value: float, cuts: tuple[float, float], names: tuple[str, str, str]) -> str:
    return names[0] if value < cuts[0] else names[1] if value < cuts[1] else names[2]


def baseline_window(
    window: torch.Tensor, *, level: int = 3, pred_len: int = 96
) -> tuple[str, list[str]]:
    """The DWT prompt and the V Time-LLM prompts of one (T, V) window, computed the way the
    per-window generator and Time-LLM's prompt loop do."""
    T, V = window.shape
    x = window.unsqueeze(0)
    mean = x.mean(1, keepdim=True)
    std = torch.sqrt(torch.var(x - mean, dim=1, keepdim=True, unbiased=False) + 1e-5)
    x = (x - mean) / std
    rows = x.permute(0, 2, 1).reshape(V, T, 1)
    mins, maxs = torch.min(rows, dim=1)[0], torch.max(rows, dim=1)[0]
    medians = torch.median(rows, dim=1).values
    spec = torch.fft.rfft(rows.permute(0, 2, 1), dim=-1)
    corr = torch.fft.irfft(spec * torch.conj(spec), dim=-1)
    lags = torch.topk(torch.mean(corr, dim=1), 5, dim=-1)[1]
    trends_t = rows.diff(dim=1).sum(dim=1)
    timellm = [
        f"<|start_prompt|>Dataset description: {_DESCRIPTION}"
        f"Task description: forecast the next {pred_len} steps given the previous {T} steps "
        "information; Input statistics: "
        f"min value {mins[b].tolist()[0]}, max value {maxs[b].tolist()[0]}, "
        f"median value {medians[b].tolist()[0]}, "
        f"the trend of input is {'upward' if trends_t[b] > 0 else 'downward'}, "
        f"top 5 lags are : {lags[b].tolist()}<|<end_prompt>|>"
        for b in range(V)
    ]

    coeffs = ptwt.wavedec(rows.reshape(V, 1, T), "db4", level=level, mode="reflect")
    energies = [torch.sum(c**2, dim=-1) for c in coeffs]
    total = sum(energies)
    assert isinstance(total, torch.Tensor)
    if (total == 0).any():
        ratio = torch.ones(len(coeffs), V, 1) / len(coeffs)
    else:
        ratio = torch.stack([e / torch.clamp(total, min=1e-10) for e in energies], dim=0)
    safe = torch.clamp(ratio, min=1e-10)
    entropy = torch.clamp(-torch.sum(safe * torch.log(safe), dim=0), min=0).mean().item()
    counts = torch.bincount(torch.argmax(ratio, dim=0).flatten(), minlength=len(coeffs))
    dominant = int(torch.argmax(counts).item())
    dominant_energy = ratio[dominant].mean().item()

    trends = [(c[..., 1:] - c[..., :-1]).mean().item() for c in coeffs]
    signs = [1 if t > 0 else (-1 if t < 0 else 0) for t in trends]
    consistency = sum(1 for s in signs if s == signs[0]) / len(signs) if signs[0] != 0 else 0.5
    stds = [max(0.0, torch.std(c).item()) for c in coeffs]
    if stds[0] == 0 and stds[-1] == 0:
        snr = 0.0
    elif stds[-1] == 0:
        snr = 60.0
    else:
        ratio_sn = max(stds[0] ** 2 / max(stds[-1], 1e-10) ** 2, 1e-10)
        snr = float(np.clip(10 * np.log10(ratio_sn), -60, 60))
    score = (
        float(np.clip((1 - consistency) * 40, 0, 40))
        + float(np.clip(entropy / math.log(level + 1), 0, 1)) * 35
        + 25 / (1 + math.exp((snr - 10) / 5))
    )

    bands = ["trend", "seasonal", "fluctuation", "noise"] + [f"band{i}" for i in range(4, 16)]
    freq = _label(
        entropy, (0.5, 1.0), ("single-scale dominant", "dual-scale pattern", "multi-scale complex")
    )
    if dominant_energy > 0.7:
        freq += f" ({bands[dominant]})"
    up = "upward" if signs[0] > 0 else "downward"
    if consistency == 1.0:
        trend = f"consistent {up}"
    elif consistency >= 0.75:
        names = ["long-term", "seasonal", "medium-term", "short-term"]
        odd = next(i for i, s in enumerate(signs) if s != signs[0])
        trend = f"mostly {up}, except {names[odd] if odd < 4 else f'scale{odd}'}"
    else:
        trend = f"mixed ({sum(1 for s in signs if s > 0)}/{len(signs)} scales upward)"
    quality = "high SNR (clean)" if snr > 20 else "moderate SNR" if snr > 10 else "low SNR (noisy)"
    difficulty = _label(score, (15, 30), ("low", "moderate", "high"))
    text = (
        f"<|start_prompt|>Dataset description: {_DESCRIPTION}\n"
        f"Task description: forecast the next {pred_len} steps given the previous {T} steps "
        f"information; \nInput statistics: range [{mins.mean().item():.2f}, "
        f"{maxs.mean().item():.2f}], median {medians.mean().item():.2f}\n"
        f"Pattern analysis: {freq}, trend is {trend}, signal quality is {quality}"
    )
    if difficulty != "moderate":
        text += f", forecast difficulty: {difficulty}"
    text += f"\nDominant periodicities: {[int(v) for v in lags[0].tolist()[:3]]}<|<end_prompt>|>"
    return text, timellm


def baseline_windows_per_second(
    series: npt.NDArray[np.float32], starts: npt.NDArray[np.int64], *, seq_len: int = 512
) -> float:
    """Windows per second of the per-window baseline over ``series[s : s + seq_len]``.

    Pins torch to one thread, as every worker process of a parallel run must be (DESIGN §7).
    """
    torch.set_num_threads(1)
    data = torch.from_numpy(series)
    baseline_window(data[:seq_len])  # warm-up: filter banks, FFT plans
    t0 = time.perf_counter()
    for s in starts:
        baseline_window(data[s : s + seq_len])
    return len(starts) / (time.perf_counter() - t0)


if __name__ == "__main__":
    x, st = ett_windows()
    sample = st[np.linspace(0, st.size - 1, 300).astype(np.int64)]
    print(f"baseline: {baseline_windows_per_second(x, sample):,.0f} windows/s")
