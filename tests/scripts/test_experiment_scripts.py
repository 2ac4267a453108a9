"""The experiment scripts of scripts/: their bad input is refused in one line (exit 2); their end-to-end runs on a
small input are slow tests (`make test-slow`)."""

import json

import pytest
from test_bench_suite import _run


def test_world_leverage_refuses_bad_input(tmp_path):
    result = _run("scripts/world_leverage.py", "--negative", str(tmp_path / "none.safetensors"))
    assert result.returncode == 2 and "--negative: no file" in result.stderr
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_text("not safetensors")
    result = _run("scripts/world_leverage.py", "--negative", str(corrupt))
    assert result.returncode == 2 and "not a readable safetensors file" in result.stderr.strip().splitlines()[-1]
    result = _run("scripts/world_leverage.py", "--train-steps", "-1")
    assert result.returncode == 2 and "--train-steps must be >= 0" in result.stderr


@pytest.mark.slow
def test_world_leverage_measures():
    """scripts/world_leverage.py on one batch of the world's training prompts, with a 2-step in-sample fit."""
    result = _run("scripts/world_leverage.py", "--batches", "1", "--train-steps", "2", "--objective", "full-chain",
                  "--in-sample")
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads(result.stdout.strip().splitlines()[-1])
    trained = "trained here (full-chain, 2 steps, lr 0.01, in-sample)"
    assert record["items"] == 8 and set(record["mean"]) == {"null", "handcrafted", trained}
    assert record["win_rate_vs_null"]["null"] == 0.5 and 0 < record["mean"][trained] < 1
    assert record["win_rate_vs_handcrafted"]["handcrafted"] == 0.5
    assert record["mean"]["handcrafted"] != record["mean"]["null"]  # another negative, other images


def test_world_watermark_refuses_too_few_scenes():
    result = _run("scripts/world_watermark.py", "--scenes", "3")
    assert result.returncode == 2 and "--scenes must be >= 10" in result.stderr


@pytest.mark.slow
def test_world_watermark_measures_every_design():
    """scripts/world_watermark.py on 20 scenes: a survival share and a detector AUC per design."""
    result = _run("scripts/world_watermark.py", "--scenes", "20")
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 4 and lines[0].startswith("shipped")
    for line in lines:
        survival = float(line.split("survival ")[1].split(",")[0])
        auc = float(line.rsplit("AUC ", 1)[1])
        assert 0 < survival < 1 and 0 <= auc <= 1  # the VAE keeps part of a pattern; an AUC is a probability


def test_world_v4_data_gate_counts_what_it_declares():
    """G0 on 2000 captions: the shares the world declares (scenes.py) come back within the gate's ranges."""
    run = _run("scripts/world_v4_gates.py", "data", "--count", "2000")
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["gate"] == "G0 data" and set(result["met"]) >= {"degraded_share", "wrong", "omitted", "benchmark"}
    assert result["met"]["benchmark"] and result["measured"]["benchmark_in_training"] == 0
    assert 0.7 < result["measured"]["degraded_share"] < 0.8  # three in four since gate run 3
