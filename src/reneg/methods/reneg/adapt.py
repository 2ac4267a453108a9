"""Per-sample negative embeddings (ReNeg Sec. 4.3, Algorithm 1), batched over prompts, never worse than global.

Algorithm 1 starts from the global embedding n, takes up to N gradient steps of
the ReNeg objective (Eq. 7) on one prompt and stops after P steps without a
better reward. As printed it draws fresh noise every step and returns the last
n, so "better than global" is not guaranteed. Here every candidate is measured
on the same **selection draws**, so candidates compare like for like:

- draw j (j < K = ``selection_draws``) of prompt c: x_T from a CPU generator seeded by
  ``mixed_seed(seed, 1, prompt_key(c), j)`` (drawn as ``family.initial_latents``, i.e. as diffusers), and
  the step index k_j of x_t (t = the k_j-th DDIM timestep) from ``mixed_seed(seed, 0, j)``, uniform over the
  last ``grad_window`` of the ``steps`` sampling steps (as in training), the same for every prompt;
- ``prompt_key(c)`` is the first 63 bits of sha256 of the prompt's text, so a prompt's draws (and so its
  embedding) do not depend on its position in a file or a batch;
- the **selection reward** J(c, n) is the mean over the K draws of the reward of the one-step prediction
  x0_pred at t_j (Eq. 6), decoded. That is the quantity the gradient climbs, and one pass gives both the
  score of the current n and its gradient (N + 1 passes in all); fully sampled images would cost a full
  rollout per candidate and draw, and the held-out evaluation (``reneg eval``) measures final images anyway.

Step 0 scores the global start; step i scores the embedding after i AdamW steps. The best seen is kept
(strictly better only), so the result is the global embedding unless a step beat it on the selection draws.
P scores in a row without improvement stop a prompt. Deterministic for a seed.

Batched: B prompts share one ``(B, L, D)`` parameter, one row per prompt, and one AdamW (per-element state,
and the loss is a *sum* over prompts of each prompt's mean over its draws, so a prompt's gradient and steps do
not depend on the other prompts). A stopped prompt leaves the rollout and its row is restored after each
optimizer step. Each pass is one batched rollout per distinct t_j over all live prompts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ... import __version__
from ...config import (
    BATCH_SIZE,
    GRAD_WINDOW,
    GUIDANCE_SCALE,
    LR,
    PRECISION,
    PROMPTS,
    REWARD,
    TRAINING_SEED,
    RewardSettings,
    TrainingSettings,
    arg,
    builtin_command,
    check_output_path,
    require,
)
from ...core.guidance import Rule
from ...core.nag import learned_scale, rule_from_metadata, rule_metadata
from ...embedding import NegativeEmbedding
from ...errors import ReNegError, why_not_a_file
from ...families import Family, TextConditioning
from ...identity import file_identity
from ...io import atomic_path, write_json
from ...models.device import dtype_of, resolve_device
from ...models.loading import LoadedModel, load_model
from ...prompts import gather_prompts
from ...rewards import Reward, build_reward, build_rewards_from_config
from ..randomness import Batch, mixed_seed
from .objective import reneg_objective
from .train import TrainConfig

logger = logging.getLogger(__name__)

#: (pass index, indices of the live prompts, their selection rewards) -> the rewards to use (tests script them).
ScoreHook = Callable[[int, list[int], torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class AdaptSettings:
    """The resolved recipe of an adaptation (everything that decides the embeddings besides the start and reward).

    Args:
        steps: DDIM sampling steps T of the rollout.
        guidance_scale: CFG scale gamma (Eq. 5), the one the embedding will be used at.
        resolution: image size in pixels.
        grad_window: t is drawn from the last ``grad_window`` of the ``steps``.
        lr, weight_decay: AdamW's.
        adapt_steps: N of Algorithm 1 (paper: 10).
        patience: P of Algorithm 1 (paper: 3).
        selection_draws: K, the fixed noise draws per prompt.
        seed: seed of the selection draws.
    """

    steps: int
    guidance_scale: float
    resolution: int
    grad_window: int
    lr: float
    weight_decay: float = 0.0
    adapt_steps: int = 10
    patience: int = 3
    selection_draws: int = 4
    seed: int = 0
    #: the guidance rule of the start file when it is not CFG: its metadata items (NAG's ``guidance``, ``nag_*``)
    guidance: tuple[tuple[str, str], ...] = ()

    def __post_init__(self):
        if not 1 <= self.grad_window <= self.steps:
            raise ValueError(f"grad_window must be in [1, steps={self.steps}], got {self.grad_window}")
        if self.patience < 1 or self.selection_draws < 1 or self.adapt_steps < 0:
            raise ValueError("patience and selection_draws must be >= 1 and adapt_steps >= 0")

    def rule(self, family: Family) -> Rule:
        """The guidance rule adaptation runs (and the adapted embeddings are applied) with: the start file's."""
        return rule_from_metadata(family, dict(self.guidance))

    def identity(self) -> str:
        """A short hash of the settings: adapted files are reused only while it is unchanged."""
        settings = {k: v for k, v in self.__dict__.items() if not (k == "guidance" and not v)}  # CFG: as before
        text = json.dumps(settings, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class Adapted:
    """One prompt's result.

    Args:
        prompt: the prompt c.
        embedding: the per-sample negative embedding (L, D), fp32 on the CPU.
        rewards: the selection reward J after each step taken (index 0: the global start).
        best_step: the step whose embedding was kept (0: the global start).
        stopped_early: patience ran out before ``adapt_steps``.
        pooled: the pooled part (P,) of the start, written beside the embedding (SDXL, SD3); not adapted.
    """

    prompt: str
    embedding: torch.Tensor
    rewards: list[float] = field(default_factory=list)
    best_step: int = 0
    stopped_early: bool = False
    pooled: torch.Tensor | None = None  # the start's pooled part (SDXL, SD3), kept as it is

    @property
    def steps_taken(self) -> int:
        return len(self.rewards) - 1

    @property
    def reward_global(self) -> float:
        return self.rewards[0]

    @property
    def reward_best(self) -> float:
        return self.rewards[self.best_step]

    def summary(self) -> str:
        """One log line: the reward path and where it stopped."""
        path = " ".join(f"{r:.4f}" for r in self.rewards)
        end = f"stopped early after step {self.steps_taken}" if self.stopped_early else \
            f"ran all {self.steps_taken} steps"
        kept = "kept the global start" if self.best_step == 0 else f"kept step {self.best_step}"
        return f"'{self.prompt}': selection reward {path}; {end}, {kept} ({self.reward_global:.4f} -> " \
               f"{self.reward_best:.4f})"


def prompt_key(prompt: str) -> int:
    """A prompt's key in the seeds of its selection draws: the first 63 bits of sha256 of its text."""
    return int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:8], "big") & (2**63 - 1)


