"""``--to invokeai``: a node pack with a "ReNeg negative" node that turns the file into InvokeAI conditioning.

InvokeAI imports each folder of ``INVOKEAI_ROOT/nodes`` that has an ``__init__.py``
(``invokeai/app/invocations/load_custom_nodes.py``); the pack's node (:mod:`reneg.export.payload.invokeai_node`,
copied verbatim) builds the conditioning InvokeAI's own prompt nodes build, from the tensors:
``BasicConditioningInfo(embeds)`` for SD1.x/SD2.x, ``SDXLConditioningInfo(embeds, pooled_embeds, add_time_ids)`` for
SDXL, and for SD3 ``SD3ConditioningInfo`` with the CLIP-L, CLIP-G and T5 parts that SD3's Denoise joins again.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from .layout import (CLIP_LENGTH, FAMILY_NAMES, Source, embedding_tensors, export_metadata, write_tensors,
                     write_text)

FAMILIES = ("sd", "sdxl", "sd3")
PACK = "reneg_negative"
NODE_MODULE = "reneg_negative_node"


def sd3_metadata(source: Source) -> dict[str, str]:
    """Where SD3's joint sequence splits: the CLIP rows (77) and CLIP-L's width; nothing for the other families."""
    if source.family != "sd3":
        return {}
    return {"sd3_clip_length": str(CLIP_LENGTH), "sd3_clip_l_width": str(source.sd3_clip_l_width()),
            "sd3_t5_length": str(source.embedding.shape[0] - CLIP_LENGTH)}


def write(source: Source, folder: Path, *, results=None) -> None:
    """``reneg_negative/`` with ``__init__.py``, the node, ``negatives/NAME.safetensors`` and README.md."""
    pack = folder / PACK
    node = resources.files("reneg.export.payload").joinpath("invokeai_node.py").read_text(encoding="utf-8")
    write_text(pack / f"{NODE_MODULE}.py", node)
    write_text(pack / "__init__.py", f'"""ReNeg negative: a learned negative as conditioning (written by '
                                     f'`reneg export`)."""\n\nfrom .{NODE_MODULE} import *  # noqa: F401,F403\n')
    (pack / "negatives").mkdir()
    write_tensors(pack / "negatives" / f"{source.name}.safetensors", embedding_tensors(source),
                  export_metadata(source, **sd3_metadata(source)))
    write_text(pack / "README.md", readme(source))


def readme(source: Source) -> str:
    node = "ReNeg negative (SD3)" if source.family == "sd3" else "ReNeg negative"
    sizes = "" if source.family != "sdxl" else (" Set its width and height to the image's size (SDXL's size "
                                                "conditioning, as the SDXL prompt node has).")
    return f"""# ReNeg negative for InvokeAI

`negatives/{source.name}.safetensors` is a learned negative embedding (ReNeg): the text encoder's *output* for an
ideal negative prompt, for {FAMILY_NAMES[source.family]} (base model: `{source.metadata.get('base_model', '?')}`).
It is not a textual inversion: do not install it as an embedding model.

## Install
Copy the folder `{PACK}` into `INVOKEAI_ROOT/nodes/` and restart InvokeAI.

## Use
In the workflow editor add the node **{node}** (category *conditioning*) and connect its output to Denoise's
*Negative Conditioning*, in place of the negative prompt node. With the field *file* left empty it uses the only
file in `negatives/`; other files you put there are chosen by name.{sizes}
The node checks that the file is for this kind of model; Denoise refuses one of another family.

Learned with: reward `{source.metadata.get('reward', '?')}`, guidance scale \
{source.metadata.get('guidance_scale', '?')}, {source.metadata.get('steps', '?')} sampling steps; text encoder
fingerprint `{source.metadata.get('text_encoder_fingerprint', 'not recorded')}`.
"""
