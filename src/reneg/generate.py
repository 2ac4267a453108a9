"""Inference (``reneg generate``): the same sampler as training, gradients off, images and generation.json."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from tqdm.auto import tqdm

from . import __version__
from .config import MODEL_HELP, arg, require
from .families import TextConditioning
from .io import save_output, write_json
from .methods.base import FixedNegative, Method
from .methods.spec import build_methods, parse_method_spec
from .models.device import dtype_of, resolve_device
from .models.loading import LoadedModel, load_model
from .prompts import gather_prompts


@dataclass
class GenerateConfig:
    """Settings of ``reneg generate``; None means the model's default."""

    model: str | None = arg(None, MODEL_HELP)
    prompt: list[str] = arg([], "a prompt (repeatable)")
    prompts: str | None = arg(None, "prompts file (.txt one a line, .json, .tsv)", metavar="FILE")
    negative_prompt: str | None = arg(None, "a negative prompt in place of the null text", metavar="TEXT")
    negative: str | None = arg(None, "a learned negative embedding file (.safetensors, .pt, .bin)", metavar="FILE")
    handcrafted: bool = arg(False, "use the model's handcrafted negative prompt")
    per_sample: str | None = arg(None, "adapt a per-sample embedding to each prompt from this global embedding "
                                       "(ReNeg Algorithm 1; saved in --out/per-sample/), then generate with it",
                                 metavar="FILE")
    dnp: bool = arg(False, "auto-DNP (DNP Sec. 3.5): sample each image's DNS image from its x_T, caption it, "
                           "and use the caption n* as its negative prompt")
    caption: str | None = arg(None, "DNP with this negative prompt n* for every prompt (manual DNP)", metavar="TEXT")
    dnp_rule: str = arg("two-term", "how n* guides: two-term (CFG with n* as the negative) or three-term "
                                    "(DNP Eq. 4: null text, n* and p)", choices=["two-term", "three-term"])
    dns_guidance_scale: float | None = arg(None, "--dnp: guidance scale of the DNS image, s of DNP Eq. 19 "
                                                 "(default: the model's guidance scale)", min=0)
    captioner: str | None = arg(None, "--dnp: captioner (default: the model's; blip2 for real checkpoints)",
                                metavar="NAME")
    captioner_model: str | None = arg(None, "--dnp: the captioner's model, a directory or cached hub id",
                                      metavar="PATH_OR_ID")
    npo: str | None = arg(None, "Diffusion-NPO: a negative-preference LoRA (reneg npo --out DIR) on the negative "
                                "branch", metavar="DIR")
    npo_beta: float = arg(1.0, "--npo: scale beta of delta on the negative branch (NPO Eq. 10)", metavar="B")
    npo_alpha: float = arg(1.0, "--lora: scale alpha of eta on the negative branch (NPO Eq. 10); without --npo the "
                                "weight merge theta + alpha*eta of NPO Eq. 4", metavar="A")
    lora: str | None = arg(None, "a positive LoRA eta on the prompt's branch (with --npo, or alone for NPO's weight "
                                 "merge)", metavar="DIR")
    num_images: int = arg(1, "images per prompt", min=1)
    steps: int | None = arg(None, "DDIM sampling steps", min=1)
    guidance_scale: float | None = arg(None, "CFG scale", min=0)
    resolution: int | None = arg(None, "image size in pixels, a multiple of 8 (default: the model's)", min=8,
                                 multiple_of=8)
    control_image: str | None = arg(None, "ControlNet pipelines: the control image every image is conditioned on",
                                    metavar="FILE")
    num_frames: int | None = arg(None, "video pipelines: frames per video (default: 16, as diffusers)", min=1)
    seed: int = arg(0, "seed of a CPU generator drawing the initial latents as diffusers does", min=0,
                    max=2**63 - 1)
    batch_size: int = arg(4, "images per forward pass", min=1)
    device: str = arg("auto", "cpu, cuda, cuda:N or auto")
    precision: str = arg("fp32", "dtype of the models", choices=["fp32", "fp16", "bf16"])
    out: str = arg("generated", "output directory", metavar="DIR", output="dir")

    def __post_init__(self):
        chosen = [self.negative_prompt is not None, self.negative is not None, self.handcrafted,
                  self.per_sample is not None]
        require(sum(chosen) <= 1, "choose at most one of --negative-prompt, --negative, --handcrafted and "
                                  "--per-sample")
        require(not (self.dnp or self.caption is not None) or not any(chosen),
                "--dnp and --caption choose the negative prompt themselves: drop --negative-prompt, --negative "
                "and --handcrafted")
        require(not (self.dnp and self.caption is not None), "--dnp captions the DNS image and --caption gives the "
                "caption: choose one")
        require(self.caption is None or self.caption.strip() != "", "--caption is empty: give the negative prompt")
        require(self.dnp or (self.dns_guidance_scale is None and self.captioner is None
                             and self.captioner_model is None),
                "--dns-guidance-scale, --captioner and --captioner-model apply to --dnp only: add --dnp")
        uses_npo = self.npo is not None or self.lora is not None
        require(not uses_npo or not (self.negative_prompt is not None or self.handcrafted or self.per_sample
                                     or self.dnp or self.caption is not None),
                "--npo/--lora combine with null text or a learned --negative FILE only")
        require(self.lora is not None or self.npo_alpha == 1.0, "--npo-alpha scales --lora: add --lora DIR")
        require(self.npo is not None or self.npo_beta == 1.0, "--npo-beta scales --npo: add --npo DIR")
        require(self.lora is None or self.npo is not None or self.negative is None,
                "--lora without --npo is NPO's weight merge, with null text only: drop --negative or add --npo")
        require(self.num_images >= 1, f"--num-images must be >= 1, got {self.num_images}")
        require(self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}")
        require(self.steps is None or self.steps >= 1, f"--steps must be >= 1, got {self.steps}")

    @property
    def method(self) -> str:
        if self.npo is not None:
            options = [f"beta={self.npo_beta}"] + ([f"lora={self.lora}", f"alpha={self.npo_alpha}"] if self.lora else [])
            return ",".join([f"npo={self.npo}", *options] + ([f"negative={self.negative}"] if self.negative else []))
        if self.lora is not None:
            return f"npo-merge={self.lora},gamma={self.npo_alpha}"
        if self.dnp:
            return "dnp"
        if self.caption is not None:
            return f"dnp-caption={self.caption}"
        if self.negative is not None:
            return f"embedding={self.negative}"
        if self.per_sample is not None:
            return f"per-sample={self.per_sample}"
        if self.negative_prompt is not None:
            return f"negative-prompt={self.negative_prompt}"
        return "handcrafted" if self.handcrafted else "null"