def selection_draws(family: Family, prompts: list[str], settings: AdaptSettings
                    ) -> tuple[torch.Tensor, list[int]]:
    """x_T of every (draw j, prompt b), shape (K, B, C, h, w), and each draw's step index k_j (module docstring)."""
    s = settings
    latents = torch.stack([torch.cat([family.initial_latents(
        1, resolution=s.resolution, generator=torch.Generator().manual_seed(mixed_seed(s.seed, 1, prompt_key(p), j)))
        for p in prompts]) for j in range(s.selection_draws)])
    grad_from = [int(torch.randint(s.steps - s.grad_window, s.steps, (1,),
                                   generator=torch.Generator().manual_seed(mixed_seed(s.seed, 0, j))))
                 for j in range(s.selection_draws)]
    return latents, grad_from


def _selection_pass(family: Family, reward: Reward, prompts: list[str], negative: torch.Tensor, rows_of: torch.Tensor,
                    pooled: torch.Tensor | None, latents: torch.Tensor, grad_from: list[int],
                    settings: AdaptSettings, *, backward: bool) -> torch.Tensor:
    """Selection rewards (B,) of the rows ``rows_of`` of ``negative``; with ``backward``, accumulate the gradient of
    ``sum_b mean_j -R(c_b, x0_pred_bj)`` (a sum over prompts: each row's gradient is its own prompt's)."""
    draws = len(grad_from)
    rewards = torch.zeros(draws, len(prompts))
    for k in sorted(set(grad_from)):  # one batched rollout per distinct t: the draws that share it, all prompts
        chosen = [j for j in range(draws) if grad_from[j] == k]
        rows = len(chosen) * len(prompts)
        batch = Batch(prompts * len(chosen), latents[chosen].flatten(0, 1), k)
        with torch.set_grad_enabled(backward):  # also under callers' no_grad (generation)
            conditioning = TextConditioning(negative[rows_of].repeat(len(chosen), 1, 1).to(family.dtype),
                                            None if pooled is None else pooled.expand(rows, -1))
            loss, batch_rewards = reneg_objective(family, reward, batch, conditioning,
                                                  guidance_scale=settings.guidance_scale, steps=settings.steps,
                                                  resolution=settings.resolution, rule=settings.rule(family))
            if backward and torch.isfinite(loss):
                (loss * rows / draws).backward()  # -mean over the rows -> -sum_b (1/K) sum_j R
        rewards[chosen] = batch_rewards.float().cpu().view(len(chosen), len(prompts))
    return rewards.mean(0)


