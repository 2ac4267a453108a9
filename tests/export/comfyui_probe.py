"""Run inside a ComfyUI checkout (cwd): load files through ComfyUI's own code and print what it made of them (JSON).

Used by tests/export/test_export_safety.py, test_export_roundtrip.py and test_export_hosts.py in a subprocess, so
that importing ComfyUI (its global device and logging state) stays out of the test process. Arguments: a JSON object
``{"width": token embedding width, "embeddings": [files for embedding:NAME], "conditionings": [files],
"samples": [sampling requests]}`` (``samples`` optional).

- ``embedding:NAME``: ComfyUI's tokenizer and text model, ``comfy.sd1_clip.SDTokenizer.tokenize_with_weights`` and
  ``SDClipModel.process_tokens`` (a CLIP of the given width, random weights), with the tokenizer's embedding key
  (``clip_l``; ``[path, width, key]`` entries name ``clip_g`` or ``t5xxl`` as SDXL's and SD3's tokenizers do): which
  token vectors it spliced in (reported under ``path|key`` for such entries).
- Load Conditioning: the checkout's own node ``comfy_extras.nodes_cond.ConditioningLoader`` when it has one (its
  ``execute``, with the file's folder as ComfyUI's ``embeddings`` folder); a checkout that predates the node gets
  its rule re-expressed over ComfyUI's own ``comfy.utils.load_torch_file``: ``sd.pop("conditioning")``, every other
  tensor an option of that name, the JSON ``conditioning_options`` the scalar options. The tensors are written
  beside each file as ``.loaded``; the report says which of the two ran (``loader``).
- A sampling request ``{"conditioning": file, "positive": file (``conditioning``, and ``pooled_output`` for SDXL and
  SD3), "unet": file, "unet_config": file, "model": "SD15" | "SDXL" | "SD3", "latent_channels": int, "cfg": float,
  "seed": int, "out": file}``: the model, then one sampling step. SD3: the diffusers transformer's weights go through
  ComfyUI's own loader, ``comfy.sd.load_diffusion_model_state_dict`` (the *Load Diffusion Model* node's call), which
  converts and detects them as its SD3 class. SD1.5 / SDXL: ComfyUI detects diffusers UNets by full-size configs
  only, so the UNet's weights are converted by ComfyUI's own key map (``comfy.utils.unet_to_diffusers``), their
  layout read back by ComfyUI's own ``comfy.model_detection.detect_unet_config``, and built as the named ComfyUI
  model class (``comfy.supported_models``: the class ComfyUI picks for a full-size SD1.5 / SDXL checkpoint), wrapped
  in ``comfy.model_patcher.ModelPatcher``. The model is sampled for one Euler step by ``comfy.sample.sample``
  (KSampler's own call) with that positive and the loaded conditioning as the negative. A
  ``model_function_wrapper`` (ComfyUI's hook around each model call) records what each branch received and returned;
  all of it goes to ``out`` (safetensors). With ``"npo": {"node": folder, "lora": file, "strength": float}`` the
  exported ReNegNPO custom node (imported from its folder as ComfyUI imports a custom node, its LoRA found through
  ComfyUI's ``folder_paths`` "loras") is applied to the model after the recording wrapper, which it must compose.
- ``"npo_refusals": [sampling requests]`` (optional): the node applied to each request's model with its ``npo``
  LoRA, which it must refuse (ValueError): the message, or None where it took the LoRA.
"""

import json
import logging
import sys
from pathlib import Path

import comfy.cli_args

comfy.cli_args.args.cpu = True  # before comfy.model_management is imported: no GPU probing

import comfy.sd1_clip  # noqa: E402
import comfy.utils  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402


