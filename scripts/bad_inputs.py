"""Every bad input we try, run as a real `reneg` process: exit code, stderr lines, and whether --out appeared.

    HF_HUB_OFFLINE=1 python scripts/bad_inputs.py > table.md

Prints the markdown table of docs/bad-input.md. Each row should read: exit 2, one line, nothing written.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


class Payload:
    """Unpickled, it would leave a file behind: reneg must refuse it without running it."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def cases(work: Path) -> list[tuple[str, list[str], Path]]:
    """(what, arguments, the --out that must not appear)."""
    tiny = ["--model", "tiny"]
    train = ["train", *tiny, "--reward", "contrast", "--steps", "2", "--batch-size", "2", "--validate-every", "0"]
    out = work / "out.safetensors"
    images = work / "images"
    (work / "empty.txt").write_text("\n\n")
    (work / "bad.json").write_text("[1, 2")
    (work / "bad.toml").write_text("lr = ")
    (work / "typed.toml").write_text('lr = "abc"\n')
    (work / "unknown.toml").write_text("learning_rate = 0.1\n")
    (work / "a-file").write_text("x")
    save_file({"negative_embedding": torch.zeros(3, 5)}, str(work / "shape.safetensors"))
    save_file({"negative_embedding": torch.full((77, 32), float("nan"))}, str(work / "nan.safetensors"))
    save_file({"emb_params": torch.zeros(2, 768)}, str(work / "ti.safetensors"))
    save_file({"negative_embedding": torch.zeros(77, 768)}, str(work / "other-encoder.safetensors"))
    torch.save({"not": "a tensor"}, work / "dict.pt")
    torch.save({"negative_embedding": Payload(work / "ran")}, work / "payload.pt")
    (work / "binary.txt").write_bytes(bytes(range(256)))
    (work / "table.json").write_text('{"animals": "a cat"}')
    (work / "null-key.yaml").write_text("? \n")
    (work / "d.safetensors").mkdir()
    shutil.copytree(work / "ck.checkpoint", work / "nan.checkpoint")
    step = next((work / "nan.checkpoint").glob("step-*")) / "parameters.safetensors"
    save_file({k: torch.full_like(v, float("nan")) for k, v in load_file(str(step)).items()}, str(step))
    gen = ["generate", *tiny, "--prompt", "a red circle", "--out", str(images)]
    checkpoint = work / "ck.checkpoint"
    return [
        ("train: --lr -1", [*train, "--lr", "-1", "--out", str(out)], out),
        ("train: --lr abc", [*train, "--lr", "abc", "--out", str(out)], out),
        ("train: --lr nan", [*train, "--lr", "nan", "--out", str(out)], out),
        ("train: --weight-decay -0.1", [*train, "--weight-decay", "-0.1", "--out", str(out)], out),
        ("train: --resolution 0", [*train, "--resolution", "0", "--out", str(out)], out),
        ("train: --resolution 30 (not a multiple of 8)", [*train, "--resolution", "30", "--out", str(out)], out),
        ("train: --train-steps 0", [*train, "--train-steps", "0", "--out", str(out)], out),
        ("train: --batch-size 3 --micro-batch-size 2", [*train, "--batch-size", "3", "--micro-batch-size", "2",
                                                        "--out", str(out)], out),
        ("train: --grad-window 5 with --steps 2", [*train, "--grad-window", "5", "--out", str(out)], out),
        ("train: --device mps", [*train, "--device", "mps", "--out", str(out)], out),
        ("train: --device cuda:7 (no GPU)", [*train, "--device", "cuda:7", "--out", str(out)], out),
        ("train: --precision fp8", [*train, "--precision", "fp8", "--out", str(out)], out),
        ("train: --out is a directory", [*train, "--out", str(work)], work / "nothing"),
        ("train: --out not .safetensors", [*train, "--out", str(work / "n.bin")], work / "n.bin"),
        ("train: --out under a regular file", [*train, "--out", str(work / "a-file" / "n.safetensors")],
         work / "a-file" / "n.safetensors"),
        ("train: --out in /proc", [*train, "--out", "/proc/reneg/n.safetensors"], Path("/proc/reneg/n.safetensors")),
        ("train: --out /dev/full", [*train, "--out", "/dev/full"], Path("/dev/full")),
        ("train: --out a directory named d.safetensors", [*train, "--out", str(work / "d.safetensors")],
         work / "d.safetensors"),
        ("train: --out in /sys", [*train, "--out", "/sys/n.safetensors"], Path("/sys/n.safetensors")),
        ("train: unknown reward", [*train, "--reward", "nope", "--out", str(out)], out),
        ("train: empty prompts file", [*train, "--prompts", str(work / "empty.txt"), "--out", str(out)], out),
        ("train: malformed JSON prompts", [*train, "--prompts", str(work / "bad.json"), "--out", str(out)], out),
        ("train: missing prompts file", [*train, "--prompts", str(work / "none.txt"), "--out", str(out)], out),
        ("train: prompts file of binary bytes", [*train, "--prompts", str(work / "binary.txt"), "--out", str(out)],
         out),
        ("train: JSON prompts table of a string, not a list", [*train, "--prompts", str(work / "table.json"),
                                                              "--out", str(out)], out),
        ("train: --prompt ''", [*train, "--prompt", "", "--out", str(out)], out),
        ("train: YAML config with a null key", ["train", "--config", str(work / "null-key.yaml"), "--out", str(out)],
         out),
        ("train: --config a directory", ["train", "--config", str(work), "--out", str(out)], out),
        ("train: malformed config file", ["train", "--config", str(work / "bad.toml"), "--out", str(out)], out),
        ("train: config value of the wrong type", ["train", "--config", str(work / "typed.toml"), "--out", str(out)],
         out),
        ("train: unknown config key", ["train", "--config", str(work / "unknown.toml"), "--out", str(out)], out),
        ("train: missing model directory", ["train", "--model", str(work / "no-model"), "--out", str(out)], out),
        ("train: hub id not in the cache", ["train", "--model", "someone/not-cached", "--out", str(out)], out),
        ("train: --resume a folder that is no checkpoint", [*train, "--resume", str(work), "--out", str(out)], out),
        ("train: --resume with another --lr", [*train, "--train-steps", "1", "--lr", "0.5", "--resume",
                                               str(checkpoint), "--out", str(out)], out),
        ("train: --resume a checkpoint holding NaN", [*train, "--train-steps", "1", "--resume",
                                                     str(work / "nan.checkpoint"), "--out", str(out)], out),
        ("train: unknown flag", [*train, "--learning-rate", "1", "--out", str(out)], out),
        ("generate: --guidance-scale nan", [*gen, "--guidance-scale", "nan"], images),
        ("generate: --guidance-scale inf", [*gen, "--guidance-scale", "inf"], images),
        ("generate: --num-images 0", [*gen, "--num-images", "0"], images),
        ("generate: --negative missing file", [*gen, "--negative", str(work / "none.safetensors")], images),
        ("generate: --negative of the wrong shape", [*gen, "--negative", str(work / "shape.safetensors")], images),
        ("generate: --negative holding NaN", [*gen, "--negative", str(work / "nan.safetensors")], images),
        ("generate: a textual-inversion file", [*gen, "--negative", str(work / "ti.safetensors")], images),
        ("generate: a file for another text encoder (768 wide)",
         [*gen, "--negative", str(work / "other-encoder.safetensors")], images),
        ("generate: a .pt file holding a dict", [*gen, "--negative", str(work / "dict.pt")], images),
        ("generate: a .pt file holding a pickled payload", [*gen, "--negative", str(work / "payload.pt")], images),
        ("generate: --resolution 0", [*gen, "--resolution", "0"], images),
        ("generate: --prompt ''", ["generate", *tiny, "--prompt", "", "--out", str(images)], images),
        ("generate: --out /dev/full", ["generate", *tiny, "--prompt", "x", "--out", "/dev/full"],
         Path("/dev/full")),
        ("generate: --negative and --negative-prompt", [*gen, "--negative", str(work / "nan.safetensors"),
                                                       "--negative-prompt", "blurry"], images),
        ("generate: --out is a file", ["generate", *tiny, "--prompt", "x", "--out", str(work / "a-file")],
         work / "a-file" / "00000.png"),
        ("eval: --prompts and --benchmark", ["eval", *tiny, "--prompts", str(work / "empty.txt"), "--benchmark",
                                             "tiny", "--out", str(work / "eval")], work / "eval"),
        ("eval: --out in /proc", ["eval", *tiny, "--out", "/proc/reneg-eval"], Path("/proc/reneg-eval")),
        ("eval: --images-per-prompt 0", ["eval", *tiny, "--images-per-prompt", "0", "--out", str(work / "eval")],
         work / "eval"),
        ("eval: --steps nan", ["eval", *tiny, "--steps", "nan", "--out", str(work / "eval")], work / "eval"),
        ("eval: unknown method", ["eval", *tiny, "--methods", "magic", "--out", str(work / "eval")], work / "eval"),
        ("eval: unknown benchmark", ["eval", *tiny, "--benchmark", "nope", "--out", str(work / "eval")],
         work / "eval"),
        ("eval: unknown metric", ["eval", *tiny, "--metrics", "nope", "--out", str(work / "eval")], work / "eval"),
        ("eval: benchmark files not downloaded", ["eval", *tiny, "--benchmark", "parti", "--data-dir", str(work),
                                                  "--out", str(work / "eval")], work / "eval"),
        ("eval: method embedding= of a missing file", ["eval", *tiny, "--methods", "embedding=none.safetensors",
                                                      "--out", str(work / "eval")], work / "eval"),
        ("eval: a VBench video metric on an image pipeline", ["eval", *tiny, "--metrics", "vbench-motion-smoothness",
                                                             "--out", str(work / "eval")], work / "eval"),
        ("eval: --num-frames on an image pipeline", ["eval", *tiny, "--num-frames", "8", "--out", str(work / "eval")],
         work / "eval"),
    ]