def adapt_negatives(family: Family, reward: Reward, prompts: list[str], start: TextConditioning,
                    settings: AdaptSettings, *, score_hook: ScoreHook | None = None) -> list[Adapted]:
    """Per-sample negative embeddings of ``prompts`` from the one-row ``start`` (ReNeg Algorithm 1, batched).

    Args:
        family: the loaded pipeline's family (frozen).
        reward: the reward R (differentiable), one score per image.
        prompts: the prompts c, adapted together (one row each, independent of one another).
        start: the global negative embedding n (one row; the null text when there is none).
        settings: see :class:`AdaptSettings`.
        score_hook: replaces the measured selection rewards (tests script early stopping with it).

    Returns:
        One :class:`Adapted` per prompt, in order.
    """
    # 1. One row per prompt, one AdamW over them; the selection draws, fixed for the whole run
    count, s = len(prompts), settings
    negative = nn.Parameter(start.embeds[:1].detach().float().to(family.device).repeat(count, 1, 1))
    pooled = None if start.pooled is None else start.pooled[:1].detach().to(family.device, family.dtype)
    optimizer = torch.optim.AdamW([negative], lr=s.lr, weight_decay=s.weight_decay)
    latents, grad_from = selection_draws(family, prompts, s)
    best = negative.detach().clone()
    best_score = torch.full((count,), -math.inf)
    best_step, patience = [0] * count, [0] * count
    live = torch.ones(count, dtype=torch.bool)
    history: list[list[float]] = [[] for _ in prompts]
    for step in range(s.adapt_steps + 1):
        # 2. Score the live rows on their draws (and take the gradient unless this is the last pass)
        index = live.nonzero().flatten()
        backward = step < s.adapt_steps
        scores = _selection_pass(family, reward, [prompts[i] for i in index], negative,
                                 index.to(family.device), pooled, latents[:, index], grad_from, s, backward=backward)
        if score_hook is not None:
            scores = torch.as_tensor(score_hook(step, index.tolist(), scores), dtype=torch.float32)
        # 3. Keep the best seen (strictly better); P passes in a row without improvement stop a prompt
        for row, i in enumerate(index.tolist()):
            score = float(scores[row])
            history[i].append(score)
            if score > best_score[i]:  # NaN never wins
                best_score[i], best_step[i], patience[i] = score, step, 0
                best[i] = negative.detach()[i]
            else:
                patience[i] += 1
                live[i] = patience[i] < s.patience
        if not backward or not live.any():
            break
        # 4. AdamW on the live rows; stopped rows are put back as they were (momentum would move them)
        frozen = (~live).nonzero().flatten().to(family.device)
        kept = negative.detach()[frozen].clone()
        if negative.grad is not None:
            negative.grad.nan_to_num_(0.0)
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            negative[frozen] = kept
    kept_pooled = None if pooled is None else pooled[0].float().cpu()
    return [Adapted(prompt, best[i].float().cpu(), history[i], best_step[i],
                    stopped_early=len(history[i]) - 1 < s.adapt_steps, pooled=kept_pooled)
            for i, prompt in enumerate(prompts)]


