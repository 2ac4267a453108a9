"""Each host loads what `reneg export` writes through its own code, and samples with it where that can run here.

- ComfyUI (``RENEG_COMFYUI``, a checkout): its Load Conditioning, then one Euler step of ``comfy.sample.sample`` on a
  tiny SD1.5 / SDXL UNet built by ComfyUI's own model classes, or a tiny SD3 transformer loaded by ComfyUI's own
  loader, the loaded conditioning as the negative: what the negative branch's model call received equals reneg's
  tensors (<= 1e-6), and what it returned equals diffusers' model given reneg's negative.
- InvokeAI (``RENEG_INVOKEAI_PYTHON``, a Python with invokeai 6.x: it pins other diffusers/transformers/numpy
  versions than reneg): the exported node pack loaded by InvokeAI's ``load_custom_nodes``, its node invoked with
  InvokeAI's conditioning store, Denoise's own reading of it, and one step of InvokeAI's own denoising loop on the
  tiny pipeline's UNet: the negative branch gets reneg's tensors (<= 1e-6) and returns what diffusers' UNet returns
  given them. InvokeAI's model identification takes no reneg file for a textual inversion (nor for any model).
- Forge (``RENEG_FORGE``, a checkout; A1111 is not fetched): the web UI itself does not run, the parts of Forge that
  meet the exported extension do (tests/export/forge_probe.py): its prompt parser's typed negative, its
  script_callbacks registry and ``CFGDenoiserParams`` dispatching the script's callback, its ``sampling_function``
  (conditions compiled, batched model calls, CFG) around a diffusers UNet standing in for Forge's model; and its
  textual-inversion loader on every file reneg writes.

Each test skips with one line when its host is absent. scripts/host_checks.sh sets the hosts up and runs them.
"""

import json
import warnings

import pytest
import torch
from export_host_rules import a1111_verdict
from export_support import (canonical_file, comfyui_checkout, comfyui_unet, diffusers_denoised, forge_checkout,
                            invokeai_python, pipeline, run_comfyui_probe, run_forge_probe, run_invokeai_probe)
from safetensors.torch import load_file, save_file

from reneg.embedding import NegativeEmbedding
from reneg.export import HOSTS, ExportConfig, export

EXACT = dict(atol=1e-6, rtol=0)
#: ComfyUI's UNet against diffusers' on the same weights: two implementations of the same float32 arithmetic.
SAME_MODEL = dict(atol=2e-4, rtol=0)  # seen: 2e-5 on values up to 50
CFG = 5.0


