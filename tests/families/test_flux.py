"""The FLUX family on tiny random-weight FluxPipelines (CLIP pooled + T5, MM-DiT on packed latents, flow matching
with a resolution-dependent shift): dev's layout (guidance embedding) and schnell's (none, fixed shift)."""

import json

import numpy as np
import pytest
import torch
from diffusers import FluxPipeline
from family_checks import (
    PROMPTS,
    check_gradient_matches_finite_differences,
    learned_after_a_short_training,
    random_negative,
    refusal_line,
    reneg_generate,
)

from reneg.cli import main
from reneg.families import family_for
from reneg.models.loading import load_model
from reneg.models.tiny import tiny_flux_pipeline, tiny_sd3_pipeline


@pytest.fixture(scope="module", params=["dev", "schnell"])
def flux_dir(request, tmp_path_factory):
    directory = tmp_path_factory.mktemp(f"tiny-flux-{request.param}")
    tiny_flux_pipeline(schnell=request.param == "schnell").save_pretrained(directory)
    return directory


def flux_images(pipe, negative, *, seed: int, steps: int, true_cfg_scale: float):
    """``FluxPipeline``'s own images (64 px, two per prompt) with ``negative_prompt_embeds`` and
    ``negative_pooled_prompt_embeds`` (one row per image: given embeddings are not repeated), or none."""
    pipe.set_progress_bar_config(disable=True)
    rows = 2 * len(PROMPTS)
    given = {} if negative is None else dict(negative_prompt_embeds=negative.expand(rows),
                                             negative_pooled_prompt_embeds=negative.expand_pooled(rows))
    return pipe(PROMPTS, **given, true_cfg_scale=true_cfg_scale, num_images_per_prompt=2, height=64, width=64,
                num_inference_steps=steps, generator=torch.Generator().manual_seed(seed), output_type="np").images


def test_null_text_is_the_pipelines_empty_negative_prompt():
    """FluxPipeline has no default negative (``negative_prompt=None`` turns true CFG off); with
    ``negative_prompt=""`` it encodes "" as a prompt: that is the null text."""
    pipe = tiny_flux_pipeline()
    null = family_for(pipe).null_text()
    with torch.no_grad():
        embeds, pooled, _ = pipe.encode_prompt("", None, device="cpu")
    assert null.embeds.shape == (1, 512, 64) and null.pooled.shape == (1, 32)
    assert torch.equal(null.embeds, embeds) and torch.equal(null.pooled, pooled)


def test_the_schedule_is_the_pipelines_and_shifts_with_the_resolution():
    """dev: sigmas linspace(1, 1/T, T) shifted by mu of the image's token count (a larger image, later sigmas);
    schnell: a fixed shift, the same at every size."""
    pipe = tiny_flux_pipeline()
    family = family_for(pipe)
    recorded = []
    pipe.set_progress_bar_config(disable=True)
    pipe("x", num_inference_steps=5, height=64, width=64, output_type="latent",
         callback_on_step_end=lambda p, i, t, kwargs: recorded.append(t) or {})
    family.set_timesteps(5, resolution=64)
    assert torch.equal(torch.stack(recorded), family.scheduler.timesteps)
    small = family.scheduler.sigmas.clone()
    family.set_timesteps(5, resolution=256)
    assert (family.scheduler.sigmas[1:-1] > small[1:-1]).all()
    for index, t in enumerate(family.scheduler.timesteps):
        assert family.sigma(t) == family.scheduler.sigmas[index]
    schnell = family_for(tiny_flux_pipeline(schnell=True))
    schnell.set_timesteps(4, resolution=64)
    assert torch.allclose(schnell.scheduler.sigmas, torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0]))


