"""Ship the world: fp16 weights, prompt sets and ``world.json`` (defaults and measured quality)."""

from __future__ import annotations

import functools
import json
import logging
import shutil
import tempfile
from pathlib import Path

import torch

from ..errors import ReNegError

from .scenes import benchmark_prompts, reneg_training_prompts
from .vocab import CURRENT, DEFECTS, HANDCRAFTED_NEGATIVE

logger = logging.getLogger("reneg.world")
#: v4 adds 1 (the conditional model alone): how poorly it follows prompts is a gate of the world
GUIDANCE_CANDIDATES = (1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.5)
NUM_INFERENCE_STEPS = 20
#: training prompts of the guidance sweep (v3's first build: 67 benchmark prompts, a flaw; see sweep_prompts)
SWEEP_PROMPTS = 240
#: what the sweep reports of each method at each scale (flagged: share of images with a flaw detected)
PREMISE_KEYS = ("adherence", "cleanliness", "flagged", "reward")
#: the adherence the handcrafted negative may cost (issue 21)
ADHERENCE_TOLERANCE = 0.02
#: largest weight file shipped (diffusers shards bigger models; every file in git stays under 8 MB)
SHARD_SIZE = "6MB"


def _size_mb(directory: Path) -> float:
    return round(sum(f.stat().st_size for f in directory.rglob("*.safetensors")) / 2**20, 2)


def _half_safetensors(source: Path, target: Path) -> None:
    from safetensors.torch import load_file, save_file

    tensors = {k: v.half().contiguous() if v.is_floating_point() else v for k, v in load_file(str(source)).items()}
    save_file(tensors, str(target))


def _load_text_encoder_in_fp32(config_path: Path) -> None:
    """Weights stay fp16 on disk, but the config says fp32: transformers 5 loads a model in its config's dtype
    while diffusers loads the UNet and VAE in fp32, so a plain ``StableDiffusionPipeline.from_pretrained(dir)``
    would mix Half and Float and fail at its first call."""
    config = json.loads(config_path.read_text())
    config["dtype"] = "float32"
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def drop_local_paths(directory: Path) -> None:
    """Remove ``_name_or_path`` (where a model was saved from: a path on the build machine) from every JSON
    config under ``directory``; loading never reads it."""
    for path in directory.rglob("*.json"):
        config = json.loads(path.read_text())
        if isinstance(config, dict) and config.pop("_name_or_path", None) is not None:
            path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def _ship_models(work: Path, out: Path) -> None:
    from diffusers import StableDiffusionPipeline
    from transformers import CLIPModel, CLIPProcessor

    pipe = StableDiffusionPipeline.from_pretrained(work / "sd")
    pipe.to(torch.float16).save_pretrained(out / "sd", max_shard_size=SHARD_SIZE)
    _load_text_encoder_in_fp32(out / "sd" / "text_encoder" / "config.json")
    for name in ("truth", "shapes-hps"):
        (out / name).mkdir(parents=True, exist_ok=True)
        for file in (work / name).iterdir():
            if file.suffix == ".safetensors":
                _half_safetensors(file, out / name / file.name)
            else:
                shutil.copy(file, out / name / file.name)
    CLIPModel.from_pretrained(work / "shapes-pick").half().save_pretrained(out / "shapes-pick")
    CLIPProcessor.from_pretrained(work / "shapes-pick").save_pretrained(out / "shapes-pick")
    drop_local_paths(out)


def _judged_generations(sd_dir: Path, truth_dir: Path, *, prompts: list[str], seed: int, reward_dir: Path | None = None):
    """A function (negative text, guidance scale) -> the ground truth's verdict on the world's generations, with
    their shapes-hps under "reward" when ``reward_dir`` is given."""
    from diffusers import StableDiffusionPipeline

    from ..generate import generate_images
    from ..models.loading import LoadedModel, _prepare, encode_prompts
    from .truth import judge, load_truth

    pipe = _prepare(StableDiffusionPipeline.from_pretrained(sd_dir, dtype=torch.float32), device=torch.device("cpu"),
                    dtype=torch.float32)
    model, truth = LoadedModel(pipe, "shapes"), load_truth(truth_dir)
    reward = None
    if reward_dir is not None:
        from ..rewards import build_reward

        reward = build_reward("shapes-hps", model=str(reward_dir))

    @functools.cache
    def judged(negative: str, scale: float) -> dict[str, torch.Tensor]:
        images = torch.cat(list(generate_images(model, prompts, encode_prompts(pipe, [negative])[0],
                                                guidance_scale=scale, steps=NUM_INFERENCE_STEPS, resolution=64,
                                                generator=torch.Generator().manual_seed(seed), batch_size=64)))
        verdict = judge(truth, images, prompts)
        if reward is not None:
            with torch.no_grad():
                verdict["reward"] = torch.cat([reward(images[i:i + 64], prompts[i:i + 64])
                                               for i in range(0, len(prompts), 64)]).float()
        return verdict

    return judged


