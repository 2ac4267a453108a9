"""The world's model architectures: the real classes of Stable Diffusion and of the reward models, small."""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

LATENT_CHANNELS = 4
TEXT_WIDTH = 64


def vae(channels: tuple[int, ...] = (16, 32, 64, 64)) -> AutoencoderKL:
    """SD's AutoencoderKL with 8x downsampling (64x64x3 -> 8x8x4), about 1 M parameters.

    GroupNorm with 4 groups (32 would leave 16-channel layers one group short) and the
    posterior's log-variance bias at -8: with the defaults the prototype lost 6 dB and colours.
    """
    model = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=LATENT_CHANNELS, sample_size=64, norm_num_groups=4,
        block_out_channels=channels, layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    )
    with torch.no_grad():
        model.encoder.conv_out.bias[LATENT_CHANNELS:] = -8.0
    return model


def text_encoder(length: int = 77) -> CLIPTextModel:
    """SD's CLIP text encoder, width 64, context ``length`` (the 49408-token table is 3.2 M of its parameters)."""
    return CLIPTextModel(CLIPTextConfig(
        vocab_size=49408, hidden_size=TEXT_WIDTH, intermediate_size=4 * TEXT_WIDTH, num_hidden_layers=3,
        num_attention_heads=4, max_position_embeddings=length, projection_dim=TEXT_WIDTH,
    ))


def unet() -> UNet2DConditionModel:
    """SD's UNet2DConditionModel on 8x8x4 latents, two levels (8x8, 4x4), cross-attention at both; 4.2 M."""
    return UNet2DConditionModel(
        sample_size=8, in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS, layers_per_block=1,
        block_out_channels=(64, 128), down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=TEXT_WIDTH,
        attention_head_dim=8, norm_num_groups=16,
    )
