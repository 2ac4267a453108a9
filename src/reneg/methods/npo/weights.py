"""Diffusion-NPO's weights on ONE UNet: adapter files, the negative branch theta + alpha*eta + beta*delta in one call.

Symbols (NPO Sec. 3.2): theta the base model, eta a positive preference offset (any LoRA, ``--lora``), delta the
negative preference offset (``reneg npo``). The prompt's branch runs theta (+ eta), the negative branch
``theta_neg = theta + alpha*eta + beta*delta`` (NPO Eq. 10); with no delta it is the weight-merge approximation
theta + gamma*eta of NPO Eq. 4 (gamma = alpha).

One UNet, one call per step: the negative's sum of offsets is ONE LoRA adapter built once by stacking ranks,
``A = [A_eta; A_delta]``, ``B = [alpha*s_eta*B_eta, beta*s_delta*B_delta]`` (s the adapter's alpha/r), so that
``B A = alpha*s_eta*B_eta A_eta + beta*s_delta*B_delta A_delta`` exactly; then peft's mixed-batch inference runs
the prompt's rows with theta (or eta) and the negative's rows with that adapter in one batched UNet call
(:class:`reneg.core.denoiser.RowAdapter`). No second UNet, no weights reloaded per step.

An adapter directory (``reneg npo --out DIR``) holds diffusers' LoRA file ``pytorch_lora_weights.safetensors``
(peft key names, the ``LoraConfig`` in its metadata; ``pipe.load_lora_weights(DIR)`` loads it) and ``npo.json``
(reneg's metadata: route, reward, steps, the base UNet's fingerprint, ...).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from ...core.denoiser import BASE_ROWS, RowAdapter, forward_rows, lora_layers
from ...core.fingerprint import denoiser_fingerprint, denoisers_match
from ...errors import ReNegError
from ...io import make_readable, sort_safetensors_metadata, write_json

logger = logging.getLogger(__name__)

ADAPTER_FILE = "pytorch_lora_weights.safetensors"
METADATA_FILE = "npo.json"
FORMAT = "reneg.npo_adapter"
VERSION = "1"


# ---------------------------------------------------------------- files


def _json_ready(value):
    if isinstance(value, (set, frozenset, tuple)):
        return sorted(value) if isinstance(value, (set, frozenset)) else list(value)
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    return value


def denoiser_of(pipe):
    """The network NPO's adapters sit on: ``pipe.unet`` (SD, SDXL, AnimateDiff, ...) or ``pipe.transformer``
    (SD3, PixArt), with diffusers' peft adapter API (:func:`with_adapter_api`)."""
    return with_adapter_api(pipe.unet if getattr(pipe, "unet", None) is not None else pipe.transformer)


def with_adapter_api(module):
    """``module`` with diffusers' ``PeftAdapterMixin`` (``add_adapter``, ``set_adapters``, ...).

    diffusers 0.42 leaves it out of ``UNet3DConditionModel`` (TextToVideoSD, ZeroScope) although its attention
    layers take a LoRA as any UNet's: the module's class gains the mixin, under the same class name (so that
    ``save_pretrained`` writes the same config)."""
    from diffusers.loaders.peft import PeftAdapterMixin

    module = getattr(module, "network", module)
    if not isinstance(module, PeftAdapterMixin):
        cls = type(module)
        module.__class__ = type(cls.__name__, (cls, PeftAdapterMixin), {"__module__": cls.__module__})
    return module


def save_adapter(unet, adapter_name: str, out: str | Path, metadata: dict) -> Path:
    """Write ``adapter_name`` of ``unet`` (or a transformer) as diffusers' LoRA file plus ``npo.json`` into
    ``out``; each file atomic. A transformer's keys are written under ``transformer.``, as SD3's loader reads
    (and :func:`load_adapter` reads them for a pipeline without a LoRA loader, PixArt)."""
    from diffusers import StableDiffusion3Pipeline, StableDiffusionPipeline
    from peft.utils import get_peft_model_state_dict

    unet = getattr(unet, "network", unet)  # a wrapped denoiser's network

    out = Path(out)
    state = {k: v.detach().to("cpu", torch.float32).contiguous()
             for k, v in get_peft_model_state_dict(unet, adapter_name=adapter_name).items()}
    config = _json_ready({k: v for k, v in unet.peft_config[adapter_name].to_dict().items()})
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        if not type(unet).__name__.startswith("UNet"):  # SD3, PixArt: diffusers' transformer layout
            StableDiffusion3Pipeline.save_lora_weights(staging, transformer_lora_layers=state,
                                                       transformer_lora_adapter_metadata=config,
                                                       weight_name=ADAPTER_FILE)
        else:
            StableDiffusionPipeline.save_lora_weights(staging, unet_lora_layers=state,
                                                      unet_lora_adapter_metadata=config, weight_name=ADAPTER_FILE)
        sort_safetensors_metadata(staging / ADAPTER_FILE)
        make_readable(staging / ADAPTER_FILE)
        os.replace(staging / ADAPTER_FILE, out / ADAPTER_FILE)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    write_json(out / METADATA_FILE, {"format": FORMAT, "version": VERSION,
                                     "base_model_fingerprint": denoiser_fingerprint(unet), **metadata})
    return out


