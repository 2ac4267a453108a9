"""The suite's eval sections: ``reneg eval`` throughput (this tree vs a revision, same run) and eval's generation
batch (speed and bit-identity): ``python -m benchmarks --only eval,batch`` (the runner: :mod:`benchmarks.suite`).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import HELDOUT, ROOT, env, median, now

# ---------------------------------------------------------------- eval's generation batch


def batch_sizes(rounds: int, device: str, items_count: int = 32, sizes=(4, 8, 16, 32)) -> str:
    """Images/s of eval's image path (handcrafted negative, per-item x_T) at several generation batches, and whether
    the PNG pixels equal those of batch 4 (the default)."""
    import numpy as np
    import torch

    from reneg.evaluate.runner import EvalConfig, item_latents, make_plan
    from reneg.io import to_pil

    plan = make_plan(EvalConfig(prompts=str(HELDOUT), limit=items_count, methods=["handcrafted"], device=device,
                                out=tempfile.mkdtemp(prefix="reneg-bench-batch-")))
    method, items = plan.methods["handcrafted"], plan.items

    def run(size):
        pixels = []
        for start in range(0, len(items), size):
            batch = items[start:start + size]
            images = method.images(plan.model, [i.prompt.text for i in batch], item_latents(plan, batch),
                                   guidance_scale=plan.guidance_scale, steps=plan.steps)
            pixels += [np.asarray(image) for image in to_pil(images)]
        return np.stack(pixels)

    reference = run(4)  # also the warm-up
    changed = {size: int((run(size) != reference).sum()) for size in sizes}
    times = {size: [] for size in sizes}
    for _ in range(rounds):
        for size in sizes:
            start = now()
            run(size)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times[size].append(now() - start)
    base = median(times[4])
    lines = ["### Eval's generation batch: speed and bit-identity",
             f"world, {device}, {len(items)} items of benchmarks/world_heldout_100.json, handcrafted negative, "
             f"{plan.steps} steps; median of {rounds}\n",
             "| batch | images/s | speed ratio to batch 4 | uint8 values that differ from batch 4 (of "
             f"{reference.size}) |", "| --- | --- | --- | --- |"]
    lines += [f"| {size} | {len(items) / median(v):.2f} | {base / median(v):.2f} | {changed[size]} |"
              for size, v in times.items()]
    return "\n".join(lines)


# ---------------------------------------------------------------- eval throughput


def eval_once(src: Path, out: Path, prompts: int, device: str) -> dict:
    """One ``reneg eval`` in its own process; seconds of generation and scoring from its tqdm bars' totals."""
    command = [sys.executable, "-m", "benchmarks.suite", "--child", "eval", str(out), str(prompts), device]
    result = subprocess.run(command, env=env(src), cwd=ROOT, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"eval with {src} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def eval_child(out: str, prompts: int, device: str) -> dict:
    """Time ``evaluate`` with its generation and scoring phases (wrapped here, so any revision can be timed)."""
    from reneg.evaluate import runner

    phases = {"generate": 0.0, "score": 0.0, "images": 0, "scores": 0}
    generate_missing, score_missing = runner.generate_missing, runner.score_missing

    def timed_generate(plan, store, batches=None, **kwargs):
        start = now()
        generate_missing(plan, store, batches, **kwargs)
        phases["generate"] += now() - start
        phases["images"] += len(plan.items) * len(plan.runs)

    def timed_score(plan, store, cache, batches=None, **kwargs):
        start = now()
        score_missing(plan, store, cache, batches, **kwargs)
        phases["score"] += now() - start
        phases["scores"] += len(plan.items) * len(plan.runs) * len(plan.metrics)

    runner.generate_missing, runner.score_missing = timed_generate, timed_score
    config = runner.EvalConfig(prompts=str(HELDOUT), limit=prompts, device=device, out=out,
                               methods=["null", "handcrafted", "negative-prompt=blurry, noisy"])
    start = now()
    runner.evaluate(config)
    phases["total"] = now() - start
    return phases


def eval_throughput(rounds: int, device: str, prompts: int, base: str | None) -> str:
    trees = {"this tree": ROOT / "src"}
    work = Path(tempfile.mkdtemp(prefix="reneg-bench-eval-"))
    if base:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(work / "base"), base], check=True,
                       capture_output=True)
        trees[f"at {base}"] = work / "base" / "src"
    results = {name: [] for name in trees}
    try:
        for round_ in range(rounds):
            for index, (name, src) in enumerate(trees.items()):
                results[name].append(eval_once(src, work / f"r{round_}t{index}", prompts, device))
    finally:
        if base:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(work / "base")],
                           capture_output=True)
    lines = ["### reneg eval throughput",
             f"world, {device}, first {prompts} prompts of benchmarks/world_heldout_100.json x 3 methods (null, "
             f"handcrafted, negative-prompt), the world's 7 metrics + 2 diagnostics, default batch; each run a fresh "
             f"process and a fresh --out; median of {rounds}\n",
             "| tree | total s | generation s | scoring s | generation share | images/s | scores/s |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, values in results.items():
        total, gen, score = (median([v[k] for v in values]) for k in ("total", "generate", "score"))
        lines.append(f"| {name} | {total:.1f} | {gen:.1f} | {score:.1f} | {gen / total:.0%} | "
                     f"{values[0]['images'] / gen:.2f} | {values[0]['scores'] / score:.1f} |")
    if base:
        new, old = results["this tree"], results[f"at {base}"]
        for key in ("total", "generate", "score"):
            ratios = [n[key] / o[key] for n, o in zip(new, old)]
            lines.append(f"\n{key}: this tree / {base} = **{median(ratios):.3f}** (per round: "
                         f"{', '.join(f'{r:.3f}' for r in ratios)})")
    return "\n".join(lines)
