"""ReNeg negative: a learned negative embedding as InvokeAI conditioning (written by `reneg export --to invokeai`).

A ReNeg negative is the text encoder's *output* for an ideal negative prompt, so this node needs no text encoder:
it reads the tensors from a file of this pack's ``negatives`` folder and stores them as the conditioning InvokeAI's
prompt nodes store. Connect its output to Denoise's "Negative Conditioning".
"""

from pathlib import Path

import torch
from safetensors import safe_open

from invokeai.invocation_api import (
    BaseInvocation,
    BasicConditioningInfo,
    ConditioningField,
    ConditioningFieldData,
    ConditioningOutput,
    InputField,
    InvocationContext,
    SDXLConditioningInfo,
    invocation,
)

NEGATIVES = Path(__file__).parent / "negatives"
FORMAT = "reneg.negative_embedding"
EMBEDDING_KEY = "negative_embedding"
POOLED_KEY = "negative_pooled_embedding"
__all__ = ["ReNegNegativeInvocation"]


def resolve(name: str) -> Path:
    """``name`` in ``negatives/`` (or an absolute path); an empty name means the only file there."""
    if not name:
        files = sorted(NEGATIVES.glob("*.safetensors"))
        if len(files) != 1:
            raise ValueError(f"{len(files)} files in {NEGATIVES}: name the one to use in the node's 'file' field")
        return files[0]
    path = Path(name) if Path(name).is_absolute() else NEGATIVES / name
    if path.suffix != ".safetensors":
        path = path.with_name(path.name + ".safetensors")
    if not path.is_file():
        raise ValueError(f"ReNeg negative file {path} does not exist")
    return path


def read_negative(name: str, families: tuple) -> tuple:
    """(embedding (L, D), pooled (P,) or None, metadata) of a reneg file of one of ``families``, else ValueError."""
    path = resolve(name)
    with safe_open(str(path), framework="pt", device="cpu") as file:
        metadata = dict(file.metadata() or {})
        keys = set(file.keys())
        if metadata.get("format") != FORMAT or EMBEDDING_KEY not in keys:
            raise ValueError(f"{path.name} is not a ReNeg negative embedding (export one with `reneg export`)")
        embedding = file.get_tensor(EMBEDDING_KEY).float()
        pooled = file.get_tensor(POOLED_KEY).float() if POOLED_KEY in keys else None
    family = metadata.get("family", "sd")
    if family not in families:
        raise ValueError(f"{path.name} is a '{family}' negative; this node takes {', '.join(families)}: "
                         "use the node for that model family")
    return embedding, pooled, metadata


@invocation("reneg_negative", title="ReNeg negative", tags=["reneg", "negative", "conditioning"],
            category="conditioning", version="1.0.0")
class ReNegNegativeInvocation(BaseInvocation):
    """A learned ReNeg negative embedding as negative conditioning (SD1.x, SD2.x and SDXL)."""

    file: str = InputField(default="", description="file in the pack's negatives folder (empty: the only one)")
    width: int = InputField(default=1024, description="SDXL only: image width (SDXL's size conditioning)")
    height: int = InputField(default=1024, description="SDXL only: image height (SDXL's size conditioning)")

    @torch.no_grad()
    def invoke(self, context: InvocationContext) -> ConditioningOutput:
        embedding, pooled, metadata = read_negative(self.file, ("sd", "sdxl"))
        embeds = embedding.unsqueeze(0)
        if metadata.get("family") == "sdxl":
            add_time_ids = torch.tensor([(self.height, self.width) + (0, 0) + (self.height, self.width)])
            info = SDXLConditioningInfo(embeds=embeds, pooled_embeds=pooled.unsqueeze(0), add_time_ids=add_time_ids)
        else:
            info = BasicConditioningInfo(embeds=embeds)
        name = context.conditioning.save(ConditioningFieldData(conditionings=[info]))
        return ConditioningOutput(conditioning=ConditioningField(conditioning_name=name))


def sd3_parts(embedding: torch.Tensor, pooled: torch.Tensor, metadata: dict) -> dict:
    """SD3ConditioningInfo's fields from the joint (77 + T5, D) sequence and the (P,) pooled vector.

    SD3's Denoise rebuilds ``cat([pad(cat([clip_l, clip_g], -1), D), t5], -2)`` and ``cat([l_pooled, g_pooled])``;
    clip_g here runs to the end of the CLIP rows (zero padding and all), so the rebuilt tensors are the file's.
    """
    rows, split = int(metadata.get("sd3_clip_length", 77)), int(metadata.get("sd3_clip_l_width", 768))
    clip = embedding[:rows].unsqueeze(0)
    return {"clip_l_embeds": clip[..., :split], "clip_g_embeds": clip[..., split:],
            "t5_embeds": embedding[rows:].unsqueeze(0),
            "clip_l_pooled_embeds": pooled[:split].unsqueeze(0), "clip_g_pooled_embeds": pooled[split:].unsqueeze(0)}


try:  # SD3 conditioning (InvokeAI 5 and later); older versions load the node above only
    from invokeai.app.invocations.fields import SD3ConditioningField
    from invokeai.app.invocations.primitives import SD3ConditioningOutput
    from invokeai.backend.stable_diffusion.diffusion.conditioning_data import SD3ConditioningInfo
except ImportError:
    SD3ConditioningOutput = None

if SD3ConditioningOutput is not None:

    @invocation("reneg_negative_sd3", title="ReNeg negative (SD3)", tags=["reneg", "negative", "conditioning", "sd3"],
                category="conditioning", version="1.0.0")
    class ReNegNegativeSD3Invocation(BaseInvocation):
        """A learned ReNeg negative embedding as SD3 negative conditioning."""

        file: str = InputField(default="", description="file in the pack's negatives folder (empty: the only one)")

        @torch.no_grad()
        def invoke(self, context: InvocationContext) -> SD3ConditioningOutput:
            embedding, pooled, metadata = read_negative(self.file, ("sd3",))
            info = SD3ConditioningInfo(**sd3_parts(embedding, pooled, metadata))
            name = context.conditioning.save(ConditioningFieldData(conditionings=[info]))
            return SD3ConditioningOutput(conditioning=SD3ConditioningField(conditioning_name=name))

    __all__.append("ReNegNegativeSD3Invocation")
