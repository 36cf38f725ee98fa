"""Time-LLM (Jin et al., ICLR 2024; ``KimMeen/Time-LLM`` ``models/TimeLLM.py``) over stored prompts.

Per window and variable (channel independent, N = B·V rows): RevIN, overlapping patches
embedded to ``d_model``, *reprogrammed* onto the backbone's word embeddings (cross-attention
from the patches to ``n_prototypes`` text prototypes, each a learned mix of the vocabulary's
embeddings), a prompt prefix, the frozen backbone, and a flatten head over the first ``d_ff``
channels of the patch positions → ``pred_len`` values, de-normalised.

**The prompt comes from the store.** Its text is rendered from the stored feature values with
:mod:`tsfs.pipeline.prompts`, never recomputed from the series: Time-LLM's own prompt of the
row (min, max, median, trend, top-5 lags) followed by the window's DWT prompt (the SWT-Time
generator's text from :func:`tsfs.pipeline.features.pool_window`), as ``prompt`` selects.
Token ids are cached in memory per distinct window (keyed by the bytes of the stored values
the text comes from, so the same values in any split hit the same entry): each window is
rendered and tokenised once per run. The cache holds ~V·(prompt length) int32 per window,
about 6 KB for V=7 and both texts.

**Backbone.** By default a small transformer and a word-level tokenizer built in code: the
vocabulary is every word of the prompt templates (rendered through every branch of their
labels) plus the description's words, with printable ASCII characters as the fallback for any
other word and each digit its own token — nothing to download. Its weights are drawn from
``backbone_seed`` alone, so the frozen part is the same in every run. ``backbone_path`` names a
local Hugging Face model directory instead (loaded with ``transformers`` if it is installed,
``local_files_only``; never a download). Either way the backbone and its embeddings are
frozen; only the patch embedding, the reprogramming layer, the prototype mapping and the head
train.
"""

from __future__ import annotations

import importlib
import inspect
import math
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, cast

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import nn

from tsfs.errors import InputError
from tsfs.pipeline.features import pool_window
from tsfs.pipeline.prompts import (
    TIMELLM_DESCRIPTION,
    dwt_prompt,
    frequency_label,
    quality_label,
    timellm_prompt,
    trend_label,
)
from tsfs.training.data import Batch
from tsfs.training.models.base import DataInfo, Scores, Task
from tsfs.training.models.layers import (
    FlattenHead,
    PatchEmbedding,
    TransformerEncoder,
    forecast_loss,
    forecast_scores,
    patch_count,
    require_divisible,
    require_fraction,
    require_positive,
    revin,
    row_positions,
)

__all__ = ["FAMILY", "TimeLLM", "TimeLLMConfig", "TimeLLMFamily", "WordTokenizer"]

Prompt = Literal["both", "timellm", "dwt", "none"]
_PROMPTS: tuple[str, ...] = ("both", "timellm", "dwt", "none")

# Stored outputs each prompt's text is rendered from.
_TIMELLM_INPUTS = ("min", "max", "median", "trend", "lags")
_DWT_INPUTS = (
    "min",
    "max",
    "median",
    "lags",
    "band_count",
    "band_sum",
    "band_energy",
    "energy_ratio",
    "band_trend",
)


@dataclass(frozen=True, kw_only=True)
class TimeLLMConfig:
    """Time-LLM's settings (defaults: Time-LLM's own where they fit a CPU, else smaller).

    Attributes:
        patch_len, stride: patching (Time-LLM: 16 and 8).
        d_model: patch embedding width (Time-LLM's default 16).
        d_ff: backbone channels the head reads at each patch position (Time-LLM: 32).
        n_heads: reprogramming heads (Time-LLM: 8).
        n_prototypes: text prototypes the patches attend to (Time-LLM: 1000 over a 32,000-word
            vocabulary; the built-in vocabulary has a few hundred words).
        dropout: dropout of the patch embedding, reprogramming attention and head.
        prompt: which stored-value texts prefix each row: ``both`` (Time-LLM's, then the
            window's DWT text), ``timellm``, ``dwt`` or ``none``.
        description: the data set description in both texts (Time-LLM's ETT sentence).
        max_prompt_tokens: prompts are truncated to this many tokens (Time-LLM: 2048).
        backbone_path: a local Hugging Face model directory to use as the frozen backbone
            (needs ``transformers``); None: the built-in transformer.
        backbone_width, backbone_layers, backbone_heads: the built-in backbone's size.
        backbone_seed: the built-in backbone's weights are drawn from this seed alone.
    """

    patch_len: int = 16
    stride: int = 8
    d_model: int = 16
    d_ff: int = 32
    n_heads: int = 8
    n_prototypes: int = 100
    dropout: float = 0.1
    prompt: Prompt = "both"
    description: str = TIMELLM_DESCRIPTION
    max_prompt_tokens: int = 2048
    backbone_path: str | None = None
    backbone_width: int = 64
    backbone_layers: int = 2
    backbone_heads: int = 4
    backbone_seed: int = 0

    def __post_init__(self) -> None:
        if self.prompt not in _PROMPTS:
            raise InputError(f"unknown prompt {self.prompt!r}; choose one of {', '.join(_PROMPTS)}")
        sizes = ("patch_len", "stride", "d_model", "d_ff", "n_heads", "n_prototypes")
        backbone = ("backbone_width", "backbone_layers", "backbone_heads")
        require_positive(self, (*sizes, "max_prompt_tokens", *backbone))
        require_divisible(self, "backbone_width", "backbone_heads")
        require_fraction(self, "dropout")