def read_metadata(directory: str | Path) -> dict:
    """``npo.json`` of an adapter directory ({} for a LoRA made elsewhere)."""
    path = Path(directory) / METADATA_FILE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ReNegError(f"{path} is not readable JSON ({error}): rewrite it with `reneg npo` or remove it") from None


def check_adapter_path(path: str | Path, *, what: str) -> Path:
    """An existing LoRA: a directory with a ``.safetensors`` file, or a ``.safetensors`` file."""
    path = Path(path)
    if path.is_dir() and (any(path.glob("*.safetensors"))):
        return path
    if path.is_file() and path.suffix == ".safetensors":
        return path
    if path.is_dir():
        raise ReNegError(f"{what} '{path}' holds no .safetensors LoRA file: pass the directory `reneg npo` wrote")
    raise ReNegError(f"{what} '{path}' does not exist: pass a LoRA directory (e.g. `reneg npo --out DIR`) "
                     "or a .safetensors LoRA file")


def path_identity(path: str | Path) -> str:
    """Hash of a LoRA's bytes (its ``.safetensors`` files): names the adapter on the UNet and keys eval's cache."""
    path = Path(path)
    files = sorted(path.glob("*.safetensors")) if path.is_dir() else [path]
    digest = hashlib.sha256()
    for file in files:
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:12]


def load_adapter(pipe, path: str | Path, *, what: str) -> str:
    """Load a LoRA onto ``pipe``'s UNet once (named by its hash) and return the adapter's name."""
    path = check_adapter_path(path, what=what)
    name = f"lora_{path_identity(path)}"
    unet = denoiser_of(pipe)
    if name in getattr(unet, "peft_config", {}):
        return name
    metadata = read_metadata(path) if path.is_dir() else {}
    expected = metadata.get("base_model_fingerprint")
    if expected and not denoisers_match(expected, denoiser_fingerprint(unet)):
        logger.warning("%s '%s' was trained on other base weights than this model's UNet; applying it anyway "
                       "(NPO offsets transfer to fine-tunes of their base, NPO Fig. 4)", what, path)
    directory, weight_name = (path, None) if path.is_dir() else (path.parent, path.name)
    try:
        if hasattr(pipe, "load_lora_weights"):
            pipe.load_lora_weights(str(directory), weight_name=weight_name, adapter_name=name)
        else:  # no LoRA loader in the pipeline (PixArt): diffusers' own adapter loader on the denoiser
            unet.load_lora_adapter(str(directory), weight_name=weight_name or ADAPTER_FILE, prefix="transformer",
                                   adapter_name=name)
    except Exception as error:  # noqa: BLE001 - any failure to read the file is the user's input
        raise ReNegError(f"{what} '{path}' cannot be loaded as a LoRA for this model "
                         f"({str(error).splitlines()[0] if str(error) else type(error).__name__}): "
                         "pass a LoRA trained for this model's UNet") from None
    if name not in getattr(unet, "peft_config", {}):
        raise ReNegError(f"{what} '{path}' has no weights for this model's UNet: pass a UNet LoRA")
    for param in unet.parameters():
        param.requires_grad_(False)
    return name


def fuse_into_base(pipe, path: str | Path, *, what: str):
    """Add the LoRA at ``path`` (eta) into ``pipe.unet``'s own weights (theta + eta) and return a function that
    puts theta back exactly (a saved copy, not a subtraction). ``reneg npo --lora``: delta then trains on
    theta + eta with the prompt's rows at theta + eta, as the authors' release does."""
    from peft.tuners.lora import LoraLayer

    name, unet = load_adapter(pipe, path, what=what), denoiser_of(pipe)
    saved = []
    with torch.no_grad():
        for layer in [m for m in unet.modules() if isinstance(m, LoraLayer) and name in m.lora_A]:
            base = layer.get_base_layer()
            saved.append((base.weight, base.weight.detach().clone()))
            base.weight += layer.get_delta_weight(name).to(base.weight.dtype)
    unet.delete_adapters(name)

    def restore() -> None:
        with torch.no_grad():
            for weight, original in saved:
                weight.copy_(original)

    return restore


