"""The benchmark suite: same-run ratios on the shapes world, written as BENCHMARKS.md-ready markdown.

    OMP_NUM_THREADS=1 python -m benchmarks [--only floor,memory,naive,generation,eval,dnp,adapt,npo] [--rounds 5]
        [--negative FILE] [--npo DIR] [--eval-base REV] [--out FILE]

Sections (every comparison is a ratio of variants interleaved round after round in the same run, so that the
drifts of a shared machine hit all of them alike; medians of ``--rounds`` >= 5):

- ``floor``: a training step (``Trainer.train_step``, world, batch 8, T = 30, grad window 10) / the sum of its
  parts timed alone at the same k: text encoding, the no-grad CFG prefix x_T -> x_t, the grad call (guided
  model call at x_t, forward + backward to the embedding), VAE decode (forward + backward) and the reward
  (forward + backward). Target <= 1.05.
- ``memory``: peak memory of one training step at T = 10, 30, 100 with the same grad window (3), each in a
  fresh process (CPU: peak RSS during the step minus RSS before it; CUDA: ``torch.cuda.max_memory_allocated``).
  Target: T = 100 within 5 % of T = 10.
- ``naive``: the same step as reward-finetuning scripts write it, diffusers' ``StableDiffusionPipeline`` called
  with gradients (its ``__call__`` unwrapped from ``no_grad``) and a ``callback_on_step_end`` that detaches the
  latents before the last step (DRaFT-1-like), and with the full chain kept (no callback); time and peak memory
  as ratios to reneg's step, each in a fresh process.
- ``generation``: ``reneg generate``'s image path (``generate_images`` + PIL) and the command itself (PNG files)
  in images/s, as a ratio to ``StableDiffusionPipeline(...)`` on the same model, prompts, batch and steps.
- ``eval``: ``reneg eval`` images/s, scores/s and the generation/scoring split, on the first ``--eval-prompts``
  of benchmarks/world_heldout_100.json x 3 methods; with ``--eval-base REV`` also the same command from a
  worktree of REV, interleaved, and the new/old time ratio.
- ``batch``: eval's image path at generation batches 4, 8, 16, 32: images/s and how many PNG values differ from
  batch 4's (the UNet's float results depend on the batch).
- ``dnp``, ``adapt``, ``npo``: benchmarks/dnp_time.py, adapt_time.py and npo_time.py (per-prompt or per-image
  time as ratios to plain generation); ``adapt`` needs ``--negative FILE``, ``npo`` a ``reneg npo`` output
  (``--npo DIR``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("floor", "memory", "naive", "generation", "eval", "batch", "dnp", "adapt", "npo")
HELDOUT = ROOT / "benchmarks" / "world_heldout_100.json"
#: how a folded script's traceback names bad input (reneg.errors.ReNegError)
BAD_INPUT = "reneg.errors.ReNegError: "


def now() -> float:
    return time.perf_counter()


def median(values) -> float:
    return statistics.median(values)


def _env(src: Path | None = None) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    env["PYTHONPATH"] = str(src or ROOT / "src") + os.pathsep + str(ROOT)
    return env


def _child(*args: str) -> dict:
    """Run ``python -m benchmarks.suite --child ...`` in a fresh process; its last stdout line is JSON."""
    result = subprocess.run([sys.executable, "-m", "benchmarks.suite", "--child", *args], env=_env(), cwd=ROOT,
                            capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"benchmark child {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith(field + ":")) / 1024  # kB


def reset_peak() -> float:
    """Reset this process's peak RSS (Linux: ``clear_refs`` 5 resets VmHWM); returns the RSS now, MiB."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")
    return _status_mib("VmRSS")


def peak_mib() -> float:
    """Peak RSS since the last :func:`reset_peak` (VmHWM), MiB."""
    return _status_mib("VmHWM")


