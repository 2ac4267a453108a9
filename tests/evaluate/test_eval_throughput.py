"""Eval throughput changes keep the images and scores: inference mode, scoring batches apart from generation batches,
one cache write per scoring batch."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from reneg.evaluate import EvalConfig, evaluate
from reneg.evaluate.runner import item_latents, make_plan, score_batches
from reneg.evaluate.store import ScoreCache
from reneg.io import to_pil
from reneg.methods.base import guided_images
from reneg.models.loading import load_model

PROMPTS = ["a red circle on a blue background", "a green square on a white background",
           "a yellow star above a purple house", "an orange triangle in a gray room", "a blue circle"]
METRICS = ["contrast", "random-linear"]


@pytest.fixture(scope="module")
def model():
    return load_model("tiny")


def _config(tmp_path, out, **overrides):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    settings = dict(prompts=str(prompts), methods=["null", "negative-prompt=blurry"], metrics=METRICS, steps=2,
                    batch_size=2, device="cpu", out=str(tmp_path / out))
    return EvalConfig(**{**settings, **overrides})


def _pngs(out):
    return {p.relative_to(out).as_posix(): np.asarray(Image.open(p)) for p in sorted(out.glob("images/*/*.png"))}


def test_images_bit_identical_to_no_grad_generation_in_the_generation_batches(model, tmp_path):
    """The saved PNGs equal the previous path's (torch.no_grad, the --batch-size batches), bit for bit."""
    config = _config(tmp_path, "new", score_batch_size=3)
    out = evaluate(config, model=model).parent
    plan = make_plan(config, model=model)
    saved = _pngs(out)
    for run in plan.runs:
        method = plan.methods[run.base]
        for start in range(0, len(plan.items), config.batch_size):
            batch = plan.items[start:start + config.batch_size]
            with torch.no_grad():
                images = guided_images(model, [i.prompt.text for i in batch], method.negative,
                                       item_latents(plan, batch), guidance_scale=run.guidance_scale, steps=plan.steps)
            for item, image in zip(batch, to_pil(images)):
                assert np.array_equal(np.asarray(image), saved[f"images/{run.slug}/{item.name}.png"])


def test_scoring_batches_do_not_change_the_scores_or_the_images(model, tmp_path):
    one = evaluate(_config(tmp_path, "one", score_batch_size=1), model=model).parent
    many = evaluate(_config(tmp_path, "many", score_batch_size=64), model=model).parent
    assert _pngs(one).keys() == _pngs(many).keys()
    assert all(np.array_equal(a, b) for a, b in zip(_pngs(one).values(), _pngs(many).values()))
    scores = [{(r["run"], r["metric"], r["item"]): r["score"] for r in map(json.loads, (o / "scores.jsonl")
                                                                             .read_text().splitlines())}
              for o in (one, many)]
    assert scores[0].keys() == scores[1].keys() and len(scores[0]) == 2 * len(PROMPTS) * 4  # 2 metrics + 2 diagnostics
    assert all(scores[0][k] == pytest.approx(scores[1][k], rel=1e-5, abs=1e-6) for k in scores[0])


def test_score_batches_regroup_each_runs_items_in_order(model, tmp_path):
    plan = make_plan(_config(tmp_path, "plan", batch_size=2, score_batch_size=3), model=model)
    generation = [(run, plan.items[s:s + 2]) for run in plan.runs for s in range(0, len(plan.items), 2)]
    scoring = score_batches(plan, generation)
    assert [len(b) for _, b in scoring] == [3, 2, 3, 2]
    assert [r.key for r, _ in scoring] == [plan.runs[0].key] * 2 + [plan.runs[1].key] * 2
    assert [i.name for _, b in scoring[:2] for i in b] == [i.name for i in plan.items]


def test_score_cache_add_many_writes_once_and_reads_back(tmp_path):
    cache = ScoreCache(tmp_path)
    cache.add_many("run", {"a#1": {"p0": 0.5, "p1": 1.0}, "b#2": {"p0": -1.0}, "c#3": {}})
    assert len((tmp_path / "scores.jsonl").read_text().splitlines()) == 3
    again = ScoreCache(tmp_path)
    assert again.get("run", "a#1", "p1") == 1.0 and again.get("run", "b#2", "p0") == -1.0


def test_score_batch_size_is_checked(tmp_path):
    from reneg.errors import ReNegError

    with pytest.raises(ReNegError, match="--score-batch-size"):
        _config(tmp_path, "x", score_batch_size=0)
