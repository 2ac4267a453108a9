"""``reneg world-build``: rebuild every model of the shapes world from scratch, deterministically.

Stages (each cached in the work directory, so an interrupted build resumes):
data -> vae -> recon (VAE reconstructions for the evaluators) -> truth (ground-truth scorer, and the
check that every degradation survives the VAE) -> sd (text encoder + UNet: from scratch, then a warm restart) -> hps
(shapes-hps reward) -> pick (shapes-pick) -> ship
(fp16 weights into the package, measured quality into world.json).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..config import arg, require
from ..errors import ReNegError


logger = logging.getLogger("reneg.world")


@dataclass
class BuildConfig:
    """Settings of ``reneg world-build``."""

    work_dir: str = arg("runs/world-build", "where stages cache their outputs and the log", metavar="DIR",
                        output="dir")
    out: str = arg("runs/world-build/world", "where the shipped fp16 weights go (replaced only if it is empty or a "
                   "world reneg shipped; to install them as the embedded default, copy them to reneg/world/weights)",
                   metavar="DIR", output="dir")
    seed: int = arg(0, "seed of every stage", min=0, max=2**32 - 1)
    scale: float = arg(1.0, "multiply every stage's steps and data size (e.g. 0.01 for a smoke test)", min_exclusive=0)
    images: int = arg(40000, "training renders", min=1)
    vae_steps: int = arg(3600, "VAE optimizer steps (1200 of batch 16 gave 18.6 dB, 2400 gave 25.5 dB)", min=1)
    truth_steps: int = arg(1500, "ground-truth scorer steps", min=1)
    sd_steps: int = arg(4500, "text encoder + UNet steps (the shipped v3 build: 4500, 48 min on one core)", min=1)
    sd_lr: float = arg(5e-4, "text encoder + UNet peak learning rate", min_exclusive=0)
    sd_prediction_type: str = arg("epsilon", "what the UNet predicts", choices=["epsilon", "v_prediction"])
    sd_restart_steps: int = arg(3000, "then a warm restart of both for this many steps (v3.1: 3000, 13.5 min on 2 "
                                "cores, shape adherence 0.43 -> 0.86); 0: none", min=0)
    sd_restart_lr: float = arg(2.5e-4, "the warm restart's peak learning rate", min_exclusive=0)
    sd_restart_schedule: int = arg(6000, "the warm restart's cosine length in steps (longer than "
                                   "--sd-restart-steps: stopped part way)", min=1)
    vae_init: str | None = arg(None, "a warm-start build: fine-tune the VAE of this diffusers pipeline (or VAE "
                               "directory) for --vae-steps instead of training one from scratch", metavar="DIR")
    vae_lr: float | None = arg(None, "the VAE's peak learning rate (default 2e-3 from scratch, 5e-4 from --vae-init)",
                               min_exclusive=0)
    sd_init: str | None = arg(None, "a warm-start build: skip the from-scratch sd phase and start the restart phase "
                              "from this pipeline's text encoder and UNet (a gate run: docs/world.md)", metavar="DIR")
    vae_decoder_steps: int = arg(1200, "then fine-tune the VAE's decoder this many steps, its encoder frozen (the "
                                 "latents stay; v4: 24.20 -> 25.06 dB in 1200 steps, docs/world-v4.md); 0: none",
                                 min=0)
    vae_width: int = arg(16, "the VAE's channels at its first level (then x2, x4, x4: 8x downsampling)", min=4,
                         multiple_of=4)
    hps_steps: int = arg(1000, "shapes-hps steps (contrastive, then preference; gate run 5: 1000, was 700)", min=1)
    pick_steps: int = arg(1000, "shapes-pick steps (gate run 5: 1000, was 600)", min=1)
    jobs: int = arg(2, "processes: 2 trains the text encoder + UNet in this one and the evaluators (truth, "
                       "shapes-hps, shapes-pick) in a second, one thread each", choices=[1, 2])
    skip: list[str] = arg([], "skip this stage (repeatable)", choices=["truth", "sd", "hps", "pick"])
    until: str | None = arg(None, "stop after this stage",
                            choices=["data", "vae", "recon", "truth", "sd", "hps", "pick", "ship"])

    def __post_init__(self):
        require(self.scale > 0, f"--scale must be > 0, got {self.scale}")
        require(self.sd_restart_schedule >= self.sd_restart_steps,
                f"--sd-restart-schedule ({self.sd_restart_schedule}) must be >= --sd-restart-steps "
                f"({self.sd_restart_steps})")
        if self.vae_init:
            source = Path(self.vae_init)
            require((source / "vae" / "config.json").is_file() or (source / "config.json").is_file(),
                    f"--vae-init '{source}' holds no VAE (neither vae/config.json nor config.json): pass a "
                    "diffusers pipeline folder or its vae/ folder")
        if self.sd_init:
            source = Path(self.sd_init)
            require(all((source / part / "config.json").is_file() for part in ("unet", "text_encoder")),
                    f"--sd-init '{source}' is not a Stable Diffusion pipeline folder (no unet/ and text_encoder/ "
                    "with their config.json): pass a folder saved with save_pretrained, e.g. a world's sd/")

    def steps(self, name: str) -> int:
        value = getattr(self, f"{name}_steps")
        return value and max(2, round(value * self.scale))  # 0 stays 0 (a phase turned off)


STAGES = ("data", "vae", "recon", "truth", "sd", "hps", "pick", "ship")
EVALUATOR_STAGES = ("truth", "hps", "pick")  # what the second process trains while this one trains sd


def _stage_data(config, work, state):
    from .data import WorldData, make_data
    from .vocab import CURRENT

    path = work / "data"
    settings = {"images": max(256, round(config.images * config.scale)), "seed": config.seed,
                "vocabulary": CURRENT.version}
    if (path / "data.json").exists():
        try:
            return WorldData.load(path, settings)
        except ValueError:
            raise ReNegError(f"{path} holds data made with other settings than this build's; move it away (or "
                             f"pass the settings it was made with) and run again") from None
    data = make_data(settings["images"], seed=config.seed)
    data.save(path, settings)
    return data


def _stage_vae(config, work, state):
    import torch
    from diffusers import AutoencoderKL

    from .stages import psnr, train_vae

    path = work / "vae"
    if not (path / "config.json").exists():
        start = None
        if config.vae_init:
            source = Path(config.vae_init)
            start = AutoencoderKL.from_pretrained(source / "vae" if (source / "vae").is_dir() else source,
                                                  torch_dtype=torch.float32)
        vae = train_vae(state["data"], steps=config.steps("vae"), seed=config.seed, start=start,
                        lr=config.vae_lr or (5e-4 if start is not None else 2e-3),
                        channels=(config.vae_width, 2 * config.vae_width, 4 * config.vae_width,
                                  4 * config.vae_width))
        vae.save_pretrained(path)
    vae = AutoencoderKL.from_pretrained(path).eval().requires_grad_(False)
    from .data import make_data

    held_out = make_data(512, seed=config.seed + 1000)
    metrics = state.setdefault("metrics", {})
    metrics["vae_psnr_db"] = round(psnr(vae, held_out), 2)
    logger.info("[vae] reconstruction PSNR on held-out renders %.2f dB", metrics["vae_psnr_db"])
    if config.steps("vae_decoder"):
        vae = _decoder_finetuned(config, work, state, vae)
        metrics["vae_psnr_db_before_decoder"], metrics["vae_psnr_db"] = metrics["vae_psnr_db"], round(
            psnr(vae, held_out), 2)
        logger.info("[vae] after the decoder's fine-tune %.2f dB", metrics["vae_psnr_db"])
    return vae


def _decoder_settings(config) -> dict | None:
    steps = config.steps("vae_decoder")
    return {"steps": steps, "seed": config.seed} if steps else None


def _decoder_finetuned(config, work, state, vae):
    """The VAE with its decoder fine-tuned (:func:`~reneg.world.stages.finetune_decoder`), cached in
    ``vae-decoder`` beside the VAE; a directory made with other settings is refused."""
    from diffusers import AutoencoderKL

    from .stages import finetune_decoder

    path, settings = work / "vae-decoder", _decoder_settings(config)
    if not _built(path, settings, what="VAE decoder"):
        partial = work / "vae-decoder.partial"
        shutil.rmtree(partial, ignore_errors=True)
        finetune_decoder(vae, state["data"], steps=settings["steps"], seed=config.seed).save_pretrained(partial)
        (partial / "build.json").write_text(json.dumps(settings))
        shutil.rmtree(path, ignore_errors=True)
        os.replace(partial, path)
    return AutoencoderKL.from_pretrained(path).eval().requires_grad_(False)


def _stage_recon(config, work, state):
    from .truth import reconstruct

    from safetensors.torch import load_file, save_file

    path, marker = work / "recon.safetensors", work / "recon.json"
    made_with = {"decoder": _decoder_settings(config)}  # reconstructions through the VAE the evaluators will see
    stale = path.exists() and _recorded(marker, default={"decoder": None}) != made_with
    if not path.exists() or stale:
        count = min(len(state["data"]), max(256, round(12000 * config.scale)))
        save_file({"recon": reconstruct(state["vae"], state["data"].images[:count]).contiguous()},
                  str(path.with_suffix(".partial")))
        marker.unlink(missing_ok=True)
        os.replace(path.with_suffix(".partial"), path)
        marker.write_text(json.dumps(made_with))
    return load_file(str(path))["recon"]


def _recorded(marker: Path, *, default: dict) -> dict | None:
    """What a stage's JSON marker records (``default`` where there is none; None where it does not read: remade)."""
    if not marker.exists():
        return default
    try:
        return json.loads(marker.read_text())
    except ValueError:
        return None


