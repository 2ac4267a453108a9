"""ImageReward (Xu et al. 2023): BLIP image-text features into a linear MLP, standardised.

Reference: ``THUDM/ImageReward`` ``ImageReward/ImageReward.py`` (``score``)
with ``models/BLIP`` (``blip_pretrain.py``, ``vit.py``, ``med.py``):

1. image: ``clip.load``-style transform at 224 (:mod:`.transforms`), BLIP's
   ViT-L/16 (``vit='large'``: width 1024, 24 blocks, 16 heads, LayerNorm eps
   1e-6) -> all 197 token embeddings;
2. prompt: BLIP's ``bert-base-uncased`` tokenizer (plus ``[DEC]`` and
   ``[ENC]``), ``padding="max_length", truncation=True, max_length=35``; the
   ``[CLS]`` id is kept (not replaced by ``[ENC]``);
3. BLIP's BERT text encoder with cross-attention to all image tokens; the
   ``[CLS]`` output (768) goes through the MLP (linear layers only);
4. score ``(r - 0.16717362830052426) / 1.0333394966054072``.

Checkpoint ``ImageReward.pt`` (hub repo ``THUDM/ImageReward``, next to
``med_config.json``) is a plain state dict; its keys map as

* ``blip.visual_encoder.*`` -> ``visual_encoder.*``: timm's
  ``VisionTransformer``, whose parameter names (``cls_token``, ``pos_embed``,
  ``patch_embed.proj``, ``blocks.N.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}``,
  ``norm``) are those of BLIP's ``vit.py``;
* ``blip.text_encoder.*`` -> ``text_encoder.*``: transformers'
  ``BlipTextModel``, a port of BLIP's ``med.py`` ``BertModel`` with the same
  names (``embeddings.*``, ``encoder.layer.N.{attention,crossattention,intermediate,output}.*``);
  the ``embeddings.position_ids`` buffer is dropped;
* ``mlp.layers.*`` -> ``mlp.layers.*`` (:class:`.aesthetic.LinearHead`);
* every other key (``blip.vision_proj``, ``blip.text_proj``, ...) is unused
  by the score and ignored, as the reference's ``strict=False`` load does.

The three parts load strictly. Their equivalence with the reference modules
was checked on tiny random weights, not on the released checkpoint.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ReNegError
from ..models import hub
from .aesthetic import LinearHead
from .base import as_scores, check_inputs, freeze, register_reward
from .files import CheckpointSource, load_module_weights, load_weights, optional_file, resolve_checkpoint
from .transforms import ClipLoadPreprocess

IMAGEREWARD_CHECKPOINT = CheckpointSource("ImageReward checkpoint", "THUDM/ImageReward", ("ImageReward.pt",))
MED_CONFIG_FILE = "med_config.json"
#: BLIP's text tokenizer (``init_tokenizer``: ``BertTokenizer.from_pretrained('bert-base-uncased')``).
IMAGEREWARD_TOKENIZER = "google-bert/bert-base-uncased"
#: The special tokens BLIP adds to the BERT vocabulary (ids 30522 and 30523).
BLIP_SPECIAL_TOKENS = ({"bos_token": "[DEC]"}, {"additional_special_tokens": ["[ENC]"]})
MAX_PROMPT_TOKENS = 35
#: ``ImageReward.mean`` / ``ImageReward.std``: the reference standardises the MLP output with these.
SCORE_MEAN = 0.16717362830052426
SCORE_STD = 1.0333394966054072
#: BLIP ``create_vit('large', 224)``.
BLIP_VIT_LARGE = {"img_size": 224, "patch_size": 16, "embed_dim": 1024, "depth": 24, "num_heads": 16}
#: BLIP's ``med_config.json`` (bert-base with cross-attention); ``encoder_width`` is set to the ViT width.
BLIP_MED_CONFIG = {
    "vocab_size": 30524, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
    "num_attention_heads": 12, "max_position_embeddings": 512, "hidden_act": "gelu", "layer_norm_eps": 1e-12,
    "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1, "pad_token_id": 0,
}
#: BLIP's ViT LayerNorm epsilon (``partial(nn.LayerNorm, eps=1e-6)``).
VIT_LAYER_NORM_EPS = 1e-6
#: Checkpoint prefixes of the scoring modules, and keys under them that are buffers, not weights.
CHECKPOINT_PREFIXES = {"visual_encoder": "blip.visual_encoder.", "text_encoder": "blip.text_encoder.", "mlp": "mlp."}
DROPPED_KEYS = ("embeddings.position_ids",)


def blip_text_config(med_config: Mapping[str, Any], *, encoder_width: int):
    """A transformers ``BlipTextConfig`` for BLIP's ``med_config.json`` with cross-attention to ``encoder_width``."""
    from transformers import BlipTextConfig

    keys = set(BLIP_MED_CONFIG)
    settings = {key: value for key, value in med_config.items() if key in keys}
    # is_decoder builds the cross-attention layers; the forward pass runs as an encoder (bidirectional mask).
    return BlipTextConfig(**settings, encoder_hidden_size=encoder_width, is_decoder=True)


