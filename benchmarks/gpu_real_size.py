"""ReNeg's training step and generation at Stable Diffusion 1.5 size, with random weights (no download).

    python benchmarks/gpu_real_size.py [--batches 1,4,8] [--steps 30] [--rounds 3] [--no-checkpointing-too]
        [--compile] [--out runs/real_size.json]                 # on a GPU: <= 8 minutes on one H100/H200
    python benchmarks/gpu_real_size.py --tiny --device cpu      # the same code on tiny models (checks the script)
    python benchmarks/gpu_real_size.py --device cpu --dtype fp32 --batches 1 --steps 2 --rounds 1 --memory-only
                                                                # CPU: one step's peak RSS at real size

Models, built from the published configs written out below, random-initialised:

- the SD1.5 UNet (``UNet2DConditionModel``, 859.5 M parameters), its VAE (``AutoencoderKL``, 83.7 M) and
  text encoder (CLIP ViT-L/14 text tower, 123 M), DDIM with SD's betas;
- the reward: an open_clip ViT-H-14 (``open_clip.CLIP(**open_clip.get_model_config("ViT-H-14"))``, 986 M),
  scored as HPS/CLIP are: cosine of image and text features after a resize to 224 and CLIP's normalisation.

The step is ReNeg's (Sec. 4.2): x_T -> x_t by DDIM + CFG without gradient, one guided UNet call with gradient at
x_t = the last step (k = T - 1), the one-step x0 prediction (Eq. 6), VAE decode with gradient, reward forward
and backward to the negative embedding (1, 77, 768), AdamW. The frozen models run in ``--dtype`` (bf16 by
default) with SDPA attention; gradient checkpointing of the UNet and the VAE decoder is on in the grad step, with
the decode one sample at a time as reneg's ``--gradient-checkpointing`` does (``--no-checkpointing-too`` also
measures without any of it). ``--compile`` compiles the UNet for the no-grad prefix
(``torch.compile``; kept in the numbers only as its own column).

Per batch (512 x 512): step seconds (median of ``--rounds`` after a warm-up), generation images/s (full
sampling, no gradient, decoded) and peak memory of the step (CUDA: ``torch.cuda.max_memory_allocated``; CPU:
peak RSS of the process during the step minus RSS before it, via /proc/self/clear_refs). Prints a markdown
table and writes the numbers as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

try:
    from reneg.core.family import decode_per_sample
except ImportError:  # run from a checkout without installing it (the GPU machine)
    import sys
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from reneg.core.family import decode_per_sample

#: runwayml/stable-diffusion-v1-5 unet/config.json (the fields that are not diffusers' defaults).
SD15_UNET = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, cross_attention_dim=768,
                 block_out_channels=(320, 640, 1280, 1280), attention_head_dim=8, norm_num_groups=32,
                 down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                   "DownBlock2D"),
                 up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"))
#: runwayml/stable-diffusion-v1-5 vae/config.json.
SD15_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, sample_size=512, layers_per_block=2,
                block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=32, scaling_factor=0.18215)
#: openai/clip-vit-large-patch14 text_config (SD1.5's text encoder).
SD15_TEXT = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                 num_attention_heads=12, max_position_embeddings=77, projection_dim=768, hidden_act="quick_gelu")
#: runwayml/stable-diffusion-v1-5 scheduler/scheduler_config.json (as DDIM).
SD15_SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
                      clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon")

TINY_UNET = dict(SD15_UNET, sample_size=8, block_out_channels=(32, 32, 64, 64), layers_per_block=1,
                 cross_attention_dim=32, norm_num_groups=8)
TINY_VAE = dict(SD15_VAE, sample_size=64, block_out_channels=(8, 16, 16, 16), layers_per_block=1, norm_num_groups=4)
TINY_TEXT = dict(SD15_TEXT, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                 projection_dim=32)
TINY_CLIP = dict(embed_dim=32, vision_cfg=dict(image_size=224, layers=2, width=32, head_width=16, patch_size=32),
                 text_cfg=dict(context_length=77, vocab_size=49408, width=32, heads=2, layers=2))
MEAN, STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


def batch_list(text: str) -> list[int]:
    """argparse type of ``--batches``: comma-separated positive integers."""
    try:
        batches = [int(b) for b in text.split(",")]
    except ValueError:
        batches = []
    if not batches or min(batches) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers such as 1,4,8, got '{text}'")
    return batches


def now(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith(field + ":")) / 1024


def reset_peak(device: torch.device) -> float:
    """Start a peak-memory measurement; returns the memory in use now (MiB)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device) / 2**20
    with open("/proc/self/clear_refs", "w") as handle:  # resets VmHWM (Linux)
        handle.write("5")
    return _status_mib("VmRSS")


