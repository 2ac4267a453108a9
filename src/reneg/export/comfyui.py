"""``--to comfyui``: the layout of ComfyUI's *Load Conditioning* node, and example workflows.

ComfyUI's ``ConditioningLoader`` (``comfy_extras/nodes_cond.py``) lists the files of ``models/embeddings`` and
returns ``[[sd.pop("conditioning"), options]]``: the ``(B, T, D)`` tensor under ``conditioning``, every other tensor
as an option of that name (``pooled_output`` for SDXL and SD3), the scalar options from the JSON in the metadata
field ``conditioning_options``. Its output wires into KSampler's ``negative``: no custom node is needed.

The other tensors here: the marker (:data:`reneg.export.layout.MARKER_KEY`), an option no model reads, which makes
ComfyUI's textual-inversion path (``embedding:NAME`` in a prompt) ignore the file instead of splicing ``L`` token
vectors into the prompt.
"""

from __future__ import annotations

import json
from pathlib import Path

from .layout import FAMILY_NAMES, MARKER_KEY, Source, export_metadata, marker, write_json, write_tensors, write_text

FAMILIES = ("sd", "sdxl", "sd3")
CONDITIONING_KEY = "conditioning"
POOLED_KEY = "pooled_output"
FORMAT = "reneg.comfyui_conditioning"
#: Per family: (resolution, guidance scale, sampler, scheduler) when the file does not record them.
DEFAULTS = {"sd": (512, 7.5, "ddim", "ddim_uniform"), "sdxl": (1024, 5.0, "euler", "normal"),
            "sd3": (1024, 7.0, "euler", "simple")}
#: ComfyUI's NAGuidance defaults (comfy_extras/nodes_nag.py) when the file records no NAG settings.
NAG_DEFAULTS = {"nag_scale": 5.0, "nag_alpha": 0.5, "nag_tau": 1.5}


def conditioning_options(source: Source) -> dict:
    """Scalar options: none. SDXL's size conditioning is best left to ComfyUI, which fills ``width``/``height``
    from the latent (``comfy/samplers.py`` ``encode_model_conds``) with target = original and no crop
    (``comfy/model_base.py`` ``SDXL.encode_adm``): what diffusers gives the negative branch for that image size."""
    return {}


def resolution(source: Source) -> int:
    return _number(source.metadata.get("resolution"), DEFAULTS[source.family][0], int)


def _number(text: str | None, default, kind):
    try:
        return kind(float(text)) if text not in (None, "") else default
    except ValueError:
        return default


def conditioning_tensors(source: Source) -> dict:
    """``conditioning`` ``(1, L, D)``, ``pooled_output`` ``(1, P)`` for SDXL/SD3, and the marker."""
    tensors = {MARKER_KEY: marker(), CONDITIONING_KEY: source.embedding.tensor.unsqueeze(0)}
    if source.embedding.pooled is not None:
        tensors[POOLED_KEY] = source.embedding.pooled.unsqueeze(0)
    return tensors


def write(source: Source, folder: Path, *, results=None) -> None:
    """The conditioning file, two API-format workflows (KSampler negative; NAGuidance) and README.txt."""
    filename = f"{source.name}.safetensors"
    options = json.dumps(conditioning_options(source))
    write_tensors(folder / filename, conditioning_tensors(source),
                  export_metadata(source, format=FORMAT, conditioning_options=options))
    write_json(folder / "workflow-ksampler.json", workflow(source, filename, nag=False))
    write_json(folder / "workflow-naguidance.json", workflow(source, filename, nag=True))
    write_text(folder / "README.txt", readme(source, filename))


# ---------------------------------------------------------------- workflows (ComfyUI's API format)


def checkpoint_name(source: Source) -> str:
    base = source.metadata.get("base_model", "").rstrip("/").split("/")[-1] or "model"
    return base if base.endswith((".safetensors", ".ckpt")) else f"{base}.safetensors"


def sampler_settings(source: Source) -> dict:
    """KSampler's steps, cfg, sampler and scheduler: the file's training settings where it records them."""
    _, guidance, sampler, scheduler = DEFAULTS[source.family]
    return {"steps": _number(source.metadata.get("steps"), 30, int),
            "cfg": _number(source.metadata.get("guidance_scale"), guidance, float),
            "sampler_name": sampler, "scheduler": scheduler}


