"""The one sampler: guidance math, diffusers parity, and where gradients flow."""

import pytest
import torch
from diffusers import DDIMScheduler

from reneg.core.guidance import cfg, predict_x0
from reneg.core.sampling import CFGDenoiser, decode, initial_latents, sample
from reneg.models.loading import encode_prompts

PROMPTS = ["a red circle on a blue background", "a green star"]


def test_cfg_is_reneg_eq5():
    negative, cond = torch.tensor([1.0, -2.0]), torch.tensor([3.0, 0.5])
    assert torch.allclose(cfg(negative, cond, 7.5), negative + 7.5 * (cond - negative))
    assert torch.equal(cfg(negative, cond, 1.0), cond)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_predict_x0_matches_ddim_pred_original_sample(prediction_type):
    scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                              prediction_type=prediction_type, clip_sample=False)
    scheduler.set_timesteps(30)
    generator = torch.Generator().manual_seed(0)
    x_t, output = torch.randn(2, 4, 8, 8, generator=generator), torch.randn(2, 4, 8, 8, generator=generator)
    t = scheduler.timesteps[25]
    expected = scheduler.step(output, t, x_t).pred_original_sample
    got = predict_x0(output, x_t, scheduler.alphas_cumprod[t], prediction_type=prediction_type)
    assert torch.allclose(got, expected, atol=1e-5)


def test_batched_draws_equal_one_draw(tiny_pipe):
    """x_T drawn batch after batch from one generator equals diffusers' single draw."""
    kwargs = dict(unet=tiny_pipe.unet, scheduler=tiny_pipe.scheduler, vae_scale_factor=8, height=64, width=64)
    whole = initial_latents(4, generator=torch.Generator().manual_seed(5), **kwargs)
    generator = torch.Generator().manual_seed(5)
    parts = torch.cat([initial_latents(n, generator=generator, **kwargs) for n in (1, 3)])
    assert torch.equal(whole, parts)


def _denoiser(pipe, negative):
    prompt_embeds = encode_prompts(pipe, PROMPTS)
    return CFGDenoiser(pipe.unet, prompt_embeds, negative.unsqueeze(0).expand(len(PROMPTS), -1, -1), 7.5)


@pytest.fixture(scope="module")
def pipe64():
    """The tiny pipeline in float64, for finite differences."""
    from reneg.models.loading import load_model

    return load_model("tiny", dtype=torch.float64).pipe


def _objective(pipe, negative, *, grad_from, x_t=None, steps=6):
    """A fixed random linear function of the decoded one-step prediction."""
    latents = initial_latents(len(PROMPTS), unet=pipe.unet, scheduler=pipe.scheduler, vae_scale_factor=8,
                              height=64, width=64, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    denoiser = _denoiser(pipe, negative)
    if x_t is not None:  # the last step alone, from a frozen x_t
        pipe.scheduler.set_timesteps(steps)
        t = pipe.scheduler.timesteps[grad_from]
        x0 = predict_x0(denoiser(x_t, t), x_t, pipe.scheduler.alphas_cumprod[t])
    else:
        x0 = sample(denoiser, pipe.scheduler, latents, num_inference_steps=steps, grad_from=grad_from)
    images = decode(pipe.vae, x0)
    weights = torch.randn(images.shape, generator=torch.Generator().manual_seed(2), dtype=images.dtype)
    return (images * weights).sum()


def test_gradient_matches_finite_difference_and_stops_at_x_t(pipe64):
    from reneg.embedding import null_text_embedding

    steps, grad_from = 6, 4
    negative = null_text_embedding(pipe64).double().clone().requires_grad_(True)
    _objective(pipe64, negative, grad_from=grad_from, steps=steps).backward()
    direction = torch.randn(negative.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    analytic = (negative.grad * direction).sum().item()
    assert abs(analytic) > 0

    # x_t as the sampler reaches it with the unperturbed n (the stop-gradient point)
    captured = {}
    denoiser = _denoiser(pipe64, negative.detach())
    latents = initial_latents(len(PROMPTS), unet=pipe64.unet, scheduler=pipe64.scheduler, vae_scale_factor=8,
                              height=64, width=64, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    sample(denoiser, pipe64.scheduler, latents, num_inference_steps=steps, grad_from=grad_from,
           callback=lambda i, t, x: captured.update(x_t=x))
    h = 1e-4
    with torch.no_grad():
        plus, minus = negative + h * direction, negative - h * direction
        last_step_only = (_objective(pipe64, plus, grad_from=grad_from, x_t=captured["x_t"], steps=steps)
                          - _objective(pipe64, minus, grad_from=grad_from, x_t=captured["x_t"], steps=steps)) / (2 * h)
        whole_chain = (_objective(pipe64, plus, grad_from=grad_from, steps=steps)
                       - _objective(pipe64, minus, grad_from=grad_from, steps=steps)) / (2 * h)
    assert analytic == pytest.approx(last_step_only.item(), rel=1e-5)
    # the earlier steps do depend on n, but their gradient is not tracked (ReNeg Sec. 4.2)
    assert abs(whole_chain.item() - analytic) > 1e-3 * abs(analytic)


def test_no_gradient_reaches_earlier_latents(tiny_pipe):
    from reneg.embedding import null_text_embedding

    negative = null_text_embedding(tiny_pipe).clone().requires_grad_(True)
    x_T = initial_latents(2, unet=tiny_pipe.unet, scheduler=tiny_pipe.scheduler, vae_scale_factor=8, height=64,
                          width=64, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    x0 = sample(_denoiser(tiny_pipe, negative), tiny_pipe.scheduler, x_T, num_inference_steps=5, grad_from=3)
    x0.sum().backward()
    assert x_T.grad is None
    assert negative.grad is not None and negative.grad.abs().sum() > 0


def test_inference_builds_no_graph(tiny_pipe):
    from reneg.embedding import null_text_embedding

    negative = null_text_embedding(tiny_pipe).clone().requires_grad_(True)
    x_T = initial_latents(2, unet=tiny_pipe.unet, scheduler=tiny_pipe.scheduler, vae_scale_factor=8, height=64,
                          width=64, generator=torch.Generator().manual_seed(0))
    x0 = sample(_denoiser(tiny_pipe, negative), tiny_pipe.scheduler, x_T, num_inference_steps=3)
    assert not x0.requires_grad
