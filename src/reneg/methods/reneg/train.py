"""Global ReNeg training (ReNeg Sec. 4.2): the loop, on ``accelerate`` (one process or many).

One optimizer step: the global batch (``--batch-size`` prompts) is split over
processes and micro-batches; each slice draws its prompts, x_T and t from
(seed, step, its index in the global batch) and runs the objective
(:func:`reneg.methods.reneg.objective.reneg_objective`: DDIM + CFG to x_t without gradient,
x0_pred (Eq. 6) and the decoder with gradient, loss = -mean reward, Eq. 7);
the gradient of the negative embedding is all-reduced over processes; AdamW
with a cosine schedule updates n (and, if asked, the guidance scale) and
nothing else. Global batch = per-process batch x processes, per-process batch
= micro-batch x accumulation steps, so N processes give the embedding one
process gives with the same global batch.

Listeners (progress, logs, checkpoints) run on the main process after every
step. Checkpoints hold only safetensors and JSON (:mod:`reneg.methods.checkpoints`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shutil
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import torch
from torch import nn

from ... import __version__
from ...config import (
    BATCH_SIZE,
    GRAD_WINDOW,
    GUIDANCE_SCALE,
    LOG_EVERY,
    LR,
    PRECISION,
    PROMPT,
    PROMPTS,
    STEPS,
    TRAIN_STEPS,
    ConditionSettings,
    GuidanceSettings,
    PromptSettings,
    RewardSettings,
    TrainingSettings,
    arg,
    builtin_command,
    check_output_path,
    require,
)
from ...core.family import unmasked
from ...core.nag import NAG_DEFAULT_SCALE, guidance_rule, rule_metadata
from ...embedding import NegativeEmbedding
from ...errors import ReNegError
from ...families import TextConditioning
from ...models.device import dtype_of
from ...models.loading import LoadedModel, load_model
from ...prompts import Prompt, gather_prompts
from ...rewards import Reward, build_reward, build_rewards_from_config
from .. import checkpoints
from ..loop import Listener, LoopSettings, Processes, StepRecord, log_listeners, run_loop
from ..randomness import RolloutSettings, draw_batch
from ..validation import full_sample_rewards
from .objective import reneg_objective


@dataclass
class TrainConfig(PromptSettings, RewardSettings, ConditionSettings, GuidanceSettings, LoopSettings,
                  TrainingSettings):
    """Settings of ``reneg train``; None means the model's default."""

    prompt: list[str] = PROMPT(help="a training prompt (repeatable)")
    prompts: str | None = PROMPTS(help="training prompts file (.txt one a line, .json, .tsv)")
    rewards: dict | None = arg(None, "config file only: a [rewards] table of weighted rewards, e.g. "
                                     '{"hpsv2.1" = 1.0, pickscore = {weight = 0.5, model = "PATH"}}', cli=False)
    out: str = arg("negative.safetensors", "where to write the learned embedding", metavar="FILE",
                   output="file")
    train_steps: int = TRAIN_STEPS(120, "optimizer steps (paper: 4000; the default suits the shapes world on a CPU)")
    batch_size: int = BATCH_SIZE(8, "prompts per optimizer step (paper: 64)")
    lr: float = LR(1e-2, "AdamW learning rate (paper: 5e-3)")
    weight_decay: float = arg(0.0, "AdamW weight decay", min=0)
    warmup_steps: int = arg(0, "linear warm-up steps before the cosine decay", min=0)
    steps: int | None = STEPS(help="DDIM sampling steps T (paper: 30)")
    grad_window: int | None = GRAD_WINDOW(help="t is drawn from the last K of the sampling steps (paper: 10 of 30; "
                                               "default: a third of --steps)")
    guidance_scale: float | None = GUIDANCE_SCALE(help="CFG scale gamma (paper: 7.5); with --guidance nag, NAG's "
                                                       "scale s (default 5, the reference's examples)")
    learn_guidance_scale: bool = arg(False, "also learn the guidance scale (ReNeg Sec. 4.2; off in the paper)")
    objective: str = arg("one-step", "one-step: x_T -> x_t without gradient, then x0_pred with gradient (ReNeg "
                                     "Sec. 4.2); full-chain: the reward of the fully sampled image, the gradient "
                                     "through every step (few-step models; memory grows with --steps)",
                         choices=["one-step", "full-chain"])
    precision: str = PRECISION(help="dtype of the frozen models; the embedding stays fp32")
    gradient_checkpointing: bool = arg(False, "recompute the UNet's/transformer's and the VAE's activations in the "
                                              "backward pass and decode one sample at a time: less memory, more "
                                              "time (SDXL, SD3 at 1024 px)")
    checkpoint_every: int = arg(0, "save a resumable checkpoint every N steps (0: only at the end)", metavar="N",
                                min=0)
    resume: str | None = arg(None, "resume from this checkpoint directory", metavar="DIR")
    max_nonfinite_steps: int = arg(5, "stop after this many non-finite steps in a row (each is skipped with a "
                                      "warning; the last good checkpoint is kept)", metavar="K", min=1)
    log_every: int = LOG_EVERY()

    def __post_init__(self):
        super().__post_init__()
        self.check_batch()
        require(self.out.endswith(".safetensors"), f"--out must end in .safetensors, got '{self.out}'")
        require(not (self.rewards and (self.reward or self.reward_model)),
                "give either a [rewards] table or --reward/--reward-model, not both")

    @property
    def checkpoint_dir(self) -> Path:
        return Path(self.out).with_suffix(".checkpoint")


