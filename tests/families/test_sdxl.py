"""The SDXL family on a tiny random-weight StableDiffusionXLPipeline (two CLIP encoders, ``text_time``)."""

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, StableDiffusionXLPipeline
from family_checks import (
    check_gradient_matches_finite_differences,
    diffusers_images,
    learned_after_a_short_training,
    random_negative,
    refusal_line,
    reneg_generate,
)

from reneg.embedding import NegativeEmbedding
from reneg.families import family_for
from reneg.models.loading import load_model
from reneg.models.tiny import tiny_sd_pipeline, tiny_sdxl_pipeline
from reneg.rewards import build_reward


@pytest.mark.parametrize("force_zeros", [True, False])
def test_null_text_is_diffusers_default_negative(force_zeros):
    pipe = tiny_sdxl_pipeline(force_zeros_for_empty_prompt=force_zeros)
    null = family_for(pipe).null_text()
    with torch.no_grad():  # as the pipeline's __call__ (kernels under autograd may round differently)
        _, negative, _, negative_pooled = pipe.encode_prompt("a prompt", device="cpu", negative_prompt=None)
    assert null.embeds.shape == (1, 77, 64) and null.pooled.shape == (1, 32)
    assert torch.equal(null.embeds, negative) and torch.equal(null.pooled, negative_pooled)
    if force_zeros:  # SDXL-base-1.0's setting: the default negative is zeros
        assert not null.embeds.any() and not null.pooled.any()
    else:  # "" through both encoders, as an explicit empty negative prompt
        _, empty, _, empty_pooled = pipe.encode_prompt("a prompt", device="cpu", negative_prompt="")
        assert torch.equal(null.embeds, empty) and torch.equal(null.pooled, empty_pooled) and null.embeds.any()


def test_time_ids_are_the_pipelines(sdxl_dir):
    pipe = StableDiffusionXLPipeline.from_pretrained(sdxl_dir)
    expected = pipe._get_add_time_ids((64, 64), (0, 0), (64, 64), dtype=torch.float32,
                                      text_encoder_projection_dim=pipe.text_encoder_2.config.projection_dim)
    assert torch.equal(family_for(pipe).time_ids(64, torch.float32), expected)


def test_generate_matches_diffusers(sdxl_dir, tmp_path):
    """`reneg generate --negative` equals the pipeline with negative_prompt_embeds + negative_pooled_prompt_embeds."""
    pipe = StableDiffusionXLPipeline.from_pretrained(sdxl_dir)
    negative = random_negative(family_for(pipe))
    negative.save(tmp_path / "neg.safetensors")
    ours, record = reneg_generate(sdxl_dir, tmp_path / "neg.safetensors", tmp_path / "out", seed=7, steps=6,
                                  guidance_scale=6.0)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    theirs = diffusers_images(pipe, negative, seed=7, steps=6, guidance_scale=6.0)
    assert ours.shape == theirs.shape == (4, 64, 64, 3)
    assert np.abs(ours - theirs).max() <= 2 / 255
    assert record["scheduler"] == "DDIM"


def test_fp16_vae_with_force_upcast_decodes_in_fp32():
    pipe = tiny_sdxl_pipeline()
    family = family_for(pipe)
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    reference = family.decode(latents)  # fp32 VAE
    pipe.vae.to(torch.float16)
    assert pipe.vae.config.force_upcast
    images = family.decode(latents.half())
    assert pipe.vae.dtype == torch.float32 and images.dtype == torch.float32
    assert (images - reference).abs().max() < 2e-2  # the weights went through fp16 once


def test_gradient_matches_finite_differences():
    check_gradient_matches_finite_differences(load_model("tiny-sdxl", dtype=torch.float64).pipe)


def test_train_raises_a_tiny_reward_and_writes_the_pooled_part(tmp_path):
    """10 steps of `reneg train` on the tiny SDXL raise a tiny PickScore of fully sampled images."""
    learned = learned_after_a_short_training("tiny-sdxl", tmp_path)
    assert learned.shape == (77, 64) and learned.pooled.shape == (32,)
    assert learned.metadata["family"] == "sdxl"
    assert learned.pooled.any()  # learned from SDXL-base's zero start


def test_sdxl_embedding_on_sd_and_the_reverse_are_refused(sdxl_dir, tiny_epsilon_dir, tmp_path, capsys):
    sdxl_neg = random_negative(family_for(StableDiffusionXLPipeline.from_pretrained(sdxl_dir)),
                               metadata={"family": "sdxl"})
    sdxl_neg.save(tmp_path / "xl.safetensors")
    line = refusal_line(capsys, ["generate", "--model", str(tiny_epsilon_dir), "--negative", str(tmp_path / "xl.safetensors"),
                                 "--prompt", "x", "--steps", "2", "--device", "cpu", "--out", str(tmp_path / "a")])
    assert "sdxl text encoder(s) CLIPTextModel + CLIPTextModelWithProjection" in line
    assert "text encoder(s) CLIPTextModel needs shape (77, 32) without a pooled part" in line
    sd_neg = NegativeEmbedding(torch.randn(77, 32), {"text_encoder_fingerprint": family_for(
        tiny_sd_pipeline()).fingerprint()})
    sd_neg.save(tmp_path / "sd.safetensors")
    line = refusal_line(capsys, ["generate", "--model", str(sdxl_dir), "--negative", str(tmp_path / "sd.safetensors"),
                                 "--prompt", "x", "--steps", "2", "--device", "cpu", "--out", str(tmp_path / "b")])
    assert "learned for text encoder(s) CLIPTextModel," in line
    assert "CLIPTextModel + CLIPTextModelWithProjection needs shape (77, 64) + pooled (32,)" in line
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.parametrize("name", ["sdxl-base-1.0.toml", "sd3.5-medium.toml"])
def test_presets_parse_into_train_config(name):
    import dataclasses
    from pathlib import Path

    from reneg.config import read_config_file
    from reneg.methods.reneg.train import TrainConfig

    values = read_config_file(Path(__file__).resolve().parents[2] / "configs" / name)
    assert set(values) <= {f.name for f in dataclasses.fields(TrainConfig)}
    config = TrainConfig(**values)
    assert (config.resolution, config.precision, config.gradient_checkpointing) == (1024, "bf16", True)
    assert config.batch_size == 64 and config.micro_batch_size == 1 and config.lr == 5e-3


@pytest.mark.parametrize("name", ["tiny-sdxl", "tiny-sd3"])
def test_gradient_checkpointing_gives_the_same_gradient(name):
    """--gradient-checkpointing recomputes activations (UNet/transformer and VAE): same loss, same gradient."""
    from reneg.methods.randomness import draw_batch
    from reneg.methods.reneg.objective import reneg_objective

    model = load_model(name)
    family = model.family
    batch = draw_batch(family, ["a red circle", "a blue square"], seed=0, step=0, indices=range(2), resolution=64,
                       steps=4, grad_window=2)
    reward = build_reward("contrast")
    grads = []
    for checkpointing in (False, True):
        if checkpointing:
            family.enable_gradient_checkpointing()
            flags = [m.gradient_checkpointing for m in family.model.modules() if hasattr(m, "gradient_checkpointing")]
            assert flags and all(flags)
        null = family.null_text()
        negative = null.embeds.clone().requires_grad_(True)
        loss, _ = reneg_objective(family, reward, batch, type(null)(negative, null.pooled), guidance_scale=5.0,
                                  steps=4, resolution=64)
        loss.backward()
        grads.append(negative.grad)
    assert grads[0].abs().sum() > 0
    assert torch.allclose(grads[0], grads[1], rtol=1e-4, atol=1e-7)
