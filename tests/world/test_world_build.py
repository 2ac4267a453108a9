"""``reneg world-build``: its bad input, and (slow) a smoke build of every stage in two processes."""

import json
import subprocess
import sys

import pytest

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
    assert world["guidance_scale"] in (1.5, 2.0, 3.0, 4.0, 5.0, 7.5)
    metrics = world["metrics"]
    for key in ("vae_psnr_db", "degradation_auc_after_vae", "truth_accuracy", "shapes-hps_pairwise_accuracy",
                "shapes-pick_pairwise_accuracy", "premise_at_default_guidance"):
        assert key in metrics
    assert (tmp_path / "work" / "evaluators.log").exists()  # the second process ran
    marker = json.loads((tmp_path / "work" / "sd" / "build.json").read_text())  # both sd phases ran
    assert marker["base"]["steps"] == 9 and marker["restart"]["steps"] == 6
    assert json.loads((tmp_path / "work" / "sd-base" / "build.json").read_text()) == marker["base"]
    StableDiffusionPipeline.from_pretrained(out / "sd")


def test_the_guidance_sweep_never_sees_the_benchmark():
    """The build chooses the default guidance scale on training prompts: it is a setting of every benchmark table."""
    from reneg.world.scenes import benchmark_prompts, reneg_training_prompts
    from reneg.world.ship import SWEEP_PROMPTS, sweep_prompts

    held_out = {p for p, _ in benchmark_prompts()}
    chosen = sweep_prompts(reneg_training_prompts(exclude=held_out))
    assert len(set(chosen)) == len(chosen) == SWEEP_PROMPTS
    assert not set(chosen) & held_out


def test_default_guidance_is_the_most_adherent_scale_where_the_premise_holds():
    """The handcrafted negative must be cleaner than null and cost <= 0.02 adherence; else the most adherent scale."""
    import torch

    from reneg.world import ship

    def table(rows):  # scale -> (null adherence, handcrafted adherence, null cleanliness, handcrafted cleanliness)
        def judged(negative, scale):
            null_a, hand_a, null_c, hand_c = rows[scale]
            a, c = (null_a, null_c) if negative == "" else (hand_a, hand_c)
            return {"adherence": torch.tensor([a]), "cleanliness": torch.tensor([c])}
        return judged

    rows = {s: (0.70 + s / 100, 0.70 + s / 100 - 0.05, 0.8, 0.9) for s in ship.GUIDANCE_CANDIDATES}
    rows[2.0] = (0.72, 0.71, 0.8, 0.81)  # holds
    rows[3.0] = (0.73, 0.715, 0.8, 0.81)  # holds, more adherent
    rows[4.0] = (0.74, 0.735, 0.8, 0.79)  # not cleaner
    chosen, by_scale = ship.choose_guidance_scale(table(rows))
    assert chosen == 3.0 and by_scale["3.0"]["premise_holds"] and not by_scale["7.5"]["premise_holds"]
    for s in (2.0, 3.0):
        rows[s] = (rows[s][0], rows[s][0] - 0.03, 0.8, 0.81)
    assert ship.choose_guidance_scale(table(rows))[0] == 7.5  # holds nowhere: the most adherent