class NegativeEmbeddingParameters(nn.Module):
    """The only trainable parameters: the negative embedding n (1, L, D) fp32, its pooled part (1, P) where the
    family has one (SDXL, SD3: the whole negative conditioning is learned), and optionally gamma."""

    def __init__(self, init: torch.Tensor, *, guidance_scale: float, learn_guidance_scale: bool,
                 pooled: torch.Tensor | None = None):
        super().__init__()
        self.negative_embedding = nn.Parameter(init.detach().float().clone().unsqueeze(0))
        self.negative_pooled_embedding = (None if pooled is None
                                          else nn.Parameter(pooled.detach().float().clone().unsqueeze(0)))
        self.guidance_scale = nn.Parameter(torch.tensor(float(guidance_scale))) if learn_guidance_scale else None
        self._fixed_guidance_scale = float(guidance_scale)

    def scale(self) -> float | torch.Tensor:
        return self.guidance_scale if self.guidance_scale is not None else self._fixed_guidance_scale

    def negative(self) -> TextConditioning:
        """The negative branch's conditioning: n (and its pooled part), one row (the rollout expands it)."""
        return TextConditioning(self.negative_embedding, self.negative_pooled_embedding)


#: Settings a resumed run must share with the checkpoint (they decide the result); the others
#: (--micro-batch-size, the number of processes, --device, logging, --out) may change.
RECIPE_KEYS = ("model", "text_encoder", "reward", "reward_model", "prompts", "train_steps", "batch_size", "lr",
               "weight_decay", "warmup_steps", "steps", "grad_window", "guidance_scale", "learn_guidance_scale",
               "resolution", "seed", "precision", "guidance", "objective")

_FLAGS = {"text_encoder": "--model (its text encoder)", "prompts": "--prompt/--prompts", "reward": "--reward"}


def _prompts_identity(prompts: list[Prompt]) -> str:
    return "sha256:" + hashlib.sha256("\n".join(p.text for p in prompts).encode()).hexdigest()[:16]


