"""The ControlNet family: a negative transfers to StableDiffusionControlNetPipeline (ReNeg Table 5) and is learned on it."""

import json

import numpy as np
import pytest
import torch
from diffusers import ControlNetModel, DDIMScheduler, StableDiffusionControlNetPipeline
from PIL import Image

from reneg.cli import main
from reneg.embedding import NegativeEmbedding
from reneg.models.tiny import tiny_sd_pipeline

PROMPTS = ["a red circle on a blue background", "a yellow star on a black background"]


@pytest.fixture(scope="module")
def controlnet_dir(tmp_path_factory):
    """A tiny random-weight SD + ControlNet pipeline saved with save_pretrained (ControlNet residuals non-zero)."""
    sd = tiny_sd_pipeline()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        controlnet = ControlNetModel.from_unet(sd.unet, conditioning_embedding_out_channels=(8, 8, 8, 8))
        for name, parameter in controlnet.named_parameters():  # zero-initialised convs would hide the residuals
            if "zero_conv" in name or "controlnet_" in name:
                parameter.data.normal_(0, 0.2)
    pipe = StableDiffusionControlNetPipeline(vae=sd.vae, text_encoder=sd.text_encoder, tokenizer=sd.tokenizer,
                                             unet=sd.unet, controlnet=controlnet, scheduler=sd.scheduler,
                                             safety_checker=None, feature_extractor=None,
                                             requires_safety_checker=False)
    directory = tmp_path_factory.mktemp("tiny-controlnet")
    pipe.save_pretrained(directory)
    return directory


@pytest.fixture()
def control_image(tmp_path):
    array = np.zeros((48, 48, 3), np.uint8)
    array[8:40, 12:36] = 255  # a white block: resized to the resolution as prepare_image does
    path = tmp_path / "control.png"
    Image.fromarray(array).save(path)
    return path


def _diffusers_images(directory, negative, control, *, seed, steps, guidance_scale):
    pipe = StableDiffusionControlNetPipeline.from_pretrained(directory, safety_checker=None,
                                                             requires_safety_checker=False)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    embeds = negative.expand(len(PROMPTS))
    return pipe(PROMPTS, image=Image.open(control), height=64, width=64, negative_prompt_embeds=embeds,
                num_inference_steps=steps,
                guidance_scale=guidance_scale, generator=torch.Generator().manual_seed(seed),
                output_type="np").images


def _generate(directory, out, *extra):
    args = ["generate", "--model", str(directory), "--seed", "5", "--steps", "4", "--guidance-scale", "6.0",
            "--device", "cpu", "--out", str(out), *extra]
    for prompt in PROMPTS:
        args += ["--prompt", prompt]
    return main(args)


def test_generate_matches_the_controlnet_pipeline(controlnet_dir, control_image, tmp_path):
    """Same pixels (<= 2/255) as diffusers' ControlNet pipeline with the same negative_prompt_embeds and seed."""
    torch.manual_seed(0)
    negative = NegativeEmbedding(torch.randn(77, 32), {})
    file = tmp_path / "neg.safetensors"
    negative.save(file)
    with pytest.warns(UserWarning, match="fingerprint"):
        assert _generate(controlnet_dir, tmp_path / "out", "--negative", str(file),
                         "--control-image", str(control_image)) == 0
    record = json.loads((tmp_path / "out" / "generation.json").read_text())
    ours = np.stack([np.asarray(Image.open(tmp_path / "out" / item["file"])) / 255.0 for item in record["images"]])
    theirs = _diffusers_images(controlnet_dir, negative, control_image, seed=5, steps=4, guidance_scale=6.0)
    assert ours.shape == theirs.shape == (2, 64, 64, 3)
    assert np.abs(ours - theirs).max() <= 2 / 255
    assert record["control_image"] == str(control_image)
    # the control image matters: another one gives other pixels
    other = tmp_path / "other.png"
    Image.fromarray(255 - np.asarray(Image.open(control_image))).save(other)
    assert _generate(controlnet_dir, tmp_path / "out2", "--negative", str(file), "--control-image", str(other)) == 0
    record2 = json.loads((tmp_path / "out2" / "generation.json").read_text())
    ours2 = np.stack([np.asarray(Image.open(tmp_path / "out2" / item["file"])) / 255.0 for item in record2["images"]])
    assert np.abs(ours - ours2).max() > 2 / 255


def test_train_end_to_end_on_a_controlnet(controlnet_dir, control_image, tmp_path):
    out = tmp_path / "neg.safetensors"
    assert main(["train", "--model", str(controlnet_dir), "--control-image", str(control_image), "--reward",
                 "contrast", "--prompt", PROMPTS[0], "--prompt", PROMPTS[1], "--train-steps", "2",
                 "--batch-size", "2", "--steps", "3", "--validate-every", "0", "--device", "cpu",
                 "--out", str(out)]) == 0
    learned = NegativeEmbedding.load(out)
    assert learned.tensor.shape == (77, 32) and torch.isfinite(learned.tensor).all()
    assert _generate(controlnet_dir, tmp_path / "gen", "--negative", str(out),
                     "--control-image", str(control_image)) == 0


@pytest.mark.parametrize("case", ["missing", "sd", "not-an-image", "no-file"])
def test_control_image_bad_input_is_one_line(case, controlnet_dir, tmp_path, capsys):
    junk = tmp_path / "junk.png"
    junk.write_text("not an image")
    model, extra, needle = {
        "missing": (controlnet_dir, [], "needs a control image"),
        "sd": ("tiny", ["--control-image", str(junk)], "ControlNet pipelines only"),
        "not-an-image": (controlnet_dir, ["--control-image", str(junk)], "cannot be read"),
        "no-file": (controlnet_dir, ["--control-image", str(tmp_path / "none.png")], "does not exist"),
    }[case]
    assert _generate(model, tmp_path / "out", *extra) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_eval_on_a_controlnet_records_the_control_image(controlnet_dir, control_image, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    args = ["eval", "--model", str(controlnet_dir), "--control-image", str(control_image), "--prompts", str(prompts),
            "--methods", "null,handcrafted", "--metrics", "contrast", "--steps", "2", "--device", "cpu",
            "--out", str(tmp_path / "eval")]
    assert main(args) == 0
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert set(results["methods"]) >= {"null", "handcrafted"}
    assert "control_image" in json.dumps(results["settings"])
    # another control image under the same --out is another run's settings: refused, not mixed
    other = tmp_path / "other.png"
    Image.fromarray(255 - np.asarray(Image.open(control_image))).save(other)
    assert main(args[:4] + [str(other)] + args[5:]) == 2
