"""reneg compare: the picture (null / handcrafted / learned rows) and the one line, on the tiny model."""

import json

import numpy as np
from PIL import Image

from reneg.cli import main
from reneg.evaluate.compare import LABEL_WIDTH


def test_compare_writes_the_picture_and_prints_the_line(tmp_path, capsys):
    negative = tmp_path / "n.safetensors"
    assert main(["train", "--model", "tiny", "--reward", "contrast", "--train-steps", "2", "--batch-size", "2",
                 "--steps", "3", "--device", "cpu", "--validate-every", "0", "--out", str(negative)]) == 0
    capsys.readouterr()
    out = tmp_path / "demo.png"
    assert main(["compare", "--model", "tiny", "--negative", str(negative), "--prompt-count", "4", "--columns", "2",
                 "--steps", "3", "--metric", "contrast", "--device", "cpu", "--out", str(out)]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("contrast on 4 held-out prompts: null ") and "win rate vs null" in line
    numbers = json.loads(out.with_suffix(".json").read_text())
    assert set(numbers["mean"]) == {"null", "handcrafted", "learned"} and len(numbers["prompts_shown"]) == 2
    with Image.open(out) as image:  # three rows of 64 px shown at 2x, under a header naming each column's prompt
        assert image.format == "PNG" and image.height > 2 * 3 * 64
        header = np.asarray(image.convert("L"))[:image.height - 2 * 3 * 64]
        left, cell = 2 * LABEL_WIDTH, 2 * 64
        for column in range(2):  # dark text over each column of the header
            assert (header[:, left + column * cell:left + (column + 1) * cell] < 128).any()
        assert (header[:, :left] >= 128).all()  # none over the row labels
    prompts = tmp_path / "mine.txt"
    prompts.write_text("a red circle\na blue square\n")
    assert main(["compare", "--model", "tiny", "--negative", str(negative), "--prompts", str(prompts),
                 "--columns", "2", "--steps", "3", "--metric", "contrast", "--device", "cpu",
                 "--out", str(tmp_path / "mine.png")]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("contrast on 2 prompts of mine.txt: null ")  # not called held-out


def test_compare_needs_a_negative(tmp_path, capsys):
    assert main(["compare", "--model", "tiny", "--out", str(tmp_path / "x.png")]) == 2
    assert "--negative FILE is required" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()
