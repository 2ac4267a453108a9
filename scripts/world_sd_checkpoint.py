"""Judge a running build's sd checkpoint, raw and EMA weights, with the template judge (no trained scorer needed).

    python scripts/world_sd_checkpoint.py [WORK_DIR]     # default runs/world-build

80 held-out clean prompts (every 5th of the benchmark), x_T of seed 0, guidance 3, DDIM 20, null text. Prints
one JSON line: the checkpoint's step and shape / colour / background read from the images. This is how the
v3 build was watched (docs/world.md: when the text conditioning forms).
"""
import json
import sys

import torch
from diffusers import AutoencoderKL

from reneg.models.tokenizers import build_clip_tokenizer
from reneg.world import architectures
from reneg.world.pipeline import assemble_pipeline
from reneg.world.scenes import benchmark_prompts
from reneg.world.templates import judge_pipeline

work = sys.argv[1] if len(sys.argv) > 1 else "runs/world-build"
state = torch.load(f"{work}/sd.checkpoint.pt", weights_only=False)
vae = AutoencoderKL.from_pretrained(f"{work}/vae").eval()
prompts = [p for p, c in benchmark_prompts()][::5][:80]
recipe = state["recipe"]
out = {"step": state["step"]}
for which, (te_key, un_key) in {"raw": ("text_encoder", "unet"), "ema": ("ema_text", "ema_unet")}.items():
    te, un = architectures.text_encoder(recipe["text_length"]), architectures.unet()
    te.load_state_dict(state[te_key])
    un.load_state_dict(state[un_key])
    pipe = assemble_pipeline(vae=vae, text_encoder=te.eval(), unet=un.eval(),
                             tokenizer=build_clip_tokenizer(model_max_length=recipe["text_length"]),
                             prediction_type=recipe["prediction_type"])
    out[which] = {k: round(v, 3) for k, v in judge_pipeline(pipe, prompts, batch_size=len(prompts)).items()}
print(json.dumps(out))