def adapt_in_batches(family: Family, reward: Reward, prompts: list[str], start: TextConditioning,
                     settings: AdaptSettings, *, batch_size: int,
                     on_batch: Callable[[list[Adapted]], None] | None = None) -> list[Adapted]:
    """:func:`adapt_negatives` over ``prompts`` in batches of ``batch_size`` (each batch one batched run)."""
    results: list[Adapted] = []
    for begin in range(0, len(prompts), batch_size):
        adapted = adapt_negatives(family, reward, prompts[begin:begin + batch_size], start, settings)
        if on_batch is not None:
            on_batch(adapted)
        results += adapted
    return results


# ---------------------------------------------------------------- what a run starts from: file, settings, reward


def load_start(model: LoadedModel, path: str | None) -> tuple[TextConditioning, dict[str, str]]:
    """The global start n (one row) and its file's metadata; the null text (and no metadata) without a file."""
    if path is None:
        return model.family.null_text(), {}
    embedding = NegativeEmbedding.load(path).for_pipeline(model.pipe)
    return TextConditioning.of(embedding), dict(embedding.metadata)


def paper_recipe(model: LoadedModel, config, metadata: dict[str, str]) -> tuple[str | None, float | None]:
    """(reward, lr) to adapt with: the flags; for a start file that carries no recipe (made elsewhere, e.g. the
    authors' released files), the paper's per-sample recipe for the model (ReNeg Sec. 5.1: HPSv2.1, lr 5e-3);
    otherwise None (the file's recipe, else ``reneg train``'s defaults)."""
    if config.negative is None or metadata.get("reward"):
        return config.reward, config.lr
    return config.reward or model.defaults.adapt_reward, config.lr if config.lr is not None else model.defaults.adapt_lr


def resolve_settings(model: LoadedModel, metadata: dict[str, str], *, steps: int | None = None,
                     guidance_scale: float | None = None, resolution: int | None = None,
                     grad_window: int | None = None, lr: float | None = None, weight_decay: float | None = None,
                     adapt_steps: int = 10, patience: int = 3, selection_draws: int = 4,
                     seed: int = 0) -> AdaptSettings:
    """Flags first; then lr, weight decay and grad window from the start file's metadata (the window only where
    it fits ``steps``), else ``reneg train``'s defaults; steps, guidance scale and resolution from the model."""
    defaults = {f.name: f.default for f in fields(TrainConfig)}
    nag = metadata.get("guidance") == "nag"
    if nag and guidance_scale is None:  # NAG's s as the file was learned at, not the model's CFG scale
        guidance_scale = learned_scale(metadata)
    sampling = model.sampling(steps=steps, guidance_scale=guidance_scale, resolution=resolution)
    steps = sampling.steps
    stored_window = int(metadata.get("grad_window", 0) or 0)
    grad_window = grad_window or (stored_window if 1 <= stored_window <= steps else max(1, math.ceil(steps / 3)))
    require(1 <= grad_window <= steps, f"--grad-window must be between 1 and --steps ({steps}), got {grad_window}")
    return AdaptSettings(
        steps=steps, guidance_scale=float(sampling.guidance_scale), resolution=sampling.resolution,
        grad_window=grad_window,
        lr=float(lr if lr is not None else metadata.get("lr", defaults["lr"])),
        weight_decay=float(weight_decay if weight_decay is not None
                           else metadata.get("weight_decay", defaults["weight_decay"])),
        adapt_steps=adapt_steps, patience=patience, selection_draws=selection_draws, seed=seed,
        guidance=tuple(sorted(rule_metadata(rule_from_metadata(model.family, metadata)).items())) if nag else ())


def build_adapt_reward(model: LoadedModel, metadata: dict[str, str], *, reward: str | None = None,
                       reward_model: str | None = None, device=None,
                       dtype: torch.dtype = torch.float32) -> tuple[Reward, str, str | None]:
    """The reward to adapt to, its name and model: the flag, else the one the start file was trained with, else
    the model's default (a weighted sum stored as JSON is rebuilt from its table)."""
    name = reward or metadata.get("reward") or model.defaults.reward
    reward_model = reward_model or (metadata.get("reward_model") or None if name == metadata.get("reward")
                                    else None) or (model.defaults.reward_model if name == model.defaults.reward
                                                   else None)
    device = device or model.pipe.device
    if name.startswith("{"):
        return build_rewards_from_config(json.loads(name), device=device, dtype=dtype), name, None
    return build_reward(name, model=reward_model, device=device, dtype=dtype), name, reward_model