@pytest.mark.parametrize("kind", ("world", "sd", "sdxl", "sd3"))
def test_comfyui_samples_a_step_with_the_loaded_negative(kind, tmp_path):
    comfyui_checkout()  # skips at once without one
    source = canonical_file(kind, tmp_path, seed=3)
    embedding = NegativeEmbedding.load(source)
    out = export(ExportConfig(file=str(source), to="comfyui", out=str(tmp_path / "comfyui")))
    length, width = embedding.shape
    pooled = None if embedding.pooled is None else len(embedding.pooled)
    unet, model_class = comfyui_unet(embedding.metadata["family"], width, pooled)
    save_file({k: v.contiguous() for k, v in unet.state_dict().items()}, str(tmp_path / "unet.safetensors"))
    (tmp_path / "unet.json").write_text(json.dumps(dict(unet.config)))
    positive = torch.randn(1, length, width, generator=torch.Generator().manual_seed(1))
    positive_pooled = None if pooled is None else torch.randn(1, pooled, generator=torch.Generator().manual_seed(2))
    save_file({"conditioning": positive, **({} if pooled is None else {"pooled_output": positive_pooled})},
              str(tmp_path / "positive.safetensors"))
    request = {"conditioning": str(out / f"{kind}.safetensors"), "positive": str(tmp_path / "positive.safetensors"),
               "unet": str(tmp_path / "unet.safetensors"), "unet_config": str(tmp_path / "unet.json"),
               "model": model_class, "latent_channels": unet.config.in_channels, "cfg": CFG, "seed": 0,
               "out": str(tmp_path / "step.safetensors")}
    report = run_comfyui_probe({"width": width, "embeddings": [], "conditionings": [], "samples": [request]})
    [step] = report["samples"]
    if step["loader"] != "comfy_extras.nodes_cond.ConditioningLoader":
        warnings.warn(f"ComfyUI's Load Conditioning: {step['loader']}")
    assert step["model_class"] == {"sd3": "SD3", "sdxl": "SDXL"}.get(kind, "BaseModel")
    record = load_file(request["out"])
    negative = {key.split(".", 1)[1]: value for key, value in record.items() if key.startswith("negative.")}
    positive_branch = {key.split(".", 1)[1]: value for key, value in record.items() if key.startswith("positive.")}

    # what ComfyUI's model received for the negative branch: reneg's tensors
    assert torch.allclose(negative["context"][0], embedding.tensor, **EXACT)
    assert torch.allclose(positive_branch["context"][0], positive[0], **EXACT)
    if pooled:
        assert torch.allclose(negative["y"][0, :pooled], embedding.pooled, **EXACT)
        assert torch.allclose(positive_branch["y"][0, :pooled], positive_pooled[0], **EXACT)

    # what it returned: diffusers' UNet with reneg's negative, on the same weights
    size = 8 * record["samples"].shape[-1]
    assert torch.allclose(negative["denoised"], diffusers_denoised(unet, negative, embedding, size), **SAME_MODEL)
    other = NegativeEmbedding(torch.zeros_like(embedding.tensor), embedding.metadata, embedding.pooled)  # can fail
    assert not torch.allclose(negative["denoised"], diffusers_denoised(unet, negative, other, size), **SAME_MODEL)

    # the step: one Euler step to sigma 0 lands on CFG's denoised, uncond + cfg * (cond - uncond), in ComfyUI's
    # latent space (samples come back as latent / scale + shift, the latent format's process_out)
    guided = negative["denoised"] + CFG * (positive_branch["denoised"] - negative["denoised"])
    assert torch.allclose((record["samples"] - step["latent_shift"]) * step["latent_scale"], guided, atol=1e-5)
    assert torch.isfinite(record["samples"]).all()


# ---------------------------------------------------------------- InvokeAI


@pytest.mark.parametrize("kind", ("world", "sd", "sdxl", "sd3"))
def test_invokeai_node_conditions_a_denoising_step(kind, tmp_path):
    invokeai_python()  # skips at once without one
    source = canonical_file(kind, tmp_path, seed=3)
    embedding = NegativeEmbedding.load(source)
    out = export(ExportConfig(file=str(source), to="invokeai", out=str(tmp_path / "invokeai")))
    length, width = embedding.shape
    run = {"out": str(tmp_path / "run.safetensors")}
    if kind == "sd3":
        run.update(invocation="reneg_negative_sd3", fields={}, joint_attention_dim=width)
    else:
        pipe = pipeline(kind)
        pipe.unet.save_pretrained(tmp_path / "unet")
        pipe.scheduler.save_pretrained(tmp_path / "scheduler")
        generator = torch.Generator().manual_seed(1)
        positive = {"embeds": torch.randn(1, length, width, generator=generator)}
        if embedding.pooled is not None:  # as InvokeAI's SDXL prompt node stores it
            positive.update(pooled_embeds=torch.randn(1, len(embedding.pooled), generator=generator),
                            add_time_ids=torch.tensor([[128.0, 64, 0, 0, 128, 64]]))
        save_file(positive, str(tmp_path / "positive.safetensors"))
        run.update(invocation="reneg_negative", fields={"width": 64, "height": 128}, size=64, cfg=CFG,
                   positive=str(tmp_path / "positive.safetensors"), unet=str(tmp_path / "unet"),
                   scheduler=str(tmp_path / "scheduler"))
    report = run_invokeai_probe({"root": str(tmp_path / "root"), "pack": str(out / "reneg_negative"), "runs": [run]})
    [result] = report["runs"]
    stored = {"sd3": "SD3ConditioningInfo", "sdxl": "SDXLConditioningInfo"}.get(kind, "BasicConditioningInfo")
    assert result["stored"] == [stored]
    record = load_file(run["out"])

    # what InvokeAI's Denoise makes of the stored conditioning: reneg's tensors
    assert torch.allclose(record["denoise.embeds"][0], embedding.tensor, **EXACT)
    if embedding.pooled is not None:
        assert torch.allclose(record["denoise.pooled_embeds"][0], embedding.pooled, **EXACT)
    if kind == "sdxl":
        assert record["denoise.add_time_ids"].tolist() == [[128, 64, 0, 0, 128, 64]]
    if kind == "sd3":
        return  # SD3's denoising needs InvokeAI's model manager (its transformer loads by model key): not run

    # one step of InvokeAI's denoising loop: the UNet's batch is (negative, positive), as its
    # _apply_standard_conditioning concatenates them
    hidden = record["unet.encoder_hidden_states"]
    assert hidden.shape[0] == 2 and torch.allclose(hidden[0], embedding.tensor, **EXACT)
    assert torch.allclose(hidden[1], positive["embeds"][0], **EXACT)
    extra = {}
    if kind == "sdxl":
        assert torch.allclose(record["unet.text_embeds"][0], embedding.pooled, **EXACT)
        assert record["unet.time_ids"][0].tolist() == [128, 64, 0, 0, 128, 64]
        extra["added_cond_kwargs"] = {"text_embeds": embedding.expand_pooled(1),
                                      "time_ids": record["unet.time_ids"][:1]}
    with torch.no_grad():  # reneg's own diffusers, the same UNet, the negative given as reneg gives it
        eps = pipe.unet(record["unet.sample"][:1], record["unet.timestep"][:1],
                        encoder_hidden_states=embedding.expand(1), **extra).sample
    assert torch.allclose(record["unet.output"][:1], eps, atol=1e-5, rtol=0)
    assert result["guidance_scale"] == CFG and torch.isfinite(record["result"]).all()


