"""ReNeg with NAG in the loop: `reneg train --guidance nag`, its file, and the methods that apply it."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from reneg.cli import main
from reneg.core.nag import guidance_rule
from reneg.core.rollout import guided_images
from reneg.embedding import NegativeEmbedding
from reneg.families import TextConditioning
from reneg.models.loading import load_model
from reneg.rewards import build_reward

PROMPTS = ["a red circle on a blue background", "a green square on a white background"]


def _train(out, *extra):
    args = ["train", "--model", "tiny", "--reward", "contrast", "--train-steps", "3", "--batch-size", "2",
            "--steps", "4", "--lr", "0.5", "--device", "cpu", "--validate-every", "0", "--log-every", "0",
            "--out", str(out), *extra]
    for prompt in PROMPTS:
        args += ["--prompt", prompt]
    return main(args)


@pytest.fixture(scope="module")
def nag_file(tmp_path_factory):
    out = tmp_path_factory.mktemp("nag") / "neg.safetensors"
    assert _train(out, "--guidance", "nag", "--guidance-scale", "3", "--nag-alpha", "0.4") == 0
    return out


def test_the_file_records_the_rule_it_was_learned_for(nag_file):
    metadata = NegativeEmbedding.load(nag_file).metadata
    assert metadata["guidance"] == "nag" and metadata["guidance_scale"] == "3.0"
    assert (metadata["nag_tau"], metadata["nag_alpha"], metadata["nag_end"]) == ("2.5", "0.4", "1.0")
    null = load_model("tiny").family.null_text().embeds[0]
    assert not torch.equal(NegativeEmbedding.load(nag_file).tensor, null)  # it learned


def test_a_step_along_the_gradient_lowers_the_nag_objective():
    """The NAG objective's gradient w.r.t. the negative is a descent direction on a fixed batch (x_t, t fixed)."""
    from reneg.methods.randomness import draw_batch
    from reneg.methods.reneg.objective import reneg_objective

    family, reward = load_model("tiny").family, build_reward("contrast")
    batch = draw_batch(family, PROMPTS, seed=0, step=0, indices=[0, 1], resolution=64, steps=4, grad_window=2)
    rule = guidance_rule(family, "nag")

    def loss(embeds):
        return reneg_objective(family, reward, batch, TextConditioning(embeds), guidance_scale=5.0, steps=4,
                               resolution=64, rule=rule)[0]

    embeds = family.null_text().embeds.clone().requires_grad_(True)
    before = loss(embeds)
    before.backward()
    with torch.no_grad():
        after = loss(embeds - 0.05 * embeds.grad / embeds.grad.norm())
    assert after < before


def test_generate_applies_a_nag_file_with_nag_at_its_scale(nag_file, tmp_path):
    assert main(["generate", "--model", "tiny", "--negative", str(nag_file), "--prompt", PROMPTS[0], "--steps", "4",
                 "--device", "cpu", "--out", str(tmp_path / "out")]) == 0
    record = json.loads((tmp_path / "out" / "generation.json").read_text())
    assert record["guidance_scale"] == 3.0
    ours = np.asarray(Image.open(tmp_path / "out" / record["images"][0]["file"]))
    model = load_model("tiny")
    family = model.family
    negative = TextConditioning.of(NegativeEmbedding.load(nag_file))
    latents = family.initial_latents(1, resolution=64, generator=torch.Generator().manual_seed(0))
    rule = guidance_rule(family, "nag", alpha=0.4)
    direct = guided_images(family, [PROMPTS[0]], negative, latents, guidance_scale=3.0, steps=4, resolution=64,
                           rule=rule)
    expected = (direct[0].permute(1, 2, 0).numpy() * 255).round()
    assert np.abs(ours.astype(float) - expected).max() <= 1
    cfg = guided_images(family, [PROMPTS[0]], negative, latents, guidance_scale=3.0, steps=4, resolution=64)
    assert (cfg - direct).abs().max() > 1e-3  # and that is not what CFG makes


