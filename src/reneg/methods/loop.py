"""The one training loop, shared by ReNeg's global embedding and Diffusion-NPO's delta.

A trainer (``reneg.methods.reneg.train.Trainer``, ``reneg.methods.npo.train.NPOTrainer``) holds the frozen
pipeline and what it learns; it offers ``run()`` (yields a :class:`StepRecord` per optimizer step),
``save_checkpoint()``, ``step``, ``config`` and ``processes``. :func:`run_loop` steps it, calls the listeners
on the main process, checkpoints every ``--checkpoint-every`` steps, and stops on SIGINT/SIGTERM after saving.

:class:`Processes` is one process or those of ``accelerate launch``: the global batch (``--batch-size``)
splits into per-process slices and micro-batches, each drawn from (seed, step, its index in the global batch),
and gradients are averaged over processes, so N processes learn what one does with the same global batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ..config import BATCH_SIZE, arg, require
from ..errors import ReNegError, StopRequested
from ..models.device import resolve_device
from .listeners import jsonl_log, log_lines, progress_bar, reward_plot, tensorboard_log
from .stopping import stop_on_signal
from .validation import VALIDATION_PROMPTS, validation


@dataclass
class StepRecord:
    """What one optimizer step emits to listeners (NPO's DPO route reports its implicit reward margin as
    ``reward``)."""

    step: int
    loss: float
    reward: float
    lr: float
    guidance_scale: float
    grad_from: int
    seconds: float
    skipped: bool = False
    validation_reward: float | None = None  # set by the validation listener on the steps it measures


@dataclass
class LoopSettings:
    """The loop's flags every trainer takes: processes, validation, trackers."""

    micro_batch_size: int | None = BATCH_SIZE(None, "prompts per forward pass; gradients are accumulated up to "
                                                    "--batch-size (default: --batch-size / processes)")
    validate_every: int | None = arg(None, "measure the validation reward (fully sampled images of fixed prompts "
                                           "and noise) every N steps (default: 5 times a run; 0: never)",
                                     metavar="N", min=0)
    validate_prompts: int = arg(VALIDATION_PROMPTS, "how many fixed training prompts (each with its fixed x_T) the "
                                "validation reward is measured on", metavar="N", min=1)
    report_to: str = arg("none", "also log reward/loss/lr per step to this tracker (tensorboard: <out>.tensorboard/, "
                                 "needs `pip install tensorboard`)", choices=["none", "tensorboard"])

    def check_batch(self) -> None:
        """--micro-batch-size divides --batch-size (called by the configs' ``__post_init__``)."""
        micro = self.micro_batch_size or self.batch_size
        require(micro >= 1 and self.batch_size % micro == 0,
                f"--batch-size {self.batch_size} must be a multiple of --micro-batch-size {micro}")
        require(self.micro_batch_size is None or self.micro_batch_size <= self.batch_size,
                f"--micro-batch-size {self.micro_batch_size} must not exceed --batch-size {self.batch_size}")


class Processes:
    """The processes of one run and how its global batch of ``batch_size`` splits among them."""

    def __init__(self, device: str, *, batch_size: int, micro_batch_size: int | None):
        from accelerate import Accelerator

        requested = resolve_device(device)
        self.accelerator = acc = Accelerator(cpu=requested.type == "cpu", device_placement=False)
        self.device = acc.device if acc.num_processes > 1 else requested  # one process honours --device
        micro = micro_batch_size or batch_size // acc.num_processes
        require(batch_size % (acc.num_processes * micro) == 0 and micro >= 1,
                f"--batch-size {batch_size} must be a multiple of processes ({acc.num_processes}) x "
                f"--micro-batch-size ({micro_batch_size or micro})")
        self.micro_batch_size = micro
        self.per_process = batch_size // acc.num_processes
        self.accumulation_steps = self.per_process // micro

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    def slice(self, micro: int) -> range:
        """Indices in the global batch of this process's micro-batch ``micro``."""
        start = self.accelerator.process_index * self.per_process + micro * self.micro_batch_size
        return range(start, start + self.micro_batch_size)

    def all_reduce(self, parameters) -> None:
        """The mean gradient over processes (each holds the mean over its own slices)."""
        if self.accelerator.num_processes == 1:
            return
        for parameter in parameters:
            grad = parameter.grad if parameter.grad is not None else torch.zeros_like(parameter)
            parameter.grad = self.accelerator.reduce(grad, reduction="mean")

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """A per-process scalar (or rows) averaged over processes."""
        return self.accelerator.reduce(value, reduction="mean") if self.accelerator.num_processes > 1 else value

    def gather(self, rows: torch.Tensor) -> torch.Tensor:
        return self.accelerator.gather(rows) if self.accelerator.num_processes > 1 else rows


