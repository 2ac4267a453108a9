"""Parameter efficiency (``reneg efficiency``): E(theta) = ||J||_F / (N D d_theta) of ReNeg Sec. 4.1 (Table 1).

N prompts and their x_T are sampled through the one rollout to the denoised
latents X (N x D, D = c x h x w), with the gradient kept through every DDIM step
(the paper's "iterative backpropagation"). J = dX/dtheta is never formed for a
UNet: ||J||_F^2 = E_v ||J^T v||^2 for v ~ N(0, I_ND), and each J^T v is one
vector-Jacobian product (one backward pass through the chain), so K probes give
an unbiased estimate and a Student-t confidence interval. All parameter sets
share the probes and one forward pass::

    theta      symbol        what
    negative   n             the negative embedding on the negative branch (null text, or --negative FILE)
    unet       theta_0       every parameter of the denoiser
    lora-r     theta_l^r     peft LoRA of rank r on the attention projections (B = 0 at the start, as trained)

With B = 0 the adapters leave X unchanged, so X, and the Jacobians of n and
theta_0, are those of the plain model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import torch

from .. import __version__
from ..config import (PRECISION, PROMPT, PROMPTS, SEED, STEPS, PromptSettings, SamplingSettings, arg, builtin_command,
                      require)
from ..core.denoiser import BASE, Weights
from ..core.rollout import rollout, text_branches
from ..embedding import NegativeEmbedding
from ..errors import ReNegError
from ..families import TextConditioning
from ..io import atomic_path, write_json
from ..methods.randomness import mixed_seed
from ..models.device import dtype_of, resolve_device
from ..models.loading import LoadedModel, load_model
from ..prompts import gather_prompts

#: ReNeg Table 1 (SD1.5), for the chart and the JSON's comparison; not measured here.
PAPER_TABLE_1 = {"negative": 5.1e-4, "unet": 1.5e-6, "lora-8": 8.1e-8, "lora-16": 1.9e-9}
#: The attention projections LoRA trains in diffusers' text-to-image LoRA example.
LORA_TARGETS = ("to_k", "to_q", "to_v", "to_out.0")
#: The probes' random stream, apart from the prompts' and x_T's (a probe equal to x_T is far from a random one).
PROBE_STREAM = 1
#: ``--lora-init``: peft's ``init_lora_weights`` for each choice
LORA_INITS = {"gaussian": "gaussian", "kaiming": True}
#: "E(a) >> E(b)": at least this ratio between the bounds of their intervals (one order of magnitude).
MUCH_GREATER = 10.0


@dataclass
class EfficiencyConfig(PromptSettings, SamplingSettings):
    """Settings of ``reneg efficiency``; None means the model's default."""

    prompt: list[str] = PROMPT(help="a prompt (repeatable); default: N drawn from the model's training prompts")
    prompts: str | None = PROMPTS(help="prompts file to draw the N prompts from")
    negative: str | None = arg(None, "measure at this learned negative embedding instead of the null text",
                               metavar="FILE")
    num_samples: int = arg(8, "N: prompts (one x_T each) sampled to the denoised latents X", metavar="N", min=1)
    probes: int = arg(32, "K: random projections v ~ N(0, I) (one backward pass each)", metavar="K", min=2)
    lora_ranks: list[int] = arg([8, 16], "LoRA ranks to measure (repeatable; at most 1024)", metavar="R", min=1,
                                max=1024)
    lora_init: str = arg("gaussian", "LoRA's A at the start (B = 0): gaussian, N(0, 1/r) as diffusers' LoRA example, "
                                     "so that E of LoRA falls as r^-1.5 by construction; kaiming, peft's default "
                                     "(Kaiming-uniform)", choices=list(LORA_INITS))
    exact: bool = arg(False, "also form J exactly, one backward pass per entry of X (N*D passes; small models)")
    confidence: float = arg(0.95, "level of the confidence intervals", min_exclusive=0, max_exclusive=1)
    out: str = arg("efficiency", "output directory (efficiency.json, efficiency.png)", metavar="DIR", output="dir")
    steps: int | None = STEPS(help="DDIM sampling steps (gradient through all of them)")
    seed: int = SEED(help="seed of the prompts, x_T and the probes")
    precision: str = PRECISION(help="dtype of the frozen models (fp32 measures E as the paper does)")

    def __post_init__(self):
        super().__post_init__()
        require(len(set(self.lora_ranks)) == len(self.lora_ranks), f"--lora-ranks repeats a rank: {self.lora_ranks}")