def adapted_embedding(adapted: Adapted, *, base: dict[str, str]) -> NegativeEmbedding:
    """The file of one prompt: ``base`` (the contract's keys and the recipe) plus what this prompt's run did."""
    return NegativeEmbedding(adapted.embedding, {
        **base, "prompt": adapted.prompt, "adapt_steps_taken": str(adapted.steps_taken),
        "adapt_best_step": str(adapted.best_step), "adapt_stopped_early": str(adapted.stopped_early).lower(),
        "selection_reward_global": repr(adapted.reward_global), "selection_reward_best": repr(adapted.reward_best),
        "selection_rewards": json.dumps(adapted.rewards)}, adapted.pooled)


def base_metadata(model: LoadedModel, settings: AdaptSettings, *, start: str | None, start_metadata: dict,
                  reward: str, reward_model: str | None, precision: str) -> dict[str, str]:
    """Metadata shared by every adapted file of a run."""
    return {
        "text_encoder_fingerprint": model.family.fingerprint(), "base_model": model.name,
        "family": model.family.name,
        "reward": reward, "reward_model": reward_model or "", "steps": str(settings.steps),
        "guidance_scale": str(settings.guidance_scale), "grad_window": str(settings.grad_window),
        "lr": str(settings.lr), "weight_decay": str(settings.weight_decay), "resolution": str(settings.resolution),
        "seed": str(settings.seed), "precision": precision, "reneg_version": __version__,
        "adapt_steps": str(settings.adapt_steps), "patience": str(settings.patience),
        "selection_draws": str(settings.selection_draws), "adapt_settings": settings.identity(),
        "adapted_from": start or "null-text",
        "adapted_from_identity": file_identity(start) if start else "null-text",
        "adapted_from_train_steps": start_metadata.get("train_steps", ""), **dict(settings.guidance),
    }


# ---------------------------------------------------------------- `reneg adapt`


@dataclass
class AdaptConfig(RewardSettings, TrainingSettings):
    """Settings of ``reneg adapt``; None means the start file's or the model's default."""

    prompt: str | None = arg(None, "the prompt to adapt to (writes --out FILE)", metavar="TEXT")
    prompts: str | None = PROMPTS(help="prompts file (.txt one a line, .json, .tsv): one embedding per prompt in "
                                       "--out DIR, with index.json")
    negative: str | None = arg(None, "the global negative embedding to start from (default: the null text)",
                               metavar="FILE")
    out: str | None = arg(None, "FILE (.safetensors) for --prompt, DIR for --prompts", metavar="FILE_OR_DIR")
    reward: str | None = REWARD(help="reward name (default: the one --negative was trained with, else the model's)")
    adapt_steps: int = arg(10, "at most N optimizer steps per prompt (N of Algorithm 1; paper: 10)", metavar="N",
                           min=0)
    patience: int = arg(3, "stop a prompt after P steps in a row without a better selection reward (paper: 3)",
                        metavar="P", min=1)
    selection_draws: int = arg(4, "fixed noise draws per prompt on which every candidate is scored (and the "
                                  "gradient taken)", metavar="K", min=1)
    lr: float | None = LR(help="AdamW learning rate (default: --negative's, else reneg train's)")
    grad_window: int | None = GRAD_WINDOW(help="t is drawn from the last K sampling steps (default: --negative's, "
                                               "else a third of --steps)")
    guidance_scale: float | None = GUIDANCE_SCALE(help="CFG scale (use the one you will generate with)")
    seed: int = TRAINING_SEED(help="seed of the selection draws")
    batch_size: int = BATCH_SIZE(8, "prompts adapted together in one batched rollout")
    precision: str = PRECISION(help="dtype of the frozen models; the embeddings stay fp32")

    def __post_init__(self):
        super().__post_init__()
        require((self.prompt is None) != (self.prompts is None), "give one of --prompt TEXT or --prompts FILE")
        require(self.prompt is None or self.prompt.strip() != "", "--prompt is empty: give the prompt")
        require(self.out is not None, "--out is required: a .safetensors FILE for --prompt, a DIR for --prompts")
        if self.prompt is not None:
            require(self.out.endswith(".safetensors"), f"--out must end in .safetensors for --prompt, got "
                                                       f"'{self.out}'")
        else:
            require(not self.out.endswith(".safetensors"), f"--out is a directory for --prompts (one file per "
                                                           f"prompt and index.json), got '{self.out}'")
        require(self.negative is None or Path(self.negative).is_file(),
                f"global negative embedding file '{self.negative}' {why_not_a_file(self.negative)}: pass the "
                ".safetensors (or .pt) "
                "file that `reneg train` wrote, or leave --negative out to start from the null text")
        if self.prompts is not None:
            require(Path(self.prompts).expanduser().is_file(), f"prompts file '{self.prompts}' does not exist: "
                                                               "pass a .txt (one prompt a line), .json or .tsv file")
        check_output_path(self.out, kind="file" if self.prompt is not None else "dir", name="--out")