class ImageRewardModel(nn.Module):
    """BLIP's ViT and cross-attention BERT, and ImageReward's MLP: ``(pixels, prompt ids) -> standardised reward``."""

    def __init__(self, *, vision: Mapping[str, Any] = BLIP_VIT_LARGE, med_config: Mapping[str, Any] = BLIP_MED_CONFIG,
                 init_weights: bool = True):
        super().__init__()
        from timm.models.vision_transformer import VisionTransformer
        from transformers.models.blip.modeling_blip_text import BlipTextModel

        self.visual_encoder = VisionTransformer(
            **vision, qkv_bias=True, num_classes=0, global_pool="",
            norm_layer=partial(nn.LayerNorm, eps=VIT_LAYER_NORM_EPS), weight_init="" if init_weights else "skip",
        )
        config = blip_text_config(med_config, encoder_width=vision["embed_dim"])
        self.text_encoder = BlipTextModel(config, add_pooling_layer=False)
        self.mlp = LinearHead(config.hidden_size)

    def forward(self, pixels: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        image_embeds = self.visual_encoder.forward_features(pixels)
        image_mask = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=image_embeds.device)
        text_output = self.text_encoder(input_ids=input_ids, attention_mask=attention_mask,
                                        encoder_hidden_states=image_embeds, encoder_attention_mask=image_mask)
        features = text_output.last_hidden_state[:, 0, :].float()
        rewards = self.mlp(features.to(self.mlp.layers[0].weight.dtype)).float()
        return ((rewards - SCORE_MEAN) / SCORE_STD).squeeze(-1)

    def load_checkpoint(self, state_dict: Mapping[str, torch.Tensor], *, what: str) -> None:
        """Load ``ImageReward.pt``'s state dict by the key map in the module docstring (each part strictly)."""
        for name, prefix in CHECKPOINT_PREFIXES.items():
            part = {key[len(prefix):]: value for key, value in state_dict.items() if key.startswith(prefix)}
            part = {key: value for key, value in part.items() if key not in DROPPED_KEYS}
            load_module_weights(getattr(self, name), part, what=f"{what} ({prefix}*)")


def read_med_config(path: Path) -> dict:
    """BLIP's ``med_config.json`` as a dict."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ReNegError(f"cannot read ImageReward med_config '{path}': {error}") from None


def blip_tokenizer(source: str):
    """BLIP's tokenizer: BERT uncased from ``source`` (directory or cached hub id) plus ``[DEC]`` and ``[ENC]``."""
    from transformers import BertTokenizer

    directory = hub.resolve(source, what="ImageReward tokenizer (bert-base-uncased)")
    try:
        tokenizer = BertTokenizer.from_pretrained(directory, local_files_only=True)
    except (OSError, ValueError) as error:
        raise ReNegError(f"cannot load '{source}' as ImageReward's BERT tokenizer: {error}") from None
    for tokens in BLIP_SPECIAL_TOKENS:
        tokenizer.add_special_tokens(tokens)
    return tokenizer