def _trainer(batch: int, steps: int, grad_window: int, device: str = "cpu"):
    from reneg.methods.reneg.train import TrainConfig, Trainer

    out = Path(tempfile.mkdtemp(prefix="reneg-bench-")) / "negative.safetensors"
    config = TrainConfig(batch_size=batch, steps=steps, grad_window=grad_window, device=device, out=str(out),
                         train_steps=1000, validate_every=0, log_every=0)
    return Trainer(config)


# ---------------------------------------------------------------- floor ratio


def step_parts(trainer, k: int) -> dict[str, float]:
    """Seconds of each part of a training step at step index k, each timed alone (synchronised on CUDA)."""
    import torch

    from reneg.core.denoiser import GuidedDenoiser
    from reneg.core.rollout import text_branches
    from reneg.methods.randomness import draw_batch

    family, device = trainer.family, trainer.device
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    batch = draw_batch(family, trainer.prompt_texts, seed=trainer.config.seed, step=trainer.step,
                       indices=range(trainer.config.batch_size), resolution=trainer.resolution, steps=trainer.steps,
                       grad_window=trainer.grad_window)
    negative = trainer.params.negative()
    parts = {}
    start = now()
    branches = text_branches(family, family.encode(batch.prompts), negative, resolution=trainer.resolution)
    sync()
    parts["text encoding"] = now() - start
    denoiser = GuidedDenoiser(family.model, branches, trainer.params.scale())
    scheduler = family.scheduler
    start = now()
    latents = batch.latents.to(device)
    scheduler.set_timesteps(trainer.steps, device=device)
    with torch.no_grad():
        for t in scheduler.timesteps[:k]:
            latents = scheduler.step(denoiser(scheduler.scale_model_input(latents, t), t), t, latents,
                                     return_dict=False)[0]
    sync()
    parts["no-grad CFG prefix"] = now() - start
    t = scheduler.timesteps[k]
    start = now()
    x0 = family.predict_x0(denoiser(scheduler.scale_model_input(latents, t), t), latents, t)
    x0.backward(torch.full_like(x0, 1e-3))
    sync()
    parts["grad call (fwd + bwd)"] = now() - start
    latent = x0.detach().requires_grad_()
    start = now()
    images = family.decode(latent)
    images.backward(torch.full_like(images, 1e-3))
    sync()
    parts["VAE decode (fwd + bwd)"] = now() - start
    pixels = images.detach().requires_grad_()
    start = now()
    (-trainer.reward(pixels, batch.prompts).float().mean()).backward()
    sync()
    parts["reward (fwd + bwd)"] = now() - start
    trainer.optimizer.zero_grad(set_to_none=True)
    return parts


def floor(rounds: int, device: str) -> str:
    trainer = _trainer(8, 30, 10, device)
    trainer.train_step()  # warm-up
    steps, parts, ratios = [], {}, []
    for _ in range(rounds):
        record = trainer.train_step()
        trainer.step -= 1  # time the parts on the very batch and k of the step just taken
        timed = step_parts(trainer, record.grad_from)
        trainer.step += 1
        steps.append(record.seconds)
        for name, seconds in timed.items():
            parts.setdefault(name, []).append(seconds)
        ratios.append(record.seconds / sum(timed.values()))
    lines = ["### Floor ratio: a training step / the sum of its parts timed alone",
             f"world, batch 8, T = 30, grad window 10, {device}; {rounds} rounds, parts at the step's own k\n",
             "| part | median s |", "| --- | --- |"]
    lines += [f"| {name} | {median(values):.3f} |" for name, values in parts.items()]
    lines += [f"| **sum of parts** | {median([sum(v) for v in zip(*parts.values())]):.3f} |",
              f"| **training step** | {median(steps):.3f} |",
              f"\n**floor ratio** (median of per-round step / sum): **{median(ratios):.3f}** "
              f"(rounds: {', '.join(f'{r:.3f}' for r in ratios)}; target <= 1.05)"]
    return "\n".join(lines)


# ---------------------------------------------------------------- memory (fresh process per setting)


