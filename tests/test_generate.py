"""`reneg generate` against diffusers' own StableDiffusionPipeline with DDIM and the same seed."""

import json

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, StableDiffusionPipeline
from PIL import Image

from reneg.cli import main
from reneg.embedding import NegativeEmbedding

PROMPTS = ["a red circle on a blue background", "a yellow star on a black background"]


def _diffusers_images(directory, negative, *, seed, steps, guidance_scale, num_images=1):
    pipe = StableDiffusionPipeline.from_pretrained(directory, safety_checker=None, requires_safety_checker=False)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    embeds = negative.expand(len(PROMPTS), device=pipe.device, dtype=pipe.dtype)
    return pipe(PROMPTS, negative_prompt_embeds=embeds, num_images_per_prompt=num_images, num_inference_steps=steps,
                guidance_scale=guidance_scale, generator=torch.Generator().manual_seed(seed), output_type="np").images


def _reneg_images(out):
    record = json.loads((out / "generation.json").read_text())
    return np.stack([np.asarray(Image.open(out / item["file"])) / 255.0 for item in record["images"]]), record


@pytest.mark.parametrize("batch_size", [4, 1])
def test_generate_matches_diffusers(tiny_pipeline_dir, tmp_path, batch_size):
    """Same pixels (max diff <= 2/255) as diffusers with negative_prompt_embeds, epsilon and v-prediction."""
    torch.manual_seed(0)
    negative = NegativeEmbedding(torch.randn(77, 32), {})
    file = tmp_path / "neg.safetensors"
    negative.save(file)
    args = ["generate", "--model", str(tiny_pipeline_dir), "--negative", str(file), "--seed", "7", "--steps", "6",
            "--guidance-scale", "6.0", "--num-images", "2", "--batch-size", str(batch_size), "--device", "cpu",
            "--out", str(tmp_path / "out")]
    for prompt in PROMPTS:
        args += ["--prompt", prompt]
    with pytest.warns(UserWarning, match="fingerprint"):
        assert main(args) == 0
    ours, record = _reneg_images(tmp_path / "out")
    theirs = _diffusers_images(tiny_pipeline_dir, negative, seed=7, steps=6, guidance_scale=6.0, num_images=2)
    assert ours.shape == theirs.shape == (4, 64, 64, 3)
    assert np.abs(ours - theirs).max() <= 2 / 255
    assert record["seed"] == 7 and record["method"] == f"embedding={file}"
    assert [item["prompt"] for item in record["images"]] == [PROMPTS[0]] * 2 + [PROMPTS[1]] * 2


def test_generate_negative_prompt_matches_diffusers(tiny_epsilon_dir, tmp_path):
    args = ["generate", "--model", str(tiny_epsilon_dir), "--negative-prompt", "blurry", "--seed", "3", "--steps", "4",
            "--device", "cpu", "--out", str(tmp_path / "out"), "--prompt", PROMPTS[0], "--prompt", PROMPTS[1]]
    assert main(args) == 0
    ours, record = _reneg_images(tmp_path / "out")
    pipe = StableDiffusionPipeline.from_pretrained(tiny_epsilon_dir, safety_checker=None, requires_safety_checker=False)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    theirs = pipe(PROMPTS, negative_prompt=["blurry"] * 2, num_inference_steps=4, guidance_scale=7.5,
                  generator=torch.Generator().manual_seed(3), output_type="np").images
    assert np.abs(ours - theirs).max() <= 2 / 255
    assert record["method"] == "negative-prompt=blurry"