@dataclass
class ParameterSet:
    """One theta of Table 1: its name, its symbol and the tensors it is made of."""

    name: str
    symbol: str
    tensors: list[torch.Tensor] = field(repr=False)

    @property
    def size(self) -> int:
        """d_theta."""
        return sum(t.numel() for t in self.tensors)


# -- the estimator -------------------------------------------------------------------------------------


def gaussian_probes(shape: tuple[int, ...], count: int, *, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """``count`` vectors v ~ N(0, I) of ``shape`` (drawn on the CPU from ``generator``)."""
    for _ in range(count):
        yield torch.randn(shape, generator=generator)


def basis_probes(shape: tuple[int, ...]) -> Iterator[torch.Tensor]:
    """The standard basis e_1 ... e_ND of ``shape``: J^T e_i is row i of J, so their squared norms sum to ||J||_F^2."""
    for index in range(math.prod(shape)):
        probe = torch.zeros(math.prod(shape))
        probe[index] = 1.0
        yield probe.view(shape)


def projected_norms(output: torch.Tensor, sets: list[ParameterSet], probes: Iterable[torch.Tensor]) -> torch.Tensor:
    """``||J_s^T v||^2`` for each probe v (rows) and parameter set s (columns), by vector-Jacobian products.

    ``output`` is X with its graph; one backward pass per probe serves every set.
    """
    tensors = [t for s in sets for t in s.tensors]
    bounds = torch.tensor([0] + [len(s.tensors) for s in sets]).cumsum(0).tolist()
    rows = []
    for probe in probes:
        grads = torch.autograd.grad(output, tensors, grad_outputs=probe.to(output), retain_graph=True,
                                    allow_unused=True)
        squares = [0.0 if g is None else float(g.double().pow(2).sum()) for g in grads]
        rows.append([math.fsum(squares[a:b]) for a, b in zip(bounds, bounds[1:])])
    return torch.tensor(rows, dtype=torch.float64)


def mean_interval(samples: torch.Tensor, confidence: float) -> tuple[float, float, float]:
    """Mean of i.i.d. ``samples`` and its Student-t interval at ``confidence`` (lower bound clipped at 0)."""
    from scipy.stats import t as student_t

    count = samples.numel()
    mean = float(samples.mean())
    half = float(student_t.ppf(0.5 + confidence / 2, count - 1)) * float(samples.std(unbiased=True)) / math.sqrt(count)
    return mean, max(mean - half, 0.0), mean + half


def worst_case_interval(samples: torch.Tensor, confidence: float) -> tuple[float, float]:
    """An interval for ||J||_F^2 that holds however J's singular values are spread, from the rank-1 case.

    ||J^T v||^2 = sum_i s_i^2 z_i^2 (z ~ N(0, 1)), so the mean of K probes is ||J||_F^2 times a weighted mean
    of chi-square(K)/K variables; a J of rank 1 makes it exactly chi-square(K)/K, the most spread case. The
    Student-t interval of :func:`mean_interval` assumes the mean is near-normal and undercovers when a few
    directions dominate J (seen on the tiny model at K = 48); this one does not rely on that.
    """
    from scipy.stats import chi2

    count, mean = samples.numel(), float(samples.mean())
    tail = (1 - confidence) / 2
    return mean * count / float(chi2.ppf(1 - tail, count)), mean * count / float(chi2.ppf(tail, count))


def efficiency_of(norm_squared: float, *, samples: int, dim: int, size: int) -> float:
    """E(theta) = ||J||_F / (N D d_theta) (ReNeg Sec. 4.1) from ||J||_F^2."""
    return math.sqrt(max(norm_squared, 0.0)) / (samples * dim * size)


def rms_sensitivity(norm_squared: float, *, samples: int, dim: int, size: int) -> float:
    """||J||_F / sqrt(N D d_theta): the root-mean-square entry of J, a per-parameter sensitivity that, unlike E,
    does not fall with d_theta by construction (E divides the norm of N D d_theta entries by their count)."""
    return math.sqrt(max(norm_squared, 0.0) / (samples * dim * size))


# -- the model side ------------------------------------------------------------------------------------


def add_lora(model: torch.nn.Module, ranks: list[int], init: str = "gaussian", *, seed: int = 0) -> list[ParameterSet]:
    """peft LoRA adapters of each rank on ``model``'s attention projections, B = 0 (``lora_alpha = r``); A Gaussian
    as diffusers' text-to-image LoRA example initialises it, or Kaiming-uniform (peft's default): ``init``."""
    import warnings

    from peft import LoraConfig

    sets = []
    for rank in ranks:
        name = f"lora-{rank}"
        with warnings.catch_warnings():  # peft warns that a second adapter makes "multiple adapters": it does
            warnings.filterwarnings("ignore", message="Already found a `peft_config`")
            torch.manual_seed(mixed_seed(seed, PROBE_STREAM + 1, rank))  # inside measure's fork_rng: seeded
            model.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights=LORA_INITS[init],
                                         target_modules=list(LORA_TARGETS)), adapter_name=name)
        tensors = [p for key, p in model.named_parameters() if f".{name}." in key]
        for tensor in tensors:
            tensor.requires_grad_(True)
        sets.append(ParameterSet(name, f"theta_l^{rank}", tensors))
    return sets