def _stage_truth(config, work, state):
    from .truth import attribute_accuracy, detectability, load_truth, train_truth

    path, metrics_file = work / "truth", work / "truth.metrics.json"
    if not (path / "config.json").exists():
        train_truth(state["data"], state["recon"], steps=config.steps("truth"), seed=config.seed).save(path)
    truth = load_truth(path)
    if not metrics_file.exists():  # measured once, like the preference models' accuracy
        metrics_file.write_text(json.dumps({
            "degradation_auc_after_vae": detectability(truth, state["vae"], seed=config.seed + 7),
            "truth_accuracy": attribute_accuracy(truth, state["vae"], seed=config.seed + 11)}))
    state["metrics"].update(json.loads(metrics_file.read_text()))
    logger.info("[truth] degradation AUC after VAE reconstruction: %s", state["metrics"]["degradation_auc_after_vae"])
    logger.info("[truth] scorer accuracy per attribute: %s", state["metrics"]["truth_accuracy"])
    return truth


def _stage_sd(config, work, state):
    """Text encoder + UNet in two phases, each checkpointed: from scratch into ``sd-base``, then a warm restart
    of those into ``sd`` (the shipped v3.1: v3's 4500 steps, then 3000 of a 6000-step cosine). A directory
    is done when its ``build.json`` holds this build's settings; one made with others is refused."""
    import torch

    from .stages import SDRecipe

    recipe = SDRecipe(lr=config.sd_lr, prediction_type=config.sd_prediction_type)
    base = {"seed": config.seed, "steps": config.steps("sd"), "recipe": dataclasses.asdict(recipe)}
    restart = dataclasses.replace(recipe, lr=config.sd_restart_lr, warmup=100)
    settings = {"base": base, "restart": {"seed": config.seed + 12345, "steps": config.steps("sd_restart"),
                                          "schedule_steps": max(config.steps("sd_restart"),
                                                                round(config.sd_restart_schedule * config.scale)),
                                          "recipe": dataclasses.asdict(restart)}}
    if config.sd_init:
        base = {"init": str(Path(config.sd_init).resolve())}
        settings["base"] = base
    path = work / "sd"
    if _built(path, settings):
        return path
    if config.sd_init and not settings["restart"]["steps"]:
        raise ReNegError("--sd-init needs a restart phase to train: pass --sd-restart-steps > 0")
    if config.sd_init:
        from diffusers import StableDiffusionPipeline

        start = StableDiffusionPipeline.from_pretrained(config.sd_init, dtype=torch.float32)
        _train_sd_phase(state, path, settings["restart"], restart, work / "sd-restart.checkpoint.pt",
                        start=(start.text_encoder, start.unet), marker=settings)
        return path
    if not _built(work / "sd-base", base):
        _train_sd_phase(state, work / "sd-base", base, recipe, work / "sd.checkpoint.pt", marker=base)
    if not settings["restart"]["steps"]:
        shutil.copytree(work / "sd-base", path, dirs_exist_ok=True, ignore=shutil.ignore_patterns("build.json"))
        (path / "build.json").write_text(json.dumps(settings))
    else:
        from diffusers import StableDiffusionPipeline

        start = StableDiffusionPipeline.from_pretrained(work / "sd-base", dtype=torch.float32)
        _train_sd_phase(state, path, settings["restart"], restart, work / "sd-restart.checkpoint.pt",
                        start=(start.text_encoder, start.unet), marker=settings)
    return path


