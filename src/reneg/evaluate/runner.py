"""``reneg eval``: benchmark x methods x metrics, resumable, with win rates, a guidance sweep and a report.

Items are (prompt, image) pairs; item (p, i) draws its x_T from its own CPU
generator seeded from (--seed, p, i), so every method sees the same initial
noise and --limit changes no image. The generation batch (--batch-size) does
change the last bits of a few pixels (the UNet's float results depend on the
batch; measured on the shapes world: 18 of 48x64x64x3 values moved by one
level from batch 4 to 8), so keep it when resuming or comparing. Scoring reads
the saved PNGs in its own batches (--score-batch-size). Images are saved as
PNGs as they are made and every score is computed from the saved PNG, so an
interrupted run, rerun, gives the same results as an uninterrupted one. On a
video pipeline each item is a video (frames and a GIF, :mod:`.video_items`).

Several processes (``accelerate launch [--multi_gpu] --num_processes N -m reneg
eval ...``) deal the fixed batches round-robin: each batch is made and scored
by exactly one process, so an image and its scores do not depend on N. Each
process appends its scores to ``scores.rank<K>.jsonl``; the main process merges
them and alone writes scores.jsonl, results.json, results.md and index.html.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import PartialState
from tqdm.auto import tqdm

from .. import __version__, infotext
from ..config import (
    BATCH_SIZE,
    GUIDANCE_SCALE,
    NUM_FRAMES,
    PRECISION,
    PRECISION_NAMES,
    SEED,
    ConditionSettings,
    SamplingSettings,
    arg,
    builtin_command,
    require,
)
from ..errors import ReNegError
from ..identity import file_digest, model_identity
from ..io import write_json
from ..methods.spec import build_methods, parse_method_specs, with_own_scale
from ..models.device import dtype_of, resolve_device
from ..models.loading import LoadedModel, load_model
from ..prompts import Prompt, load_benchmark
from .html import write_html
from .metrics import MetricSpec, parse_metric_specs
from .plan import Item, Plan, chunks, item_seed, make_items
from .report import build_results, scores_by_method, write_markdown
from .store import ImageStore, ScoreCache
from .sweep import Run, parse_scales, plan_runs
from .video_items import fit_metrics, item_store, items_per_score_batch, video_scorers, video_settings

__all__ = ["EvalConfig", "Item", "Plan", "chunks", "evaluate", "item_latents", "item_seed", "make_items", "make_plan",
           "process_batches", "score_batches"]


@dataclass
class EvalConfig(ConditionSettings, SamplingSettings):
    """Settings of ``reneg eval``; None means the model's default."""

    benchmark: str | None = arg(None, "a registered benchmark (hpsv2, parti, imagereward-train, dnp, shapes, tiny) "
                                      "or a prompts file (default: the model's own, e.g. shapes for the shapes "
                                      "world, hpsv2 for real checkpoints)", metavar="NAME_OR_FILE")
    prompts: str | None = arg(None, "prompts file (.txt one a line, .json, .tsv), read as --benchmark FILE is; "
                                    "give it or --benchmark, not both", metavar="FILE")
    data_dir: str | None = arg(None, "where the benchmarks' files are (default: $RENEG_DATA, else "
                                     "~/.cache/reneg/benchmarks)", metavar="DIR")
    methods: list[str] = arg(["null", "handcrafted"], "comma-separated methods: null, handcrafted, "
                             "negative-prompt=TEXT, embedding=FILE, ...; any may end in @GS (repeatable)",
                             metavar="SPECS")
    metrics: list[str] = arg([], "comma-separated reward names, name=PATH_OR_ID sets the reward model, "
                                 "name:option=value sets a reward option (hpsv2, hpsv2.1: antialias=true|false, "
                                 "default true; false resizes as the HPSv2 reference did under torchvision < 0.17) "
                                 "(default: the model's reward; diagnostics are always added)", metavar="NAMES")
    images_per_prompt: int = arg(1, "images (seeds) per prompt", metavar="N", min=1, aliases=("--num-images",))
    limit: int | None = arg(None, "evaluate only the first N prompts (smoke tests)", metavar="N", min=1)
    guidance_sweep: str | None = arg(None, "run the baselines at each of these guidance scales and compare the "
                                           "learned methods with their best scale", metavar="GS,GS,...")
    score_batch_size: int = arg(64, "images per scoring batch, independent of --batch-size (scores only)", min=1)
    reward_precision: str = arg("fp32", "dtype of the reward models that score the images (the references score "
                                        "in fp32)", choices=PRECISION_NAMES)
    gallery_items: int = arg(60, "items shown in index.html's gallery", metavar="N", min=0)
    out: str = arg("eval", "output directory; a rerun resumes what it holds", metavar="DIR", output="dir")
    seed: int = SEED(help="base seed; item (prompt p, image i) draws x_T from a CPU generator seeded from "
                          "(seed, p, i)")
    guidance_scale: float | None = GUIDANCE_SCALE(help="CFG scale of the specs without @GS")
    num_frames: int | None = NUM_FRAMES(help="video pipelines: frames per video (default: 16, as diffusers); "
                                             "run.json records it and a resume with another count is refused")
    batch_size: int = BATCH_SIZE(4, "images per generation batch; it decides the images' last bits (the UNet's "
                                    "float results depend on the batch), so run.json records it and a resume with "
                                    "another batch is refused")
    precision: str = PRECISION(help="dtype of the frozen diffusion model")

    def __post_init__(self):
        super().__post_init__()
        self.methods = [self.methods] if isinstance(self.methods, str) else list(self.methods)
        self.metrics = [self.metrics] if isinstance(self.metrics, str) else list(self.metrics)
        require(not (self.benchmark and self.prompts), f"--benchmark {self.benchmark} and --prompts {self.prompts} "
                "both name the prompts: give one of them")


