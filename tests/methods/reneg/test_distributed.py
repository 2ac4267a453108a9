"""Multi-process training and resume that cannot lie: same embedding on 1 and 2 processes, SIGKILL + --resume,
changed-recipe resumes refused, and checkpoints from which nothing is ever unpickled."""

import os
import pickle
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from reneg.cli import main

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
RENEG = [sys.executable, "-m", "reneg"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _two_processes() -> list[str]:
    """`reneg` under `accelerate launch`, two gloo processes on this machine."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", str(_free_port()), "-m", "reneg"]


def _embedding(path):
    return load_file(str(path))["negative_embedding"]


@pytest.mark.parametrize("guidance", ["cfg", "nag"])
def test_two_processes_equal_one_with_the_same_global_batch(tmp_path, guidance):
    """2 gloo processes x batch 2 == 1 process x batch 4 in micro-batches of 2, on the shapes world (CFG, NAG)."""
    common = ["train", "--batch-size", "4", "--train-steps", "2", "--steps", "4", "--grad-window", "2",
              "--log-every", "0", "--guidance", guidance]
    one = subprocess.run(RENEG + common + ["--micro-batch-size", "2", "--out", str(tmp_path / "one.safetensors")],
                         env=ENV, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run(_two_processes() + common + ["--out", str(tmp_path / "two.safetensors")], env=ENV,
                         capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-2000:]
    assert two.stdout.count("two.safetensors") == 1  # only the main process reports and writes
    difference = (_embedding(tmp_path / "one.safetensors") - _embedding(tmp_path / "two.safetensors")).abs().max()
    assert difference <= 1e-5, difference
    log = (tmp_path / "two.log.jsonl").read_text().splitlines()
    assert len(log) == 2  # one line per step, from the main process alone


TINY = ["train", "--model", "tiny", "--reward", "contrast", "--batch-size", "2", "--steps", "3", "--device", "cpu",
        "--log-every", "0"]


def test_sigkill_between_checkpoints_then_resume_is_bit_identical(tmp_path):
    def reneg(*args):  # every run in its own process with the same threads, as a user would run them
        return subprocess.run(RENEG + TINY + list(args), env=ENV, capture_output=True, text=True, timeout=300)

    straight = tmp_path / "straight.safetensors"
    assert reneg("--train-steps", "40", "--out", str(straight)).returncode == 0

    out = tmp_path / "killed.safetensors"
    latest = tmp_path / "killed.checkpoint" / "latest"
    process = subprocess.Popen(RENEG + TINY + ["--train-steps", "40", "--checkpoint-every", "4", "--out", str(out)],
                               env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not latest.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.01)
    time.sleep(0.15)  # into the steps after the first checkpoint
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "training ended before it could be killed"
    assert not out.exists()  # nothing half-written (or written early) at --out
    assert [p.name for p in out.parent.iterdir() if p.name.startswith("killed.safetensors")] == []

    resumed = reneg("--train-steps", "40", "--resume", str(out.with_suffix(".checkpoint")), "--out", str(out))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert torch.equal(_embedding(out), _embedding(straight))


@pytest.fixture()
def checkpointed(tmp_path):
    out = tmp_path / "n.safetensors"
    assert main(TINY + ["--train-steps", "2", "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize("change, named", [(["--lr", "0.5"], "--lr"), (["--reward", "saturation"], "--reward"), (["--steps", "4"], "--steps"),
                                           (["--batch-size", "4"], "--batch-size"),
                                           (["--prompt", "a blue star"], "--prompt")])
def test_resume_with_another_recipe_is_refused_in_one_line(checkpointed, tmp_path, capsys, change, named):
    capsys.readouterr()
    args = TINY + ["--train-steps", "2", "--resume", str(checkpointed.with_suffix(".checkpoint")),
                   "--out", str(tmp_path / "other.safetensors")]
    args += change  # argparse: the later flag wins
    code = main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "cannot resume" in err[0] and named in err[0], err[0]
    assert not (tmp_path / "other.safetensors").exists()


class _Payload:
    """Unpickling this runs code: it writes a marker file."""

    marker = ""

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickles_in_a_checkpoint_never_run(checkpointed, tmp_path, capsys):
    checkpoint = checkpointed.with_suffix(".checkpoint")
    step_dir = next(checkpoint.glob("step-*"))
    marker = tmp_path / "pwned"
    _Payload.marker = str(marker)
    payload = pickle.dumps(_Payload())
    # every file accelerate's save_state would have left, as a crafted payload
    for name in ("optimizer.bin", "scheduler.bin", "pytorch_model.bin", "random_states_0.pkl",
                 "custom_checkpoint_0.pkl", "model.safetensors"):
        (step_dir / name).write_bytes(payload)
    assert main(TINY + ["--train-steps", "2", "--resume", str(checkpoint), "--out", str(checkpointed)]) == 0
    assert not marker.exists()
    # the files reneg does read, replaced by the payload: refused in one line, nothing runs
    for name in ("parameters.safetensors", "optimizer.safetensors"):
        step_dir = next(checkpoint.glob("step-*"))
        original = (step_dir / name).read_bytes()
        (step_dir / name).write_bytes(payload)
        capsys.readouterr()
        code = main(TINY + ["--train-steps", "2", "--resume", str(checkpoint), "--out",
                            str(tmp_path / "x.safetensors")])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and "corrupt" in err[0], err
        assert not marker.exists()
        (step_dir / name).write_bytes(original)


def test_a_kill_while_checkpointing_keeps_the_previous_checkpoint(checkpointed, tmp_path):
    """A staging folder left by a kill mid-save is ignored: `latest` still names a whole checkpoint."""
    checkpoint = checkpointed.with_suffix(".checkpoint")
    (checkpoint / ".step-000003.tmp").mkdir()
    (checkpoint / ".step-000003.tmp" / "parameters.safetensors").write_bytes(b"half")
    assert main(TINY + ["--train-steps", "2", "--resume", str(checkpoint), "--out", str(checkpointed)]) == 0
    assert [p.name for p in checkpoint.iterdir() if p.is_dir()] == ["step-000002"]


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_non_finite_loss_skips_steps_then_stops_keeping_the_checkpoint(tmp_path, capsys, precision):
    from reneg.methods.reneg.train import TrainConfig, Trainer

    class NaNReward:
        def __call__(self, images, prompts):
            return images.mean(dim=(1, 2, 3)) * float("nan")

    config = TrainConfig(model="tiny", train_steps=5, batch_size=2, steps=3, device="cpu", max_nonfinite_steps=3,
                         precision=precision, out=str(tmp_path / "n.safetensors"))
    trainer = Trainer(config, reward=NaNReward())
    init = trainer.embedding().tensor.clone()
    from reneg.errors import ReNegError

    with pytest.warns(RuntimeWarning, match="not finite"), pytest.raises(ReNegError, match="3 steps in a row"):
        list(trainer.run())
    assert torch.equal(trainer.embedding().tensor, init)  # no NaN ever reached n


@pytest.mark.parametrize("route", ["reward-cfg", "dpo"])
def test_npo_two_processes_equal_one_with_the_same_global_batch(tmp_path, route):
    """reneg npo on the shared loop: 2 gloo processes x 2 == 1 process x 4 in micro-batches of 2 (delta to 1e-5)."""
    data = []
    if route == "dpo":
        from reneg.world.pairs import write_world_pairs

        data = ["--route", "dpo", "--pairs", str(write_world_pairs(tmp_path / "pairs", count=8, seed=0)),
                "--lr", "1e-3"]
    else:
        data = ["--reward", "contrast", "--lr", "1e-2", "--steps", "3"]
    common = ["npo", "--model", "tiny", "--batch-size", "4", "--train-steps", "2", "--rank", "2", "--log-every", "0",
              "--validate-every", "0", "--device", "cpu", *data]
    one = subprocess.run(RENEG + common + ["--micro-batch-size", "2", "--out", str(tmp_path / "one")],
                         env=ENV, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run(_two_processes() + common + ["--out", str(tmp_path / "two")], env=ENV, capture_output=True,
                         text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-2000:]
    assert two.stdout.count(str(tmp_path / "two")) == 1  # only the main process reports and writes
    one_delta, two_delta = (load_file(str(tmp_path / name / "pytorch_lora_weights.safetensors"))
                            for name in ("one", "two"))
    assert one_delta.keys() == two_delta.keys()
    difference = max((one_delta[k] - two_delta[k]).abs().max().item() for k in one_delta)
    assert difference <= 1e-5, difference
    assert max(v.abs().max().item() for k, v in one_delta.items() if "lora_B" in k) > 0  # delta moved
    assert len((tmp_path / "two.log.jsonl").read_text().splitlines()) == 2  # one line a step, main process
