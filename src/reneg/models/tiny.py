"""Tiny random-weight models with the real architectures, for tests and for the built-in ``tiny`` model.

Each builder is deterministic (its own seed, the global RNG left untouched) and
needs no download: the tokenizer is OpenAI CLIP's real BPE tokenizer.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTextConfig, CLIPTextModel

from .tokenizers import build_clip_tokenizer

#: SD1.x's noise schedule (``scheduler_config.json`` of runwayml/stable-diffusion-v1-5), with DDIM.
SD_SCHEDULER = dict(
    beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
    clip_sample=False, set_alpha_to_one=False, steps_offset=1,
)
#: OpenAI CLIP's image normalisation (CLIPImageProcessor defaults).
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def _seeded(seed: int):
    rng = torch.random.fork_rng(devices=[])
    rng.__enter__()
    torch.manual_seed(seed)
    return rng


def tiny_sd_pipeline(*, prediction_type: str = "epsilon", seed: int = 0, text_width: int = 32) -> StableDiffusionPipeline:
    """A random-weight Stable Diffusion (64x64 pixels, 8x VAE, CLIP text encoder) in about 2 M parameters."""
    rng = _seeded(seed)
    try:
        unet = UNet2DConditionModel(
            sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=text_width, attention_head_dim=4, norm_num_groups=8,
        )
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=4, sample_size=64, norm_num_groups=4,
            block_out_channels=(8, 8, 16, 16), layers_per_block=1,
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        )
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=49408, hidden_size=text_width, intermediate_size=2 * text_width, num_hidden_layers=2,
            num_attention_heads=2, max_position_embeddings=77, projection_dim=text_width,
        ))
    finally:
        rng.__exit__(None, None, None)
    scheduler = DDIMScheduler(**SD_SCHEDULER, prediction_type=prediction_type)
    return StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=build_clip_tokenizer(), unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


def tiny_clip(*, seed: int = 0, image_size: int = 224) -> tuple[CLIPModel, CLIPProcessor]:
    """A random-weight CLIP in PickScore's layout (ViT image tower, text tower, projections, logit scale)."""
    rng = _seeded(seed)
    try:
        config = CLIPConfig(
            text_config=dict(vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=2, max_position_embeddings=77),
            vision_config=dict(image_size=image_size, patch_size=32, hidden_size=32, intermediate_size=64,
                               num_hidden_layers=2, num_attention_heads=2),
            projection_dim=16,
        )
        model = CLIPModel(config).eval()
    finally:
        rng.__exit__(None, None, None)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
        do_center_crop=True, image_mean=CLIP_MEAN, image_std=CLIP_STD,
    )
    return model, CLIPProcessor(image_processor=image_processor, tokenizer=build_clip_tokenizer())


def build_t5_tokenizer():
    """A small T5 tokenizer (unigram over letters, digits and punctuation; ``</s>`` appended), with no download.

    Not T5's 32k SentencePiece vocabulary: tiny pipelines need a tokenizer of T5's kind, not its vocabulary.
    """
    import string

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    pieces += [("\u2581" + c, -3.0) for c in string.ascii_lowercase]
    pieces += [(c, -4.0) for c in string.ascii_lowercase + string.digits + string.punctuation]
    tokenizer = Tokenizer(models.Unigram(pieces, unk_id=2))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                             special_tokens=[("</s>", 1)])
    return T5TokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                           extra_ids=0)


def _clip_text_config(width: int, *, projection_dim: int | None = None) -> CLIPTextConfig:
    return CLIPTextConfig(vocab_size=49408, hidden_size=width, intermediate_size=2 * width, num_hidden_layers=2,
                          num_attention_heads=2, max_position_embeddings=77, projection_dim=projection_dim or width)


