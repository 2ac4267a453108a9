"""The contract's bad inputs: exit 2, one line on stderr, no traceback, nothing written."""

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from reneg.cli import main
from reneg.embedding import NegativeEmbedding
from reneg.errors import ReNegError


@pytest.fixture()
def files(tmp_path):
    bad_shape = tmp_path / "bad_shape.safetensors"
    NegativeEmbedding(torch.zeros(77, 16), {}).save(bad_shape)
    nan = tmp_path / "nan.pt"
    torch.save(torch.full((77, 32), float("nan")), nan)
    ti = tmp_path / "ti.safetensors"
    save_file({"emb_params": torch.zeros(2, 32)}, ti)
    other = tmp_path / "other.safetensors"
    NegativeEmbedding(torch.zeros(77, 32), {"text_encoder_fingerprint": "te1:CLIPTextModel:d32:l2:v49408:"
                                                                     + ",".join(["1e0"] * 16)}).save(other)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    malformed = tmp_path / "bad.json"
    malformed.write_text("{not json")
    return dict(bad_shape=bad_shape, nan=nan, ti=ti, other=other, empty=empty, malformed=malformed)


def _generate(tmp_path, *extra):
    return ["generate", "--model", "tiny", "--prompt", "a red circle", "--steps", "1", "--device", "cpu",
            "--out", str(tmp_path / "o"), *extra]


