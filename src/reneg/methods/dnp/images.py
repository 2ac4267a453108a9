"""Diffusion-negative sampling and prompting (DNP Sec. 3.4-3.5) and the ``reneg dnp`` command.

For a prompt p and initial noise x_T:

1. DNS (DNP Eq. 19): ``eps = eps(x_t, phi) + s_dns * (eps(x_t, phi) - eps(x_t, p))`` from x_T gives the
   diffusion-negative image I-bar, what the model takes for p's opposite;
2. a captioner (auto-DNP) or the user (``--caption TEXT``, the paper's manual DNP) names it: n*;
3. (p, n*) is sampled from the *same* x_T, with n* as the negative of either rule of :data:`DNP_RULES`:
   ``two-term`` (CFG with n* in place of the null text, ReNeg Eq. 5: what negative prompts in diffusers do,
   two model outputs per step) or ``three-term`` (DNP Eq. 4, ``eps_phi + s * (eps_p - eps_n*)``, three outputs:
   the form DNP derives and states it uses, Sec. 3.1).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ... import __version__
from ...config import (
    BATCH_SIZE,
    GUIDANCE_SCALE,
    NUM_IMAGES,
    SEED,
    PromptSettings,
    SamplingSettings,
    arg,
    builtin_command,
    require,
)
from ...core.guidance import CFG, DNS, THREE_TERM, Rule
from ...core.rollout import guided_images, rollout, text_branches
from ...errors import ReNegError
from ...families import Family
from ...models.loading import LoadedModel
from .captioners import CAPTIONERS, Captioner, load_captioner

#: How n* enters the sampler: ``--dnp-rule`` -> guidance rule.
DNP_RULES: dict[str, Rule] = {"two-term": CFG, "three-term": THREE_TERM}
DEFAULT_DNP_RULE = "two-term"


@torch.no_grad()
def dns_images(family: Family, prompts: list[str], latents: torch.Tensor, *, guidance_scale: float,
               steps: int) -> torch.Tensor:
    """Diffusion-negative images (DNP Eq. 19) of ``prompts`` from x_T = ``latents``, (B, 3, H, W) in [0, 1]."""
    branches = text_branches(family, family.encode(prompts), null=family.null_text(),
                             resolution=family.resolution_of(latents))
    return rollout(family, branches, latents, steps=steps, guidance_scale=guidance_scale, rule=DNS)


@torch.no_grad()
def dnp_images(family: Family, prompts: list[str], negative_prompts: list[str], latents: torch.Tensor, *,
               guidance_scale: float, steps: int, rule: str = DEFAULT_DNP_RULE) -> torch.Tensor:
    """Images of the pairs (p, n*) from x_T = ``latents``: each prompt with its own negative prompt n*.

    ``rule``: a key of :data:`DNP_RULES` (``two-term`` ReNeg Eq. 5 / ``three-term`` DNP Eq. 4).
    """
    if len(negative_prompts) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(negative_prompts)} negative prompts")
    return guided_images(family, prompts, family.encode(negative_prompts), latents, guidance_scale=guidance_scale,
                         steps=steps, resolution=family.resolution_of(latents), rule=DNP_RULES[rule])


def model_captioner(model: LoadedModel, name: str | None = None, model_path: str | None = None, *,
                    max_new_tokens: int = 30) -> Captioner:
    """The captioner ``name`` (default: the model's own, e.g. ``shapes-truth`` for the world, ``blip2`` otherwise)."""
    name = name or model.defaults.captioner
    if name is None:
        raise ReNegError(f"model '{model.name}' has no default captioner: pass --captioner NAME "
                         f"({', '.join(CAPTIONERS) or 'blip2'}) or a caption with --caption TEXT")
    options = {"max_new_tokens": max_new_tokens} if name == "blip2" else {}
    return load_captioner(name, model_path, device=model.pipe.device, dtype=model.family.dtype, **options)


# ---------------------------------------------------------------- reneg dnp


@dataclass
class DnpConfig(PromptSettings, SamplingSettings):
    """Settings of ``reneg dnp``; None means the model's default."""

    caption: str | None = arg(None, "the negative prompt n* for every prompt, as the user would write it for the "
                                    "DNS image (the paper's manual DNP; skips the captioner)", metavar="TEXT")
    captioner: str | None = arg(None, "captioner of auto-DNP (default: the model's; blip2 for real checkpoints)",
                                metavar="NAME")
    captioner_model: str | None = arg(None, "the captioner's model: a directory or a cached hub id (blip2: default "
                                            "Salesforce/blip2-opt-2.7b; never downloaded)", metavar="PATH_OR_ID")
    max_new_tokens: int = arg(30, "caption length limit in tokens (blip2; greedy decoding)", min=1)
    dnp_rule: str = arg(DEFAULT_DNP_RULE, "how n* guides: two-term (CFG with n* as the negative, as diffusers' "
                                          "negative prompts) or three-term (DNP Eq. 4: null text, n* and p)",
                        choices=list(DNP_RULES))
    num_images: int = NUM_IMAGES(help="images (initial noises) per prompt")
    guidance_scale: float | None = GUIDANCE_SCALE(help="guidance scale of the DNP image")
    dns_guidance_scale: float | None = GUIDANCE_SCALE(help="guidance scale of the DNS image, s of DNP Eq. 19 "
                                                           "(default: the model's guidance scale)")
    seed: int = SEED(help="seed of a CPU generator drawing the initial latents as diffusers does (`reneg generate "
                          "--dnp` with the same seed and batch size starts from the same noise)")
    batch_size: int = BATCH_SIZE(4, "images per forward pass")
    out: str = arg("dnp", "output directory: dns.png, caption.txt, dnp.png (a subfolder per prompt and image when "
                          "there are several) and index.json", metavar="DIR", output="dir")

    def __post_init__(self):
        super().__post_init__()
        require(self.caption is None or self.caption.strip() != "",
                "--caption is empty: give the negative prompt n* (or leave it out for auto-DNP)")
        require(self.caption is None or (self.captioner is None and self.captioner_model is None),
                "--caption replaces the captioner: give --caption or --captioner/--captioner-model, not both")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")[:40] or "prompt"


def dnp(config: DnpConfig, *, model: LoadedModel | None = None) -> Path:
    """Run ``reneg dnp``: per prompt and image, the DNS image, its caption n* and the DNP image; returns index.json."""
    from ...infotext import parameters_text
    from ...io import atomic_path, save_png, to_pil, write_json
    from ...models.device import dtype_of, resolve_device
    from ...models.loading import load_model
    from ...prompts import gather_prompts

    # 1. Inputs: everything is checked before anything is written
    prompts = [p.text for p in gather_prompts(prompt=config.prompt, prompts_file=config.prompts)]
    model = model or load_model(config.model, device=resolve_device(config.device), dtype=dtype_of(config.precision))
    captioner = None if config.caption is not None else model_captioner(
        model, config.captioner, config.captioner_model, max_new_tokens=config.max_new_tokens)
    family, sampling = model.family, model.sampling(config)
    family.warn_if_truncated(prompts)
    steps, guidance_scale, resolution = sampling.steps, sampling.guidance_scale, sampling.resolution
    dns_scale = model.sampling(guidance_scale=config.dns_guidance_scale).guidance_scale
    # 2. Items in diffusers' order (each prompt's images together), x_T drawn batch after batch from one generator
    items = [(p, i) for p in prompts for i in range(config.num_images)]
    generator = torch.Generator().manual_seed(config.seed)
    out, records = Path(config.out), []
    with tqdm(total=len(items), desc="dnp", unit="img") as progress:
        for start in range(0, len(items), config.batch_size):
            batch = items[start:start + config.batch_size]
            batch_prompts = [p for p, _ in batch]
            latents = family.initial_latents(len(batch), resolution=resolution, generator=generator)
            negatives = dns_images(family, batch_prompts, latents, guidance_scale=dns_scale, steps=steps)
            captions = captioner(negatives) if captioner else [config.caption] * len(batch)
            images = dnp_images(family, batch_prompts, captions, latents, guidance_scale=guidance_scale, steps=steps,
                                rule=config.dnp_rule)
            # 3. Outputs, each file atomic: one folder per item when there are several
            for offset, ((prompt, number), dns_image, text, image) in enumerate(
                    zip(batch, to_pil(negatives), captions, to_pil(images))):
                index = start + offset
                folder = "." if len(items) == 1 else f"{index:04d}-{_slug(prompt)}"
                pairs = {"Steps": steps, "Sampler": family.sampler, "Seed": config.seed, "Batch index": index,
                         "Model": model.name, "ReNeg source": "reneg dnp"}
                save_png(dns_image, out / folder / "dns.png", {"parameters": parameters_text(
                    prompt, None, {**pairs, "CFG scale": dns_scale, "ReNeg method": "DNS (DNP Eq. 19)"})})
                with atomic_path(out / folder / "caption.txt") as tmp:
                    tmp.write_text(text + "\n", encoding="utf-8")
                save_png(image, out / folder / "dnp.png", {"parameters": parameters_text(
                    prompt, text, {**pairs, "CFG scale": guidance_scale, "ReNeg method": f"dnp ({config.dnp_rule})"})})
                records.append({"prompt": prompt, "image_index": number, "dir": folder, "caption": text})
            progress.update(len(batch))
    path = out / "index.json"
    write_json(path, {
        "model": model.name, "seed": config.seed, "steps": steps, "guidance_scale": guidance_scale,
        "dns_guidance_scale": dns_scale, "dnp_rule": config.dnp_rule, "resolution": resolution,
        "captioner": "manual (--caption)" if captioner is None else (config.captioner or model.defaults.captioner),
        "precision": config.precision, "scheduler": model.family.sampler, "reneg_version": __version__,
        "items": records,
    })
    return path


COMMAND = builtin_command("dnp", DnpConfig, dnp)