def issue33_cases(work: Path) -> list[tuple[str, list[str], Path]]:
    """The attacks of issue 33 (a clean install, data loss, pickles, internal errors, silent garbage, partial
    output, resources): each must now be refused in one line with exit 2 and nothing written."""
    import json
    import struct

    from reneg.models.tiny import tiny_sd_pipeline

    tiny, images = ["--model", "tiny"], work / "images"
    gen = ["generate", *tiny, "--prompt", "a red circle", "--steps", "2", "--out", str(images)]
    model = work / "tiny-sd"
    tiny_sd_pipeline().save_pretrained(model)
    broken = {name: work / f"tiny-{name}" for name in ("truncated", "bad-index", "custom-code", "no-unet")}
    for folder in broken.values():
        shutil.copytree(model, folder)
    unet = next((broken["truncated"] / "unet").glob("*.safetensors"))
    unet.write_bytes(unet.read_bytes()[: unet.stat().st_size // 2])
    (broken["bad-index"] / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline", ')
    index = json.loads((model / "model_index.json").read_text())
    (broken["custom-code"] / "model_index.json").write_text(json.dumps({**index, "unet": ["my_unet", "MyUNet"]}))
    (broken["custom-code"] / "unet" / "my_unet.py").write_text(f"open({str(work / 'ran')!r}, 'w')\n")
    shutil.rmtree(broken["no-unet"] / "unet")
    (work / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (work / "long.tsv").write_text("prompt\tcategory\n" + "a" * 200_000 + "\tx\n")
    save_file({"negative_embedding": torch.full((77, 32), 1e30)}, str(work / "huge-values.safetensors"))
    header = json.dumps({"negative_embedding": {"dtype": "F32", "shape": [400_000, 1024],
                                                "data_offsets": [0, 400_000 * 1024 * 4]}}).encode()
    with open(work / "huge.safetensors", "wb") as big:  # 1.6 GB, sparse: only its header is on disk
        big.write(struct.pack("<Q", len(header)) + header)
        big.truncate(8 + len(header) + 400_000 * 1024 * 4)
    save_file({"lora.down.weight": torch.zeros(4, 7)}, str(work / "wrong-lora.safetensors"))
    ev = ["eval", *tiny, "--benchmark", "tiny", "--steps", "2", "--metrics", "contrast"]
    return [
        ("world-build: --vae-init a folder with no VAE", ["world-build", "--work-dir", str(work / "wb"),
                                                         "--vae-init", str(work), "--until", "vae",
                                                         "--out", str(work / "wb-out")], work / "wb-out"),
        ("train: a non-differentiable reward (truth-shape)",
         ["train", *tiny, "--reward", "truth-shape", "--steps", "2", "--out", str(work / "t.safetensors")],
         work / "t.safetensors"),
        ("npo: a non-differentiable reward (truth-shape)",
         ["npo", *tiny, "--reward", "truth-shape", "--steps", "2", "--out", str(work / "npo")], work / "npo"),
        ("generate: a truncated model folder", ["generate", "--model", str(broken["truncated"]), "--prompt", "x",
                                                "--out", str(images)], images),
        ("generate: a corrupt model_index.json", ["generate", "--model", str(broken["bad-index"]), "--prompt", "x",
                                                  "--out", str(images)], images),
        ("generate: a custom-code component", ["generate", "--model", str(broken["custom-code"]), "--prompt", "x",
                                               "--out", str(images)], images),
        ("generate: a model folder without its unet", ["generate", "--model", str(broken["no-unet"]),
                                                       "--prompt", "x", "--out", str(images)], images),
        ("train: a JSON prompts file nested 100 000 deep", ["train", *tiny, "--reward", "contrast", "--prompts",
                                                            str(work / "deep.json"), "--out", str(work / "t.safetensors")],
         work / "t.safetensors"),
        ("train: a TSV prompt of 200 000 characters", ["train", *tiny, "--reward", "contrast", "--prompts",
                                                       str(work / "long.tsv"), "--out", str(work / "t.safetensors")],
         work / "t.safetensors"),
        ("generate: --negative holding 1e30", [*gen, "--negative", str(work / "huge-values.safetensors")], images),
        ("generate: --guidance-scale 1e308", [*gen, "--guidance-scale", "1e308"], images),
        ("generate: --negative of 1.6 GB (read whole before)", [*gen, "--negative", str(work / "huge.safetensors")],
         images),
        ("generate: --lora of the wrong shape", [*gen, "--lora", str(work / "wrong-lora.safetensors")], images),
        ("generate: --out /dev/zero", ["generate", *tiny, "--prompt", "x", "--out", "/dev/zero"],
         Path("/dev/zero/00000.png")),
        ("eval: per-sample= of a missing file", [*ev, "--methods", f"null,per-sample={work / 'none.safetensors'}",
                                                 "--out", str(work / "eval")], work / "eval"),
    ]


#: the installed command as a user runs it (``python -m reneg`` where it is not on PATH)
RENEG = [shutil.which("reneg")] if shutil.which("reneg") else [sys.executable, "-m", "reneg"]


def main() -> None:
    only = sys.argv[1:]  # words: run only the cases whose description holds one of them
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as directory:
        work = Path(directory)
        made = subprocess.run([*RENEG, "train", "--model", "tiny", "--reward", "contrast",
                               "--steps", "2", "--batch-size", "2", "--train-steps", "1", "--validate-every", "0",
                               "--out", str(work / "ck.safetensors")], env=env, capture_output=True, text=True)
        assert made.returncode == 0, made.stderr
        print("| bad input | exit | stderr lines | nothing written | message |\n| --- | --- | --- | --- | --- |")
        rows = [*cases(work), *issue33_cases(work)]
        rows = [row for row in rows if not only or any(word in row[0] for word in only)]
        failing = []
        for what, args, out in rows:
            result = subprocess.run([*RENEG, *args], env=env, capture_output=True, text=True)
            lines = [line for line in result.stderr.splitlines() if line.strip()]
            clean = not out.exists() or (out.is_dir() and not any(out.iterdir())) or out.is_char_device()
            message = (lines[-1] if lines else "").replace(str(work), "TMP").replace("|", "\\|")
            print(f"| {what} | {result.returncode} | {len(lines)} | {'yes' if clean else 'NO'} | {message} |")
            if (result.returncode, len(lines), clean) != (2, 1, True):
                failing.append(what)
        if (work / "ran").exists():
            failing.append("a pickled payload ran")
        print(f"{len(rows)} bad inputs; not (exit 2, one line, nothing written): {failing or 'none'}", file=sys.stderr)
        sys.exit(1 if failing else 0)


if __name__ == "__main__":
    main()