def test_invokeai_identifies_no_reneg_file_as_a_textual_inversion(tmp_path):
    """InvokeAI's model identification (what installing a file runs) on every file reneg writes for an SD1.5-width
    negative and each tiny family: no config matches; a real textual inversion beside them is one."""
    invokeai_python()
    files = {}
    sd15 = tmp_path / "sd15.safetensors"
    NegativeEmbedding(torch.randn(77, 768, generator=torch.Generator().manual_seed(0)), {"family": "sd"}).save(sd15)
    sources = {"sd15": sd15, **{kind: canonical_file(kind, tmp_path) for kind in ("world", "sd", "sdxl", "sd3")}}
    for name, source in sources.items():
        files[f"{name} canonical"] = source
        family = NegativeEmbedding.load(source).metadata.get("family", "sd")
        for host, module in HOSTS.items():
            if module.FAMILIES is None or family in module.FAMILIES:
                folder = export(ExportConfig(file=str(source), to=host, out=str(tmp_path / f"{name}-{host}")))
                files[f"{name} {host}"] = next(folder.rglob("*.safetensors"))
    control = tmp_path / "learned_ti.safetensors"
    save_file({"emb_params": torch.randn(2, 768)}, str(control))
    report = run_invokeai_probe({"root": str(tmp_path / "root"), "pack": None, "runs": [],
                                 "textual_inversions": [str(control), *map(str, files.values())]})
    verdicts = report["textual_inversions"]
    assert verdicts.pop(str(control))["config"] == "TI_File_SD1_Config"  # the identification does find TIs
    for label, path in files.items():
        verdict = verdicts[str(path)]
        assert verdict["config"] is None, label
        file_refusals = {k: v for k, v in verdict["textual_inversion_refusals"].items() if k.startswith("TI_File_")}
        assert len(file_refusals) == 3 and all(v.startswith("NotAMatchError") for v in file_refusals.values()), label


# ---------------------------------------------------------------- Forge


