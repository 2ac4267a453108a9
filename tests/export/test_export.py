"""`reneg export`: the command, its bad input (exit 2, one line, nothing written), the folders, the model card."""

import json

import pytest
import torch
import yaml
from export_support import canonical_file
from safetensors import safe_open

from reneg.cli import main
from reneg.embedding import NegativeEmbedding
from reneg.errors import ReNegError
from reneg.export import HOSTS
from reneg.export.layout import MANIFEST, MARKER_KEY

HOST_FILES = {
    "comfyui": ["README.txt", "workflow-ksampler.json", "workflow-naguidance.json", "world.safetensors"],
    "invokeai": ["reneg_negative/README.md", "reneg_negative/__init__.py", "reneg_negative/negatives/world.safetensors",
                 "reneg_negative/reneg_negative_node.py"],
    "a1111": ["reneg-negative/README.md", "reneg-negative/negatives/world.safetensors",
              "reneg-negative/scripts/reneg_negative.py"],
    "diffusers": ["README.md", "negative_embedding.safetensors"],
}


@pytest.fixture(scope="module")
def world_file(tmp_path_factory):
    return canonical_file("world", tmp_path_factory.mktemp("world"))


def _export(*argv) -> int:
    return main(["export", *map(str, argv)])


def _status(*argv) -> int:
    """The exit status, whether the command returns it or argparse exits with it."""
    try:
        return _export(*argv)
    except SystemExit as exit_:
        return exit_.code


@pytest.mark.parametrize("host", sorted(HOSTS))
def test_each_host_writes_its_folder_and_manifest(host, world_file, tmp_path, capsys):
    out = tmp_path / host
    assert _export(world_file, "--to", host, "--out", out) == 0
    assert capsys.readouterr().out.strip() == str(out)
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == sorted(HOST_FILES[host] + [MANIFEST])
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["host"] == host and manifest["family"] == "sd" and manifest["files"] == HOST_FILES[host]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left beside it


def test_every_tensor_file_carries_the_marker_first(world_file, tmp_path):
    for host in HOSTS:
        _export(world_file, "--to", host, "--out", tmp_path / host)
    tensor_files = sorted(tmp_path.rglob("*.safetensors"))
    assert len(tensor_files) == 4
    for path in tensor_files:
        with safe_open(str(path), framework="pt") as file:
            assert list(file.keys())[0] == MARKER_KEY
            assert all(file.get_tensor(key).dtype == torch.float32 for key in file.keys())


def _bad_inputs(tmp_path, world_file):
    """name -> (argv, a word the one-line message must contain)."""
    ti = tmp_path / "ti.safetensors"
    from safetensors.torch import save_file
    save_file({"emb_params": torch.zeros(2, 32)}, str(ti))
    nan = tmp_path / "nan.safetensors"
    save_file({"negative_embedding": torch.full((4, 8), float("nan"))}, str(nan),
              metadata={"format": "reneg.negative_embedding", "version": "1"})
    text = tmp_path / "negative.txt"
    text.write_text("blurry, lowres")
    sd3 = tmp_path / "sd3.safetensors"
    NegativeEmbedding(torch.zeros(333, 64), {"family": "sd3"}, torch.zeros(64)).save(sd3)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    return {
        "missing file": ([tmp_path / "nope.safetensors", "--to", "comfyui"], "does not exist"),
        "textual inversion": ([ti, "--to", "comfyui"], "textual inversion"),
        "NaN values": ([nan, "--to", "diffusers"], "NaN"),
        "a text file": ([text, "--to", "diffusers"], ".safetensors"),
        "SD3 to a1111": ([sd3, "--to", "a1111"], "--to diffusers"),
        "unknown host": ([world_file, "--to", "fooocus"], "invalid choice"),
        "no FILE": (["--to", "comfyui"], "FILE"),
        "no --to": ([world_file], "--to"),
        "results for comfyui": ([world_file, "--to", "comfyui", "--results", tmp_path / "r.json"], "--results"),
        "missing results": ([world_file, "--to", "diffusers", "--results", tmp_path / "r.json"], "results.json"),
        "busy out": ([world_file, "--to", "comfyui", "--out", busy], "not empty"),
    }


