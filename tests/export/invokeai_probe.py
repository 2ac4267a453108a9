"""Run with a Python that imports InvokeAI (``invokeai``): load `reneg export --to invokeai`'s node pack and files
through InvokeAI's own code and write what it made of them.

Used by tests/export/test_export_hosts.py in a subprocess (InvokeAI pins other versions of diffusers, transformers
and numpy than reneg: it lives in its own environment). Argument: a JSON object

``{"root": folder, "pack": the exported reneg_negative folder, "runs": [run...], "textual_inversions": [files]}``

- the pack is copied into ``root/nodes`` and imported by InvokeAI's ``load_custom_nodes`` (what InvokeAI does at
  start), its node looked up in InvokeAI's ``InvocationRegistry``;
- each run ``{"invocation": type, "fields": {...}, "positive": file, "unet": folder or null, "scheduler": folder,
  "cfg": float, "out": file}``: the node's ``invoke`` with an InvokeAI invocation context
  (``build_invocation_context``) whose conditioning store is InvokeAI's own (``ObjectSerializerForwardCache`` over
  ``ObjectSerializerDisk``, as ``invokeai/app/api/dependencies.py`` builds it); then what the Denoise node makes of
  the stored conditioning: ``DenoiseLatentsInvocation.get_conditioning_data`` (SD1.x/2.x, SDXL) or
  ``SD3DenoiseInvocation._load_text_conditioning`` (SD3). With a UNet, one denoising step through InvokeAI's own
  pipeline (``DenoiseLatentsInvocation.create_pipeline`` + ``init_scheduler`` + ``latents_from_embeddings``, as
  Denoise's ``_old_invoke`` calls them), a forward hook on the UNet recording what it received and returned;
- each textual-inversion file: ``ModelConfigFactory.from_model_on_disk(path, allow_unknown=False)``, InvokeAI's
  model identification when a file is installed: which config matched (None: InvokeAI does not take it as any
  model) and why each textual-inversion config refused it.
"""

import inspect
import json
import logging
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import torch
from safetensors.torch import load_file, save_file


def conditioning_store(folder: Path):
    from invokeai.app.services.object_serializer.object_serializer_disk import ObjectSerializerDisk
    from invokeai.app.services.object_serializer.object_serializer_forward_cache import ObjectSerializerForwardCache
    from invokeai.backend.stable_diffusion.diffusion import conditioning_data as data

    safe = [getattr(data, name) for name in ("BasicConditioningInfo", "SDXLConditioningInfo", "SD3ConditioningInfo")]
    from invokeai.app.services.shared.invocation_context import ConditioningFieldData

    return ObjectSerializerForwardCache(ObjectSerializerDisk[ConditioningFieldData](
        folder, safe_globals=[ConditioningFieldData, *safe], ephemeral=True))


def context_for(root: Path):
    from invokeai.app.services.shared.invocation_context import build_invocation_context

    services = SimpleNamespace(conditioning=conditioning_store(root / "conditioning"),
                               logger=logging.getLogger("invokeai"))
    return build_invocation_context(services=services, data=None, is_canceled=lambda: False)


def load_pack(root: Path, pack: Path) -> None:
    from invokeai.app.invocations.load_custom_nodes import load_custom_nodes

    nodes = root / "nodes"
    nodes.mkdir(parents=True, exist_ok=True)
    shutil.copytree(pack, nodes / pack.name)
    load_custom_nodes(nodes, logging.getLogger("invokeai"))


def invocation_class(invocation_type: str):
    from invokeai.app.invocations.baseinvocation import InvocationRegistry

    cls = InvocationRegistry.get_invocation_for_type(invocation_type)
    assert cls is not None, f"InvokeAI has no node '{invocation_type}' after loading the pack"
    return cls


def store_positive(context, path: str) -> str:
    """The positive prompt's conditioning, stored as InvokeAI's prompt nodes store it."""
    from invokeai.app.services.shared.invocation_context import ConditioningFieldData
    from invokeai.backend.stable_diffusion.diffusion.conditioning_data import (BasicConditioningInfo,
                                                                               SDXLConditioningInfo)

    tensors = load_file(path)
    if "pooled_embeds" in tensors:
        info = SDXLConditioningInfo(embeds=tensors["embeds"], pooled_embeds=tensors["pooled_embeds"],
                                    add_time_ids=tensors["add_time_ids"])
    else:
        info = BasicConditioningInfo(embeds=tensors["embeds"])
    return context.conditioning.save(ConditioningFieldData(conditionings=[info]))


