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
import subprocess
import sys
from pathlib import Path

from benchmarks import eval_bench, floor, generation, memory, naive
from benchmarks.common import ROOT, now, script


def _adapt(args) -> str:
    if not args.negative:
        return "### adapt_time.py\nskipped: pass --negative FILE (a learned embedding) to time adaptation"
    return script("adapt_time.py", "--negative", args.negative, "--device", args.device)


def _npo(args) -> str:
    if not args.npo:
        return "### npo_time.py\nskipped: pass --npo DIR (a `reneg npo` output) to time NPO"
    return script("npo_time.py", "--npo", args.npo, "--rounds", str(args.rounds), "--device", args.device)


#: The sections, in the order they run: name -> section(args) -> markdown (the first five run by default).
SECTIONS = {
    "floor": lambda args: floor.floor(args.rounds, args.device),
    "memory": lambda args: memory.memory(args.rounds, args.device),
    "naive": lambda args: naive.naive(args.rounds, args.device),
    "generation": lambda args: generation.generation(args.rounds, args.device),
    "eval": lambda args: eval_bench.eval_throughput(args.rounds, args.device, args.eval_prompts, args.eval_base),
    "batch": lambda args: eval_bench.batch_sizes(args.rounds, args.device),
    "dnp": lambda args: script("dnp_time.py", "--rounds", str(args.rounds), "--device", args.device),
    "adapt": _adapt,
    "npo": _npo,
}
#: What a fresh child process (``python -m benchmarks.suite --child KIND ...``) runs: KIND -> run(rest) -> JSON.
CHILDREN = {
    "memory": lambda rest: memory.memory_child(rest[0], int(rest[1]), int(rest[2]), int(rest[3]), rest[4],
                                               "timed" in rest[5:]),
    "eval": lambda rest: eval_bench.eval_child(rest[0], int(rest[1]), rest[2]),
}


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
        print(json.dumps(CHILDREN[argv[1]](argv[2:])))
        return
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(list(SECTIONS)[:5]),
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
        block = SECTIONS[section](args)
        block += f"\n\n_(section took {now() - start:.0f} s)_"
        blocks.append(block)
        print("\n" + block, flush=True)
        with out.open("a") as handle:  # appended as each section ends, so a long run keeps what it measured
            first = len(blocks) == 2  # the header goes with the first section, after a blank line
            handle.write(("\n" + "\n\n".join(blocks[-2:]) if first else block) + "\n\n")
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