def test_bad_input_exits_2_with_one_line_and_writes_nothing(world_file, tmp_path, capsys):
    cases = _bad_inputs(tmp_path, world_file)
    for name, (argv, needle) in cases.items():
        out = tmp_path / f"out-{name.replace(' ', '-')}"
        if "--out" not in argv:
            argv = [*argv, "--out", out]
        status = _status(*argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert status == 2, name
        assert len(err) == 1 and needle in err[0], (name, err)
        assert not out.exists(), name
    assert sorted(p.name for p in (tmp_path / "busy").iterdir()) == ["keep.txt"]


def test_overwrite_replaces_an_earlier_export_only(world_file, tmp_path):
    out = tmp_path / "out"
    assert _export(world_file, "--to", "diffusers", "--out", out) == 0
    assert _export(world_file, "--to", "comfyui", "--out", out) == 2
    assert _export(world_file, "--to", "comfyui", "--out", out, "--overwrite") == 0
    assert json.loads((out / MANIFEST).read_text())["host"] == "comfyui"
    assert not (out / "README.md").exists()
    other = tmp_path / "other"
    other.mkdir()
    (other / "photo.png").write_bytes(b"x")
    assert _export(world_file, "--to", "comfyui", "--out", other, "--overwrite") == 2
    assert [p.name for p in other.iterdir()] == ["photo.png"]


def test_a_failure_while_writing_leaves_nothing(world_file, tmp_path, monkeypatch):
    def broken(source, folder, *, results=None):
        (folder / "half.safetensors").write_bytes(b"half")
        raise ReNegError("disk full")

    monkeypatch.setattr(HOSTS["comfyui"], "write", broken)
    assert _export(world_file, "--to", "comfyui", "--out", tmp_path / "out") == 2
    assert list(tmp_path.iterdir()) == []


def test_a_plain_tensor_release_exports_without_metadata(tmp_path):
    """The ReNeg authors' .pt releases (a (77, 768) tensor): family SD by shape, "not recorded" where metadata lacks."""
    plain = tmp_path / "sd15.pt"
    torch.save(torch.randn(77, 768, generator=torch.Generator().manual_seed(0)), plain)
    assert _export(plain, "--to", "comfyui", "--out", tmp_path / "comfy") == 0
    with safe_open(str(tmp_path / "comfy" / "sd15.safetensors"), framework="pt") as file:
        assert torch.equal(file.get_tensor("conditioning")[0], torch.load(plain))
    assert "fingerprint: not recorded" in (tmp_path / "comfy" / "README.txt").read_text()
    assert _export(plain, "--to", "a1111", "--out", tmp_path / "a1111") == 0  # its script checks the format
    exported = NegativeEmbedding.load(tmp_path / "a1111" / "reneg-negative" / "negatives" / "sd15.safetensors")
    assert exported.metadata["format"] == "reneg.negative_embedding" and exported.metadata["family"] == "sd"


def test_export_file_as_a_config_key(world_file, tmp_path):
    config = tmp_path / "export.toml"
    config.write_text(f'file = "{world_file}"\nto = "diffusers"\nname = "my negative!"\n')
    assert _export("--config", config, "--out", tmp_path / "hub") == 0
    assert (tmp_path / "hub" / "negative_embedding.safetensors").is_file()
    assert _export("--config", config, "--to", "comfyui", "--out", tmp_path / "comfy") == 0
    assert (tmp_path / "comfy" / "my_negative.safetensors").is_file()


# ---------------------------------------------------------------- the Hub folder and its card


def _results(path):
    path.write_text(json.dumps({"benchmark": "shapes", "seed": 0, "num_prompts": 400, "metrics": ["shapes-hps"],
                                "methods": {"null": {"mean": {"shapes-hps": 0.25}},
                                            "embedding=neg.safetensors": {"mean": {"shapes-hps": 0.375}}}}))
    return path


def test_model_card_front_matter_recipe_and_measured_table(world_file, tmp_path):
    out = tmp_path / "hub"
    assert _export(world_file, "--to", "diffusers", "--out", out, "--results", _results(tmp_path / "r.json")) == 0
    card = (out / "README.md").read_text()
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["library_name"] == "reneg" and "negative-embedding" in front["tags"]
    assert "base_model" not in front  # "shapes" is a built-in name, not a hub id
    metadata = NegativeEmbedding.load(world_file).metadata
    assert metadata["text_encoder_fingerprint"] in card and "`shapes-hps`" in card
    assert "| lr | `0.005` |" in card and "| resolution | `64` |" in card
    assert "| `embedding=neg.safetensors` | 0.3750 |" in card and "| `null` | 0.2500 |" in card
    assert 'load_model("shapes").pipe' in card and "NegativeEmbedding.from_pretrained(" in card


def test_from_pretrained_reads_the_folder_and_a_cached_hub_id(world_file, tmp_path, monkeypatch):
    out = tmp_path / "hub"
    _export(world_file, "--to", "diffusers", "--out", out)
    original = NegativeEmbedding.load(world_file)
    for loaded in (NegativeEmbedding.from_pretrained(out), NegativeEmbedding.from_pretrained(str(out))):
        assert torch.equal(loaded.tensor, original.tensor) and loaded.metadata["base_model"] == "shapes"
    cache = tmp_path / "cache"
    snapshot = cache / "models--someone--world-negative" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    for path in out.iterdir():
        (snapshot / path.name).write_bytes(path.read_bytes())
    (cache / "models--someone--world-negative" / "refs").mkdir()
    (cache / "models--someone--world-negative" / "refs" / "main").write_text("a" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    loaded = NegativeEmbedding.from_pretrained("someone/world-negative")
    assert torch.equal(loaded.tensor, original.tensor)
    with pytest.raises(ReNegError, match="someone/absent.*not in the local hub cache"):
        NegativeEmbedding.from_pretrained("someone/absent")
    with pytest.raises(ReNegError, match="has no negative_embedding.safetensors"):
        NegativeEmbedding.from_pretrained(tmp_path)


# ---------------------------------------------------------------- ComfyUI workflows


@pytest.mark.parametrize("name, nag", [("workflow-ksampler.json", False), ("workflow-naguidance.json", True)])
def test_comfyui_workflows_wire_the_loaded_conditioning_as_negative(name, nag, world_file, tmp_path):
    out = tmp_path / "comfy"
    _export(world_file, "--to", "comfyui", "--out", out)
    nodes = json.loads((out / name).read_text())
    for node in nodes.values():  # every link names an existing node
        assert all(value[0] in nodes for value in node["inputs"].values() if isinstance(value, list))
    sampler = next(node for node in nodes.values() if node["class_type"] == "KSampler")["inputs"]
    negative = nodes[sampler["negative"][0]]
    assert negative == {"class_type": "ConditioningLoader", "inputs": {"conditioning_name": "world.safetensors"},
                        "_meta": negative["_meta"]}
    assert sampler["steps"] == 20 and sampler["cfg"] == (1.0 if nag else 1.5)
    assert (nodes[sampler["model"][0]]["class_type"] == "NAGuidance") == nag
