"""``reneg world-build``: its bad input, and (slow) a smoke build of every stage in two processes."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from reneg.cli import main


def test_bad_scale_is_one_line_and_writes_nothing(tmp_path, capsys):
    work = tmp_path / "w"
    assert main(["world-build", "--scale", "0", "--work-dir", str(work), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--scale" in err[0]
    assert not work.exists() and not (tmp_path / "o").exists()


def test_restart_longer_than_its_schedule_is_one_line_and_writes_nothing(tmp_path, capsys):
    work = tmp_path / "w"
    assert main(["world-build", "--sd-restart-steps", "20", "--sd-restart-schedule", "10", "--work-dir", str(work),
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--sd-restart-schedule" in err[0]
    assert not work.exists() and not (tmp_path / "o").exists()


def test_sd_stage_refuses_a_directory_built_with_other_settings(tmp_path):
    """A finished sd phase carries its settings (build.json); another build's settings do not reuse it."""
    from reneg.errors import ReNegError
    from reneg.world.build import BuildConfig, _stage_sd

    (tmp_path / "sd").mkdir()
    (tmp_path / "sd" / "build.json").write_text(json.dumps({"base": {"steps": 4500}, "restart": None}))
    with pytest.raises(ReNegError, match="other sd settings"):
        _stage_sd(BuildConfig(work_dir=str(tmp_path)), tmp_path, {})
    (tmp_path / "sd" / "build.json").write_text("{not json")  # a corrupt marker: one line, not a traceback
    with pytest.raises(ReNegError, match="not readable JSON"):
        _stage_sd(BuildConfig(work_dir=str(tmp_path)), tmp_path, {})


@pytest.mark.slow
def test_smoke_build_ships_a_loadable_world(tmp_path):
    """Every stage at 0.2% of its size, the evaluators in a second process (about 3-6 min on 2 cores)."""
    from diffusers import StableDiffusionPipeline

    out = tmp_path / "weights"
    subprocess.run([sys.executable, "-m", "reneg", "world-build", "--scale", "0.002", "--work-dir",
                    str(tmp_path / "work"), "--out", str(out)], check=True, capture_output=True)
    world = json.loads((out / "world.json").read_text())
    assert world["guidance_scale"] in (1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.5) and world["vocabulary"] == "4"
    metrics = world["metrics"]
    for key in ("vae_psnr_db", "degradation_auc_after_vae", "truth_accuracy", "shapes-hps_pairwise_accuracy",
                "shapes-pick_pairwise_accuracy", "premise_at_default_guidance"):
        assert key in metrics
    assert (tmp_path / "work" / "evaluators.log").exists()  # the second process ran
    marker = json.loads((tmp_path / "work" / "sd" / "build.json").read_text())  # both sd phases ran
    assert marker["base"]["steps"] == 9 and marker["restart"]["steps"] == 6
    assert json.loads((tmp_path / "work" / "sd-base" / "build.json").read_text()) == marker["base"]
    StableDiffusionPipeline.from_pretrained(out / "sd")
    assert not [f for f in out.rglob("*.json") if str(tmp_path) in f.read_text()]  # no build path shipped


def test_shipped_configs_name_no_build_path(tmp_path):
    from diffusers import AutoencoderKL

    from reneg.world.ship import drop_local_paths

    source, out = tmp_path / "build" / "vae", tmp_path / "weights" / "vae"
    AutoencoderKL(block_out_channels=(8,), norm_num_groups=8, latent_channels=4).save_pretrained(source)
    AutoencoderKL.from_pretrained(source).save_pretrained(out)
    assert str(source) in (out / "config.json").read_text()  # what diffusers writes
    (tmp_path / "weights" / "list.json").write_text("[1, 2]")  # not a config: left alone
    drop_local_paths(tmp_path / "weights")
    assert "_name_or_path" not in (out / "config.json").read_text()
    assert (tmp_path / "weights" / "list.json").read_text() == "[1, 2]"
    AutoencoderKL.from_pretrained(out)


def test_the_guidance_sweep_never_sees_the_benchmark():
    """The build chooses the default guidance scale on training prompts: it is a setting of every benchmark table."""
    from reneg.world.scenes import benchmark_prompts, reneg_training_prompts
    from reneg.world.ship import SWEEP_PROMPTS, sweep_prompts

    held_out = {p for p, _ in benchmark_prompts()}
    chosen = sweep_prompts(reneg_training_prompts(exclude=held_out))
    assert len(set(chosen)) == len(chosen) == SWEEP_PROMPTS
    assert not set(chosen) & held_out


