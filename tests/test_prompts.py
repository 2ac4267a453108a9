"""Benchmarks: the published file layouts, where the files are looked up, errors; the preset configs parse."""

import dataclasses
import json
import logging
from collections import Counter
from pathlib import Path

import pytest

from reneg import prompts as benchmarks
from reneg.config import read_config_file
from reneg.errors import ReNegError
from reneg.methods.reneg.train import TrainConfig
from reneg.prompts import Prompt, available_benchmarks, load_benchmark, register_benchmark

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

#: The first rows of the real PartiPrompts.tsv (google-research/parti), and one whose prompt starts with quotes.
PARTI_TSV = (
    "Prompt\tCategory\tChallenge\tNote\n"
    "bond\tAbstract\tBasic\tBiology-inspired concepts with multiple meanings\n"
    "element\tAbstract\tBasic\tBiology-inspired concepts with multiple meanings\n"
    '"G I G G L E" painted in thick colorful lettering as graffiti on a faded red brick wall\tArts\t'
    "Writing & Symbols\t\n"
    "A punk rock squirrel in a studded leather jacket shouting into a microphone\tAnimals\tImagination\t\n"
)


def _write_hpsv2(directory: Path, per_style: int = 2) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for style in ("anime", "concept-art", "paintings", "photo"):
        (directory / f"{style}.json").write_text(json.dumps([f"{style} prompt {i}" for i in range(per_style)]))


def test_hpsv2_style_files_give_four_categories(tmp_path):
    _write_hpsv2(tmp_path / "hpsv2")
    prompts = load_benchmark("hpsv2", data_dir=tmp_path)
    assert Counter(p.category for p in prompts) == {"anime": 2, "concept-art": 2, "paintings": 2, "photo": 2}
    assert prompts[0] == Prompt("anime prompt 0", "anime")


def test_files_directly_in_data_dir_are_found(tmp_path):
    _write_hpsv2(tmp_path)
    assert len(load_benchmark("hpsv2", data_dir=tmp_path)) == 8


def test_parti_tsv_keeps_quotes_and_categories(tmp_path):
    (tmp_path / "parti").mkdir()
    (tmp_path / "parti" / "PartiPrompts.tsv").write_text(PARTI_TSV)
    prompts = load_benchmark("parti", data_dir=tmp_path)
    assert [p.category for p in prompts] == ["Abstract", "Abstract", "Arts", "Animals"]
    assert prompts[2].text.startswith('"G I G G L E" painted')
    assert load_benchmark(tmp_path / "parti" / "PartiPrompts.tsv") == prompts  # a known file by path


def test_imagereward_training_prompts(tmp_path):
    path = tmp_path / "refl_data.json"
    path.write_text(json.dumps([{"text": "a hybrid animal of a cat and a human ", "image": "000021-0115"},
                                {"text": "hell ", "image": "000114-0102"},
                                {"text": "hell ", "image": "000114-0103"}]))
    prompts = load_benchmark("imagereward-train", data_dir=tmp_path)
    assert [p.text for p in prompts] == ["a hybrid animal of a cat and a human", "hell", "hell"]  # duplicates kept
    assert load_benchmark(path) == prompts


def test_dnp_sets_any_subset_text_or_json(tmp_path):
    (tmp_path / "dnp").mkdir()
    (tmp_path / "dnp" / "human.txt").write_text("a man wearing a sombrero\n\na boy in the moonlight\n")
    (tmp_path / "dnp" / "hand.txt").write_text(json.dumps(["hand with a ring on it"]))
    prompts = load_benchmark("dnp", data_dir=tmp_path)
    assert prompts == [Prompt("a man wearing a sombrero", "human"), Prompt("a boy in the moonlight", "human"),
                       Prompt("hand with a ring on it", "hand")]


def test_tiny_is_built_in():
    prompts = load_benchmark("tiny", data_dir="/nonexistent")
    assert len(prompts) == 8 and len({p.category for p in prompts}) == 2
    assert {"hpsv2", "parti", "imagereward-train", "dnp", "tiny"} <= set(available_benchmarks())


@pytest.mark.parametrize("suffix, text, count", [(".txt", "a cat\n\na dog\n", 2), (".json", '["a cat"]', 1),
                                                 (".csv", "Prompt,Category\na cat,animals\n", 1)])
def test_plain_paths_go_through_load_prompts(tmp_path, suffix, text, count):
    path = tmp_path / f"mine{suffix}"
    path.write_text(text)
    assert len(load_benchmark(str(path))) == count


def test_data_dir_then_env_then_home_cache(tmp_path, monkeypatch):
    for root in ("flag", "env", "home/.cache/reneg/benchmarks"):
        (tmp_path / root / "dnp").mkdir(parents=True)
        (tmp_path / root / "dnp" / "human.txt").write_text(root + "\n")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RENEG_DATA", str(tmp_path / "env"))
    assert load_benchmark("dnp", data_dir=tmp_path / "flag")[0].text == "flag"
    assert load_benchmark("dnp")[0].text == "env"
    monkeypatch.delenv("RENEG_DATA")
    assert load_benchmark("dnp")[0].text == "home/.cache/reneg/benchmarks"


