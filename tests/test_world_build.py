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
    StableDiffusionPipeline.from_pretrained(out / "sd")
