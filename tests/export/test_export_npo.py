"""`reneg export NPO_DIR`: a Diffusion-NPO adapter for diffusers (the folder, a model card, ``apply_npo``) and for
ComfyUI (the LoRA in kohya's layout, the ReNegNPO custom node, a workflow), bad input, and ComfyUI's own sampling.

The ComfyUI test (``RENEG_COMFYUI``, skips at once without it) builds a tiny UNet in ComfyUI's own SD1.5 / SDXL
model classes (tests/export/comfyui_probe.py), applies the exported node to it (loaded from its folder, its LoRA
found through ComfyUI's ``folder_paths``) over the probe's recording wrapper, and samples one Euler step at cfg 5:
the prompt's branch returns diffusers' UNet without delta, the negative branch diffusers' UNet with the LoRA fused.
"""

import copy
import json

import pytest
import torch
from export_support import comfyui_checkout, comfyui_unet, diffusers_denoised, pipeline, run_comfyui_probe
from safetensors.torch import load_file, save_file

from reneg.cli import main
from reneg.embedding import NegativeEmbedding
from reneg.export.layout import MANIFEST
from reneg.families import family_for
from reneg.methods.npo.weights import ADAPTER_FILE, METADATA_FILE, apply_npo, remove_npo, save_adapter
from reneg.models.loading import load_model

TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
RANK, LORA_ALPHA = 4, 8.0
#: ComfyUI's UNet against diffusers' on the same weights (as tests/export/test_export_hosts.py).
SAME_MODEL = dict(atol=2e-4, rtol=0)
CFG = 5.0
NODE = "custom_nodes/reneg_npo/__init__.py"


def npo_adapter(unet, folder, *, fingerprint: str, seed: int = 0):
    """An NPO adapter folder written by ``save_adapter`` from a copy of ``unet`` with random, non-zero lora_A and
    lora_B (peft's own init makes lora_B 0: delta would vanish), npo.json recording the text encoders'
    ``fingerprint`` as `reneg npo` does."""
    from peft import LoraConfig
    from peft.tuners.lora import LoraLayer

    unet = copy.deepcopy(unet)
    unet.add_adapter(LoraConfig(r=RANK, lora_alpha=LORA_ALPHA, target_modules=TARGETS, init_lora_weights=False),
                     adapter_name="delta")
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in (m for m in unet.modules() if isinstance(m, LoraLayer)):
            for matrix in (layer.lora_A["delta"].weight, layer.lora_B["delta"].weight):
                matrix.copy_(0.1 * torch.randn(matrix.shape, generator=generator))
    return save_adapter(unet, "delta", folder, {
        "route": "reward-cfg", "reward": "shapes-hps", "base_model": "tiny", "text_encoder_fingerprint": fingerprint,
        "guidance_scale": 5.0, "steps": 20, "resolution": 64, "rank": RANK, "lora_alpha": LORA_ALPHA})


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny")  # its own pipeline: apply_npo adds adapters to it


@pytest.fixture(scope="module")
def adapter(tiny, tmp_path_factory):
    return npo_adapter(tiny.pipe.unet, tmp_path_factory.mktemp("npo") / "delta",
                       fingerprint=family_for(tiny.pipe).fingerprint())


def _status(*argv) -> int:
    """`reneg export ...`'s exit status, whether main returns it or argparse exits with it."""
    try:
        return main(["export", *map(str, argv)])
    except SystemExit as exit_:
        return exit_.code