class Trainer:
    """Holds the frozen pipeline, the reward, the trainable parameters and the optimizer; ``run`` yields steps."""

    def __init__(self, config: TrainConfig, *, model: LoadedModel | None = None, reward: Reward | None = None,
                 prompts: list[Prompt] | None = None):
        from diffusers.optimization import get_scheduler

        self.config = config
        # 1. Processes and the device: one process honours --device (cuda:N too); several take their local rank's
        self.processes = Processes(config.device, batch_size=config.batch_size,
                                   micro_batch_size=config.micro_batch_size)
        self.accelerator, self.device = self.processes.accelerator, self.processes.device
        self.micro_batch_size = self.processes.micro_batch_size
        self.accumulation_steps = self.processes.accumulation_steps
        dtype = dtype_of(config.precision)
        # 2. Model, its defaults, prompts and reward
        self.model = model or load_model(config.model, device=self.device, dtype=dtype)
        self.model.family.condition_on(control_image=config.control_image, num_frames=config.num_frames)
        self.family = self.model.family
        if config.gradient_checkpointing:
            self.family.enable_gradient_checkpointing()
        defaults = self.model.defaults
        self.rule = guidance_rule(self.family, **config.rule_settings())
        if config.guidance == "nag" and config.guidance_scale is None:
            config = dataclasses.replace(config, guidance_scale=NAG_DEFAULT_SCALE)
            self.config = config
        rollout = RolloutSettings.of(config, self.model)
        self.steps, self.grad_window = rollout.steps, rollout.grad_window
        self.guidance_scale, self.resolution = rollout.guidance_scale, rollout.resolution
        self.prompts = prompts or gather_prompts(prompt=config.prompt, prompts_file=config.prompts,
                                                 fallback=list(defaults.train_prompts), what="training prompts")
        self.prompt_texts = [p.text for p in self.prompts]
        self.family.warn_if_truncated(self.prompt_texts)
        self.reward_name = config.reward or defaults.reward
        self.reward_model = config.reward_model or defaults.reward_model
        if config.rewards:  # a weighted sum from the config file
            self.reward_name, self.reward_model = json.dumps(config.rewards, sort_keys=True), None
            self.reward = reward or build_rewards_from_config(config.rewards, device=self.device, dtype=dtype)
        else:
            self.reward = reward or build_reward(self.reward_name, model=self.reward_model, device=self.device,
                                                 dtype=dtype)
        # 3. Trainable parameters from the null text; AdamW + cosine; fp16 trains with loss scaling
        init = unmasked(self.family.null_text())  # a file stores no mask: PixArt's "" as all-attended tokens
        self.params = NegativeEmbeddingParameters(init.embeds[0], guidance_scale=self.guidance_scale,
                                                  learn_guidance_scale=config.learn_guidance_scale,
                                                  pooled=None if init.pooled is None else init.pooled[0]
                                                  ).to(self.device)
        self.optimizer = torch.optim.AdamW(self.params.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.lr_scheduler = get_scheduler("cosine", self.optimizer, num_warmup_steps=config.warmup_steps,
                                          num_training_steps=config.train_steps)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=config.precision == "fp16")
        self.step, self.nonfinite_in_a_row = 0, 0
        self.recipe = self._recipe()
        if config.resume:
            self.load_checkpoint(config.resume)

    def _recipe(self) -> dict:
        """The resolved settings that decide the result (see :data:`RECIPE_KEYS`)."""
        c = self.config
        return {"model": self.model.name, "text_encoder": self.family.fingerprint(),
                "reward": self.reward_name, "reward_model": self.reward_model,
                "prompts": _prompts_identity(self.prompts), "train_steps": c.train_steps, "batch_size": c.batch_size,
                "lr": c.lr, "weight_decay": c.weight_decay, "warmup_steps": c.warmup_steps, "steps": self.steps,
                "grad_window": self.grad_window, "guidance_scale": self.guidance_scale,
                "learn_guidance_scale": c.learn_guidance_scale, "resolution": self.resolution, "seed": c.seed,
                "precision": c.precision,
                # None for CFG: checkpoints from before --guidance resume as CFG runs
                "guidance": None if self.rule.name == "cfg" else rule_metadata(self.rule),
                "objective": None if c.objective == "one-step" else c.objective}

    # -- one step -------------------------------------------------------------------------------
    def _micro_step(self, micro: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Forward and backward of one micro-batch; returns its loss, rewards and the step index k of x_t."""
        batch = draw_batch(self.family, self.prompt_texts, seed=self.config.seed, step=self.step,
                           indices=self.processes.slice(micro), resolution=self.resolution, steps=self.steps,
                           grad_window=self.grad_window)
        loss, rewards = reneg_objective(self.family, self.reward, batch, self.params.negative(),
                                        guidance_scale=self.params.scale(), steps=self.steps,
                                        resolution=self.resolution, rule=self.rule,
                                        full_chain=self.config.objective == "full-chain")
        if torch.isfinite(loss):
            self.scaler.scale(loss / self.accumulation_steps).backward()
        return loss.detach(), rewards, batch.grad_from

    def train_step(self) -> StepRecord:
        """One optimizer step over the global batch (all processes, all micro-batches)."""
        start = time.perf_counter()
        losses, rewards = [], []
        for micro in range(self.accumulation_steps):
            loss, micro_rewards, grad_from = self._micro_step(micro)
            losses.append(loss)
            rewards.append(micro_rewards)
        self.processes.all_reduce(self.params.parameters())
        loss = self.accelerator.reduce(torch.stack(losses).float().mean().to(self.device), reduction="mean")
        finite_loss = bool(torch.isfinite(loss))
        finite_grads = all(p.grad is None or bool(torch.isfinite(p.grad).all()) for p in self.params.parameters())
        lr = self.lr_scheduler.get_last_lr()[0]  # the rate this step uses (the schedule moves on below)
        if finite_loss and (finite_grads or self.scaler.is_enabled()):
            self.scaler.step(self.optimizer)  # with fp16 the scaler itself skips non-finite (scaled) gradients
            self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        with warnings.catch_warnings():  # a skipped step skips optimizer.step(); the schedule moves on regardless
            warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler.step()`"))
            self.lr_scheduler.step()
        self.step += 1
        skipped = not bool(torch.isfinite(loss))
        self._count_nonfinite(skipped)
        reward = self.accelerator.gather(torch.cat(rewards).to(self.device)).float().mean().item()
        return StepRecord(step=self.step, loss=loss.item(), reward=reward, lr=lr,
                          guidance_scale=float(torch.as_tensor(self.params.scale()).detach()), grad_from=grad_from,
                          seconds=time.perf_counter() - start, skipped=skipped)

    def _count_nonfinite(self, skipped: bool) -> None:
        """Warn about a skipped step; stop after ``max_nonfinite_steps`` in a row (the last checkpoint is kept)."""
        if not skipped:
            self.nonfinite_in_a_row = 0
            return
        self.nonfinite_in_a_row += 1
        limit = self.config.max_nonfinite_steps
        if self.nonfinite_in_a_row >= limit:
            raise ReNegError(f"the loss was not finite in {limit} steps in a row (up to step {self.step}): training "
                             f"stopped; the last good checkpoint is in {self.config.checkpoint_dir} (try a lower --lr "
                             "or --precision bf16/fp32)")
        if self.accelerator.is_main_process:
            warnings.warn(f"step {self.step}: the loss is not finite; the step was skipped "
                          f"({self.nonfinite_in_a_row} of at most {limit} in a row)", RuntimeWarning, stacklevel=2)

    def run(self) -> Iterator[StepRecord]:
        """Train until ``train_steps``, yielding a :class:`StepRecord` after each optimizer step."""
        while self.step < self.config.train_steps:
            yield self.train_step()

    def validation_reward(self, prompts: list[str], latents: torch.Tensor, *, initial: bool = False) -> float:
        """Mean reward of fully sampled images with the current embedding (``initial``: the null text, step 0)."""
        negative = self.family.null_text() if initial else self.params.negative()
        return full_sample_rewards(self.family, self.reward, negative, prompts, latents,
                                   guidance_scale=float(torch.as_tensor(self.params.scale())), steps=self.steps,
                                   resolution=self.resolution, batch_size=self.micro_batch_size,
                                   rule=self.rule).mean().item()

    # -- outputs --------------------------------------------------------------------------------
    def embedding(self) -> NegativeEmbedding:
        """The learned embedding (L, D) with the contract's metadata."""
        params, c = self.params, self.config
        metadata = {
            "text_encoder_fingerprint": self.recipe["text_encoder"],
            "base_model": self.model.name, "family": self.family.name, "reward": self.reward_name,
            "reward_model": self.reward_model or "",
            "steps": str(self.steps), "grad_window": str(self.grad_window), "train_steps": str(self.step),
            "guidance_scale": str(float(torch.as_tensor(params.scale()).detach())),
            "learn_guidance_scale": str(c.learn_guidance_scale).lower(),
            "lr": str(c.lr), "batch_size": str(c.batch_size), "resolution": str(self.resolution),
            "seed": str(c.seed), "num_prompts": str(len(self.prompts)), "precision": c.precision,
            "reneg_version": __version__, **rule_metadata(self.rule), "objective": c.objective,
        }
        pooled = params.negative_pooled_embedding
        return NegativeEmbedding(params.negative_embedding.detach().squeeze(0).float().cpu(), metadata,
                                 None if pooled is None else pooled.detach().squeeze(0).float().cpu())

    def save_checkpoint(self, directory: str | Path | None = None) -> Path:
        """Save a resumable checkpoint (main process; the others wait until it is whole)."""
        directory = Path(directory or self.config.checkpoint_dir)
        if self.accelerator.is_main_process:
            tensors = {name: p.detach() for name, p in self.params.named_parameters()}
            checkpoints.save(directory, step=self.step, parameters=tensors, optimizer=self.optimizer, extra={
                "recipe": self.recipe, "lr_scheduler": self.lr_scheduler.state_dict(),
                "scaler": self.scaler.state_dict(), "nonfinite_in_a_row": self.nonfinite_in_a_row,
                "config": asdict(self.config), "reneg_version": __version__})
        self.accelerator.wait_for_everyone()
        return directory

    def load_checkpoint(self, directory: str | Path) -> None:
        """Restore a checkpoint after checking that it was made with this run's recipe (one line if not)."""
        state, tensors, optimizer_tensors = checkpoints.load(directory)
        checkpoints.check_recipe(directory, state.get("recipe") or {},
                                 {key: self.recipe[key] for key in RECIPE_KEYS}, _FLAGS)
        checkpoints.restore_parameters(directory, tensors, dict(self.params.named_parameters()))
        try:
            checkpoints.restore_optimizer(self.optimizer, state["param_groups"], optimizer_tensors,
                                          source=str(directory))
            self.lr_scheduler.load_state_dict(state["lr_scheduler"])
            self.scaler.load_state_dict(state["scaler"]) if state.get("scaler") else None
        except (KeyError, TypeError, ValueError) as error:
            raise ReNegError(f"checkpoint '{directory}' is corrupt ({type(error).__name__}: {error}): start a fresh "
                             "run") from None
        self.step = state["step"]
        self.nonfinite_in_a_row = int(state.get("nonfinite_in_a_row", 0))


def check_output(out: str | Path) -> None:
    """Refuse, before anything runs, an ``--out`` that cannot be written (a directory, an unwritable or full place)."""
    out = Path(out)
    check_output_path(str(out), kind="file", name="--out")
    checkpoint_dir = out.with_suffix(".checkpoint")
    if checkpoint_dir.exists() and not checkpoint_dir.is_dir():
        raise ReNegError(f"'{checkpoint_dir}' exists and is not a directory: move it or pick another --out")
    existing = out.absolute().parent
    while not existing.exists():
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    if free < 16 * 2**20:
        raise ReNegError(f"--out '{out}': only {free // 2**20} MiB free on that disk (the embedding, its checkpoint "
                         "and logs need more): free some space or pick another --out")


def train(config: TrainConfig, *, listeners: tuple[Listener, ...] = (), **overrides) -> NegativeEmbedding | None:
    """Run global ReNeg training, call each listener after every step; save the checkpoint, then ``config.out``.

    Returns the embedding on the main process, None on the others (under ``accelerate launch``).
    """
    check_output(config.out)
    trainer = Trainer(config, **overrides)
    main = trainer.processes.is_main
    run_loop(trainer, listeners, checkpoint_every=config.checkpoint_every)
    embedding = trainer.embedding()
    if main:
        embedding.save(config.out)
    trainer.accelerator.wait_for_everyone()
    return embedding if main else None


def _run(config: TrainConfig) -> str | None:
    """``reneg train``: the main process prints where the embedding went."""
    return config.out if train(config, listeners=log_listeners(config)) is not None else None


COMMAND = builtin_command("train", TrainConfig, _run)