def test_a_cfg_file_under_nag_says_so_in_one_line(tmp_path, caplog):
    cfg_file = tmp_path / "cfg.safetensors"
    assert _train(cfg_file) == 0
    assert NegativeEmbedding.load(cfg_file).metadata["guidance"] == "cfg"
    caplog.clear()
    assert main(["generate", "--model", "tiny", "--negative", str(cfg_file), "--nag", "--prompt", PROMPTS[0],
                 "--steps", "3", "--device", "cpu", "--out", str(tmp_path / "out")]) == 0
    lines = [r.getMessage() for r in caplog.records if "learned for CFG" in r.getMessage()]
    assert len(lines) == 1 and "NAG" in lines[0]
    assert json.loads((tmp_path / "out" / "generation.json").read_text())["method"].startswith("nag-embedding=")


def test_nag_is_refused_in_one_line_where_the_family_has_no_nag():
    from reneg.errors import ReNegError
    from reneg.families.pixart import PixArtAlphaFamily

    assert PixArtAlphaFamily.attention_guidance is None
    with pytest.raises(ReNegError, match="NAG is not available for pixart-alpha pipelines yet.*--guidance cfg"):
        guidance_rule(PixArtAlphaFamily.__new__(PixArtAlphaFamily), "nag")


def test_resume_refuses_another_rule(tmp_path, capsys):
    out = tmp_path / "neg.safetensors"
    assert _train(out, "--guidance", "nag", "--checkpoint-every", "1") == 0
    capsys.readouterr()
    assert _train(out, "--resume", str(out.with_suffix(".checkpoint")), "--train-steps", "3") == 2
    assert "--guidance" in capsys.readouterr().err


def test_full_chain_objective_reaches_the_negative_through_every_step():
    """The full-chain loss's gradient reaches the negative, and differs from the one-step window's."""
    from reneg.methods.randomness import draw_batch
    from reneg.methods.reneg.objective import reneg_objective

    model = load_model("tiny")
    family, reward = model.family, build_reward("contrast")
    batch = draw_batch(family, PROMPTS, seed=0, step=0, indices=[0, 1], resolution=64, steps=3, grad_window=1)
    grads = []
    for full_chain in (False, True):
        negative = family.null_text().embeds.clone().requires_grad_(True)
        loss, _ = reneg_objective(family, reward, batch, TextConditioning(negative), guidance_scale=3.0, steps=3,
                                  resolution=64, rule=guidance_rule(family, "nag"), full_chain=full_chain)
        loss.backward()
        grads.append(negative.grad)
    assert all(g is not None and torch.isfinite(g).all() and g.abs().max() > 0 for g in grads)
    assert not torch.allclose(grads[0], grads[1])


@pytest.mark.parametrize("model", ["tiny-flux", "tiny-sd3"])
def test_train_with_nag_runs_end_to_end_on_transformers(model, tmp_path):
    out = tmp_path / "neg.safetensors"
    assert main(["train", "--model", model, "--guidance", "nag", "--reward", "contrast", "--train-steps", "2",
                 "--batch-size", "2", "--steps", "3", "--device", "cpu", "--validate-every", "0", "--log-every",
                 "0", "--prompt", PROMPTS[0], "--out", str(out)]) == 0
    metadata = NegativeEmbedding.load(out).metadata
    assert metadata["guidance"] == "nag" and metadata["nag_alpha"] == "0.25"  # the transformers' alpha
    assert main(["generate", "--model", model, "--negative", str(out), "--prompt", PROMPTS[0], "--steps", "3",
                 "--device", "cpu", "--out", str(tmp_path / "out")]) == 0