def tiny_sdxl_pipeline(*, seed: int = 0, force_zeros_for_empty_prompt: bool = True,
                       prediction_type: str = "epsilon"):
    """A random-weight SDXL (64x64 pixels, 8x VAE, two CLIP text encoders of width 32, ``text_time`` added
    conditioning), the tiny SD's sizes otherwise: negative (77, 64), pooled (32,)."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline
    from transformers import CLIPTextModelWithProjection

    rng = _seeded(seed)
    try:
        unet = UNet2DConditionModel(
            sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=64, attention_head_dim=4, norm_num_groups=8, use_linear_projection=True,
            addition_embed_type="text_time", addition_time_embed_dim=8,
            projection_class_embeddings_input_dim=6 * 8 + 32,  # six time ids of width 8, then the pooled (32)
        )
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=4, sample_size=64, norm_num_groups=4,
            block_out_channels=(8, 8, 16, 16), layers_per_block=1,
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
            scaling_factor=0.13025, force_upcast=True,
        )
        text_encoder = CLIPTextModel(_clip_text_config(32))
        text_encoder_2 = CLIPTextModelWithProjection(_clip_text_config(32))
    finally:
        rng.__exit__(None, None, None)
    scheduler = EulerDiscreteScheduler(**{k: v for k, v in SD_SCHEDULER.items() if k not in ("clip_sample",
                                                                                          "set_alpha_to_one")},
                                       prediction_type=prediction_type, timestep_spacing="leading")
    return StableDiffusionXLPipeline(
        vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=build_clip_tokenizer(),
        tokenizer_2=build_clip_tokenizer(), unet=unet, scheduler=scheduler,
        force_zeros_for_empty_prompt=force_zeros_for_empty_prompt, add_watermarker=False,
    )


def tiny_sd3_pipeline(*, seed: int = 0):
    """A random-weight SD3 (64x64 pixels, 8x VAE with shift, CLIP-L/CLIP-G-like encoders of width 32, a T5 of
    width 64, a one-layer MM-DiT): negative (77 + 256, 64), pooled (64,)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextModelWithProjection, T5Config, T5EncoderModel

    t5_tokenizer = build_t5_tokenizer()
    rng = _seeded(seed)
    try:
        transformer = SD3Transformer2DModel(
            sample_size=8, patch_size=1, in_channels=4, out_channels=4, num_layers=2, attention_head_dim=8,
            num_attention_heads=4, caption_projection_dim=32, joint_attention_dim=64, pooled_projection_dim=64,
            pos_embed_max_size=16,
        )
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=4, sample_size=64, norm_num_groups=4,
            block_out_channels=(8, 8, 16, 16), layers_per_block=1,
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
            scaling_factor=1.5305, shift_factor=0.0609, use_quant_conv=False, use_post_quant_conv=False,
        )
        text_encoder = CLIPTextModelWithProjection(_clip_text_config(32))
        text_encoder_2 = CLIPTextModelWithProjection(_clip_text_config(32))
        text_encoder_3 = T5EncoderModel(T5Config(
            vocab_size=len(t5_tokenizer), d_model=64, d_kv=16, d_ff=64, num_layers=2, num_heads=4,
            relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
        )).eval()  # built in training mode: T5's dropout (0.1) would make encodings random
    finally:
        rng.__exit__(None, None, None)
    return StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=vae,
        text_encoder=text_encoder, tokenizer=build_clip_tokenizer(), text_encoder_2=text_encoder_2,
        tokenizer_2=build_clip_tokenizer(), text_encoder_3=text_encoder_3, tokenizer_3=t5_tokenizer,
    )


