"""``reneg eval``: benchmark x methods x metrics, resumable, with win rates, a guidance sweep and a report.

Items are (prompt, image) pairs; item (p, i) draws its x_T from its own CPU
generator seeded from (--seed, p, i), so every method sees the same initial
noise and neither batching nor --limit changes an image. Images are saved as
PNGs as they are made and every score is computed from the saved PNG, so an
interrupted run, rerun, gives the same results as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import __version__
from ..config import arg, require
from ..benchmarks import load_benchmark
from ..device import dtype_of, resolve_device
from ..io import to_pil, write_json
from ..models import LoadedModel, load_model
from ..prompts import Prompt
from ..rewards import Reward
from ..sampling import initial_latents
from .methods import Method, MethodSpec, build_methods, parse_method_specs
from .metrics import MetricSpec, parse_metric_specs
from .store import ImageStore, ScoreCache
from .sweep import Run, parse_scales, plan_runs


@dataclass
class EvalConfig:
    """Settings of ``reneg eval``; None means the model's default."""

    model: str | None = arg(None, "diffusers pipeline directory, cached hub id or built-in name "
                                  "(none: the embedded default)")
    benchmark: str | None = arg(None, "a registered benchmark (hpsv2, parti, imagereward-train, dnp, shapes, tiny) "
                                      "or a prompts file (default: the model's own, e.g. shapes for the shapes "
                                      "world, hpsv2 for real checkpoints)", metavar="NAME_OR_FILE")
    data_dir: str | None = arg(None, "where the benchmarks' files are (default: $RENEG_DATA, else "
                                     "~/.cache/reneg/benchmarks)", metavar="DIR")
    methods: list[str] = arg(["null", "handcrafted"], "comma-separated methods: null, handcrafted, "
                             "negative-prompt=TEXT, embedding=FILE, ...; any may end in @GS (repeatable)",
                             metavar="SPECS")
    metrics: list[str] = arg([], "comma-separated reward names, name=PATH_OR_ID sets the reward model "
                                 "(default: the model's reward; diagnostics are always added)", metavar="NAMES")
    images_per_prompt: int = arg(1, "images (seeds) per prompt", metavar="N")
    limit: int | None = arg(None, "evaluate only the first N prompts (smoke tests)", metavar="N")
    seed: int = arg(0, "base seed; item (prompt p, image i) draws x_T from a CPU generator seeded from (seed, p, i)")
    steps: int | None = arg(None, "DDIM sampling steps")
    guidance_scale: float | None = arg(None, "CFG scale of the specs without @GS")
    guidance_sweep: str | None = arg(None, "run the baselines at each of these guidance scales and compare the "
                                           "learned methods with their best scale", metavar="GS,GS,...")
    resolution: int | None = arg(None, "image size in pixels (default: the model's)")
    batch_size: int = arg(4, "images per forward pass (generation and scoring)")
    device: str = arg("auto", "cpu, cuda, cuda:N or auto")
    precision: str = arg("fp32", "dtype of the models", choices=["fp32", "fp16", "bf16"])
    gallery_items: int = arg(60, "items shown in index.html's gallery", metavar="N")
    out: str = arg("eval", "output directory; a rerun resumes what it holds", metavar="DIR")

    def __post_init__(self):
        self.methods = [self.methods] if isinstance(self.methods, str) else list(self.methods)
        self.metrics = [self.metrics] if isinstance(self.metrics, str) else list(self.metrics)
        require(self.images_per_prompt >= 1, f"--images-per-prompt must be >= 1, got {self.images_per_prompt}")
        require(self.limit is None or self.limit >= 1, f"--limit must be >= 1, got {self.limit}")
        require(self.seed >= 0, f"--seed must be >= 0, got {self.seed}")
        require(self.steps is None or self.steps >= 1, f"--steps must be >= 1, got {self.steps}")
        require(self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}")
        require(self.gallery_items >= 0, f"--gallery-items must be >= 0, got {self.gallery_items}")
        require(self.guidance_scale is None or self.guidance_scale >= 0,
                f"--guidance-scale must be >= 0, got {self.guidance_scale}")