def _benchmark_identity(prompts: list[Prompt]) -> str:
    text = "\n".join(f"{p.category}\t{p.text}" for p in prompts)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:16]


def _prompts_source(config: EvalConfig, model: LoadedModel) -> str:
    """What ``load_benchmark`` reads: ``--prompts FILE``, ``--benchmark NAME_OR_FILE`` or the model's benchmark."""
    if config.prompts is not None:
        if not Path(config.prompts).expanduser().is_file():
            raise ReNegError(f"prompts file '{config.prompts}' does not exist: pass a .txt (one prompt a line), "
                             ".json or .tsv file, or --benchmark NAME for a registered benchmark")
        return config.prompts
    return config.benchmark or model.defaults.benchmark


def process_state(device: str) -> PartialState:
    """accelerate's view of the processes (one, or those of ``accelerate launch``); CPU processes talk over gloo.

    Without ``cpu=True`` accelerate takes processes launched on a machine without a GPU for independent ones.
    """
    return PartialState(cpu=device == "cpu" or not torch.cuda.is_available())


def _process_device(name: str, state: PartialState) -> torch.device:
    """``--device``; with several processes, ``auto`` and a bare ``cuda`` mean each process's own device."""
    if state.num_processes > 1 and name in ("auto", "cuda"):
        return state.device
    return resolve_device(name)


def _metric_settings(metric: MetricSpec, reward, precision: str) -> dict:
    """What decides a metric's scores besides the images: its reward model's identity, its options, its dtype."""
    options = {**dict(metric.options), **{key: getattr(reward, key) for key in metric.option_names
                                          if hasattr(reward, key)}}
    return {"model": metric.model_or_default, "model_identity": metric.identity(), "options": options,
            "precision": precision}


