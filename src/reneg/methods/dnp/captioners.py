"""Captioners: images (B, 3, H, W) in [0, 1] -> one caption each, behind a registry (auto-DNP's n*, DNP Sec. 3.5).

    captioner = load_captioner("blip2", "Salesforce/blip2-opt-2.7b", device="cpu", dtype=torch.float32)
    captioner(images)  # ["a white house with a garden", ...]

Built-in: ``blip2`` (BLIP-2 through transformers, the captioner of DNP's
auto-DNP). Plugins register theirs with :func:`register_captioner` (the shapes
world registers ``shapes-truth``). Models load from a local path or the local
hub cache only, never downloading.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import torch

from ...errors import ReNegError
from ...registry import Registry

#: The BLIP-2 checkpoint auto-DNP used (DNP Sec. 3.5 cites BLIP-2; OPT-2.7B is its common captioning release).
DEFAULT_BLIP2 = "Salesforce/blip2-opt-2.7b"


class Captioner(Protocol):
    """Images (B, 3, H, W) in [0, 1] -> B captions."""

    def __call__(self, images: torch.Tensor) -> list[str]:
        ...


#: factory(model_path_or_id or None for the default, device, dtype, **options) -> Captioner
CaptionerFactory = Callable[..., Captioner]


@dataclass(frozen=True)
class CaptionerEntry:
    name: str
    factory: CaptionerFactory
    description: str = ""
    default_model: str | None = None


#: The registered captioners (plugins' included once read).
CAPTIONERS: Registry[CaptionerEntry] = Registry("captioner")


def register_captioner(name: str, *, description: str = "",
                       default_model: str | None = None) -> Callable[[CaptionerFactory], CaptionerFactory]:
    """Decorator registering ``factory(model_path, device, dtype, **options) -> Captioner`` as ``name``."""
    return CAPTIONERS.register(name, lambda factory: CaptionerEntry(name, factory, description, default_model))


def available_captioners() -> dict[str, str]:
    """Name -> description of the registered captioners, plugins' included."""
    return CAPTIONERS.descriptions()


def load_captioner(name: str, model_path: str | None = None, *, device: torch.device | str = "cpu",
                   dtype: torch.dtype = torch.float32, **options) -> Captioner:
    """The captioner ``name`` with its model (``model_path``, else the captioner's default); unknown is ReNegError."""
    return CAPTIONERS[name].factory(model_path, device=torch.device(device), dtype=dtype, **options)


# ---------------------------------------------------------------- BLIP-2


class Blip2Captioner:
    """BLIP-2 (``Blip2ForConditionalGeneration`` + its processor), greedy decoding, no text prompt.

    Args:
        model: the loaded model, frozen, in eval mode.
        processor: its ``Blip2Processor`` (image preprocessing and the tokenizer that decodes).
        max_new_tokens: caption length limit in tokens.
    """

    def __init__(self, model, processor, *, max_new_tokens: int = 30):
        self.model, self.processor, self.max_new_tokens = model, processor, max_new_tokens

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> list[str]:
        images = images.detach().float().clamp(0, 1).cpu()
        # images are already in [0, 1]: the processor's 1/255 rescale is skipped, its resize and normalisation kept
        inputs = self.processor(images=list(images), return_tensors="pt", do_rescale=False)
        pixel_values = inputs["pixel_values"].to(device=self.model.device, dtype=self.model.dtype)
        ids = self.model.generate(pixel_values=pixel_values, do_sample=False, num_beams=1,
                                  max_new_tokens=self.max_new_tokens)
        return [text.strip() for text in self.processor.batch_decode(ids, skip_special_tokens=True)]


@register_captioner("blip2", default_model=DEFAULT_BLIP2,
                    description=f"BLIP-2 through transformers (auto-DNP's captioner; default {DEFAULT_BLIP2})")
def blip2(model_path: str | None, *, device: torch.device, dtype: torch.dtype, max_new_tokens: int = 30):
    from transformers import AutoProcessor, Blip2ForConditionalGeneration

    from ...models.hub import resolve

    directory = resolve(model_path or DEFAULT_BLIP2, what="captioner model")
    try:
        processor = AutoProcessor.from_pretrained(directory, local_files_only=True)
        model = Blip2ForConditionalGeneration.from_pretrained(directory, dtype=dtype, local_files_only=True)
    except (OSError, ValueError, KeyError) as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ReNegError(f"captioner model '{model_path or DEFAULT_BLIP2}' is not a BLIP-2 checkpoint ({message}): "
                         "pass a directory saved with Blip2ForConditionalGeneration.save_pretrained and its "
                         "processor") from None
    return Blip2Captioner(model.to(device).eval().requires_grad_(False), processor, max_new_tokens=max_new_tokens)
