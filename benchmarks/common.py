"""Shared helpers of the speed benchmarks: timing, medians, fresh child processes, peak memory, a world trainer."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HELDOUT = ROOT / "benchmarks" / "world_heldout_100.json"
#: how a folded script's traceback names bad input (reneg.errors.ReNegError)
BAD_INPUT = "reneg.errors.ReNegError: "


def now() -> float:
    return time.perf_counter()


def median(values) -> float:
    return statistics.median(values)


def env(src: Path | None = None) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    env["PYTHONPATH"] = str(src or ROOT / "src") + os.pathsep + str(ROOT)
    return env


def child(*args: str) -> dict:
    """Run ``python -m benchmarks.suite --child ...`` in a fresh process; its last stdout line is JSON."""
    result = subprocess.run([sys.executable, "-m", "benchmarks.suite", "--child", *args], env=env(), cwd=ROOT,
                            capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"benchmark child {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith(field + ":")) / 1024  # kB


def reset_peak() -> float:
    """Reset this process's peak RSS (Linux: ``clear_refs`` 5 resets VmHWM); returns the RSS now, MiB."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")
    return _status_mib("VmRSS")


def peak_mib() -> float:
    """Peak RSS since the last :func:`reset_peak` (VmHWM), MiB."""
    return _status_mib("VmHWM")


def trainer(batch: int, steps: int, grad_window: int, device: str = "cpu"):
    from reneg.methods.reneg.train import TrainConfig, Trainer

    out = Path(tempfile.mkdtemp(prefix="reneg-bench-")) / "negative.safetensors"
    config = TrainConfig(batch_size=batch, steps=steps, grad_window=grad_window, device=device, out=str(out),
                         train_steps=1000, validate_every=0, log_every=0)
    return Trainer(config)


def script(name: str, *args: str) -> str:
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / name), *args], env=env(), cwd=ROOT,
                            capture_output=True, text=True)
    if result.returncode:
        last = (result.stderr.strip().splitlines() or [""])[-1]
        if last.startswith(BAD_INPUT):  # the script's input was bad: its one line, exit 2
            print(f"python -m benchmarks: {name}: {last[len(BAD_INPUT):]}", file=sys.stderr)
            raise SystemExit(2)
        raise SystemExit(f"{name} failed:\n{result.stderr[-3000:]}")
    return f"### {name} {' '.join(args)}\n" + result.stdout.strip()
