"""Round trip: what each host gets from the exported files equals reneg's tensors (<= 1e-6), for the world and
tiny SD1.5 / SDXL / SD3.

ComfyUI: its Load Conditioning rule (and, with RENEG_COMFYUI, its own ``comfy.utils.load_torch_file``); InvokeAI and
A1111/Forge: the exported node and script themselves, run against stand-ins for the host modules they import
(tests/export_support.py); diffusers: ``NegativeEmbedding.from_pretrained`` and the pipeline's own check.
"""

import json
import sys

import pytest
import torch
from export_support import (REGISTERED_INVOCATIONS, CFGDenoiserParams, ConditioningStore, DictWithShape, Processing,
                            SDXLConditioningInfo, canonical_file, install_a1111, install_invokeai, load_package,
                            load_script, pipeline, run_comfyui_probe, sd3_denoise_embeddings)
from safetensors import safe_open

from reneg.embedding import NegativeEmbedding
from reneg.export import HOSTS, ExportConfig, export

KINDS = ("world", "sd", "sdxl", "sd3")
TOLERANCE = dict(atol=1e-6, rtol=0)


@pytest.fixture(scope="module", params=KINDS)
def exported(request, tmp_path_factory):
    """(kind, the canonical embedding, host -> export folder)."""
    folder = tmp_path_factory.mktemp(f"roundtrip-{request.param}")
    source = canonical_file(request.param, folder, seed=3)
    embedding = NegativeEmbedding.load(source)
    outs = {host: export(ExportConfig(file=str(source), to=host, out=str(folder / host))) for host, module in
            HOSTS.items() if module.FAMILIES is None or embedding.metadata["family"] in module.FAMILIES}
    return request.param, embedding, outs


def test_comfyui_load_conditioning_gets_the_tensors(exported):
    """comfy_extras/nodes_cond.py ``ConditioningLoader.execute``: ``cond = sd.pop("conditioning")``, the other
    tensors and the JSON of ``conditioning_options`` become the options."""
    kind, embedding, outs = exported
    path = outs["comfyui"] / f"{kind}.safetensors"
    with safe_open(str(path), framework="pt") as file:
        sd = {key: file.get_tensor(key) for key in file.keys()}
        options = json.loads(file.metadata()["conditioning_options"])
    cond = sd.pop("conditioning")
    assert cond.shape == (1, *embedding.shape) and torch.allclose(cond[0], embedding.tensor, **TOLERANCE)
    if embedding.pooled is None:
        assert "pooled_output" not in sd
    else:
        assert torch.allclose(sd["pooled_output"], embedding.pooled[None], **TOLERANCE)
    assert options == {}  # SDXL's size conditioning: ComfyUI takes the latent's size, as diffusers does


def test_comfyui_own_loader_gets_the_tensors(exported):
    kind, embedding, outs = exported
    path = outs["comfyui"] / f"{kind}.safetensors"
    report = run_comfyui_probe({"width": 8, "embeddings": [], "conditionings": [str(path)]})
    loaded = {}
    with safe_open(str(path.with_suffix(".loaded")), framework="pt") as file:
        loaded = {key: file.get_tensor(key) for key in file.keys()}
    assert torch.allclose(loaded["conditioning"][0], embedding.tensor, **TOLERANCE)
    if embedding.pooled is not None:
        assert torch.allclose(loaded["pooled_output"][0], embedding.pooled, **TOLERANCE)
    assert report["conditionings"][str(path)]["scalar_options"] == {}


def _invoke(outs, kind, monkeypatch, invocation_type, **fields):
    install_invokeai(monkeypatch)
    name = f"reneg_negative_{kind}"
    try:
        load_package(outs["invokeai"] / "reneg_negative" / "__init__.py", name)
    finally:  # the pack imports afresh in each test, against this test's stand-ins
        for module in (name, f"{name}.reneg_negative_node"):
            sys.modules.pop(module, None)
    node_class, options = REGISTERED_INVOCATIONS.pop(invocation_type)
    context = type("Context", (), {"conditioning": ConditioningStore()})()
    output = node_class(**fields).invoke(context)
    data = context.conditioning.saved[output.conditioning.conditioning_name]
    assert options["category"] == "conditioning" and len(data.conditionings) == 1
    return data.conditionings[0]


def test_invokeai_node_builds_the_conditioning(exported, monkeypatch):
    kind, embedding, outs = exported
    if kind == "sd3":
        info = _invoke(outs, kind, monkeypatch, "reneg_negative_sd3")
        embeds, pooled = sd3_denoise_embeddings(info)  # what SD3's Denoise feeds the transformer
        assert torch.allclose(embeds[0], embedding.tensor, **TOLERANCE)
        assert torch.allclose(pooled[0], embedding.pooled, **TOLERANCE)
        return
    info = _invoke(outs, kind, monkeypatch, "reneg_negative", width=832, height=1216)
    assert torch.allclose(info.embeds[0], embedding.tensor, **TOLERANCE)
    if kind == "sdxl":
        assert isinstance(info, SDXLConditioningInfo)
        assert torch.allclose(info.pooled_embeds[0], embedding.pooled, **TOLERANCE)
        assert info.add_time_ids.tolist() == [[1216, 832, 0, 0, 1216, 832]]
    else:
        assert not isinstance(info, SDXLConditioningInfo)


