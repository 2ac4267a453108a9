"""Global ReNeg training end to end on the tiny pipeline with a tiny PickScore-layout CLIP."""

import json

import pytest
import torch
from safetensors import safe_open

from reneg.cli import main
from reneg.embedding import NegativeEmbedding, null_text_embedding
from reneg.generate import generate_images
from reneg.methods.reneg.train import TrainConfig, Trainer
from reneg.models.loading import load_model
from reneg.models.tiny import tiny_clip
from reneg.rewards import build_reward

PROMPTS = ["a red circle on a blue background", "a green square on a white background",
           "a yellow star on a black background", "a purple triangle on an orange background"]


@pytest.fixture(scope="module")
def pickscore_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny-pickscore")
    model, processor = tiny_clip()
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


def _mean_reward(model, reward, negative):
    """Reward of fully sampled images (not the one-step prediction) on the training prompts, fixed seeds."""
    prompts = PROMPTS * 2
    batches = generate_images(model, prompts, negative, guidance_scale=7.5, steps=4, resolution=64,
                              generator=torch.Generator().manual_seed(0), batch_size=8)
    with torch.no_grad():
        return reward(torch.cat(list(batches)), prompts).mean().item()


def test_train_cli_increases_pickscore(tiny_epsilon_dir, pickscore_dir, tmp_path):
    """Over four training seeds, 10 steps raise the mean reward of fully sampled images by more than 0.05."""
    model = load_model(str(tiny_epsilon_dir))
    reward = build_reward("pickscore", model=str(pickscore_dir))
    before = _mean_reward(model, reward, null_text_embedding(model.pipe))
    gains = []
    for seed in range(4):
        out = tmp_path / f"neg{seed}.safetensors"
        args = ["train", "--model", str(tiny_epsilon_dir), "--reward", "pickscore", "--reward-model",
                str(pickscore_dir), "--train-steps", "10", "--batch-size", "4", "--micro-batch-size", "2",
                "--steps", "4", "--grad-window", "2", "--lr", "0.2", "--seed", str(seed), "--device", "cpu",
                "--out", str(out)]
        for prompt in PROMPTS:
            args += ["--prompt", prompt]
        assert main(args) == 0
        learned = NegativeEmbedding.load(out).for_pipeline(model.pipe)
        gains.append(_mean_reward(model, reward, learned.tensor) - before)
    assert sum(gains) / len(gains) > 0.05, (before, gains)
    assert all(gain > 0 for gain in gains), gains

    with safe_open(str(out), "pt") as handle:
        metadata = handle.metadata()
    assert metadata["format"] == "reneg.negative_embedding"
    assert metadata["reward"] == "pickscore" and metadata["train_steps"] == "10"
    assert metadata["steps"] == "4" and metadata["grad_window"] == "2"
    assert metadata["text_encoder_fingerprint"].startswith("te1:CLIPTextModel")
    log = [json.loads(line) for line in out.with_suffix(".log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 11))
    assert (out.with_suffix(".checkpoint") / "latest").is_file()


def test_only_the_negative_embedding_changes(tmp_path):
    config = TrainConfig(model="tiny", reward="random-linear", train_steps=2, batch_size=2, steps=3, device="cpu",
                         out=str(tmp_path / "n.safetensors"))
    trainer = Trainer(config)
    frozen = {k: v.clone() for k, v in trainer.model.pipe.unet.state_dict().items()}
    init = trainer.embedding().tensor.clone()
    list(trainer.run())
    assert not torch.equal(trainer.embedding().tensor, init)
    assert all(torch.equal(v, frozen[k]) for k, v in trainer.model.pipe.unet.state_dict().items())
    assert [p for p in trainer.model.pipe.unet.parameters() if p.requires_grad] == []


def test_learned_guidance_scale_moves(tmp_path):
    config = TrainConfig(model="tiny", reward="contrast", train_steps=2, batch_size=2, steps=3, lr=0.1,
                         learn_guidance_scale=True, device="cpu", out=str(tmp_path / "n.safetensors"))
    trainer = Trainer(config)
    records = list(trainer.run())
    assert records[-1].guidance_scale != pytest.approx(7.5, abs=1e-6)
    assert trainer.embedding().metadata["learn_guidance_scale"] == "true"


def test_resume_continues_where_it_stopped(tmp_path):
    base = dict(model="tiny", reward="contrast", batch_size=2, steps=3, device="cpu", out=str(tmp_path / "a.safetensors"))
    straight = Trainer(TrainConfig(train_steps=4, **base))
    list(straight.run())
    first = Trainer(TrainConfig(train_steps=4, **base))
    runs = first.run()
    next(runs), next(runs)  # interrupted after two of four steps
    checkpoint = first.save_checkpoint(tmp_path / "ckpt")
    resumed = Trainer(TrainConfig(train_steps=4, resume=str(checkpoint), **base))
    assert resumed.step == 2
    list(resumed.run())
    assert torch.allclose(resumed.embedding().tensor, straight.embedding().tensor, atol=1e-6)


def test_weighted_rewards_from_a_config_file(tmp_path):
    """Several rewards combined with weights for training, from the config file's [rewards] table."""
    config_file = tmp_path / "train.toml"
    config_file.write_text('model = "tiny"\ntrain-steps = 1\nbatch-size = 2\nsteps = 3\ndevice = "cpu"\n'
                           f'out = "{tmp_path / "n.safetensors"}"\n'
                           '[rewards]\ncontrast = 1.0\nsaturation = { weight = -0.5 }\n')
    assert main(["train", "--config", str(config_file)]) == 0
    metadata = NegativeEmbedding.load(tmp_path / "n.safetensors").metadata
    assert json.loads(metadata["reward"]) == {"contrast": 1.0, "saturation": {"weight": -0.5}}


def test_two_identical_runs_write_byte_identical_files(tmp_path):
    outputs = []
    for name in ("a", "b"):
        out = tmp_path / name / "neg.safetensors"
        assert main(["train", "--model", "tiny", "--reward", "contrast", "--train-steps", "2", "--batch-size", "2",
                     "--steps", "3", "--device", "cpu", "--validate-every", "0", "--out", str(out)]) == 0
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1]


@pytest.mark.parametrize("signal_name, status", [("SIGTERM", 143), ("SIGINT", 130)])
def test_a_signal_stops_between_steps_saves_and_says_how_to_resume(signal_name, status, tmp_path, capsys,
                                                                   monkeypatch):
    """What a scheduler sends first (SIGTERM) or Ctrl-C: the step ends, a checkpoint is saved, one line says
    --resume; the resumed run ends where an uninterrupted one does."""
    import os
    import signal

    from reneg.methods.reneg import train as train_module

    out = tmp_path / "neg.safetensors"
    args = ["train", "--model", "tiny", "--reward", "contrast", "--train-steps", "4", "--batch-size", "2", "--steps",
            "3", "--device", "cpu", "--validate-every", "0"]
    step = train_module.Trainer.train_step

    def signalled_at_two(self):
        record = step(self)
        if self.step == 2:
            os.kill(os.getpid(), getattr(signal, signal_name))
        return record

    monkeypatch.setattr(train_module.Trainer, "train_step", signalled_at_two)
    assert main([*args, "--out", str(out)]) == status
    errors = capsys.readouterr().err.split("reneg train: error: ")[1:]  # (the progress bar shares its line)
    checkpoint, error = out.with_suffix(".checkpoint"), errors[-1].split("\n")[0]
    assert len(errors) == 1 and f"stopped by {signal_name} after step 2" in error
    assert f"--resume {checkpoint}" in error and not out.exists()
    monkeypatch.setattr(train_module.Trainer, "train_step", step)
    assert main([*args, "--out", str(out), "--resume", str(checkpoint)]) == 0
    assert main([*args, "--out", str(tmp_path / "whole.safetensors")]) == 0
    assert torch.equal(NegativeEmbedding.load(out).tensor, NegativeEmbedding.load(tmp_path / "whole.safetensors").tensor)