def _built(path: Path, settings: dict, what: str = "sd") -> bool:
    marker = path / "build.json"
    if not marker.exists():
        return False  # never finished (a cut run rewrites it)
    try:
        recorded = json.loads(marker.read_text())
    except ValueError:
        raise ReNegError(f"{marker} is not readable JSON (a corrupt marker); move {path} away and run again") from None
    if recorded != settings:
        raise ReNegError(f"{path} was built with other {what} settings than this build's; move it away (or pass the "
                         f"settings it was built with) and run again")
    return True


def _train_sd_phase(state, path: Path, settings: dict, recipe, checkpoint: Path, *, marker: dict, start=None) -> None:
    """Train one phase (resuming from ``checkpoint``), save its EMA pipeline to ``path``, then mark it done."""
    from .pipeline import assemble_pipeline
    from .stages import encode, train_sd

    vae, data = state["vae"], state["data"]
    if "latents" not in state:
        state["latents"] = encode(vae, data) * vae.config.scaling_factor
    text_encoder, unet, tokenizer = train_sd(data, state["latents"], steps=settings["steps"], seed=settings["seed"],
                                             recipe=recipe, checkpoint=checkpoint, start=start,
                                             schedule_steps=settings.get("schedule_steps"))
    assemble_pipeline(vae=vae, text_encoder=text_encoder, unet=unet, tokenizer=tokenizer,
                      prediction_type=recipe.prediction_type).save_pretrained(path)
    (path / "build.json").write_text(json.dumps(marker))
    checkpoint.unlink(missing_ok=True)


