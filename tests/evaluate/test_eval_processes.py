"""`reneg eval` on two processes (accelerate launch, gloo on CPU) gives the same results.json and PNGs as one."""

import json
import os
import socket
import subprocess
import sys

PROMPTS = ["a red circle on a blue background", "a green square on a white background",
           "a yellow star above a purple house", "an orange triangle in a gray room", "a fifth prompt, left out"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run(command: list[str]) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]


def test_two_processes_give_the_same_results_and_images_as_one(tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    flags = ["eval", "--model", "tiny", "--prompts", str(prompts), "--limit", "4", "--methods", "null,handcrafted@3",
             "--metrics", "contrast", "--steps", "2", "--batch-size", "1", "--device", "cpu", "--gallery-items", "2"]
    _run([sys.executable, "-m", "reneg", *flags, "--out", str(tmp_path / "one")])
    _run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
          "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
          "--main_process_port", str(_free_port()), "-m", "reneg", *flags, "--out", str(tmp_path / "two")])
    one, two = tmp_path / "one", tmp_path / "two"
    assert (two / "results.json").read_bytes() == (one / "results.json").read_bytes()
    results = json.loads((one / "results.json").read_text())
    assert results["num_prompts"] == 4 and list(results["methods"]) == ["null", "handcrafted@3"]
    images = sorted(path.relative_to(one) for path in (one / "images").glob("*/*.png"))
    assert len(images) == 8 and images == sorted(path.relative_to(two) for path in (two / "images").glob("*/*.png"))
    assert all((one / image).read_bytes() == (two / image).read_bytes() for image in images)
    assert not list(two.glob("scores.rank*.jsonl"))  # merged into scores.jsonl by the main process
    lines = (two / "scores.jsonl").read_text().splitlines()
    assert len(lines) == len(results["metrics"]) * 8