def test_default_guidance_is_the_scale_where_the_null_texts_reward_is_highest():
    """v4's declared rule: the candidate maximising the null text's mean shapes-hps; the premise is only measured."""
    import torch

    from reneg.world import ship

    def judged(negative, scale):
        reward = 0.5 + (0.1 if scale == 4.0 else 0.0) + (0.2 if negative else 0.0)  # handcrafted never chooses
        return {"adherence": torch.tensor([0.8]), "cleanliness": torch.tensor([0.9]),
                "flagged": torch.tensor([0.0]), "reward": torch.tensor([reward])}

    chosen, by_scale = ship.choose_guidance_scale(judged)
    assert chosen == 4.0 and set(by_scale) == {str(s) for s in ship.GUIDANCE_CANDIDATES}
    assert by_scale["4.0"]["null"]["reward"] == 0.6 and "premise_holds" in by_scale["4.0"]


def test_out_holding_a_user_file_is_refused_and_kept(tmp_path, capsys):
    """world-build replaces --out only when it is empty or a world reneg shipped: a user's folder is refused in one
    line before any stage runs, and its file stays."""
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    assert main(["world-build", "--work-dir", str(tmp_path / "w"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a world reneg shipped" in err[0]
    assert (out / "thesis.tex").read_text() == "years of work" and not (tmp_path / "w" / "data").exists()
    assert not any(p.name.startswith(".mine") for p in tmp_path.iterdir())  # no sibling made or removed


def test_out_defaults_outside_the_installed_package():
    from reneg import world
    from reneg.world.build import BuildConfig

    assert world.WEIGHTS_DIR.resolve() not in (Path(BuildConfig().out).resolve(), *Path(BuildConfig().out).resolve().parents)


def test_data_stage_keeps_no_pickle_and_refuses_data_of_other_settings(tmp_path):
    """The data cache is safetensors + JSON: a crafted pickle named like the old cache is never loaded, and data
    made with other settings is refused in one line, not silently reused."""
    from reneg.errors import ReNegError
    from reneg.world.build import BuildConfig, _stage_data

    (tmp_path / "data.pt").write_bytes(b"crafted")  # v3's cache name: ignored
    config = BuildConfig(work_dir=str(tmp_path), images=256, scale=1.0)
    data = _stage_data(config, tmp_path, {})
    assert len(data) == 256 and (tmp_path / "data" / "images.safetensors").exists()
    again = _stage_data(config, tmp_path, {})
    assert again.images.equal(data.images) and again.captions == data.captions and again.scenes == data.scenes
    with pytest.raises(ReNegError, match="other settings"):
        _stage_data(BuildConfig(work_dir=str(tmp_path), images=300), tmp_path, {})


def test_the_decoder_fine_tune_keeps_the_encoder_and_remakes_the_reconstructions(tmp_path):
    """--vae-decoder-steps: the latents (the encoder) stay, the decoder changes; the evaluators' reconstructions are
    remade through the new decoder, and a fine-tune made with other settings is refused in one line."""
    from reneg.errors import ReNegError
    from reneg.world.build import BuildConfig, _stage_data, _stage_recon, _stage_vae

    plain = BuildConfig(work_dir=str(tmp_path), images=256, vae_steps=2, vae_width=4, vae_decoder_steps=0)
    state = {"data": _stage_data(plain, tmp_path, {})}
    state["vae"] = _stage_vae(plain, tmp_path, state)
    before = _stage_recon(plain, tmp_path, state)
    tuned_config = BuildConfig(work_dir=str(tmp_path), images=256, vae_steps=2, vae_width=4, vae_decoder_steps=3)
    tuned = _stage_vae(tuned_config, tmp_path, state)
    assert json.loads((tmp_path / "vae-decoder" / "build.json").read_text()) == {"steps": 3, "seed": 0}
    assert {"vae_psnr_db", "vae_psnr_db_before_decoder"} <= set(state["metrics"])
    original = state["vae"].state_dict()
    for name, value in tuned.state_dict().items():
        if name.startswith(("encoder.", "quant_conv.")):
            assert torch.equal(value, original[name]), name
    assert any(not torch.equal(v, original[n]) for n, v in tuned.state_dict().items() if n.startswith("decoder."))
    state["vae"] = tuned
    after = _stage_recon(tuned_config, tmp_path, state)
    assert not torch.equal(after, before)
    assert json.loads((tmp_path / "recon.json").read_text()) == {"decoder": {"steps": 3, "seed": 0}}
    assert torch.equal(_stage_recon(tuned_config, tmp_path, state), after)  # cached while the decoder is the same
    (tmp_path / "recon.json").write_text("{not json")  # a corrupt marker: remade, not a traceback
    assert torch.equal(_stage_recon(tuned_config, tmp_path, state), after)
    assert json.loads((tmp_path / "recon.json").read_text()) == {"decoder": {"steps": 3, "seed": 0}}
    other = BuildConfig(work_dir=str(tmp_path), images=256, vae_steps=2, vae_width=4, vae_decoder_steps=4)
    with pytest.raises(ReNegError, match="other VAE decoder settings"):
        _stage_vae(other, tmp_path, state)
