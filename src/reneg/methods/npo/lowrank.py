"""NPO inference without peft's per-layer dispatch: each offset as one low-rank product on the rows it adapts.

NPO Eq. 10 runs the negative branch with ``theta + alpha*eta + beta*delta`` and the prompt's with ``theta (+ eta)``.
peft's mixed-batch LoRA (:class:`reneg.core.denoiser.RowAdapter`) gives that in one call, but every adapted layer
then dispatches per adapter in Python and every call registers hooks; on a small UNet that costs more than the
offsets' arithmetic. Here a LoRA file is read once into plain tensors, ``A`` (r, in) and ``B`` (out, r) with its
scale folded in (the sum of offsets stacked by rank, exactly as :func:`~reneg.methods.npo.weights.stack_adapters`),
and one forward hook per adapted ``nn.Linear`` adds ``(x[rows] @ A.T) @ B.T`` to the rows of the branch that
carries it, in the one batched call of the guided denoiser (the factors kept transposed and contiguous, the sum
one in-place ``addmm_`` when no gradient is taken). Nothing is wrapped or loaded into the UNet.

Only LoRA files that say how they scale (peft's config in the file's metadata, as ``reneg npo`` and diffusers'
trainers write it) on linear layers are read here; any other layer or layout returns None, and the caller uses
the peft path.
"""

from __future__ import annotations

import contextlib
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ...core.denoiser import BASE
from .weights import check_adapter_path, denoiser_of

#: (start, stop) fractions of the batch and the offsets of the branch in those rows, while a call is active
_ACTIVE: list[tuple[float, float, dict]] = []
_HOOKED: "weakref.WeakSet[torch.nn.Module]" = weakref.WeakSet()


def _add_offsets(module, args, output):
    if not _ACTIVE:
        return output
    x = args[0]
    rows = x.shape[0]
    for start, stop, offsets in _ACTIVE:
        factors = offsets.get(module)
        if factors is None:
            continue
        first, last = round(rows * start), round(rows * stop)  # video folds frames into the batch, batch outermost
        down, up = factors  # A.T (in, r) and B.T (r, out), contiguous
        if torch.is_grad_enabled():
            delta = (x[first:last] @ down) @ up
            output = torch.cat([output[:first], output[first:last] + delta, output[last:]])
        else:  # in place, one fused multiply-add on the rows (a row slice of a contiguous output is contiguous)
            rows_out = output[first:last]
            rows_out.view(-1, rows_out.shape[-1]).addmm_(x[first:last].reshape(-1, x.shape[-1]) @ down, up)
    return output


def _hook(module: torch.nn.Module) -> None:
    if module not in _HOOKED:
        module.register_forward_hook(_add_offsets)
        _HOOKED.add(module)


def _module_config(metadata: dict, prefix: str) -> dict | None:
    keys = ("r", "lora_alpha", "use_rslora", "use_dora", "rank_pattern", "alpha_pattern")
    config = {k: metadata.get(prefix + k) for k in keys}
    if config["r"] is None or config["lora_alpha"] is None or config["use_dora"] or config["rank_pattern"] \
            or config["alpha_pattern"]:
        return None
    return config


