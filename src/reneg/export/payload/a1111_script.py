"""ReNeg negative for AUTOMATIC1111 and Forge (written by `reneg export --to a1111`).

A ReNeg negative is the text encoder's *output* for an ideal negative prompt. This script puts it where the typed
negative prompt's encoding goes, in the ``on_cfg_denoiser`` callback's ``text_uncond``: a tensor ``(B, T, D)`` for
SD1.x/SD2.x, a dict with ``crossattn`` ``(B, T, D)`` and ``vector`` (SDXL's pooled embedding, then its size
embeddings) for SDXL. Strength 1 replaces the typed negative; below 1 it blends: typed + s * (learned - typed).
"""

import hashlib
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import torch
from safetensors import safe_open

from modules import script_callbacks, scripts

NEGATIVES = Path(scripts.basedir()) / "negatives"
FORMAT = "reneg.negative_embedding"
FAMILIES = ("sd", "sdxl")
INFOTEXT = {"name": "ReNeg negative", "strength": "ReNeg strength", "steps": "ReNeg steps", "hash": "ReNeg hash"}


@dataclass
class Negative:
    """The learned negative of the running generation and how to apply it."""

    name: str
    embedding: torch.Tensor  # (L, D)
    pooled: torch.Tensor | None  # (P,) for SDXL
    sha256: str
    strength: float = 1.0
    start: float = 0.0
    stop: float = 1.0

    def active_at(self, step: int, total: int) -> bool:
        fraction = step / max(total, 1)
        return self.start <= fraction and (fraction < self.stop or self.stop >= 1.0)


_state = {"negative": None, "warned": False}


def negative_names() -> list:
    return sorted(path.stem for path in NEGATIVES.glob("*.safetensors"))


def read_negative(name: str) -> Negative:
    """The file ``negatives/NAME.safetensors`` as a :class:`Negative`; ValueError for anything else."""
    path = NEGATIVES / f"{name}.safetensors"
    if not path.is_file():
        raise ValueError(f"ReNeg negative '{name}' is not in {NEGATIVES}")
    with safe_open(str(path), framework="pt", device="cpu") as file:
        metadata, keys = dict(file.metadata() or {}), set(file.keys())
        if metadata.get("format") != FORMAT or "negative_embedding" not in keys:
            raise ValueError(f"{path.name} is not a ReNeg negative embedding (export one with `reneg export`)")
        if metadata.get("family", "sd") not in FAMILIES:
            raise ValueError(f"{path.name} is a '{metadata.get('family')}' negative; this extension takes SD1.x, "
                             "SD2.x and SDXL negatives")
        embedding = file.get_tensor("negative_embedding").float()
        pooled = file.get_tensor("negative_pooled_embedding").float() if "negative_pooled_embedding" in keys else None
    return Negative(name, embedding, pooled, hashlib.sha256(path.read_bytes()).hexdigest())


def blend(typed: torch.Tensor, learned: torch.Tensor, strength: float) -> torch.Tensor:
    """(B, L, D): the learned (L, D) rows, or typed + s * (learned - typed) with the typed negative cut or padded
    (its last row repeated, as A1111's own pad_cond_uncond_v0) to L rows."""
    learned = learned.to(typed.device, typed.dtype).unsqueeze(0).expand(typed.shape[0], -1, -1)
    if strength >= 1.0:
        return learned.clone()
    rows = learned.shape[1]
    if typed.shape[1] < rows:
        typed = torch.cat([typed, typed[:, -1:].expand(-1, rows - typed.shape[1], -1)], dim=1)
    return torch.lerp(typed[:, :rows], learned, strength)


def replaced(uncond, negative: Negative):
    """``text_uncond`` with the learned negative in it (a tensor, or SDXL's dict changed in place)."""
    if not isinstance(uncond, dict):
        return blend(uncond, negative.embedding, negative.strength)
    uncond["crossattn"] = blend(uncond["crossattn"], negative.embedding, negative.strength)
    if negative.pooled is not None and "vector" in uncond:
        vector, size = uncond["vector"].clone(), negative.pooled.shape[0]
        vector[:, :size] = blend(vector[:, None, :size], negative.pooled[None], negative.strength)[:, 0]
        uncond["vector"] = vector
    return uncond


def width_of(uncond) -> int:
    return (uncond["crossattn"] if isinstance(uncond, dict) else uncond).shape[-1]


def on_cfg_denoiser(params) -> None:
    """Put the learned negative into ``params.text_uncond`` while the generation's step is in [start, stop]."""
    negative = _state["negative"]
    if negative is None or not negative.active_at(params.sampling_step, params.total_sampling_steps):
        return
    if width_of(params.text_uncond) != negative.embedding.shape[-1] or (
            isinstance(params.text_uncond, dict) != (negative.pooled is not None)):
        if not _state["warned"]:
            print(f"ReNeg negative '{negative.name}' ({tuple(negative.embedding.shape)}) does not fit this model's "
                  f"text encoder (width {width_of(params.text_uncond)}): not applied")
            _state["warned"] = True
        return
    params.text_uncond = replaced(params.text_uncond, negative)


class ReNegNegativeScript(scripts.Script):
    def title(self):
        return "ReNeg negative"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        names = negative_names()
        with gr.Accordion("ReNeg negative", open=False):
            enabled = gr.Checkbox(label="Enable (the learned negative replaces or blends with the typed one)",
                                  value=False)
            name = gr.Dropdown(label="Negative", choices=names, value=names[0] if names else None)
            strength = gr.Slider(0.0, 1.0, value=1.0, step=0.05, label="Strength (1: replace, below 1: blend)")
            start = gr.Slider(0.0, 1.0, value=0.0, step=0.01, label="Start at (fraction of the steps)")
            stop = gr.Slider(0.0, 1.0, value=1.0, step=0.01, label="Stop at (fraction of the steps)")
        self.infotext_fields = [(enabled, lambda fields: INFOTEXT["name"] in fields), (name, INFOTEXT["name"]),
                                (strength, INFOTEXT["strength"]),
                                (start, lambda fields: _steps(fields, 0)), (stop, lambda fields: _steps(fields, 1))]
        return [enabled, name, strength, start, stop]

    def process(self, p, enabled, name, strength, start, stop):
        _state["negative"], _state["warned"] = None, False
        if not enabled or not name:
            return
        negative = read_negative(name)
        negative.strength, negative.start, negative.stop = float(strength), float(start), float(stop)
        _state["negative"] = negative
        p.extra_generation_params.update(infotext(negative))

    def postprocess(self, p, processed, *args):
        _state["negative"] = None


def infotext(negative: Negative) -> dict:
    return {INFOTEXT["name"]: negative.name, INFOTEXT["strength"]: f"{negative.strength:g}",
            INFOTEXT["steps"]: f"{negative.start:g}-{negative.stop:g}", INFOTEXT["hash"]: negative.sha256[:10]}


def _steps(fields: dict, index: int):
    parts = str(fields.get(INFOTEXT["steps"], "0-1")).split("-")
    return float(parts[index]) if len(parts) == 2 else (0.0, 1.0)[index]


script_callbacks.on_cfg_denoiser(on_cfg_denoiser)
