"""Prompt text against the models' own templates, written out literally from their f-strings
(Time-LLM ``models/TimeLLM.py``; SWT-Time ``DWTPromptGenerator._build_balanced_prompt``)."""

from __future__ import annotations

import numpy as np
import pytest

from tsfs.pipeline.prompts import (
    TIMELLM_DESCRIPTION,
    difficulty_label,
    dwt_prompt,
    frequency_label,
    quality_label,
    timellm_prompt,
    trend_label,
)

ETT = (
    "The Electricity Transformer Temperature (ETT) is a crucial indicator in the electric power "
    "long-term deployment."
)


def test_timellm_description_is_the_hard_coded_sentence() -> None:
    assert TIMELLM_DESCRIPTION == ETT


def test_timellm_prompt_is_the_template() -> None:
    text = timellm_prompt(
        min=np.float32(-1.2345678),
        max=np.float32(2.5),
        median=np.float32(0.1),
        trend=np.float32(0.0),
        lags=np.array([0, 24, 488, 48, 464], dtype=np.int32),
        seq_len=512,
        pred_len=96,
    )
    assert text == (
        "<|start_prompt|>Dataset description: The Electricity Transformer Temperature (ETT) is "
        "a crucial indicator in the electric power long-term deployment.Task description: "
        "forecast the next 96 steps given the previous 512 steps information; Input "
        "statistics: min value -1.2345677614212036, max value 2.5, median value "
        "0.10000000149011612, the trend of input is downward, top 5 lags are : "
        "[0, 24, 488, 48, 464]<|<end_prompt>|>"
    )


@pytest.mark.parametrize(("trend", "word"), [(1e-30, "upward"), (-0.5, "downward")])
def test_timellm_trend_word(trend: float, word: str) -> None:
    text = timellm_prompt(
        min=0, max=0, median=0, trend=trend, lags=[0], seq_len=4, pred_len=2, description="d. "
    )
    assert f"the trend of input is {word}, top 5 lags are : [0]<|<end_prompt>|>" in text
    assert text.startswith("<|start_prompt|>Dataset description: d. Task description:")


def test_dwt_prompt_is_the_balanced_template() -> None:
    text = dwt_prompt(
        min=-2.384,
        max=3.175,
        median=-0.0649,
        lags=[0, 511, 1, 510, 2],
        entropy=0.62,
        dominant=0,
        dominant_energy=0.83,
        trend_sign=[1, 1, -1, 1],
        consistency=0.75,
        snr_db=14.2,
        difficulty=31.0,
        seq_len=512,
        pred_len=96,
    )
    assert text == (
        "<|start_prompt|>Dataset description: The Electricity Transformer Temperature (ETT) is "
        "a crucial indicator in the electric power long-term deployment.\n"
        "Task description: forecast the next 96 steps given the previous 512 steps "
        "information; \n"
        "Input statistics: range [-2.38, 3.17], median -0.06\n"
        "Pattern analysis: dual-scale pattern (trend), trend is mostly upward, except "
        "medium-term, signal quality is moderate SNR, forecast difficulty: high\n"
        "Dominant periodicities: [0, 511, 1]<|<end_prompt>|>"
    )


def test_dwt_prompt_omits_a_moderate_difficulty() -> None:
    text = dwt_prompt(
        min=-1, max=1, median=0, lags=[0, 24], entropy=1.2, dominant=2, dominant_energy=0.4,
        trend_sign=[-1, 1, 1, -1], consistency=0.5, snr_db=25.0, difficulty=20.0, seq_len=96,
        pred_len=24, description="x",
    )  # fmt: skip
    assert text == (
        "<|start_prompt|>Dataset description: x\n"
        "Task description: forecast the next 24 steps given the previous 96 steps "
        "information; \n"
        "Input statistics: range [-1.00, 1.00], median 0.00\n"
        "Pattern analysis: multi-scale complex, trend is mixed (2/4 scales upward), "
        "signal quality is high SNR (clean)\n"
        "Dominant periodicities: [0, 24]<|<end_prompt>|>"
    )


def test_labels_follow_the_generators_thresholds() -> None:
    assert frequency_label(0.49, 3, 0.71, 4) == "single-scale dominant (noise)"
    assert frequency_label(0.5, 1, 0.7, 4) == "dual-scale pattern"
    assert frequency_label(1.0, 5, 0.9, 6) == "multi-scale complex (band5)"
    assert trend_label([1, 1, 1, 1], 1.0) == "consistent upward"
    assert trend_label([-1, -1, -1, 0], 0.75) == "mostly downward, except short-term"
    assert trend_label([1, 1, 1, 1, 1, -1], 5 / 6) == "mostly upward, except scale5"
    assert trend_label([0, 1, -1, 1], 0.5) == "mixed (2/4 scales upward)"
    assert quality_label(20.0) == "moderate SNR"
    assert quality_label(10.0) == "low SNR (noisy)"
    assert [difficulty_label(s) for s in (14.99, 15.0, 29.99, 30.0)] == [
        "low",
        "moderate",
        "moderate",
        "high",
    ]