def read_offsets(pipe, path: str | Path, scale: float = 1.0) -> dict[torch.nn.Module, tuple] | None:
    """``{linear module: (A.T, (scale * s * B).T)}`` of the LoRA at ``path`` on ``pipe``'s denoiser (s = alpha/r, or
    alpha/sqrt(r) for rsLoRA), each contiguous, or None where the file is not one this path reads."""
    path = check_adapter_path(path, what="LoRA")
    directory, weight_name = (path, None) if path.is_dir() else (path.parent, path.name)
    if not hasattr(type(pipe), "lora_state_dict"):  # a pipeline without a LoRA loader (PixArt): the peft path
        return None
    try:
        state, _, metadata = type(pipe).lora_state_dict(str(directory), weight_name=weight_name,
                                                        return_lora_metadata=True)
    except (TypeError, ValueError, OSError, KeyError):
        return None
    denoiser = denoiser_of(pipe)
    prefix = "unet." if getattr(pipe, "unet", None) is not None else "transformer."
    config = _module_config(metadata or {}, prefix)
    if config is None or not state or not all(k.startswith(prefix) for k in state):
        return None
    scaling = config["lora_alpha"] / (config["r"] ** 0.5 if config["use_rslora"] else config["r"])
    offsets = {}
    for key, value in state.items():
        if not key.endswith(".lora_A.weight"):
            continue
        name = key[len(prefix):-len(".lora_A.weight")]
        up = state.get(f"{prefix}{name}.lora_B.weight")
        try:
            module = denoiser.get_submodule(name)
        except AttributeError:
            return None
        module = module.get_base_layer() if hasattr(module, "get_base_layer") else module
        if up is None or not isinstance(module, torch.nn.Linear):
            return None
        weight = module.weight
        offsets[module] = (value.to(weight.device, weight.dtype).T.contiguous(),
                           (up.float() * (scale * scaling)).to(weight.device, weight.dtype).T.contiguous())
    if len(offsets) * 2 != len(state):
        return None
    return offsets


def stack(*terms: dict | None) -> dict:
    """The sum of several offsets on one branch, exactly: ranks stacked per module (``A = [A1; A2]``,
    ``B = [B1, B2]``, kept transposed: ``A.T = [A1.T, A2.T]``, ``B.T = [B1.T; B2.T]``)."""
    out: dict = {}
    for term in terms:
        for module, (down, up) in (term or {}).items():
            if module in out:
                down0, up0 = out[module]
                out[module] = (torch.cat([down0, down], dim=1), torch.cat([up0, up]))
            else:
                out[module] = (down, up)
    return out


@dataclass(frozen=True, eq=False)
class LowRankRows:
    """Weights of a branch: theta plus the low-rank ``offsets`` on its rows (empty: theta). All branches with
    these weights run in one batched call (their common ``key``), each offset on its own rows only."""

    offsets: dict = field(default_factory=dict)
    key: str = "lowrank-rows"

    def __post_init__(self):
        for module in self.offsets:
            _hook(module)

    def forward(self, model, x, t, conditioning):
        return self.forward_group(model, x, t, conditioning, [self])

    @staticmethod
    def forward_group(model, x, t, conditioning, weights: list[LowRankRows]) -> torch.Tensor:
        """One call for branches of equal batch size concatenated in the order of ``weights``."""
        count = len(weights)
        active = [(i / count, (i + 1) / count, w.offsets) for i, w in enumerate(weights) if w.offsets]
        with _activated(active):
            return BASE.forward(model, x, t, conditioning)  # theta: peft adapters loaded by others stay off


@contextlib.contextmanager
def _activated(active: list):
    _ACTIVE.extend(active)
    try:
        yield
    finally:
        del _ACTIVE[len(_ACTIVE) - len(active):]


@dataclass(frozen=True, eq=False)
class LowRankNPOWeights:
    """NPO Eq. 10 on one UNet without peft: the prompt's rows theta (+ eta), the negative's theta + alpha*eta +
    beta*delta."""

    cond: LowRankRows
    negative: LowRankRows

    def branch_weights(self) -> tuple[LowRankRows, LowRankRows]:
        return self.cond, self.negative


def lowrank_npo(pipe, *, npo: str | Path | None = None, beta: float = 1.0, lora: str | Path | None = None,
                alpha: float = 1.0) -> LowRankNPOWeights | None:
    """The weights of :func:`~reneg.methods.npo.weights.install_npo` on this path, or None where a file is not
    one it reads (the caller then installs the peft adapters)."""
    delta = read_offsets(pipe, npo, beta) if npo is not None else {}
    eta = read_offsets(pipe, lora, 1.0) if lora is not None else {}
    if delta is None or eta is None:
        return None
    eta_negative = {module: (down, alpha * up) for module, (down, up) in eta.items()}
    return LowRankNPOWeights(LowRankRows(eta), LowRankRows(stack(eta_negative, delta)))