def _stage_preference(name, train, config, work, state, *, seed):
    path, accuracy_file = work / name, work / f"{name}.accuracy.json"
    if not accuracy_file.exists():
        from .preference import EVAL_PAIRS

        accuracy = train(state["data"], state["recon"], state["vae"], steps=config.steps(name.split("-")[1]),
                         seed=seed, out=path, eval_pairs=max(20, round(EVAL_PAIRS * config.scale)))
        accuracy_file.write_text(json.dumps(accuracy))
    state["metrics"][f"{name}_pairwise_accuracy"] = json.loads(accuracy_file.read_text())
    logger.info("[%s] held-out pairwise accuracy %s", name, state["metrics"][f"{name}_pairwise_accuracy"])
    return path


def _stage_hps(config, work, state):
    from .preference import train_hps

    return _stage_preference("shapes-hps", train_hps, config, work, state, seed=config.seed + 1)


def _stage_pick(config, work, state):
    from .preference import train_pick

    return _stage_preference("shapes-pick", train_pick, config, work, state, seed=config.seed + 2)


def _stage_ship(config, work, state):
    from .ship import ship

    for stage, output in (("truth", "truth"), ("sd", "sd"), ("hps", "shapes-hps"), ("pick", "shapes-pick")):
        if not (work / output).is_dir():
            raise ReNegError(f"cannot ship: stage {stage} has no output in {work}; run it (drop --skip {stage})")
    return ship(work, Path(config.out), metrics=state["metrics"], seed=config.seed)


def _start_evaluators(config: BuildConfig, work: Path) -> subprocess.Popen:
    """A second ``reneg world-build`` process, one thread, that trains the evaluator stages (then stops)."""
    fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)
              if f.name not in ("jobs", "skip", "until")}
    argv = [sys.executable, "-m", "reneg", "world-build", "--jobs", "1", "--until", "pick"]
    for name in ["sd"] + [s for s in config.skip if s in EVALUATOR_STAGES]:
        argv += ["--skip", name]
    for name, value in fields.items():
        if value is not None:
            argv += [f"--{name.replace('_', '-')}", str(value)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(work / "evaluators.log", "w") as errors:  # the child keeps its own copy of the handle
        return subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=errors)


def _wait(helper: subprocess.Popen, work: Path) -> None:
    if helper.wait() != 0:
        raise ReNegError(f"the evaluators' process failed (exit {helper.returncode}); see {work / 'evaluators.log'}")


def build(config: BuildConfig) -> Path:
    """Run the stages in order (skipping cached ones); returns the shipped weights directory.

    With ``jobs=2`` the evaluator stages train in a second process while this one trains sd, one thread
    each; this process then reads them back from the cache.
    """
    import torch

    if config.until in (None, "ship") and "ship" not in config.skip:
        from .ship import check_replaceable

        check_replaceable(Path(config.out))  # before hours of training (and before anything is written)
    work = Path(config.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(work / "build.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    state, start, threads = {}, time.time(), torch.get_num_threads()
    parallel = (config.jobs == 2 and "sd" not in config.skip
                and STAGES.index(config.until or "ship") >= STAGES.index("pick"))
    # in parallel, sd comes first and this process reads the evaluators back from the cache after it
    order = ("data", "vae", "recon", "sd", *EVALUATOR_STAGES, "ship") if parallel else STAGES
    for name in order:
        if name in config.skip:
            continue
        stage_start = time.time()
        if parallel and name == "sd":
            helper = _start_evaluators(config, work)
            torch.set_num_threads(1)
        state[name] = globals()[f"_stage_{name}"](config, work, state)
        if parallel and name == "sd":
            torch.set_num_threads(threads)
            _wait(helper, work)
        logger.info("[%s] done in %.0fs (total %.0fs)", name, time.time() - stage_start, time.time() - start)
        (work / "metrics.json").write_text(json.dumps(state.get("metrics", {}), indent=2))
        if name == config.until:
            break
    logger.removeHandler(handler)
    handler.close()
    return Path(config.out)
