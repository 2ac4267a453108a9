"""No file reneg writes (the canonical one and every export) is ever taken for a textual inversion.

Loaders exercised for real: diffusers' ``load_textual_inversion`` (a tiny real SD pipeline), and, when
``RENEG_COMFYUI`` names a ComfyUI checkout, ComfyUI's own tokenizer and text model (tests/comfyui_probe.py).
A1111/Forge and InvokeAI: their rules as written in their sources, re-expressed in tests/export_host_rules.py; their
own loaders run in tests/export/test_export_hosts.py where scripts/host_checks.sh sets them up.
"""

from pathlib import Path

import pytest
import torch
from export_host_rules import a1111_verdict, comfyui_verdict, invokeai_token_dim, invokeai_verdict
from export_support import canonical_file, pipeline, run_comfyui_probe
from safetensors.torch import load_file, save_file

from reneg.embedding import MARKER_KEY, NegativeEmbedding
from reneg.export import HOSTS, ExportConfig, export
from reneg.families import family_for
from reneg.models.tiny import tiny_sd_pipeline

KINDS = ("world", "sd", "sdxl", "sd3")
#: ComfyUI's tokenizer key per text encoder, in the pipelines' order (comfy/sd1_clip.py, sdxl_clip.py, sd3_clip.py).
COMFY_KEYS = {"world": ("clip_l",), "sd": ("clip_l",), "sdxl": ("clip_l", "clip_g"),
              "sd3": ("clip_l", "clip_g", "t5xxl")}


def token_widths(kind: str) -> list[int]:
    """The width of each text encoder's *input* token embeddings: what a textual inversion must match."""
    return [encoder.get_input_embeddings().weight.shape[-1] for encoder in family_for(pipeline(kind)).text_encoders()]


def exported_files(kind: str, folder: Path) -> dict[str, Path]:
    """host -> the tensor file `reneg export` writes for it, from one canonical file of ``kind``."""
    source = canonical_file(kind, folder)
    files = {}
    for host, module in HOSTS.items():
        if module.FAMILIES is None or family_for(pipeline(kind)).name in module.FAMILIES:
            out = export(ExportConfig(file=str(source), to=host, out=str(folder / host)))
            files[host] = next(p for p in out.rglob("*.safetensors"))
    return files


@pytest.fixture(scope="module", params=KINDS)
def kind_files(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(f"safety-{request.param}")
    return request.param, folder / f"{request.param}.safetensors", exported_files(request.param, folder)


def verdicts(kind: str, path: Path) -> dict[str, str]:
    """What A1111/Forge, each ComfyUI tokenizer and InvokeAI make of ``path`` under their rules."""
    data, widths = load_file(str(path)), token_widths(kind)
    a1111_width = sum(widths[:2]) if kind in ("sdxl",) else widths[0]
    comfy = [comfyui_verdict(data, width, key) for width, key in zip(widths, COMFY_KEYS[kind])]
    return {"a1111": a1111_verdict(data, a1111_width),
            "comfyui": "misread" if "misread" in comfy else comfy[0], "invokeai": invokeai_verdict(path)}


def diffusers_verdict(path: Path, width: int) -> str:
    """diffusers' real ``load_textual_inversion`` on a fresh tiny SD pipeline whose token width is ``width``:
    "misread" when it added tokens, "refused" when it raised and left the tokenizer as it was."""
    pipe = tiny_sd_pipeline(text_width=width)
    before = len(pipe.tokenizer)
    try:
        pipe.load_textual_inversion(str(path))
    except (ValueError, OSError, RuntimeError):
        assert len(pipe.tokenizer) == before
        return "refused"
    return "misread" if len(pipe.tokenizer) > before else "ignored"


def test_no_host_takes_an_exported_file_for_a_textual_inversion(kind_files):
    kind, _, files = kind_files
    for host, path in files.items():
        assert verdicts(kind, path) == {"a1111": "refused", "comfyui": "ignored", "invokeai": "refused"}, host
        assert diffusers_verdict(path, token_widths(kind)[0]) == "refused", host
        assert invokeai_token_dim(load_file(str(path))) == 1  # the marker, first in key order


def test_diffusers_refuses_the_hub_folder_itself(kind_files, tmp_path):
    kind, _, files = kind_files
    pipe = tiny_sd_pipeline(text_width=token_widths(kind)[0])
    with pytest.raises(OSError, match="learned_embeds"):
        pipe.load_textual_inversion(str(files["diffusers"].parent))


def test_no_host_takes_the_canonical_file_for_a_textual_inversion(kind_files):
    """The file `reneg train` writes (``NegativeEmbedding.save``) carries the marker too: before it did, a single-tensor
    file (SD1.x/2.x, the world) was misread by diffusers, A1111/Forge and ComfyUI as an L-vector textual inversion,
    and SD3's joint (333, 4096) tensor by ComfyUI's T5 tokenizer."""
    kind, canonical, _ = kind_files
    assert verdicts(kind, canonical) == {"a1111": "refused", "comfyui": "ignored", "invokeai": "refused"}
    assert diffusers_verdict(canonical, token_widths(kind)[0]) == "refused"
    assert list(load_file(str(canonical)))[0] == MARKER_KEY


def test_a_file_from_before_the_marker_reads_the_same(tmp_path):
    tensor = torch.randn(77, 32, generator=torch.Generator().manual_seed(0))
    save_file({"negative_embedding": tensor}, str(tmp_path / "old.safetensors"),
              metadata={"format": "reneg.negative_embedding", "version": "1"})
    NegativeEmbedding(tensor, {}).save(tmp_path / "new.safetensors")
    assert torch.equal(NegativeEmbedding.load(tmp_path / "old.safetensors").tensor,
                       NegativeEmbedding.load(tmp_path / "new.safetensors").tensor)


# ---------------------------------------------------------------- ComfyUI's own code (optional)


@pytest.mark.parametrize("kind", KINDS)
def test_comfyui_prompt_embedding_ignores_exports_and_agrees_with_the_rule(kind, tmp_path):
    """``embedding:NAME`` through ComfyUI's own tokenizer and text model, with each of the family's tokenizer keys
    and token widths: every exported file is ignored ("shape mismatch"); the canonical file too (it carries the marker),
    as the re-expressed rule (export_host_rules.comfyui_verdict) says."""
    files = {"canonical": tmp_path / f"{kind}.safetensors", **exported_files(kind, tmp_path)}
    alone = {}  # each in a folder of its own: ComfyUI looks for embedding:NAME in subfolders too
    for label, path in files.items():
        alone[label] = tmp_path / f"probe-{label}" / f"{label}.safetensors"
        alone[label].parent.mkdir()
        alone[label].write_bytes(path.read_bytes())
    tokenizers = list(zip(token_widths(kind), COMFY_KEYS[kind]))
    entries = [[str(path), width, key] for path in alone.values() for width, key in tokenizers]
    report = run_comfyui_probe({"width": 0, "conditionings": [], "embeddings": entries})["embeddings"]
    canonical = load_file(str(files["canonical"]))
    for width, key in tokenizers:
        got = report[f"{alone['canonical']}|{key}"]["spliced_vectors"]
        rule = comfyui_verdict(canonical, width, key)
        assert got == 0 and rule == "ignored", (key, got, rule)
        for label, path in alone.items():
            if label != "canonical":
                entry = report[f"{path}|{key}"]
                assert entry["spliced_vectors"] == 0, (label, key)
                assert any("shape mismatch" in message for message in entry["warnings"]), (label, key)
