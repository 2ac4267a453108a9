"""10 steps of `reneg train` on tiny SD1.5 / SDXL / SD3 with a tiny PickScore: the reward before and the gains.

    PYTHONPATH=src OMP_NUM_THREADS=1 python scripts/family_train_gain.py

The same settings and helpers as tests/families/test_sdxl.py and test_sd3.py (tests/families/family_checks.py): the mean
reward of 8 fully sampled images (4 steps, fixed seeds) with the null text, then with the embedding of each of two
training seeds. Prints one JSON line per model.
"""
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "families"))
from family_checks import mean_reward, train_args  # noqa: E402

from reneg.cli import main as reneg_main  # noqa: E402
from reneg.embedding import NegativeEmbedding  # noqa: E402
from reneg.models.loading import load_model  # noqa: E402
from reneg.models.tiny import tiny_clip  # noqa: E402
from reneg.rewards import build_reward  # noqa: E402


def main() -> None:
    torch.set_num_threads(1)
    directory = tempfile.mkdtemp()
    clip, processor = tiny_clip()
    clip.save_pretrained(directory)
    processor.save_pretrained(directory)
    reward = build_reward("pickscore", model=directory)
    for name in ("tiny", "tiny-sdxl", "tiny-sd3"):
        model = load_model(name)
        started = time.time()
        before = mean_reward(model, reward, model.family.null_text())
        gains = []
        for seed in range(2):
            out = f"{directory}/{name}{seed}.safetensors"
            assert reneg_main(train_args(name, directory, out, seed=seed)) == 0
            gains.append(mean_reward(model, reward, NegativeEmbedding.load(out)) - before)
        print(json.dumps({"model": name, "before": before, "gains": gains, "seconds": time.time() - started}),
              flush=True)


if __name__ == "__main__":
    main()