def prompt_file_name(prompt: str) -> str:
    """The file of a prompt's embedding in an output directory: sha256 of its text."""
    return hashlib.sha256(prompt.encode()).hexdigest()[:16] + ".safetensors"


def adapt(config: AdaptConfig, *, model: LoadedModel | None = None) -> Path:
    """Run ``reneg adapt``; returns ``--out`` (the file, or the directory holding index.json)."""
    # 1. Inputs, all checked before anything is written
    prompts = [p.text for p in gather_prompts(prompt=[config.prompt] if config.prompt else [],
                                              prompts_file=config.prompts)]
    prompts = list(dict.fromkeys(prompts))  # a repeated prompt has one embedding
    dtype = dtype_of(config.precision)
    model = model or load_model(config.model, device=resolve_device(config.device), dtype=dtype)
    model.family.warn_if_truncated(prompts)
    start, start_metadata = load_start(model, config.negative)
    reward_flag, lr_flag = paper_recipe(model, config, start_metadata)
    settings = resolve_settings(model, start_metadata, steps=config.steps, guidance_scale=config.guidance_scale,
                                resolution=config.resolution, grad_window=config.grad_window, lr=lr_flag,
                                adapt_steps=config.adapt_steps, patience=config.patience,
                                selection_draws=config.selection_draws, seed=config.seed)
    try:
        reward, reward_name, reward_model = build_adapt_reward(model, start_metadata, reward=reward_flag,
                                                               reward_model=config.reward_model)
    except ReNegError as error:
        if reward_flag == config.reward:
            raise
        raise ReNegError(f"{config.negative} carries no recipe, and the paper's per-sample reward for this model "
                         f"({reward_flag}) is not available here ({error}): pass --reward NAME") from None
    if (reward_flag, lr_flag) != (config.reward, config.lr):
        logger.info("adapt: %s carries no recipe: the paper's per-sample recipe for this model (reward %s, lr %g)",
                    config.negative, reward_name, settings.lr)
    base = base_metadata(model, settings, start=config.negative, start_metadata=start_metadata, reward=reward_name,
                         reward_model=reward_model, precision=config.precision)
    # 2. Adapt batch by batch; each prompt's file is written (atomically) as its batch ends
    out = Path(config.out)
    single = config.prompt is not None
    index: dict[str, str] = {}
    records: list[dict] = []

    def save(adapted_batch: list[Adapted]) -> None:
        for adapted in adapted_batch:
            path = out if single else out / prompt_file_name(adapted.prompt)
            adapted_embedding(adapted, base=base).save(path)
            index[adapted.prompt] = path.name
            records.append({"prompt": adapted.prompt, "file": path.name, "rewards": adapted.rewards,
                            "best_step": adapted.best_step, "steps_taken": adapted.steps_taken,
                            "stopped_early": adapted.stopped_early})
            logger.info("adapt %s", adapted.summary())

    adapt_in_batches(model.family, reward, prompts, start, settings, batch_size=config.batch_size, on_batch=save)
    # 3. The log, and for a prompts file the index last: it lists only files that are whole
    log_path = out.with_suffix(".adapt.log.jsonl") if single else out / "adapt.log.jsonl"
    with atomic_path(log_path) as tmp:
        tmp.write_text("".join(json.dumps(record) + "\n" for record in records))
    if not single:
        write_json(out / "index.json", index)
    return out


COMMAND = builtin_command("adapt", AdaptConfig, adapt)