def make_plan(config: EvalConfig, *, model: LoadedModel | None = None) -> Plan:
    """Parse and check every input, load the model, the rewards and the methods; writes nothing.

    ``--precision`` casts the frozen diffusion model only; the rewards run in ``--reward-precision`` (fp32).
    """
    specs = parse_method_specs(config.methods)
    metrics = parse_metric_specs(config.metrics) if config.metrics else None
    scales = parse_scales(config.guidance_sweep)
    device, dtype = _process_device(config.device, process_state(config.device)), dtype_of(config.precision)
    model = model or load_model(config.model, device=device, dtype=dtype)
    model.family.condition_on(control_image=config.control_image, num_frames=config.num_frames)
    benchmark = _prompts_source(config, model)
    all_prompts = load_benchmark(benchmark, data_dir=config.data_dir)  # never empty
    prompts = all_prompts[:config.limit]
    model.family.warn_if_truncated([p.text for p in prompts])
    metrics = fit_metrics(metrics or parse_metric_specs(list(model.defaults.metrics or (model.defaults.reward,))),
                          model)
    reward_dtype = dtype_of(config.reward_precision)
    rewards = {m.text: m.build(device=model.pipe.device, dtype=reward_dtype) for m in metrics}
    metric_settings = {m.text: _metric_settings(m, rewards[m.text], config.reward_precision) for m in metrics}
    rewards = video_scorers(metrics, rewards, model)  # videos: per-frame rewards averaged
    methods = build_methods(specs, model)
    specs = [with_own_scale(spec, methods[spec.base]) for spec in specs]  # NAG methods: their own s
    for method in methods.values():  # a method's own inputs (DNP's captions, its captioner), before any image
        getattr(method, "prepare", lambda model, prompts: None)(model, [p.text for p in prompts])
    sampling = model.sampling(config)
    guidance_scale, steps, resolution = sampling.guidance_scale, sampling.steps, sampling.resolution
    settings = {"model": model.name, "model_identity": model_identity(model), "reneg_version": __version__,
                "benchmark": benchmark, "prompts": _benchmark_identity(all_prompts),
                "seed": config.seed, "steps": steps, "resolution": resolution, "precision": config.precision,
                "device": model.pipe.device.type, "scheduler": model.family.sampler,
                # the UNet's float results depend on its batch: a few pixel values differ between batches
                "batch_size": config.batch_size, **video_settings(model),
                **({"control_image": file_digest(config.control_image)} if config.control_image else {})}
    return Plan(config, model, specs, metrics, rewards, prompts,
                make_items(prompts, images_per_prompt=config.images_per_prompt, seed=config.seed), methods,
                plan_runs(specs, guidance_scale, scales), steps, guidance_scale, scales, resolution, settings,
                metric_settings)


def item_latents(plan: Plan, items: list[Item]) -> torch.Tensor:
    """x_T of each item from its own CPU generator, drawn as diffusers draws a batch of one."""
    family = plan.model.family
    return torch.cat([family.initial_latents(1, resolution=plan.resolution,
                                             generator=torch.Generator().manual_seed(item.seed)) for item in items])


def process_batches(plan: Plan, state: PartialState) -> list[tuple[Run, list[Item]]]:
    """This process's share of the (run, fixed batch) pairs, dealt round-robin: each is one process's work."""
    batches = [(run, batch) for run in plan.runs for batch in chunks(plan.items, plan.config.batch_size)]
    return batches[state.process_index::state.num_processes]


def generate_missing(plan: Plan, store: ImageStore, batches: list[tuple[Run, list[Item]]] | None = None, *,
                     progress_bar: bool = True) -> None:
    """Make and save every image of ``batches`` (default: all) not in ``store`` yet; a finished batch is skipped."""
    batches = batches if batches is not None else process_batches(plan, process_state(plan.config.device))
    todo = [(run, batch) for run, batch in batches if not all(store.has(run.slug, item.name) for item in batch)]
    with tqdm(total=sum(len(batch) for _, batch in todo), desc="generate", unit="img",
              disable=not progress_bar) as progress:
        for run, batch in todo:
            store.start(run.slug, plan.run_settings(run))
            method = plan.methods[run.base]
            if hasattr(method, "out"):  # per-sample=FILE saves its adapted embeddings under --out and reuses them
                method.out = store.out
            images = method.images(plan.model, [item.prompt.text for item in batch], item_latents(plan, batch),
                                   guidance_scale=run.guidance_scale, steps=plan.steps)
            sides = getattr(method, "side_outputs", None) or [{}] * len(batch)  # DNP: the DNS image and caption
            for item, image, side in zip(batch, store.outputs(images), sides):
                if not store.has(run.slug, item.name):
                    store.save_side(run.slug, item.name, side)  # before the image: a saved image has its side
                    store.save(run.slug, item.name, image, {"parameters": infotext.parameters_text(
                        item.prompt.text, None, {"Steps": plan.steps, "Sampler": plan.model.family.sampler,
                                                 "CFG scale": run.guidance_scale, "Seed": item.seed,
                                                 "Model": plan.model.name, "ReNeg method": run.base,
                                                 "ReNeg source": "reneg eval"})})
            progress.update(len(batch))


