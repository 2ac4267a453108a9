"""Per-sample negative embeddings (ReNeg Algorithm 1): the guarantee, early stopping, batching, the CLI paths."""

import json
import shutil

import pytest
import torch

from reneg.cli import main
from reneg.core.fingerprint import text_encoder_fingerprint
from reneg.embedding import NegativeEmbedding
from reneg.methods.reneg.adapt import AdaptSettings, _selection_pass, adapt_negatives, selection_draws
from reneg.models.loading import load_model
from reneg.rewards import build_reward

PROMPTS = ["a red circle on a blue background", "a green square on a white background", "a yellow star"]


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny")


def _settings(tiny, **overrides):
    values = dict(steps=4, guidance_scale=7.5, resolution=tiny.resolution, grad_window=2, lr=0.05, adapt_steps=3,
                  patience=2, selection_draws=2, seed=0)
    return AdaptSettings(**{**values, **overrides})


def _selection_rewards(tiny, reward, prompts, negatives, settings):
    latents, grad_from = selection_draws(tiny.family, prompts, settings)
    with torch.no_grad():
        return _selection_pass(tiny.family, reward, prompts, negatives, torch.arange(len(prompts)), None, latents,
                               grad_from, settings, backward=False)


@pytest.mark.parametrize("lr", [0.05, 3.0])  # a huge lr makes steps worse: then the global start must be kept
def test_per_sample_never_worse_than_global_on_selection_draws(tiny, lr):
    reward = build_reward("random-linear")
    settings = _settings(tiny, lr=lr)
    start = tiny.family.null_text()
    adapted = adapt_negatives(tiny.family, reward, PROMPTS, start, settings)
    global_rows = start.embeds.expand(len(PROMPTS), -1, -1)
    before = _selection_rewards(tiny, reward, PROMPTS, global_rows, settings)
    after = _selection_rewards(tiny, reward, PROMPTS, torch.stack([a.embedding for a in adapted]), settings)
    assert (after >= before - 1e-6).all(), (before, after)
    for result, score in zip(adapted, before):
        assert result.reward_best >= result.reward_global
        assert result.reward_global == pytest.approx(float(score), abs=1e-5)
        if result.best_step == 0:
            torch.testing.assert_close(result.embedding, start.embeds[0], rtol=0, atol=0)
    if lr == 3.0:
        assert any(result.best_step == 0 for result in adapted)


def test_deterministic_for_a_seed(tiny):
    reward = build_reward("contrast")
    first = adapt_negatives(tiny.family, reward, PROMPTS[:1], tiny.family.null_text(), _settings(tiny))
    second = adapt_negatives(tiny.family, reward, PROMPTS[:1], tiny.family.null_text(), _settings(tiny))
    torch.testing.assert_close(first[0].embedding, second[0].embedding, rtol=0, atol=0)
    assert first[0].rewards == second[0].rewards


def _scripted(scripts):
    """A score hook: prompt i's selection reward at pass s is scripts[i][s]."""
    return lambda step, live, scores: torch.tensor([float(scripts[i][step]) for i in live])


def test_early_stopping_on_a_scripted_reward_sequence(tiny):
    reward = build_reward("contrast")
    settings = _settings(tiny, adapt_steps=10, patience=3)
    start = tiny.family.null_text()
    stops, runs = [1, 2, 2, 2, 2] + [9] * 6, list(range(11))
    both = adapt_negatives(tiny.family, reward, PROMPTS[:2], start, settings, score_hook=_scripted([stops, runs]))
    assert both[0].rewards == [1, 2, 2, 2, 2] and both[0].steps_taken == 4 and both[0].stopped_early
    assert both[0].best_step == 1
    assert both[1].steps_taken == 10 and both[1].best_step == 10 and not both[1].stopped_early
    # step 1's embedding is what one step gives; the stopped row stayed frozen while the other went on
    one_step = adapt_negatives(tiny.family, reward, PROMPTS[:1], start, _settings(tiny, adapt_steps=1, patience=3),
                               score_hook=_scripted([[1, 2]]))
    torch.testing.assert_close(both[0].embedding, one_step[0].embedding, rtol=1e-5, atol=1e-5)
    alone = adapt_negatives(tiny.family, reward, PROMPTS[1:2], start, settings, score_hook=_scripted([runs]))
    # ten Adam steps amplify the float noise of another batch size to ~2e-5; a leak between rows moves by ~lr
    torch.testing.assert_close(both[1].embedding, alone[0].embedding, rtol=1e-4, atol=1e-4)