class Warnings(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def spliced(path: Path, width: int, warnings: Warnings, key: str = "clip_l") -> dict:
    config = {"hidden_size": width, "intermediate_size": 2 * width, "num_attention_heads": 2, "num_hidden_layers": 1,
              "max_position_embeddings": 77, "vocab_size": 49408, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5,
              "projection_dim": width, "eos_token_id": 49407, "bos_token_id": 0, "pad_token_id": 1}
    model = comfy.sd1_clip.SDClipModel(textmodel_json_config=config)
    tokenizer = comfy.sd1_clip.SDTokenizer(embedding_directory=str(path.parent), embedding_size=width,
                                           embedding_key=key)
    warnings.messages.clear()
    batches = tokenizer.tokenize_with_weights(f"a photo of a cat embedding:{path.stem}")
    infos = [model.process_tokens([[token for token, *_ in batch]], "cpu")[3] for batch in batches]  # 77 a batch
    return {"spliced_vectors": sum(info["size"] for batch in infos for info in batch),
            "warnings": [m for m in warnings.messages if "embedding" in m]}


def conditioning_loader():
    """The checkout's Load Conditioning node class, or None where the checkout predates it (an import error of a
    checkout that has it is raised: the test then skips, naming the missing module)."""
    source = Path("comfy_extras") / "nodes_cond.py"
    if not source.is_file() or "class ConditioningLoader" not in source.read_text(encoding="utf-8"):
        return None
    from comfy_extras import nodes_cond  # imports comfy_api.latest, which needs PyAV (av)

    return nodes_cond.ConditioningLoader


def load_conditioning_list(path: Path) -> tuple[list, str]:
    """``[[cond, options]]`` as Load Conditioning outputs it, and which code made it."""
    node = conditioning_loader()
    if node is not None:
        import folder_paths

        folder_paths.folder_names_and_paths["embeddings"] = ([str(path.parent)], {".safetensors"})
        output = node.execute(path.name)
        return list(getattr(output, "result", output)[0]), "comfy_extras.nodes_cond.ConditioningLoader"
    sd, metadata = comfy.utils.load_torch_file(str(path), safe_load=True, return_metadata=True)
    cond = sd.pop("conditioning")
    options = json.loads((metadata or {}).get("conditioning_options", "{}"))
    options.update(sd)
    return [[cond, options]], "comfy.utils.load_torch_file + the node's rule (this checkout has no ConditioningLoader)"


def load_conditioning(path: Path) -> dict:
    [[cond, options]], loader = load_conditioning_list(path)
    save_file({"conditioning": cond.contiguous(), **{k: v.contiguous() for k, v in options.items()
                                                     if isinstance(v, torch.Tensor)}},
              str(path.with_suffix(".loaded")))
    return {"scalar_options": {k: v for k, v in options.items() if not isinstance(v, torch.Tensor)},
            "loader": loader}


# ---------------------------------------------------------------- one sampling step


def ldm_layout(config: dict) -> dict:
    """The few sizes ``comfy.utils.unet_to_diffusers`` needs to name the keys, from a diffusers UNet config (as
    ``comfy.model_detection.unet_config_from_diffusers_unet`` counts them before matching full-size models)."""
    blocks = len(config["block_out_channels"])
    per_block = config["layers_per_block"]
    down = [int(kind.startswith("CrossAttn")) for kind in config["down_block_types"] for _ in range(per_block)]
    up = [int(kind.startswith("CrossAttn")) for kind in config["up_block_types"] for _ in range(per_block + 1)]
    up.reverse()  # unet_to_diffusers pops up_blocks.0's depths from the end
    return {"num_res_blocks": [per_block] * blocks,
            "channel_mult": [c // config["block_out_channels"][0] for c in config["block_out_channels"]],
            "transformer_depth": down, "transformer_depth_output": up, "transformer_depth_middle": 1}


def comfy_model(request: dict):
    """(ModelPatcher, the model class's name, the layout ComfyUI read from the converted weights)."""
    import comfy.model_detection
    import comfy.model_management
    import comfy.model_patcher
    import comfy.supported_models

    diffusers_sd = load_file(request["unet"])
    if request["model"] == "SD3":
        import comfy.sd

        patcher = comfy.sd.load_diffusion_model_state_dict(diffusers_sd, model_options={"dtype": torch.float32})
        assert patcher is not None, "ComfyUI does not recognise the transformer"
        assert type(patcher.model.model_config).__name__ == "SD3", type(patcher.model.model_config).__name__
        return patcher, {}
    config = json.loads(Path(request["unet_config"]).read_text())
    key_map = comfy.utils.unet_to_diffusers(ldm_layout(config))
    missing = sorted(set(diffusers_sd) - set(key_map))
    assert not missing, f"ComfyUI's key map does not name {missing[:5]}"
    ldm_sd = {key_map[key]: value for key, value in diffusers_sd.items()}
    unet_config = comfy.model_detection.detect_unet_config(ldm_sd, "")
    unet_config["dtype"] = torch.float32
    model_config = getattr(comfy.supported_models, request["model"])(unet_config)
    model_config.set_inference_dtype(torch.float32, None)
    model = model_config.get_model(ldm_sd, "")
    model.load_model_weights(ldm_sd, "")
    device = comfy.model_management.get_torch_device()
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=device, offload_device=device)
    layout = {k: v for k, v in unet_config.items() if isinstance(v, (int, float, str, bool, list, type(None)))}
    return patcher, layout


def apply_npo_node(patcher, npo: dict):
    """(the patcher with the exported ReNegNPO node applied, the node's display name): the node folder imported as
    ``nodes.load_custom_node`` does (``spec_from_file_location`` of its ``__init__.py``), its LoRA listed and found
    through ``folder_paths`` after ``add_model_folder_path("loras", ...)``."""
    import importlib.util

    import folder_paths

    lora = Path(npo["lora"])
    folder_paths.add_model_folder_path("loras", str(lora.parent))
    init = Path(npo["node"]) / "__init__.py"
    spec = importlib.util.spec_from_file_location(npo["node"].replace(".", "_x_"), str(init))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    node = module.NODE_CLASS_MAPPINGS["ReNegNPO"]
    assert lora.name in node.INPUT_TYPES()["required"]["lora_name"][0], "the node does not list the LoRA"
    (patched,) = getattr(node(), node.FUNCTION)(patcher, lora.name, npo["strength"])
    return patched, module.NODE_DISPLAY_NAME_MAPPINGS["ReNegNPO"]


def npo_refusal(request: dict):
    """The ReNegNPO node's ValueError message for ``request["npo"]`` on ``request``'s model, None if it took it."""
    patcher, _ = comfy_model(request)
    try:
        apply_npo_node(patcher, request["npo"])
    except ValueError as error:
        return str(error)
    return None


def sample(request: dict) -> dict:
    import comfy.sample

    patcher, layout = comfy_model(request)
    sampling = patcher.model.model_sampling
    records = []

    def record(apply_model, args):
        x, sigma, c, chunks = args["input"], args["timestep"], args["c"], args["cond_or_uncond"]
        output = apply_model(x, sigma, **c)
        for index, which in enumerate(chunks):  # 0: positive, 1: negative; one chunk of the batch each
            part = slice(index * x.shape[0] // len(chunks), (index + 1) * x.shape[0] // len(chunks))
            entry = {"x": x[part], "sigma": sigma[part], "xc": sampling.calculate_input(sigma[part], x[part]),
                     "t": sampling.timestep(sigma[part]).float(), "context": c["c_crossattn"][part],
                     "denoised": output[part]}
            if "y" in c:
                entry["y"] = c["y"][part]
            records.append((("positive", "negative")[which], entry))
        return output

    patcher.set_model_unet_function_wrapper(record)
    node = None
    if "npo" in request:
        patcher, node = apply_npo_node(patcher, request["npo"])
    negative, loader = load_conditioning_list(Path(request["conditioning"]))
    positive = load_file(request["positive"])  # as CLIPTextEncode outputs it: the tensor, SDXL's pooled_output
    positive = [[positive.pop("conditioning"), positive]]
    latent = torch.zeros(1, request.get("latent_channels", 4), 8, 8)
    noise = comfy.sample.prepare_noise(latent, request["seed"])
    samples = comfy.sample.sample(patcher, noise, 1, request["cfg"], "euler", "normal", positive, negative, latent,
                                  seed=request["seed"], disable_pbar=True)
    tensors = {"samples": samples, "noise": noise}
    names = [name for name, _ in records]
    assert sorted(names) == ["negative", "positive"], f"expected one call per branch, got {names}"
    for name, entry in records:
        tensors.update({f"{name}.{key}": value for key, value in entry.items()})
    save_file({k: v.detach().to("cpu", torch.float32).clone() for k, v in tensors.items()}, request["out"])
    return {"loader": loader, "model_class": type(patcher.model).__name__, "layout": layout, "npo_node": node,
            "latent_scale": patcher.model.latent_format.scale_factor,
            "latent_shift": getattr(patcher.model.latent_format, "shift_factor", 0.0)}


def main() -> None:
    request = json.loads(sys.argv[1])
    warnings = Warnings()
    logging.getLogger().addHandler(warnings)
    embeddings = {}
    for entry in request["embeddings"]:  # a path (CLIP-L at the request's width), or [path, width, key]
        path, width, key = (entry, request["width"], "clip_l") if isinstance(entry, str) else entry
        embeddings[f"{path}|{key}" if not isinstance(entry, str) else path] = spliced(Path(path), width, warnings, key)
    report = {"embeddings": embeddings,
              "conditionings": {p: load_conditioning(Path(p)) for p in request["conditionings"]},
              "samples": [sample(s) for s in request.get("samples", [])],
              "npo_refusals": [npo_refusal(r) for r in request.get("npo_refusals", [])]}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
