"""One ReNeg training step of SDXL-base-1.0 and SD3.5-medium at 1024 px with random weights of the real sizes.

    PYTHONPATH=src python benchmarks/gpu_real_size_xl.py [--out results.json]       # a GPU, bf16
    PYTHONPATH=src python benchmarks/gpu_real_size_xl.py --tiny                      # CPU smoke run, 64 px

The components are built from their published configs (written below: the ``config.json`` files of
stabilityai/stable-diffusion-xl-base-1.0 and stabilityai/stable-diffusion-3.5-medium, T5-XXL's of
google/t5-v1_1-xxl) with random weights, so nothing is downloaded; the text encoders are built too (they sit on
the GPU in a real run). Each model runs :class:`reneg.methods.reneg.train.Trainer` as ``reneg train`` would with the presets'
settings (bf16 frozen models, fp32 embedding, gradient checkpointing, micro-batch 1, DDIM 30 / flow-matching
28 steps, t in the last third) and the ``contrast`` reward (no reward model: its memory is not counted). One
warm-up step, then ``--repeats`` timed steps: the seconds of each (the rollout x_T -> x_t without gradient is
most of it; the worst case, t at the last sampling step, is forced with ``--grad-from-last``, a window of 1), the peak
GPU memory of the steps, and the memory the weights take. With ``--tiny`` the same code runs on tiny configs on
the CPU (64 px, 4 steps): a check that the script works, not a measurement.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

# ---------------------------------------------------------------- published configs (real sizes)

CLIP_L = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
              max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768)
CLIP_G = dict(vocab_size=49408, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
              max_position_embeddings=77, hidden_act="gelu", projection_dim=1280)
T5_XXL = dict(d_model=4096, d_ff=10240, d_kv=64, num_heads=64, num_layers=24, vocab_size=32128,
              feed_forward_proj="gated-gelu", relative_attention_num_buckets=32, relative_attention_max_distance=128,
              pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
SDXL_UNET = dict(
    sample_size=128, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(5, 10, 20),
    transformer_layers_per_block=(1, 2, 10), cross_attention_dim=2048, use_linear_projection=True,
    addition_embed_type="text_time", addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816,
    norm_num_groups=32,
)
SDXL_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, sample_size=1024, layers_per_block=2,
                block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4, scaling_factor=0.13025, force_upcast=True)
SDXL_SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
                      steps_offset=1, timestep_spacing="leading", prediction_type="epsilon")
SD35M_TRANSFORMER = dict(
    sample_size=128, patch_size=2, in_channels=16, out_channels=16, num_layers=24, attention_head_dim=64,
    num_attention_heads=24, joint_attention_dim=4096, caption_projection_dim=1536, pooled_projection_dim=2048,
    pos_embed_max_size=384, qk_norm="rms_norm", dual_attention_layers=tuple(range(13)),
)
SD35_VAE = dict(in_channels=3, out_channels=3, latent_channels=16, sample_size=1024, layers_per_block=2,
                block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4, scaling_factor=1.5305, shift_factor=0.0609,
                use_quant_conv=False, use_post_quant_conv=False)

# ---------------------------------------------------------------- the same layouts, tiny (--tiny)

TINY_CLIP = dict(vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                 max_position_embeddings=77, projection_dim=32)
TINY = {
    "clip_l": TINY_CLIP, "clip_g": TINY_CLIP,
    "t5": dict(T5_XXL, d_model=64, d_ff=64, d_kv=16, num_heads=4, num_layers=2),
    "sdxl_unet": dict(SDXL_UNET, sample_size=8, block_out_channels=(16, 32, 32), attention_head_dim=(2, 4, 4),
                      transformer_layers_per_block=(1, 1, 1), cross_attention_dim=64, addition_time_embed_dim=8,
                      projection_class_embeddings_input_dim=6 * 8 + 32, norm_num_groups=8),
    "sdxl_vae": dict(SDXL_VAE, sample_size=64, block_out_channels=(8, 8, 16, 16), layers_per_block=1,
                     norm_num_groups=4),
    "sd3_transformer": dict(SD35M_TRANSFORMER, sample_size=8, num_layers=2, attention_head_dim=8,
                            num_attention_heads=4, joint_attention_dim=64, caption_projection_dim=32,
                            pooled_projection_dim=64, pos_embed_max_size=16, dual_attention_layers=(0,)),
    "sd3_vae": dict(SD35_VAE, sample_size=64, block_out_channels=(8, 8, 16, 16), layers_per_block=1,
                    norm_num_groups=4),
}
REAL = {"clip_l": CLIP_L, "clip_g": CLIP_G, "t5": T5_XXL, "sdxl_unet": SDXL_UNET, "sdxl_vae": SDXL_VAE,
        "sd3_transformer": SD35M_TRANSFORMER, "sd3_vae": SD35_VAE}


def build_sdxl(c: dict, device: torch.device):
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from reneg.models.tokenizers import build_clip_tokenizer

    with torch.device(device):  # random weights made where they run (T5-XXL on the CPU would take minutes)
        modules = dict(vae=AutoencoderKL(**c["sdxl_vae"]), unet=UNet2DConditionModel(**c["sdxl_unet"]),
                       text_encoder=CLIPTextModel(CLIPTextConfig(**c["clip_l"])),
                       text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**c["clip_g"])))
    return StableDiffusionXLPipeline(**modules, tokenizer=build_clip_tokenizer(), tokenizer_2=build_clip_tokenizer(),
                                     scheduler=EulerDiscreteScheduler(**SDXL_SCHEDULER), add_watermarker=False)


def build_sd3(c: dict, device: torch.device):
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, T5Config, T5EncoderModel

    from reneg.models.tiny import build_t5_tokenizer
    from reneg.models.tokenizers import build_clip_tokenizer

    with torch.device(device):
        modules = dict(transformer=SD3Transformer2DModel(**c["sd3_transformer"]), vae=AutoencoderKL(**c["sd3_vae"]),
                       text_encoder=CLIPTextModelWithProjection(CLIPTextConfig(**c["clip_l"])),
                       text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**c["clip_g"])),
                       text_encoder_3=T5EncoderModel(T5Config(**c["t5"])).eval())
    return StableDiffusion3Pipeline(
        **modules, tokenizer=build_clip_tokenizer(), tokenizer_2=build_clip_tokenizer(),
        tokenizer_3=build_t5_tokenizer(),  # a small T5-kind vocabulary: ids stay within T5-XXL's 32128
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0))


def _gib(n: int) -> float:
    return round(n / 2**30, 2)


def measure(name: str, build, configs: dict, *, tiny: bool, device: torch.device, repeats: int,
            grad_from_last: bool) -> dict:
    from reneg.methods.reneg.train import TrainConfig, Trainer
    from reneg.models.loading import LoadedModel, ModelDefaults, _prepare

    cuda = device.type == "cuda"
    dtype = torch.bfloat16 if not tiny else torch.float32
    started = time.perf_counter()
    torch.manual_seed(0)
    pipe = build(configs, device)
    model = LoadedModel(_prepare(pipe, device=device, dtype=dtype), f"random-{name}", ModelDefaults())
    family = model.family
    steps = 4 if tiny else (28 if family.name == "sd3" else 30)
    resolution = 64 if tiny else 1024
    window = 1 if grad_from_last else 2 if tiny else (9 if family.name == "sd3" else 10)  # 1: t is the last step
    config = TrainConfig(model=model.name, reward="contrast", prompt=["a photo of a cat on a sofa"],
                         train_steps=repeats + 1, batch_size=1, steps=steps, grad_window=window,
                         resolution=resolution, precision="fp32" if tiny else "bf16", device=str(device),
                         gradient_checkpointing=True, validate_every=0,
                         out=str(Path(tempfile.mkdtemp()) / f"{name}.safetensors"))
    trainer = Trainer(config, model=model)
    built = time.perf_counter() - started
    weights = torch.cuda.memory_allocated(device) if cuda else 0
    trainer.train_step()  # warm-up (kernels, allocator)
    seconds = []
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(repeats):
        record = trainer.train_step()
        seconds.append(record.seconds)
    peak = torch.cuda.max_memory_allocated(device) if cuda else 0
    parameters = {key: sum(p.numel() for p in module.parameters()) for key, module in pipe.components.items()
                  if isinstance(module, torch.nn.Module)}
    result = {"model": name, "family": family.name, "resolution": resolution, "steps": steps, "grad_window": window,
              "grad_from_last": grad_from_last, "precision": config.precision, "gradient_checkpointing": True,
              "seconds_per_step": seconds, "median_seconds": statistics.median(seconds),
              "peak_memory_gib": _gib(peak), "weights_memory_gib": _gib(weights),
              "parameters_millions": {k: round(v / 1e6, 1) for k, v in parameters.items()},
              "build_seconds": round(built, 1), "negative_shape": list(family.negative_shape()[0]),
              "pooled_size": family.negative_shape()[1]}
    del trainer, model, pipe
    if cuda:
        torch.cuda.empty_cache()
    return result


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny configs on the CPU: a check that the script runs")
    parser.add_argument("--models", default="sdxl,sd3.5-medium", help="comma-separated: sdxl, sd3.5-medium")
    parser.add_argument("--repeats", type=int, default=2, help="timed steps after the warm-up")
    parser.add_argument("--grad-from-last", action="store_true", help="t at the last sampling step (longest step)")
    parser.add_argument("--out", help="also write the results as JSON here")
    args = parser.parse_args(argv)
    device = torch.device("cpu" if args.tiny else "cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run on a GPU, or with --tiny for the CPU check")
    configs = TINY if args.tiny else REAL
    builders = {"sdxl": build_sdxl, "sd3.5-medium": build_sd3}
    results = []
    for name in args.models.split(","):
        result = measure(name, builders[name], configs, tiny=args.tiny, device=device, repeats=args.repeats,
                         grad_from_last=args.grad_from_last)
        print(json.dumps(result), flush=True)
        results.append(result)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"\non {gpu}:\n| model | parameters | s/step (median of {args.repeats}) | peak memory | weights |")
    print("| --- | --- | --- | --- | --- |")
    for r in results:
        print(f"| {r['model']} {r['resolution']}px, {r['precision']}, grad ckpt, {r['steps']} steps | "
              f"{sum(r['parameters_millions'].values()):.0f} M params | {r['median_seconds']:.2f} | "
              f"{r['peak_memory_gib']} GiB | {r['weights_memory_gib']} GiB |")
    if args.out:
        Path(args.out).write_text(json.dumps({"device": gpu, "results": results}, indent=1))
    return results


if __name__ == "__main__":
    main()