def one_step(unet_folder: str, scheduler_folder: str, conditioning) -> dict:
    """One step of InvokeAI's own denoising loop on ``unet``, recording each UNet call."""
    from diffusers import DDIMScheduler, EulerDiscreteScheduler, UNet2DConditionModel
    from invokeai.app.invocations.denoise_latents import DenoiseLatentsInvocation

    unet = UNet2DConditionModel.from_pretrained(unet_folder).eval()
    config = json.loads((Path(scheduler_folder) / "scheduler_config.json").read_text())
    scheduler_class = {"DDIMScheduler": DDIMScheduler, "EulerDiscreteScheduler": EulerDiscreteScheduler}
    scheduler = scheduler_class[config["_class_name"]].from_pretrained(scheduler_folder)
    calls = []

    signature = inspect.signature(unet.forward)

    def record(module, args, kwargs, output):
        call = signature.bind(*args, **kwargs).arguments
        timestep = torch.as_tensor(call["timestep"], dtype=torch.float32).reshape(-1)
        entry = {"sample": call["sample"], "timestep": timestep,
                 "encoder_hidden_states": call["encoder_hidden_states"], "output": output[0]}
        entry.update(call.get("added_cond_kwargs") or {})
        calls.append(entry)

    unet.register_forward_hook(record, with_kwargs=True)
    pipeline = DenoiseLatentsInvocation.create_pipeline(unet, scheduler)
    timesteps, init_timestep, step_kwargs = DenoiseLatentsInvocation.init_scheduler(
        scheduler, device=torch.device("cpu"), steps=1, denoising_start=0.0, denoising_end=1.0, seed=0)
    latents = torch.zeros(1, unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
    noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        result = pipeline.latents_from_embeddings(
            latents=latents, scheduler_step_kwargs=step_kwargs, conditioning_data=conditioning, noise=noise, seed=0,
            timesteps=timesteps, init_timestep=init_timestep, callback=lambda state: None)
    assert len(calls) == 1, f"expected one UNet call (both branches in one batch), got {len(calls)}"
    return {"result": result, **{f"unet.{key}": value for key, value in calls[0].items()}}


def run(root: Path, request: dict) -> dict:
    from invokeai.app.invocations.fields import ConditioningField

    context = context_for(root)
    node = invocation_class(request["invocation"])(id="reneg", **request["fields"])
    output = node.invoke(context)
    name = output.conditioning.conditioning_name
    stored = context.conditioning.load(name).conditionings
    report = {"node_class": type(node).__name__, "stored": [type(info).__name__ for info in stored]}
    tensors = {}
    if request["invocation"] == "reneg_negative_sd3":
        from invokeai.app.invocations.sd3_denoise import SD3DenoiseInvocation

        embeds, pooled = SD3DenoiseInvocation._load_text_conditioning(
            None, context, name, request["joint_attention_dim"], torch.float32, torch.device("cpu"))
        tensors.update({"denoise.embeds": embeds, "denoise.pooled_embeds": pooled})
    else:
        from invokeai.app.invocations.denoise_latents import DenoiseLatentsInvocation

        size = request["size"]  # the image's: the latent's is size // 8
        positive = ConditioningField(conditioning_name=store_positive(context, request["positive"]))
        data = DenoiseLatentsInvocation.get_conditioning_data(
            context=context, positive_conditioning_field=positive, negative_conditioning_field=output.conditioning,
            latent_height=size // 8, latent_width=size // 8, device=torch.device("cpu"), dtype=torch.float32,
            cfg_scale=request["cfg"], steps=1, cfg_rescale_multiplier=0.0)
        for key in ("embeds", "pooled_embeds", "add_time_ids"):
            if hasattr(data.uncond_text, key):
                tensors[f"denoise.{key}"] = getattr(data.uncond_text, key)
        if request.get("unet"):
            tensors.update(one_step(request["unet"], request["scheduler"], data))
            report["guidance_scale"] = data.guidance_scale
    save_file({k: v.detach().to("cpu", torch.float32).contiguous() for k, v in tensors.items()}, request["out"])
    return report


def identify(path: str) -> dict:
    from invokeai.backend.model_manager.configs.factory import ModelConfigFactory

    result = ModelConfigFactory.from_model_on_disk(Path(path), allow_unknown=False)
    refusals = {name: f"{type(error).__name__}: {error}" for name, error in result.details.items()
                if name.startswith("TI_") and isinstance(error, Exception)}
    return {"config": None if result.config is None else type(result.config).__name__,
            "textual_inversion_refusals": refusals}


def main() -> None:
    request = json.loads(sys.argv[1])
    root = Path(request["root"])
    report = {"runs": [], "textual_inversions": {}}
    if request.get("pack"):
        load_pack(root, Path(request["pack"]))
        report["runs"] = [run(root, r) for r in request["runs"]]
    report["textual_inversions"] = {path: identify(path) for path in request.get("textual_inversions", [])}
    import invokeai.version

    report["invokeai_version"] = invokeai.version.__version__
    print(json.dumps(report))


if __name__ == "__main__":
    main()
