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