def tiny_flux_pipeline(*, seed: int = 0, schnell: bool = False):
    """A random-weight FLUX.1 (64x64 pixels, 8x VAE with 16 latent channels and a shift, a CLIP text encoder of
    width 32 for the pooled part, a T5 of width 64, one double- and one single-stream block): negative (512, 64),
    pooled (32,).

    FLUX.1-dev's layout (``guidance_embeds``, dynamic shifting as its ``scheduler_config.json``); ``schnell``:
    FLUX.1-schnell's (no guidance embedding, a fixed shift of 1). ``default_sample_size`` is 8 (64 px) on the
    built pipeline; it is not saved, so a saved copy loads at ``FluxPipeline``'s 1024 px default.
    """
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import T5Config, T5EncoderModel

    t5_tokenizer = build_t5_tokenizer()
    rng = _seeded(seed)
    try:
        transformer = FluxTransformer2DModel(
            patch_size=1, in_channels=64, num_layers=1, num_single_layers=1, attention_head_dim=16,
            num_attention_heads=2, joint_attention_dim=64, pooled_projection_dim=32, guidance_embeds=not schnell,
            axes_dims_rope=(4, 6, 6),
        )
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=16, sample_size=64, norm_num_groups=4,
            block_out_channels=(8, 8, 16, 16), layers_per_block=1,
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
            scaling_factor=0.3611, shift_factor=0.1159, use_quant_conv=False, use_post_quant_conv=False,
        )
        text_encoder = CLIPTextModel(_clip_text_config(32))
        text_encoder_2 = T5EncoderModel(T5Config(
            vocab_size=len(t5_tokenizer), d_model=64, d_kv=16, d_ff=64, num_layers=2, num_heads=4,
            relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
        )).eval()  # built in training mode: T5's dropout (0.1) would make encodings random
    finally:
        rng.__exit__(None, None, None)
    if schnell:
        scheduler = FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=False)
    else:
        scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5,
                                                    max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096)
    pipe = FluxPipeline(transformer=transformer, scheduler=scheduler, vae=vae, text_encoder=text_encoder,
                        tokenizer=build_clip_tokenizer(), text_encoder_2=text_encoder_2, tokenizer_2=t5_tokenizer)
    pipe.default_sample_size = 8
    return pipe


#: Qwen2-VL's special tokens (ids 151643-151656 in the real vocabulary), in their order there.
QWEN2VL_SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
    "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
    "<|image_pad|>", "<|video_pad|>",
)
#: A chat template rendering what Qwen2-VL-Instruct's renders for system-less conversations of text and images
#: (default system turn, ``<|vision_start|><|image_pad|><|vision_end|>`` per image, the assistant's opening).
QWEN2VL_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_qwen2_tokenizer():
    """A Qwen2 tokenizer (Qwen2's regex split, byte-level BPE, its special tokens), with no download.

    Not Qwen2's 151k vocabulary: the 256 byte symbols and no merges (one token per byte), plus Qwen2-VL's
    special tokens, so the tokenizer is of Qwen2's kind and tokenizes any text.
    """
    from tokenizers import AddedToken
    from transformers.convert_slow_tokenizer import bytes_to_unicode
    from transformers.models.qwen2.tokenization_qwen2 import Qwen2Tokenizer

    vocab = {symbol: index for index, symbol in enumerate(bytes_to_unicode().values())}
    vocab[QWEN2VL_SPECIAL_TOKENS[0]] = len(vocab)
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=[])
    tokenizer.add_tokens([AddedToken(token, special=True) for token in QWEN2VL_SPECIAL_TOKENS[1:]])
    return tokenizer


#: The token HPSv3 appends to Qwen2-VL's vocabulary and reads its score at.
HPSV3_REWARD_TOKEN = "<|Reward|>"


