"""Training listeners on fake step records (no model): the reward plot, resume, TensorBoard, --report-to."""

import json
import math
import sys

import pytest
from PIL import Image

from reneg.cli import main
from reneg.errors import ReNegError
from reneg.methods import listeners
from reneg.methods.listeners import jsonl_log, read_jsonl_log, reward_plot, tensorboard_log
from reneg.methods.reneg.train import StepRecord, TrainConfig, log_listeners


def _record(step: int) -> StepRecord:
    return StepRecord(step=step, loss=-0.1 * step, reward=0.1 * step + 0.05 * math.sin(step), lr=5e-3 / step,
                      guidance_scale=7.5, grad_from=25, seconds=0.01)


def _run(listen_to, steps):
    for step in steps:
        for listener in listen_to:
            listener(None, _record(step))


def test_log_listeners_write_a_reward_png_at_the_last_step(tmp_path):
    config = TrainConfig(out=str(tmp_path / "neg.safetensors"), train_steps=12, log_every=0, validate_every=0)
    listen_to = log_listeners(config)
    _run(listen_to, range(1, 12))
    png = tmp_path / "neg.reward.png"
    assert not png.exists()
    _run(listen_to, [12])
    with Image.open(png) as image:
        image.verify()
        assert image.format == "PNG" and image.size == (700, 400)
    assert sorted(read_jsonl_log(tmp_path / "neg.log.jsonl")) == list(range(1, 13))
    assert not (tmp_path / "neg.tensorboard").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left


def test_the_plot_of_a_resumed_run_covers_every_step(tmp_path, monkeypatch):
    plotted = {}
    monkeypatch.setattr(listeners, "plot_reward_curve", lambda path, rewards: plotted.update(rewards))
    log, png = tmp_path / "neg.log.jsonl", tmp_path / "neg.reward.png"
    _run([jsonl_log(log, fresh=True), reward_plot(png, log_path=log, total=10)], range(1, 7))  # stopped after 6
    with log.open("a") as handle:
        handle.write('{"step": 7, "rew')  # a line cut short when the first run was killed
    _run([jsonl_log(log, fresh=False), reward_plot(png, log_path=log, total=10)], range(5, 11))  # resumed at 4
    assert sorted(plotted) == list(range(1, 11))
    assert plotted[5] == _record(5).reward
    assert sorted(read_jsonl_log(log)) == list(range(1, 11))  # the torn line did not swallow step 5


def test_plot_reward_curve_of_one_step(tmp_path):
    path = listeners.plot_reward_curve(tmp_path / "one.png", {1: 0.5})
    with Image.open(path) as image:
        assert image.format == "PNG"


def test_tensorboard_writes_an_event_file(tmp_path):
    pytest.importorskip("tensorboard")
    config = TrainConfig(out=str(tmp_path / "neg.safetensors"), train_steps=3, log_every=0, report_to="tensorboard")
    _run(log_listeners(config), range(1, 4))
    events = list((tmp_path / "neg.tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1 and events[0].stat().st_size > 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(tmp_path / "neg.tensorboard"))
    accumulator.Reload()
    assert {"train/reward", "train/loss", "train/lr"} <= set(accumulator.Tags()["scalars"])
    assert [event.step for event in accumulator.Scalars("train/reward")] == [1, 2, 3]


def test_missing_tensorboard_is_bad_input_before_training(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if tensorboard were not installed
    with pytest.raises(ReNegError, match="pip install tensorboard"):
        tensorboard_log(tmp_path / "tb", total=1)
    out = tmp_path / "o" / "neg.safetensors"
    assert main(["train", "--report-to", "tensorboard", "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "pip install tensorboard" in error
    assert not (tmp_path / "o").exists()


def test_report_to_is_a_flag_and_a_config_key(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "--report-to {none,tensorboard}" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_status:
        main(["train", "--report-to", "wandb", "--out", str(tmp_path / "n.safetensors")])
    assert exit_status.value.code == 2
    assert TrainConfig().report_to == "none"
    with pytest.raises(ReNegError, match="--report-to must be one of none, tensorboard"):  # a config file's value
        TrainConfig(out=str(tmp_path / "n.safetensors"), report_to="wandb")


def test_validation_reward_is_measured_logged_and_plotted(tmp_path, monkeypatch):
    """Step 0 (the null text) and every N steps, on fixed prompts and noise; drawn in the reward plot."""
    from reneg.methods.reneg.train import Trainer

    config = TrainConfig(model="tiny", reward="contrast", train_steps=4, batch_size=2, steps=3, device="cpu",
                         validate_every=2, validate_prompts=3, log_every=0, lr=0.5,
                         out=str(tmp_path / "neg.safetensors"))
    trainer = Trainer(config)
    plotted = {}
    monkeypatch.setattr(listeners, "plot_reward_curve",
                        lambda path, rewards, validation=None: plotted.update(validation=validation))
    listen_to, records = log_listeners(config), []
    for record in trainer.run():
        for listener in listen_to:
            listener(trainer, record)
        records.append(record)
    values = read_jsonl_log(tmp_path / "neg.validation.jsonl", key="validation_reward")
    assert sorted(values) == [0, 2, 4]
    assert [r.validation_reward is not None for r in records] == [False, True, False, True]
    assert values[4] != values[0]  # the embedding moved, so did the reward of its fully sampled images
    assert plotted["validation"] == values
    lines = [json.loads(line) for line in (tmp_path / "neg.validation.jsonl").read_text().splitlines()]
    assert {line["prompts"] for line in lines} == {3}  # each point names the size of the set it was measured on


def test_a_resumed_run_logs_each_step_once(tmp_path):
    """A run killed after logging steps 1-3 and resumed from its step-2 checkpoint redoes step 3: logged once."""
    from reneg.methods.listeners import jsonl_log

    path = tmp_path / "run.log.jsonl"
    first = jsonl_log(path, fresh=True)
    for step in (1, 2, 3):
        first(None, _record(step))
    with path.open("a") as handle:
        handle.write('{"step": 4, "rew')  # cut short by the kill
    resumed = jsonl_log(path, fresh=False)
    for step in (3, 4):
        resumed(None, _record(step))
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2, 3, 4]