# ---------------------------------------------------------------- one adapter for a sum of offsets


def _base_scaling(layer, name: str) -> float:
    """peft's scaling of adapter ``name`` in ``layer`` at scale 1 (alpha/r, or alpha/sqrt(r) for rsLoRA)."""
    rank = layer.r[name]
    return layer.lora_alpha[name] / (math.sqrt(rank) if layer.use_rslora.get(name, False) else rank)


def stack_adapters(unet, terms: list[tuple[str, float]], name: str) -> str:
    """Add adapter ``name`` = sum of ``scale * adapter`` over ``terms``, exactly, by stacking ranks (built once).

    Each term's block sits at its own rank offset; a layer a term does not touch gets zeros there. The new
    adapter's scaling is 1 (lora_alpha = r). Returns ``name``.
    """
    from peft import LoraConfig
    from peft.tuners.lora import LoraLayer

    if name in getattr(unet, "peft_config", {}):
        return name
    layers = {module_name: module for module_name, module in unet.named_modules()
              if isinstance(module, LoraLayer) and any(term in module.lora_A for term, _ in terms)}
    if not layers:
        raise ReNegError("the LoRA adapters touch no layer of this UNet: pass LoRAs trained for this model")
    widths = [max(layer.r[term] for layer in layers.values() if term in layer.lora_A) for term, _ in terms]
    rank = sum(widths)
    with warnings.catch_warnings():  # peft warns that a model holds several adapters: that is the point here
        warnings.filterwarnings("ignore", message="Already found a `peft_config`")
        unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=sorted(layers), lora_dropout=0.0,
                                    init_lora_weights=True), adapter_name=name)
    with torch.no_grad():
        for layer in layers.values():
            new_a, new_b = layer.lora_A[name].weight, layer.lora_B[name].weight
            new_a.zero_()
            new_b.zero_()
            offset = 0
            for (term, scale), width in zip(terms, widths):
                if term in layer.lora_A:
                    r = layer.r[term]
                    new_a[offset:offset + r] = layer.lora_A[term].weight.to(new_a.dtype)
                    new_b[:, offset:offset + r] = (layer.lora_B[term].weight.float()
                                                   * (scale * _base_scaling(layer, term))).to(new_b.dtype)
                offset += width
            layer.scaling[name] = 1.0
    for param in unet.parameters():
        param.requires_grad_(False)
    return name


@dataclass(frozen=True)
class NPOWeights:
    """The adapters of NPO inference on one UNet: ``cond`` for the prompt's rows, ``negative`` for the negative's."""

    cond: str
    negative: str

    def branch_weights(self) -> tuple[RowAdapter, RowAdapter]:
        """(cond, negative) weights of the guided denoiser: both run in one batched call."""
        return RowAdapter(self.cond), RowAdapter(self.negative)


def install_npo(pipe, *, npo: str | Path | None = None, beta: float = 1.0, lora: str | Path | None = None,
                alpha: float = 1.0) -> NPOWeights:
    """Load delta (``npo``) and eta (``lora``) onto ``pipe.unet`` and build the branches' adapters (NPO Eq. 10).

    Args:
        npo: the negative preference offset delta (``reneg npo --out DIR``), or None.
        beta: delta's scale on the negative branch.
        lora: a positive offset eta (any diffusers-loadable UNet LoRA), or None: the prompt runs theta + eta.
        alpha: eta's scale on the negative branch; with no ``npo`` this is NPO Eq. 4's weight merge (gamma).
    """
    if npo is None and lora is None:
        raise ReNegError("NPO needs a negative adapter (--npo DIR) or a positive LoRA (--lora DIR) to merge")
    terms = []
    eta = load_adapter(pipe, lora, what="--lora") if lora is not None else None
    if eta is not None:
        terms.append((eta, float(alpha)))
    if npo is not None:
        terms.append((load_adapter(pipe, npo, what="--npo"), float(beta)))
    key = hashlib.sha256(repr(terms).encode()).hexdigest()[:12]
    negative = stack_adapters(denoiser_of(pipe), terms, f"npo_negative_{key}")
    cond = stack_adapters(denoiser_of(pipe), [(eta, 1.0)], f"npo_cond_{eta}") if eta is not None else BASE_ROWS
    return NPOWeights(cond, negative)