def test_nothing_better_returns_the_global_start(tiny):
    start = tiny.family.null_text()
    adapted = adapt_negatives(tiny.family, build_reward("contrast"), PROMPTS[:1], start,
                              _settings(tiny, patience=2), score_hook=_scripted([[5, 4, 5, 5]]))
    assert adapted[0].best_step == 0 and adapted[0].steps_taken == 2
    torch.testing.assert_close(adapted[0].embedding, start.embeds[0], rtol=0, atol=0)


def test_batched_equals_one_at_a_time(tiny):
    reward = build_reward("contrast")
    settings = _settings(tiny)
    start = tiny.family.null_text()
    batched = adapt_negatives(tiny.family, reward, PROMPTS, start, settings)
    for result, prompt in zip(batched, PROMPTS):
        alone = adapt_negatives(tiny.family, reward, [prompt], start, settings)[0]
        torch.testing.assert_close(result.embedding, alone.embedding, rtol=1e-5, atol=2e-5)
        assert result.rewards == pytest.approx(alone.rewards, abs=1e-5)
        assert result.best_step == alone.best_step


# ---------------------------------------------------------------- the commands


@pytest.fixture(scope="module")
def global_file(tiny, tmp_path_factory):
    """A 'global' embedding for the tiny model: the null text, with the contract's metadata."""
    path = tmp_path_factory.mktemp("global") / "negative.safetensors"
    NegativeEmbedding(tiny.family.null_text().embeds[0], {
        "text_encoder_fingerprint": text_encoder_fingerprint(tiny.pipe.text_encoder), "base_model": "tiny",
        "reward": "contrast", "lr": "0.05", "grad_window": "2", "steps": "3"}).save(path)
    return path


FAST = ["--model", "tiny", "--steps", "3", "--adapt-steps", "2", "--selection-draws", "2", "--device", "cpu"]


def test_adapt_one_prompt_writes_a_file(global_file, tmp_path):
    out = tmp_path / "one.safetensors"
    assert main(["adapt", "--prompt", PROMPTS[0], "--negative", str(global_file), "--out", str(out), *FAST]) == 0
    embedding = NegativeEmbedding.load(out)
    meta = embedding.metadata
    for key in ("format", "version", "text_encoder_fingerprint", "base_model", "reward", "steps", "guidance_scale",
                "adapted_from", "prompt", "adapt_steps_taken", "selection_reward_global", "selection_reward_best"):
        assert key in meta, key
    assert meta["prompt"] == PROMPTS[0] and meta["adapted_from"] == str(global_file) and meta["lr"] == "0.05"
    assert float(meta["selection_reward_best"]) >= float(meta["selection_reward_global"])
    log = [json.loads(line) for line in (tmp_path / "one.adapt.log.jsonl").read_text().splitlines()]
    assert log[0]["prompt"] == PROMPTS[0] and len(log[0]["rewards"]) == log[0]["steps_taken"] + 1