@dataclass(frozen=True)
class ActiveAdapters:
    """The model as it is, with the peft adapters it has active (B = 0: the output of theta_0)."""

    key: str = "active-adapters"

    def forward(self, model, x, t, conditioning):
        return model(x, t, **conditioning, return_dict=False)[0]


def denoised_latents(model: LoadedModel, prompts: list[str], negative: torch.Tensor, latents: torch.Tensor, *,
                     steps: int, guidance_scale: float, resolution: int, weights: Weights = BASE,
                     pooled: torch.Tensor | None = None) -> torch.Tensor:
    """X: the denoised latents (N, D) of ``prompts`` from x_T = ``latents``, differentiable through every step
    (``pooled``: the negative's fixed pooled part, SDXL and SD3)."""
    family = model.family
    branches = text_branches(family, family.encode(prompts), TextConditioning(negative, pooled),
                             resolution=resolution)
    for branch in branches.values():
        branch.weights = weights
    x0 = rollout(family, branches, latents, steps=steps, guidance_scale=guidance_scale, decode=False,
                 differentiable=True)
    return x0.flatten(1)


def _choose_prompts(config: EfficiencyConfig, model: LoadedModel) -> list[str]:
    pool = [p.text for p in gather_prompts(prompt=config.prompt, prompts_file=config.prompts,
                                           fallback=list(model.defaults.train_prompts))]
    generator = torch.Generator().manual_seed(config.seed)
    order = torch.randperm(len(pool), generator=generator).tolist()
    return [pool[order[i % len(pool)]] for i in range(config.num_samples)]  # all distinct while N <= the pool


def _negative(config: EfficiencyConfig, model: LoadedModel) -> TextConditioning:
    """The negative the Jacobian is taken at (its sequence part; a pooled part, SDXL/SD3, rides along fixed)."""
    if config.negative is None:
        return model.family.null_text()
    return TextConditioning.of(NegativeEmbedding.load(config.negative).for_pipeline(model.pipe))


