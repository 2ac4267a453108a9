"""Inputs that used to end in an internal error or silent garbage (issue 33): each is now a one-line
:class:`ReNegError` before anything is written, and a rerun of generate replaces only its own outputs."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from reneg.embedding import NegativeEmbedding
from reneg.errors import ReNegError
from reneg.io import open_rgb, to_pil
from reneg.models.loading import load_model
from reneg.prompts import load_prompts
from reneg.rewards.base import require_gradient


def _copy(source: Path, tmp_path: Path, name: str) -> Path:
    return Path(shutil.copytree(source, tmp_path / name))


def test_a_corrupt_model_index_is_one_line(tiny_epsilon_dir, tmp_path):
    folder = _copy(tiny_epsilon_dir, tmp_path, "bad-index")
    (folder / "model_index.json").write_text('{"_class_name": ')
    with pytest.raises(ReNegError, match="model_index.json' is not valid JSON"):
        load_model(str(folder))


def test_a_custom_code_component_is_refused_and_never_runs(tiny_epsilon_dir, tmp_path):
    folder = _copy(tiny_epsilon_dir, tmp_path, "custom")
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({**index, "unet": ["my_unet", "MyUNet"]}))
    marker = tmp_path / "ran"
    (folder / "unet" / "my_unet.py").write_text(f"open({str(marker)!r}, 'w')\n")
    with pytest.raises(ReNegError, match="component 'unet' .* is custom code"):
        load_model(str(folder))
    assert not marker.exists()


def test_a_missing_or_truncated_component_is_one_line(tiny_epsilon_dir, tmp_path):
    missing = _copy(tiny_epsilon_dir, tmp_path, "no-unet")
    shutil.rmtree(missing / "unet")
    with pytest.raises(ReNegError, match="has no 'unet/' folder"):
        load_model(str(missing))
    truncated = _copy(tiny_epsilon_dir, tmp_path, "truncated")
    weights = next((truncated / "unet").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ReNegError, match="cannot be loaded .*is it complete"):
        load_model(str(truncated))


def test_an_embedding_of_huge_values_is_refused(tmp_path):
    path = tmp_path / "huge.safetensors"
    save_file({"negative_embedding": torch.full((77, 32), 1e30)}, str(path))
    with pytest.raises(ReNegError, match="values up to 1e\\+30"):
        NegativeEmbedding.load(path)


def test_an_oversized_embedding_is_refused_from_its_header(tmp_path):
    """A 1.6 GB file (sparse: only its header is on disk) is refused before a byte of its data is read."""
    path, rows = tmp_path / "big.safetensors", 400_000
    header = json.dumps({"negative_embedding": {"dtype": "F32", "shape": [rows, 1024],
                                                "data_offsets": [0, rows * 1024 * 4]}}).encode()
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(header)) + header)
        handle.truncate(8 + len(header) + rows * 1024 * 4)
    with pytest.raises(ReNegError, match="far larger than any text encoder's output"):
        NegativeEmbedding.load(path)


@pytest.mark.parametrize("name,text,match", [
    ("deep.json", "[" * 100_000 + "]" * 100_000, "recursion"),
    ("long.tsv", "Prompt\tCategory\n" + "a" * 200_000 + "\tx\n", "field larger than field limit"),
])
def test_pathological_prompt_files_are_one_line(tmp_path, name, text, match):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ReNegError, match=match):
        load_prompts(path)


def test_images_too_large_or_truncated_are_refused(tmp_path):
    bomb = tmp_path / "bomb.png"
    Image.new("1", (9000, 9000)).save(bomb)  # a few kB on disk, 81 M pixels once decoded
    with pytest.raises(ReNegError, match="9000x9000 pixels, more than reneg reads"):
        open_rgb(bomb, what="saved image", advice="delete it")
    whole = tmp_path / "whole.png"
    Image.new("RGB", (64, 64), "red").save(whole)
    cut = tmp_path / "cut.png"
    cut.write_bytes(whole.read_bytes()[:60])
    with pytest.raises(ReNegError, match="saved image .*cut.png' cannot be read"):
        open_rgb(cut, what="saved image", advice="delete it")
    assert open_rgb(whole, what="saved image", advice="").size == (64, 64)


def test_non_finite_images_are_never_written():
    with pytest.raises(ReNegError, match="NaN or infinite"):
        to_pil(torch.full((1, 3, 8, 8), float("nan")))


def test_a_reward_without_gradient_is_refused():
    images = torch.rand(2, 3, 8, 8, requires_grad=True)
    with pytest.raises(ReNegError, match="not differentiable"):
        require_gradient(images.detach().mean((1, 2, 3)), images)
    require_gradient(images.mean((1, 2, 3)), images)  # a differentiable one passes


def test_generate_rerun_replaces_its_own_images_and_keeps_other_files(tmp_path):
    from reneg.generate import GenerateConfig, generate

    model = load_model("tiny")
    out = tmp_path / "images"
    generate(GenerateConfig(model="tiny", prompt=["a red circle"], num_images=3, steps=2, out=str(out)), model=model)
    (out / "mine.png").write_bytes(b"user file")
    record = generate(GenerateConfig(model="tiny", prompt=["a red circle"], num_images=1, steps=2, out=str(out)),
                      model=model)
    written = json.loads(record.read_text())
    assert written["complete"] is True and [item["file"] for item in written["images"]] == ["00000.png"]
    assert sorted(p.name for p in out.iterdir()) == ["00000.png", "generation.json", "mine.png"]


def test_top_level_help_imports_no_command_module():
    """`reneg --help` builds every command's name and help without importing torch or a command's module."""
    code = ("import sys; from reneg.cli import build_parser; build_parser(['--help']); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'diffusers', 'transformers')))")
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "[]"


def test_world_build_refuses_a_warm_start_folder_without_the_model(tmp_path):
    from reneg.world.build import BuildConfig

    with pytest.raises(ReNegError, match="--vae-init .* holds no VAE"):
        BuildConfig(vae_init=str(tmp_path))
    with pytest.raises(ReNegError, match="--sd-init .* is not a Stable Diffusion pipeline folder"):
        BuildConfig(sd_init=str(tmp_path))


def test_eval_keys_a_safetensors_file_by_its_tensors_and_metadata(tmp_path):
    """The same tensors and metadata written in another order are the same file to eval; other values are not."""
    from reneg.identity import file_identity

    a, b = torch.randn(4, 3), torch.randn(2)
    save_file({"x": a, "y": b}, str(tmp_path / "one.safetensors"), metadata={"k": "1", "m": "2"})
    save_file({"y": b, "x": a}, str(tmp_path / "two.safetensors"), metadata={"m": "2", "k": "1"})
    save_file({"x": a, "y": b + 1}, str(tmp_path / "three.safetensors"), metadata={"k": "1", "m": "2"})
    save_file({"x": a, "y": b}, str(tmp_path / "four.safetensors"), metadata={"k": "1", "m": "3"})
    one, two, three, four = (file_identity(tmp_path / f"{n}.safetensors") for n in ("one", "two", "three", "four"))
    assert one == two and len({one, three, four}) == 3


def test_a_prompt_longer_than_the_text_encoder_reads_is_said_once(caplog):
    import logging

    family = load_model("tiny").family
    limit = family.pipe.tokenizer.model_max_length
    long_prompt = " ".join(["red circle"] * limit)
    with caplog.at_level(logging.WARNING, logger="reneg"):
        family.warn_if_truncated(["a red circle", long_prompt, long_prompt])
    said = [r.getMessage() for r in caplog.records if r.name == "reneg"]
    assert len(said) == 1 and said[0].startswith(f"1 of 2 prompts are longer than the text encoder reads ({limit} tokens)")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="reneg"):
        family.warn_if_truncated(["a red circle"])
    assert not caplog.records