def test_adapt_prompts_file_writes_a_directory_and_index(global_file, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    out = tmp_path / "adapted"
    assert main(["adapt", "--prompts", str(prompts), "--negative", str(global_file), "--out", str(out),
                 "--batch-size", "2", *FAST]) == 0
    index = json.loads((out / "index.json").read_text())
    assert list(index) == PROMPTS
    for prompt, name in index.items():
        assert NegativeEmbedding.load(out / name).metadata["prompt"] == prompt
    assert len((out / "adapt.log.jsonl").read_text().splitlines()) == len(PROMPTS)
    assert sum(PROMPTS[0] in line for line in capsys.readouterr().err.splitlines()) == 1
    assert not list(out.glob(".*tmp"))


def test_generate_per_sample(global_file, tmp_path):
    out = tmp_path / "gen"
    assert main(["generate", "--model", "tiny", "--prompt", PROMPTS[0], "--prompt", PROMPTS[1], "--num-images", "2",
                 "--per-sample", str(global_file), "--steps", "3", "--device", "cpu", "--out", str(out)]) == 0
    record = json.loads((out / "generation.json").read_text())
    assert record["method"] == f"per-sample={global_file}" and len(record["images"]) == 4
    assert len(list((out / "per-sample").glob("*/*.safetensors"))) == 2


def test_eval_per_sample_saves_and_reuses_embeddings(global_file, tmp_path, monkeypatch):
    out = tmp_path / "eval"
    args = ["eval", "--model", "tiny", "--methods", f"null,per-sample={global_file}", "--limit", "2", "--steps", "3",
            "--metrics", "contrast", "--device", "cpu", "--out", str(out)]
    assert main(args) == 0
    saved = sorted((out / "per-sample").glob("*/*.safetensors"))
    assert len(saved) == 2
    results = json.loads((out / "results.json").read_text())
    assert f"per-sample={global_file}" in results["methods"]
    # a rerun that has to remake the images loads the embeddings instead of adapting again
    shutil.rmtree(out / "images")
    (out / "scores.jsonl").unlink()

    def no_adaptation(*args, **kwargs):
        raise AssertionError("adapted again")

    monkeypatch.setattr("reneg.methods.reneg.adapt.adapt_negatives", no_adaptation)
    assert main(args) == 0
    assert json.loads((out / "results.json").read_text())["methods"] == results["methods"]


@pytest.mark.parametrize("flags, says", [
    (["--negative", "missing.safetensors", "--prompt", "x", "--out", "o.safetensors"], "does not exist"),
    (["--prompt", "x", "--out", "o.pt"], ".safetensors"),
    (["--prompt", "x", "--out", "o.safetensors", "--patience", "0"], "--patience"),
])
def test_bad_inputs_exit_2_with_one_line_and_write_nothing(tmp_path, monkeypatch, capsys, flags, says):
    monkeypatch.chdir(tmp_path)
    assert main(["adapt", "--model", "tiny", *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0]
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def bare_file(tiny, tmp_path_factory):
    """A start file with no metadata, as the ReNeg authors released theirs: a plain tensor in a .pt file."""
    path = tmp_path_factory.mktemp("bare") / "released.pt"
    torch.save(tiny.family.null_text().embeds[0].clone(), path)
    return path


def test_a_file_without_a_recipe_is_adapted_with_the_papers_recipe(bare_file, tmp_path, caplog):
    import logging

    out = tmp_path / "one.safetensors"
    with caplog.at_level(logging.INFO, logger="reneg"):
        assert main(["adapt", "--prompt", PROMPTS[0], "--negative", str(bare_file), "--out", str(out), *FAST]) == 0
    meta = NegativeEmbedding.load(out).metadata
    assert (meta["reward"], meta["lr"]) == ("contrast", "0.005")  # the tiny model's recipe: its reward, lr 5e-3
    assert any("carries no recipe" in r.getMessage() and "lr 0.005" in r.getMessage() for r in caplog.records)


def test_a_file_without_a_recipe_is_refused_when_the_papers_reward_is_missing(bare_file, tmp_path, capsys,
                                                                              monkeypatch):
    from reneg.models import loading

    monkeypatch.setitem(loading._TINY_DEFAULTS, "adapt_reward", "hpsv2.1")  # SD's recipe, whose weights are absent
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "one.safetensors"
    assert main(["adapt", "--prompt", PROMPTS[0], "--negative", str(bare_file), "--out", str(out), *FAST]) == 2
    error = capsys.readouterr().err.strip()
    assert "carries no recipe" in error and "hpsv2.1" in error and "--reward" in error and "\n" not in error
    assert not out.exists()
