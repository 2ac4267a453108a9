"""DNP's methods for ``reneg eval`` and ``reneg generate`` (DNP Sec. 3.5): ``dnp``, ``dnp=CAPTION_FILE``,
``dnp-caption=TEXT``, and ``reneg generate``'s DNP flags.

- ``dnp`` (auto-DNP): per item, the DNS image from the item's own x_T, captioned by the model's captioner
  (``shapes-truth`` in the world, ``blip2`` otherwise), then (p, n*) from the same x_T.
- ``dnp=CAPTION_FILE``: n* per prompt from a JSON object ``{"prompt": "caption", ...}`` (every evaluated
  prompt must be a key), e.g. written by hand after looking at ``reneg dnp``'s DNS images (manual DNP).
- ``dnp-caption=TEXT``: one n* for every prompt (``reneg generate --caption TEXT``).

Each call leaves ``side_outputs`` (per image: the DNS image, where one was sampled, and the caption) for the
caller to keep: ``reneg eval`` saves them beside the images and shows them in index.html's gallery.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ...config import arg, require
from ...errors import ReNegError
from ...identity import file_identity
from ...io import to_pil
from ...models.loading import LoadedModel
from ..base import Method, register_method
from .images import DEFAULT_DNP_RULE, DNP_RULES, dnp_images, dns_images, model_captioner


@dataclass
class DnpMethod:
    """DNP images: n* from ``caption`` (one for all), ``captions`` (per prompt) or, with neither, auto-DNP.

    Args:
        identity: what decides the images besides the shared settings (see :class:`~reneg.evaluate.Method`).
        rule: ``two-term`` or ``three-term`` (:data:`reneg.methods.dnp.images.DNP_RULES`).
        dns_guidance_scale: s of DNP Eq. 19 (auto-DNP only; None: the model's guidance scale).
        captioner, captioner_model: auto-DNP's captioner and its model (None: the model's default).
    """

    identity: str
    caption: str | None = None
    captions: dict[str, str] | None = None
    rule: str = DEFAULT_DNP_RULE
    dns_guidance_scale: float | None = None
    captioner: str | None = None
    captioner_model: str | None = None
    side_outputs: list[dict] = field(default_factory=list, repr=False)
    _loaded_captioner: object = field(default=None, repr=False)

    @property
    def auto(self) -> bool:
        return self.caption is None and self.captions is None

    def with_options(self, *, rule: str, dns_guidance_scale: float | None, captioner: str | None = None,
                     captioner_model: str | None = None) -> DnpMethod:
        """The same method with other DNP settings (``reneg generate``'s flags), its identity updated."""
        return DnpMethod(_identity(self.identity.split("|")[0], rule, dns_guidance_scale, captioner, captioner_model,
                                   auto=self.auto), self.caption, self.captions, rule, dns_guidance_scale,
                         captioner, captioner_model)

    def prepare(self, model: LoadedModel, prompts: list[str]) -> None:
        """Before any image (``reneg eval`` and ``generate`` call it): every prompt has a caption in the caption
        file, or auto-DNP's captioner loads; else a one-line ReNegError."""
        missing = [p for p in prompts if self.captions is not None and p not in self.captions]
        if missing:
            raise ReNegError(f"the caption file has no caption for the prompt '{missing[0]}' ({len(missing)} "
                             "prompts missing): add each as a key of the JSON object (prompt -> negative prompt)")
        if self.auto and getattr(model.family, "is_video", False):
            raise ReNegError(f"auto-DNP captions a DNS image and {type(model.pipe).__name__} makes videos: give n* "
                             "yourself (eval: dnp=CAPTIONS.json or dnp-caption=TEXT; generate: --caption TEXT)")
        if self.auto and self._loaded_captioner is None:
            self._loaded_captioner = model_captioner(model, self.captioner, self.captioner_model)

    def _negative_prompts(self, model: LoadedModel, prompts: list[str], dns: torch.Tensor | None) -> list[str]:
        if self.caption is not None:
            return [self.caption] * len(prompts)
        if self.captions is not None:
            self.prepare(model, prompts)
            return [self.captions[p] for p in prompts]
        self.prepare(model, prompts)
        return self._loaded_captioner(dns)

    def images(self, model: LoadedModel, prompts: list[str], latents: torch.Tensor, *, guidance_scale: float,
               steps: int) -> torch.Tensor:
        family = model.family
        dns = None
        if self.auto:
            scale = self.dns_guidance_scale if self.dns_guidance_scale is not None else model.defaults.guidance_scale
            dns = dns_images(family, prompts, latents, guidance_scale=scale, steps=steps)
        negative_prompts = self._negative_prompts(model, prompts, dns)
        images = dnp_images(family, prompts, negative_prompts, latents, guidance_scale=guidance_scale, steps=steps,
                            rule=self.rule)
        dns_pil = to_pil(dns) if dns is not None else [None] * len(prompts)
        self.side_outputs = [{"caption": text, "dns": image} for text, image in zip(negative_prompts, dns_pil)]
        return images


def _identity(base: str, rule: str, dns_guidance_scale: float | None, captioner: str | None,
              captioner_model: str | None, *, auto: bool) -> str:
    parts = [base, f"rule={rule}"]
    if auto:
        parts += [f"dns_gs={dns_guidance_scale}", f"captioner={captioner}", f"captioner_model={captioner_model}"]
    return "|".join(parts)


def read_caption_file(path: str | Path) -> dict[str, str]:
    """``{prompt: caption}`` of a JSON caption file; a missing or malformed file is a one-line ReNegError."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ReNegError(f"caption file '{path}' does not exist: pass a JSON file mapping each prompt to its "
                         "negative prompt n*, e.g. {\"a red circle\": \"a blue square\"}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ReNegError(f"caption file '{path}' is not valid JSON ({error}): fix it") from None
    if not isinstance(data, dict) or not data or not all(isinstance(k, str) and isinstance(v, str)
                                                         for k, v in data.items()):
        raise ReNegError(f"caption file '{path}' must hold a non-empty JSON object of prompt -> caption strings")
    return data


def parse_dnp_argument(argument: str | None) -> tuple[str | None, str]:
    """``[CAPTION_FILE][,rule=two-term|three-term]`` -> (caption file or None, rule)."""
    path, rule = None, DEFAULT_DNP_RULE
    for piece in (argument or "").split(","):
        key, equals, value = piece.partition("=")
        if equals and key.strip() == "rule":
            if value.strip() not in DNP_RULES:
                raise ReNegError(f"method 'dnp={argument}': rule must be one of {', '.join(DNP_RULES)}, got "
                                 f"'{value.strip()}'")
            rule = value.strip()
        elif equals:
            raise ReNegError(f"method 'dnp={argument}': unknown option '{piece}': use rule=two-term|three-term")
        elif piece.strip():
            path = piece.strip()
    return path, rule


def _check_dnp(argument: str) -> None:
    path, _ = parse_dnp_argument(argument)
    if path is not None:
        read_caption_file(path)


@register_method("dnp", argument="CAPTION_FILE", optional=True, check=_check_dnp,
                 description="DNP: auto-DNP (DNS image, captioned) or n* per prompt from a JSON {prompt: caption} "
                             "file; n* as the negative prompt of (p, n*) ([CAPTION_FILE][,rule=three-term]: DNP Eq. 4)")
def _dnp(argument: str | None, model: LoadedModel) -> Method:
    path, rule = parse_dnp_argument(argument)
    if path is None:
        return DnpMethod(_identity("dnp-auto", rule, None, None, None, auto=True), rule=rule)
    return DnpMethod(_identity(f"dnp-file:{file_identity(path)}", rule, None, None, None, auto=False),
                     captions=read_caption_file(path), rule=rule)


@register_method("dnp-caption", argument="TEXT", description="DNP with one negative prompt n* for every prompt "
                                                             "(manual DNP, `reneg generate --caption TEXT`)")
def _dnp_caption(argument: str | None, model: LoadedModel) -> Method:
    text_hash = hashlib.sha256(argument.encode()).hexdigest()[:16]
    return DnpMethod(_identity(f"dnp-text:{text_hash}", DEFAULT_DNP_RULE, None, None, None, auto=False),
                     caption=argument)



@dataclass
class DnpFlags:
    """``reneg generate``'s DNP flags: ``--dnp`` and ``--caption`` are aliases of ``--method dnp`` and
    ``--method dnp-caption=TEXT``; the others tune any DNP spec."""

    dnp: bool = arg(False, "auto-DNP (DNP Sec. 3.5): sample each image's DNS image from its x_T, caption it, "
                           "and use the caption n* as its negative prompt (--method dnp)")
    caption: str | None = arg(None, "DNP with this negative prompt n* for every prompt, manual DNP (--method "
                                    "dnp-caption=TEXT)", metavar="TEXT")
    dnp_rule: str = arg(DEFAULT_DNP_RULE, "how n* guides: two-term (CFG with n* as the negative) or three-term "
                                          "(DNP Eq. 4: null text, n* and p)", choices=list(DNP_RULES))
    dns_guidance_scale: float | None = arg(None, "auto-DNP: guidance scale of the DNS image, s of DNP Eq. 19 "
                                                 "(default: the model's guidance scale)", min=0)
    captioner: str | None = arg(None, "auto-DNP: captioner (default: the model's; blip2 for real checkpoints)",
                                metavar="NAME")
    captioner_model: str | None = arg(None, "auto-DNP: the captioner's model, a directory or cached hub id",
                                      metavar="PATH_OR_ID")

    def alias_spec(self) -> str | None:
        """The spec these flags stand for, or None when neither --dnp nor --caption is given."""
        if self.dnp:
            return "dnp"
        return None if self.caption is None else f"dnp-caption={self.caption}"

    def check_flags(self, spec: str) -> None:
        """The DNP flags' own rules, once ``spec`` (the method generated with) is known."""
        require(not (self.dnp and self.caption is not None), "--dnp captions the DNS image and --caption gives the "
                "caption: choose one")
        require(self.caption is None or self.caption.strip() != "", "--caption is empty: give the negative prompt")
        require(spec.split("=")[0].split("@")[0] in ("dnp", "dnp-caption") or self.dnp_rule == DEFAULT_DNP_RULE,
                "--dnp-rule applies to DNP only: add --dnp or --caption TEXT")
        auto = spec.split("@")[0] == "dnp"
        require(auto or (self.dns_guidance_scale is None and self.captioner is None and self.captioner_model is None),
                "--dns-guidance-scale, --captioner and --captioner-model apply to --dnp only: add --dnp")

    def configure(self, method: Method) -> Method:
        """A DNP method with these flags' rule and auto-DNP settings; any other method as it is."""
        if not isinstance(method, DnpMethod):
            return method
        return method.with_options(rule=self.dnp_rule, dns_guidance_scale=self.dns_guidance_scale,
                                   captioner=self.captioner, captioner_model=self.captioner_model)