@pytest.mark.parametrize("kind, strength", [("world", 1.0), ("sd", 1.0), ("sdxl", 1.0), ("sdxl", 0.5)])
def test_forge_cfg_step_uses_the_exported_negative(kind, strength, tmp_path):
    forge_checkout()  # skips at once without one
    source = canonical_file(kind, tmp_path, seed=3)
    embedding = NegativeEmbedding.load(source)
    out = export(ExportConfig(file=str(source), to="a1111", out=str(tmp_path / "a1111")))
    length, width = embedding.shape
    pooled = None if embedding.pooled is None else len(embedding.pooled)
    pipe = pipeline(kind)
    pipe.unet.save_pretrained(tmp_path / "unet")
    generator = torch.Generator().manual_seed(5)
    typed = {"crossattn": torch.randn(1, 2 * 77, width, generator=generator)}  # a long typed negative: 2 chunks
    positive = {"crossattn": torch.randn(1, length, width, generator=generator)}
    if pooled:  # SDXL's vector: the pooled part, then the size embeddings
        typed["vector"] = torch.randn(1, pooled + 48, generator=generator)
        positive["vector"] = torch.randn(1, pooled + 48, generator=generator)
    save_file(typed, str(tmp_path / "typed.safetensors"))
    save_file(positive, str(tmp_path / "positive.safetensors"))
    request = {"extension": str(out / "reneg-negative"), "name": kind, "strength": strength,
               "typed": str(tmp_path / "typed.safetensors"), "positive": str(tmp_path / "positive.safetensors"),
               "unet": str(tmp_path / "unet"), "pooled": pooled, "cfg": CFG, "sigma": 2.0,
               "out": str(tmp_path / "step.safetensors")}
    report = run_forge_probe({"step": request})["step"]
    assert report["infotext"]["ReNeg negative"] == kind and report["uncond_type"] == (
        "DictWithShape" if pooled else "Tensor")
    record = load_file(request["out"])

    # what Forge's model call got for the negative branch: reneg's rows (strength 1), or the blend
    expected = torch.lerp(typed["crossattn"][:, :length], embedding.tensor[None], strength)
    assert torch.allclose(record["negative.c_crossattn"], expected, **EXACT)
    if strength == 1.0:
        assert torch.allclose(record["negative.c_crossattn"][0], embedding.tensor, **EXACT)
    assert torch.allclose(record["positive.c_crossattn"], positive["crossattn"], **EXACT)
    extra = {}
    if pooled:
        vector = torch.lerp(typed["vector"][:, :pooled], embedding.pooled[None], strength)
        assert torch.allclose(record["negative.y"][:, :pooled], vector, **EXACT)
        assert torch.equal(record["negative.y"][:, pooled:], typed["vector"][:, pooled:])
        extra["added_cond_kwargs"] = {"text_embeds": vector, "time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64]])}

    # what it returned is the UNet given that negative, and Forge's CFG combines the two branches
    x, sigma = record["x"], record["sigma"]
    with torch.no_grad():
        eps = pipe.unet(x / (sigma ** 2 + 1) ** 0.5, 500, encoder_hidden_states=expected, **extra).sample
    assert torch.allclose(record["negative.denoised"], x - sigma * eps, atol=1e-5, rtol=0)
    assert torch.allclose(record["uncond_pred"], record["negative.denoised"], **EXACT)
    guided = record["uncond_pred"] + CFG * (record["cond_pred"] - record["uncond_pred"])
    assert torch.allclose(record["denoised"], guided, atol=1e-5, rtol=0)


def test_forge_textual_inversion_loader_on_every_reneg_file(tmp_path):
    """Forge's EmbeddingDatabase on one folder per family: every exported file is refused or set aside; the
    canonical file (it carries the marker) as the re-expressed rule says: never registered."""
    forge_checkout()
    sd15 = tmp_path / "sources" / "sd15.safetensors"
    sd15.parent.mkdir()
    NegativeEmbedding(torch.randn(77, 768, generator=torch.Generator().manual_seed(0)), {"family": "sd"}).save(sd15)
    sources = {"sd15": (sd15, 768), **{kind: (canonical_file(kind, tmp_path / "sources"), width)
                                      for kind, width in (("world", 64), ("sd", 32), ("sdxl", 64))}}
    for name, (source, expected_shape) in sources.items():
        folder = tmp_path / f"embeddings-{name}"
        folder.mkdir()
        files = {f"{name}-canonical": source}
        for host in HOSTS:  # every host takes SD1.x and SDXL
            out = export(ExportConfig(file=str(source), to=host, out=str(tmp_path / f"{name}-{host}")))
            files[f"{name}-{host}"] = next(out.rglob("*.safetensors"))
        for label, path in files.items():
            (folder / f"{label}.safetensors").write_bytes(path.read_bytes())
        report = run_forge_probe({"textual_inversion": {"folder": str(folder),
                                                        "expected_shape": expected_shape}})["textual_inversion"]
        canonical_rule = a1111_verdict(load_file(str(source)), expected_shape)
        assert (f"{name}-canonical" in report["registered"]) == (canonical_rule == "misread"), report
        exported = [label for label in files if label != f"{name}-canonical"]
        assert not set(exported) & set(report["registered"]), report
        refused = [label for label in exported if f"Error loading embedding {label}.safetensors" in report["printed"]]
        assert refused == exported, report  # "embedding file has multiple terms in it"