# ---------------------------------------------------------------- any diffusers pipeline


class NPOUNet(torch.nn.Module):
    """A stand-in for ``pipe.unet``: diffusers' CFG batch ``[negative rows; prompt rows]`` in one call, the first
    half with the negative branch's adapter, the second with the prompt's (NPO Eq. 10). Attributes the pipeline
    reads (``config``, ``dtype``, ``device``, ...) come from the wrapped UNet."""

    def __init__(self, unet, weights: NPOWeights, pipe=None, adapters_before: list[str] | None = None):
        super().__init__()
        self.unet = unet
        self.weights = weights
        self._pipe = [pipe]  # a list: not a registered submodule or config entry
        self.adapters_before = adapters_before  # what :func:`remove_npo` activates again (None: no adapter)

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("unet"), name)

    def _guided(self, batch: int) -> bool:
        pipe = self._pipe[0]
        guided = getattr(pipe, "do_classifier_free_guidance", True) if pipe is not None else True
        return bool(guided) and batch % 2 == 0

    def forward(self, sample, timestep, *args, **kwargs):
        batch = sample.shape[0]
        if self._guided(batch):
            rows = [self.weights.negative] * (batch // 2) + [self.weights.cond] * (batch // 2)
        else:
            rows = [self.weights.cond] * batch
        return forward_rows(self.unet, rows, sample, timestep, *args, **kwargs)


def apply_npo(pipe, *, npo: str | Path | None = None, beta: float = 1.0, lora: str | Path | None = None,
              alpha: float = 1.0):
    """One line for any diffusers pipeline with a ``unet`` and CFG: ``apply_npo(pipe, npo="delta_dir")``.

    Replaces ``pipe.unet`` by an :class:`NPOUNet` (ControlNet, AnimateDiff, img2img, ... keep working: the
    negative half of their CFG batch runs theta + alpha*eta + beta*delta). :func:`remove_npo` undoes it.
    """
    wrapper = pipe.unet if isinstance(pipe.unet, NPOUNet) else None
    unet = wrapper.unet if wrapper is not None else pipe.unet
    before = wrapper.adapters_before if wrapper is not None else _active_adapters(unet)
    pipe.unet = unet
    weights = install_npo(pipe, npo=npo, beta=beta, lora=lora, alpha=alpha)
    pipe.unet = NPOUNet(unet, weights, pipe, before)
    if "save_pretrained" not in vars(pipe):
        pipe.save_pretrained = _saving_the_base(pipe)
    return pipe


def remove_npo(pipe):
    """Put the plain UNet back, running as before :func:`apply_npo`: NPO's adapters stay loaded but off (loading
    makes the newest adapter active on every row), the adapters active before on again (at weight 1)."""
    if isinstance(pipe.unet, NPOUNet):
        wrapper = pipe.unet
        pipe.unet = wrapper.unet
        if wrapper.adapters_before is None:
            pipe.unet.disable_adapters()
        else:
            pipe.unet.set_adapters(wrapper.adapters_before)
    return pipe


def _active_adapters(unet) -> list[str] | None:
    """The peft adapters ``unet`` runs with (None: none loaded, or disabled)."""
    layers = lora_layers(unet)
    if not layers or any(layer.disable_adapters for layer in layers):
        return None
    return list(layers[0].active_adapters)


def _saving_the_base(pipe):
    """``pipe.save_pretrained`` of an :func:`apply_npo` pipeline: it writes the base pipeline, the UNet's own
    weights without NPO's adapters, which diffusers' ``from_pretrained`` loads (the adapters live in their own
    folders: apply them again after loading). NPO stays applied to ``pipe``."""
    save = type(pipe).save_pretrained

    def save_pretrained(*args, **kwargs):
        wrapper = pipe.unet if isinstance(pipe.unet, NPOUNet) else None
        remove_npo(pipe)
        unet = pipe.unet
        hook = unet._register_state_dict_hook(_without_adapters)
        try:
            return save(pipe, *args, **kwargs)
        finally:
            hook.remove()
            if wrapper is not None:
                pipe.unet = wrapper

    return save_pretrained


def _without_adapters(module, state_dict, prefix, local_metadata):
    """A state-dict hook: peft's wrapped layers under their plain names (``x.base_layer.weight`` as
    ``x.weight``), their adapters' tensors left out."""
    for key in list(state_dict):
        if ".lora_" in key or ".lora_magnitude_vector" in key:
            del state_dict[key]
        elif ".base_layer." in key:
            state_dict[key.replace(".base_layer.", ".")] = state_dict.pop(key)
    return state_dict
