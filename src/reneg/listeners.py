"""Listeners of the training loop: progress bar, log lines, a JSONL log of every step."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from tqdm.auto import tqdm


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

    return listen


def jsonl_log(path: str | Path, *, fresh: bool):
    """Write every step record to a JSON-lines file: a fresh run starts it anew, a resumed one appends."""
    path, state = Path(path), {"mode": "w" if fresh else "a"}

    def listen(trainer, record):
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open(state["mode"]) as handle:
            handle.write(json.dumps(asdict(record)) + "\n")
        state["mode"] = "a"

    return listen


def log_lines(every: int):
    def listen(trainer, record):
        if every and (record.step % every == 0 or record.step == 1):
            tqdm.write(f"step {record.step}  reward {record.reward:.5f}  lr {record.lr:.3e}  "
                       f"t-index {record.grad_from}  {record.seconds:.2f}s")

    return listen


def log_listeners(config) -> tuple:
    """The CLI's listeners: a progress bar, log lines and ``<out>.log.jsonl``."""
    log_path = Path(config.out).with_suffix(".log.jsonl")
    return progress_bar(config.train_steps), log_lines(config.log_every), jsonl_log(log_path, fresh=not config.resume)
