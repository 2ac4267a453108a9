"""`reneg world-pairs`: the world's preference pairs for `reneg npo --route dpo`, an installed command."""

import json

from reneg.cli import main
from reneg.methods.npo.dpo import load_pairs


def test_world_pairs_writes_a_pairs_file_npo_reads(tmp_path, capsys):
    assert main(["world-pairs", "--out", str(tmp_path / "pairs"), "--count", "4", "--seed", "1"]) == 0
    path = tmp_path / "pairs" / "pairs.jsonl"
    assert capsys.readouterr().out.strip() == str(path)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == 4 and all((path.parent / line["preferred"]).is_file() for line in lines)
    assert len(load_pairs(path, resolution=64).prompts) == 4


def test_world_pairs_needs_out(capsys):
    assert main(["world-pairs", "--count", "4"]) == 2
    assert "--out DIR is required" in capsys.readouterr().err