@dataclass(frozen=True)
class Item:
    """Image ``image_index`` of prompt ``prompt_index``; ``seed`` seeds the CPU generator of its x_T."""

    prompt_index: int
    image_index: int
    prompt: Prompt
    seed: int

    @property
    def name(self) -> str:
        return f"p{self.prompt_index:05d}-i{self.image_index:02d}"


def item_seed(seed: int, prompt_index: int, image_index: int) -> int:
    """A 63-bit seed mixed from (seed, prompt index, image index) by numpy's SeedSequence."""
    state = np.random.SeedSequence([seed, prompt_index, image_index]).generate_state(1, np.uint64)[0]
    return int(state) & (2**63 - 1)


def make_items(prompts: list[Prompt], *, images_per_prompt: int, seed: int) -> list[Item]:
    return [Item(p, i, prompt, item_seed(seed, p, i)) for p, prompt in enumerate(prompts)
            for i in range(images_per_prompt)]


def chunks(items: list, size: int) -> list[list]:
    """``items`` cut into batches at fixed positions, so a resumed run batches exactly as an uninterrupted one."""
    return [items[start:start + size] for start in range(0, len(items), size)]


@dataclass
class Plan:
    """Everything checked and loaded before anything is written."""

    config: EvalConfig
    model: LoadedModel
    specs: list[MethodSpec]
    metrics: list[MetricSpec]
    rewards: dict[str, Reward]
    prompts: list[Prompt]
    items: list[Item]
    methods: dict[str, Method]
    runs: list[Run]
    steps: int
    guidance_scale: float
    scales: list[float]
    resolution: int
    settings: dict

    def run_settings(self, run: Run) -> dict:
        """What decides a run's images; a saved folder is reused only if all of it matches."""
        return {**self.settings, "method": run.base, "method_identity": self.methods[run.base].identity,
                "guidance_scale": run.guidance_scale}

    def score_key(self, run: Run) -> str:
        """The run's key in the score cache: its settings are part of it, so remade images are scored anew."""
        settings = json.dumps(self.run_settings(run), sort_keys=True)
        return f"{run.key}#{hashlib.sha256(settings.encode()).hexdigest()[:12]}"


def _benchmark_identity(prompts: list[Prompt]) -> str:
    text = "\n".join(f"{p.category}\t{p.text}" for p in prompts)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:16]


def make_plan(config: EvalConfig, *, model: LoadedModel | None = None) -> Plan:
    """Parse and check every input, load the model, the rewards and the methods; writes nothing."""
    specs = parse_method_specs(config.methods)
    metrics = parse_metric_specs(config.metrics) if config.metrics else None
    scales = parse_scales(config.guidance_sweep)
    device, dtype = resolve_device(config.device), dtype_of(config.precision)
    model = model or load_model(config.model, device=device, dtype=dtype)
    benchmark = config.benchmark or model.defaults.benchmark
    all_prompts = load_benchmark(benchmark, data_dir=config.data_dir)  # never empty
    prompts = all_prompts[:config.limit]
    metrics = metrics or parse_metric_specs(list(model.defaults.metrics or (model.defaults.reward,)))
    rewards = {m.text: m.build(device=model.pipe.device, dtype=dtype) for m in metrics}
    methods = build_methods(specs, model)
    guidance_scale = config.guidance_scale if config.guidance_scale is not None else model.defaults.guidance_scale
    steps, resolution = config.steps or model.defaults.num_inference_steps, config.resolution or model.resolution
    settings = {"model": model.name, "benchmark": benchmark, "prompts": _benchmark_identity(all_prompts),
                "seed": config.seed, "steps": steps, "resolution": resolution, "precision": config.precision,
                "device": model.pipe.device.type, "scheduler": "DDIM"}
    return Plan(config, model, specs, metrics, rewards, prompts,
                make_items(prompts, images_per_prompt=config.images_per_prompt, seed=config.seed), methods,
                plan_runs(specs, guidance_scale, scales), steps, guidance_scale, scales, resolution, settings)