class ImageReward:
    """The ImageReward score of each (image, prompt); the model stays loaded, prompt tokens cached."""

    def __init__(self, model: ImageRewardModel, tokenizer, *, quantize: bool = True):
        self.model = freeze(model)
        self.tokenizer = tokenizer
        self.preprocess = ClipLoadPreprocess(model.visual_encoder.patch_embed.img_size[0], quantize=quantize)
        self._token_cache: tuple[tuple[str, ...], Any] | None = None

    @property
    def device(self) -> torch.device:
        return self.model.visual_encoder.cls_token.device

    def tokens(self, prompts: Sequence[str]):
        """Prompt ids and attention mask, ``max_length=35`` with padding and truncation, cached for the last list."""
        key = tuple(prompts)
        if self._token_cache is None or self._token_cache[0] != key:
            tokens = self.tokenizer(list(key), padding="max_length", truncation=True, max_length=MAX_PROMPT_TOKENS,
                                    return_tensors="pt")
            self._token_cache = (key, tokens.to(self.device))
        return self._token_cache[1]

    def __call__(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        check_inputs(images, prompts)
        tokens = self.tokens(prompts)
        pixels = self.preprocess(images.to(self.device)).to(self.model.visual_encoder.cls_token.dtype)
        return as_scores(self.model(pixels, tokens.input_ids, tokens.attention_mask), images)


def load_imagereward(
    checkpoint: str | None, *, tokenizer: str = IMAGEREWARD_TOKENIZER, vision: Mapping[str, Any] = BLIP_VIT_LARGE,
    med_config: str | Mapping[str, Any] | None = None, device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> ImageReward:
    """Load ImageReward.

    Args:
        checkpoint: ``ImageReward.pt``, a directory holding it, or a cached hub id (default ``THUDM/ImageReward``).
        tokenizer: directory or cached hub id of BERT uncased (BLIP's ``bert-base-uncased``).
        vision: the BLIP ViT's ``img_size, patch_size, embed_dim, depth, num_heads`` (default ViT-L/16 at 224).
        med_config: the text encoder's config (a ``med_config.json`` path or dict); default: the
            ``med_config.json`` next to the checkpoint if there is one, else BLIP's.
        device, dtype: where the frozen model lives; the MLP stays fp32.
    """
    path = resolve_checkpoint(checkpoint, IMAGEREWARD_CHECKPOINT)
    if med_config is None:
        med_config = optional_file(checkpoint, IMAGEREWARD_CHECKPOINT, MED_CONFIG_FILE) or BLIP_MED_CONFIG
    if not isinstance(med_config, Mapping):
        med_config = read_med_config(Path(med_config))
    text_tokenizer = blip_tokenizer(tokenizer)
    if len(text_tokenizer) > med_config.get("vocab_size", BLIP_MED_CONFIG["vocab_size"]):
        raise ReNegError(f"ImageReward tokenizer '{tokenizer}' has {len(text_tokenizer)} tokens, more than the text "
                         f"encoder's vocabulary: use {IMAGEREWARD_TOKENIZER}")
    model = ImageRewardModel(vision=vision, med_config=med_config, init_weights=False)
    model.load_checkpoint(load_weights(path, what=IMAGEREWARD_CHECKPOINT.what),
                          what=f"{IMAGEREWARD_CHECKPOINT.what} '{path}'")
    model.visual_encoder.to(dtype=dtype)
    model.text_encoder.to(dtype=dtype)
    return ImageReward(model.to(device), text_tokenizer)


@register_reward("imagereward", default_model=IMAGEREWARD_CHECKPOINT.repo,
                 description="ImageReward (Xu et al. 2023): BLIP ViT-L + cross-attention BERT + MLP, standardised")
def imagereward(model: str | None, *, device: torch.device, dtype: torch.dtype, tokenizer: str = IMAGEREWARD_TOKENIZER,
                vision: Mapping[str, Any] = BLIP_VIT_LARGE,
                med_config: str | Mapping[str, Any] | None = None) -> ImageReward:
    """ImageReward from ``ImageReward.pt`` (see the module docstring)."""
    return load_imagereward(model, tokenizer=tokenizer, vision=vision, med_config=med_config, device=device,
                            dtype=dtype)