def _memory_child(kind: str, steps: int, grad_window: int, batch: int, device: str, timed: bool = False) -> dict:
    """Peak memory of the first step in this fresh process; with ``timed``, also the seconds of a second step."""
    import torch

    trainer = _trainer(batch, steps, grad_window, device)
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
            results[steps].append(_child("memory", "reneg", str(steps), "3", "8", device)["peak_delta_mib"])
    base = median(results[10])
    what = "torch.cuda.max_memory_allocated - allocated before" if device.startswith("cuda") else \
        "peak RSS during the step - RSS before it"
    lines = ["### Peak memory of a training step vs T (same grad window 3)",
             f"world, batch 8, {device}; each value a fresh process ({what}); median of {rounds}\n",
             "| T | peak delta MiB (median) | all rounds | ratio to T = 10 |", "| --- | --- | --- | --- |"]
    lines += [f"| {steps} | {median(v):.1f} | {', '.join(f'{x:.0f}' for x in v)} | {median(v) / base:.3f} |"
              for steps, v in results.items()]
    return "\n".join(lines)


# ---------------------------------------------------------------- naive step through diffusers' pipeline


def naive_step(trainer, *, detach: bool):
    """One step as reward-finetuning scripts write it: the diffusers pipeline with gradients, the learned negative as
    ``negative_prompt_embeds``; ``detach``: a ``callback_on_step_end`` cuts the chain before the last step."""
    import torch

    from reneg.methods.randomness import draw_batch

    pipe, family = trainer.model.pipe, trainer.family
    call = type(pipe).__call__.__wrapped__  # diffusers wraps __call__ in torch.no_grad()

    def cut(pipeline, index, t, kwargs):
        return {"latents": kwargs["latents"].detach()} if index < trainer.steps - 1 else {}

    def step():
        batch = draw_batch(family, trainer.prompt_texts, seed=trainer.config.seed, step=trainer.step,
                           indices=range(trainer.config.batch_size), resolution=trainer.resolution,
                           steps=trainer.steps, grad_window=trainer.grad_window)
        with torch.no_grad():
            prompt_embeds = family.encode(batch.prompts).embeds
        negative = trainer.params.negative().embeds.expand(len(batch.prompts), -1, -1)
        with torch.enable_grad():
            images = call(pipe, prompt_embeds=prompt_embeds, negative_prompt_embeds=negative,
                          latents=batch.latents.to(trainer.device), num_inference_steps=trainer.steps,
                          guidance_scale=trainer.guidance_scale, output_type="pt",
                          callback_on_step_end=cut if detach else None,
                          callback_on_step_end_tensor_inputs=["latents"]).images
            loss = -trainer.reward(images, batch.prompts).float().mean()
            loss.backward()
        trainer.optimizer.step()
        trainer.optimizer.zero_grad(set_to_none=True)
        trainer.step += 1

    return step


def naive(rounds: int, device: str) -> str:
    kinds = {"reneg step (grad window 10, one grad call)": "reneg",
             "naive: pipeline + callback detaching all but the last step": "naive-callback",
             "naive: pipeline, full chain (no detach)": "naive-full"}
    results = {name: [] for name in kinds}
    for _ in range(rounds):
        for name, kind in kinds.items():
            results[name].append(_child("memory", kind, "30", "10", "8", device, "timed"))
    ref = results["reneg step (grad window 10, one grad call)"]
    ref_s, ref_m = median([r["seconds"] for r in ref]), median([r["peak_delta_mib"] for r in ref])
    lines = ["### Versus a naive step through diffusers' StableDiffusionPipeline",
             f"world, batch 8, T = 30, {device}; each value a fresh process: peak memory of its first step, seconds "
             f"of its second; median of {rounds}\n",
             "| step | s (median) | peak delta MiB (median) | time ratio to reneg | memory ratio to reneg |",
             "| --- | --- | --- | --- | --- |"]
    for name, values in results.items():
        s, m = median([r["seconds"] for r in values]), median([r["peak_delta_mib"] for r in values])
        lines.append(f"| {name} | {s:.2f} | {m:.1f} | {s / ref_s:.2f} | {m / ref_m:.2f} |")
    return "\n".join(lines)


# ---------------------------------------------------------------- generation vs diffusers


