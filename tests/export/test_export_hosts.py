"""Each host loads what `reneg export` writes through its own code, and samples with it where that can run here.

- ComfyUI (``RENEG_COMFYUI``, a checkout): its Load Conditioning, then one Euler step of ``comfy.sample.sample`` on a
  tiny SD1.5 / SDXL UNet built by ComfyUI's own model classes, the loaded conditioning as the negative: what the
  negative branch's model call received equals reneg's tensors (<= 1e-6), and what it returned equals diffusers'
  UNet given reneg's negative.
- InvokeAI (``invokeai`` importable: scripts/host_checks.sh makes a venv): see test_export_invokeai.py.
- A1111 / Forge: a whole web UI, not run; the names the exported script uses are checked against the Forge source
  when ``RENEG_FORGE`` names a checkout.

Each test skips with one line when its host is absent. scripts/host_checks.sh sets the hosts up and runs them.
"""

import json
import warnings

import pytest
import torch
from export_support import canonical_file, comfyui_checkout, comfyui_unet, run_comfyui_probe
from safetensors.torch import load_file, save_file

from reneg.embedding import NegativeEmbedding
from reneg.export import ExportConfig, export

EXACT = dict(atol=1e-6, rtol=0)
#: ComfyUI's UNet against diffusers' on the same weights: two implementations of the same float32 arithmetic.
SAME_MODEL = dict(atol=2e-4, rtol=0)  # seen: 2e-5 on values up to 50
CFG = 5.0


def _diffusers_denoised(unet, entry: dict, embedding: NegativeEmbedding, size: int) -> torch.Tensor:
    """x - sigma * eps: diffusers' UNet on the input ComfyUI scaled, at ComfyUI's timestep, with reneg's negative
    (and, for SDXL, reneg's pooled part and the size ids diffusers gives a ``size`` image: no crop)."""
    extra = {}
    if embedding.pooled is not None:
        extra["added_cond_kwargs"] = {"text_embeds": embedding.expand_pooled(1),
                                      "time_ids": torch.tensor([[size, size, 0, 0, size, size]], dtype=torch.float32)}
    with torch.no_grad():
        eps = unet(entry["xc"], entry["t"], encoder_hidden_states=embedding.expand(1), **extra).sample
    return entry["x"] - entry["sigma"].reshape(-1, 1, 1, 1) * eps


@pytest.mark.parametrize("kind", ("world", "sd", "sdxl"))
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
               "model": model_class, "cfg": CFG, "seed": 0, "out": str(tmp_path / "step.safetensors")}
    report = run_comfyui_probe({"width": width, "embeddings": [], "conditionings": [], "samples": [request]})
    [step] = report["samples"]
    if step["loader"] != "comfy_extras.nodes_cond.ConditioningLoader":
        warnings.warn(f"ComfyUI's Load Conditioning: {step['loader']}")
    assert step["model_class"] == ("SDXL" if pooled else "BaseModel")
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
    assert torch.allclose(negative["denoised"], _diffusers_denoised(unet, negative, embedding, size), **SAME_MODEL)
    other = NegativeEmbedding(torch.zeros_like(embedding.tensor), {}, embedding.pooled)  # the comparison can fail
    assert not torch.allclose(negative["denoised"], _diffusers_denoised(unet, negative, other, size), **SAME_MODEL)

    # the step: one Euler step to sigma 0 lands on CFG's denoised, uncond + cfg * (cond - uncond), in ComfyUI's
    # latent space (samples come back divided by the latent format's scale factor)
    guided = negative["denoised"] + CFG * (positive_branch["denoised"] - negative["denoised"])
    assert torch.allclose(record["samples"] * step["latent_scale"], guided, atol=1e-5)
    assert torch.isfinite(record["samples"]).all()
