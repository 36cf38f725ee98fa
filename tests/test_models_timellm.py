"""Time-LLM family: shared layers against their definitions, prompts from the store, the frozen
backbone, and a short ETTh1 96→96 run that beats repeating the last value.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from family_runs import Run, prepare, repeat_last_mse, trained

from tsfs.errors import InputError
from tsfs.pipeline.normalize import revin as revin_rows
from tsfs.pipeline.prep import features_namespace, prep_features, resolve_features
from tsfs.pipeline.show import window_prompts
from tsfs.pipeline.sources import load
from tsfs.pipeline.windows import Dataset
from tsfs.specs import FeatureSpec, WindowSpec
from tsfs.stores.store import Store
from tsfs.training.data import StoreLoader
from tsfs.training.models import family
from tsfs.training.models.layers import PatchEmbedding, forecast_scores, patch_count, revin
from tsfs.training.models.timellm import TimeLLM, TimeLLMConfig, WordTokenizer

REPO = Path(__file__).resolve().parents[1]
ETTH1 = REPO / "data" / "ETTh1.csv"
FEATURES = FeatureSpec()
# A small backbone so a CPU run takes seconds; the rest is Time-LLM's default.
SMALL = TimeLLMConfig(backbone_width=32, backbone_layers=1, backbone_heads=4)


@pytest.fixture(scope="module")
def ett() -> Dataset:
    # Every 8th window: 1,057 train and 349 test windows of ETTh1 96→96.
    spec = WindowSpec(seq_len=96, label_len=48, pred_len=96, stride=8)
    return load(ETTH1, spec)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, ett: Dataset) -> Run:
    store = Store(tmp_path_factory.mktemp("timellm") / "store", mode="a")
    prep_features(ett, FEATURES, store)
    return prepare(ett, store, features=FEATURES)


# --------------------------------------------------------------------------------------------
# shared layers


def test_revin_matches_the_stored_normalisation() -> None:
    x = torch.randn(3, 96, 5, dtype=torch.float64) * 4 + 2
    z, mean, std = revin(x)
    rows = x.permute(0, 2, 1).reshape(-1, 96).numpy()
    want, want_mean, want_std = revin_rows(rows)
    got = z.permute(0, 2, 1).reshape(-1, 96).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_allclose(mean.ravel().numpy(), want_mean.reshape(3, 5).ravel(), rtol=1e-6)
    np.testing.assert_allclose(std.ravel().numpy(), want_std.reshape(3, 5).ravel(), rtol=1e-6)
    np.testing.assert_allclose((z * std + mean).numpy(), x.numpy(), atol=1e-12)


@pytest.mark.parametrize(
    ("seq_len", "patch_len", "stride"), [(96, 16, 8), (512, 16, 8), (100, 7, 3)]
)
def test_patches_are_time_llms(seq_len: int, patch_len: int, stride: int) -> None:
    assert patch_count(seq_len, patch_len, stride) == int((seq_len - patch_len) / stride + 2)
    embed = PatchEmbedding(patch_len=patch_len, stride=stride, d_model=4, dropout=0.0)
    rows = torch.randn(2, seq_len)
    tokens = embed(rows)
    assert tokens.shape == (2, patch_count(seq_len, patch_len, stride), 4)
    # ReplicationPad1d((0, stride)) then unfold, written out.
    padded = torch.cat([rows, rows[:, -1:].expand(2, stride)], dim=1)
    for p in range(tokens.shape[1]):
        patch = padded[:, p * stride : p * stride + patch_len]
        torch.testing.assert_close(tokens[:, p], embed.project(patch))


def test_time_llms_patch_tokens_mix_each_patch_with_its_neighbours() -> None:
    """Time-LLM's TokenEmbedding: Conv1d(patch_len, d_model, 3, padding 1, circular, no
    bias) along the patches, written out here as a sum over the patch and its neighbours."""
    seq_len, patch_len, stride = 40, 8, 4
    embed = PatchEmbedding(
        patch_len=patch_len, stride=stride, d_model=5, dropout=0.0, mix_neighbours=True
    )
    rows = torch.randn(3, seq_len)
    tokens = embed(rows)
    n = patch_count(seq_len, patch_len, stride)
    padded = torch.cat([rows, rows[:, -1:].expand(3, stride)], dim=1)
    patches = [padded[:, p * stride : p * stride + patch_len] for p in range(n)]
    weight = embed.project.weight  # (d_model, patch_len, 3)
    assert embed.project.bias is None
    for p in range(n):
        want = sum(patches[(p + k - 1) % n] @ weight[:, :, k].T for k in range(3))
        torch.testing.assert_close(tokens[:, p], want)


def test_forecast_scores_are_sums_over_the_target_steps() -> None:
    forecast = torch.randn(4, 24, 3)
    y = torch.randn(4, 48 + 24, 3)
    scores = forecast_scores(forecast, y)
    error = forecast.numpy() - y.numpy()[:, 48:]
    assert scores["mse"][1] == scores["mae"][1] == error.size
    assert float(scores["mse"][0]) == pytest.approx(float((error**2).sum()), rel=1e-5)
    assert float(scores["mae"][0]) == pytest.approx(float(np.abs(error).sum()), rel=1e-5)


# --------------------------------------------------------------------------------------------
# prompts


def test_prompt_texts_are_the_stored_prompts_of_tsfs_show(run: Run, ett: Dataset) -> None:
    """Each row's text: its Time-LLM prompt, then its window's DWT prompt, as ``tsfs show``."""
    model = family("timellm").build(run.info, SMALL)
    assert isinstance(model, TimeLLM)
    reader = run.readers["test"]
    windows = [0, 5, len(ett.splits["test"]) - 1]
    features = reader.read(windows).features
    texts = model.prompts.texts({n: features[n] for n in model.prompts.inputs})
    namespace = features_namespace(run.store, resolve_features(ett, FEATURES))
    for window, rows in zip(windows, texts, strict=True):
        per_variable, dwt = window_prompts(ett, namespace, "test", window)
        assert rows == [p + dwt for p in per_variable]


def test_tokenizer_covers_the_prompts_word_by_word(run: Run) -> None:
    tokenizer = WordTokenizer()
    vocab = {i: t for t, i in tokenizer.ids.items()}
    model = family("timellm").build(run.info, SMALL)
    assert isinstance(model, TimeLLM)
    features = run.readers["train"].read(np.arange(0, 1000, 25)).features
    texts = [t for rows in model.prompts.texts(features) for t in rows]
    for text in texts:
        ids = tokenizer.encode(text)
        assert "".join(vocab[i] for i in ids) == re.sub(r"\s", "", text)
        plain = text.replace("<|start_prompt|>", "").replace("<|<end_prompt>|>", "")
        words = re.findall(r"[A-Za-z]{2,}", plain)
        # every word of the templates is one token (none spelled out letter by letter)
        assert sum(len(vocab[i]) > 1 and vocab[i].isalpha() for i in ids) == len(words)
    # A word outside the templates is spelled out; a character outside ASCII is <unk>.
    assert [vocab[i] for i in tokenizer.encode("Zebra é")] == ["Z", "e", "b", "r", "a", "<unk>"]


def test_prompt_ids_are_cached_per_window_and_left_padded(run: Run) -> None:
    model = family("timellm").build(run.info, SMALL)
    assert isinstance(model, TimeLLM)
    reader = run.readers["val"]
    batch = next(iter(StoreLoader(reader, batch_size=8, order="sequential")))
    ids, padding = model.prompts(batch["features"], torch.device("cpu"))
    assert ids.shape == padding.shape == (8 * 7, ids.shape[1])
    assert len(model.prompts) == 8
    # Left padding: each row's tokens end at the last position.
    assert not padding[:, -1].any()
    assert (padding.int().diff(dim=1) <= 0).all()
    tokenizer = WordTokenizer()
    texts = model.prompts.texts({k: v.numpy() for k, v in batch["features"].items()})
    first = tokenizer.encode(texts[0][0])
    assert ids[0, -len(first) :].tolist() == first
    # Served from the cache the second time: nothing new rendered, the same ids.
    again, _ = model.prompts(batch["features"], torch.device("cpu"))
    assert len(model.prompts) == 8
    assert torch.equal(again, ids)


def test_a_windows_forecast_does_not_depend_on_its_batch_mates(run: Run) -> None:
    """Prompts differ in length and are left-padded to the batch's longest: positions must
    count from each row's own first token, or the same window forecasts otherwise in another
    batch (and scores depend on --batch-size)."""
    torch.manual_seed(0)
    model = family("timellm").build(run.info, SMALL).eval()
    assert isinstance(model, TimeLLM)
    reader = run.readers["test"]

    def features(windows: list[int]) -> dict[str, torch.Tensor]:
        return {k: torch.from_numpy(v) for k, v in (reader.read(windows).features or {}).items()}

    lengths = {}
    for w in range(0, 300, 7):
        _, padding = model.prompts(features([w]), torch.device("cpu"))
        lengths[w] = int((~padding).sum(dim=1).max())
    short, long = min(lengths, key=lengths.__getitem__), max(lengths, key=lengths.__getitem__)
    assert lengths[short] < lengths[long]  # the batch pads the short window's prompts

    def forecast(windows: list[int]) -> torch.Tensor:
        x = torch.from_numpy(reader.read(windows).x)
        with torch.no_grad():
            out: torch.Tensor = model.forecast({"x": x, "features": features(windows)})
        return out

    torch.testing.assert_close(forecast([short, long])[0], forecast([short])[0])


def test_build_names_the_features_a_prompt_needs(run: Run) -> None:
    names = {k: v for k, v in run.info.feature_names.items() if k != "lags"}
    info = dataclasses.replace(run.info, feature_names=names)
    with pytest.raises(InputError, match="lack lags"):
        family("timellm").build(info, SMALL)
    family("timellm").build(info, dataclasses.replace(SMALL, prompt="none"))


def test_bad_settings_are_one_line_errors() -> None:
    with pytest.raises(InputError, match="prompt"):
        TimeLLMConfig(prompt="long")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="patch_len"):
        TimeLLMConfig(patch_len=0)


@pytest.mark.skipif(
    importlib.util.find_spec("transformers") is not None, reason="transformers is installed"
)
def test_backbone_path_without_transformers_says_what_to_install(run: Run, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="needs the transformers package"):
        family("timellm").build(run.info, TimeLLMConfig(backbone_path=str(tmp_path)))


@pytest.mark.skipif(
    importlib.util.find_spec("transformers") is None, reason="transformers is not installed"
)
def test_backbone_path_loads_a_local_hugging_face_model(run: Run, tmp_path: Path) -> None:
    """A tiny GPT-2 and a byte-level BPE tokenizer, both made here and saved to a directory."""
    import tokenizers
    import transformers

    with pytest.raises(InputError, match="not a directory"):
        family("timellm").build(run.info, TimeLLMConfig(backbone_path=str(tmp_path / "none")))
    bpe = tokenizers.Tokenizer(tokenizers.models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=200, special_tokens=["<unk>", "<pad>"])
    model = family("timellm").build(run.info, SMALL)
    assert isinstance(model, TimeLLM)
    features = run.readers["train"].read(np.arange(10)).features
    bpe.train_from_iterator([t for rows in model.prompts.texts(features) for t in rows], trainer)
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token="<pad>")
    tokenizer.save_pretrained(tmp_path)
    config = transformers.GPT2Config(
        vocab_size=len(tokenizer), n_embd=32, n_layer=1, n_head=4, n_positions=1024
    )
    transformers.GPT2Model(config).save_pretrained(tmp_path)

    local = dataclasses.replace(SMALL, backbone_path=str(tmp_path))
    hf = family("timellm").build(run.info, local)
    assert isinstance(hf, TimeLLM)
    assert hf.backbone.width == 32
    assert not any(p.requires_grad for p in hf.backbone.parameters())
    batch = next(iter(StoreLoader(run.readers["train"], batch_size=2, order="sequential")))
    ids, _ = hf.prompts(batch["features"], torch.device("cpu"))
    text = hf.prompts.texts({k: v.numpy() for k, v in batch["features"].items()})[0][0]
    first = tokenizer(text).input_ids
    assert ids[0, -len(first) :].tolist() == first
    family("timellm").loss(hf, batch).backward()
    assert hf.head.linear.weight.grad is not None


# --------------------------------------------------------------------------------------------
# training


def test_backbone_is_frozen_and_the_same_in_every_run(run: Run) -> None:
    fam = family("timellm")
    torch.manual_seed(1)
    a = fam.build(run.info, SMALL)
    torch.manual_seed(2)
    b = fam.build(run.info, SMALL)
    assert isinstance(a, TimeLLM)
    assert isinstance(b, TimeLLM)
    frozen = dict(a.backbone.named_parameters())
    for name, p in b.backbone.named_parameters():
        assert torch.equal(p, frozen[name])
        assert not p.requires_grad
    before = {n: p.detach().clone() for n, p in a.named_parameters()}
    optimizer = torch.optim.AdamW([p for p in a.parameters() if p.requires_grad], lr=1e-2)
    batch = next(iter(StoreLoader(run.readers["train"], batch_size=4)))
    fam.loss(a, batch).backward()
    optimizer.step()
    for n, p in a.named_parameters():
        assert torch.equal(p, before[n]) == n.startswith("backbone."), n


def test_etth1_96_beats_repeating_the_last_value(run: Run) -> None:
    result = trained("timellm", run, SMALL, steps=40, batch_size=16, lr=1e-3)
    test = result.metrics["test"]
    baseline = repeat_last_mse(run.dataset, "test")
    print(f"timellm test mse {test['mse']:.4f} mae {test['mae']:.4f}, repeat-last {baseline:.4f}")
    assert result.metrics["baseline"]["repeat_last"]["mse"] == pytest.approx(baseline, rel=1e-6)
    assert test["mse"] < 0.8 * baseline
