"""The SD3 family on a tiny random-weight StableDiffusion3Pipeline (CLIP-L/G-like, T5, MM-DiT, flow matching)."""

import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline
from family_checks import (
    check_gradient_matches_finite_differences,
    diffusers_images,
    learned_after_a_short_training,
    random_negative,
    refusal_line,
    reneg_generate,
)

from reneg.core.guidance import predict_x0_flow
from reneg.families import family_for
from reneg.models.loading import load_model
from reneg.models.tiny import tiny_sd3_pipeline, tiny_sdxl_pipeline


def test_flow_prediction_is_the_euler_step_to_sigma_zero():
    """x0 = x_t - sigma_t * v is where one Euler step from sigma_t lands at sigma = 0 (the scheduler's last step)."""
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    scheduler.set_timesteps(4)
    scheduler.set_begin_index(3)
    generator = torch.Generator().manual_seed(0)
    x_t, v = torch.randn(2, 4, 8, 8, generator=generator), torch.randn(2, 4, 8, 8, generator=generator)
    t = scheduler.timesteps[3]
    assert scheduler.sigmas[4] == 0
    stepped = scheduler.step(v, t, x_t, return_dict=False)[0]
    assert torch.allclose(predict_x0_flow(v, x_t, scheduler.sigmas[3]), stepped, atol=1e-6)


def test_family_sigma_follows_the_schedule():
    family = family_for(load_model("tiny-sd3").pipe)
    family.scheduler.set_timesteps(5)
    for index, t in enumerate(family.scheduler.timesteps):
        assert family.sigma(t) == family.scheduler.sigmas[index]


def test_null_text_is_diffusers_default_negative():
    pipe = tiny_sd3_pipeline()
    null = family_for(pipe).null_text()
    with torch.no_grad():  # as the pipeline's __call__ (kernels under autograd may round differently)
        _, negative, _, negative_pooled = pipe.encode_prompt("a prompt", None, None, device="cpu",
                                                             negative_prompt=None)
    assert null.embeds.shape == (1, 77 + 256, 64) and null.pooled.shape == (1, 64)
    assert torch.equal(null.embeds, negative) and torch.equal(null.pooled, negative_pooled)


def test_generate_matches_diffusers(sd3_dir, tmp_path):
    """`reneg generate --negative` equals the pipeline (its own flow-matching Euler) with the same embeddings."""
    pipe = StableDiffusion3Pipeline.from_pretrained(sd3_dir)
    negative = random_negative(family_for(pipe))
    negative.save(tmp_path / "neg.safetensors")
    ours, record = reneg_generate(sd3_dir, tmp_path / "neg.safetensors", tmp_path / "out", seed=7, steps=6,
                                  guidance_scale=6.0)
    theirs = diffusers_images(pipe, negative, seed=7, steps=6, guidance_scale=6.0, rows=2 * 2)
    assert ours.shape == theirs.shape == (4, 64, 64, 3)
    assert np.abs(ours - theirs).max() <= 2 / 255
    assert record["scheduler"] == "FlowMatchEuler"


def test_gradient_matches_finite_differences():
    check_gradient_matches_finite_differences(load_model("tiny-sd3", dtype=torch.float64).pipe)


def test_train_raises_a_tiny_reward_and_writes_the_pooled_part(tmp_path):
    """10 steps of `reneg train` on the tiny SD3 raise a tiny PickScore of fully sampled images."""
    learned = learned_after_a_short_training("tiny-sd3", tmp_path)
    assert learned.shape == (333, 64) and learned.pooled.shape == (64,)
    assert learned.metadata["family"] == "sd3"


def test_sd3_embedding_on_sdxl_and_the_reverse_are_refused(sd3_dir, tmp_path, capsys):
    sd3_neg = random_negative(family_for(tiny_sd3_pipeline()), metadata={"family": "sd3"})
    sd3_neg.save(tmp_path / "sd3.safetensors")
    line = refusal_line(capsys, ["generate", "--model", "tiny-sdxl", "--negative", str(tmp_path / "sd3.safetensors"),
                                 "--prompt", "x", "--steps", "2", "--device", "cpu", "--out", str(tmp_path / "a")])
    assert "sd3 text encoder(s) CLIPTextModelWithProjection + CLIPTextModelWithProjection + T5EncoderModel" in line
    assert "CLIPTextModel + CLIPTextModelWithProjection needs shape (77, 64) + pooled (32,)" in line
    xl_neg = random_negative(family_for(tiny_sdxl_pipeline()), metadata={"family": "sdxl"})
    xl_neg.save(tmp_path / "xl.safetensors")
    line = refusal_line(capsys, ["generate", "--model", str(sd3_dir), "--negative", str(tmp_path / "xl.safetensors"),
                                 "--prompt", "x", "--steps", "2", "--device", "cpu", "--out", str(tmp_path / "b")])
    assert "(333, 64) + pooled (64,)" in line and "T5EncoderModel" in line