def sweep_prompts(train: list[str], count: int = SWEEP_PROMPTS) -> list[str]:
    """The prompts on which the build chooses its defaults: ``count`` of the training prompts, evenly spaced.

    Never the benchmark's: the default guidance scale is a setting of every table measured on the benchmark.
    """
    return train[::max(1, len(train) // count)][:count]


def premise(judged, scale: float) -> dict[str, dict[str, float]]:
    """Null vs the handcrafted negative prompt at ``scale``: the ground truth's adherence and cleanliness."""
    result = {}
    for name, negative in (("null", ""), ("handcrafted", HANDCRAFTED_NEGATIVE)):
        verdict = judged(negative, scale)
        result[name] = {k: round(float(verdict[k].nanmean()), 4) for k in PREMISE_KEYS if k in verdict}
    logger.info("[ship] guidance %.1f, null vs handcrafted: %s", scale, result)
    return result


def premise_holds(result: dict[str, dict[str, float]], *, tolerance: float = ADHERENCE_TOLERANCE) -> bool:
    """Issue 21's premise by the ground truth: the handcrafted negative is cleaner than the null text and costs at
    most ``tolerance`` adherence (the shapes-hps part of it is the benchmark's to measure)."""
    null, handcrafted = result["null"], result["handcrafted"]
    return (handcrafted["cleanliness"] > null["cleanliness"]
            and handcrafted["adherence"] >= null["adherence"] - tolerance)


def choose_guidance_scale(judged) -> tuple[float, dict[str, dict]]:
    """The default guidance scale and the table it was chosen from (null and handcrafted at every candidate).

    v4's rule, declared before its build (docs/world.md): the candidate at which the null text's mean
    shapes-hps is highest, as a user of SD picks the scale that looks best without a negative. The premise
    (handcrafted cleaner at a small adherence cost) is then measured there, not chosen for. Measured on
    training prompts (:func:`sweep_prompts`).
    """
    table = {}
    for scale in GUIDANCE_CANDIDATES:
        row = premise(judged, scale)
        table[scale] = {**row, "premise_holds": premise_holds(row)}
    reward = {scale: row["null"]["reward"] for scale, row in table.items()}
    chosen = max(reward, key=reward.get)
    logger.info("[ship] null shapes-hps by scale %s; default guidance %.1f", reward, chosen)
    return chosen, {str(scale): row for scale, row in table.items()}


def negative_words(judged, scale: float) -> dict[str, dict[str, float]]:
    """Each degradation word alone as the negative prompt: adherence and cleanliness by the ground truth.

    The build's per-word diagnostic: a word that hurts adherence would make the handcrafted negative a
    strawman (v2's "dark" and "washed out" did)."""
    result = {}
    for word in DEFECTS:
        verdict = judged(word, scale)
        result[word] = {k: round(float(verdict[k].nanmean()), 4) for k in PREMISE_KEYS if k in verdict}
    logger.info("[ship] guidance %.1f, each degradation word as the negative: %s", scale, result)
    return result


def check_replaceable(out: Path) -> None:
    """Refuse (one line) to replace ``out`` unless it is absent, empty, or a world this stage shipped."""
    if not out.exists():
        return
    if not out.is_dir():
        raise ReNegError(f"--out {out} is not a directory; pass a new or empty directory")
    if any(out.iterdir()) and not _is_shipped_world(out):
        raise ReNegError(f"--out {out} holds files that are not a world reneg shipped (no world.json of the "
                         f"shapes world); pass a new or empty directory")


def _is_shipped_world(directory: Path) -> bool:
    try:
        return json.loads((directory / "world.json").read_text()).get("name") == "shapes"
    except (OSError, ValueError, AttributeError):
        return False


def ship(work: Path, out: Path, *, metrics: dict, seed: int) -> Path:
    """Write the shipped world into ``out``, replacing it whole only if it is empty or a shipped world.

    The world is written into a fresh staging directory beside ``out`` (created here, never one that exists)
    and renamed into place at the end."""
    check_replaceable(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        _ship_into(work, staging, metrics=metrics, seed=seed)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    check_replaceable(out)
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    return out


def _ship_into(work: Path, staging: Path, *, metrics: dict, seed: int) -> None:
    _ship_models(work, staging)
    benchmark = benchmark_prompts()
    (staging / "prompts").mkdir()
    (staging / "prompts" / "benchmark.json").write_text(json.dumps(
        [{"prompt": p, "category": c} for p, c in benchmark], indent=0))
    held_out = {p for p, _ in benchmark}
    train = reneg_training_prompts(exclude=held_out)
    (staging / "prompts" / "train.txt").write_text("\n".join(train) + "\n")
    judged = _judged_generations(staging / "sd", staging / "truth", prompts=sweep_prompts(train), seed=seed,
                                 reward_dir=staging / "shapes-hps")
    guidance_scale, by_scale = choose_guidance_scale(judged)
    metrics = {**metrics, "premise_at_default_guidance": premise(judged, guidance_scale),
               "negative_words_at_default_guidance": negative_words(judged, guidance_scale)}
    sizes = {d.name: _size_mb(d) for d in staging.iterdir() if d.is_dir() and d.name != "prompts"}
    world = {
        "name": "shapes", "guidance_scale": guidance_scale, "num_inference_steps": NUM_INFERENCE_STEPS,
        "handcrafted_negative": HANDCRAFTED_NEGATIVE, "reward": "shapes-hps", "vocabulary": CURRENT.version,
        "guidance_sweep": {"prompts": f"{SWEEP_PROMPTS} training prompts", "by_scale": by_scale},
        "metrics": metrics, "weights_mb": sizes, "weights_mb_total": round(sum(sizes.values()), 2),
    }
    (staging / "world.json").write_text(json.dumps(world, indent=2) + "\n")
    logger.info("[ship] %.1f MB of fp16 weights, default guidance %.1f", world["weights_mb_total"], guidance_scale)