def _files(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


# ---------------------------------------------------------------- --to diffusers


def test_diffusers_folder_holds_the_adapter_s_bytes_and_apply_npo_reads_it(tiny, adapter, tmp_path, capsys):
    out = tmp_path / "hub"
    assert _status(adapter, "--to", "diffusers", "--out", out) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert _files(out) == sorted([ADAPTER_FILE, METADATA_FILE, "README.md", MANIFEST])
    for name in (ADAPTER_FILE, METADATA_FILE):
        assert (out / name).read_bytes() == (adapter / name).read_bytes()
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["host"] == "diffusers" and manifest["family"] == "sd" and manifest["source"] == str(adapter)
    card = (out / "README.md").read_text()
    metadata = json.loads((adapter / METADATA_FILE).read_text())
    for needle in ("NPO Eq. 10", "apply_npo(pipe, npo=", "remove_npo(pipe)", 'load_lora_weights("THIS_FOLDER")',
                   "**both** branches", metadata["base_model_fingerprint"], "| route | `reward-cfg` |"):
        assert needle in card, needle

    # the exported folder is an adapter apply_npo reads: delta changes the negative branch's prediction
    def latents():
        return tiny.pipe("a red circle", num_inference_steps=1, guidance_scale=5.0, output_type="latent",
                         generator=torch.Generator().manual_seed(0)).images

    plain = latents()
    apply_npo(tiny.pipe, npo=str(out))
    with_delta = latents()
    remove_npo(tiny.pipe)
    assert torch.isfinite(with_delta).all() and not torch.allclose(with_delta, plain, atol=1e-4)
    assert torch.equal(latents(), plain)


# ---------------------------------------------------------------- --to comfyui


def test_comfyui_lora_in_kohya_layout_reads_back_to_the_adapter(adapter, tmp_path):
    out = tmp_path / "comfyui"
    assert _status(adapter, "--to", "comfyui", "--out", out) == 0
    lora = "models/loras/delta.safetensors"
    assert _files(out) == sorted([lora, NODE, "workflow-npo.json", "README.txt", MANIFEST])
    source, kohya = load_file(str(adapter / ADAPTER_FILE)), load_file(str(out / lora))
    modules = sorted(key[len("unet."):-len(".lora_A.weight")] for key in source if key.endswith(".lora_A.weight"))
    assert len(modules) > 0 and len(kohya) == 3 * len(modules)
    for module in modules:
        name = "lora_unet_" + module.replace(".", "_")
        assert torch.equal(kohya[f"{name}.lora_down.weight"], source[f"unet.{module}.lora_A.weight"])
        assert torch.equal(kohya[f"{name}.lora_up.weight"], source[f"unet.{module}.lora_B.weight"])
        assert kohya[f"{name}.alpha"].ndim == 0 and kohya[f"{name}.alpha"].item() == LORA_ALPHA  # alpha/r: 2

    from importlib import resources
    shipped = resources.files("reneg.export.payload").joinpath("comfyui_npo_node.py").read_text(encoding="utf-8")
    assert (out / NODE).read_text(encoding="utf-8") == shipped
    nodes = json.loads((out / "workflow-npo.json").read_text())
    by_type = {node["class_type"]: (key, node["inputs"]) for key, node in nodes.items()}
    npo_key, npo = by_type["ReNegNPO"]
    _, sampler = by_type["KSampler"]
    assert npo["lora_name"] == "delta.safetensors" and npo["strength"] == 1.0
    assert npo["model"] == [by_type["CheckpointLoaderSimple"][0], 0] and sampler["model"] == [npo_key, 0]
    assert nodes[sampler["negative"][0]]["inputs"]["text"] == "" and sampler["cfg"] == 5.0
    readme = (out / "README.txt").read_text()
    assert "models/loras" in readme and "custom_nodes" in readme and "DualCFGGuider" in readme


def _bad_inputs(adapter, tmp_path) -> dict:
    """name -> (argv, a word the one-line message must contain)."""
    plain = tmp_path / "plain-lora"
    plain.mkdir()
    (plain / ADAPTER_FILE).write_bytes((adapter / ADAPTER_FILE).read_bytes())
    no_lora = tmp_path / "no-lora"
    no_lora.mkdir()
    (no_lora / METADATA_FILE).write_bytes((adapter / METADATA_FILE).read_bytes())
    metadata = json.loads((adapter / METADATA_FILE).read_text())
    truncated = tmp_path / "truncated"
    truncated.mkdir()
    (truncated / ADAPTER_FILE).write_bytes((adapter / ADAPTER_FILE).read_bytes()[:100])
    (truncated / METADATA_FILE).write_bytes((adapter / METADATA_FILE).read_bytes())
    sd3, unknown = tmp_path / "sd3", tmp_path / "unknown"
    for folder, changes in ((sd3, {"base_model_fingerprint": "dn1:SD3Transformer2DModel:0,1"}),
                            (unknown, {"text_encoder_fingerprint": None})):
        folder.mkdir()
        (folder / ADAPTER_FILE).write_bytes((adapter / ADAPTER_FILE).read_bytes())
        (folder / METADATA_FILE).write_text(json.dumps({**metadata, **changes}))
    return {
        "invokeai": ([adapter, "--to", "invokeai"], "exports to comfyui or diffusers only"),
        "a1111": ([adapter, "--to", "a1111"], "exports to comfyui or diffusers only"),
        "missing folder": ([tmp_path / "nope", "--to", "comfyui"], "does not exist"),
        "no npo.json": ([plain, "--to", "diffusers"], "npo.json"),
        "no LoRA file": ([no_lora, "--to", "comfyui"], ADAPTER_FILE),
        "truncated LoRA to comfyui": ([truncated, "--to", "comfyui"], "not a readable LoRA file"),
        "truncated LoRA to diffusers": ([truncated, "--to", "diffusers"], "not a readable LoRA file"),
        "SD3 to comfyui": ([sd3, "--to", "comfyui"], "--to diffusers"),
        "family unknown": ([unknown, "--to", "comfyui"], "SDXL"),
        "results for comfyui": ([adapter, "--to", "comfyui", "--results", tmp_path / "r.json"], "--results"),
    }


def test_bad_npo_input_exits_2_with_one_line_and_writes_nothing(adapter, tmp_path, capsys):
    for name, (argv, needle) in _bad_inputs(adapter, tmp_path).items():
        out = tmp_path / f"out-{name.replace(' ', '-')}"
        status = _status(*argv, "--out", out)
        err = capsys.readouterr().err.strip().splitlines()
        assert status == 2, name
        assert len(err) == 1 and needle in err[0] and "Traceback" not in err[0], (name, err)
        assert not out.exists(), name
    assert _status(tmp_path / "sd3", "--to", "diffusers", "--out", tmp_path / "sd3-hub") == 0  # any family


# ---------------------------------------------------------------- ComfyUI's own sampling


def _sampling_request(unet, model_class: str, family, out, tmp_path) -> tuple[dict, dict]:
    """(the probe's sampling request with the exported node and LoRA, the two branches' prompts): the UNet's
    weights and config, and random prompt conditionings as CLIPTextEncode outputs them, written for the probe."""
    (length, width), pooled = family.negative_shape()
    save_file({k: v.contiguous() for k, v in unet.state_dict().items()}, str(tmp_path / "unet.safetensors"))
    (tmp_path / "unet.json").write_text(json.dumps(dict(unet.config)))
    prompts = {}
    for index, branch in enumerate(("positive", "negative")):
        generator = torch.Generator().manual_seed(index)
        prompts[branch] = NegativeEmbedding(torch.randn(length, width, generator=generator), {"family": family.name},
                                            None if pooled is None else torch.randn(pooled, generator=generator))
        save_file({"conditioning": prompts[branch].tensor[None],
                   **({} if pooled is None else {"pooled_output": prompts[branch].pooled[None]})},
                  str(tmp_path / f"{branch}.safetensors"))
    request = {"conditioning": str(tmp_path / "negative.safetensors"),
               "positive": str(tmp_path / "positive.safetensors"), "unet": str(tmp_path / "unet.safetensors"), "unet_config": str(tmp_path / "unet.json"),
               "model": model_class, "latent_channels": unet.config.in_channels, "cfg": CFG, "seed": 0,
               "out": str(tmp_path / "step.safetensors"),
               "npo": {"node": str(out / "custom_nodes" / "reneg_npo"),
                       "lora": str(out / "models" / "loras" / "delta.safetensors"), "strength": 1.0}}
    return request, prompts


def _unmapped(request: dict, tmp_path) -> dict:
    """``request`` with the exported LoRA plus one layer that no key map names (the node must refuse it)."""
    lora = load_file(request["npo"]["lora"])
    name = next(iter(lora)).split(".")[0]
    lora.update({key.replace(name, "lora_unet_nowhere"): value.clone() for key, value in lora.items()
                 if key.startswith(name)})
    (tmp_path / "bad").mkdir()
    save_file(lora, str(tmp_path / "bad" / "unmapped.safetensors"))
    return {**request, "npo": {**request["npo"], "lora": str(tmp_path / "bad" / "unmapped.safetensors")}}


@pytest.mark.parametrize("kind", ("world", "sd", "sdxl"))
def test_comfyui_node_puts_delta_on_the_negative_branch_only(kind, tmp_path):
    comfyui_checkout()  # skips at once without one
    family = family_for(pipeline(kind))
    (_, width), pooled = family.negative_shape()
    unet, model_class = comfyui_unet(family.name, width, pooled)
    source = npo_adapter(unet, tmp_path / "delta", fingerprint=family.fingerprint(), seed=5)
    out = tmp_path / "comfyui"
    assert _status(source, "--to", "comfyui", "--out", out) == 0
    request, prompts = _sampling_request(unet, model_class, family, out, tmp_path)
    report = run_comfyui_probe({"width": width, "embeddings": [], "conditionings": [], "samples": [request],
                                "npo_refusals": [_unmapped(request, tmp_path)]})
    [step], [refused] = report["samples"], report["npo_refusals"]
    assert step["npo_node"] == "ReNeg NPO (negative branch only)"
    assert refused is not None and "lora_unet_nowhere" in refused and "name no layer" in refused, refused
    record = load_file(request["out"])
    positive, negative = ({key.split(".", 1)[1]: value for key, value in record.items() if key.startswith(f"{name}.")}
                          for name in ("positive", "negative"))
    size = 8 * record["samples"].shape[-1]

    # diffusers' references: the UNet as it is, and with the adapter's LoRA loaded by diffusers and fused
    fused = copy.deepcopy(unet)
    fused.load_lora_adapter(str(source), weight_name=ADAPTER_FILE, prefix="unet", adapter_name="delta")
    fused.fuse_lora(lora_scale=1.0)
    assert torch.allclose(positive["denoised"], diffusers_denoised(unet, positive, prompts["positive"], size),
                          **SAME_MODEL)
    with_delta = diffusers_denoised(fused, negative, prompts["negative"], size)
    without = diffusers_denoised(unet, negative, prompts["negative"], size)
    assert torch.allclose(negative["denoised"], with_delta, **SAME_MODEL)  # seen: <= 2e-5; unfused: 1.5 to 3.7
    assert not torch.allclose(negative["denoised"], without, **SAME_MODEL)  # delta is there: the test can fail

    # the step: CFG's denoised from the two branches, in ComfyUI's latent space
    guided = negative["denoised"] + CFG * (positive["denoised"] - negative["denoised"])
    assert torch.allclose((record["samples"] - step["latent_shift"]) * step["latent_scale"], guided, atol=1e-5)
