"""Global ReNeg training (ReNeg Sec. 4.2) on ``accelerate.Accelerator``.

One step: random prompts and a random t in the last ``grad_window`` of the
``steps`` sampling steps; DDIM + CFG from x_T to x_t without gradient; one
guided call with gradient gives x0_pred (Eq. 6); the VAE decodes it (with
gradient); the reward scores it; loss = -mean reward (Eq. 7); AdamW with a
cosine schedule updates the negative embedding n (and, if asked, the guidance
scale) and nothing else.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import nn

from . import __version__
from .config import arg, require
from .device import dtype_of, resolve_device
from .embedding import NegativeEmbedding, null_text_embedding
from .errors import ReNegError
from .fingerprint import text_encoder_fingerprint
from .models import LoadedModel, encode_prompts, load_model
from .prompts import Prompt, gather_prompts
from .rewards import Reward, build_reward, build_rewards_from_config
from .sampling import CFGDenoiser, decode, initial_latents, sample


@dataclass
class TrainConfig:
    """Settings of ``reneg train``; None means the model's default."""

    model: str | None = arg(None, "diffusers pipeline directory, cached hub id or built-in name "
                                  "(none: the embedded default)")
    prompt: list[str] = arg([], "a training prompt (repeatable)")
    prompts: str | None = arg(None, "training prompts file (.txt one a line, .json, .tsv)", metavar="FILE")
    reward: str | None = arg(None, "reward name (see `reneg rewards`)")
    reward_model: str | None = arg(None, "reward checkpoint: path or cached hub id", metavar="PATH_OR_ID")
    rewards: dict | None = arg(None, "config file only: a [rewards] table of weighted rewards, e.g. "
                                     '{"hpsv2.1" = 1.0, pickscore = {weight = 0.5, model = "PATH"}}', cli=False)
    out: str = arg("negative.safetensors", "where to write the learned embedding", metavar="FILE")
    train_steps: int = arg(120, "optimizer steps (paper: 4000; the default suits the shapes world on a CPU)",
                           metavar="N")
    batch_size: int = arg(8, "prompts per optimizer step (paper: 64)")
    micro_batch_size: int | None = arg(None, "prompts per forward pass; gradients are accumulated up to "
                                             "--batch-size (default: --batch-size)")
    lr: float = arg(1e-2, "AdamW learning rate (paper: 5e-3)")
    weight_decay: float = arg(0.0, "AdamW weight decay")
    warmup_steps: int = arg(0, "linear warm-up steps before the cosine decay")
    steps: int | None = arg(None, "DDIM sampling steps T (paper: 30)")
    grad_window: int | None = arg(None, "t is drawn from the last K of the sampling steps (paper: 10 of 30; "
                                        "default: a third of --steps)", metavar="K")
    guidance_scale: float | None = arg(None, "CFG scale gamma (paper: 7.5)")
    learn_guidance_scale: bool = arg(False, "also learn the guidance scale (ReNeg Sec. 4.2; off in the paper)")
    resolution: int | None = arg(None, "image size in pixels (default: the model's)")
    seed: int = arg(0, "seed of prompts, timesteps and noise")
    device: str = arg("auto", "cpu, cuda, cuda:N or auto")
    precision: str = arg("fp32", "dtype of the frozen models; the embedding stays fp32",
                         choices=["fp32", "fp16", "bf16"])
    checkpoint_every: int = arg(0, "save a resumable checkpoint every N steps (0: only at the end)", metavar="N")
    resume: str | None = arg(None, "resume from this checkpoint directory", metavar="DIR")
    log_every: int = arg(10, "log a line every N steps", metavar="N")
    report_to: str = arg("none", "also log reward/loss/lr per step to this tracker (tensorboard: <out>.tensorboard/, "
                                 "needs `pip install tensorboard`)", choices=["none", "tensorboard"])

    def __post_init__(self):
        require(self.train_steps >= 1, f"--train-steps must be >= 1, got {self.train_steps}")
        require(self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}")
        micro = self.micro_batch_size or self.batch_size
        require(micro >= 1 and self.batch_size % micro == 0,
                f"--batch-size {self.batch_size} must be a multiple of --micro-batch-size {micro}")
        require(self.lr > 0, f"--lr must be > 0, got {self.lr}")
        require(self.steps is None or self.steps >= 1, f"--steps must be >= 1, got {self.steps}")
        require(self.out.endswith(".safetensors"), f"--out must end in .safetensors, got '{self.out}'")
        require(not (self.rewards and (self.reward or self.reward_model)),
                "give either a [rewards] table or --reward/--reward-model, not both")

    @property
    def accumulation_steps(self) -> int:
        return self.batch_size // (self.micro_batch_size or self.batch_size)

    @property
    def checkpoint_dir(self) -> Path:
        return Path(self.out).with_suffix(".checkpoint")


