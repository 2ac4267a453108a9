"""Inference (``reneg generate``): the same sampler as training, gradients off, images and generation.json."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from tqdm.auto import tqdm

from . import __version__, infotext
from .config import (BATCH_SIZE, NUM_IMAGES, ConditionSettings, PromptSettings, SamplingSettings, arg,
                     builtin_command, require)
from .errors import ReNegError
from .families import TextConditioning
from .io import save_output, write_json
from .methods.base import FixedNegative, Method, own_guidance_scale
from .methods.baselines import BaselineFlags
from .methods.dnp.apply import DnpFlags
from .methods.npo.apply import NpoFlags
from .methods.reneg.apply import PerSampleFlags
from .methods.spec import build_methods, parse_method_spec
from .models.device import dtype_of, resolve_device
from .models.loading import LoadedModel, load_model
from .prompts import gather_prompts

#: The method folders' flags that stand for a ``--method`` spec, in the order their specs take precedence
#: (``--npo DIR --negative FILE`` is one NPO spec).
ALIAS_FLAGS = (NpoFlags, DnpFlags, PerSampleFlags, BaselineFlags)


@dataclass
class MethodSetting:
    """``--method SPEC``, ahead of the flags that stand for one."""

    method: str | None = arg(None, "how the negative is applied: one spec of `reneg eval --methods` (null, "
                                   "handcrafted, negative-prompt=TEXT, embedding=FILE, per-sample=FILE, dnp, "
                                   "npo=DIR, ...; @GS sets the guidance scale) (default: null, or what the alias "
                                   "flags below say)", metavar="SPEC")


@dataclass
class GenerateConfig(BaselineFlags, PerSampleFlags, DnpFlags, NpoFlags, MethodSetting, PromptSettings,
                     ConditionSettings, SamplingSettings):
    """Settings of ``reneg generate``; None means the model's default."""

    num_images: int = NUM_IMAGES(aliases=("--images-per-prompt",))
    batch_size: int = BATCH_SIZE(4, "images per forward pass")
    out: str = arg("generated", "output directory", metavar="DIR", output="dir")
    from_png: str | None = arg(None, "make again, bit for bit, an image that `reneg generate` wrote, from the record "
                                     "its PNG carries (the prompt, method, files, seed and settings all come from "
                                     "there; --out, --device stay yours)", metavar="IMAGE")
    method_is_flag_text: bool = arg(False, "the --method spec came from a flag's free text (its @ is text)", cli=False)

    def __post_init__(self):
        super().__post_init__()
        aliases = [flags.alias_spec(self) for flags in ALIAS_FLAGS]
        require(self.method is None or not any(aliases), "--method and the flags that stand for a method "
                "(--negative, --negative-prompt, --handcrafted, --per-sample, --dnp, --caption, --npo, --lora) "
                "choose the same thing: give one of them")
        chosen = [self.negative_prompt is not None, self.negative is not None, self.handcrafted,
                  self.per_sample is not None]
        require(sum(chosen) <= 1, "choose at most one of --negative-prompt, --negative, --handcrafted and "
                                  "--per-sample")
        require(not (self.dnp or self.caption is not None) or not any(chosen),
                "--dnp and --caption choose the negative prompt themselves: drop --negative-prompt, --negative "
                "and --handcrafted")
        uses_npo = self.npo is not None or self.lora is not None
        require(not uses_npo or not (self.negative_prompt is not None or self.handcrafted or self.per_sample
                                     or self.dnp or self.caption is not None),
                "--npo/--lora combine with null text or a learned --negative FILE only")
        require(not self.nag or not (uses_npo or self.per_sample or self.dnp or self.caption is not None),
                "--nag applies a fixed negative (null text, --negative-prompt, --handcrafted, --negative FILE): drop "
                "--npo, --lora, --per-sample, --dnp and --caption, or --nag")
        DnpFlags.check_flags(self, self.spec)
        NpoFlags.check_flags(self, self.spec)
        given = [flag for flag, value in (("--prompt", self.prompt), ("--prompts", self.prompts),
                                          ("--method", self.method), ("--model", self.model), ("--seed", self.seed),
                                          ("--steps", self.steps), ("--guidance-scale", self.guidance_scale))
                 if value not in (None, [], 0)] + (["a method flag"] if any(aliases) else [])
        require(not self.from_png or not given, f"--from-png takes the prompt, model, method and settings from the "
                f"image: drop {', '.join(given)}")

    @property
    def spec(self) -> str:
        """The method spec the images are made with: ``--method``, else what the alias flags stand for, else null."""
        return self.method or next((s for s in (flags.alias_spec(self) for flags in ALIAS_FLAGS) if s), "null")

    def parsed_spec(self):
        """:attr:`spec` parsed; ``@GS`` is a guidance scale only in ``--method`` (alias flags carry free text)."""
        return parse_method_spec(self.spec, guidance_suffix=self.method is not None and not self.method_is_flag_text)