def generation(rounds: int, device: str, batch: int = 8, prompts_count: int = 16) -> str:
    import torch

    from reneg.generate import GenerateConfig, generate, generate_images, method_for
    from reneg.io import to_pil
    from reneg.models.loading import load_model
    from reneg.prompts import load_benchmark

    model = load_model(None, device=device)
    pipe, defaults = model.pipe, model.defaults
    prompts = [p.text for p in load_benchmark(defaults.benchmark)][:prompts_count]
    steps, scale = defaults.num_inference_steps, defaults.guidance_scale
    work = Path(tempfile.mkdtemp(prefix="reneg-bench-gen-"))
    prompts_file = work / "prompts.txt"
    prompts_file.write_text("\n".join(prompts) + "\n")
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    config = GenerateConfig(prompts=str(prompts_file), batch_size=batch, device=device, out=str(work / "out"))
    method = method_for(model, config)

    def ours():
        for images in generate_images(model, prompts, method, guidance_scale=scale, steps=steps,
                                      resolution=model.resolution, generator=torch.Generator().manual_seed(0),
                                      batch_size=batch):
            to_pil(images)

    def command():
        generate(config, model=model)

    def diffusers(save: bool = False):
        generator = torch.Generator().manual_seed(0)
        for start in range(0, len(prompts), batch):
            images = pipe(prompts[start:start + batch], num_inference_steps=steps, guidance_scale=scale,
                          generator=generator, output_type="pil").images
            for offset, image in enumerate(images if save else []):
                image.save(work / f"diffusers-{start + offset:05d}.png")

    variants = {"diffusers StableDiffusionPipeline(...) -> PIL": diffusers,
                "reneg generate_images -> PIL (the command's image path)": ours,
                "diffusers StableDiffusionPipeline(...) -> PIL -> PNG files": lambda: diffusers(save=True),
                "reneg generate (the command, PNG files written)": command}
    pipe.set_progress_bar_config(disable=True)
    for run in variants.values():
        run()  # warm-up
    times = {name: [] for name in variants}
    for round_ in range(rounds):
        names = list(variants)
        for name in names[round_ % len(names):] + names[:round_ % len(names)]:  # each variant leads in turn
            run = variants[name]
            start = now()
            run()
            sync()
            times[name].append(now() - start)
    pil, png = "diffusers StableDiffusionPipeline(...) -> PIL", "diffusers StableDiffusionPipeline(...) -> PIL -> PNG files"
    lines = ["### Generation: reneg vs diffusers' StableDiffusionPipeline",
             f"world, {device}, {len(prompts)} prompts, batch {batch}, {steps} DDIM steps, CFG {scale}, null negative; "
             f"variants interleaved, each leading in turn; {rounds} rounds. The ratio is the median of the "
             "per-round ratios to diffusers' path with the same output (PIL images, or PNG files written)\n",
             "| path | images/s (median) | ratio to diffusers (median) | per-round ratios, min-max |",
             "| --- | --- | --- | --- |"]
    for name, values in times.items():
        base = times[png if "PNG" in name else pil]
        ratios = [b / v for b, v in zip(base, values)]
        lines.append(f"| {name} | {len(prompts) / median(values):.2f} | {median(ratios):.3f} | "
                     f"{min(ratios):.3f}-{max(ratios):.3f} |")
    return "\n".join(lines)


# ---------------------------------------------------------------- folded scripts


def script(name: str, *args: str) -> str:
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / name), *args], env=_env(), cwd=ROOT,
                            capture_output=True, text=True)
    if result.returncode:
        last = (result.stderr.strip().splitlines() or [""])[-1]
        if last.startswith(BAD_INPUT):  # the script's input was bad: its one line, exit 2
            print(f"python -m benchmarks: {name}: {last[len(BAD_INPUT):]}", file=sys.stderr)
            raise SystemExit(2)
        raise SystemExit(f"{name} failed:\n{result.stderr[-3000:]}")
    return f"### {name} {' '.join(args)}\n" + result.stdout.strip()


# ---------------------------------------------------------------- the report


