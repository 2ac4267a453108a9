"""``reneg compare``: a learned negative beside the null text and the handcrafted prompt, as a picture and a line.

What a newcomer looks at after the first training run: the same held-out
prompts and seeds with each negative (a labelled PNG grid), and the mean reward
of each on those prompts with the learned embedding's win rates. The items
are seeded as ``reneg eval`` seeds them, so the numbers agree with an eval of
the same prompts.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..config import BATCH_SIZE, PRECISION, PROMPTS, SEED, SamplingSettings, arg, builtin_command, require
from ..io import atomic_path, to_pil, write_json
from ..methods.spec import build_methods, parse_method_spec
from ..models.device import dtype_of, resolve_device
from ..models.loading import load_model
from ..prompts import load_benchmark
from .metrics import mean, parse_metric_spec, win_rate
from .plan import item_seed


@dataclass
class CompareConfig(SamplingSettings):
    """Settings of ``reneg compare``; None means the model's default."""

    negative: str = arg(None, "the learned negative embedding file to show", metavar="FILE")
    prompts: str | None = PROMPTS(help="prompts file (default: the model's held-out benchmark)")
    limit: int = arg(64, "prompts measured, spread evenly over the benchmark (eval's --limit takes the first N)",
                     metavar="N", min=1, flag="--prompt-count", aliases=("--limit",))
    columns: int = arg(8, "prompts shown in the picture", metavar="N", min=1, max=64)
    metric: str | None = arg(None, "reward to report (default: the model's training reward)", metavar="NAME",
                             aliases=("--metrics",))
    seed: int = SEED(help="base seed of the items' x_T (as reneg eval)")
    batch_size: int = BATCH_SIZE(16, "images per forward pass")
    precision: str = PRECISION(help="dtype of the diffusion model")
    out: str = arg("compare.png", "the picture; the numbers go beside it as .json", metavar="FILE", output="file")

    def __post_init__(self):
        super().__post_init__()
        require(self.negative is not None, "--negative FILE is required: the embedding that `reneg train` wrote")
        require(self.out.endswith(".png"), f"--out must end in .png, got '{self.out}'")


def _spread(items: list, count: int) -> list:
    """``count`` items spread evenly over ``items`` (every category of a grouped benchmark appears)."""
    if count >= len(items):
        return items
    return [items[int(i * len(items) / count)] for i in range(count)]


LABEL_WIDTH, LINE_HEIGHT, CHAR_WIDTH = 110, 11, 6  # PIL's default bitmap font: about 6 x 11 px a character


def _label(image: Image.Image, text: str) -> Image.Image:
    canvas = Image.new("RGB", (image.width + LABEL_WIDTH, image.height), "white")
    canvas.paste(image, (LABEL_WIDTH, 0))
    ImageDraw.Draw(canvas).text((6, image.height // 2 - 6), text, fill="black")
    return canvas


def _with_prompts(grid: Image.Image, prompts: list[str], *, left: int, cell: int) -> Image.Image:
    """``grid`` under a header that names each column's prompt (wrapped to the column's width)."""
    wrapped = [textwrap.wrap(text, max(4, (cell - 4) // CHAR_WIDTH)) for text in prompts]
    header = Image.new("RGB", (grid.width, LINE_HEIGHT * max(map(len, wrapped), default=1) + 6), "white")
    draw = ImageDraw.Draw(header)
    for column, lines in enumerate(wrapped):
        for row, line in enumerate(lines):
            draw.text((left + column * cell + 2, 3 + row * LINE_HEIGHT), line, fill="black")
    canvas = Image.new("RGB", (grid.width, header.height + grid.height), "white")
    canvas.paste(header, (0, 0))
    canvas.paste(grid, (0, header.height))
    return canvas


def compare(config: CompareConfig) -> str:
    """Write the picture and the numbers; return the one line that sums them up."""
    model = load_model(config.model, device=resolve_device(config.device), dtype=dtype_of(config.precision))
    defaults = model.defaults
    specs = {"null": "null", "handcrafted": "handcrafted", "learned": f"embedding={config.negative}"}
    methods = build_methods([parse_method_spec(spec) for spec in specs.values()], model)
    metric = parse_metric_spec(config.metric or defaults.reward)
    reward = metric.build(device=model.pipe.device, dtype=torch.float32)
    prompts = _spread(load_benchmark(config.prompts or defaults.benchmark), config.limit)
    sampling = model.sampling(config)
    steps, scale = sampling.steps, sampling.guidance_scale
    family = model.family
    scores, shown = {}, {}
    for label, spec in specs.items():
        values, images_shown = [], []
        for start in range(0, len(prompts), config.batch_size):
            batch = prompts[start:start + config.batch_size]
            latents = torch.cat([family.initial_latents(1, resolution=sampling.resolution, generator=torch.Generator()
                                                        .manual_seed(item_seed(config.seed, start + i, 0)))
                                 for i in range(len(batch))])
            images = methods[spec].images(model, [p.text for p in batch], latents, guidance_scale=scale, steps=steps)
            with torch.no_grad():
                values += reward(images, [p.text for p in batch]).float().cpu().tolist()
            images_shown += to_pil(images)
        scores[label], shown[label] = values, images_shown
    # the picture: one labelled row per negative, columns spread over the benchmark, each headed by its prompt
    columns = _spread(list(range(len(prompts))), config.columns)
    rows = [_label(Image.fromarray(np.concatenate([np.asarray(shown[label][i]) for i in columns], axis=1)), label)
            for label in specs]
    grid = Image.fromarray(np.concatenate([np.asarray(row) for row in rows], axis=0))
    zoom = 2 if grid.height < 400 else 1
    if zoom > 1:
        grid = grid.resize((grid.width * zoom, grid.height * zoom), Image.NEAREST)
    grid = _with_prompts(grid, [prompts[i].text for i in columns], left=LABEL_WIDTH * zoom,
                         cell=shown["null"][0].width * zoom)
    with atomic_path(config.out) as tmp:
        grid.save(tmp, format="PNG")
    means = {label: mean(values) for label, values in scores.items()}
    wins = {f"learned vs {base}": win_rate(scores["learned"], scores[base]) for base in ("null", "handcrafted")}
    write_json(Path(config.out).with_suffix(".json"), {
        "metric": metric.text, "num_prompts": len(prompts), "seed": config.seed, "mean": means, "win_rates": wins,
        "prompts_shown": [prompts[i].text for i in columns]})
    which = "held-out prompts" if config.prompts is None else f"prompts of {Path(config.prompts).name}"
    return (f"{metric.text} on {len(prompts)} {which}: null {means['null']:.4f}, handcrafted "
            f"{means['handcrafted']:.4f}, learned {means['learned']:.4f} (win rate vs null "
            f"{wins['learned vs null']:.2f}, vs handcrafted {wins['learned vs handcrafted']:.2f})")


COMMAND = builtin_command("compare", CompareConfig, compare)