def method_for(model: LoadedModel, config: GenerateConfig) -> Method:
    """The chosen method (the registry of ``reneg eval``'s methods: null, handcrafted, embedding, ...)."""
    spec = config.parsed_spec()
    method = DnpFlags.configure(config, build_methods([spec], model)[spec.base])
    if hasattr(method, "out"):  # per-sample keeps the adapted embeddings beside the images
        method.out = Path(config.out)
    return method


@torch.no_grad()
def generate_images(model: LoadedModel, prompts: list[str], negative, *, guidance_scale: float, steps: int,
                    resolution: int, generator: torch.Generator, batch_size: int,
                    skip_batches: int = 0) -> Iterator[torch.Tensor]:
    """Yield image batches (B, 3, H, W) in [0, 1], drawing x_T batch after batch from one generator.

    ``negative``: a :class:`TextConditioning`, an (L, D) embedding, or a method (anything with ``images``).
    ``skip_batches``: draw (and drop) the x_T of that many full batches first (``--from-png``: the image's
    batch was not the run's first).
    """
    family = model.family
    method = negative if hasattr(negative, "images") else FixedNegative(TextConditioning.of(negative), "given")
    for _ in range(skip_batches):
        family.initial_latents(batch_size, resolution=resolution, generator=generator)
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start:start + batch_size]
        latents = family.initial_latents(len(batch), resolution=resolution, generator=generator)
        yield method.images(model, batch, latents, guidance_scale=guidance_scale, steps=steps)


def generate(config: GenerateConfig, *, model: LoadedModel | None = None) -> Path:
    """Generate images for every prompt into ``config.out``; returns the path of generation.json."""
    if config.from_png:
        return reproduce(config, model=model)
    return _generate(config, model=model)


def reproduce(config: GenerateConfig, *, model: LoadedModel | None = None) -> Path:
    """``--from-png``: the image's whole batch again, from its record (:mod:`reneg.infotext`); only it is kept."""
    record = infotext.read(config.from_png)
    again = GenerateConfig(model=record["model"], method=record["method"], seed=record["seed"],
                           method_is_flag_text=record["method_is_flag_text"], steps=record["steps"],
                           guidance_scale=None if "@" in record["method"] and not record["method_is_flag_text"]
                           else record["guidance_scale"], resolution=record["resolution"],
                           precision=record["precision"], batch_size=record["batch_size"],
                           prompt=list(record["batch_prompts"]), out=config.out, device=config.device)
    if record.get("control_image"):
        again.control_image = record["control_image"]
    return _generate(again, model=model, skip_batches=record["batch_start"] // record["batch_size"],
                     keep=record["offset"], source=config.from_png)


