"""Section ``memory``: peak memory of a training step at T = 10, 30, 100 with the same grad window, each in a
fresh process (CPU: peak RSS during the step minus RSS before it; CUDA: ``torch.cuda.max_memory_allocated``)."""

from __future__ import annotations

from benchmarks.common import child, median, now, peak_mib, reset_peak
from benchmarks.common import trainer as make_trainer
from benchmarks.naive import naive_step


def memory_child(kind: str, steps: int, grad_window: int, batch: int, device: str, timed: bool = False) -> dict:
    """Peak memory of the first step in this fresh process; with ``timed``, also the seconds of a second step."""
    import torch

    trainer = make_trainer(batch, steps, grad_window, device)
    cuda = trainer.device.type == "cuda"
    run = trainer.train_step if kind == "reneg" else naive_step(trainer, detach=kind == "naive-callback")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated() / 2**20
    else:
        before = reset_peak()  # the peak of loading the models is not the step's
    run()
    if cuda:
        torch.cuda.synchronize()
    result = {"peak_delta_mib": (torch.cuda.max_memory_allocated() / 2**20 if cuda else peak_mib()) - before,
              "before_mib": before}
    if timed:  # the first step warmed up; time the second
        start = now()
        run()
        if cuda:
            torch.cuda.synchronize()
        result["seconds"] = now() - start
    return result


def memory(rounds: int, device: str) -> str:
    settings = [10, 30, 100]
    results = {steps: [] for steps in settings}
    for _ in range(rounds):
        for steps in settings:
            results[steps].append(child("memory", "reneg", str(steps), "3", "8", device)["peak_delta_mib"])
    base = median(results[10])
    what = "torch.cuda.max_memory_allocated - allocated before" if device.startswith("cuda") else \
        "peak RSS during the step - RSS before it"
    lines = ["### Peak memory of a training step vs T (same grad window 3)",
             f"world, batch 8, {device}; each value a fresh process ({what}); median of {rounds}\n",
             "| T | peak delta MiB (median) | all rounds | ratio to T = 10 |", "| --- | --- | --- | --- |"]
    lines += [f"| {steps} | {median(v):.1f} | {', '.join(f'{x:.0f}' for x in v)} | {median(v) / base:.3f} |"
              for steps, v in results.items()]
    return "\n".join(lines)
