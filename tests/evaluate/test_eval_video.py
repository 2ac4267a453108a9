"""`reneg eval` on video pipelines: frames + GIF per item, per-frame rewards averaged, VBench's metrics, resume."""

import json

import pytest
import torch

from reneg.cli import main
from reneg.core.fingerprint import text_encoder_fingerprint
from reneg.embedding import NegativeEmbedding
from reneg.evaluate import EvalConfig, evaluate
from reneg.evaluate.store import read_rgb
from reneg.models.loading import load_model
from reneg.rewards import build_reward
from reneg.rewards.video import frame_rewards, load_interpolator, motion_smoothness

PROMPTS = ["a red circle on a blue background", "a yellow star on a black background"]
FRAMES = 3
VBENCH = ["vbench-temporal-flickering", "vbench-background-consistency", "vbench-motion-smoothness"]


class TinyInterpolator(torch.nn.Module):
    """A random conv standing in for AMT-S: (img0, img1, embt) -> {"imgt_pred": (1, 3, H, W) in [0, 1]}."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(6, 3, 3, padding=1)

    def forward(self, img0: torch.Tensor, img1: torch.Tensor, embt: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"imgt_pred": torch.sigmoid(self.conv(torch.cat([img0, img1], 1)) + embt)}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, animatediff_dir):
    """The prompts file, a learned-embedding file, a TorchScript interpolator and a tiny CLIP, all by path."""
    from reneg.models.tiny import tiny_clip

    directory = tmp_path_factory.mktemp("video-eval-inputs")
    (directory / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    fingerprint = text_encoder_fingerprint(load_model(str(animatediff_dir)).pipe.text_encoder)
    NegativeEmbedding(torch.randn(77, 32, generator=torch.Generator().manual_seed(1)),
                      {"text_encoder_fingerprint": fingerprint}).save(directory / "neg.safetensors")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        torch.jit.script(TinyInterpolator()).save(str(directory / "interpolator.pt"))
    clip, processor = tiny_clip(image_size=32)
    clip.save_pretrained(directory / "clip")
    processor.save_pretrained(directory / "clip")
    return directory


def _args(model_dir, inputs, out, *extra):
    metrics = ",".join(["contrast", "vbench-temporal-flickering", f"vbench-background-consistency={inputs / 'clip'}",
                        f"vbench-motion-smoothness={inputs / 'interpolator.pt'}"])
    return ["eval", "--model", str(model_dir), "--prompts", str(inputs / "prompts.txt"), "--methods",
            f"null,embedding={inputs / 'neg.safetensors'}", "--metrics", metrics, "--num-frames", str(FRAMES),
            "--steps", "2", "--batch-size", "2", "--device", "cpu", "--out", str(out), *extra]


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_eval_on_animatediff_end_to_end_and_resumable(animatediff_dir, inputs, tmp_path, monkeypatch):
    out = tmp_path / "eval"
    assert main(_args(animatediff_dir, inputs, out)) == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results["methods"]) == {"null", f"embedding={inputs / 'neg.safetensors'}"}
    assert results["settings"]["num_frames"] == FRAMES
    assert {"contrast", *results["diagnostics"]} <= set(results["metrics"]) and len(results["metrics"]) == 6
    # each item: its frames and the GIF; the gallery shows the GIF
    slug = results["methods"]["null"]["images"]
    folder = out / "images" / slug
    assert sorted(p.name for p in folder.glob("*.gif")) == ["p00000-i00.gif", "p00001-i00.gif"]
    assert len(list((folder / "p00000-i00").glob("*.png"))) == FRAMES
    assert f"images/{slug}/p00000-i00.gif" in (out / "index.html").read_text()
    assert f"video of {FRAMES} frames" in (out / "results.md").read_text()
    # scores, recomputed from the saved frames: reward = mean of per-frame rewards; VBench's on the video
    videos = torch.stack([read_rgb(sorted((folder / f"p0000{p}-i00").glob("*.png"))) for p in range(2)])
    scores = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]
    by_metric = {}
    for score in scores:
        if score["run"].startswith("null@"):
            by_metric.setdefault(score["metric"].split("#")[0].split("=")[0], {})[score["item"]] = score["score"]
    assert by_metric["contrast"]["p00001-i00"] == pytest.approx(
        float(frame_rewards(build_reward("contrast"), videos, PROMPTS)[1]), abs=1e-6)
    smoothness = motion_smoothness(videos, load_interpolator(inputs / "interpolator.pt"))
    assert by_metric[VBENCH[2]]["p00000-i00"] == pytest.approx(float(smoothness[0]), abs=1e-6)
    assert all(0 <= value <= 1 for metric in VBENCH for value in by_metric[metric].values())
    # a rerun makes no video and computes no score
    import reneg.methods.base as methods_module

    monkeypatch.setattr(methods_module, "rollout_images", lambda *a, **k: pytest.fail("generated again"))
    before = (out / "scores.jsonl").read_text()
    assert main(_args(animatediff_dir, inputs, out)) == 0
    assert (out / "scores.jsonl").read_text() == before
    assert json.loads((out / "results.json").read_text())["methods"] == results["methods"]


def test_eval_on_text_to_video(text_to_video_dir, tmp_path):
    config = EvalConfig(model=str(text_to_video_dir), prompts=str(_prompts(tmp_path)),
                        methods=["null", "dnp-caption=a blue square"],
                        metrics=["contrast"], num_frames=FRAMES, steps=2, device="cpu", out=str(tmp_path / "eval"))
    results = json.loads(evaluate(config).read_text())
    assert set(results["metrics"]) == {"contrast", "colorfulness", "saturation", "vbench-temporal-flickering"}
    assert "vbench-temporal-flickering" in results["diagnostics"]
    assert "n*: a blue square" in (tmp_path / "eval" / "index.html").read_text()  # manual DNP: its caption shown


def _prompts(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("\n".join(PROMPTS) + "\n")
    return path


def _one_line_refusal(capsys, code, needle, out):
    assert code == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


@pytest.mark.parametrize("metric", VBENCH)
def test_video_metrics_are_refused_on_an_image_pipeline(metric, tmp_path, capsys):
    out = tmp_path / "eval"
    code = main(["eval", "--model", "tiny", "--prompts", str(_prompts(tmp_path)), "--metrics", metric,
                 "--out", str(out)])
    _one_line_refusal(capsys, code, "scores videos", out)


@pytest.mark.parametrize("args, needle", [
    (["--model", "tiny", "--num-frames", "3"], "video pipelines only"),
    (["--metrics", "vbench-motion-smoothness", "--num-frames", "3"], "needs a frame interpolator"),
    (["--metrics", "vbench-motion-smoothness=missing.pt", "--num-frames", "3"], "does not exist"),
    (["--metrics", "vbench-temporal-flickering:fps=8", "--num-frames", "3"], "has no option"),
    (["--methods", "dnp", "--metrics", "contrast", "--num-frames", "3"], "auto-DNP captions a DNS image"),
])
def test_bad_video_eval_input_is_one_line(args, needle, animatediff_dir, tmp_path, capsys):
    out = tmp_path / "eval"
    model = [] if "--model" in args else ["--model", str(animatediff_dir)]
    code = main(["eval", *model, "--prompts", str(_prompts(tmp_path)), *args, "--device", "cpu", "--out", str(out)])
    _one_line_refusal(capsys, code, needle, out)


def test_resume_with_another_frame_count_is_refused(animatediff_dir, tmp_path, capsys):
    out = tmp_path / "eval"
    args = ["eval", "--model", str(animatediff_dir), "--prompts", str(_prompts(tmp_path)), "--methods", "null",
            "--metrics", "contrast", "--steps", "1", "--limit", "1", "--device", "cpu", "--out", str(out)]
    assert main([*args, "--num-frames", "2"]) == 0
    capsys.readouterr()
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    assert main([*args, "--num-frames", "3"]) == 2
    err = capsys.readouterr().err
    assert "num_frames" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