def test_generate_matches_diffusers_true_cfg(flux_dir, tmp_path):
    """`reneg generate --negative` equals FluxPipeline's true CFG (``true_cfg_scale`` = reneg's scale, the
    distilled guidance at the pipeline's 3.5 on dev) with the same embeddings and seed."""
    pipe = FluxPipeline.from_pretrained(flux_dir)
    negative = random_negative(family_for(pipe))
    negative.save(tmp_path / "neg.safetensors")
    ours, record = reneg_generate(flux_dir, tmp_path / "neg.safetensors", tmp_path / "out", seed=7, steps=5,
                                  guidance_scale=4.0, resolution=64)
    theirs = flux_images(pipe, negative, seed=7, steps=5, true_cfg_scale=4.0)
    assert ours.shape == theirs.shape == (4, 64, 64, 3)
    assert np.abs(ours - theirs).max() <= 2 / 255
    assert record["scheduler"] == "FlowMatchEuler"


def test_generate_without_a_negative_at_scale_one_is_the_plain_pipeline(flux_dir, tmp_path):
    ours, _ = reneg_generate(flux_dir, None, tmp_path / "out", seed=3, steps=4, guidance_scale=1.0, resolution=64)
    theirs = flux_images(FluxPipeline.from_pretrained(flux_dir), None, seed=3, steps=4, true_cfg_scale=1.0)
    assert np.abs(ours - theirs).max() <= 2 / 255


def test_gradient_matches_finite_differences():
    """To 2e-3 with a step of 3e-3: diffusers' ``apply_rotary_emb`` computes in float32 even on float64 inputs, so
    the objective carries float32 rounding; at SD3's 1e-4 the differences of the sequence direction (whose
    derivative is small) are off by 0.3%, at 3e-3 by 5e-4."""
    check_gradient_matches_finite_differences(load_model("tiny-flux", dtype=torch.float64).pipe, h=3e-3, rtol=2e-3)


def test_train_raises_a_tiny_reward_and_writes_the_pooled_part(tmp_path):
    """10 steps of `reneg train` on the tiny FLUX raise a tiny PickScore of fully sampled images."""
    learned = learned_after_a_short_training("tiny-flux", tmp_path)
    assert learned.shape == (512, 64) and learned.pooled.shape == (32,)
    assert learned.metadata["family"] == "flux"


def test_eval_runs_on_schnell(tmp_path):
    assert main(["eval", "--model", "tiny-flux-schnell", "--benchmark", "tiny", "--limit", "2", "--methods",
                 "null,handcrafted", "--metrics", "contrast", "--steps", "2", "--device", "cpu",
                 "--out", str(tmp_path / "o")]) == 0
    results = json.loads((tmp_path / "o" / "results.json").read_text())
    assert list(results["methods"]) == ["null", "handcrafted"]


def test_refusals(tmp_path, capsys):
    """An SD3 embedding on FLUX names both shapes; a resolution that is not whole 16-pixel patches is refused."""
    sd3 = random_negative(family_for(tiny_sd3_pipeline()), metadata={"family": "sd3"})
    sd3.save(tmp_path / "sd3.safetensors")
    common = ["generate", "--model", "tiny-flux", "--prompt", "x", "--steps", "2", "--device", "cpu"]
    line = refusal_line(capsys, [*common, "--negative", str(tmp_path / "sd3.safetensors"),
                                 "--out", str(tmp_path / "a")])
    assert "(333, 64) + pooled (64,)" in line
    assert "CLIPTextModel + T5EncoderModel needs shape (512, 64) + pooled (32,)" in line
    assert main([*common, "--resolution", "72", "--out", str(tmp_path / "b")]) == 2  # refused at the first batch
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "--resolution 72 must be a multiple of 16" in errors[0], errors
    assert not (tmp_path / "b" / "generation.json").exists()


def test_npo_trains_and_generates(tmp_path):
    """Diffusion-NPO's LoRA sits on the FLUX transformer (behind the family's wrapper) as on SD3's."""
    common = ["--model", "tiny-flux", "--device", "cpu", "--steps", "2"]
    assert main(["npo", *common, "--reward", "contrast", "--train-steps", "1", "--batch-size", "1", "--rank", "2",
                 "--prompt", "a red circle", "--out", str(tmp_path / "delta")]) == 0
    assert main(["generate", *common, "--prompt", "a red circle", "--npo", str(tmp_path / "delta"),
                 "--out", str(tmp_path / "images")]) == 0