Listener = Callable[[object, StepRecord], None]


def checkpointer(every: int) -> Listener:
    """A listener that saves a checkpoint every ``every`` steps (0: never; the end of training always saves)."""

    def listen(trainer, record: StepRecord) -> None:
        if every and record.step % every == 0 and record.step < trainer.config.train_steps:
            trainer.save_checkpoint()

    return listen


def run_loop(trainer, listeners: tuple[Listener, ...] = (), *, checkpoint_every: int = 0,
             stop: dict[str, str | None] | None = None) -> None:
    """Step ``trainer`` to its ``train_steps``; listeners on the main process, a checkpoint every
    ``checkpoint_every`` steps and at the end; SIGINT/SIGTERM (or ``stop["signal"]`` set by another thread: the
    UI's Stop button) stop between steps after a checkpoint."""
    listeners = (*(listeners if trainer.processes.is_main else ()), checkpointer(checkpoint_every))
    try:
        with stop_on_signal(stop) as stop:
            for record in trainer.run():
                for listener in listeners:
                    listener(trainer, record)
                if stop["signal"]:
                    raise StopRequested.after(stop["signal"], trainer.step, trainer.save_checkpoint())
    finally:  # a progress bar ends its line before any error's one line
        for listener in listeners:
            getattr(listener, "close", lambda: None)()
    trainer.save_checkpoint()  # first the checkpoint: a failure writing the result then loses nothing


# -- the listeners of the training commands -----------------------------------------------------------------------
def _tensorboard_for(stem: Path, config) -> tuple:
    return (tensorboard_log(Path(f"{stem}.tensorboard"), total=config.train_steps),)


#: ``--report-to NAME`` -> the listeners of that tracker.
REPORTERS = {"none": lambda stem, config: (), "tensorboard": _tensorboard_for}


def log_listeners(config, stem: str | Path | None = None, *, validate: bool = True) -> tuple:
    """The CLI's listeners: a progress bar, log lines, ``<stem>.log.jsonl``, ``<stem>.reward.png``, the validation
    curve ``<stem>.validation.jsonl`` (when ``validate``) and the ``--report-to`` tracker (checked here, before
    training starts). ``stem``: ``--out`` without its suffix unless given."""
    stem = Path(stem) if stem is not None else Path(config.out).with_suffix("")
    log_path = Path(f"{stem}.log.jsonl")
    report_to = getattr(config, "report_to", "none")
    if report_to not in REPORTERS:
        raise ReNegError(f"--report-to must be one of {', '.join(REPORTERS)}, got '{report_to}'")
    every = getattr(config, "validate_every", 0) if validate else 0
    every = max(1, config.train_steps // 5) if every is None else every
    validation_path = Path(f"{stem}.validation.jsonl")
    checks = ()
    if every:
        checks = (validation(validation_path, every=every, fresh=not config.resume,
                             count=getattr(config, "validate_prompts", VALIDATION_PROMPTS)),)
    return (*checks, progress_bar(config.train_steps), log_lines(config.log_every),  # validation first: it fills
            jsonl_log(log_path, fresh=not config.resume),  # the record; the log before reward_plot, which reads it
            reward_plot(Path(f"{stem}.reward.png"), log_path=log_path, total=config.train_steps,
                        validation_path=validation_path if every else None),
            *REPORTERS[report_to](stem, config))
