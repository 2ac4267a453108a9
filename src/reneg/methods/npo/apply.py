"""The ``npo=DIR`` and ``npo-merge=LORA`` methods of ``reneg eval`` (and ``reneg generate --npo/--lora``).

``npo=DIR[,beta=B][,lora=ETA,alpha=A][,negative=FILE]``: the prompt's branch runs theta (+ eta), the negative
branch theta + alpha*eta + beta*delta (NPO Eq. 10), in one batched UNet call (:mod:`reneg.methods.npo.weights`);
``negative=FILE`` also puts a ReNeg embedding on the negative branch (ReNeg + NPO). Defaults: beta = 1, alpha = 1.

``npo-merge=ETA[,gamma=G]``: NPO's weight-merge approximation (Eq. 4), no training: theta + eta for the prompt,
theta + gamma*eta for the negative (default gamma 0.6, the paper's motivating example).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from ...config import arg, require
from ...core.rollout import rollout, text_branches
from ...embedding import NegativeEmbedding
from ...errors import ReNegError
from ...families import TextConditioning
from ...identity import file_identity
from ...models.loading import LoadedModel
from ..base import Method, register_method
from .lowrank import lowrank_npo
from .weights import check_adapter_path, install_npo, path_identity

#: Options after the method's path, and their defaults.
NPO_OPTIONS = {"beta": 1.0, "alpha": 1.0, "lora": None, "negative": None}
MERGE_OPTIONS = {"gamma": 0.6}


def parse_options(argument: str, defaults: dict, *, method: str) -> tuple[str, dict]:
    """``PATH,key=value,...`` -> (PATH, options with defaults); numbers must be finite."""
    path, *pieces = argument.split(",")
    options = dict(defaults)
    for piece in pieces:
        key, equals, value = piece.partition("=")
        key = key.strip()
        if not equals or key not in defaults:
            raise ReNegError(f"method '{method}={argument}': unknown option '{piece}': use "
                             f"{', '.join(k + '=' for k in defaults)}")
        if isinstance(defaults[key], float):
            try:
                number = float(value)
            except ValueError:
                number = math.nan
            if not math.isfinite(number):
                raise ReNegError(f"method '{method}={argument}': {key} must be a finite number, got '{value}'")
            options[key] = number
        else:
            options[key] = value.strip()
    return path.strip(), options


def _check_npo(argument: str) -> None:
    path, options = parse_options(argument, NPO_OPTIONS, method="npo")
    check_adapter_path(path, what="npo")
    if options["lora"]:
        check_adapter_path(options["lora"], what="lora")
    if options["negative"] and not Path(options["negative"]).is_file():
        raise ReNegError(f"method 'npo={argument}': negative embedding {options['negative']} does not exist")


def _check_merge(argument: str) -> None:
    path, _ = parse_options(argument, MERGE_OPTIONS, method="npo-merge")
    check_adapter_path(path, what="npo-merge")


def npo_weights(pipe, **terms):
    """The branches' weights of NPO Eq. 10: plain low-rank products on the rows (:mod:`.lowrank`), or peft's
    mixed-batch adapters for a LoRA file that path does not read (:func:`.weights.install_npo`)."""
    for key in ("npo", "lora"):  # a missing file is named by its option before either path reads it
        if terms.get(key) is not None:
            check_adapter_path(terms[key], what=key)
    return lowrank_npo(pipe, **terms) or install_npo(pipe, **terms)


@dataclass
class NPOMethod:
    """CFG with NPO weights on the branches (see the module doc); the adapters are loaded once, when built."""

    weights: object  # .branch_weights() -> (cond, negative): lowrank.LowRankNPOWeights or weights.NPOWeights
    negative: TextConditioning
    identity: str

    @torch.no_grad()
    def images(self, model: LoadedModel, prompts: list[str], latents: torch.Tensor, *,
               guidance_scale: float, steps: int) -> torch.Tensor:
        family = model.family
        resolution = family.resolution_of(latents)
        cond_weights, negative_weights = self.weights.branch_weights()
        branches = text_branches(family, family.encode(prompts), self.negative, resolution=resolution,
                                 negative_weights=negative_weights)
        branches["cond"].weights = cond_weights
        return rollout(family, branches, latents, steps=steps, guidance_scale=guidance_scale)


@register_method("npo", argument="DIR", check=_check_npo,
                 description="Diffusion-NPO: a negative-preference LoRA on the negative branch "
                             "(DIR[,beta=B][,lora=ETA,alpha=A][,negative=FILE])")
def _npo(argument: str | None, model: LoadedModel) -> Method:
    path, options = parse_options(argument, NPO_OPTIONS, method="npo")
    weights = npo_weights(model.pipe, npo=path, beta=options["beta"], lora=options["lora"], alpha=options["alpha"])
    negative = model.family.null_text()
    identity = f"npo:{path_identity(check_adapter_path(path, what='npo'))}:beta={options['beta']}"
    if options["lora"]:
        identity += f":lora={path_identity(check_adapter_path(options['lora'], what='lora'))}:alpha={options['alpha']}"
    if options["negative"]:
        negative = TextConditioning.of(NegativeEmbedding.load(options["negative"]).for_pipeline(model.pipe))
        identity += f":negative={file_identity(options['negative'])}"
    return NPOMethod(weights, negative, identity)


@register_method("npo-merge", argument="LORA", check=_check_merge,
                 description="NPO's weight merge (Eq. 4): theta+eta for the prompt, theta+gamma*eta for the negative "
                             "(LORA[,gamma=G])")
def _npo_merge(argument: str | None, model: LoadedModel) -> Method:
    path, options = parse_options(argument, MERGE_OPTIONS, method="npo-merge")
    weights = npo_weights(model.pipe, lora=path, alpha=options["gamma"])
    identity = f"npo-merge:{path_identity(check_adapter_path(path, what='npo-merge'))}:gamma={options['gamma']}"
    return NPOMethod(weights, model.family.null_text(), identity)


@dataclass
class NpoFlags:
    """``reneg generate``'s NPO flags: aliases of ``--method npo=DIR,beta=B[,lora=ETA,alpha=A][,negative=FILE]``
    and, with ``--lora`` alone, of ``--method npo-merge=ETA,gamma=A``."""

    npo: str | None = arg(None, "Diffusion-NPO: a negative-preference LoRA (reneg npo --out DIR) on the negative "
                                "branch (--method npo=DIR)", metavar="DIR")
    npo_beta: float = arg(1.0, "--npo: scale beta of delta on the negative branch (NPO Eq. 10)", metavar="B")
    npo_alpha: float | None = arg(None, "--lora: scale alpha of eta on the negative branch (NPO Eq. 10; default 1); "
                                        "without --npo the weight merge theta + alpha*eta of NPO Eq. 4 (default 0.6, "
                                        "as the paper and `reneg eval npo-merge`)", metavar="A")
    lora: str | None = arg(None, "a positive LoRA eta on the prompt's branch (with --npo, or alone for NPO's weight "
                                 "merge)", metavar="DIR")

    def alias_spec(self) -> str | None:
        """The spec these flags stand for (``--negative FILE`` joins an NPO spec), or None without --npo/--lora."""
        negative = getattr(self, "negative", None)
        if self.npo is not None:
            alpha = NPO_OPTIONS["alpha"] if self.npo_alpha is None else self.npo_alpha
            options = [f"beta={self.npo_beta}"] + ([f"lora={self.lora}", f"alpha={alpha}"] if self.lora else [])
            return ",".join([f"npo={self.npo}", *options] + ([f"negative={negative}"] if negative else []))
        gamma = MERGE_OPTIONS["gamma"] if self.npo_alpha is None else self.npo_alpha
        return None if self.lora is None else f"npo-merge={self.lora},gamma={gamma}"

    def check_flags(self, spec: str) -> None:
        """The NPO flags' own rules."""
        require(self.lora is not None or self.npo_alpha is None, "--npo-alpha scales --lora: add --lora DIR")
        require(self.npo is not None or self.npo_beta == 1.0, "--npo-beta scales --npo: add --npo DIR")
        require(self.lora is None or self.npo is not None or getattr(self, "negative", None) is None,
                "--lora without --npo is NPO's weight merge, with null text only: drop --negative or add --npo")