def item_latents(plan: Plan, items: list[Item]) -> torch.Tensor:
    """x_T of each item from its own CPU generator, drawn as diffusers draws a batch of one."""
    pipe = plan.model.pipe
    return torch.cat([initial_latents(1, unet=pipe.unet, scheduler=pipe.scheduler,
                                      vae_scale_factor=pipe.vae_scale_factor, height=plan.resolution,
                                      width=plan.resolution, generator=torch.Generator().manual_seed(item.seed),
                                      device=pipe.device, dtype=pipe.unet.dtype) for item in items])


def generate_missing(plan: Plan, store: ImageStore) -> None:
    """Make and save every image that is not in ``store`` yet (fixed batches; a finished batch is skipped)."""
    todo = [(run, batch) for run in plan.runs for batch in chunks(plan.items, plan.config.batch_size)
            if not all(store.has(run.slug, item.name) for item in batch)]
    with tqdm(total=sum(len(batch) for _, batch in todo), desc="generate", unit="img") as progress:
        for run, batch in todo:
            store.start(run.slug, plan.run_settings(run))
            images = plan.methods[run.base].images(plan.model, [item.prompt.text for item in batch],
                                                   item_latents(plan, batch), guidance_scale=run.guidance_scale,
                                                   steps=plan.steps)
            for item, image in zip(batch, to_pil(images)):
                if not store.has(run.slug, item.name):
                    store.save(run.slug, item.name, image)
            progress.update(len(batch))


def score_missing(plan: Plan, store: ImageStore, cache: ScoreCache) -> None:
    """Score every (run, metric, item) not in ``cache`` from the saved PNGs, appending to the cache as it goes."""
    todo = []
    for run in plan.runs:
        for batch in chunks(plan.items, plan.config.batch_size):
            metrics = [m for m in plan.metrics if not all(cache.has(plan.score_key(run), m.text, i.name)
                                                          for i in batch)]
            if metrics:
                todo.append((run, batch, metrics))
    with tqdm(total=sum(len(b) * len(ms) for _, b, ms in todo), desc="score", unit="score") as progress:
        for run, batch, metrics in todo:
            images = store.load(run.slug, [item.name for item in batch]).to(plan.model.pipe.device)
            prompts = [item.prompt.text for item in batch]
            for metric in metrics:
                with torch.no_grad():
                    values = plan.rewards[metric.text](images, prompts).float().cpu().tolist()
                key = plan.score_key(run)
                cache.add(key, metric.text, {item.name: value for item, value in zip(batch, values)
                                             if not cache.has(key, metric.text, item.name)})
                progress.update(len(batch))


def collect_scores(plan: Plan, cache: ScoreCache) -> dict[str, dict[str, list[float]]]:
    """run key -> metric -> scores in item order."""
    return {run.key: {m.text: [cache.get(plan.score_key(run), m.text, item.name) for item in plan.items]
                      for m in plan.metrics} for run in plan.runs}


def evaluate(config: EvalConfig, *, model: LoadedModel | None = None) -> Path:
    """Run ``reneg eval``; returns the path of results.json (with results.md and index.html beside it)."""
    from .html import write_html
    from .report import build_results, scores_by_method, write_markdown

    # 1. Inputs: everything is checked before anything is written
    plan = make_plan(config, model=model)
    store, out = ImageStore(config.out), Path(config.out)
    for run in plan.runs:
        store.check_settings(run.slug, plan.run_settings(run))
    # 2. Images, then scores from the saved images (both resume what a previous run left)
    generate_missing(plan, store)
    cache = ScoreCache(out)
    score_missing(plan, store, cache)
    # 3. Tables and report
    scores = collect_scores(plan, cache)
    results = build_results(plan, scores, version=__version__)
    path = out / "results.json"
    write_json(path, results)
    write_markdown(out / "results.md", results)
    write_html(out, plan, scores_by_method(plan, scores), results, store=store)
    return path
