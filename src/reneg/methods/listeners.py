"""Listeners of the training loop: progress bar, log lines, a JSONL log, TensorBoard, a reward-curve plot."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

from tqdm.auto import tqdm

from ..errors import ReNegError
from ..io import atomic_path


def progress_bar(total: int):
    """A tqdm bar, opened at the first step (so that bad input prints nothing but its error)."""
    state = {}

    def listen(trainer, record):
        bar = state.get("bar") or state.setdefault("bar", tqdm(total=total, initial=record.step - 1, desc="train",
                                                                 unit="step"))
        bar.n = record.step
        bar.set_postfix(reward=f"{record.reward:.4f}", lr=f"{record.lr:.2e}")
        if record.step >= total:
            bar.close()

    listen.close = lambda: state["bar"].close() if "bar" in state else None  # a loop that stops early
    return listen


def _ends_mid_line(path: Path) -> bool:
    """Whether ``path`` ends in a line cut short (an interrupted run); checked before a resumed run appends."""
    if not path.is_file() or path.stat().st_size == 0:
        return False
    with path.open("rb") as handle:
        handle.seek(-1, 2)
        return handle.read(1) != b"\n"


def keep_steps_before(path: Path, step: int) -> None:
    """Cut a JSON-lines log back to the steps before ``step``: a run resumed from a checkpoint redoes the steps
    an interrupted run logged after it, and each step is logged once. A line cut short goes too."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if int(json.loads(line)["step"]) < step:
                kept.append(line)
        except (ValueError, KeyError, TypeError):
            continue
    with atomic_path(path) as tmp:
        tmp.write_text("".join(line + "\n" for line in kept))


def jsonl_log(path: str | Path, *, fresh: bool):
    """Write every step record to a JSON-lines file: a fresh run starts it anew, a resumed one goes on from the
    checkpoint's step (what an interrupted run logged after it is redone, not repeated)."""
    path, state = Path(path), {"mode": "w" if fresh else "a"}

    def listen(trainer, record):
        path.parent.mkdir(parents=True, exist_ok=True)
        if state["mode"] == "a" and not state.get("cut"):
            keep_steps_before(path, record.step)
            state["cut"] = True
        separator = "\n" if state["mode"] == "a" and _ends_mid_line(path) else ""
        with path.open(state["mode"]) as handle:
            handle.write(separator + json.dumps(asdict(record)) + "\n")
        state["mode"] = "a"

    return listen


def log_lines(every: int):
    def listen(trainer, record):
        if every and (record.step % every == 0 or record.step == 1):
            tqdm.write(f"step {record.step}  reward {record.reward:.5f}  lr {record.lr:.3e}  "
                       f"t-index {record.grad_from}  {record.seconds:.2f}s", file=sys.stderr)  # stdout: the result

    return listen


def _is_main_process(trainer) -> bool:
    accelerator = getattr(trainer, "accelerator", None)
    return accelerator is None or accelerator.is_main_process


def tensorboard_log(log_dir: str | Path, *, total: int):
    """Write reward, loss, lr, guidance scale and step time per step to TensorBoard event files in ``log_dir``.

    Checks for the ``tensorboard`` package when built, so that a missing one fails before training starts.
    A resumed run purges the events at and after its first step (those of an interrupted run).
    """
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ReNegError("--report-to tensorboard needs the tensorboard package: pip install tensorboard "
                         "(or pip install 'reneg[tensorboard]'), or pass --report-to none") from None
    state = {}

    def listen(trainer, record):
        if not _is_main_process(trainer):
            return
        writer = state.get("writer") or state.setdefault(
            "writer", SummaryWriter(str(log_dir), purge_step=record.step))
        for name in ("reward", "loss", "lr", "guidance_scale", "seconds"):
            writer.add_scalar(f"train/{name}", getattr(record, name), record.step)
        if record.step >= total:
            writer.close()

    return listen


def read_jsonl_log(path: str | Path, key: str = "reward") -> dict[int, float]:
    """``{step: value of key}`` of a JSON-lines log; a step logged twice (a resumed run) keeps its last value,
    a line without the key or cut short by an interrupted run is skipped."""
    path, values = Path(path), {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                entry = json.loads(line)
                values[int(entry["step"])] = float(entry[key])
            except (ValueError, KeyError, TypeError):
                continue
    return values


def plot_reward_curve(path: str | Path, rewards: dict[int, float], *, window: int | None = None,
                      validation: dict[int, float] | None = None) -> Path:
    """Save a PNG (matplotlib's Agg canvas) of the reward per step, its trailing moving average and, where
    measured, the validation reward, atomically."""
    import numpy as np
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    steps = np.array(sorted(rewards))
    values = np.array([rewards[s] for s in steps], dtype=float)
    window = window or max(1, min(len(values), max(5, len(values) // 20)))
    sums = np.concatenate([[0.0], np.cumsum(values)])
    starts = np.maximum(np.arange(1, len(values) + 1) - window, 0)
    moving_average = (sums[1:] - sums[starts]) / (np.arange(1, len(values) + 1) - starts)
    figure = Figure(figsize=(7, 4), dpi=100)
    axes = figure.subplots()
    axes.plot(steps, values, color="tab:blue", alpha=0.35, linewidth=1, label="reward (batch mean)")
    axes.plot(steps, moving_average, color="tab:blue", linewidth=2, label=f"moving average ({window} steps)")
    if validation:
        points = sorted(validation)
        axes.plot(points, [validation[p] for p in points], color="tab:orange", linewidth=2, marker="o",
                  label="validation reward (fixed prompts and noise, full sampling)")
    axes.set_xlabel("step")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_ylabel("reward")
    axes.grid(alpha=0.3)
    axes.legend(loc="best")
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    return Path(path)


def reward_plot(path: str | Path, *, log_path: str | Path | None, total: int,
                validation_path: str | Path | None = None):
    """At the last step, plot the reward curve of the whole run (``log_path`` covers resumed runs) to ``path``,
    with the validation reward of ``validation_path`` where it was measured."""
    seen = {}

    def listen(trainer, record):
        seen[record.step] = record.reward
        if record.step >= total and _is_main_process(trainer):
            rewards = {**(read_jsonl_log(log_path) if log_path else {}), **seen}
            validation = read_jsonl_log(validation_path, key="validation_reward") if validation_path else {}
            plot_reward_curve(path, rewards, **({"validation": validation} if validation else {}))

    return listen
