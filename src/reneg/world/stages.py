"""Training stages of the world's tiny Stable Diffusion: the VAE, then the text encoder and UNet together."""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler

from ..models.tiny import SD_SCHEDULER
from ..models.tokenizers import build_clip_tokenizer
from . import architectures
from .data import WorldData, loader
from .vocab import TEXT_LENGTH

logger = logging.getLogger("reneg.world")
CAPTION_DROPOUT = 0.1  # share of captions replaced by "" so that CFG works
MIN_SNR_GAMMA = 5.0


def _cosine_lr(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup))) * 0.9 + 0.1


def _log_progress(stage: str, step: int, total: int, start: float, **values) -> None:
    if step % max(1, total // 20) == 0 or step == total - 1:
        elapsed = time.time() - start
        eta = elapsed / (step + 1) * (total - step - 1)
        text = "  ".join(f"{k} {v:.4f}" for k, v in values.items())
        logger.info("[%s] step %d/%d  %s  (%.0fs, eta %.0fs)", stage, step + 1, total, text, elapsed, eta)


def _edge_l1(recon: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """L1 between horizontal and vertical image gradients: keeps the shapes' edges (MSE alone blurs them)."""
    dx = lambda x: x[..., :, 1:] - x[..., :, :-1]  # noqa: E731
    dy = lambda x: x[..., 1:, :] - x[..., :-1, :]  # noqa: E731
    return F.l1_loss(dx(recon), dx(images)) + F.l1_loss(dy(recon), dy(images))


def train_vae(data: WorldData, *, steps: int, batch_size: int = 16, lr: float = 2e-3, seed: int = 0,
              channels: tuple[int, ...] = (16, 32, 64, 64), start=None):
    """AutoencoderKL on the renders: MSE + L1 + edge reconstruction, a tiny KL term; sets ``scaling_factor``.

    Small batches and many steps: at 900 steps of 32 the VAE (22.6 dB) turned every shape into a blob.
    With ``start`` (a trained AutoencoderKL) a copy of it is fine-tuned instead (a warm-start build).
    """
    torch.manual_seed(seed)
    vae = architectures.vae(channels) if start is None else copy.deepcopy(start).float().train().requires_grad_(True)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _cosine_lr(s, steps, 100))
    batches, start = loader(len(data), batch_size, seed=seed), time.time()
    for step in range(steps):
        images, _ = data.batch(next(batches))
        posterior = vae.encode(images).latent_dist
        recon = vae.decode(posterior.sample()).sample
        loss = (F.mse_loss(recon, images) + 0.5 * F.l1_loss(recon, images) + 0.5 * _edge_l1(recon, images)
                + 1e-6 * posterior.kl().mean())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step(), schedule.step(), optimizer.zero_grad()
        _log_progress("vae", step, steps, start, loss=loss.item())
    vae.eval().requires_grad_(False)
    latents = encode(vae, data, count=min(len(data), 4096))
    vae.register_to_config(scaling_factor=float(1 / latents.std()))
    return vae


def finetune_decoder(vae, data: WorldData, *, steps: int, batch_size: int = 16, lr: float = 5e-4, seed: int = 0):
    """A copy of ``vae`` with its decoder (and ``post_quant_conv``) fine-tuned on the posterior means, the encoder
    frozen, so that the latents, and everything trained on them, stay as they are (Stable Diffusion's ft-MSE VAE
    is made the same way). The loss is :func:`train_vae`'s reconstruction terms; the scaling factor is kept."""
    torch.manual_seed(seed)
    vae = copy.deepcopy(vae).float().eval().requires_grad_(False)
    params = [*vae.decoder.parameters(), *vae.post_quant_conv.parameters()]
    for param in params:
        param.requires_grad_(True)
    vae.decoder.train()
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _cosine_lr(s, steps, 100))
    batches, start = loader(len(data), batch_size, seed=seed), time.time()
    for step in range(steps):
        images, _ = data.batch(next(batches))
        with torch.no_grad():
            latents = vae.encode(images).latent_dist.mean
        recon = vae.decode(latents).sample
        loss = F.mse_loss(recon, images) + 0.5 * F.l1_loss(recon, images) + 0.5 * _edge_l1(recon, images)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step(), schedule.step(), optimizer.zero_grad()
        _log_progress("vae-decoder", step, steps, start, loss=loss.item())
    return vae.eval().requires_grad_(False)


