"""``reneg npo``: train Diffusion-NPO's negative preference offset delta as a peft LoRA on the UNet.

Routes (``--route``):

- ``reward-cfg`` (the default; NPO Sec. 3.1 and the authors' reward-training release): delta on the negative
  branch only, the prompt's branch theta (+ eta with ``--lora``, delta then sitting on theta + eta as in the
  release), trained through CFG exactly as it is used at inference, maximising R of the guided images. The sign
  is R, not 1 - R: the negative branch enters CFG with the weight 1 - gamma < 0, so the guidance itself turns
  "away from delta" into "towards R" (negating R here would train a delta that makes guided images worse).
  ``--negative FILE`` also puts a ReNeg embedding on that branch (ReNeg + NPO); ``--joint`` learns the
  embedding together with delta.
- ``reward`` (NPO Eq. 7 read literally, an ablation): theta + delta as a standalone model maximising
  ``R_NPO = 1 - R``, sampled with CFG on both branches but with the gradient through the prompt's branch only,
  so that the unconditional path is not trained toward preferred outputs (through the negative branch, whose
  CFG weight is negative, minimising R would push delta toward what the reward likes: NPO Sec. 3.1's
  "compromise").
- ``positive``: not NPO itself but its eta (NPO Eq. 10): theta + eta on both branches maximising R, a plain
  differentiable-reward fine-tune (DRaFT/VADER-like) to pair with delta (``--lora``) at inference.
- ``dpo`` (NPO Eq. 8): Diffusion-DPO on a pairs file with every pair reversed; the reference model is the same
  UNet with its adapters switched off (one UNet in memory).

Defaults follow the authors' release where the paper leaves them open: rank 8, lora_alpha = rank, Gaussian
init (delta = 0 at the start), target modules ``to_k, to_q, to_v, to_out.0``; lr 1e-5 (reward routes) and
5e-6 (DPO, with AdamW weight decay 1e-2); DPO beta 500 in the release's convention (``-log sigmoid(beta *
((e_w^ref - e_l^ref) - (e_w - e_l)))``, no factor 1/2). Steps and batch are the project's (see each flag's help).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ... import __version__
from ...config import (
    BATCH_SIZE,
    GUIDANCE_SCALE,
    LOG_EVERY,
    LR,
    REWARD,
    STEPS,
    TRAINING_SEED,
    TRAIN_STEPS,
    ConditionSettings,
    PromptSettings,
    RewardSettings,
    TrainingSettings,
    arg,
    builtin_command,
    require,
)
from ...core.denoiser import BASE, BASE_ROWS, RowAdapter
from ...core.fingerprint import pipeline_fingerprint
from ...core.rollout import rollout, text_branches
from ...embedding import NegativeEmbedding
from ...errors import ReNegError
from ...families import TextConditioning
from ...models.device import dtype_of
from ...models.loading import LoadedModel, load_model
from ...prompts import gather_prompts
from ...rewards import Reward, build_reward
from ...rewards.base import require_gradient
from ...rewards.video import frame_rewards
from .. import checkpoints
from ..loop import Listener, LoopSettings, Processes, StepRecord, log_listeners, run_loop
from ..randomness import RolloutSettings, draw_batch, mixed_seed
from ..validation import full_sample_rewards
from .dpo import Pairs, load_pairs, npo_dpo_loss
from .weights import fuse_into_base, path_identity, save_adapter, with_adapter_api


#: The name of the trained adapter on the UNet while training.
DELTA = "npo_delta"
ROUTES = ("reward-cfg", "reward", "positive", "dpo")
#: the authors' release: reward training at 1e-5 (DR-Video-NPO), DPO at 5e-6 with weight decay 1e-2 (DPO-DPO-NPO)
RELEASE_LR = {"dpo": 5e-6}
REWARD_LR = 1e-5
DPO_WEIGHT_DECAY = 1e-2
#: the random stream of delta's initial A (apart from the batches' streams, keyed by step)
LORA_INIT_STREAM = 2**31 - 1


@dataclass
class NPOConfig(PromptSettings, RewardSettings, ConditionSettings, LoopSettings, TrainingSettings):
    """Settings of ``reneg npo``; None means the model's default."""

    route: str = arg("reward-cfg", "reward-cfg: delta on the negative branch only, trained through CFG (NPO Sec. 3.1, "
                                   "the authors' release); reward: theta+delta with R_NPO = 1 - R (NPO Eq. 7 read "
                                   "literally, an ablation; gradient through the prompt's branch only); dpo: "
                                   "Diffusion-DPO on reversed pairs (NPO Eq. 8); positive: a positive offset eta "
                                   "(theta+eta maximising R) to pair with delta", choices=list(ROUTES))
    pairs: str | None = arg(None, "--route dpo: JSONL of {\"prompt\", \"preferred\", \"rejected\"} (image paths "
                                  "relative to the file)", metavar="FILE")
    reward: str | None = REWARD(help="reward name (reward routes; see `reneg rewards`)")
    lora: str | None = arg(None, "--route reward-cfg: a positive LoRA eta; the prompt's branch runs theta + eta and "
                                 "delta sits on theta + eta (the authors' release)", metavar="DIR")
    negative: str | None = arg(None, "--route reward-cfg: a ReNeg embedding on the negative branch while training "
                                     "(ReNeg + NPO)", metavar="FILE")
    joint: bool = arg(False, "--route reward-cfg: learn a negative embedding (from --negative or the null text) "
                             "together with delta in the same rollout; saved as negative.safetensors in --out")
    out: str = arg("npo-lora", "adapter directory to write", metavar="DIR", output="dir")
    rank: int = arg(8, "LoRA rank of delta (authors' release: 8)", min=1)
    lora_alpha: float | None = arg(None, "LoRA alpha (default: the rank, as the authors' release)", min_exclusive=0)
    target_modules: list[str] = arg(["to_k", "to_q", "to_v", "to_out.0"], "UNet modules delta adapts (repeatable)",
                                    metavar="NAME")
    train_steps: int = TRAIN_STEPS(60, "optimizer steps (a departure, sized for a CPU run: the release trains "
                                       "2000 (reward) and 5000 (DPO))")
    batch_size: int = BATCH_SIZE(4, "prompts (or pairs) per step (a departure: the release uses 1 (reward, video) "
                                    "and 64 (DPO))")
    lr: float | None = LR(help="AdamW learning rate of delta (and, with --joint, the embedding) (default: the "
                               "authors' release, 1e-5 for the reward routes and 5e-6 for dpo)")
    weight_decay: float | None = arg(None, "AdamW weight decay (default: 1e-2 for dpo as the release; 0 for the reward "
                                           "routes, whose release script sets none)", min=0)
    dpo_beta: float = arg(500.0, "--route dpo: Diffusion-DPO's beta in the release's convention: -log sigmoid(beta * "
                                 "((e_w^ref - e_l^ref) - (e_w - e_l))) (authors' SD1.5 run: 500)", min_exclusive=0)
    steps: int | None = STEPS(help="DDIM sampling steps T of the reward routes")
    guidance_scale: float | None = GUIDANCE_SCALE(help="CFG scale in the reward routes' rollout")
    seed: int = TRAINING_SEED(help="seed of prompts/pairs, timesteps and noise")
    log_every: int = LOG_EVERY()
    checkpoint_every: int = arg(0, "save a resumable checkpoint (<out>.checkpoint) every N steps (0: only at the end)",
                                metavar="N", min=0)
    resume: str | None = arg(None, "resume from this checkpoint directory (<out>.checkpoint of an earlier run with "
                                   "the same settings): the result is the uninterrupted run's, bit for bit",
                             metavar="DIR")

    @property
    def checkpoint_dir(self) -> Path:
        return Path(self.out).with_name(Path(self.out).name + ".checkpoint")

    def __post_init__(self):
        super().__post_init__()
        self.check_batch()
        require(self.route != "dpo" or self.pairs is not None,
                "--route dpo needs --pairs FILE (the shapes world makes one: reneg world-pairs --out DIR)")
        require(self.route == "dpo" or self.pairs is None, "--pairs applies to --route dpo only")
        require(self.route == "reward-cfg" or self.lora is None,
                "--lora applies to --route reward-cfg only (delta is trained on theta + eta)")
        require(self.route == "reward-cfg" or (self.negative is None and not self.joint),
                "--negative and --joint apply to --route reward-cfg only (the embedding sits on the negative branch)")
        require(bool(self.target_modules), "--target-modules is empty: name at least one UNet module, e.g. to_q")