def test_invokeai_node_refuses_another_family(exported, monkeypatch):
    kind, _, outs = exported
    other = "reneg_negative" if kind == "sd3" else "reneg_negative_sd3"
    with pytest.raises(ValueError, match="use the node for that model family"):
        _invoke(outs, kind, monkeypatch, other)


def _a1111(outs, kind, monkeypatch):
    extension = outs["a1111"] / "reneg-negative"
    callbacks = install_a1111(monkeypatch, extension)
    script = load_script(extension / "scripts" / "reneg_negative.py", f"reneg_negative_script_{kind}")
    assert callbacks == [script.on_cfg_denoiser]
    return script


def _uncond(kind, embedding, batch=2):
    """A typed negative as A1111 encodes it: two 77-token chunks (a long negative prompt), SDXL's dict with its
    ``vector`` (pooled, then the size embeddings)."""
    generator = torch.Generator().manual_seed(5)
    crossattn = torch.randn(batch, 2 * 77, embedding.shape[1], generator=generator)
    if embedding.pooled is None:
        return crossattn
    vector = torch.randn(batch, len(embedding.pooled) + 48, generator=generator)
    return DictWithShape({"crossattn": crossattn, "vector": vector})


def test_a1111_script_replaces_and_blends_text_uncond(exported, monkeypatch):
    kind, embedding, outs = exported
    if "a1111" not in outs:
        pytest.skip("SD3 is not offered for A1111/Forge (export refuses it; see test_export)")
    script = _a1111(outs, kind, monkeypatch)
    instance, p = script.ReNegNegativeScript(), Processing()
    enabled, name, strength, start, stop = instance.ui(False)
    assert name.value == kind and strength.value == 1.0
    for s in (1.0, 0.5):
        instance.process(p, True, kind, s, 0.0, 1.0)
        typed = _uncond(kind, embedding)
        params = CFGDenoiserParams(text_cond=None, text_uncond=_uncond(kind, embedding), sampling_step=3)
        script.on_cfg_denoiser(params)
        crossattn = params.text_uncond["crossattn"] if embedding.pooled is not None else params.text_uncond
        typed_rows = (typed["crossattn"] if embedding.pooled is not None else typed)[:, :embedding.shape[0]]
        assert torch.allclose(crossattn, torch.lerp(typed_rows, embedding.tensor.expand_as(typed_rows), s),
                              atol=1e-6)
        if embedding.pooled is not None:
            size = len(embedding.pooled)
            expected = torch.lerp(typed["vector"][:, :size], embedding.pooled.expand(2, -1), s)
            assert torch.allclose(params.text_uncond["vector"][:, :size], expected, atol=1e-6)
            assert torch.equal(params.text_uncond["vector"][:, size:], typed["vector"][:, size:])
    assert p.extra_generation_params["ReNeg negative"] == kind and p.extra_generation_params["ReNeg strength"] == "0.5"


def test_a1111_script_keeps_to_its_steps_and_to_fitting_models(exported, monkeypatch, capsys):
    kind, embedding, outs = exported
    if "a1111" not in outs:
        pytest.skip("SD3 is not offered for A1111/Forge")
    script = _a1111(outs, kind, monkeypatch)
    instance = script.ReNegNegativeScript()
    instance.process(Processing(), True, kind, 1.0, 0.25, 0.5)
    for step, applied in ((4, False), (5, True), (9, True), (10, False)):
        params = CFGDenoiserParams(text_cond=None, text_uncond=_uncond(kind, embedding), sampling_step=step)
        before = _uncond(kind, embedding)
        script.on_cfg_denoiser(params)
        unchanged = params.text_uncond["crossattn"] if embedding.pooled is not None else params.text_uncond
        assert (unchanged.shape == (before["crossattn"] if embedding.pooled is not None else before).shape) != applied
    wrong = CFGDenoiserParams(text_cond=None, text_uncond=torch.zeros(2, 77, embedding.shape[1] + 1), sampling_step=5)
    script.on_cfg_denoiser(wrong)
    assert torch.equal(wrong.text_uncond, torch.zeros(2, 77, embedding.shape[1] + 1))
    assert "does not fit this model's text encoder" in capsys.readouterr().out
    instance.process(Processing(), False, kind, 1.0, 0.0, 1.0)  # disabled: the callback does nothing
    params = CFGDenoiserParams(text_cond=None, text_uncond=_uncond(kind, embedding))
    script.on_cfg_denoiser(params)
    assert (params.text_uncond["crossattn"] if embedding.pooled is not None else params.text_uncond).shape[1] == 154


def test_hub_folder_reads_back_and_fits_its_pipeline(exported):
    kind, embedding, outs = exported
    loaded = NegativeEmbedding.from_pretrained(outs["diffusers"])
    assert torch.allclose(loaded.tensor, embedding.tensor, **TOLERANCE) and loaded.metadata == {
        **embedding.metadata, "reneg_source_sha256": loaded.metadata["reneg_source_sha256"]}
    if embedding.pooled is not None:
        assert torch.allclose(loaded.pooled, embedding.pooled, **TOLERANCE)
    assert loaded.for_pipeline(pipeline(kind)) is loaded