def score_batches(plan: Plan, batches: list[tuple[Run, list[Item]]]) -> list[tuple[Run, list[Item]]]:
    """``batches`` regrouped for scoring: each run's items, in order, cut into ``--score-batch-size`` batches.

    Scoring reads saved PNGs, so its batches need not be the generation batches; a process scores exactly
    the items of the generation batches it was dealt.
    """
    items: dict[str, tuple[Run, list[Item]]] = {}
    for run, batch in batches:
        items.setdefault(run.key, (run, []))[1].extend(batch)
    return [(run, chunk) for run, run_items in items.values()
            for chunk in chunks(run_items, items_per_score_batch(plan))]


def score_missing(plan: Plan, store: ImageStore, cache: ScoreCache,
                  batches: list[tuple[Run, list[Item]]] | None = None, *, progress_bar: bool = True) -> None:
    """Score every (run, metric, item) of ``batches`` (default: all) not in ``cache`` from the saved PNGs,
    appending to the cache as it goes (one write per scoring batch).

    The images of a scoring batch are loaded once and passed, as one tensor, to every metric: metrics that
    read the same model share its forward pass (the world's five ``truth-*`` judge it once).
    """
    batches = batches if batches is not None else process_batches(plan, process_state(plan.config.device))
    todo = []
    for run, batch in score_batches(plan, batches):
        key = plan.score_key(run)
        metrics = [m for m in plan.metrics if not all(cache.has(key, plan.metric_key(m), i.name) for i in batch)]
        if metrics:
            todo.append((run, batch, metrics))
    with tqdm(total=sum(len(b) * len(ms) for _, b, ms in todo), desc="score", unit="score",
              disable=not progress_bar) as progress:
        for run, batch, metrics in todo:
            images = store.load(run.slug, [item.name for item in batch]).to(plan.model.pipe.device)
            prompts = [item.prompt.text for item in batch]
            key = plan.score_key(run)
            with torch.inference_mode():  # one host transfer per batch, after every metric has run
                values = torch.stack([plan.rewards[metric.text](images, prompts).float()
                                      for metric in metrics]).cpu().tolist()
            cache.add_many(key, {plan.metric_key(metric): {item.name: value for item, value in zip(batch, row)
                                                           if not cache.has(key, plan.metric_key(metric), item.name)}
                                 for metric, row in zip(metrics, values)})
            progress.update(len(batch) * len(metrics))


def collect_scores(plan: Plan, cache: ScoreCache) -> dict[str, dict[str, list[float]]]:
    """run key -> metric -> scores in item order."""
    return {run.key: {m.text: [cache.get(plan.score_key(run), plan.metric_key(m), item.name) for item in plan.items]
                      for m in plan.metrics} for run in plan.runs}


def write_reports(plan: Plan, store: ImageStore) -> Path:
    """Merge every process's scores into scores.jsonl, then write results.json, results.md and index.html."""
    out = store.out
    cache = ScoreCache(out)
    cache.merge()
    scores = collect_scores(plan, cache)
    results = build_results(plan, scores, version=__version__)
    write_json(out / "results.json", results)
    write_markdown(out / "results.md", results)
    write_html(out, plan, scores_by_method(plan, scores), results, store=store)
    return out / "results.json"


def evaluate(config: EvalConfig, *, model: LoadedModel | None = None) -> Path:
    """Run ``reneg eval``; returns the path of results.json (with results.md and index.html beside it).

    Under ``accelerate launch --num_processes N`` every process makes and scores its share of the batches
    (:func:`process_batches`); the main process writes the reports, which do not depend on N.
    """
    state = process_state(config.device)
    # 1. Inputs: everything is checked before anything is written
    plan = make_plan(config, model=model)
    store = item_store(config.out, plan.model)
    for run in plan.runs:
        store.check_settings(run.slug, plan.run_settings(run))
    if state.is_main_process:
        for run in plan.runs:
            store.start(run.slug, plan.run_settings(run))
    state.wait_for_everyone()
    # 2. Images, then scores from the saved images (both resume what a previous run left); a process scores
    #    the batches it made, so it needs no other process's images
    batches = process_batches(plan, state)
    generate_missing(plan, store, batches, progress_bar=state.is_main_process)
    rank = state.process_index if state.num_processes > 1 else None
    score_missing(plan, store, ScoreCache(config.out, rank=rank), batches, progress_bar=state.is_main_process)
    state.wait_for_everyone()
    # 3. Tables and report, by the main process from every process's scores
    path = Path(config.out) / "results.json"
    if state.is_main_process:
        path = write_reports(plan, store)
    state.wait_for_everyone()
    return path


COMMAND = builtin_command("eval", EvalConfig, evaluate)