def workflow(source: Source, filename: str, *, nag: bool) -> dict:
    """Checkpoint -> positive CLIPTextEncode, Load Conditioning -> KSampler's negative -> VAE decode -> save.

    SD3 adds ModelSamplingSD3 (shift 3) and its own empty latent; ``nag`` puts NAGuidance on the model, at cfg 1
    (NAG carries the negative through attention; ComfyUI still runs the negative branch, the node disables its
    cfg-1 shortcut).
    """
    size = resolution(source)
    nodes = {
        "1": api_node("CheckpointLoaderSimple", "Load Checkpoint", ckpt_name=checkpoint_name(source)),
        "2": api_node("CLIPTextEncode", "Positive prompt", text="a photo of a cat", clip=["1", 1]),
        "3": api_node("ConditioningLoader", "ReNeg negative (Load Conditioning)", conditioning_name=filename),
        "4": api_node("EmptySD3LatentImage" if source.family == "sd3" else "EmptyLatentImage", "Empty Latent Image",
                      width=size, height=size, batch_size=1),
        "6": api_node("VAEDecode", "VAE Decode", samples=["5", 0], vae=["1", 2]),
        "7": api_node("SaveImage", "Save Image", filename_prefix="reneg", images=["6", 0]),
    }
    model = ["1", 0]
    if source.family == "sd3":
        nodes["8"] = api_node("ModelSamplingSD3", "ModelSamplingSD3", model=model, shift=3.0)
        model = ["8", 0]
    settings = sampler_settings(source)
    if nag:
        nodes["9"] = api_node("NAGuidance", "Normalized Attention Guidance", model=model, **nag_settings(source))
        model, settings["cfg"] = ["9", 0], 1.0
    nodes["5"] = api_node("KSampler", "KSampler", seed=0, denoise=1.0, model=model, positive=["2", 0],
                          negative=["3", 0], latent_image=["4", 0], **settings)
    return dict(sorted(nodes.items(), key=lambda item: int(item[0])))


def nag_settings(source: Source) -> dict:
    return {key: _number(source.metadata.get(key), default, float) for key, default in NAG_DEFAULTS.items()}


def api_node(class_type: str, title: str, **inputs) -> dict:
    return {"class_type": class_type, "inputs": inputs, "_meta": {"title": title}}


# ---------------------------------------------------------------- README.txt


def readme(source: Source, filename: str) -> str:
    metadata = source.metadata
    shape = "x".join(map(str, (1, *source.embedding.shape)))
    pooled = "" if source.embedding.pooled is None else f' and "{POOLED_KEY}" (1x{len(source.embedding.pooled)})'
    title = f"ReNeg negative for ComfyUI: {filename}"
    return f"""{title}
{'=' * len(title)}

A learned negative embedding: the text encoder's *output* for an ideal negative prompt (ReNeg), {shape}{pooled},
for {FAMILY_NAMES[source.family]} (base model: {metadata.get('base_model', 'not recorded')}).
It is not a textual inversion: it replaces the encoded negative prompt, it does not go into a prompt.

Use it
1. Copy {filename} into ComfyUI/models/embeddings/ (where the core node "Load Conditioning" looks).
2. Open workflow-ksampler.json (drag it onto the canvas). Pick your {FAMILY_NAMES[source.family]} checkpoint in
   "Load Checkpoint": it must use the text encoder the negative was learned for (fingerprint below).
3. Queue. "Load Conditioning" feeds KSampler's negative input; leave the negative prompt out.

workflow-naguidance.json does the same through "Normalized Attention Guidance" (NAGuidance) at cfg 1.
The KSampler settings (steps, cfg) are the ones the negative was trained with, where the file records them.

Do not write "embedding:{source.name}" in a prompt: ComfyUI would look for a textual inversion, and this file
is made so that it ignores it ("shape mismatch ... will be ignored").

Learned for
  text encoder fingerprint: {metadata.get('text_encoder_fingerprint', 'not recorded')}
  reward: {metadata.get('reward', 'not recorded')}, guidance scale: {metadata.get('guidance_scale', '?')}, \
sampling steps: {metadata.get('steps', '?')}
  source file sha256: {source.sha256}
"""
