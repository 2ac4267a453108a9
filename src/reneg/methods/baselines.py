"""The baselines: ``null``, ``handcrafted``, ``negative-prompt=TEXT``, and a learned ``embedding=FILE``."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import arg
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


def _check_embedding_file(argument: str) -> None:
    if not Path(argument).is_file():
        raise ReNegError(f"method 'embedding={argument}': negative embedding file {argument} "
                         f"{why_not_a_file(argument)}: "
                         "pass the .safetensors (or .pt) file that `reneg train` wrote")


@register_method("embedding", argument="FILE", description="a learned negative embedding file",
                 check=_check_embedding_file)
def _embedding(argument: str | None, model: LoadedModel) -> Method:
    negative = NegativeEmbedding.load(argument).for_pipeline(model.pipe)
    return FixedNegative(TextConditioning.of(negative), file_identity(argument))


@dataclass
class BaselineFlags:
    """``reneg generate``'s flags for the baselines and a learned embedding: aliases of ``--method`` specs."""

    negative_prompt: str | None = arg(None, "a negative prompt in place of the null text (--method "
                                            "negative-prompt=TEXT)", metavar="TEXT")
    negative: str | None = arg(None, "a learned negative embedding file, .safetensors, .pt or .bin (--method "
                                     "embedding=FILE)", metavar="FILE")
    handcrafted: bool = arg(False, "use the model's handcrafted negative prompt (--method handcrafted)")

    def alias_spec(self) -> str | None:
        """The spec these flags stand for, or None when none is given."""
        if self.negative is not None:
            return f"embedding={self.negative}"
        if self.negative_prompt is not None:
            return f"negative-prompt={self.negative_prompt}"
        return "handcrafted" if self.handcrafted else None
