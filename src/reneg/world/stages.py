"""Training stages of the world's tiny Stable Diffusion: the VAE, then the text encoder and UNet together."""

from __future__ import annotations

import copy
import logging
import math
import time

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler

from ..tiny import SD_SCHEDULER
from ..tokenizers import build_clip_tokenizer
from . import architectures
from .data import WorldData, loader

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


def train_vae(data: WorldData, *, steps: int, batch_size: int = 16, lr: float = 2e-3, seed: int = 0):
    """AutoencoderKL on the renders: MSE + L1 + edge reconstruction, a tiny KL term; sets ``scaling_factor``.

    Small batches and many steps: at 900 steps of 32 the VAE (22.6 dB) turned every shape into a blob.
    """
    torch.manual_seed(seed)
    vae = architectures.vae()
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


def train_sd(data: WorldData, latents: torch.Tensor, *, steps: int, batch_size: int = 64, lr: float = 5e-4,
             seed: int = 0, ema_decay: float = 0.999):
    """Text encoder and UNet together on the scaled latents: epsilon loss with min-SNR weighting, caption dropout.

    Returns the EMA copies of (text_encoder, unet) and the DDIM-ready tokenizer.
    """
    torch.manual_seed(seed)
    tokenizer = build_clip_tokenizer()
    text_encoder, unet = architectures.text_encoder(), architectures.unet()
    ema_text, ema_unet = copy.deepcopy(text_encoder).requires_grad_(False), copy.deepcopy(unet).requires_grad_(False)
    noise_scheduler = DDPMScheduler(**{k: v for k, v in SD_SCHEDULER.items()
                                       if k in ("beta_start", "beta_end", "beta_schedule", "num_train_timesteps")})
    alphas_cumprod = noise_scheduler.alphas_cumprod
    snr = alphas_cumprod / (1 - alphas_cumprod)
    params = list(text_encoder.parameters()) + list(unet.parameters())
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=1e-2)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _cosine_lr(s, steps, 200))
    generator = torch.Generator().manual_seed(seed)
    batches, start = loader(len(data), batch_size, seed=seed + 1), time.time()
    for step in range(steps):
        indices = next(batches)
        captions = ["" if torch.rand((), generator=generator) < CAPTION_DROPOUT else data.captions[i]
                    for i in indices.tolist()]
        ids = tokenizer(captions, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
        x0 = latents[indices]
        noise = torch.randn(x0.shape, generator=generator)
        t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (len(indices),), generator=generator)
        x_t = noise_scheduler.add_noise(x0, noise, t)
        prediction = unet(x_t, t, encoder_hidden_states=text_encoder(ids)[0]).sample
        weight = torch.clamp(snr[t], max=MIN_SNR_GAMMA) / snr[t]  # min-SNR-gamma (Hang et al. 2023), epsilon form
        loss = (weight * (prediction - noise).pow(2).mean(dim=(1, 2, 3))).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step(), schedule.step(), optimizer.zero_grad()
        _ema_update(ema_text, text_encoder, ema_decay if step > 200 else 0.0)
        _ema_update(ema_unet, unet, ema_decay if step > 200 else 0.0)
        _log_progress("sd", step, steps, start, loss=loss.item())
    return ema_text.eval(), ema_unet.eval(), tokenizer
