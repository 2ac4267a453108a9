"""``reneg train`` from the UI: the same :class:`~reneg.methods.reneg.train.Trainer`, listeners and files as the
command, run in a background thread that the page polls, and stopped between steps by the loop's own stop flag.

The thread shares the page's loaded model: it holds ``lock`` while a step and its listeners run, so the grid and
the win rates (which hold it for their whole call) wait for the end of a step, never a step for them.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field, fields
from pathlib import Path

from ..errors import ReNegError, StopRequested
from ..methods.loop import StepRecord, log_listeners, run_loop
from ..methods.reneg.train import TrainConfig, Trainer, check_output
from ..models.loading import LoadedModel
from .grid import model_flags

#: What the Stop button writes into the loop's stop flag (the loop's message reads "stopped by ...").
STOP_BUTTON = "the Stop button"


def train_default(name: str):
    """``reneg train``'s default of the setting ``name`` (train steps, lr, batch size, ...)."""
    return next(f.default for f in fields(TrainConfig) if f.name == name)


@dataclass
class TrainRequest:
    """What the training tab asks; empty prompts and reward mean the model's, as the command's flags do."""

    prompts: str
    reward: str
    train_steps: int
    lr: float
    guidance_scale: float | None
    steps: int | None
    batch_size: int
    validate_prompts: int
    out: str
    prompts_file: str = ""

    def config(self, model: LoadedModel) -> TrainConfig:
        """The :class:`TrainConfig` of ``reneg train`` with these flags, on ``model``'s device and dtype."""
        if not self.out or not self.out.strip():
            raise ReNegError("the output file is empty: give where the learned .safetensors goes")
        lines = [line.strip() for line in (self.prompts or "").splitlines() if line.strip()]
        return TrainConfig(**model_flags(model), prompt=lines, prompts=_text(self.prompts_file),
                           reward=_text(self.reward), train_steps=_whole(self.train_steps, "train steps"),
                           lr=float(_given(self.lr, "lr")), guidance_scale=self.guidance_scale,
                           steps=None if self.steps is None else _whole(self.steps, "sampling steps"),
                           batch_size=_whole(self.batch_size, "batch size"),
                           validate_prompts=_whole(self.validate_prompts, "validation prompts"),
                           out=self.out.strip())


def _text(value: str | None) -> str | None:
    """A text field's value, None when empty (the flag not given)."""
    return (value or "").strip() or None


def _given(value, what: str):
    if value is None:
        raise ReNegError(f"the {what} is empty: give a number")
    return value


def _whole(value, what: str) -> int:
    if int(_given(value, what)) != value:
        raise ReNegError(f"the {what} must be a whole number, got {value}")
    return int(value)


@dataclass
class TrainingJob:
    """One training run in a background thread: its step records, its state and, at the end, its message."""

    model: LoadedModel
    config: TrainConfig
    lock: threading.Lock
    records: list[StepRecord] = field(default_factory=list)
    stop_flag: dict = field(default_factory=lambda: {"signal": None})
    message: str = ""
    error: str | None = None
    saved: str | None = None
    thread: threading.Thread | None = None

    def start(self) -> TrainingJob:
        """Check the inputs and build the trainer here (bad input is refused at once), then train in a thread."""
        check_output(self.config.out)
        with self.lock:
            trainer = Trainer(self.config, model=self.model)
        self.thread = threading.Thread(target=self._run, args=(trainer,), name="reneg-ui-train", daemon=True)
        self.thread.start()
        return self

    @property
    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def stop(self) -> None:
        """Ask the loop to stop after the current step (it saves its checkpoint; the job then the file)."""
        self.stop_flag["signal"] = STOP_BUTTON

    def wait(self, timeout: float | None = None) -> None:
        if self.thread is not None:
            self.thread.join(timeout)

    @property
    def validation_path(self) -> Path:
        return Path(f"{Path(self.config.out).with_suffix('')}.validation.jsonl")

    def validation(self) -> list[tuple[int, float]]:
        """(step, validation reward) measured so far (step 0: the null text), from the listener's file."""
        if not self.validation_path.is_file():
            return []
        points = []
        for line in self.validation_path.read_text().splitlines():
            try:
                entry = json.loads(line)
                points.append((int(entry["step"]), float(entry["validation_reward"])))
            except (ValueError, KeyError, TypeError):
                continue  # a line being written
        return points

    def curve(self) -> list[tuple[int, float, str]]:
        """(step, reward, series) rows: the batch reward of every step and the validation reward."""
        return ([(r.step, r.reward, "batch reward") for r in list(self.records)]
                + [(step, value, "validation reward") for step, value in self.validation()])

    def _run(self, trainer: Trainer) -> None:
        try:
            self._train(trainer)
        except ReNegError as error:
            self.error = str(error)
        except Exception as error:  # noqa: BLE001 - the page shows one line, as the CLI does
            self.error = f"internal error: {type(error).__name__}: {error}"

    def _train(self, trainer: Trainer) -> None:
        steps = _held(self.lock, trainer.run())
        trainer.run = lambda: steps  # each step, and the listeners after it, with the model's lock held
        out = self.config.out
        try:
            run_loop(trainer, (*log_listeners(self.config), self._record),
                     checkpoint_every=self.config.checkpoint_every, stop=self.stop_flag)
            done = f"trained {trainer.step} steps: saved {out}"
        except StopRequested as stopped:
            done = f"{stopped}; saved {out}, the embedding after step {trainer.step}"
        finally:
            steps.close()
        trainer.embedding().save(out)
        self.saved, self.message = out, done

    def _record(self, trainer: Trainer, record: StepRecord) -> None:
        """The listener that keeps the step records for the page's curve."""
        self.records.append(record)


def _held(lock: threading.Lock, steps):
    """``steps`` (a generator) advanced with ``lock`` held, and still held while its consumer handles a step."""
    while True:
        with lock:
            step = next(steps, None)
            if step is None:
                return
            yield step