@pytest.mark.parametrize("name, needles", [
    ("parti", ["PartiPrompts.tsv", "https://raw.githubusercontent.com/google-research/parti/main/PartiPrompts.tsv"]),
    ("hpsv2", ["anime.json", "zhwang/HPDv2"]),
    ("imagereward-train", ["refl_data.json", "THUDM/ImageReward"]),
    ("dnp", ["one of", "human.txt"]),
])
def test_missing_file_says_what_where_from_and_where_to(tmp_path, name, needles):
    with pytest.raises(ReNegError) as error:
        load_benchmark(name, data_dir=tmp_path)
    message = str(error.value)
    assert "\n" not in message
    assert all(needle in message for needle in needles), message
    assert f"put it in {tmp_path / name}/" in message or f"put them in {tmp_path / name}/" in message


@pytest.mark.parametrize("file, content, needle", [
    ("PartiPrompts.tsv", "", "'Prompt' column"),
    ("PartiPrompts.tsv", "Text\tCategory\na cat\tAnimals\n", "'Prompt' column"),
    ("PartiPrompts.tsv", "Prompt\tCategory\nonly\ta\tb\tc\n", "line 2"),
    ("refl_data.json", "{not json", "malformed"),
    ("refl_data.json", "[]", "no prompts"),
    ("refl_data.json", '{"text": "a cat"}', "JSON list"),
    ("refl_data.json", '[{"image": "1"}]', "entry 0"),
    ("anime.json", '["a cat", 3]', "entry 1"),
    ("human.txt", "\n  \n", "no prompts"),
    ("human.txt", b"\xff\xfe\x00", "malformed"),
])
def test_empty_or_malformed_files_are_bad_input(tmp_path, file, content, needle):
    path = tmp_path / file
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ReNegError, match=needle):
        load_benchmark(path)


def test_unknown_name_missing_path_and_directory(tmp_path):
    with pytest.raises(ReNegError, match="unknown benchmark 'nope'.*hpsv2"):
        load_benchmark("nope")
    with pytest.raises(ReNegError, match="does not exist"):
        load_benchmark(str(tmp_path / "missing.txt"))
    with pytest.raises(ReNegError, match="directory"):
        load_benchmark(tmp_path)


def test_a_count_other_than_the_published_one_is_logged(tmp_path, caplog):
    _write_hpsv2(tmp_path)
    with caplog.at_level(logging.WARNING, logger="reneg.prompts"):
        load_benchmark("hpsv2", data_dir=tmp_path)
    assert "8 prompts where the published set has 3200" in caplog.text


def test_register_benchmark_adds_a_reader(tmp_path, monkeypatch):
    monkeypatch.setattr(benchmarks.PROMPT_SETS, "entries", dict(benchmarks.PROMPT_SETS.entries))  # leave the real registry alone

    @register_benchmark("test-lines", files=["a.txt"], description="test", source="https://example.org/{file}")
    def _read(paths):
        return [Prompt(line, "x") for path in paths for line in path.read_text().split()]

    (tmp_path / "a.txt").write_text("one two")
    assert [p.text for p in load_benchmark("test-lines", data_dir=tmp_path)] == ["one", "two"]
    with pytest.raises(ReNegError, match="https://example.org/a.txt"):
        load_benchmark("test-lines", data_dir=tmp_path / "empty")


# -- preset configs ---------------------------------------------------------------------------------
TRAIN_PRESETS = sorted(CONFIGS.glob("reneg-*.toml"))


def test_the_presets_exist():
    names = {path.name for path in CONFIGS.glob("*.toml")}
    assert {"reneg-sd15.toml", "reneg-sd14.toml", "reneg-sd21.toml", "eval-table2-sd15.toml"} <= names


@pytest.mark.parametrize("path", TRAIN_PRESETS, ids=lambda p: p.name)
def test_train_presets_parse_into_train_config(path):
    values = read_config_file(path)
    assert set(values) <= {f.name for f in dataclasses.fields(TrainConfig)}
    config = TrainConfig(**values)
    assert (config.reward, config.steps, config.grad_window, config.guidance_scale) == ("hpsv2.1", 30, 10, 7.5)
    assert (config.lr, config.batch_size, config.train_steps) == (5e-3, 64, 4000)
    assert config.precision in ("bf16", "fp16") and config.micro_batch_size < config.batch_size  # accumulates
    assert Path(config.prompts).name == "refl_data.json"


def test_sd21_preset_is_768_px():
    config = TrainConfig(**read_config_file(CONFIGS / "reneg-sd21.toml"))
    assert config.resolution == 768 and config.model.endswith("/stable-diffusion-2-1")


def test_eval_preset_matches_eval_config():
    values = read_config_file(CONFIGS / "eval-table2-sd15.toml")
    assert (values["steps"], values["guidance_scale"], values["resolution"]) == (30, 7.5, 512)
    evaluate = pytest.importorskip("reneg.evaluate")
    eval_config = getattr(evaluate, "EvalConfig", None)
    if eval_config is None:
        pytest.skip("reneg.evaluate has no EvalConfig yet")
    assert set(values) <= {f.name for f in dataclasses.fields(eval_config)}
    eval_config(**values)