def method_for(model: LoadedModel, config: GenerateConfig) -> Method:
    """The chosen method (``reneg eval``'s registry: null, handcrafted, negative-prompt, embedding, ...)."""
    method = build_methods([parse_method_spec(config.method)], model)[config.method]
    if config.dnp or config.caption is not None:
        return method.with_options(rule=config.dnp_rule, dns_guidance_scale=config.dns_guidance_scale,
                                   captioner=config.captioner, captioner_model=config.captioner_model)
    if hasattr(method, "out"):  # --per-sample keeps the adapted embeddings beside the images
        method.out = Path(config.out)
    return method


@torch.no_grad()
def generate_images(model: LoadedModel, prompts: list[str], negative, *, guidance_scale: float, steps: int,
                    resolution: int, generator: torch.Generator, batch_size: int) -> Iterator[torch.Tensor]:
    """Yield image batches (B, 3, H, W) in [0, 1], drawing x_T batch after batch from one generator.

    ``negative``: a :class:`TextConditioning`, an (L, D) embedding, or a method (anything with ``images``).
    """
    family = model.family
    method = negative if hasattr(negative, "images") else FixedNegative(TextConditioning.of(negative), "given")
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start:start + batch_size]
        latents = family.initial_latents(len(batch), resolution=resolution, generator=generator)
        yield method.images(model, batch, latents, guidance_scale=guidance_scale, steps=steps)


def generate(config: GenerateConfig, *, model: LoadedModel | None = None) -> Path:
    """Generate images for every prompt into ``config.out``; returns the path of generation.json."""
    # 1. Inputs: everything is checked before anything is written
    prompts = [p.text for p in gather_prompts(prompt=config.prompt, prompts_file=config.prompts)]
    device, dtype = resolve_device(config.device), dtype_of(config.precision)
    model = model or load_model(config.model, device=device, dtype=dtype)
    model.family.condition_on(control_image=config.control_image, num_frames=config.num_frames)
    method = method_for(model, config)
    getattr(method, "prepare", lambda model, prompts: None)(model, prompts)  # DNP: its captioner, before any image
    steps = config.steps or model.defaults.num_inference_steps
    guidance_scale = config.guidance_scale if config.guidance_scale is not None else model.defaults.guidance_scale
    resolution = config.resolution or model.resolution
    # 2. Items in diffusers' order: each prompt's images together
    items = [(p, i) for p in prompts for i in range(config.num_images)]
    generator = torch.Generator().manual_seed(config.seed)
    out = Path(config.out)
    records, index = [], 0
    batches = generate_images(model, [p for p, _ in items], method, guidance_scale=guidance_scale,
                              steps=steps, resolution=resolution, generator=generator, batch_size=config.batch_size)
    with tqdm(total=len(items), desc="generate", unit="img") as progress:
        for images in batches:
            captions = [side["caption"] for side in getattr(method, "side_outputs", [])]  # DNP's n* per image
            for offset, image in enumerate(images):
                prompt, number = items[index]
                records.append({**save_output(image, out, index), "prompt": prompt, "image_index": number,
                                **({"caption": captions[offset]} if captions else {})})
                index += 1
                progress.update(1)
    # 3. The record of what was made
    path = out / "generation.json"
    write_json(path, {
        "model": model.name, "method": config.method, "seed": config.seed, "steps": steps,
        "guidance_scale": guidance_scale, "resolution": resolution, "num_images_per_prompt": config.num_images,
        "precision": config.precision, "scheduler": model.family.sampler, "reneg_version": __version__,
        **({"control_image": config.control_image} if config.control_image else {}), "images": records,
    })
    return path
