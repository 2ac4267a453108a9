"""Normalized Attention Guidance (NAG; Chen et al. 2025, arXiv 2505.21179): negative guidance in attention space.

CFG needs two denoiser passes and does nothing at guidance 1 (distilled, turbo, few-step models). NAG guides
inside each cross-attention layer instead: with ``z+`` / ``z-`` the attention outputs for the prompt's and the
negative's text-encoder outputs (NAG Eq. 4-6)::

    z~ = s * z+ - (s - 1) * z-                                   extrapolate away from the negative
    z^ = z~ * min(1, tau * ||z+||_1 / ||z~||_1)                  clip the norm ratio (per token, L1)
    z  = alpha * z^ + (1 - alpha) * z+                           blend back towards the prompt

The negative is a text-encoder output tensor, exactly what ReNeg learns: :class:`NAGRule` is a guidance rule
of the one rollout, so ``reneg train --guidance nag`` learns it with the objective, loop and files of CFG.

Two ways the layers see the two texts, chosen by the family's ``attention_guidance``:

- ``"cross"`` (UNets: SD1.x/2.x, SDXL): one denoiser pass on the prompt's rows; the ``encoder_hidden_states``
  carry the negative's rows after the prompt's, and each cross-attention (``attn2``) layer attends to both
  and combines them before its output projection. Every other layer runs once: the cost is one pass plus a
  second key/value projection and attention per cross-attention layer.
- ``"joint"`` (MM-DiT: SD3, Flux): the negative's text is a stream of its own through the joint blocks, so the batch
  holds the image twice (prompt's text, negative's text); each joint attention combines the image tokens' two
  outputs before its output projection and gives both rows the result, so the image stream stays one. The
  pooled embedding, which modulates the whole block, stays the prompt's (the reference pipeline uses the
  negative's pooled embedding for the negative text stream; here the negative is its sequence only). Cost:
  a second pass, as CFG. Flux's single-stream blocks (text and image tokens in one sequence, no output
  projection in the attention) combine the image tokens' attention outputs and keep each row's text tokens.

Parameters follow the reference pipelines (ChenDarYen/Normalized-Attention-Guidance): tau = 2.5, alpha =
0.25 for transformers and 0.5 for UNets, ``end`` = 1.0 (NAG at timesteps t >= (1 - end) * 1000, the
reference's ``nag_end``), scale s has no default there (1 = off; its examples use 5). The paper writes the
ratio with the L1 norm; the reference's Flux processor uses L2: ``norm`` chooses (default 1, the paper's).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import torch

from ..errors import ReNegError
from .guidance import CFG, Rule

#: NAG's defaults (the reference pipelines'); alpha depends on the architecture (see :func:`default_alpha`).
DEFAULT_TAU = 2.5
DEFAULT_END = 1.0
#: the scale s where none is given (the reference pipelines' examples; their own default, 1, is NAG off)
NAG_DEFAULT_SCALE = 5.0
ALPHA = {"cross": 0.5, "joint": 0.25}
NUM_TRAIN_TIMESTEPS = 1000


def nag(z_positive: torch.Tensor, z_negative: torch.Tensor, scale: float | torch.Tensor, *, tau: float = DEFAULT_TAU,
        alpha: float = 0.5, norm: int = 1) -> torch.Tensor:
    """NAG's combination of two attention outputs (NAG Eq. 4-6; the module docstring), per token (last dim).

    With ``z_negative == z_positive`` or ``scale == 1`` it returns ``z_positive`` (the ratio is 1 <= tau).
    Differentiable in both outputs and the scale; a zero extrapolation is left at zero (no 0/0).
    """
    guided = scale * z_positive - (scale - 1) * z_negative
    norm_positive = torch.linalg.vector_norm(z_positive, ord=norm, dim=-1, keepdim=True)
    norm_guided = torch.linalg.vector_norm(guided, ord=norm, dim=-1, keepdim=True)
    # min(1, tau / ratio) with ratio = |guided| / |positive|, written without dividing by a zero |guided|
    limit = tau * norm_positive
    factor = torch.where(norm_guided > limit, limit / norm_guided.clamp_min(torch.finfo(guided.dtype).tiny), 1.0)
    return alpha * (guided * factor) + (1 - alpha) * z_positive


@dataclass
class _Active:
    """What the installed processors apply during one guided call (None between calls: they pass through)."""

    scale: float | torch.Tensor = 1.0
    tau: float = DEFAULT_TAU
    alpha: float = 0.5
    norm: int = 1
    #: text tokens ahead of the image tokens in a single-stream block's rows (Flux)
    text_tokens: int = 0


@dataclass
class _Cell:
    active: _Active | None = None


def _combine_rows_hook(cell: _Cell):
    """A pre-hook on an attention's output projection: its input's two halves (prompt rows, negative rows) are
    combined by :func:`nag` and both halves become the result."""

    def hook(module, args):
        active = cell.active
        positive, negative = args[0].chunk(2)
        guided = nag(positive, negative, active.scale, tau=active.tau, alpha=active.alpha, norm=active.norm)
        return (torch.cat([guided, guided]), *args[1:])

    return hook


class NAGProcessor:
    """Wraps an attention layer's diffusers processor; between NAG calls it is that processor.

    During a NAG call (``cell.active`` set) the prompt's rows and the negative's rows of the layer's attention
    output are combined by :func:`nag`, before the output projection where the layer has one:

    - ``kind="cross"``: the layer is given B query rows and 2B text rows (prompt's, negative's); it runs its
      processor on the queries twice and returns B rows.
    - ``kind="joint"``: the layer is given 2B rows of both (a joint call's batch) and returns 2B rows.
    - ``kind="single"`` (Flux's single-stream blocks, no output projection): the 2B rows hold [text, image]
      tokens; the image tokens' outputs are combined, each row keeps its text tokens' own.
    """

    def __init__(self, processor, cell: _Cell, kind: str):
        self.processor, self.cell, self.kind = processor, cell, kind

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, *args, **kwargs):
        def call(states, text):
            return self.processor(attn, states, text, attention_mask, *args, **kwargs)

        active = self.cell.active
        if active is None or (encoder_hidden_states is None and self.kind != "single"):
            return call(hidden_states, encoder_hidden_states)
        if self.kind == "single":
            output = call(hidden_states, encoder_hidden_states)
            positive, negative = output.chunk(2)
            text = active.text_tokens
            image = nag(positive[:, text:], negative[:, text:], active.scale, tau=active.tau, alpha=active.alpha,
                        norm=active.norm)
            return torch.cat([torch.cat([positive[:, :text], image], 1), torch.cat([negative[:, :text], image], 1)])
        rows = hidden_states.shape[0]
        if self.kind == "cross":
            if encoder_hidden_states.shape[0] != 2 * rows:
                raise ValueError(f"NAG's cross-attention expects 2 x {rows} text rows, got "
                                 f"{encoder_hidden_states.shape[0]}")
            hidden_states = torch.cat([hidden_states, hidden_states])
        handle = attn.to_out[0].register_forward_pre_hook(_combine_rows_hook(self.cell))
        try:
            output = call(hidden_states, encoder_hidden_states)
        finally:
            handle.remove()
        return output[:rows] if self.kind == "cross" else output


def _guided_layers(model: torch.nn.Module, mode: str) -> list[tuple[torch.nn.Module, str]]:
    """The attention layers NAG acts in and how: cross-attention (``attn2``) for UNets; for MM-DiTs the joint
    attention layers (SD3, Flux's double-stream blocks) and Flux's single-stream ones."""
    layers = []
    for module in model.modules():
        if not hasattr(module, "processor") or not hasattr(module, "to_q"):
            continue
        joint = getattr(module, "add_k_proj", None) is not None
        projected = getattr(module, "to_out", None) is not None
        if mode == "cross" and getattr(module, "is_cross_attention", False) and not joint and projected:
            layers.append((module, "cross"))
        elif mode == "joint" and joint and projected:
            layers.append((module, "joint"))
        elif mode == "joint" and getattr(module, "pre_only", False) and not joint and not projected:
            layers.append((module, "single"))
    return layers


_INSTALLED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def install(model: torch.nn.Module, mode: str) -> _Cell:
    """Wrap the processors of ``model``'s guided layers once (idempotent); returns the cell that switches them."""
    cell = _INSTALLED.get(model)
    layers = _guided_layers(model, mode)
    if cell is not None and all(isinstance(layer.processor, NAGProcessor) for layer, _ in layers):
        return cell
    if not layers:
        raise ValueError(f"{type(model).__name__} has no {mode}-attention layer for NAG")
    cell = _Cell()
    for layer, kind in layers:
        processor = layer.processor
        if isinstance(processor, NAGProcessor):
            processor = processor.processor
        layer.processor = NAGProcessor(processor, cell, kind)
    _INSTALLED[model] = cell
    return cell


def _network(model: torch.nn.Module) -> torch.nn.Module:
    """The network behind a family's wrapped denoiser (a transformer), or the model itself (a UNet)."""
    return getattr(model, "network", model)


@dataclass(frozen=True)
class NAGRule(Rule):
    """NAG as a guidance rule of the one rollout: reads the ``cond`` and ``negative`` branches, runs one guided
    model call (two rows for ``"joint"``); the scale of the rollout is NAG's s.

    Built by :func:`nag_rule` for a family (its ``attention_guidance`` is ``mode``).
    """

    name: str = "nag"
    branches: tuple[str, ...] = ("negative", "cond")
    combine: object = None
    mode: str = "cross"
    tau: float = DEFAULT_TAU
    alpha: float = ALPHA["cross"]
    end: float = DEFAULT_END
    norm: int = 1
    #: the text keys of a branch's conditioning that the negative's replace on its rows
    text_keys: tuple[str, ...] = field(default=("encoder_hidden_states",))

    def active_at(self, t: torch.Tensor) -> bool:
        """NAG's step window: timesteps t >= (1 - end) * 1000 (the reference's ``nag_end``)."""
        return float(t) >= (1 - self.end) * NUM_TRAIN_TIMESTEPS

    def settings(self) -> dict[str, str]:
        """What an embedding file records of the rule it was learned for."""
        return {"guidance": "nag", "nag_tau": repr(self.tau), "nag_alpha": repr(self.alpha),
                "nag_end": repr(self.end), "nag_norm": str(self.norm)}

    def guided_call(self, denoiser, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The guided model output at (x_t, t): one NAG call, or the prompt's pass alone where NAG is off."""
        scale = denoiser.guidance_scale
        off = not torch.is_tensor(scale) and scale == 1
        if off or not self.active_at(t):
            return denoiser.outputs(x_t, t, ("cond",))["cond"]
        cond, negative = denoiser.branches["cond"], denoiser.branches["negative"]
        if cond.weights.key != "base" or negative.weights.key != "base":
            raise ValueError("NAG runs the model's own weights on both texts (no NPO adapters)")
        from .denoiser import _cast

        dtype = denoiser.dtype
        conditioning = dict(cond.conditioning)
        for key in self.text_keys:
            conditioning[key] = torch.cat([cond.conditioning[key], negative.conditioning[key]])
        if self.mode == "joint":  # both rows run the prompt's other inputs (pooled, ...) and the same image
            conditioning = {k: v if k in self.text_keys else _twice(v) for k, v in conditioning.items()}
            x = torch.cat([x_t, x_t])
        else:
            x = x_t
        cell = install(_network(denoiser.model), self.mode)
        cell.active = _Active(scale=scale, tau=self.tau, alpha=self.alpha, norm=self.norm,
                              text_tokens=conditioning[self.text_keys[0]].shape[1])
        try:
            output = denoiser.model(x.to(dtype), t, **_cast(conditioning, dtype), return_dict=False)[0]
        finally:
            cell.active = None
        return output[: x_t.shape[0]]


def _twice(value):
    if torch.is_tensor(value):
        return torch.cat([value, value])
    if isinstance(value, dict):
        return {k: _twice(v) for k, v in value.items()}
    return value


def nag_rule(mode: str, *, tau: float = DEFAULT_TAU, alpha: float | None = None, end: float = DEFAULT_END,
             norm: int = 1) -> NAGRule:
    """The NAG rule for a family whose ``attention_guidance`` is ``mode`` (``"cross"`` or ``"joint"``);
    ``alpha=None`` takes the reference's default for the architecture."""
    if mode not in ALPHA:
        raise ValueError(f"NAG needs cross or joint attention, not '{mode}'")
    return NAGRule(mode=mode, tau=tau, alpha=ALPHA[mode] if alpha is None else alpha, end=end, norm=norm)


def guidance_rule(family, guidance: str = "cfg", *, tau: float = DEFAULT_TAU, alpha: float | None = None,
                  end: float = DEFAULT_END, norm: int = 1) -> Rule:
    """The rule ``guidance`` names for ``family``: CFG (ReNeg Eq. 5), or NAG where the family's attention takes
    it (refused in one line elsewhere)."""
    if guidance == "cfg":
        return CFG
    if guidance != "nag":
        raise ReNegError(f"unknown guidance '{guidance}': use cfg or nag")
    if family.attention_guidance is None:
        raise ReNegError(f"NAG is not available for {family.name} pipelines yet (it needs the family's "
                         "cross- or joint-attention layers): use --guidance cfg")
    return nag_rule(family.attention_guidance, tau=tau, alpha=alpha, end=end, norm=norm)


def rule_from_metadata(family, metadata: dict) -> Rule:
    """The rule an embedding file says it was learned for (``guidance``, ``nag_*``; CFG for files without)."""
    if metadata.get("guidance", "cfg") != "nag":
        return guidance_rule(family, "cfg")
    try:
        tau, end = float(metadata.get("nag_tau", DEFAULT_TAU)), float(metadata.get("nag_end", DEFAULT_END))
        alpha = float(metadata["nag_alpha"]) if "nag_alpha" in metadata else None
        norm = int(metadata.get("nag_norm", 1))
    except ValueError:
        tau = end = norm = None
    if tau is None or not (tau > 0 and 0 <= end <= 1 and (alpha is None or 0 <= alpha <= 1) and norm in (1, 2)):
        raise ReNegError("the file's NAG settings (nag_tau, nag_alpha, nag_end, nag_norm) are not valid numbers in "
                         "range: train it again (or write valid ones into its metadata)")
    return guidance_rule(family, "nag", tau=tau, alpha=alpha, end=end, norm=norm)


def learned_scale(metadata: dict) -> float:
    """NAG's s for a file learned for NAG when none is asked: the s it was learned at, else NAG's default (a model's
    CFG scale is no NAG scale). One line for a value that is not a number in [0, 100]."""
    text = metadata.get("guidance_scale", NAG_DEFAULT_SCALE)
    try:
        scale = float(text)
    except ValueError:
        scale = float("nan")
    if not 0 <= scale <= 100:
        raise ReNegError(f"the file's guidance_scale '{text}' is not a number in [0, 100]: pass --guidance-scale, "
                         "or train it again")
    return scale


def rule_metadata(rule: Rule) -> dict[str, str]:
    """What an embedding file records of the rule it was learned for."""
    settings = getattr(rule, "settings", None)
    return settings() if settings is not None else {"guidance": rule.name}
