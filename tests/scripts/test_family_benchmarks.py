"""benchmarks/gpu_real_size_xl.py: its published configs build the real sizes, and it runs (tiny) on the CPU."""

import importlib.util
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_real_size_xl.py"


def _script():
    spec = importlib.util.spec_from_file_location("gpu_real_size_xl", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _millions(pipe) -> dict:
    return {k: round(sum(p.numel() for p in m.parameters()) / 1e6, 1) for k, m in pipe.components.items()
            if isinstance(m, torch.nn.Module)}


def test_real_configs_have_the_published_sizes():
    """Built on the meta device (no memory): SDXL-base's UNet 2567.5 M, CLIP-G 694.7 M, T5-XXL 4762.3 M, ..."""
    script = _script()
    sdxl = _millions(script.build_sdxl(script.REAL, torch.device("meta")))
    assert sdxl == {"vae": 83.7, "text_encoder": 123.1, "text_encoder_2": 694.7, "unet": 2567.5}
    sd3 = _millions(script.build_sd3(script.REAL, torch.device("meta")))
    assert sd3["text_encoder_3"] == 4762.3 and sd3["text_encoder_2"] == 694.7
    assert sd3["transformer"] == 2243.2  # 24 MM-DiT blocks of width 1536, dual attention in blocks 0-12


@pytest.mark.slow
def test_tiny_run_on_the_cpu():
    results = _script().main(["--tiny", "--repeats", "1", "--grad-from-last"])
    assert [r["family"] for r in results] == ["sdxl", "sd3"]
    assert all(r["median_seconds"] > 0 and r["gradient_checkpointing"] for r in results)
    assert results[0]["negative_shape"] == [77, 64] and results[1]["negative_shape"] == [333, 64]