def _generate(config: GenerateConfig, *, model: LoadedModel | None, skip_batches: int = 0, keep: int | None = None,
              source: str | None = None) -> Path:
    # 1. Inputs: everything is checked before anything is written
    prompts = [p.text for p in gather_prompts(prompt=config.prompt, prompts_file=config.prompts)]
    device, dtype = resolve_device(config.device), dtype_of(config.precision)
    model = model or load_model(config.model, device=device, dtype=dtype)
    model.family.condition_on(control_image=config.control_image, num_frames=config.num_frames)
    model.family.warn_if_truncated(prompts)
    method = method_for(model, config)
    getattr(method, "prepare", lambda model, prompts: None)(model, prompts)  # DNP: its captioner, before any image
    spec_scale = config.parsed_spec().guidance_scale  # `--method SPEC@GS`
    require(spec_scale is None or config.guidance_scale is None, f"--method {config.spec} sets the guidance scale "
            "and so does --guidance-scale: give one of them")
    if spec_scale is None and config.guidance_scale is None:
        spec_scale = own_guidance_scale(method)  # NAG methods: their own s, not the model's CFG scale
    sampling = model.sampling(config, **({} if spec_scale is None else {"guidance_scale": spec_scale}))
    steps, guidance_scale, resolution = sampling.steps, sampling.guidance_scale, sampling.resolution
    # 2. Items in diffusers' order: each prompt's images together
    items = [(p, i) for p in prompts for i in range(config.num_images)]
    generator = torch.Generator().manual_seed(config.seed)
    out = Path(config.out)
    path, records, index = out / "generation.json", [], 0
    header = {
        "model": model.name, "method": config.spec, "seed": config.seed, "steps": steps,
        "guidance_scale": guidance_scale, "resolution": resolution, "num_images_per_prompt": config.num_images,
        "precision": config.precision, "scheduler": model.family.sampler, "reneg_version": __version__,
        **({"control_image": config.control_image} if config.control_image else {}),
        **({"reproduced_from": source} if source else {}),
    }
    describe = _describer(config, model, header, skip_batches)
    batches = generate_images(model, [p for p, _ in items], method, guidance_scale=guidance_scale,
                              steps=steps, resolution=resolution, generator=generator, batch_size=config.batch_size,
                              skip_batches=skip_batches)
    total = len(items) if keep is None else 1
    with tqdm(total=total, desc="generate", unit="img") as progress:
        for images in batches:
            if index == 0:  # the first batch is whole: a previous run's outputs give way (never other files)
                remove_previous_outputs(path)
            captions = [side["caption"] for side in getattr(method, "side_outputs", [])]  # DNP's n* per image
            start = index
            for offset, image in enumerate(images):
                prompt, number = items[index]
                if keep is None or offset == keep:
                    text = describe(items[start:start + len(images)], start, offset)
                    records.append({**save_output(image, out, len(records), text=text), "prompt": prompt,
                                    "image_index": number, **({"caption": captions[offset]} if captions else {})})
                    progress.update(1)
                index += 1
            # 3. The record of what was made, after every batch: an interrupted run's says what it holds
            write_json(path, {**header, "complete": index == len(items), "images": records})
    return path


def _describer(config: GenerateConfig, model: LoadedModel, header: dict, skip_batches: int):
    """``describe(batch items, batch start, offset)``: the PNG text chunks of one image (:mod:`reneg.infotext`)."""
    spec = config.parsed_spec()
    negative_text = (spec.argument if spec.name == "negative-prompt" else
                     model.defaults.handcrafted_negative if spec.name == "handcrafted" else None)
    files = infotext.files_of(config.spec)
    if config.control_image:
        files[config.control_image] = infotext.path_identity(config.control_image)
    fixed = {key: header[key] for key in ("model", "method", "seed", "steps", "guidance_scale", "resolution",
                                          "precision")}
    fixed.update(method_is_flag_text=config.method is None or config.method_is_flag_text,
                 batch_size=config.batch_size, files=files, version=__version__,
                 control_image=config.control_image)

    def describe(batch, start: int, offset: int) -> dict[str, str]:
        record = {**fixed, "batch_start": start + skip_batches * config.batch_size,
                  "batch_prompts": [prompt for prompt, _ in batch], "offset": offset}
        return infotext.chunks(record, negative_text=negative_text, scheduler=header["scheduler"])

    return describe


def remove_previous_outputs(record: Path) -> None:
    """Delete the images (and video frames) that an earlier run's ``generation.json`` lists, and the record;
    files it does not list stay."""
    if not record.is_file():
        return
    try:
        earlier = json.loads(record.read_text()).get("images", [])
    except (OSError, ValueError, AttributeError):
        raise ReNegError(f"'{record}' is not a generation record reneg wrote: move it away or choose another --out")
    base = record.parent.resolve()
    for item in earlier:
        names = [item.get("file", "")] + list(item.get("frames", [])) if isinstance(item, dict) else []
        for name in names:
            target = (base / str(name)).resolve()
            if target.parent.is_relative_to(base) and target.suffix in (".png", ".gif") and target.is_file():
                target.unlink()
        stem = base / Path(str(names[0])).stem if names and names[0] else None
        if stem is not None and stem.is_dir() and not any(stem.iterdir()):
            stem.rmdir()
    record.unlink()


COMMAND = builtin_command("generate", GenerateConfig, generate)
