"""The baselines: ``null``, ``handcrafted``, ``negative-prompt=TEXT``, and a learned ``embedding=FILE``."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ..config import arg
from ..core.guidance import Rule
from ..core.nag import guidance_rule, rule_from_metadata
from ..embedding import NegativeEmbedding
from ..errors import ReNegError, why_not_a_file
from ..families import TextConditioning
from ..identity import file_identity
from ..models.loading import LoadedModel
from .base import FixedNegative, Method, register_method


def _text_identity(text: str) -> str:
    return "text:" + hashlib.sha256(text.encode()).hexdigest()[:16]


@register_method("null", baseline=True, description="the null text \"\" as negative (plain CFG)")
def _null(argument: str | None, model: LoadedModel) -> Method:
    return FixedNegative(model.family.null_text(), "null")


@register_method("handcrafted", baseline=True, description="the model's handcrafted negative prompt (N* of ReNeg)")
def _handcrafted(argument: str | None, model: LoadedModel) -> Method:
    text = model.defaults.handcrafted_negative
    return FixedNegative(model.family.encode([text]).to("cpu", torch.float32), _text_identity(text))


@register_method("negative-prompt", argument="TEXT", baseline=True, description="a negative prompt")
def _negative_prompt(argument: str | None, model: LoadedModel) -> Method:
    return FixedNegative(model.family.encode([argument]).to("cpu", torch.float32), _text_identity(argument))


def _embedding_file_check(name: str) -> Callable[[str], None]:
    """The ``check`` of a method taking a negative embedding FILE, its own name in the message."""

    def check(argument: str) -> None:
        if not Path(argument).is_file():
            raise ReNegError(f"method '{name}={argument}': negative embedding file {argument} "
                             f"{why_not_a_file(argument)}: pass the .safetensors (or .pt) file that "
                             "`reneg train` wrote")

    return check


@register_method("embedding", argument="FILE", check=_embedding_file_check("embedding"),
                 description="a learned negative embedding file, applied by the rule it was learned for (CFG, NAG)")
def _embedding(argument: str | None, model: LoadedModel) -> Method:
    negative = NegativeEmbedding.load(argument).for_pipeline(model.pipe)
    rule = rule_from_metadata(model.family, negative.metadata)
    return FixedNegative(TextConditioning.of(negative), file_identity(argument), rule, negative.metadata)


# -- the same negatives through NAG (Normalized Attention Guidance: one pass, for models run at CFG 1; @GS is s)
def _nag(model: LoadedModel) -> Rule:
    return guidance_rule(model.family, "nag")


@register_method("nag-null", baseline=True, description="NAG with the null text as its negative")
def _nag_null(argument: str | None, model: LoadedModel) -> Method:
    return FixedNegative(model.family.null_text(), "nag:null", _nag(model))


@register_method("nag-handcrafted", baseline=True, description="NAG with the model's handcrafted negative prompt")
def _nag_handcrafted(argument: str | None, model: LoadedModel) -> Method:
    method = _handcrafted(None, model)
    return FixedNegative(method.negative, "nag:" + method.identity, _nag(model))


@register_method("nag-prompt", argument="TEXT", baseline=True, description="NAG with a negative prompt")
def _nag_prompt(argument: str | None, model: LoadedModel) -> Method:
    method = _negative_prompt(argument, model)
    return FixedNegative(method.negative, "nag:" + method.identity, _nag(model))


@register_method("nag-embedding", argument="FILE", check=_embedding_file_check("nag-embedding"),
                 description="a learned negative embedding file applied by NAG (whatever rule it was learned for)")
def _nag_embedding(argument: str | None, model: LoadedModel) -> Method:
    negative = NegativeEmbedding.load(argument).for_pipeline(model.pipe)
    learned_for = negative.metadata.get("guidance", "cfg")
    rule = (rule_from_metadata(model.family, negative.metadata) if learned_for == "nag" else _nag(model))
    if learned_for != "nag":
        logging.getLogger("reneg").warning("%s was learned for %s guidance; applying it with NAG as asked",
                                           argument, learned_for.upper())
    return FixedNegative(TextConditioning.of(negative), "nag:" + file_identity(argument), rule,
                         negative.metadata if learned_for == "nag" else None)


@dataclass
class BaselineFlags:
    """``reneg generate``'s flags for the baselines and a learned embedding: aliases of ``--method`` specs."""

    negative_prompt: str | None = arg(None, "a negative prompt in place of the null text (--method "
                                            "negative-prompt=TEXT)", metavar="TEXT")
    negative: str | None = arg(None, "a learned negative embedding file, .safetensors, .pt or .bin (--method "
                                     "embedding=FILE)", metavar="FILE")
    handcrafted: bool = arg(False, "use the model's handcrafted negative prompt (--method handcrafted)")
    nag: bool = arg(False, "apply the negative (null text, --negative-prompt, --handcrafted, --negative FILE) with "
                           "Normalized Attention Guidance, one pass, for models run at CFG 1; --guidance-scale is "
                           "then NAG's s (--method nag-null, nag-prompt=TEXT, nag-handcrafted, nag-embedding=FILE; "
                           "a file learned for NAG is applied with NAG without this flag)")

    def alias_spec(self) -> str | None:
        """The spec these flags stand for, or None when none is given."""
        prefix = "nag-" if self.nag else ""
        if self.negative is not None:
            return f"{prefix}embedding={self.negative}"
        if self.negative_prompt is not None:
            return f"nag-prompt={self.negative_prompt}" if self.nag else f"negative-prompt={self.negative_prompt}"
        if self.handcrafted:
            return f"{prefix}handcrafted"
        return "nag-null" if self.nag else None