# --------------------------------------------------------------------------------------------
# tokenizers and backbones


_SPECIALS = ("<pad>", "<unk>", "<|start_prompt|>", "<|<end_prompt>|>")
# A special token, else a word of letters, else one visible character (so each digit of a
# number, each sign and each bracket is its own token); whitespace separates and is dropped.
_TOKEN = re.compile(r"<\|start_prompt\|>|<\|<end_prompt>\|>|[A-Za-z]+|\S")


def _template_texts(description: str) -> list[str]:
    """Texts that go through every branch of both prompt templates and their labels."""
    texts = [
        timellm_prompt(
            min=0,
            max=0,
            median=0,
            trend=t,
            lags=[0],
            seq_len=1,
            pred_len=1,
            description=description,
        )
        for t in (0.0, 1.0)
    ]
    texts += [
        dwt_prompt(
            min=0,
            max=0,
            median=0,
            lags=[0],
            entropy=0,
            dominant=0,
            dominant_energy=0,
            trend_sign=[1, 1, 1, 1],
            consistency=1.0,
            snr_db=0,
            difficulty=d,
            seq_len=1,
            pred_len=1,
            description=description,
        )
        for d in (0.0, 100.0)
    ]
    texts += [frequency_label(e, d, 1.0, 4) for e in (0.0, 0.7, 2.0) for d in range(4)]
    texts += [trend_label([s, -s, s, s][:n], c) for s in (1, -1) for n in (2, 4) for c in (1, 0.8)]
    texts += [trend_label([1, 1, -1, 1], 0.8), trend_label([1, 1, 1, -1], 0.8)]
    texts += [trend_label([1, -1], 0.5)]
    texts += [quality_label(s) for s in (30.0, 15.0, 0.0)]
    return texts


class WordTokenizer:
    """A word-level tokenizer built in code from the prompt templates: no files, no download.

    Known words are one token each; any other word is spelled out in printable ASCII
    characters; other characters become ``<unk>``. Ids are stable: specials, then the 94
    visible ASCII characters, then the template words in sorted order.
    """

    def __init__(self, description: str = TIMELLM_DESCRIPTION) -> None:
        words = {
            w for text in _template_texts(description) for w in _TOKEN.findall(text) if len(w) > 1
        }
        chars = [c for c in string.printable if not c.isspace()]
        vocab = [*_SPECIALS, *chars, *sorted(words - set(_SPECIALS))]
        self.ids = {token: i for i, token in enumerate(vocab)}
        self.pad_id = self.ids["<pad>"]
        self._unk = self.ids["<unk>"]

    def __len__(self) -> int:
        return len(self.ids)

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for token in _TOKEN.findall(text):
            found = self.ids.get(token)
            if found is not None:
                ids.append(found)
            else:  # an unknown word: its characters
                ids.extend(self.ids.get(c, self._unk) for c in token)
        return ids