def _summary(sets, norms: torch.Tensor, *, samples: int, dim: int, confidence: float) -> dict:
    results = {}
    for column, s in enumerate(sets):
        mean, low, high = mean_interval(norms[:, column], confidence)
        worst = worst_case_interval(norms[:, column], confidence)
        scale = dict(samples=samples, dim=dim, size=s.size)
        results[s.name] = {
            "symbol": s.symbol, "d_theta": s.size, "frobenius_squared": mean,
            "frobenius_squared_interval": [low, high], "frobenius_squared_interval_worst_case": list(worst),
            "E": efficiency_of(mean, **scale),
            "E_interval": [efficiency_of(low, **scale), efficiency_of(high, **scale)],
            "E_interval_worst_case": [efficiency_of(bound, **scale) for bound in worst],
            "rms_sensitivity": rms_sensitivity(mean, **scale),
            "rms_sensitivity_interval": [rms_sensitivity(low, **scale), rms_sensitivity(high, **scale)],
        }
    return results


def _within(value, entry: dict, key: str) -> bool:
    return bool(entry[key][0] <= float(value) <= entry[key][1])


def ordering(results: dict) -> dict:
    """Whether E(n) >> E(theta_0) > E(LoRA r) > ... (ReNeg Table 1's ordering), judged on the worst-case intervals."""
    names = ["negative", "unet"] + sorted((n for n in results if n.startswith("lora-")), key=lambda n: int(n[5:]))
    checks = []
    for first, second in zip(names, names[1:]):
        low, high = results[first]["E_interval_worst_case"][0], results[second]["E_interval_worst_case"][1]
        factor = MUCH_GREATER if first == "negative" else 1.0
        relation = ">>" if factor > 1 else ">"
        checks.append({"claim": f"E({first}) {relation} E({second})",
                       "ratio": results[first]["E"] / results[second]["E"] if results[second]["E"] else math.inf,
                       "holds": low > factor * high})
    return {"checks": checks, "holds": all(c["holds"] for c in checks),
            "rule": f">> means the lower bound of the first is over {MUCH_GREATER:g}x the upper bound of the "
                    "second; > means the intervals do not overlap (worst-case intervals)"}


def plot_efficiency(path: str | Path, results: dict, *, confidence: float) -> Path:
    """A log-scale bar chart of E(theta) with its interval, beside ReNeg Table 1's values, saved atomically."""
    from matplotlib.figure import Figure

    names = list(results)
    values = [results[n]["E"] for n in names]
    errors = [[v - results[n]["E_interval"][0] for n, v in zip(names, values)],
              [results[n]["E_interval"][1] - v for n, v in zip(names, values)]]
    figure = Figure(figsize=(7, 4), dpi=100)
    axes = figure.subplots()
    positions = range(len(names))
    axes.bar([p - 0.2 for p in positions], values, width=0.4, yerr=errors, capsize=4, color="tab:blue",
             label=f"measured ({confidence:.0%} interval)")
    paper = [PAPER_TABLE_1.get(n, float("nan")) for n in names]
    axes.bar([p + 0.2 for p in positions], paper, width=0.4, color="tab:gray", alpha=0.6,
             label="ReNeg Table 1 (SD1.5)")
    axes.set_xticks(list(positions), [f"{n}\n(d={results[n]['d_theta']:,})" for n in names])
    axes.set_yscale("log")
    axes.set_ylabel("E(theta) = ||J||_F / (N D d_theta)")
    axes.grid(alpha=0.3, axis="y")
    axes.legend(loc="best")
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    return Path(path)


