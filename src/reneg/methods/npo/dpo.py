"""Diffusion-DPO and its NPO reversal (NPO Eq. 8) on a pairs file: the loss and the data.

Pairs file (JSONL, one pair a line; relative paths are read from the file's directory)::

    {"prompt": "a red circle on a blue background", "preferred": "pairs/00000_w.png", "rejected": "pairs/00000_l.png"}

Diffusion-DPO (Wallace et al. 2024): with e = ||eps - eps_pred(x_t, c, t)||^2 per sample, for the trained
model (theta + delta) and the frozen reference (theta),

    loss = -log sigmoid(-beta/2 * ((e_w - e_l) - (e_w^ref - e_l^ref)))

NPO Eq. 8 reverses each pair, r_NPO = (x_1, x_0, c): the rejected image takes the winner's place.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ...errors import ReNegError
from ...io import open_rgb


def diffusion_dpo_loss(model_error_w: torch.Tensor, model_error_l: torch.Tensor, ref_error_w: torch.Tensor,
                       ref_error_l: torch.Tensor, *, beta: float) -> torch.Tensor:
    """Diffusion-DPO's loss (mean over pairs) from per-sample denoising errors of winner w and loser l."""
    inside = -0.5 * beta * ((model_error_w - model_error_l) - (ref_error_w - ref_error_l))
    return -F.logsigmoid(inside).mean()


def npo_dpo_loss(model_error_preferred: torch.Tensor, model_error_rejected: torch.Tensor,
                 ref_error_preferred: torch.Tensor, ref_error_rejected: torch.Tensor, *, beta: float) -> torch.Tensor:
    """NPO's DPO loss: Diffusion-DPO on the reversed pair (NPO Eq. 8), the rejected image as the winner.

    ``beta`` in the NPO release's convention, ``-log sigmoid(beta * ((e_w^ref - e_l^ref) - (e_w - e_l)))`` with
    no factor 1/2 (Diffusion-DPO's own code halves it): the release's beta 500 is :func:`diffusion_dpo_loss`'s 1000.
    """
    return diffusion_dpo_loss(model_error_rejected, model_error_preferred, ref_error_rejected, ref_error_preferred,
                              beta=2 * beta)


@dataclass
class Pairs:
    """Preference pairs: prompts and images (N, 3, H, W) in [-1, 1]."""

    prompts: list[str]
    preferred: torch.Tensor
    rejected: torch.Tensor

    def __len__(self) -> int:
        return len(self.prompts)


def _image(path: Path, resolution: int, *, line: int, source: Path) -> torch.Tensor:
    from PIL import Image

    image = open_rgb(path, what=f"pairs file {source} line {line}: image", advice="fix the path or pass a PNG or JPEG")
    array = np.asarray(image.resize((resolution, resolution), Image.BICUBIC), dtype=np.float32) / 127.5 - 1
    return torch.from_numpy(array).permute(2, 0, 1)


def load_pairs(path: str | Path, *, resolution: int) -> Pairs:
    """Read a pairs JSONL (see the module doc); every bad line is a one-line :class:`ReNegError`."""
    path = Path(path)
    if not path.is_file():
        raise ReNegError(f"pairs file {path} does not exist: pass a JSONL of {{\"prompt\", \"preferred\", "
                         '"rejected"} lines (the shapes world makes one: reneg world-pairs --out DIR)')
    prompts, preferred, rejected = [], [], []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ReNegError(f"pairs file {path} cannot be read as UTF-8 text ({error}): pass a JSONL file") from None
    for number, text in enumerate(lines, 1):
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except ValueError:
            raise ReNegError(f"pairs file {path} line {number} is not JSON: write one JSON object a line") from None
        if not isinstance(record, dict) or not all(isinstance(record.get(k), str) and record[k].strip()
                                                   for k in ("prompt", "preferred", "rejected")):
            raise ReNegError(f"pairs file {path} line {number} needs non-empty strings \"prompt\", \"preferred\" "
                             "and \"rejected\"")
        prompts.append(record["prompt"])
        preferred.append(_image(path.parent / record["preferred"], resolution, line=number, source=path))
        rejected.append(_image(path.parent / record["rejected"], resolution, line=number, source=path))
    if not prompts:
        raise ReNegError(f"pairs file {path} holds no pairs: add lines of {{\"prompt\", \"preferred\", \"rejected\"}}")
    return Pairs(prompts, torch.stack(preferred), torch.stack(rejected))