def peak(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return _status_mib("VmHWM")


class Models:
    """Random-weight SD1.5-size (or ``tiny``) UNet, VAE, text encoder and a ViT-H-14-size CLIP reward."""

    def __init__(self, *, tiny: bool, device: torch.device, dtype: torch.dtype):
        import open_clip
        from diffusers import DDIMScheduler

        torch.manual_seed(0)
        self.device, self.dtype = device, dtype
        default_dtype = torch.get_default_dtype()
        torch.set_default_dtype(dtype)  # initialised in their dtype, where they run (a GPU: 2 G parameters in s)
        try:
            self._build(tiny, device)
        finally:
            torch.set_default_dtype(default_dtype)
        self.tokenizer = open_clip.get_tokenizer("ViT-H-14")  # the bundled BPE: no download
        for module in (self.unet, self.vae, self.text, self.clip):
            module.requires_grad_(False).eval()
        self.scheduler = DDIMScheduler(**SD15_SCHEDULER)
        self.resolution = 64 if tiny else 512
        self.latent = self.resolution // 8
        self.width = self.text.config.hidden_size
        self.checkpointed_decode = False

    def _build(self, tiny: bool, device: torch.device) -> None:
        import open_clip
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPTextConfig, CLIPTextModel

        with torch.device(device):
            self.unet = UNet2DConditionModel(**(TINY_UNET if tiny else SD15_UNET))
            self.vae = AutoencoderKL(**(TINY_VAE if tiny else SD15_VAE))
            self.text = CLIPTextModel(CLIPTextConfig(**(TINY_TEXT if tiny else SD15_TEXT)))
            self.clip = open_clip.CLIP(**(TINY_CLIP if tiny else open_clip.get_model_config("ViT-H-14")))

    def parameters(self) -> dict[str, float]:
        return {name: sum(p.numel() for p in module.parameters()) / 1e6
                for name, module in (("unet", self.unet), ("vae", self.vae), ("text encoder", self.text),
                                     ("reward (CLIP)", self.clip))}

    def checkpointing(self, on: bool) -> None:
        self.checkpointed_decode = on  # as reneg's families: the grad step decodes one sample at a time
        if on:  # diffusers checkpoints each block while grad is enabled: only the grad step's calls
            self.unet.enable_gradient_checkpointing()
            self.vae.enable_gradient_checkpointing()
        else:
            self.unet.disable_gradient_checkpointing()
            self.vae.disable_gradient_checkpointing()

    @torch.no_grad()
    def encode(self, batch: int) -> torch.Tensor:
        ids = torch.randint(0, 49407, (batch, 77), generator=torch.Generator().manual_seed(batch)).to(self.device)
        return self.text(ids)[0]

    def unet_call(self, latents, t, prompts, negative, scale: float):
        x = torch.cat([latents, latents]).to(self.dtype)
        context = torch.cat([negative.to(self.dtype).expand(len(latents), -1, -1), prompts])
        uncond, cond = self.unet(x, t, encoder_hidden_states=context, return_dict=False)[0].float().chunk(2)
        return uncond + scale * (cond - uncond)  # ReNeg Eq. 5

    def decode(self, latents):
        if self.checkpointed_decode and torch.is_grad_enabled():
            return decode_per_sample(self._decode, latents)
        return self._decode(latents)

    def _decode(self, latents):
        images = self.vae.decode((latents / self.vae.config.scaling_factor).to(self.dtype), return_dict=False)[0]
        return (images.float() / 2 + 0.5).clamp(0, 1)

    def reward(self, images, text_tokens):
        pixels = torch.nn.functional.interpolate(images, size=224, mode="bicubic", align_corners=False)
        mean = torch.tensor(MEAN, device=images.device).view(1, 3, 1, 1)
        std = torch.tensor(STD, device=images.device).view(1, 3, 1, 1)
        image = torch.nn.functional.normalize(self.clip.encode_image(((pixels - mean) / std).to(self.dtype)).float(),
                                              dim=-1)
        with torch.no_grad():
            text = torch.nn.functional.normalize(self.clip.encode_text(text_tokens).float(), dim=-1)
        return (image * text).sum(-1)


def train_step(models: Models, negative, optimizer, *, batch: int, steps: int, scale: float, prefix_unet=None):
    """One ReNeg step (grad call at the last sampling step); returns the loss."""
    device = models.device
    prompts = models.encode(batch)
    tokens = models.tokenizer(["a photo"] * batch).to(device)
    latents = torch.randn(batch, 4, models.latent, models.latent, generator=torch.Generator().manual_seed(0))
    latents = latents.to(device)
    scheduler = models.scheduler
    scheduler.set_timesteps(steps, device=device)
    timesteps = scheduler.timesteps
    unet = models.unet
    with torch.no_grad():  # x_T -> x_t without gradient
        if prefix_unet is not None:
            models.unet = prefix_unet
        try:
            for t in timesteps[:-1]:
                output = models.unet_call(latents, t, prompts, negative, scale)
                latents = scheduler.step(output, t, latents, return_dict=False)[0]
        finally:
            models.unet = unet
    t = timesteps[-1]
    alpha = float(scheduler.alphas_cumprod[t.long().cpu()])
    return grad_step(models, negative, optimizer, latents=latents, t=t, alpha=alpha, prompts=prompts,
                     tokens=tokens, scale=scale)


def grad_step(models: Models, negative, optimizer, *, latents, t, alpha: float, prompts, tokens, scale: float):
    """The part of a step with gradient, where its peak memory is: the grad call at x_t, x0_pred (ReNeg Eq. 6),
    decode, reward, backward to the negative, AdamW."""
    output = models.unet_call(latents, t, prompts, negative, scale)
    x0 = (latents - (1 - alpha) ** 0.5 * output) / alpha ** 0.5
    loss = -models.reward(models.decode(x0), tokens).mean()
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.detach()


@torch.no_grad()
def generate(models: Models, negative, *, batch: int, steps: int, scale: float):
    prompts = models.encode(batch)
    latents = torch.randn(batch, 4, models.latent, models.latent, generator=torch.Generator().manual_seed(1))
    latents = latents.to(models.device)
    models.scheduler.set_timesteps(steps, device=models.device)
    for t in models.scheduler.timesteps:
        output = models.unet_call(latents, t, prompts, negative, scale)
        latents = models.scheduler.step(output, t, latents, return_dict=False)[0]
    return models.decode(latents)


def measure(models: Models, *, batch: int, steps: int, rounds: int, checkpointing: bool, memory_only: bool,
            compiled=None) -> dict:
    device = models.device
    models.checkpointing(checkpointing)
    negative = torch.nn.Parameter(torch.zeros(1, 77, models.width, device=device))
    optimizer = torch.optim.AdamW([negative], lr=1e-3)
    scale = 7.5
    result = {"batch": batch, "checkpointing": checkpointing, "steps": steps}
    before = reset_peak(device)
    start = now(device)
    train_step(models, negative, optimizer, batch=batch, steps=steps, scale=scale)  # also the warm-up
    result["first_step_s"] = now(device) - start
    result["peak_mib"] = peak(device) - before
    result["peak_total_mib"] = peak(device)
    if memory_only:
        return result
    times = []
    for _ in range(rounds):
        start = now(device)
        train_step(models, negative, optimizer, batch=batch, steps=steps, scale=scale)
        times.append(now(device) - start)
    result["step_s"] = statistics.median(times)
    if compiled is not None:
        train_step(models, negative, optimizer, batch=batch, steps=steps, scale=scale, prefix_unet=compiled)
        times = []
        for _ in range(rounds):
            start = now(device)
            train_step(models, negative, optimizer, batch=batch, steps=steps, scale=scale, prefix_unet=compiled)
            times.append(now(device) - start)
        result["step_s_compiled_prefix"] = statistics.median(times)
    if checkpointing:  # generation does not depend on checkpointing: measured once per batch
        generate(models, negative.detach(), batch=batch, steps=steps, scale=scale)
        times = []
        for _ in range(rounds):
            start = now(device)
            generate(models, negative.detach(), batch=batch, steps=steps, scale=scale)
            times.append(now(device) - start)
        result["images_per_s"] = batch / statistics.median(times)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny models of the same classes (checks the script)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp32"])
    parser.add_argument("--batches", default="1,4,8", type=batch_list, help="comma-separated batch sizes")
    parser.add_argument("--steps", type=int, default=30, help="DDIM steps T")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-checkpointing-too", action="store_true", help="also measure without checkpointing")
    parser.add_argument("--only-no-checkpointing", action="store_true", help="measure without checkpointing only")
    parser.add_argument("--memory-only", action="store_true", help="one step per setting: its time and peak memory")
    parser.add_argument("--compile", action="store_true", help="also time a torch.compile'd UNet in the prefix")
    parser.add_argument("--out", default="runs/real_size.json")
    args = parser.parse_args()
    device = torch.device(args.device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    started = time.perf_counter()
    models = Models(tiny=args.tiny, device=device, dtype=dtype)
    compiled = torch.compile(models.unet) if args.compile else None
    settings = [False] if args.only_no_checkpointing else [True, False] if args.no_checkpointing_too else [True]
    results = []
    header = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "dtype": args.dtype, "tiny": args.tiny, "torch": torch.__version__,
              "resolution": models.resolution, "parameters_M": models.parameters()}
    print(json.dumps(header), flush=True)
    for batch in args.batches:
        for checkpointing in settings:
            try:
                result = measure(models, batch=batch, steps=args.steps, rounds=args.rounds,
                                 checkpointing=checkpointing, memory_only=args.memory_only, compiled=compiled)
            except torch.OutOfMemoryError as error:
                result = {"batch": batch, "checkpointing": checkpointing, "error": f"out of memory: {error}"[:200]}
                torch.cuda.empty_cache()
            results.append(result)
            print(json.dumps(result), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({**header, "results": results}, indent=1))
    print(f"\n{header['device']}, {args.dtype}, {models.resolution}², T = {args.steps}, "
          f"{'tiny models' if args.tiny else 'SD1.5-size random weights'}; {time.perf_counter() - started:.0f} s\n")
    print("| batch | checkpointing | step s | images/s (generation) | step peak MiB |\n| --- | --- | --- | --- | --- |")
    for r in results:
        if "error" in r:
            print(f"| {r['batch']} | {r['checkpointing']} | {r['error']} | | |")
            continue
        step = r.get("step_s", r["first_step_s"])
        print(f"| {r['batch']} | {'on' if r['checkpointing'] else 'off'} | {step:.3f} | "
              f"{r.get('images_per_s', float('nan')):.2f} | {r['peak_mib']:.0f} |")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