@torch.no_grad()
def encode(vae, data: WorldData, *, count: int | None = None, batch_size: int = 256) -> torch.Tensor:
    """Posterior means of the first ``count`` images (unscaled latents)."""
    count = count or len(data)
    chunks = []
    for start in range(0, count, batch_size):
        images, _ = data.batch(torch.arange(start, min(count, start + batch_size)))
        chunks.append(vae.encode(images).latent_dist.mean)
    return torch.cat(chunks)


@torch.no_grad()
def psnr(vae, data: WorldData) -> float:
    """Mean reconstruction PSNR (dB) over the images of ``data``, pixel range [0, 1]."""
    images, _ = data.batch(torch.arange(len(data)))
    recon = vae.decode(vae.encode(images).latent_dist.mean).sample.clamp(-1, 1)
    mse = ((recon - images) / 2).pow(2).mean(dim=(1, 2, 3))
    return float((10 * torch.log10(1 / mse)).mean())


def _ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    with torch.no_grad():
        for e, p in zip(ema.parameters(), model.parameters()):
            e.lerp_(p, 1 - decay)


@dataclass(frozen=True)
class SDRecipe:
    """How the world's text encoder and UNet are trained (each field measured on a short run: docs/world.md)."""

    batch_size: int = 64
    lr: float = 5e-4
    warmup: int = 200
    ema_decay: float = 0.999
    prediction_type: str = "epsilon"  # or "v_prediction"
    min_snr_gamma: float | None = MIN_SNR_GAMMA
    text_length: int = TEXT_LENGTH


def _target(scheduler: DDPMScheduler, x0, noise, t, prediction_type: str) -> torch.Tensor:
    return noise if prediction_type == "epsilon" else scheduler.get_velocity(x0, noise, t)


def _loss_weight(snr: torch.Tensor, recipe: SDRecipe) -> torch.Tensor:
    """min-SNR-gamma (Hang et al. 2023): min(SNR, gamma) / SNR for epsilon, min(SNR, gamma) / (SNR + 1) for v."""
    if recipe.min_snr_gamma is None:
        return torch.ones_like(snr)
    clipped = torch.clamp(snr, max=recipe.min_snr_gamma)
    return clipped / snr if recipe.prediction_type == "epsilon" else clipped / (snr + 1)


