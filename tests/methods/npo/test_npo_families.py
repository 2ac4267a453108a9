"""Diffusion-NPO on every family that runs CFG: SDXL, SD3, AnimateDiff, TextToVideoSD (issue 32)."""

import pytest

from reneg.cli import main


@pytest.fixture(params=["tiny-sdxl", "tiny-sd3", "animatediff", "text-to-video"])
def family_model(request, animatediff_dir, text_to_video_dir):
    return {"animatediff": str(animatediff_dir), "text-to-video": str(text_to_video_dir)}.get(request.param,
                                                                                             request.param)


def test_npo_trains_and_generates(family_model, tmp_path):
    common = ["--model", family_model, "--device", "cpu", "--steps", "2"]
    assert main(["npo", *common, "--reward", "contrast", "--train-steps", "1", "--batch-size", "1", "--rank", "2",
                 "--prompt", "a red circle", "--out", str(tmp_path / "delta")]) == 0
    assert main(["generate", *common, "--prompt", "a red circle", "--npo", str(tmp_path / "delta"),
                 "--out", str(tmp_path / "images")]) == 0


@pytest.mark.parametrize("kind", ["animatediff", "text-to-video"])
def test_one_call_equals_separate_calls_on_video(kind, animatediff_dir, text_to_video_dir, tmp_path):
    """Frames folded into the batch (spatial layers) and pixels folded into it (motion / temporal layers): each
    branch's rows still run their own adapter in the one batched call."""
    import torch
    from peft import LoraConfig

    from reneg.core.denoiser import AdapterWeights, Branch, GuidedDenoiser
    from reneg.methods.npo.weights import install_npo, save_adapter
    from reneg.models.loading import load_model

    from reneg.methods.npo.weights import with_adapter_api

    model = load_model(str(animatediff_dir if kind == "animatediff" else text_to_video_dir))
    pipe, unet = model.pipe, with_adapter_api(model.pipe.unet)
    torch.manual_seed(0)
    targets = ["to_q", "to_k", "to_v", "to_out.0"]  # spatial and motion attention alike
    unet.add_adapter(LoraConfig(r=2, lora_alpha=2, target_modules=targets, init_lora_weights=False), adapter_name="d")
    save_adapter(unet, "d", tmp_path / "delta", {"route": "test"})
    unet.delete_adapters("d")
    weights = install_npo(pipe, npo=tmp_path / "delta", beta=0.7)
    delta_name = next(n for n in unet.peft_config if n.startswith("lora_"))
    family = model.family
    x = family.initial_latents(2, resolution=model.resolution, generator=torch.Generator().manual_seed(0))
    t = torch.tensor(500)
    cond = family.conditioning(family.encode(["a red circle", "a blue square"]), resolution=model.resolution)
    negative = family.conditioning(family.null_text().expand(2), resolution=model.resolution)
    unet = family.model
    cond_weights, negative_weights = weights.branch_weights()
    with torch.no_grad():
        one = GuidedDenoiser(unet, {"negative": Branch(negative, negative_weights),
                                    "cond": Branch(cond, cond_weights)}).outputs(x, t, ("negative", "cond"))
        separate_negative = AdapterWeights((delta_name,), (0.7,)).forward(unet, x, t, negative)
        base_cond = AdapterWeights((delta_name,), (0.0,)).forward(unet, x, t, cond)
    assert torch.allclose(one["negative"], separate_negative, atol=1e-5)
    assert torch.allclose(one["cond"], base_cond, atol=1e-5)
    assert (separate_negative - base_cond).abs().max() > 1e-4
