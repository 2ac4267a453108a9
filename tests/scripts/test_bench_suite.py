"""The speed benchmarks' entry points run: `python -m benchmarks --help`, an unknown section is refused, and the
real-size script runs end to end on tiny models (`--tiny`, CPU; slow)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


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


@pytest.mark.slow
def test_memory_estimate_script_counts_a_tiny_step():
    script = ROOT / "benchmarks" / "memory_estimate.py"
    out = subprocess.run([sys.executable, str(script), "--tiny", "--batches", "1,4"], capture_output=True, text=True,
                         check=True).stdout
    rows = {(r["batch"], r["checkpointing"]): r["step_peak_mib"] for r in map(json.loads, out.splitlines()[:4])}
    assert all(v > 0 for v in rows.values())
    assert rows[4, True] < rows[4, False] and rows[1, True] < rows[1, False]
    assert "| 4 | on |" in out