def test_per_sample_adaptation_from_a_nag_file_runs_under_nag(nag_file, tmp_path):
    """`reneg adapt` from a NAG file adapts under NAG (its objective and settings) and the adapted file says so."""
    from reneg.methods.reneg import adapt as adapting

    model = load_model("tiny")
    metadata = NegativeEmbedding.load(nag_file).metadata
    settings = adapting.resolve_settings(model, metadata, steps=4, adapt_steps=1, selection_draws=1)
    assert settings.guidance_scale == 3.0 and dict(settings.guidance)["guidance"] == "nag"
    assert settings.rule(model.family).alpha == 0.4
    cfg_settings = adapting.resolve_settings(model, {}, steps=4)
    assert cfg_settings.rule(model.family).name == "cfg" and "guidance" not in json.dumps(cfg_settings.identity())
    out = tmp_path / "adapted.safetensors"
    assert main(["adapt", "--model", "tiny", "--negative", str(nag_file), "--prompt", PROMPTS[0], "--reward",
                 "contrast", "--adapt-steps", "1", "--steps", "4", "--device", "cpu", "--out", str(out)]) == 0
    assert NegativeEmbedding.load(out).metadata["guidance"] == "nag"


@pytest.mark.parametrize("key, value", [("nag_tau", "abc"), ("nag_alpha", "2"), ("nag_end", "nan")])
def test_a_file_with_broken_nag_settings_is_refused_in_one_line(nag_file, tmp_path, capsys, key, value):
    negative = NegativeEmbedding.load(nag_file)
    negative.metadata[key] = value
    negative.save(tmp_path / "bad.safetensors")
    assert main(["generate", "--model", "tiny", "--negative", str(tmp_path / "bad.safetensors"), "--prompt",
                 PROMPTS[0], "--steps", "2", "--device", "cpu", "--out", str(tmp_path / "out")]) == 2
    assert "NAG settings" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_nag_file_with_a_broken_scale_is_refused_in_one_line(nag_file, tmp_path, capsys):
    negative = NegativeEmbedding.load(nag_file)
    negative.metadata["guidance_scale"] = "lots"
    negative.save(tmp_path / "bad.safetensors")
    assert main(["generate", "--model", "tiny", "--negative", str(tmp_path / "bad.safetensors"), "--prompt",
                 PROMPTS[0], "--steps", "2", "--device", "cpu", "--out", str(tmp_path / "out")]) == 2
    assert "guidance_scale 'lots'" in capsys.readouterr().err


def test_every_caller_runs_a_nag_method_at_its_own_scale(nag_file, tmp_path):
    """eval's plan and the UI's grid, as generate: a NAG-learned file at the s it records (3), the NAG baselines at
    NAG's default (5), a CFG method and any spec with @GS at the scale asked."""
    from reneg.core.nag import NAG_DEFAULT_SCALE
    from reneg.evaluate.runner import EvalConfig, make_plan
    from reneg.ui.grid import grid

    model = load_model("tiny")
    benchmark = tmp_path / "prompts.txt"
    benchmark.write_text("\n".join(PROMPTS) + "\n")
    config = EvalConfig(benchmark=str(benchmark), methods=["null", "nag-null", f"embedding={nag_file}",
                                                           f"nag-embedding={nag_file}@2"],
                        metrics=["contrast"], steps=1, batch_size=2, device="cpu", guidance_scale=7.0,
                        out=str(tmp_path / "eval"))
    plan = make_plan(config, model=model)
    scales = {run.base: run.guidance_scale for run in plan.runs}
    assert scales == {"null": 7.0, "nag-null": NAG_DEFAULT_SCALE, f"embedding={nag_file}": 3.0,
                      f"nag-embedding={nag_file}": 2.0}
    cells = grid(model, lambda images, prompts: [0.0] * len(images), PROMPTS[0], ["null", f"embedding={nag_file}"],
                 seed=0, steps=1, guidance_scales=[7.0])
    assert [(cell.spec, cell.guidance_scale) for cell in cells] == [("null", 7.0), (f"embedding={nag_file}", 3.0)]
