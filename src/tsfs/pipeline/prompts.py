"""Prompt text rendered from stored values, character for character as the models build it.

- :func:`timellm_prompt` — Time-LLM's f-string (``models/TimeLLM.py``): numbers are Python's
  ``repr`` of the float32 values widened to float64 (what ``str(t.tolist()[0])`` prints), lags
  ``str(list)``, no separator before "Task description", closing token ``<|<end_prompt>|>``.
- :func:`dwt_prompt` — the "balanced" prompt of SWT-Time's ``DWTPromptGenerator`` from the
  per-window values of :func:`tsfs.pipeline.features.pool_window`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "TIMELLM_DESCRIPTION",
    "difficulty_label",
    "dwt_prompt",
    "frequency_label",
    "quality_label",
    "timellm_prompt",
    "trend_label",
]

# Time-LLM's hard-coded description, used for every data set unless --prompt_domain is set.
TIMELLM_DESCRIPTION = (
    "The Electricity Transformer Temperature (ETT) is a crucial indicator in the electric "
    "power long-term deployment."
)

_BANDS = ("trend", "seasonal", "fluctuation", "noise")
_SCALES = ("long-term", "seasonal", "medium-term", "short-term")


def _f32(value: float) -> str:
    return repr(float(np.float32(value)))


def timellm_prompt(
    *,
    min: float,  # the template's own field names
    max: float,
    median: float,
    trend: float,
    lags: Sequence[int],
    seq_len: int,
    pred_len: int,
    description: str = TIMELLM_DESCRIPTION,
) -> str:
    """Time-LLM's prompt for one row from its stored statistics (trend "upward" iff > 0)."""
    return (
        f"<|start_prompt|>Dataset description: {description}"
        f"Task description: forecast the next {pred_len} steps given the previous {seq_len} "
        "steps information; "
        "Input statistics: "
        f"min value {_f32(min)}, "
        f"max value {_f32(max)}, "
        f"median value {_f32(median)}, "
        f"the trend of input is {'upward' if trend > 0 else 'downward'}, "
        f"top 5 lags are : {[int(v) for v in lags]}<|<end_prompt>|>"
    )


def frequency_label(entropy: float, dominant: int, dominant_energy: float, bands: int) -> str:
    """ "single-scale dominant" / "dual-scale pattern" / "multi-scale complex" (+ band name)."""
    if entropy < 0.5:
        text = "single-scale dominant"
    elif entropy < 1.0:
        text = "dual-scale pattern"
    else:
        text = "multi-scale complex"
    if dominant_energy > 0.7:
        names = [*_BANDS, *(f"band{i}" for i in range(len(_BANDS), bands))]
        text += f" ({names[dominant]})"
    return text


def trend_label(signs: Sequence[int], consistency: float) -> str:
    """ "consistent X" / "mostly X, except <scale>" / "mixed (k/n scales upward)"."""
    direction = "upward" if signs[0] > 0 else "downward"
    if consistency == 1.0:
        return f"consistent {direction}"
    if consistency >= 0.75:
        odd = next(i for i, s in enumerate(signs) if s != signs[0])
        name = _SCALES[odd] if odd < len(_SCALES) else f"scale{odd}"
        return f"mostly {direction}, except {name}"
    return f"mixed ({sum(1 for s in signs if s > 0)}/{len(signs)} scales upward)"


def quality_label(snr_db: float) -> str:
    """ "high SNR (clean)" above 20 dB, "moderate SNR" above 10 dB, else "low SNR (noisy)"."""
    if snr_db > 20:
        return "high SNR (clean)"
    if snr_db > 10:
        return "moderate SNR"
    return "low SNR (noisy)"


def difficulty_label(score: float) -> str:
    """ "low" below 15, "moderate" below 30, else "high"."""
    return "low" if score < 15 else "moderate" if score < 30 else "high"


def dwt_prompt(
    *,
    min: float,  # the template's own field names
    max: float,
    median: float,
    lags: Sequence[int],
    entropy: float,
    dominant: int,
    dominant_energy: float,
    trend_sign: Sequence[int],
    consistency: float,
    snr_db: float,
    difficulty: float,
    seq_len: int,
    pred_len: int,
    description: str = TIMELLM_DESCRIPTION,
) -> str:
    """The generator's balanced prompt for one window from its pooled values.

    ``min``/``max``/``median`` are means over the window's variables, ``lags`` the first
    variable's (only the first three are shown), ``trend_sign`` the per-band signs (J + 1) and
    ``difficulty`` the score; the difficulty is spelled out only when it is not "moderate".
    """
    label = difficulty_label(difficulty)
    text = (
        f"<|start_prompt|>Dataset description: {description}\n"
        f"Task description: forecast the next {pred_len} steps "
        f"given the previous {seq_len} steps information; \n"
        f"Input statistics: range [{min:.2f}, {max:.2f}], median {median:.2f}\n"
        f"Pattern analysis: "
        f"{frequency_label(entropy, dominant, dominant_energy, len(trend_sign))}, "
        f"trend is {trend_label(trend_sign, consistency)}, "
        f"signal quality is {quality_label(snr_db)}"
    )
    if label != "moderate":
        text += f", forecast difficulty: {label}"
    return text + f"\nDominant periodicities: {[int(v) for v in lags[:3]]}<|<end_prompt>|>"
