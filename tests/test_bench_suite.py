"""The benchmark suite's entry points run: `python -m benchmarks --help`, an unknown section is refused, and the
real-size script runs end to end on tiny models (`--tiny`, CPU)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*args, timeout=600):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_suite_help_lists_the_sections_and_refuses_unknown_ones():
    result = _run("-m", "benchmarks", "--help")
    assert result.returncode == 0 and "floor" in result.stdout and "--eval-base" in result.stdout and "--npo" in result.stdout
    result = _run("-m", "benchmarks", "--only", "nonsense")
    assert result.returncode == 2 and "unknown section nonsense" in result.stderr
    result = _run("-m", "benchmarks", "--only", "npo", "--npo", str(ROOT / "no-such-dir"))
    assert result.returncode == 2 and "--npo: no directory" in result.stderr


def test_memory_estimate_refuses_bad_batches():
    result = _run("benchmarks/memory_estimate.py", "--batches", "1,x")
    assert result.returncode == 2 and "comma-separated positive integers" in result.stderr


@pytest.mark.slow
def test_real_size_script_runs_on_tiny_models(tmp_path):
    out = tmp_path / "tiny.json"
    result = _run("benchmarks/gpu_real_size.py", "--tiny", "--device", "cpu", "--dtype", "fp32", "--batches", "1,2",
                  "--steps", "2", "--rounds", "1", "--no-checkpointing-too", "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads(out.read_text())
    assert record["tiny"] and [(r["batch"], r["checkpointing"]) for r in record["results"]] == \
        [(1, True), (1, False), (2, True), (2, False)]
    for r in record["results"]:
        assert r["step_s"] > 0 and r["peak_total_mib"] > 0
    assert all(r["images_per_s"] > 0 for r in record["results"] if r["checkpointing"])
    assert "| batch | checkpointing | step s |" in result.stdout


def test_world_leverage_measures_and_refuses_bad_input(tmp_path):
    """benchmarks/world_leverage.py on one batch of the world's training prompts, with a 2-step in-sample fit."""
    result = _run("benchmarks/world_leverage.py", "--negative", str(tmp_path / "none.safetensors"))
    assert result.returncode == 2 and "--negative: no file" in result.stderr
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_text("not safetensors")
    result = _run("benchmarks/world_leverage.py", "--negative", str(corrupt))
    assert result.returncode == 2 and "not a readable safetensors file" in result.stderr.strip().splitlines()[-1]
    result = _run("benchmarks/world_leverage.py", "--train-steps", "-1")
    assert result.returncode == 2 and "--train-steps must be >= 0" in result.stderr
    result = _run("benchmarks/world_leverage.py", "--batches", "1", "--train-steps", "2", "--objective", "full-chain",
                  "--in-sample")
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads(result.stdout.strip().splitlines()[-1])
    trained = "trained here (full-chain, 2 steps, lr 0.01, in-sample)"
    assert record["items"] == 8 and set(record["mean"]) == {"null", "handcrafted", trained}
    assert record["win_rate_vs_null"]["null"] == 0.5 and 0 < record["mean"][trained] < 1
    assert record["win_rate_vs_handcrafted"]["handcrafted"] == 0.5
    assert record["mean"]["handcrafted"] != record["mean"]["null"]  # another negative, other images


def test_world_watermark_measures_every_design_and_refuses_too_few_scenes():
    """benchmarks/world_watermark.py on 20 scenes: a survival share and a detector AUC per design."""
    result = _run("benchmarks/world_watermark.py", "--scenes", "3")
    assert result.returncode == 2 and "--scenes must be >= 10" in result.stderr
    result = _run("benchmarks/world_watermark.py", "--scenes", "20")
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 4 and lines[0].startswith("shipped")
    for line in lines:
        survival = float(line.split("survival ")[1].split(",")[0])
        auc = float(line.rsplit("AUC ", 1)[1])
        assert 0 < survival < 1 and 0 <= auc <= 1  # the VAE keeps part of a pattern; an AUC is a probability
