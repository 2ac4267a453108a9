"""ReNeg NPO for ComfyUI: a Diffusion-NPO LoRA on the unconditional (negative) pass only (written by `reneg export`).

Diffusion-NPO guides with theta + beta*delta on CFG's negative branch and theta on the prompt's (NPO Eq. 10).
ComfyUI's LoRA loaders patch the weights for every pass; this node leaves the weights alone and, during each model
call, adds delta's low-rank product to the outputs of the adapted Linear layers on the rows of the unconditional
chunks only::

    y[rows] += strength * (alpha / r) * (x[rows] @ down.T) @ up.T     (down = lora_A (r, in), up = lora_B (out, r))

It puts a ``model_function_wrapper`` on a clone of the MODEL. ComfyUI calls that wrapper around every model call
with ``cond_or_uncond``, one entry per equal chunk of the batch: 0 the prompt's conditioning, 1 the negative (for
KSampler and CFGGuider; other guiders number their conditionings otherwise, DualCFGGuider's 1 is its middle one).
A wrapper already in the model's options is called inside this one (composed, not dropped).

The forward hooks live for one call: registered when it starts, removed when it ends (also on an error). The torch
modules are shared by every clone of the model, so nothing stays on them to touch another clone's passes.

LoRA keys are resolved as ComfyUI's own LoRA loader resolves them (``comfy.lora.model_lora_keys_unet``, then
``comfy.lora.load_lora``): kohya's ``lora_unet_...`` names and the other layouts ComfyUI reads for a UNet. A key
that names no Linear layer of this model, or a LoRA kind other than plain low-rank, is refused (ValueError).

This file runs inside ComfyUI (it imports ComfyUI's modules and never reneg).
"""

import torch

import comfy.lora
import comfy.lora_convert
import comfy.utils
import comfy.weight_adapter
import folder_paths

#: ``cond_or_uncond``'s number for the negative (unconditional) chunk.
UNCOND = 1


class Offset:
    """One adapted Linear layer: ``down`` (r, in) and ``up`` (out, r) with strength * alpha/r folded into ``up``,
    cast once per device and dtype."""

    def __init__(self, module, down, up):
        self.module, self.down, self.up = module, down, up
        self._cast = {}

    def factors(self, like):
        key = (like.device, like.dtype)
        if key not in self._cast:
            self._cast[key] = (self.down.to(like.device, like.dtype), self.up.to(like.device, like.dtype))
        return self._cast[key]


def read_offsets(model, lora, strength):
    """[Offset] of ``lora`` (a state dict) on ``model`` (ComfyUI's BaseModel, ``patcher.model``); ValueError for
    a key it cannot map to a Linear layer's plain LoRA."""
    key_map = comfy.lora.model_lora_keys_unet(model, {})
    patches = comfy.lora.load_lora(comfy.lora_convert.convert_lora(lora), key_map, log_missing=False)
    loaded, offsets = set(), []
    for target, patch in patches.items():
        if not isinstance(patch, comfy.weight_adapter.LoRAAdapter) or any(v is not None for v in patch.weights[3:]):
            raise ValueError(f"ReNeg NPO: the LoRA's patch for {target} is not a plain low-rank LoRA "
                             f"({type(patch).__name__}); export the adapter again with `reneg export --to comfyui`")
        if not isinstance(target, str):
            raise ValueError(f"ReNeg NPO: the LoRA adapts part of a fused layer ({target[0]}): this node adds "
                             "offsets to whole Linear layers only (SD1.x/SD2.x and SDXL UNets)")
        module = model.get_submodule(target[:-len(".weight")])
        up, down, alpha = patch.weights[:3]
        if not isinstance(module, torch.nn.Linear) or down.ndim != 2 or up.shape[1] != down.shape[0]:
            raise ValueError(f"ReNeg NPO: {target} is not a Linear layer with a 2-D LoRA: this node adapts "
                             "Linear layers only")
        scale = alpha / down.shape[0] if alpha is not None else 1.0  # LoRAAdapter.calculate_weight's rule
        offsets.append(Offset(module, down.float(), up.float() * (strength * scale)))
        loaded |= patch.loaded_keys
    unmapped = sorted(set(lora) - loaded)
    if unmapped:
        raise ValueError(f"ReNeg NPO: {len(unmapped)} LoRA keys name no layer of this model's UNet in ComfyUI's "
                         f"key map, e.g. '{unmapped[0]}': pass the LoRA exported for this model family")
    return offsets


def offset_hook(offset, uncond, chunks):
    """A forward hook adding ``offset`` to the output rows of the chunks numbered in ``uncond`` (of ``chunks``)."""

    def hook(module, inputs, output):
        x = inputs[0]
        rows = x.shape[0] // chunks
        down, up = offset.factors(output)
        output = output.clone()
        for chunk in uncond:
            part = slice(chunk * rows, (chunk + 1) * rows)
            output[part] += (x[part].to(down.dtype) @ down.T) @ up.T
        return output

    return hook


def negative_branch_wrapper(offsets, previous=None):
    """A ``model_function_wrapper``: the call of ``previous`` (or the model's own) with the offsets on the
    unconditional chunks' rows; a plain function, so ComfyUI's deep copy of the model options keeps it as is."""

    def wrapper(apply_model, args):
        chunks = list(args["cond_or_uncond"])
        uncond = [index for index, which in enumerate(chunks) if which == UNCOND]
        handles = [o.module.register_forward_hook(offset_hook(o, uncond, len(chunks))) for o in offsets] \
            if uncond else []
        try:
            if previous is not None:
                return previous(apply_model, args)
            return apply_model(args["input"], args["timestep"], **args["c"])
        finally:
            for handle in handles:
                handle.remove()

    return wrapper


def apply_npo(model, lora_path, strength=1.0):
    """A clone of ``model`` (a ModelPatcher) with the LoRA at ``lora_path`` on its unconditional pass."""
    if strength == 0:
        return model
    lora = comfy.utils.load_torch_file(lora_path, safe_load=True)
    offsets = read_offsets(model.model, lora, strength)
    patched = model.clone()
    previous = patched.model_options.get("model_function_wrapper")
    patched.set_model_unet_function_wrapper(negative_branch_wrapper(offsets, previous))
    return patched


class ReNegNPO:
    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802 - ComfyUI's name
        return {"required": {
            "model": ("MODEL", {"tooltip": "The diffusion model whose negative pass gets the NPO offset."}),
            "lora_name": (folder_paths.get_filename_list("loras"), {
                "tooltip": "The NPO LoRA (from `reneg export --to comfyui`, in models/loras)."}),
            "strength": ("FLOAT", {"default": 1.0, "min": -10.0, "max": 10.0, "step": 0.01,
                                   "tooltip": "NPO's beta: the offset's scale on the negative pass."}),
        }}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "apply"
    CATEGORY = "advanced/model"
    DESCRIPTION = ("Diffusion-NPO: a LoRA on CFG's unconditional (negative) pass only; the prompt's pass keeps the "
                   "model's own weights.")

    def apply(self, model, lora_name, strength):
        return (apply_npo(model, folder_paths.get_full_path_or_raise("loras", lora_name), strength),)


NODE_CLASS_MAPPINGS = {"ReNegNPO": ReNegNPO}
NODE_DISPLAY_NAME_MAPPINGS = {"ReNegNPO": "ReNeg NPO (negative branch only)"}