def measure(model: LoadedModel, prompts: list[str], negative: torch.Tensor, latents: torch.Tensor, *,
            steps: int, guidance_scale: float, resolution: int, probes: int, lora_ranks: list[int],
            confidence: float = 0.95, seed: int = 0, exact: bool = False, lora_init: str = "gaussian",
            pooled: torch.Tensor | None = None) -> dict:
    """E(theta) for the negative embedding, the denoiser and LoRA of ``lora_ranks`` (see the module docstring).

    Returns ``{"parameters": {name: {...E, E_interval...}}, "exact": {name: ||J||_F^2} (with ``exact``), ...}``.
    The model is left as it was found (adapters removed, gradients off).
    """
    family = model.family
    unet = family.model
    negative = negative.detach().to(family.device, torch.float32).clone().requires_grad_(True)
    sets = [ParameterSet("negative", "n", [negative]), ParameterSet("unet", "theta_0", list(unet.parameters()))]
    try:
        with torch.random.fork_rng(devices=[]):  # LoRA's random A from --seed, the global stream left alone
            sets += add_lora(unet, lora_ranks, lora_init, seed=seed) if lora_ranks else []
        names = [s.name for s in sets[2:]]
        if names:
            unet.set_adapters(names)  # every adapter on, at scale 1, for the whole measurement
        unet.requires_grad_(True)  # after set_adapters, which freezes what it does not activate
        weights = ActiveAdapters() if names else BASE
        with torch.enable_grad():
            output = denoised_latents(model, prompts, negative, latents, steps=steps, guidance_scale=guidance_scale,
                                      resolution=resolution, weights=weights, pooled=pooled)
            generator = torch.Generator().manual_seed(mixed_seed(seed, PROBE_STREAM))  # not x_T's stream: v != x_T
            norms = projected_norms(output, sets, gaussian_probes(tuple(output.shape), probes, generator=generator))
            exact_norms = projected_norms(output, sets, basis_probes(tuple(output.shape))).sum(0) if exact else None
    finally:
        unet.requires_grad_(False)
        for name in (s.name for s in sets[2:]):
            unet.delete_adapters(name)
    samples, dim = output.shape
    results = _summary(sets, norms, samples=samples, dim=dim, confidence=confidence)
    record = {"parameters": results, "ordering": ordering(results), "N": samples, "D": dim, "probes": probes,
              "confidence": confidence, "per_probe_frobenius_squared": {s.name: norms[:, i].tolist()
                                                                       for i, s in enumerate(sets)}}
    if exact_norms is not None:
        record["exact"] = {s.name: {"frobenius_squared": float(exact_norms[i]),
                                    "E": efficiency_of(float(exact_norms[i]), samples=samples, dim=dim, size=s.size),
                                    "within_interval": _within(exact_norms[i], results[s.name],
                                                               "frobenius_squared_interval"),
                                    "within_worst_case_interval": _within(exact_norms[i], results[s.name],
                                                                          "frobenius_squared_interval_worst_case")}
                           for i, s in enumerate(sets)}
    return record


def efficiency(config: EfficiencyConfig, *, model: LoadedModel | None = None) -> Path:
    """Measure E(theta) (ReNeg Table 1) on ``config.model``; write efficiency.json and efficiency.png."""
    # 1. Inputs, checked before anything runs
    if config.negative is not None and not Path(config.negative).is_file():
        raise ReNegError(f"--negative {config.negative} does not exist: pass the .safetensors file `reneg train` wrote")
    model = model or load_model(config.model, device=resolve_device(config.device), dtype=dtype_of(config.precision))
    prompts = _choose_prompts(config, model)
    negative = _negative(config, model)
    sampling = model.sampling(config)
    steps, guidance_scale, resolution = sampling.steps, sampling.guidance_scale, sampling.resolution
    latents = model.family.initial_latents(len(prompts), resolution=resolution,
                                           generator=torch.Generator().manual_seed(config.seed))
    # 2. The measurement
    record = measure(model, prompts, negative.embeds, latents, steps=steps, guidance_scale=guidance_scale,
                     resolution=resolution, probes=config.probes, lora_ranks=config.lora_ranks,
                     confidence=config.confidence, seed=config.seed, exact=config.exact, lora_init=config.lora_init,
                     pooled=None if negative.pooled is None else negative.pooled.detach())
    # 3. The record and the chart
    out = Path(config.out)
    plot_efficiency(out / "efficiency.png", record["parameters"], confidence=config.confidence)
    path = out / "efficiency.json"
    write_json(path, {"model": model.name, "negative": config.negative or "null text", "prompts": prompts,
                      "steps": steps, "guidance_scale": guidance_scale, "resolution": resolution, "seed": config.seed,
                      "lora_init": config.lora_init,
                      "X": "denoised latents x_0 (N x D), gradient through every DDIM step",
                      "paper_table_1": PAPER_TABLE_1, "reneg_version": __version__, **record})
    return path


COMMAND = builtin_command("efficiency", EfficiencyConfig, efficiency)