@pytest.mark.parametrize("case, needle", [
    (lambda f, p: _generate(p, "--negative", str(p / "missing.safetensors")), "does not exist"),
    (lambda f, p: _generate(p, "--negative", str(f["bad_shape"])), "shape"),
    (lambda f, p: _generate(p, "--negative", str(f["nan"])), "NaN"),
    (lambda f, p: _generate(p, "--negative", str(f["ti"])), "textual inversion"),
    (lambda f, p: _generate(p, "--negative", str(f["other"])), "fingerprint"),
    (lambda f, p: ["generate", "--prompts", str(f["empty"]), "--out", str(p / "o")], "no prompts"),
    (lambda f, p: ["generate", "--prompts", str(f["malformed"]), "--out", str(p / "o")], "malformed"),
    (lambda f, p: ["generate", "--out", str(p / "o")], "no prompts given"),
    (lambda f, p: _generate(p, "--model", "nobody/not-a-cached-model"), "nobody/not-a-cached-model"),
    (lambda f, p: _generate(p, "--model", str(p / "no-such-dir")), "does not exist"),
    (lambda f, p: ["train", "--reward", "no-such-reward", "--out", str(p / "o" / "n.safetensors")], "unknown reward"),
    (lambda f, p: ["train", "--out", str(p / "o" / "n.txt")], ".safetensors"),
    (lambda f, p: ["train", "--batch-size", "3", "--micro-batch-size", "2", "--out", str(p / "o/n.safetensors")],
     "multiple"),
    (lambda f, p: ["train", "--grad-window", "40", "--steps", "30", "--out", str(p / "o" / "n.safetensors")],
     "grad-window"),
    (lambda f, p: ["train", "--config", str(p / "nope.toml"), "--out", str(p / "o" / "n.safetensors")],
     "does not exist"),
    (lambda f, p: _generate(p, "--no-such-flag"), "unrecognized"),
    (lambda f, p: _generate(p, "--steps", "many"), "invalid int"),
])
def test_bad_input_exits_2_with_one_line(case, needle, files, tmp_path, capsys, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    try:
        status = main(case(files, tmp_path))
    except SystemExit as exit_:  # argparse's own errors
        status = exit_.code
    err = capsys.readouterr().err.strip().splitlines()
    err = [line for line in err if "Warning" not in line and line.strip()]
    assert status == 2
    assert len(err) == 1 and needle.lower() in err[0].lower(), err
    assert "Traceback" not in err[0]
    assert not (tmp_path / "o").exists()


def test_config_file_sets_defaults_and_flags_override(tmp_path, capsys):
    config = tmp_path / "c.toml"
    config.write_text('prompt = ["a red circle"]\nsteps = 2\nseed = 5\nnum-images = 2\n')
    assert main(["generate", "--config", str(config), "--seed", "6", "--device", "cpu", "--out", str(tmp_path / "o")]) == 0
    import json

    record = json.loads((tmp_path / "o" / "generation.json").read_text())
    assert record["steps"] == 2 and record["seed"] == 6 and len(record["images"]) == 2


def test_unknown_config_key_is_bad_input(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("stepz: 2\n")
    assert main(["generate", "--config", str(config), "--prompt", "x", "--out", str(tmp_path / "o")]) == 2
    assert "stepz" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["train", "generate", "rewards", "models"])
def test_help_describes_every_flag(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    if command in ("train", "generate"):
        for flag in ("--model", "--seed", "--steps", "--guidance-scale", "--device", "--precision", "--config", "--out"):
            assert flag in text


def test_rewards_lists_registry(capsys):
    assert main(["rewards"]) == 0
    out = capsys.readouterr().out
    assert "pickscore" in out and "clip-score" in out


def test_two_step_train_then_generate(tmp_path):
    out = tmp_path / "neg.safetensors"
    assert main(["train", "--train-steps", "2", "--batch-size", "2", "--steps", "3", "--device", "cpu",
                 "--out", str(out)]) == 0
    assert main(["generate", "--negative", str(out), "--prompt", "a red circle", "--steps", "3", "--device", "cpu",
                 "--out", str(tmp_path / "images")]) == 0
    assert (tmp_path / "images" / "00000.png").is_file()
    assert not np.isnan(NegativeEmbedding.load(out).tensor.numpy()).any()


def test_a_second_run_on_the_same_out_is_refused_in_one_line(tmp_path, capsys):
    """Two processes writing one --out would interleave their files: the second is refused while the first runs."""
    import subprocess
    import sys

    from reneg.io import exclusive

    out = tmp_path / "neg.safetensors"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from reneg.io import exclusive\n"
                               f"with exclusive({str(out)!r}):\n    print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(["train", "--model", "tiny", "--train-steps", "1", "--out", str(out)]) == 2
        error = capsys.readouterr().err.strip()
        assert "being written by another reneg process" in error and "\n" not in error and not out.exists()
    finally:
        holder.kill()
        holder.wait()
    with exclusive(out):  # released when its holder died
        pass


def test_a_process_started_by_the_lock_holder_shares_its_lock(tmp_path):
    """world-build's evaluators run as a second `reneg world-build` on the same --work-dir: part of one run."""
    import subprocess
    import sys

    from reneg.io import exclusive

    out = tmp_path / "work"
    child = ("from reneg.io import exclusive\n"
             f"with exclusive({str(out)!r}):\n    print('inside')")
    with exclusive(out):
        found = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True)
    assert found.returncode == 0 and found.stdout.strip() == "inside", found.stderr
    stranger = subprocess.Popen([sys.executable, "-c", "import time; from reneg.io import exclusive\n"
                                 f"with exclusive({str(out)!r}):\n    print('held', flush=True); time.sleep(60)"],
                                stdout=subprocess.PIPE, text=True)
    try:
        assert stranger.stdout.readline().strip() == "held"
        with pytest.raises(ReNegError, match="being written by another reneg process"):
            with exclusive(out):
                pass
    finally:
        stranger.kill()
        stranger.wait()


@pytest.mark.parametrize("args, needle", [
    (["generate", "--model", "tiny", "--prompt", "a", "--steps", "2000"], "--steps 2000 is more than this model's"),
    (["train", "--model", "tiny", "--steps", "1001", "--train-steps", "1"], "use at most 1000"),
    (["generate", "--model", "tiny", "--prompt", "a", "--dnp-rule", "three-term"], "--dnp-rule applies to DNP only"),
    (["efficiency", "--model", "tiny", "--lora-ranks", "100000"], "--lora-ranks must be <= 1024"),
])
def test_out_of_range_input_is_one_line_and_writes_nothing(args, needle, tmp_path, capsys):
    out = tmp_path / ("o.safetensors" if args[0] == "train" else "o")
    assert main([*args, "--device", "cpu", "--out", str(out)]) == 2
    error = capsys.readouterr().err.strip()
    assert needle in error and "\n" not in error and not out.exists()
