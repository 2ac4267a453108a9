"""The guided denoiser: branches with their own conditioning and weights, combined by a guidance rule.

A branch is the model's keyword arguments for one term of the guidance rule
(``encoder_hidden_states``, SDXL's ``added_cond_kwargs``, ControlNet
residuals, an attention mask; all batched) and, optionally, its own weights
(a second module, or the model with a peft adapter at a scale, as NPO's
negative branch). Branches that share weights run in **one** batched model
call, as diffusers' CFG does; each distinct set of weights is one more call.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Protocol

import torch

from .guidance import CFG, Rule


class Weights(Protocol):
    """Weights a branch runs with. ``key`` groups branches into one call; ``forward`` runs the model with them."""

    key: str

    def forward(self, model: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, conditioning: dict) -> torch.Tensor: ...


def _has_adapters(model) -> bool:
    return bool(getattr(model, "peft_config", None))


@dataclass(frozen=True)
class BaseWeights:
    """The model's own weights (theta): peft adapters loaded on the model are switched off for this call."""

    key: str = "base"

    def forward(self, model, x, t, conditioning):
        if not _has_adapters(model):
            return model(x, t, **conditioning, return_dict=False)[0]
        model.disable_adapters()
        try:
            return model(x, t, **conditioning, return_dict=False)[0]
        finally:
            model.enable_adapters()


@dataclass(frozen=True)
class AdapterWeights:
    """The model with peft adapters active at scales (theta + sum_i scale_i * delta_i), e.g. NPO's negative branch.

    The adapters are loaded on the model (``model.add_adapter`` / diffusers' ``load_lora_adapter``); this call
    activates ``names`` at ``scales`` and restores the model's previous adapter setting afterwards.
    """

    names: tuple[str, ...]
    scales: tuple[float, ...]

    @property
    def key(self) -> str:
        return "adapters:" + ",".join(f"{n}={s}" for n, s in zip(self.names, self.scales))

    def forward(self, model, x, t, conditioning):
        previous = list(getattr(model, "active_adapters", lambda: [])())
        model.enable_adapters()
        model.set_adapters(list(self.names), weights=list(self.scales))
        try:
            return model(x, t, **conditioning, return_dict=False)[0]
        finally:
            if previous:
                model.set_adapters(previous)


#: The row name of peft's mixed-batch inference for "no adapter" (theta).
BASE_ROWS = "__base__"


_LORA_LAYERS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def lora_layers(model) -> list:
    """The peft LoRA layers of ``model``, cached until its set of adapters changes."""
    from peft.tuners.lora import LoraLayer

    adapters = tuple(getattr(model, "peft_config", {}))
    cached = _LORA_LAYERS.get(model)
    if cached is None or cached[0] != adapters:
        cached = (adapters, [m for m in model.modules() if isinstance(m, LoraLayer)])
        _LORA_LAYERS[model] = cached
    return cached[1]