class NPOTrainer:
    """The frozen pipeline with delta (a peft LoRA named :data:`DELTA`) on its UNet; ``step`` runs one update."""

    def __init__(self, config: NPOConfig, *, model: LoadedModel | None = None, reward: Reward | None = None):
        from peft import LoraConfig

        self.config = c = config
        self.processes = Processes(c.device, batch_size=c.batch_size, micro_batch_size=c.micro_batch_size)
        self.device, dtype = self.processes.device, dtype_of(c.precision)
        self.micro_batch_size = self.processes.micro_batch_size
        # 1. Model, defaults
        self.model = model or load_model(c.model, device=self.device, dtype=dtype)
        self.family, defaults = self.model.family, self.model.defaults
        self.family.condition_on(control_image=c.control_image, num_frames=c.num_frames)
        rollout_settings = RolloutSettings.of(c, self.model)
        self.steps, self.grad_window = rollout_settings.steps, rollout_settings.grad_window
        self.guidance_scale, self.resolution = rollout_settings.guidance_scale, rollout_settings.resolution
        # 2. Data: prompts and a reward, or pairs (checked before delta is added)
        self.reward_name = self.reward_model = None
        if c.route == "dpo":
            self.pairs = load_pairs(c.pairs, resolution=self.resolution)
            self.pair_latents = self._encode_pairs(self.pairs)
        else:
            self.prompts = [p.text for p in gather_prompts(prompt=c.prompt, prompts_file=c.prompts,
                                                           fallback=list(defaults.train_prompts),
                                                           what="training prompts")]
            self.family.warn_if_truncated(self.prompts)
            self.reward_name = c.reward or defaults.reward
            self.reward_model = c.reward_model or defaults.reward_model
            self.reward = reward or build_reward(self.reward_name, model=self.reward_model, device=self.device,
                                                 dtype=dtype)
        self.negative = self._negative()
        # 3. delta on the UNet (fp32 trainable), AdamW; then eta into the base weights (--lora), last, so that no
        # refusal before it leaves theta changed
        unet = self.family.model
        with_adapter_api(unet)
        unet.requires_grad_(False)
        if DELTA in getattr(unet, "peft_config", {}):
            unet.delete_adapters(DELTA)
        try:
            with torch.random.fork_rng(devices=[]):  # delta's random A from --seed: one seed, one run
                torch.manual_seed(mixed_seed(c.seed, LORA_INIT_STREAM))
                unet.add_adapter(LoraConfig(r=c.rank, lora_alpha=c.lora_alpha or c.rank,
                                            init_lora_weights="gaussian", target_modules=list(c.target_modules)),
                                 adapter_name=DELTA)
        except ValueError as error:
            raise ReNegError(f"--target-modules {', '.join(c.target_modules)}: {str(error).splitlines()[0]}: "
                             "name modules of this UNet, e.g. to_q to_k to_v to_out.0") from None
        self.delta_parameters = {n: p for n, p in unet.named_parameters() if f".{DELTA}." in n}
        for parameter in self.delta_parameters.values():
            parameter.data = parameter.data.float()
            parameter.requires_grad_(True)
        trainable = list(self.delta_parameters.values())
        if self.negative is not None and c.joint:
            trainable.append(self.negative.embeds)
        self.trainable = trainable
        self.lr = c.lr if c.lr is not None else RELEASE_LR.get(c.route, REWARD_LR)
        self.weight_decay = c.weight_decay if c.weight_decay is not None else (
            DPO_WEIGHT_DECAY if c.route == "dpo" else 0.0)
        self.optimizer = torch.optim.AdamW(trainable, lr=self.lr, weight_decay=self.weight_decay)
        self.step = 0
        self.restore_base = fuse_into_base(self.model.pipe, c.lora, what="--lora") if c.lora else (lambda: None)
        if c.resume:
            try:
                self.load_checkpoint(c.resume)
            except ReNegError:
                self.restore_base()
                raise

    def _negative(self) -> TextConditioning | None:
        """The negative branch's conditioning in the reward routes: null text, a ReNeg file, or a learned one."""
        if self.config.route == "dpo":
            return None
        if self.config.negative is not None:
            start = TextConditioning.of(NegativeEmbedding.load(self.config.negative).for_pipeline(self.model.pipe))
        else:
            start = self.family.null_text()
        embeds = start.embeds.detach().float().clone().to(self.device)
        if self.config.joint:
            embeds = torch.nn.Parameter(embeds)
        return TextConditioning(embeds, start.pooled)

    @torch.no_grad()
    def _encode_pairs(self, pairs: Pairs) -> tuple[torch.Tensor, torch.Tensor]:
        """VAE latents (mean of the posterior, scaled) of the preferred and rejected images."""
        vae = self.model.pipe.vae

        def encode(images):
            out = []
            for start in range(0, len(images), 16):
                chunk = images[start:start + 16].to(self.device, vae.dtype)
                out.append(vae.encode(chunk).latent_dist.mean * vae.config.scaling_factor)
            return torch.cat(out).float()

        return encode(pairs.preferred), encode(pairs.rejected)

    # -- one step of each route --------------------------------------------------------------------
    @property
    def prompt_texts(self) -> list[str]:
        return self.prompts if self.config.route != "dpo" else self.pairs.prompts

    def _reward_loss(self, micro: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """NPO Eq. 7 (``reward``), the CFG objective (``reward-cfg``) or eta's (``positive``) on this process's
        micro-batch ``micro``: loss, rewards R, the step index of x_t."""
        batch = draw_batch(self.family, self.prompts, seed=self.config.seed, step=self.step,
                           indices=self.processes.slice(micro), resolution=self.resolution, steps=self.steps,
                           grad_window=self.grad_window)
        route = self.config.route
        both = route in ("reward", "positive")
        branches = text_branches(self.family, self.family.encode(batch.prompts), self.negative,
                                 resolution=self.resolution, negative_weights=RowAdapter(DELTA))
        branches["cond"].weights = RowAdapter(DELTA if both else BASE_ROWS)  # one batched call either way
        branches["negative"].frozen = route == "reward"  # Eq. 7 through the prompt's branch only
        images = rollout(self.family, branches, batch.latents, steps=self.steps,
                         guidance_scale=self.guidance_scale, grad_from=batch.grad_from)
        rewards = frame_rewards(self.reward, images, batch.prompts).float()  # videos: mean over frames
        require_gradient(rewards, images)
        objective = 1 - rewards if route == "reward" else rewards  # R_NPO = 1 - R (Eq. 7); through CFG or eta: R
        return -objective.mean(), rewards.detach(), batch.grad_from

    def _dpo_loss(self, micro: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Diffusion-DPO on reversed pairs (NPO Eq. 8) on this process's micro-batch ``micro`` of the step's global
        draw: loss, the implicit reward margin of delta (detached), 0."""
        c, unet, scheduler = self.config, self.family.model, self.family.scheduler
        generator = torch.Generator().manual_seed(mixed_seed(c.seed, self.step, 0))
        index = torch.randint(len(self.pairs), (c.batch_size,), generator=generator)
        noise = torch.randn((c.batch_size, *self.pair_latents[0].shape[1:]), generator=generator)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (c.batch_size,), generator=generator)
        rows = list(self.processes.slice(micro))  # the global draw above, then this slice of it
        index, noise, t = index[rows], noise[rows].to(self.device), t[rows].to(self.device)
        preferred, rejected = (lat[index].to(self.device) for lat in self.pair_latents)
        latents = torch.cat([preferred, rejected])
        noise2, t2 = torch.cat([noise, noise]), torch.cat([t, t])
        noisy = scheduler.add_noise(latents, noise2, t2)
        epsilon = scheduler.config.prediction_type == "epsilon"
        target = noise2 if epsilon else scheduler.get_velocity(latents, noise2, t2)
        prompts = [self.pairs.prompts[i] for i in index.tolist()]
        embeds = self.family.encode(prompts).embeds
        conditioning = {"encoder_hidden_states": torch.cat([embeds, embeds]).to(unet.dtype)}
        noisy = noisy.to(unet.dtype)
        prediction = RowAdapter(DELTA).forward(unet, noisy, t2, conditioning).float()
        with torch.no_grad():
            reference = BASE.forward(unet, noisy, t2, conditioning).float()
        model_error = ((prediction - target) ** 2).mean(dim=(1, 2, 3))
        ref_error = ((reference - target) ** 2).mean(dim=(1, 2, 3))
        (model_p, model_r), (ref_p, ref_r) = model_error.chunk(2), ref_error.chunk(2)
        loss = npo_dpo_loss(model_p, model_r, ref_p, ref_r, beta=c.dpo_beta)
        return loss, ((ref_p - model_p) - (ref_r - model_r)).detach(), 0

    def train_step(self) -> StepRecord:
        """One optimizer step over the global batch (all processes, all micro-batches): its record (``reward``:
        the mean reward, or DPO's implicit reward margin)."""
        start, processes = time.perf_counter(), self.processes
        self.optimizer.zero_grad(set_to_none=True)
        losses, measures = [], []
        for micro in range(processes.accumulation_steps):
            loss, measure, grad_from = (self._dpo_loss if self.config.route == "dpo" else self._reward_loss)(micro)
            if not torch.isfinite(loss):
                raise ReNegError(f"the loss is not finite at step {self.step + 1}: lower --lr or use --precision fp32")
            (loss / processes.accumulation_steps).backward()
            losses.append(loss.detach())
            measures.append(measure.float().reshape(-1))
        processes.all_reduce(self.trainable)
        torch.nn.utils.clip_grad_norm_(list(self.delta_parameters.values()), 1.0)
        self.optimizer.step()
        self.step += 1
        loss = processes.mean(torch.stack(losses).float().mean().to(self.device))
        measure = processes.gather(torch.cat(measures).to(self.device)).mean()
        return StepRecord(step=self.step, loss=loss.item(), reward=measure.item(), lr=self.lr,
                          guidance_scale=float(self.guidance_scale or 0.0), grad_from=grad_from,
                          seconds=time.perf_counter() - start)

    def run(self):
        """Train until ``train_steps``, yielding a :class:`~reneg.methods.loop.StepRecord` after each step."""
        while self.step < self.config.train_steps:
            yield self.train_step()

    def validation_reward(self, prompts: list[str], latents: torch.Tensor, *, initial: bool = False) -> float:
        """Mean reward of fully sampled images with delta on the negative branch (``initial``: delta off)."""
        negative = TextConditioning(self.negative.embeds.detach(), self.negative.pooled)
        weights = BASE if initial else RowAdapter(DELTA)
        return full_sample_rewards(self.family, self.reward, negative, prompts, latents,
                                   guidance_scale=self.guidance_scale, steps=self.steps, resolution=self.resolution,
                                   batch_size=self.micro_batch_size, negative_weights=weights).mean().item()

    def metadata(self, history: list[dict]) -> dict:
        """npo.json: what was trained, on what, how."""
        c = self.config
        return {
            "route": c.route, "reward": self.reward_name, "reward_model": self.reward_model,
            "pairs": _file_hash(c.pairs) if c.pairs else None, "dpo_beta": c.dpo_beta if c.route == "dpo" else None,
            "train_steps": self.step, "batch_size": c.batch_size, "lr": self.lr,
            "weight_decay": self.weight_decay, "rank": c.rank,
            "lora": f"{c.lora} (sha256:{path_identity(c.lora)})" if c.lora else None,
            "lora_alpha": c.lora_alpha or c.rank, "target_modules": list(c.target_modules),
            "steps": self.steps if c.route != "dpo" else None,
            "grad_window": self.grad_window if c.route != "dpo" else None,
            "guidance_scale": self.guidance_scale if c.route != "dpo" else None,
            "negative": c.negative, "joint": c.joint, "resolution": self.resolution, "seed": c.seed,
            "precision": c.precision, "base_model": self.model.name,
            "text_encoder_fingerprint": pipeline_fingerprint(self.model.pipe),
            "first_measure": history[0].reward if history else None,
            "last_measure": history[-1].reward if history else None,
            "reneg_version": __version__,
        }

    # -- checkpoints (reneg.methods.checkpoints: safetensors + JSON, replaced atomically) ---------------------
    def _trained(self) -> dict[str, torch.Tensor]:
        tensors = dict(self.delta_parameters)
        if self.config.joint:
            tensors["negative_embedding"] = self.negative.embeds
        return tensors

    def _recipe(self) -> dict:
        """What a resumed run must share with its checkpoint: everything that decides delta but the step count."""
        recipe = {k: v for k, v in asdict(self.config).items()
                  if k not in ("train_steps", "checkpoint_every", "resume", "log_every", "out", "device",
                               "micro_batch_size", "validate_every", "validate_prompts", "report_to")}
        return {**recipe, "lr": self.lr, "weight_decay": self.weight_decay, "base_model": self.model.name}

    def save_checkpoint(self) -> Path:
        """Save a resumable checkpoint (main process; the others wait until it is whole)."""
        if self.processes.is_main:
            checkpoints.save(self.config.checkpoint_dir, step=self.step,
                             parameters={k: v.detach() for k, v in self._trained().items()},
                             optimizer=self.optimizer, extra={"recipe": self._recipe(), "reneg_version": __version__})
        self.processes.accelerator.wait_for_everyone()
        return self.config.checkpoint_dir

    def load_checkpoint(self, directory: str | Path) -> None:
        state, tensors, optimizer_tensors = checkpoints.load(directory)
        checkpoints.check_recipe(directory, state.get("recipe") or {}, self._recipe())
        checkpoints.restore_parameters(directory, tensors, self._trained())
        checkpoints.restore_optimizer(self.optimizer, state["param_groups"], optimizer_tensors, source=str(directory))
        self.step = state["step"]

    def learned_negative(self) -> NegativeEmbedding:
        """--joint: the embedding learned with delta, as a ReNeg file."""
        return NegativeEmbedding(self.negative.embeds.detach().squeeze(0).float().cpu(), {
            "text_encoder_fingerprint": pipeline_fingerprint(self.model.pipe), "base_model": self.model.name,
            "reward": self.reward_name or "", "train_steps": str(self.step), "steps": str(self.steps),
            "guidance_scale": str(self.guidance_scale), "npo_joint": "true", "reneg_version": __version__})


def _file_hash(path: str) -> str:
    return "sha256:" + hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def train_npo(config: NPOConfig, *, model: LoadedModel | None = None, reward: Reward | None = None,
              listeners: tuple[Listener, ...] = ()) -> Path | None:
    """Train delta on the shared loop and write ``config.out`` (the LoRA file, npo.json, and negative.safetensors
    with --joint) from the main process; returns ``config.out`` there, None on the others (as ``train``)."""
    trainer = NPOTrainer(config, model=model, reward=reward)
    history = []
    try:
        run_loop(trainer, (*listeners, lambda trainer, record: history.append(record)),
                 checkpoint_every=config.checkpoint_every)
    except BaseException:
        trainer.restore_base()
        trainer.family.model.delete_adapters(DELTA)
        raise
    out = Path(config.out)
    unet = trainer.family.model
    trainer.restore_base()  # theta again: the adapter's fingerprint is of the base it applies to
    if trainer.processes.is_main:
        if config.joint:
            trainer.learned_negative().save(out / "negative.safetensors")
        save_adapter(unet, DELTA, out, trainer.metadata(history))
    unet.delete_adapters(DELTA)
    trainer.processes.accelerator.wait_for_everyone()
    return out if trainer.processes.is_main else None


def _run(config: NPOConfig) -> str | None:
    """``reneg npo``: progress, log lines, ``<out>.log.jsonl``, the reward plot and (reward routes) the
    validation curve; the main process prints where delta went."""
    out = train_npo(config, listeners=log_listeners(config, config.out, validate=config.route != "dpo"))
    return None if out is None else str(out)


COMMAND = builtin_command("npo", NPOConfig, _run)