class _Backbone(nn.Module):
    """A frozen language model: word embeddings and a stack over embedded tokens."""

    width: int

    def embeddings(self) -> torch.Tensor:
        """(vocabulary, width) word embeddings."""
        raise NotImplementedError

    def forward(self, tokens: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        """(N, L, width) embedded tokens, (N, L) bool padding (True = ignore) → (N, L, width)."""
        raise NotImplementedError


class _BuiltinBackbone(_Backbone):
    def __init__(self, vocabulary: int, config: TimeLLMConfig, max_len: int) -> None:
        super().__init__()
        self.width = config.backbone_width
        self.words = nn.Embedding(vocabulary, config.backbone_width)
        self.stack = TransformerEncoder(
            d_model=config.backbone_width,
            n_heads=config.backbone_heads,
            n_layers=config.backbone_layers,
            d_ff=4 * config.backbone_width,
            dropout=0.0,
            max_len=max_len,
        )

    def embeddings(self) -> torch.Tensor:
        return self.words.weight

    def forward(self, tokens: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.stack(tokens, padding)
        return out


class _HFBackbone(_Backbone):
    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model
        self.width = int(model.get_input_embeddings().weight.shape[1])
        self._takes_positions = "position_ids" in inspect.signature(model.forward).parameters

    def embeddings(self) -> torch.Tensor:
        weight: torch.Tensor = self.model.get_input_embeddings().weight
        return weight

    def forward(self, tokens: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        # Left-padded rows: a model with absolute positions (GPT-2, BERT) counts them from each
        # row's first token; rotary ones (LLaMA) see relative positions either way.
        where = {"position_ids": row_positions(padding)} if self._takes_positions else {}
        out = self.model(inputs_embeds=tokens, attention_mask=(~padding).long(), **where)
        hidden: torch.Tensor = out.last_hidden_state
        return hidden


class _HFTokenizer:
    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        pad = tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else tokenizer.eos_token_id)  # as Time-LLM

    def encode(self, text: str) -> list[int]:
        ids: list[int] = self.tokenizer(text).input_ids
        return ids


def _load_hf(path: str) -> tuple[_HFBackbone, _HFTokenizer]:
    try:
        transformers = importlib.import_module("transformers")
    except ImportError:
        raise InputError(
            f"backbone_path {path!r} needs the transformers package (pip install transformers); "
            "leave backbone_path unset to use the built-in backbone"
        ) from None
    if not Path(path).is_dir():
        raise InputError(
            f"backbone_path {path!r} is not a directory; give a local Hugging Face model "
            "directory (models are never downloaded)"
        )
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = transformers.AutoModel.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as e:
        raise InputError(f"backbone_path {path!r}: cannot load a model from it ({e})") from None
    return _HFBackbone(model), _HFTokenizer(tokenizer)


# --------------------------------------------------------------------------------------------
# prompts from stored values


class PromptCache:
    """Stored feature values → padded prompt token ids, rendered and tokenised once per window."""

    def __init__(
        self,
        tokenizer: WordTokenizer | _HFTokenizer,
        *,
        prompt: Prompt,
        description: str,
        seq_len: int,
        pred_len: int,
        max_tokens: int,
    ) -> None:
        self.tokenizer = tokenizer
        self.prompt = prompt
        self.description = description
        self.seq_len = seq_len
        self.pred_len = pred_len
        self.max_tokens = max_tokens
        self.inputs = sorted(
            {
                *(_TIMELLM_INPUTS if prompt in ("both", "timellm") else ()),
                *(_DWT_INPUTS if prompt in ("both", "dwt") else ()),
            }
        )
        self._windows: dict[bytes, list[npt.NDArray[np.int32]]] = {}

    def __len__(self) -> int:
        return len(self._windows)

    def texts(self, values: Mapping[str, npt.NDArray[Any]]) -> list[list[str]]:
        """The prompt of each row of M windows: ``values`` name → (M, V, ...) stored values."""
        m, v = values["min"].shape[:2]
        rows: list[list[str]] = [[""] * v for _ in range(m)]
        if self.prompt in ("both", "timellm"):
            for i in range(m):
                for j in range(v):
                    rows[i][j] = timellm_prompt(
                        min=float(values["min"][i, j]),
                        max=float(values["max"][i, j]),
                        median=float(values["median"][i, j]),
                        trend=float(values["trend"][i, j]),
                        lags=values["lags"][i, j].tolist(),
                        seq_len=self.seq_len,
                        pred_len=self.pred_len,
                        description=self.description,
                    )
        if self.prompt in ("both", "dwt"):
            pooled = pool_window({name: values[name] for name in _DWT_INPUTS})
            for i in range(m):
                text = dwt_prompt(
                    min=float(pooled["min"][i]),
                    max=float(pooled["max"][i]),
                    median=float(pooled["median"][i]),
                    lags=pooled["lags"][i].tolist(),
                    entropy=float(pooled["entropy"][i]),
                    dominant=int(pooled["dominant"][i]),
                    dominant_energy=float(pooled["dominant_energy"][i]),
                    trend_sign=pooled["trend_sign"][i].tolist(),
                    consistency=float(pooled["consistency"][i]),
                    snr_db=float(pooled["snr_db"][i]),
                    difficulty=float(pooled["difficulty"][i]),
                    seq_len=self.seq_len,
                    pred_len=self.pred_len,
                    description=self.description,
                )
                rows[i] = [r + text for r in rows[i]]
        return rows

    def __call__(
        self, features: Mapping[str, torch.Tensor], device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch features name → (B, V, ...) → left-padded ids (B·V, L) and padding (B·V, L).

        Rows are window-major (window 0's V rows first), as the model flattens (B, V).
        """
        if self.prompt == "none":
            n = int(features["min"].numel()) if "min" in features else 0
            return (
                torch.zeros(n, 0, dtype=torch.long, device=device),
                torch.zeros(n, 0, dtype=torch.bool, device=device),
            )
        values = {name: features[name].cpu().numpy() for name in self.inputs}
        b = len(values["min"])
        keys = [b"".join(values[name][i].tobytes() for name in self.inputs) for i in range(b)]
        missing = sorted({i for i, k in enumerate(keys) if k not in self._windows})
        if missing:
            texts = self.texts({name: a[missing] for name, a in values.items()})
            for i, window in zip(missing, texts, strict=True):
                self._windows[keys[i]] = [
                    np.asarray(self.tokenizer.encode(t)[: self.max_tokens], dtype=np.int32)
                    for t in window
                ]
        tokens = [row for k in keys for row in self._windows[k]]
        length = max(len(r) for r in tokens)
        ids = np.full((len(tokens), length), self.tokenizer.pad_id, dtype=np.int64)
        padding = np.ones((len(tokens), length), dtype=bool)
        for i, r in enumerate(tokens):
            # Left padding: every row's prompt ends right before its patches.
            ids[i, length - len(r) :] = r
            padding[i, length - len(r) :] = False
        return torch.from_numpy(ids).to(device), torch.from_numpy(padding).to(device)


# --------------------------------------------------------------------------------------------
# the network


class Reprogramming(nn.Module):
    """Time-LLM's ``ReprogrammingLayer``: patches attend to text prototypes.

    Queries are the (N, P, d_model) patch embeddings; keys and values the (S, width) prototypes;
    the output is (N, P, width), in the backbone's embedding space.
    """

    def __init__(
        self, *, d_model: int, n_heads: int, d_keys: int, width: int, dropout: float
    ) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.query = nn.Linear(d_model, d_keys * n_heads)
        self.key = nn.Linear(width, d_keys * n_heads)
        self.value = nn.Linear(width, d_keys * n_heads)
        self.out = nn.Linear(d_keys * n_heads, width)
        self.dropout = nn.Dropout(dropout)

    def forward(self, patches: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
        n, p, _ = patches.shape
        s, h = prototypes.shape[0], self.n_heads
        q = self.query(patches).view(n, p, h, -1)
        k = self.key(prototypes).view(s, h, -1)
        v = self.value(prototypes).view(s, h, -1)
        scores = torch.einsum("nphe,she->nhps", q, k) / math.sqrt(q.shape[-1])
        attention = self.dropout(torch.softmax(scores, dim=-1))
        mixed = torch.einsum("nhps,she->nphe", attention, v).reshape(n, p, -1)
        out: torch.Tensor = self.out(mixed)
        return out


class TimeLLM(nn.Module):
    """Time-LLM over prompts rendered from stored values (see the module docs).

    Args:
        info: the data (forecasting only).
        config: the settings.
    """

    def __init__(self, info: DataInfo, config: TimeLLMConfig) -> None:
        super().__init__()
        self.pred_len = info.pred_len
        self.target_only = info.target_only
        self.n_patches = patch_count(info.seq_len, config.patch_len, config.stride)
        tokenizer: WordTokenizer | _HFTokenizer
        self.backbone: _Backbone
        if config.backbone_path is not None:
            self.backbone, tokenizer = _load_hf(config.backbone_path)
        else:
            tokenizer = WordTokenizer(config.description)
            # Drawn from its own seed: the frozen part is the same whatever the run's seed.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(config.backbone_seed)
                self.backbone = _BuiltinBackbone(
                    len(tokenizer), config, config.max_prompt_tokens + self.n_patches
                )
        self.backbone.requires_grad_(False)
        width = self.backbone.width
        if config.d_ff > width:
            raise InputError(f"d_ff ({config.d_ff}) must not exceed the backbone width ({width})")
        self.d_ff = config.d_ff
        self.prompts = PromptCache(
            tokenizer,
            prompt=config.prompt,
            description=config.description,
            seq_len=info.seq_len,
            pred_len=info.pred_len,
            max_tokens=config.max_prompt_tokens,
        )
        self.patches = PatchEmbedding(
            patch_len=config.patch_len,
            stride=config.stride,
            d_model=config.d_model,
            dropout=config.dropout,
            mix_neighbours=True,  # Time-LLM's TokenEmbedding
        )
        vocabulary = self.backbone.embeddings().shape[0]
        self.mapping = nn.Linear(vocabulary, config.n_prototypes)
        self.reprogramming = Reprogramming(
            d_model=config.d_model,
            n_heads=config.n_heads,
            d_keys=config.d_ff,
            width=width,
            dropout=config.dropout,
        )
        self.head = FlattenHead(
            n_inputs=config.d_ff * self.n_patches, pred_len=info.pred_len, dropout=config.dropout
        )

    def forward(self, x: torch.Tensor, prompt: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        """Forecast.

        Args:
            x: (B, T, V) input windows.
            prompt: (B·V, L) prompt token ids, window-major; padding: (B·V, L) bool.

        Returns:
            (B, pred_len, V) forecast in the units of ``x``.
        """
        b, t, v = x.shape
        z, mean, std = revin(x)
        rows = z.permute(0, 2, 1).reshape(b * v, t)
        words = self.backbone.embeddings()
        prototypes = self.mapping(words.T).T  # (S, width)
        patches = self.reprogramming(self.patches(rows), prototypes)  # (N, P, width)
        prefix = F.embedding(prompt, words)  # (N, L, width)
        tokens = torch.cat([prefix, patches.to(prefix.dtype)], dim=1)
        keep = torch.zeros(b * v, self.n_patches, dtype=torch.bool, device=x.device)
        hidden: torch.Tensor = self.backbone(tokens, torch.cat([padding, keep], dim=1))
        out = hidden[:, -self.n_patches :, : self.d_ff]  # (N, P, d_ff)
        forecast: torch.Tensor = self.head(out.transpose(1, 2))  # (N, pred_len)
        return forecast.view(b, v, -1).permute(0, 2, 1) * std + mean

    def forecast(self, batch: Batch) -> torch.Tensor:
        """(B, pred_len, V) forecast of a batch (its features give the prompts)."""
        x = batch["x"]
        ids, padding = self.prompts(batch.get("features", {}), x.device)
        out: torch.Tensor = self(x, ids, padding)
        return out


# --------------------------------------------------------------------------------------------
# the family


class TimeLLMFamily:
    """``tsfs train timellm``: Time-LLM forecasting, prompts from the features namespace."""

    name: ClassVar[str] = "timellm"
    config_type: ClassVar[type[TimeLLMConfig]] = TimeLLMConfig
    tasks: ClassVar[tuple[Task, ...]] = ("forecast",)
    reads_features: ClassVar[bool] = True
    reads_images: ClassVar[bool] = False
    image_output: ClassVar[str] = "clip"
    monitor: ClassVar[str] = "mse"

    def build(self, info: DataInfo, config: TimeLLMConfig) -> nn.Module:
        if info.task != "forecast":
            raise InputError("timellm forecasts; train it on a forecasting data set (ETT-style)")
        model = TimeLLM(info, config)
        lacking = [n for n in model.prompts.inputs if n not in info.feature_names]
        if lacking:
            raise InputError(
                f"the features read lack {', '.join(lacking)}, which the {config.prompt!r} "
                "prompt is rendered from; read every output of a `tsfs prep features` "
                "namespace (or choose prompt='none')"
            )
        return model

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        net = cast(TimeLLM, model)
        return forecast_loss(net.forecast(batch), batch["y"], target_only=net.target_only)

    def score(self, model: nn.Module, batch: Batch) -> Scores:
        net = cast(TimeLLM, model)
        return forecast_scores(net.forecast(batch), batch["y"], target_only=net.target_only)


FAMILY = TimeLLMFamily()
