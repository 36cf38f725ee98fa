"""``diffusion``: an iTransformer forecast refined by a conditional 1D U-Net diffusion model.

The network (after the iTransformerDiffusion design, research notes §4):

* **Encoder** — iTransformer: each variable's RevIN-normalised input window is one token
  (``Linear(T → D)``), the time features' columns are tokens too, a transformer mixes them,
  and a head maps each variable's token to a deterministic forecast ``y_det`` (in RevIN
  units). The variable tokens are also the condition of the denoiser. With
  ``reads_features=True`` the stored DWT prompt features of each row (energy ratios,
  entropy, band trends and deviations, SNR, volatility, difficulty) are projected and added
  to that variable's token.
* **Denoiser** — a 1D U-Net over the horizon, one row per variable (input channels: the noisy
  residual and ``y_det``), every block modulated by FiLM from the diffusion step's embedding
  plus the variable's condition token. From the noised residual ``r = y − y_det`` (RevIN
  units) it predicts the clean residual — or, with ``objective="eps"``, the noise.
* **Schedule** — cosine (Nichol & Dhariwal 2021), ``steps`` diffusion steps; DDPM training
  (the prediction's MSE at a uniformly drawn step) plus the deterministic forecast's MSE
  weighted by ``det_weight``.

**Sampling** (:meth:`DiffusionForecaster.sample`): DDIM (default 50 steps, ``eta=0``:
deterministic given the initial noise; timesteps ``range(0, T, T // S)[::-1]``, ``ᾱ_prev = 1``
at the last step, x0 clamped to ±``clip_x0``) or ancestral DDPM over all ``steps`` with
``σ_t = sqrt(β_t)``. The S samples of every window are folded into the batch (sample-major:
row ``s·B·V + b·V + v``) and denoised ``chunk_rows`` rows at a time, so memory is bounded by
the chunk, never by S, and no Python loop runs over samples. The initial noise of all S·B·V
rows is drawn at once, and the noise of each later step (DDPM, DDIM with ``eta > 0``) from
one generator per block of 128 rows, seeded from the caller's: a generator gives the same
samples for any chunk size, stochastic samplers too. On the CPU the chunks run side by side on
``torch.get_num_threads()`` threads, one torch thread each (a chunk is too small for torch's
own threads), with the same samples as on one thread.

**Scores**: ``mse`` / ``mae`` of the samples' median (``torch.median``, as CSDI), ``mse_det``
of the deterministic forecast, and CRPS in the four forms of :mod:`tsfs.training.metrics`
(``crps`` properscoring's ensemble form — the monitored one —, ``crps_fair``,
``crps_quantile`` the CSDI/GluonTS normalised form, ``crps_sum``), all on the scaled values,
with ``n_samples`` samples per window (small by default: scoring samples every window of a
split).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from tsfs._allocator import keep_freed_memory
from tsfs._threads import one_torch_thread
from tsfs.errors import InputError
from tsfs.training.data import Batch
from tsfs.training.metrics import crps_scores, quantile_loss
from tsfs.training.models.base import DataInfo, Scores, Task
from tsfs.training.models.layers import (
    TransformerEncoder,
    forecast_scores,
    require_divisible,
    require_positive,
    revin,
)

__all__ = [
    "DWT_FEATURES",
    "FAMILY",
    "DiffusionConfig",
    "DiffusionForecaster",
    "UNet1D",
    "cosine_schedule",
    "ddim_timesteps",
]

Sampler = Literal["ddim", "ddpm"]
Objective = Literal["x0", "eps"]

# Sampling chunks (rows): on the CPU, chunks whose activations stay in cache run ~2x faster than
# big ones (measured with benchmarks/bench_train.py); a GPU wants big launches.
_CPU_CHUNK, _GPU_CHUNK = 128, 8192
# Rows per step-noise generator: a row's noise depends on its block, never on the chunks.
_NOISE_ROWS = 128

#: The stored per-row DWT prompt features the denoiser's condition can carry.
DWT_FEATURES = (
    "energy_ratio",
    "entropy_norm",
    "band_trend",
    "band_std",
    "snr_db",
    "volatility",
    "difficulty",
)


@dataclass(frozen=True, kw_only=True)
class DiffusionConfig:
    """The diffusion family's settings (``tsfs train diffusion --config KEY=VALUE``).

    Attributes:
        d_model, n_heads, e_layers, d_ff, dropout: the iTransformer encoder.
        channels: U-Net widths, one per resolution level (the horizon is halved between).
        steps: diffusion steps T of the cosine schedule.
        objective: what the denoiser predicts: ``x0`` the clean residual (default: an
            untrained denoiser then samples ``y_det`` itself, so short runs stay sharp) or
            ``eps`` the noise (DDPM's original parametrisation).
        sampler: ``ddim`` or ``ddpm`` (all T steps).
        sample_steps: DDIM steps.
        eta: DDIM noise (0: deterministic given the initial noise).
        n_samples: samples per window when scoring (at least 2, for the fair CRPS).
        val_windows: val windows scored after each epoch, evenly spread over the split
            (0: all). Scoring samples every window ``n_samples × sample_steps`` times: all
            2,785 of ETTh1's val windows took ~2 h per epoch on a 2-core CPU at the default
            sizes, 256 take ~10 min. The test split is always scored whole.
        chunk_rows: denoiser rows (samples × windows × variables) per chunk when sampling
            (0: 128 on the CPU, where chunks that stay in cache run fastest; 8192 on a GPU).
        det_weight: weight of the deterministic forecast's MSE in the training loss.
        clip_x0: the predicted clean residual is clamped to ±this while sampling (RevIN units).
        reads_features: condition on the stored DWT features (needs ``tsfs prep features``).
    """

    d_model: int = 64
    n_heads: int = 4
    e_layers: int = 2
    d_ff: int = 128
    dropout: float = 0.1
    channels: tuple[int, ...] = (32, 64)
    steps: int = 1000
    objective: Objective = "x0"
    sampler: Sampler = "ddim"
    sample_steps: int = 50
    eta: float = 0.0
    n_samples: int = 16
    val_windows: int = 256
    chunk_rows: int = 0
    det_weight: float = 1.0
    clip_x0: float = 3.0
    reads_features: bool = False

    def __post_init__(self) -> None:
        require_positive(self, ("d_model", "n_heads", "e_layers", "d_ff", "steps", "sample_steps"))
        if self.chunk_rows < 0:
            raise InputError("diffusion config chunk_rows must be positive (or 0: automatic)")
        if self.val_windows < 0:
            raise InputError("diffusion config val_windows must be positive (or 0: all)")
        require_divisible(self, "d_model", "n_heads")
        if not self.channels or min(self.channels) < 1:
            raise InputError("diffusion config channels must be positive widths, e.g. 32,64")
        if self.objective not in ("x0", "eps"):
            raise InputError(f"diffusion config objective {self.objective!r}: choose x0 or eps")
        if self.sampler not in ("ddim", "ddpm"):
            raise InputError(f"diffusion config sampler {self.sampler!r}: choose ddim or ddpm")
        if self.sample_steps > self.steps:
            raise InputError(
                f"diffusion config sample_steps ({self.sample_steps}) exceeds steps ({self.steps})"
            )
        if self.n_samples < 2:
            raise InputError("diffusion config n_samples must be at least 2")
        # written so that NaN fails every test
        if not (
            0 <= self.dropout < 1 and self.eta >= 0 and self.clip_x0 > 0 and self.det_weight >= 0
        ):
            raise InputError(
                "diffusion config: dropout in [0, 1), eta ≥ 0, clip_x0 > 0, det_weight ≥ 0"
            )


# --------------------------------------------------------------------------------------------
# schedule


def cosine_schedule(steps: int, s: float = 0.008) -> torch.Tensor:
    """(steps,) float64 β of the cosine schedule (Nichol & Dhariwal 2021, eq. 17), ≤ 0.999.

    ``ᾱ(t) = f(t) / f(0)``, ``f(t) = cos²((t/T + s) / (1 + s) · π/2)``; ``β_t = 1 − ᾱ_t/ᾱ_{t−1}``.
    """
    t = torch.arange(steps + 1, dtype=torch.float64) / steps
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    alpha_bar = f / f[0]
    return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=0.999)


def ddim_timesteps(steps: int, sample_steps: int) -> list[int]:
    """DDIM's timesteps, last first: ``range(0, steps, steps // sample_steps)[::-1]``."""
    if not 1 <= sample_steps <= steps:
        raise InputError(f"DDIM sample_steps must be from 1 to steps ({steps}), got {sample_steps}")
    return list(range(0, steps, steps // sample_steps))[::-1]


class _StepNoise:
    """Each sampling step's noise for rows ``[start, stop)``, as the same rows of any chunking.

    Block ``k`` (rows ``128k … 128k+127``) draws from its own generator seeded ``seed + k``,
    one block per step: a chunk re-creates the generators of the blocks it touches, at its
    first draw (a deterministic sampler draws none).
    """

    def __init__(self, seed: int, start: int, stop: int, device: torch.device) -> None:
        self.seed, self.start, self.stop, self.device = seed, start, stop, device
        self.blocks: list[tuple[int, torch.Generator]] = []

    def draw(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """(stop − start, *shape) standard normal noise of the next step."""
        if not self.blocks:
            first, last = self.start // _NOISE_ROWS, -(-self.stop // _NOISE_ROWS)
            self.blocks = [
                (k * _NOISE_ROWS, torch.Generator(self.device).manual_seed(self.seed + k))
                for k in range(first, last)
            ]
        parts = []
        for origin, generator in self.blocks:
            block = torch.randn((_NOISE_ROWS, *shape), generator=generator, device=self.device)
            lo, hi = max(self.start, origin), min(self.stop, origin + _NOISE_ROWS)
            parts.append(block[lo - origin : hi - origin])
        return torch.cat(parts).to(dtype)


# --------------------------------------------------------------------------------------------
# denoiser


def _groups(channels: int) -> int:
    return math.gcd(8, channels)


def _step_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """(N,) diffusion steps → (N, dim) sinusoidal embedding (Transformer positions)."""
    half = dim // 2
    freq = torch.exp(-math.log(10000) * torch.arange(half, device=t.device) / max(half - 1, 1))
    angle = t.float()[:, None] * freq[None]
    return torch.cat([angle.sin(), angle.cos()], dim=-1)


class _FiLMBlock(nn.Module):
    """Residual conv block whose normalised activations are scaled and shifted by FiLM."""

    def __init__(self, c_in: int, c_out: int, emb: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(c_in), c_in)
        self.conv1 = nn.Conv1d(c_in, c_out, 3, padding=1)
        self.norm2 = nn.GroupNorm(_groups(c_out), c_out)
        self.film = nn.Linear(emb, 2 * c_out)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv1d(c_out, c_out, 3, padding=1)
        self.skip: nn.Module = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """(N, c_in, L), (N, emb) → (N, c_out, L)."""
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.film(emb)[..., None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        out: torch.Tensor = h + self.skip(x)
        return out


class UNet1D(nn.Module):
    """A 1D U-Net with FiLM conditioning: (N, in_channels, L) and (N, emb) → (N, 1, L).

    One level per width in ``channels``; the length is halved between levels (stride-2
    convolutions) and restored by nearest upsampling, with skip connections between levels of
    equal width. Inputs of any length are padded to a multiple of ``2^(levels−1)`` and cropped
    back. The output convolution starts at zero, so an untrained denoiser predicts no noise.
    """

    def __init__(
        self, *, in_channels: int, channels: tuple[int, ...], emb: int, dropout: float
    ) -> None:
        super().__init__()
        self.levels = len(channels)
        self.inp = nn.Conv1d(in_channels, channels[0], 3, padding=1)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        c = channels[0]
        for i, width in enumerate(channels):
            self.down.append(_FiLMBlock(c, width, emb, dropout))
            if i < self.levels - 1:
                self.downsample.append(nn.Conv1d(width, width, 3, stride=2, padding=1))
            c = width
        self.mid = _FiLMBlock(c, c, emb, dropout)
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i in reversed(range(self.levels)):
            width = channels[i]
            if i < self.levels - 1:
                self.upsample.append(nn.Conv1d(c, c, 3, padding=1))
            self.up.append(_FiLMBlock(c + width, width, emb, dropout))
            c = width
        last = nn.Conv1d(c, 1, 3, padding=1, bias=False)  # the noise has zero mean
        nn.init.zeros_(last.weight)
        self.out = nn.Sequential(nn.GroupNorm(_groups(c), c), nn.SiLU(), last)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        length = x.shape[-1]
        multiple = 2 ** (self.levels - 1)
        h = self.inp(F.pad(x, (0, -length % multiple)))
        skips = []
        for i, block in enumerate(self.down):
            h = block(h, emb)
            skips.append(h)
            if i < self.levels - 1:
                h = self.downsample[i](h)
        h = self.mid(h, emb)
        for j, block in enumerate(self.up):
            skip = skips.pop()
            if j > 0:
                h = self.upsample[j - 1](F.interpolate(h, size=skip.shape[-1], mode="nearest"))
            h = block(torch.cat([h, skip], dim=1), emb)
        out: torch.Tensor = self.out(h)[..., :length]
        return out


def _side_by_side(chain: Callable[[int], None], starts: Sequence[int], threads: int) -> None:
    """Run ``chain(start)`` for every start on ``threads`` threads, each one torch thread.

    A chunk's convolutions are too small for torch's own threads to speed up (100 samples of
    one ETTh1 window, 7 variables, 20 DDIM steps: 1.50 s on two torch threads, 1.46 s on one),
    but chunks are independent: two chains side by side on two cores take 0.79 s where one
    after the other took 1.33 s, with bit-equal samples. Grad and inference modes are per
    thread, so the caller's are carried over.
    """
    grad, inference = torch.is_grad_enabled(), torch.is_inference_mode_enabled()

    def run(start: int) -> None:
        with torch.inference_mode(inference), torch.set_grad_enabled(grad):
            chain(start)

    with one_torch_thread():
        pool = ThreadPoolExecutor(threads, thread_name_prefix="tsfs-sample")
        try:
            for future in [pool.submit(run, start) for start in starts]:
                future.result()
        finally:
            # On Ctrl-C or a failed chain, chains not yet started never start.
            pool.shutdown(wait=True, cancel_futures=True)


# --------------------------------------------------------------------------------------------
# the forecaster


class DiffusionForecaster(nn.Module):
    """The iTransformer encoder, the denoiser and the schedule; see the module docs.

    Args:
        info: the data (forecasting: ``seq_len``, ``pred_len``, ``n_vars``, ``n_marks``, and
            ``feature_names`` when conditioning on DWT features).
        config: the family's settings.
    """

    betas: torch.Tensor  # (steps,) β_t
    alpha_bar: torch.Tensor  # (steps,) ᾱ_t = Π (1 − β)

    def __init__(self, info: DataInfo, config: DiffusionConfig) -> None:
        super().__init__()
        self.info, self.config = info, config
        d, length = config.d_model, info.pred_len
        self.embed = nn.Linear(info.seq_len, d)
        self.dwt_names = tuple(n for n in DWT_FEATURES if n in info.feature_names)
        self.dwt: nn.Module | None = None
        if config.reads_features:
            if not self.dwt_names:
                raise InputError(
                    "diffusion reads_features=true needs the DWT features in the store "
                    f"({', '.join(DWT_FEATURES)}); the batches carry none of them"
                )
            width = sum(math.prod(info.feature_names[n]) for n in self.dwt_names)
            self.dwt = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, d))
        self.encoder = TransformerEncoder(
            d_model=d,
            n_heads=config.n_heads,
            n_layers=config.e_layers,
            d_ff=config.d_ff,
            dropout=config.dropout,
            max_len=info.n_vars + info.n_marks,
        )
        self.head = nn.Linear(d, length)
        emb = 4 * config.channels[0]
        self.step_mlp = nn.Sequential(
            nn.Linear(config.channels[0], emb), nn.SiLU(), nn.Linear(emb, emb)
        )
        self.condition = nn.Linear(d, emb)
        self.denoiser = UNet1D(
            in_channels=2, channels=config.channels, emb=emb, dropout=config.dropout
        )
        betas = cosine_schedule(config.steps)
        self.register_buffer("betas", betas.float(), persistent=False)
        self.register_buffer("alpha_bar", torch.cumprod(1 - betas, 0).float(), persistent=False)

    # ---- encoder ---------------------------------------------------------------------------

    def encode(self, batch: Batch) -> tuple[torch.Tensor, ...]:
        """Deterministic forecast and condition of a batch.

        Returns:
            ``(y_det, cond, mean, std)``: y_det (B, V, L) in RevIN units, cond (B, V, D) the
            variable tokens, mean and std (B, 1, V) of the RevIN normalisation.
        """
        x = batch["x"]
        z, mean, std = revin(x)
        tokens = self.embed(z.transpose(1, 2))  # (B, V, D)
        if self.dwt is not None:
            feats = batch["features"]
            b, _, v = x.shape
            parts = [feats[n].reshape(b, v, -1).float() for n in self.dwt_names]
            # SNR of a row without detail energy is infinite: keep it finite and bounded.
            dwt = torch.nan_to_num(torch.cat(parts, dim=-1), posinf=100.0, neginf=-100.0)
            tokens = tokens + self.dwt(dwt.clamp(-100.0, 100.0))
        n_vars = tokens.shape[1]
        if self.info.n_marks:
            tokens = torch.cat([tokens, self.embed(batch["x_mark"].transpose(1, 2))], dim=1)
        cond = self.encoder(tokens)[:, :n_vars]
        return self.head(cond), cond, mean, std

    def _embedding(self, cond: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        """(N, D) condition rows and (N,) or (1,) steps → (N, emb) FiLM input."""
        steps = self.step_mlp(_step_embedding(step, self.config.channels[0]))
        out: torch.Tensor = self.condition(cond) + steps
        return out

    # ---- training --------------------------------------------------------------------------

    def loss(self, batch: Batch) -> torch.Tensor:
        """DDPM's MSE (of x0 or of the noise) at a random step, + ``det_weight`` × forecast MSE."""
        y_det, cond, mean, std = self.encode(batch)
        target = ((batch["y"][:, -self.info.pred_len :] - mean) / std).transpose(1, 2)
        residual = (target - y_det.detach()).flatten(0, 1)[:, None]  # (B·V, 1, L)
        t = torch.randint(0, self.config.steps, (residual.shape[0],), device=residual.device)
        noise = torch.randn_like(residual)
        a = self.alpha_bar[t][:, None, None]
        noisy = a.sqrt() * residual + (1 - a).sqrt() * noise
        inputs = torch.cat([noisy, y_det.detach().flatten(0, 1)[:, None]], dim=1)
        predicted = self.denoiser(inputs, self._embedding(cond.flatten(0, 1), t))
        # --features MS: the forecast's loss on the target alone (the denoiser models every
        # variable's residual, the condition of the target's)
        v = slice(-1, None) if self.info.target_only else slice(None)
        det = F.mse_loss(y_det[:, v], target[:, v])
        wanted = residual if self.config.objective == "x0" else noise
        return F.mse_loss(predicted, wanted) + self.config.det_weight * det

    # ---- sampling --------------------------------------------------------------------------

    @torch.no_grad()
    def sample(
        self,
        batch: Batch,
        *,
        n_samples: int = 100,
        sampler: Sampler | None = None,
        sample_steps: int | None = None,
        eta: float | None = None,
        chunk_rows: int | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw forecasts for every window of ``batch`` (settings default to the config's).

        On the CPU the process keeps freed heap memory for reuse from the first call on
        (:func:`tsfs._allocator.keep_freed_memory`): chunks of the folded batch otherwise cost
        a page fault per page of every activation, over a third of sampling's time.

        Returns:
            ``(samples, y_det)``: samples (S, B, L, V) and the deterministic forecast
            (B, L, V), in the batch's (scaled) units.
        """
        keep_freed_memory()
        cfg = self.config
        sampler = sampler or cfg.sampler
        eta = cfg.eta if eta is None else eta
        if sampler not in ("ddim", "ddpm"):
            raise InputError(f"sampler {sampler!r}: choose ddim or ddpm")
        if not (eta >= 0 and n_samples >= 1 and (chunk_rows is None or chunk_rows >= 0)):
            raise InputError(
                f"sampling needs eta ≥ 0, n_samples ≥ 1 and chunk_rows ≥ 0, got eta={eta}, "
                f"n_samples={n_samples}, chunk_rows={chunk_rows}"
            )
        y_det, cond, mean, std = self.encode(batch)
        chunk = (
            chunk_rows
            or cfg.chunk_rows
            or (_CPU_CHUNK if y_det.device.type == "cpu" else _GPU_CHUNK)
        )
        b, v, length = y_det.shape
        rows = b * v
        cond_rows, det_rows = cond.flatten(0, 1), y_det.flatten(0, 1)[:, None]
        # All initial noise at once (it is the output's size), so chunking never changes it.
        x = torch.randn((n_samples * rows, 1, length), generator=generator, device=y_det.device).to(
            y_det.dtype
        )
        if sampler == "ddim":
            timesteps = ddim_timesteps(cfg.steps, sample_steps or cfg.sample_steps)
        else:
            timesteps = list(range(cfg.steps))[::-1]
        # the step noise's seed: the caller's generator (or torch's) decides it, not the chunks
        seed = int(torch.randint(1 << 62, (), generator=generator, device=x.device))
        out = torch.empty_like(x)

        def chain(start: int) -> None:
            # Sample-major rows: row r is window-variable r mod B·V of sample r div B·V.
            stop = min(start + chunk, len(x))
            which = torch.arange(start, stop, device=x.device) % rows
            out[start:stop] = self._reverse(
                x[start:stop],
                cond_rows[which],
                det_rows[which],
                timesteps,
                ddpm=sampler == "ddpm",
                eta=eta,
                noise=_StepNoise(seed, start, stop, x.device),
            )

        starts = range(0, len(x), chunk)
        threads = min(torch.get_num_threads(), len(starts)) if x.device.type == "cpu" else 1
        if threads <= 1:
            for start in starts:
                chain(start)
        else:
            _side_by_side(chain, starts, threads)
        residual = out.reshape(n_samples, b, v, length)
        z = y_det[None] + residual
        samples = z.transpose(-1, -2) * std + mean  # (S, B, L, V)
        return samples, y_det.transpose(1, 2) * std + mean

    def _reverse(
        self,
        x: torch.Tensor,
        cond: torch.Tensor,
        y_det: torch.Tensor,
        timesteps: list[int],
        *,
        ddpm: bool,
        eta: float,
        noise: _StepNoise,
    ) -> torch.Tensor:
        """One chunk's reverse chain: (N, 1, L) noise → (N, 1, L) residual samples."""
        condition = self.condition(cond)  # the per-row part of the FiLM input, once per chunk
        clip = self.config.clip_x0
        for i, t in enumerate(timesteps):
            a_t = self.alpha_bar[t]
            if ddpm:
                a_prev = self.alpha_bar[t - 1] if t > 0 else a_t.new_ones(())
            else:
                nxt = timesteps[i + 1] if i + 1 < len(timesteps) else None
                a_prev = self.alpha_bar[nxt] if nxt is not None else a_t.new_ones(())
            step = torch.full((1,), t, device=x.device)
            emb = condition + self.step_mlp(_step_embedding(step, self.config.channels[0]))
            predicted = self.denoiser(torch.cat([x, y_det], dim=1), emb)
            if self.config.objective == "x0":
                x0 = predicted.clamp(-clip, clip)
            else:
                x0 = ((x - (1 - a_t).sqrt() * predicted) / a_t.sqrt()).clamp(-clip, clip)
            if ddpm:
                beta = self.betas[t]
                x = (a_prev.sqrt() * beta * x0 + (1 - beta).sqrt() * (1 - a_prev) * x) / (1 - a_t)
                sigma = beta.sqrt() if t > 0 else beta.new_zeros(())
            else:
                # The noise direction: the predicted noise itself where the denoiser predicts
                # it, as the iTransformerDiffusion fork's sample_ddim_batch (its x0 alone is
                # clamped); else the noise that the clamped x0 implies.
                if self.config.objective == "eps":
                    eps = predicted
                else:
                    eps = (x - a_t.sqrt() * x0) / (1 - a_t).sqrt()
                sigma = eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)).sqrt()
                x = a_prev.sqrt() * x0 + (1 - a_prev - sigma**2).clamp(min=0).sqrt() * eps
            if (t > 0) if ddpm else eta > 0:
                x = x + sigma * noise.draw(tuple(x.shape[1:]), x.dtype)
        return x


# --------------------------------------------------------------------------------------------
# the family


def _net(model: nn.Module) -> DiffusionForecaster:
    if not isinstance(model, DiffusionForecaster):
        raise TypeError(f"the diffusion family trains DiffusionForecaster, not {type(model)}")
    return model


class _Diffusion:
    name = "diffusion"
    config_type: type[Any] = DiffusionConfig
    tasks: tuple[Task, ...] = ("forecast",)
    reads_features = False  # unless the config's reads_features asks for DWT conditioning
    reads_images = False
    image_output = "float"
    monitor = "crps"

    def build(self, info: DataInfo, config: Any) -> nn.Module:
        return DiffusionForecaster(info, config)

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        return _net(model).loss(batch)

    def score(self, model: nn.Module, batch: Batch) -> Scores:
        net = _net(model)
        samples, y_det = net.sample(batch, n_samples=net.config.n_samples)
        only = net.info.target_only
        v = slice(-1, None) if only else slice(None)  # --features MS: the target alone
        samples = samples[..., v].float()
        y = batch["y"][:, -net.info.pred_len :, v].float()
        scores = dict(forecast_scores(samples.median(dim=0).values, y))
        scores["mse_det"] = forecast_scores(y_det, batch["y"], target_only=only)["mse"]
        n = y.numel()
        total = y.sum(dim=-1)
        crps = crps_scores(samples, y)  # one sort of the samples for the three forms
        scores |= {
            "crps": (crps["ensemble"].sum(), n),
            "crps_fair": (crps["fair"].sum(), n),
            # Ratios over the split: numerator and normaliser add up over batches.
            "crps_quantile": (crps["quantile_loss"], float(y.abs().sum())),
            "crps_sum": (quantile_loss(samples.sum(dim=-1), total), float(total.abs().sum())),
        }
        return scores


FAMILY = _Diffusion()