@dataclass
class StepRecord:
    """What one optimizer step emits to listeners."""

    step: int
    loss: float
    reward: float
    lr: float
    guidance_scale: float
    grad_from: int
    seconds: float


class NegativeEmbeddingParameters(nn.Module):
    """The only trainable parameters: the negative embedding n (1, L, D) fp32, and optionally gamma."""

    def __init__(self, init: torch.Tensor, *, guidance_scale: float, learn_guidance_scale: bool):
        super().__init__()
        self.negative_embedding = nn.Parameter(init.detach().float().clone().unsqueeze(0))
        self.guidance_scale = nn.Parameter(torch.tensor(float(guidance_scale))) if learn_guidance_scale else None
        self._fixed_guidance_scale = float(guidance_scale)

    def forward(self, batch_size: int) -> tuple[torch.Tensor, float | torch.Tensor]:
        scale = self.guidance_scale if self.guidance_scale is not None else self._fixed_guidance_scale
        return self.negative_embedding.expand(batch_size, -1, -1), scale


def _step_generator(seed: int, step: int, micro: int) -> torch.Generator:
    """A CPU generator per (seed, step, micro-batch): draws do not depend on where a run was resumed."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 1_009 + micro)


class Trainer:
    """Holds the frozen pipeline, the reward, the trainable parameters and the optimizer; ``run`` yields steps."""

    def __init__(self, config: TrainConfig, *, model: LoadedModel | None = None, reward: Reward | None = None,
                 prompts: list[Prompt] | None = None):
        from accelerate import Accelerator
        from diffusers.optimization import get_scheduler

        self.config = config
        # 1. Accelerator: one process or many; the frozen models take the precision, n stays fp32
        device = resolve_device(config.device)
        self.accelerator = Accelerator(cpu=device.type == "cpu", gradient_accumulation_steps=config.accumulation_steps)
        device, dtype = self.accelerator.device, dtype_of(config.precision)
        # 2. Model, its defaults, prompts and reward
        self.model = model or load_model(config.model, device=device, dtype=dtype)
        defaults = self.model.defaults
        self.steps = config.steps or defaults.num_inference_steps
        self.grad_window = config.grad_window or max(1, math.ceil(self.steps / 3))
        require(1 <= self.grad_window <= self.steps,
                f"--grad-window must be between 1 and --steps ({self.steps}), got {self.grad_window}")
        self.guidance_scale = config.guidance_scale if config.guidance_scale is not None else defaults.guidance_scale
        self.resolution = config.resolution or self.model.resolution
        self.prompts = prompts or gather_prompts(prompt=config.prompt, prompts_file=config.prompts,
                                                 fallback=list(defaults.train_prompts), what="training prompts")
        self.reward_name = config.reward or defaults.reward
        self.reward_model = config.reward_model or defaults.reward_model
        if config.rewards:  # a weighted sum from the config file
            self.reward_name, self.reward_model = json.dumps(config.rewards, sort_keys=True), None
            self.reward = reward or build_rewards_from_config(config.rewards, device=device, dtype=dtype)
        else:
            self.reward = reward or build_reward(self.reward_name, model=self.reward_model, device=device,
                                                 dtype=dtype)
        # 3. Trainable parameters, initialised from the null-text embedding; AdamW + cosine
        init = null_text_embedding(self.model.pipe)
        self.params = NegativeEmbeddingParameters(init, guidance_scale=self.guidance_scale,
                                                  learn_guidance_scale=config.learn_guidance_scale).to(device)
        optimizer = torch.optim.AdamW(self.params.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.lr_scheduler = get_scheduler("cosine", optimizer, num_warmup_steps=config.warmup_steps,
                                          num_training_steps=config.train_steps)
        self.params, self.optimizer = self.accelerator.prepare(self.params, optimizer)
        self.accelerator.register_for_checkpointing(self.lr_scheduler)
        self.step = 0
        if config.resume:
            self.load_checkpoint(config.resume)

    # -- one step -------------------------------------------------------------------------------
    def _micro_step(self, micro: int) -> tuple[torch.Tensor, int]:
        """Forward and backward of one micro-batch; returns its rewards and the step index k of x_t."""
        pipe, size = self.model.pipe, self.config.micro_batch_size or self.config.batch_size
        generator = _step_generator(self.config.seed, self.step, micro)
        chosen = torch.randint(len(self.prompts), (size,), generator=generator).tolist()
        prompts = [self.prompts[i].text for i in chosen]
        grad_from = int(torch.randint(self.steps - self.grad_window, self.steps, (1,), generator=generator))
        latents = initial_latents(size, unet=pipe.unet, scheduler=pipe.scheduler, vae_scale_factor=pipe.vae_scale_factor,
                                  height=self.resolution, width=self.resolution, generator=generator,
                                  device=self.accelerator.device, dtype=pipe.unet.dtype)
        negative_embeds, guidance_scale = self.params(size)
        denoiser = CFGDenoiser(pipe.unet, encode_prompts(pipe, prompts), negative_embeds, guidance_scale)
        x0_pred = sample(denoiser, pipe.scheduler, latents, num_inference_steps=self.steps, grad_from=grad_from)
        rewards = self.reward(decode(pipe.vae, x0_pred), prompts)
        self.accelerator.backward(-rewards.float().mean())
        return rewards.detach(), grad_from

    def train_step(self) -> StepRecord:
        """One optimizer step over ``batch_size`` prompts (gradient accumulation over micro-batches)."""
        start = time.perf_counter()
        rewards, windows = [], []
        for micro in range(self.config.accumulation_steps):
            with self.accelerator.accumulate(self.params):
                micro_rewards, grad_from = self._micro_step(micro)
                self.optimizer.step()
                self.optimizer.zero_grad()
            rewards.append(micro_rewards)
            windows.append(grad_from)
        self.lr_scheduler.step()
        self.step += 1
        reward = self.accelerator.gather(torch.cat(rewards)).float().mean().item()
        return StepRecord(step=self.step, loss=-reward, reward=reward, lr=self.lr_scheduler.get_last_lr()[0],
                          guidance_scale=float(torch.as_tensor(self._unwrapped()(1)[1]).detach()), grad_from=windows[-1],
                          seconds=time.perf_counter() - start)

    def run(self) -> Iterator[StepRecord]:
        """Train until ``train_steps``, yielding a :class:`StepRecord` after each optimizer step."""
        while self.step < self.config.train_steps:
            yield self.train_step()

    # -- outputs --------------------------------------------------------------------------------
    def _unwrapped(self) -> NegativeEmbeddingParameters:
        return self.accelerator.unwrap_model(self.params)

    def embedding(self) -> NegativeEmbedding:
        """The learned embedding (L, D) with the contract's metadata."""
        params, c = self._unwrapped(), self.config
        metadata = {
            "text_encoder_fingerprint": text_encoder_fingerprint(self.model.pipe.text_encoder),
            "base_model": self.model.name, "reward": self.reward_name, "reward_model": self.reward_model or "",
            "steps": str(self.steps), "grad_window": str(self.grad_window), "train_steps": str(self.step),
            "guidance_scale": str(float(torch.as_tensor(params(1)[1]).detach())), "learn_guidance_scale": str(c.learn_guidance_scale).lower(),
            "lr": str(c.lr), "batch_size": str(c.batch_size), "resolution": str(self.resolution),
            "seed": str(c.seed), "num_prompts": str(len(self.prompts)), "reneg_version": __version__,
        }
        return NegativeEmbedding(params.negative_embedding.detach().squeeze(0).float().cpu(), metadata)

    def save_checkpoint(self, directory: str | Path | None = None) -> Path:
        """Save a resumable checkpoint (parameters, optimizer, schedule, step) atomically."""
        directory = Path(directory or self.config.checkpoint_dir)
        staging = directory.with_name(directory.name + ".tmp")
        shutil.rmtree(staging, ignore_errors=True)
        self.accelerator.save_state(str(staging))
        (staging / "trainer_state.json").write_text(json.dumps({"step": self.step, "config": asdict(self.config)}))
        shutil.rmtree(directory, ignore_errors=True)
        os.replace(staging, directory)
        return directory

    def load_checkpoint(self, directory: str | Path) -> None:
        state_file = Path(directory) / "trainer_state.json"
        if not state_file.is_file():
            raise ReNegError(f"'{directory}' is not a reneg checkpoint (no trainer_state.json): "
                             "pass the .checkpoint directory that `reneg train` wrote")
        self.accelerator.load_state(str(directory))
        self.step = json.loads(state_file.read_text())["step"]


Listener = Callable[[Trainer, StepRecord], None]


def train(config: TrainConfig, *, listeners: tuple[Listener, ...] = (), **overrides) -> NegativeEmbedding:
    """Run global ReNeg training, call each listener after every step, save ``config.out``; return the embedding."""
    trainer = Trainer(config, **overrides)
    for record in trainer.run():
        for listener in listeners:
            listener(trainer, record)
        if config.checkpoint_every and record.step % config.checkpoint_every == 0:
            trainer.save_checkpoint()
    embedding = trainer.embedding()
    if trainer.accelerator.is_main_process:
        embedding.save(config.out)
        trainer.save_checkpoint()
    return embedding