def header(argv: list[str], device: str) -> str:
    import diffusers
    import torch
    import transformers

    import reneg

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name() if device.startswith("cuda") and torch.cuda.is_available() else "none"
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    return "\n".join([
        f"## Benchmark suite, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- command: `OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '')} python -m benchmarks {' '.join(argv)}`",
        f"- machine: {cpu}, {os.cpu_count()} cores visible, torch threads {torch.get_num_threads()}, GPU {gpu}, "
        f"{platform.system()} {platform.release()}",
        f"- versions: reneg {reneg.__version__} ({commit}{' + local changes' if dirty else ''}), torch "
        f"{torch.__version__}, diffusers {diffusers.__version__}, transformers {transformers.__version__}, "
        f"Python {platform.python_version()}",
    ])


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child"]:
        kind, rest = argv[1], argv[2:]
        if kind == "memory":
            result = _memory_child(rest[0], int(rest[1]), int(rest[2]), int(rest[3]), rest[4], "timed" in rest[5:])
        else:
            from benchmarks.eval_bench import eval_child

            result = eval_child(rest[0], int(rest[1]), rest[2])
        print(json.dumps(result))
        return
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(SECTIONS[:5]),
                        help=f"comma-separated sections of {', '.join(SECTIONS)} (default: the first five)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per section; medians over them (>= 5)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--eval-prompts", type=int, default=20, help="prompts of the eval section")
    parser.add_argument("--eval-base", help="also time `reneg eval` at this git revision (same run)")
    parser.add_argument("--negative", help="a learned embedding: enables the adapt section")
    parser.add_argument("--npo", help="a `reneg npo` output directory: enables the npo section")
    parser.add_argument("--out", help="markdown file to append to (default: runs/bench-<UTC time>.md)")
    args = parser.parse_args(argv)
    for flag, path, kind in (("--negative", args.negative, "file"), ("--npo", args.npo, "directory")):
        if path and not (Path(path).is_file() if kind == "file" else Path(path).is_dir()):
            parser.error(f"{flag}: no {kind} '{path}'; pass an existing one (reneg train / reneg npo output)")
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in only if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown section {unknown[0]}: choose from {', '.join(SECTIONS)}")
    out = Path(args.out or ROOT / "runs" / f"bench-{datetime.datetime.now(datetime.timezone.utc):%Y%m%dT%H%M}.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    blocks = [header(argv, args.device)]
    print(blocks[0], flush=True)
    for section in only:
        start = now()
        if section == "floor":
            block = floor(args.rounds, args.device)
        elif section == "memory":
            block = memory(args.rounds, args.device)
        elif section == "naive":
            block = naive(args.rounds, args.device)
        elif section == "generation":
            block = generation(args.rounds, args.device)
        elif section == "eval":
            from benchmarks.eval_bench import eval_throughput

            block = eval_throughput(args.rounds, args.device, args.eval_prompts, args.eval_base)
        elif section == "batch":
            from benchmarks.eval_bench import batch_sizes

            block = batch_sizes(args.rounds, args.device)
        elif section == "dnp":
            block = script("dnp_time.py", "--rounds", str(args.rounds), "--device", args.device)
        elif section == "npo":
            block = (script("npo_time.py", "--npo", args.npo, "--rounds", str(args.rounds), "--device", args.device)
                     if args.npo else "### npo_time.py\nskipped: pass --npo DIR (a `reneg npo` output) to time NPO")
        elif args.negative:
            block = script("adapt_time.py", "--negative", args.negative, "--device", args.device)
        else:
            block = "### adapt_time.py\nskipped: pass --negative FILE (a learned embedding) to time adaptation"
        block += f"\n\n_(section took {now() - start:.0f} s)_"
        blocks.append(block)
        print("\n" + block, flush=True)
        with out.open("a") as handle:  # appended as each section ends, so a long run keeps what it measured
            first = len(blocks) == 2  # the header goes with the first section, after a blank line
            handle.write(("\n" + "\n\n".join(blocks[-2:]) if first else block) + "\n\n")
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
