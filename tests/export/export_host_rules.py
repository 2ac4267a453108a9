"""How each host's textual-inversion loader reads a safetensors file, re-expressed from its source (not copied).

Each function returns one verdict: ``"misread"`` (the host would use the file's vectors as prompt tokens),
``"ignored"`` (it loads the file and sets it aside with a warning) or ``"refused"`` (an error, or not taken for an
embedding at all). ``data`` is what ``safetensors.torch.load_file`` returns, the call all three hosts make: its
keys come sorted by name.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file


def a1111_verdict(data: dict, expected_width: int) -> str:
    """AUTOMATIC1111 ``modules/textual_inversion/textual_inversion.py`` ``EmbeddingDatabase.load_from_file`` and Forge
    ``backend/text_processing/textual_inversion.py`` ``create_embedding_from_data``: ``string_to_param``; SDXL's
    ``clip_g`` + ``clip_l``; else a dict whose first value is a tensor must hold exactly one ("embedding file has
    multiple terms in it", an AssertionError that ``load_from_dir`` reports and skips). The embedding registers when
    its last dimension is the model's ``expected_shape`` (SDXL: both encoders' widths added), else it is skipped."""
    if "string_to_param" in data:
        width = next(iter(data["string_to_param"].values())).shape[-1]
    elif "clip_g" in data and "clip_l" in data:
        width = data["clip_g"].shape[-1] + data["clip_l"].shape[-1]
    elif isinstance(next(iter(data.values())), torch.Tensor):
        if len(data) != 1:
            return "refused"
        width = next(iter(data.values())).shape[-1]
    else:
        return "refused"
    return "misread" if width == expected_width else "ignored"


def comfyui_embedding(data: dict, embed_key: str) -> torch.Tensor:
    """ComfyUI ``comfy/sd1_clip.py`` ``load_embed`` (for ``embedding:NAME`` in a prompt): ``string_to_param``'s
    first value; the tokenizer's own key (``clip_l``, ``clip_g``, ``t5xxl``); bundled ``bundle_emb.*`` keys; else
    the first tensor of the file."""
    if "string_to_param" in data:
        return next(iter(data["string_to_param"].values()))
    if embed_key in data:
        return data[embed_key]
    for suffix in (".string_to_param.*", f".{embed_key}"):
        bundled = [value for key, value in data.items() if key.startswith("bundle_emb.") and key.endswith(suffix)]
        if bundled:
            return torch.cat(bundled, dim=0)
    return next(iter(data.values()))


def comfyui_verdict(data: dict, width: int, embed_key: str) -> str:
    """``SDTokenizer.tokenize_with_weights`` makes each row of the embedding (or a 1-D one as a whole) a token; then
    ``SDClipModel.process_tokens`` splices it into the prompt when its last dimension is the token embedding width,
    else logs "shape mismatch when trying to apply embedding, embedding will be ignored"."""
    embed = comfyui_embedding(data, embed_key)
    return "misread" if embed.shape[-1] == width else "ignored"


#: InvokeAI's token widths -> model base (``_get_base_or_raise``'s match).
INVOKEAI_BASES = {768: "sd-1", 1024: "sd-2", 1280: "sdxl"}


def invokeai_token_dim(data: dict) -> int:
    """InvokeAI ``invokeai/backend/model_manager/configs/textual_inversion.py`` ``TI_Config_Base._get_base_or_raise``:
    the token width from ``string_to_param``, ``emb_params``, ``clip_g``, else ``shape[0]`` of the first tensor."""
    if "string_to_token" in data:
        return list(data["string_to_param"].values())[0].shape[-1]
    for key in ("emb_params", "clip_g"):
        if key in data:
            return data[key].shape[-1]
    return list(data.values())[0].shape[0]


def invokeai_verdict(path: Path) -> str:
    """``TI_Config_Base._file_looks_like_embedding`` (any small state dict of tensors looks like one), then the base:
    a token width InvokeAI does not know is ``NotAMatchError`` (the file is not installed as an embedding)."""
    data = load_file(str(path))
    looks = (path.name.startswith("learned_embeds.") or any(k in {"string_to_param", "emb_params", "clip_g"}
                                                           for k in data)
             or (len(data) < 10 and all(isinstance(v, torch.Tensor) for v in data.values())))
    if not looks:
        return "refused"
    return "misread" if invokeai_token_dim(data) in INVOKEAI_BASES else "refused"