def tiny_hpsv3(*, seed: int = 0):
    """A random-weight HPSv3: a tiny Qwen2-VL (2-layer vision tower and decoder of width 32, the real patch 14,
    temporal patch 2 and merge 2) with HPSv3's reward head, as ``(weights, config, tokenizer)``.

    ``weights`` is in the layout of the published ``HPSv3.safetensors`` (the hpsv3 package's
    ``Qwen2VLRewardModelBT`` under transformers 4.45: ``visual.*``, ``model.*``, ``lm_head.weight``,
    ``rm_head.{0,3,5}.*``; the backbone in bf16, the head in fp32), its embedding resized to the tokenizer with
    ``<|Reward|>`` added, as HPSv3's training does. ``config`` is the base model's ``config.json`` as a dict, in
    Qwen2-VL-7B-Instruct's (pre-v5, flat) layout, its vocabulary padded past the tokenizer as that one's is;
    ``tokenizer`` is the base's, without ``<|Reward|>`` (its chat template is :data:`QWEN2VL_CHAT_TEMPLATE`).
    """
    from torch import nn
    from transformers import Qwen2VLConfig
    from transformers.models.qwen2_vl.modeling_qwen2_vl import (
        Qwen2VisionTransformerPretrainedModel,
        Qwen2VLTextModel,
    )

    tokenizer = build_qwen2_tokenizer()
    ids = dict(zip(QWEN2VL_SPECIAL_TOKENS, tokenizer.convert_tokens_to_ids(list(QWEN2VL_SPECIAL_TOKENS))))
    rows, width = len(tokenizer) + 1, 32  # rows: the vocabulary with <|Reward|>
    config = {
        "architectures": ["Qwen2VLForConditionalGeneration"], "model_type": "qwen2_vl", "hidden_act": "silu",
        "hidden_size": width, "intermediate_size": 2 * width, "num_hidden_layers": 2, "num_attention_heads": 2,
        "num_key_value_heads": 1, "max_position_embeddings": 4096, "rms_norm_eps": 1e-6, "rope_theta": 1e6,
        "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]}, "initializer_range": 0.1,
        "attention_dropout": 0.0, "use_sliding_window": False, "sliding_window": 4096, "max_window_layers": 2,
        "tie_word_embeddings": False, "vocab_size": rows + 7, "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"], "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"], "vision_token_id": ids["<|vision_pad|>"],
        "image_token_id": ids["<|image_pad|>"], "video_token_id": ids["<|video_pad|>"],
        "vision_config": {"depth": 2, "embed_dim": width, "mlp_ratio": 2, "num_heads": 2, "in_chans": 3,
                          "hidden_size": width, "patch_size": 14, "spatial_merge_size": 2, "spatial_patch_size": 14,
                          "temporal_patch_size": 2, "initializer_range": 0.1},
    }
    parsed = Qwen2VLConfig(**{**config, "vocab_size": rows})
    rng = _seeded(seed)
    try:
        visual = Qwen2VisionTransformerPretrainedModel._from_config(parsed.vision_config)
        model = Qwen2VLTextModel._from_config(parsed.text_config)
        lm_head = nn.Linear(width, rows, bias=False)
        rm_head = nn.Sequential(nn.Linear(width, 1024), nn.ReLU(), nn.Dropout(0.05), nn.Linear(1024, 16), nn.ReLU(),
                                nn.Linear(16, 2))
    finally:
        rng.__exit__(None, None, None)
    weights = {}
    for prefix, module, dtype in (("visual.", visual, torch.bfloat16), ("model.", model, torch.bfloat16),
                                  ("lm_head.", lm_head, torch.bfloat16), ("rm_head.", rm_head, torch.float32)):
        weights |= {prefix + key: value.to(dtype).contiguous() for key, value in module.state_dict().items()}
    return weights, config, tokenizer


def save_tiny_hpsv3(directory, *, seed: int = 0):
    """Write :func:`tiny_hpsv3` as a real HPSv3 set-up: ``HPSv3.safetensors`` beside its base's files
    (``config.json``, the tokenizer's, ``chat_template.json``, ``preprocessor_config.json``). Returns the directory."""
    import json
    from pathlib import Path

    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights, config, tokenizer = tiny_hpsv3(seed=seed)
    save_file(weights, str(directory / "HPSv3.safetensors"))
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    tokenizer.save_pretrained(directory)
    (directory / "chat_template.json").write_text(json.dumps({"chat_template": QWEN2VL_CHAT_TEMPLATE}))
    (directory / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "Qwen2VLImageProcessor", "image_mean": CLIP_MEAN, "image_std": CLIP_STD,
        "min_pixels": 3136, "max_pixels": 12845056, "patch_size": 14, "temporal_patch_size": 2, "merge_size": 2,
        "do_resize": True, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
        "do_convert_rgb": True, "resample": 3,
    }))
    return directory