def train_sd(data: WorldData, latents: torch.Tensor, *, steps: int, seed: int = 0, recipe: SDRecipe = SDRecipe(),
             checkpoint: Path | None = None, checkpoint_every: int = 250,
             start: tuple[torch.nn.Module, torch.nn.Module] | None = None, schedule_steps: int | None = None):
    """Text encoder and UNet together on the scaled latents: min-SNR-weighted loss, caption dropout, EMA.

    From scratch, or with ``start`` = (text_encoder, unet) a warm restart of trained models (the world's
    second sd phase, v3.1): copies of them train under a fresh optimizer, and the EMA starts at them from
    the first step (from scratch it follows the weights through the warm-up). The learning rate follows a
    cosine over ``schedule_steps`` (default ``steps``; a longer one is stopped part way).
    With ``checkpoint``, the whole state (models, EMA copies, optimizer, schedule, random streams) is saved
    there every ``checkpoint_every`` steps, and a run that finds one resumes from it and draws what an
    uninterrupted run would. Returns the EMA copies of (text_encoder, unet) and the tokenizer.
    """
    torch.manual_seed(seed)
    tokenizer = build_clip_tokenizer(model_max_length=recipe.text_length)
    if start is None:
        text_encoder, unet = architectures.text_encoder(recipe.text_length), architectures.unet()
    else:
        text_encoder, unet = (copy.deepcopy(module).train().requires_grad_(True) for module in start)
    ema_text, ema_unet = copy.deepcopy(text_encoder).requires_grad_(False), copy.deepcopy(unet).requires_grad_(False)
    schedule_steps = schedule_steps or steps
    ema_after = recipe.warmup if start is None else -1  # the EMA copies the weights until this step
    settings = {"steps": steps, "schedule_steps": schedule_steps, "restart": start is not None,
                "recipe": dataclasses.asdict(recipe)}
    noise_scheduler = DDPMScheduler(**{k: v for k, v in SD_SCHEDULER.items()
                                       if k in ("beta_start", "beta_end", "beta_schedule", "num_train_timesteps")},
                                    prediction_type=recipe.prediction_type)
    alphas_cumprod = noise_scheduler.alphas_cumprod
    snr = alphas_cumprod / (1 - alphas_cumprod)
    params = list(text_encoder.parameters()) + list(unet.parameters())
    optimizer = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=1e-2)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _cosine_lr(s, schedule_steps, recipe.warmup))
    generator = torch.Generator().manual_seed(seed)
    batches, first, began = loader(len(data), recipe.batch_size, seed=seed + 1), 0, time.time()
    modules = {"text_encoder": text_encoder, "unet": unet, "ema_text": ema_text, "ema_unet": ema_unet,
               "optimizer": optimizer, "schedule": schedule}
    if checkpoint is not None and checkpoint.exists():
        state = torch.load(checkpoint, weights_only=True)  # tensors, numbers and strings: nothing is unpickled
        if {key: state.get(key) for key in settings} != settings:
            raise ValueError(f"{checkpoint} is of another sd recipe: delete it to start the stage again")
        for name, module in modules.items():
            module.load_state_dict(state[name])
        generator.set_state(state["generator"])
        first = state["step"]
        for _ in range(first):  # the index stream, where the uninterrupted run would be
            next(batches)
        logger.info("[sd] resumed at step %d from %s", first, checkpoint)
    for step in range(first, steps):
        indices = next(batches)
        captions = ["" if torch.rand((), generator=generator) < CAPTION_DROPOUT else data.captions[i]
                    for i in indices.tolist()]
        ids = tokenizer(captions, padding="max_length", max_length=recipe.text_length, truncation=True,
                        return_tensors="pt").input_ids
        x0 = latents[indices]
        noise = torch.randn(x0.shape, generator=generator)
        t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (len(indices),), generator=generator)
        x_t = noise_scheduler.add_noise(x0, noise, t)
        prediction = unet(x_t, t, encoder_hidden_states=text_encoder(ids)[0]).sample
        target = _target(noise_scheduler, x0, noise, t, recipe.prediction_type)
        loss = (_loss_weight(snr[t], recipe) * (prediction - target).pow(2).mean(dim=(1, 2, 3))).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step(), schedule.step(), optimizer.zero_grad()
        decay = recipe.ema_decay if step > ema_after else 0.0
        _ema_update(ema_text, text_encoder, decay)
        _ema_update(ema_unet, unet, decay)
        _log_progress("sd", step, steps, began, loss=loss.item())
        if checkpoint is not None and (step + 1) % checkpoint_every == 0 and step + 1 < steps:
            state = {name: module.state_dict() for name, module in modules.items()}
            state.update(step=step + 1, generator=generator.get_state(), **settings)
            torch.save(state, checkpoint.with_suffix(".tmp"))
            os.replace(checkpoint.with_suffix(".tmp"), checkpoint)
    return ema_text.eval(), ema_unet.eval(), tokenizer