def forward_rows(model, rows: list[str], *args, **kwargs) -> torch.Tensor:
    """``model(*args, **kwargs)`` with row i of the batch run by the one peft LoRA adapter ``rows[i]``.

    peft's mixed-batch LoRA inference (``adapter_names``, ``BASE_ROWS`` for theta): every LoRA layer adds each
    adapter's output to its own rows only, so branches with different adapters share one batched call.
    """

    def inject(module, args, kwargs):
        inputs = (args[0] if args else kwargs["x"]).shape[0]
        # video denoisers fold frames (spatial layers) or pixels (temporal layers) into the batch, the batch
        # outermost (diffusers' reshapes): each row of the call is then len(inputs) / len(rows) rows in a run
        kwargs["adapter_names"] = rows if inputs == len(rows) else [r for r in rows for _ in range(inputs // len(rows))]
        return args, kwargs

    layers = lora_layers(model)
    if any(layer.disable_adapters for layer in layers):
        model.enable_adapters()
    handles = [layer.register_forward_pre_hook(inject, with_kwargs=True) for layer in layers]
    try:
        return model(*args, **kwargs)
    finally:
        for handle in handles:
            handle.remove()


@dataclass(frozen=True)
class RowAdapter:
    """The model with ONE named peft LoRA adapter at the scale it holds (``BASE_ROWS``: theta).

    All branches with :class:`RowAdapter` weights run in **one** batched call (their common ``key``), each on
    its own rows (:func:`forward_rows`): NPO's theta (+ eta) for the prompt and theta + alpha*eta + beta*delta
    for the negative (NPO Eq. 10), the sum being one stacked adapter (:mod:`reneg.methods.npo.weights`).
    """

    adapter: str = BASE_ROWS
    key: str = "lora-rows"

    def forward(self, model, x, t, conditioning):
        return self.forward_group(model, x, t, conditioning, [self])

    @staticmethod
    def forward_group(model, x, t, conditioning, weights: list[RowAdapter]) -> torch.Tensor:
        """One call for branches of equal batch size concatenated in the order of ``weights``."""
        per_branch = x.shape[0] // len(weights)
        rows = [w.adapter for w in weights for _ in range(per_branch)]
        return forward_rows(model, rows, x, t, **conditioning, return_dict=False)[0]


@dataclass(frozen=True)
class ModuleWeights:
    """Another module with the model's signature in place of the model (e.g. a second UNet)."""

    module: torch.nn.Module
    key: str = "module"

    def forward(self, model, x, t, conditioning):
        return self.module(x.to(self.module.dtype), t, **_cast(conditioning, self.module.dtype),
                           return_dict=False)[0]


BASE = BaseWeights()


@dataclass
class Branch:
    """One term of the guidance rule: the model's keyword arguments (batched) and the weights it runs with."""

    conditioning: dict[str, Any]
    weights: Weights = field(default=BASE)
    #: no gradient flows back through this branch's output (NPO Eq. 7's ablation trains through the prompt only)
    frozen: bool = False


def _cast(value, dtype):
    """Floating tensors (also inside dicts, lists and tuples) cast to ``dtype``; everything else as is."""
    if torch.is_tensor(value):
        return value.to(dtype) if value.is_floating_point() else value
    if isinstance(value, dict):
        return {k: _cast(v, dtype) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_cast(v, dtype) for v in value)
    return value


def _concat(values: list):
    """Concatenate the same keyword argument of several branches along the batch (recursing into containers)."""
    first = values[0]
    if torch.is_tensor(first):
        return torch.cat(values)
    if isinstance(first, dict):
        return {k: _concat([v[k] for v in values]) for k in first}
    if isinstance(first, (list, tuple)):
        return type(first)(_concat(list(parts)) for parts in zip(*values))
    if any(v != first for v in values[1:]):
        raise ValueError(f"branches disagree on a non-tensor model argument: {values}")
    return first


def _split(output: torch.Tensor, count: int) -> list[torch.Tensor]:
    return list(output.chunk(count))


@dataclass
class GuidedDenoiser:
    """Guided model output at (x_t, t): each branch's output, combined by ``rule`` (ReNeg Eq. 5 by default).

    Args:
        model: the family's denoising network (``UNet2DConditionModel``, a transformer, ...).
        branches: name -> :class:`Branch`; the rule reads the names it needs (``negative``, ``cond``, ``null``).
        guidance_scale: the scale of the rule (a float, or a tensor when it is learned).
        rule: a :class:`reneg.core.guidance.Rule` (``CFG``, ``THREE_TERM``, ``DNS``).
    """

    model: torch.nn.Module
    branches: dict[str, Branch]
    guidance_scale: float | torch.Tensor = 7.5
    rule: Rule = CFG

    def __post_init__(self):
        missing = [name for name in self.rule.branches if name not in self.branches]
        if missing:
            raise ValueError(f"guidance rule '{self.rule.name}' needs branches {', '.join(missing)}")

    @cached_property
    def dtype(self) -> torch.dtype:
        """The model's dtype, read once: diffusers' ``model.dtype`` walks every parameter at each call."""
        return self.model.dtype

    @property
    def uses_guidance(self) -> bool:
        """diffusers skips CFG for a constant scale <= 1; so do we (the negative then has no effect)."""
        return not self.rule.skips_below_one or torch.is_tensor(self.guidance_scale) or self.guidance_scale > 1

    def outputs(self, x_t: torch.Tensor, t: torch.Tensor, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
        """The model output of each named branch: one batched call per distinct set of weights."""
        groups: dict[str, list[str]] = {}
        for name in names:
            groups.setdefault(self.branches[name].weights.key, []).append(name)
        dtype, outputs = self.dtype, {}
        for group in groups.values():
            weights = self.branches[group[0]].weights
            conditioning = _cast(_concat([self.branches[name].conditioning for name in group]), dtype)
            x = torch.cat([x_t] * len(group)).to(dtype)
            forward_group = getattr(weights, "forward_group", None)  # several weights, one call (RowAdapter)
            if forward_group is not None:
                output = forward_group(self.model, x, t, conditioning, [self.branches[n].weights for n in group])
            else:
                output = weights.forward(self.model, x, t, conditioning)
            for name, part in zip(group, _split(output, len(group))):
                outputs[name] = part.detach() if self.branches[name].frozen else part
        return outputs

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        guided_call = getattr(self.rule, "guided_call", None)  # a rule that guides inside the model (NAG)
        if guided_call is not None:
            return guided_call(self, x_t, t)
        if not self.uses_guidance:
            return self.outputs(x_t, t, ("cond",))["cond"]
        outputs = self.outputs(x_t, t, self.rule.branches)
        return self.rule.combine(*(outputs[name] for name in self.rule.branches), self.guidance_scale)