def test_generate_default_model_null_text(tmp_path):
    """No --model: the embedded default; null text is diffusers' negative_prompt=''."""
    assert main(["generate", "--prompt", "a red circle", "--steps", "2", "--device", "cpu",
                 "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "generation.json").read_text())
    assert record["method"] == "null" and len(record["images"]) == 1
    assert Image.open(tmp_path / record["images"][0]["file"]).size == (64, 64)


@pytest.mark.parametrize("alias, spec", [(["--negative-prompt", "blurry"], "negative-prompt=blurry"),
                                         (["--handcrafted"], "handcrafted"),
                                         (["--caption", "a blue square"], "dnp-caption=a blue square")])
def test_method_spec_gives_the_alias_flags_images(alias, spec, tmp_path):
    """`--method SPEC` and the flag that stands for it write the same PNGs and the same record."""
    common = ["generate", "--model", "tiny", "--prompt", PROMPTS[0], "--steps", "2", "--seed", "5", "--device", "cpu"]
    assert main([*common, *alias, "--out", str(tmp_path / "alias")]) == 0
    assert main([*common, "--method", spec, "--out", str(tmp_path / "spec")]) == 0
    by_alias, record = _reneg_images(tmp_path / "alias")
    by_spec, spec_record = _reneg_images(tmp_path / "spec")
    assert np.array_equal(by_alias, by_spec) and record["method"] == spec_record["method"] == spec


def test_method_spec_guidance_suffix_sets_the_guidance_scale(tmp_path):
    common = ["generate", "--model", "tiny", "--prompt", PROMPTS[0], "--steps", "2", "--device", "cpu"]
    assert main([*common, "--method", "null@3", "--out", str(tmp_path / "a")]) == 0
    assert main([*common, "--guidance-scale", "3", "--out", str(tmp_path / "b")]) == 0
    assert np.array_equal(_reneg_images(tmp_path / "a")[0], _reneg_images(tmp_path / "b")[0])
    assert json.loads((tmp_path / "a" / "generation.json").read_text())["guidance_scale"] == 3.0


@pytest.mark.parametrize("flags, needle", [
    (["--method", "null", "--handcrafted"], "--method and the flags that stand for a method"),
    (["--method", "null@3", "--guidance-scale", "4"], "sets the guidance scale and so does --guidance-scale"),
    (["--method", "nonsense"], "unknown method 'nonsense'"),
    (["--method", "embedding=/no/such.safetensors"], "does not exist"),
])
def test_bad_method_specs_are_one_line_and_exit_2(flags, needle, tmp_path, capsys):
    status = main(["generate", "--model", "tiny", "--prompt", PROMPTS[0], "--device", "cpu",
                   "--out", str(tmp_path / "out"), *flags])
    err = [line for line in capsys.readouterr().err.strip().splitlines() if "Warning" not in line]
    assert status == 2 and len(err) == 1 and needle in err[0]
    assert not (tmp_path / "out" / "generation.json").exists()


@pytest.mark.parametrize("flag, text", [("--negative-prompt", "contact @5"), ("--caption", "a star @2")])
def test_an_at_sign_in_a_flags_text_is_text(flag, text, tmp_path):
    """``@GS`` sets the guidance scale only in ``--method SPEC@GS``; in free text it is the user's character."""
    out = tmp_path / "images"
    assert main(["generate", "--model", "tiny", "--prompt", "a red circle", flag, text, "--steps", "2",
                 "--device", "cpu", "--out", str(out)]) == 0
    record = json.loads((out / "generation.json").read_text())
    assert record["method"].endswith("=" + text) and record["guidance_scale"] == 7.5
    assert main(["generate", "--model", "tiny", "--prompt", "a red circle", "--method", "null@3", "--steps", "2",
                 "--device", "cpu", "--out", str(tmp_path / "three")]) == 0
    assert json.loads((tmp_path / "three" / "generation.json").read_text())["guidance_scale"] == 3.0


def test_a_png_carries_its_parameters_and_from_png_makes_it_again_bit_for_bit(tmp_path):
    """Every generated PNG holds A1111's `parameters` and reneg's record; --from-png regenerates its batch
    (skipping the x_T of earlier batches) and keeps that one image: the same bytes."""
    from PIL import Image
    from safetensors.torch import save_file

    negative = tmp_path / "n.safetensors"
    save_file({"negative_embedding": torch.randn(77, 32, generator=torch.Generator().manual_seed(1)) * 0.1},
              str(negative))
    first = tmp_path / "first"
    assert main(["generate", "--model", "tiny", "--prompt", "a red circle", "--prompt", "a blue square",
                 "--num-images", "3", "--batch-size", "2", "--steps", "3", "--seed", "7", "--negative", str(negative),
                 "--out", str(first)]) == 0
    image = first / "00003.png"  # the second of the second batch: "a blue square"
    parameters = Image.open(image).text["parameters"]
    assert parameters.startswith("a blue square\nSteps: 3, Sampler: DDIM, CFG scale: 7.5, Seed: 7, Size: 64x64")
    again = tmp_path / "again"
    assert main(["generate", "--from-png", str(image), "--out", str(again)]) == 0
    assert (again / "00000.png").read_bytes() == image.read_bytes()
    assert json.loads((again / "generation.json").read_text())["reproduced_from"] == str(image)


def test_from_png_refuses_what_it_cannot_reproduce(tmp_path, capsys):
    from PIL import Image
    from safetensors.torch import save_file

    plain = tmp_path / "plain.png"
    Image.new("RGB", (8, 8)).save(plain)
    assert main(["generate", "--from-png", str(plain), "--out", str(tmp_path / "a")]) == 2
    assert "carries no reneg record" in capsys.readouterr().err
    negative = tmp_path / "n.safetensors"
    save_file({"negative_embedding": torch.zeros(77, 32)}, str(negative))
    made = tmp_path / "made"
    assert main(["generate", "--model", "tiny", "--prompt", "x", "--steps", "2", "--negative", str(negative),
                 "--out", str(made)]) == 0
    capsys.readouterr()
    save_file({"negative_embedding": torch.ones(77, 32)}, str(negative))  # the file changed since
    assert main(["generate", "--from-png", str(made / "00000.png"), "--out", str(tmp_path / "b")]) == 2
    assert "is missing or changed" in capsys.readouterr().err
    assert main(["generate", "--from-png", str(made / "00000.png"), "--prompt", "y", "--out", str(tmp_path / "c")]) == 2
    assert "drop --prompt" in capsys.readouterr().err
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()


def test_eval_images_carry_a1111_parameters(tmp_path):
    from PIL import Image

    out = tmp_path / "eval"
    assert main(["eval", "--model", "tiny", "--benchmark", "tiny", "--limit", "1", "--methods", "null",
                 "--metrics", "contrast", "--steps", "2", "--out", str(out)]) == 0
    image = next((out / "images").rglob("p00000-i00.png"))
    text = Image.open(image).text["parameters"]
    assert "Steps: 2, Sampler: DDIM" in text and "ReNeg method: null" in text and "ReNeg source: reneg eval" in text
