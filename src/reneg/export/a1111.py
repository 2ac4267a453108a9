"""``--to a1111``: an AUTOMATIC1111 / Forge extension that puts the learned negative into the negative branch.

The extension's script (:mod:`reneg.export.payload.a1111_script`, copied verbatim) registers an
``on_cfg_denoiser`` callback (``modules/script_callbacks.py``) that replaces or blends ``text_uncond``, the encoded
negative prompt A1111's ``CFGDenoiser.forward`` (``modules/sd_samplers_cfg_denoiser.py``) then denoises with; its
UI has enable, file, strength, start/stop fractions, and it writes its settings into the image's infotext.
SD3 is not offered: Forge has no SD3 and A1111's SD3 conditioning is laid out differently.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from .layout import FAMILY_NAMES, Source, embedding_tensors, export_metadata, write_tensors, write_text

FAMILIES = ("sd", "sdxl")
EXTENSION = "reneg-negative"


def write(source: Source, folder: Path, *, results=None) -> None:
    """``reneg-negative/`` with ``scripts/reneg_negative.py``, ``negatives/NAME.safetensors`` and README.md."""
    extension = folder / EXTENSION
    script = resources.files("reneg.export.payload").joinpath("a1111_script.py").read_text(encoding="utf-8")
    write_text(extension / "scripts" / "reneg_negative.py", script)
    (extension / "negatives").mkdir()
    write_tensors(extension / "negatives" / f"{source.name}.safetensors", embedding_tensors(source),
                  export_metadata(source))
    write_text(extension / "README.md", readme(source))


def readme(source: Source) -> str:
    return f"""# ReNeg negative for AUTOMATIC1111 / Forge

`negatives/{source.name}.safetensors` is a learned negative embedding (ReNeg): the text encoder's *output* for an
ideal negative prompt, for {FAMILY_NAMES[source.family]} (base model: `{source.metadata.get('base_model', '?')}`).
It is not a textual inversion: do not put it into `embeddings/`.

## Install
Copy the folder `{EXTENSION}` into the web UI's `extensions/` folder and restart the web UI.
More negatives exported the same way go into its `negatives/` folder.

## Use
Open the **ReNeg negative** panel under the generation settings, tick *Enable* and pick the negative.
- *Strength* 1 replaces the typed negative prompt; below 1 blends the two (typed + s * (learned - typed)).
- *Start at* / *Stop at*: the fraction of the sampling steps during which it applies.
- The image's parameters (infotext) record `ReNeg negative`, `ReNeg strength`, `ReNeg steps` and `ReNeg hash`;
  *Send to txt2img* restores them.
A negative learned for another text encoder is not applied (the console says so).

Learned with: reward `{source.metadata.get('reward', '?')}`, guidance scale (CFG) \
{source.metadata.get('guidance_scale', '?')}, {source.metadata.get('steps', '?')} sampling steps; text encoder
fingerprint `{source.metadata.get('text_encoder_fingerprint', 'not recorded')}`.
"""
