"""The video families: a negative transfers to AnimateDiff and text-to-video SD (ReNeg Table 4) and is learned on AnimateDiff."""

import json

import numpy as np
import pytest
import torch
from diffusers import AnimateDiffPipeline, DDIMScheduler, TextToVideoSDPipeline
from PIL import Image

from reneg.cli import main
from reneg.embedding import NegativeEmbedding
from reneg.rewards.video import frame_rewards

PROMPTS = ["a red circle on a blue background", "a yellow star on a black background"]
FRAMES = 3


def _generate(directory, out, *extra):
    args = ["generate", "--model", str(directory), "--seed", "4", "--steps", "3", "--guidance-scale", "6.0",
            "--num-frames", str(FRAMES), "--device", "cpu", "--out", str(out), *extra]
    for prompt in PROMPTS:
        args += ["--prompt", prompt]
    return main(args)


def _our_frames(out):
    record = json.loads((out / "generation.json").read_text())
    videos = [np.stack([np.asarray(Image.open(out / name)) / 255.0 for name in item["frames"]])
              for item in record["images"]]
    return np.stack(videos), record


@pytest.mark.parametrize("kind", ["animatediff", "text-to-video"])
def test_generate_matches_the_video_pipeline(kind, animatediff_dir, text_to_video_dir, tmp_path):
    """Same frames (<= 2/255) as diffusers' own video pipeline with the same negative_prompt_embeds and seed."""
    directory, pipeline_class = {"animatediff": (animatediff_dir, AnimateDiffPipeline),
                                 "text-to-video": (text_to_video_dir, TextToVideoSDPipeline)}[kind]
    torch.manual_seed(0)
    negative = NegativeEmbedding(torch.randn(77, 32), {})
    file = tmp_path / "neg.safetensors"
    negative.save(file)
    with pytest.warns(UserWarning, match="fingerprint"):
        assert _generate(directory, tmp_path / "out", "--negative", str(file)) == 0
    ours, record = _our_frames(tmp_path / "out")
    pipe = pipeline_class.from_pretrained(directory)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    theirs = pipe(PROMPTS, num_frames=FRAMES, negative_prompt_embeds=negative.expand(len(PROMPTS)),
                  num_inference_steps=3, guidance_scale=6.0, generator=torch.Generator().manual_seed(4),
                  output_type="np").frames
    theirs = np.asarray(theirs)
    assert ours.shape == theirs.shape == (2, FRAMES, 64, 64, 3)
    assert np.abs(ours - theirs).max() <= 2 / 255
    assert np.abs(ours[:, 0] - ours[:, 1]).max() > 0  # frames differ: a video, not a repeated image
    gif = Image.open(tmp_path / "out" / record["images"][0]["file"])
    assert gif.format == "GIF" and gif.n_frames == FRAMES


def test_train_end_to_end_on_animatediff(animatediff_dir, tmp_path):
    out = tmp_path / "neg.safetensors"
    assert main(["train", "--model", str(animatediff_dir), "--num-frames", "2", "--reward", "contrast",
                 "--prompt", PROMPTS[0], "--prompt", PROMPTS[1], "--train-steps", "2", "--batch-size", "2",
                 "--steps", "3", "--validate-every", "1", "--device", "cpu", "--out", str(out)]) == 0
    learned = NegativeEmbedding.load(out)
    assert learned.tensor.shape == (77, 32) and torch.isfinite(learned.tensor).all()
    validation = [json.loads(line) for line in out.with_suffix(".validation.jsonl").read_text().splitlines()]
    assert validation and all(np.isfinite(v["validation_reward"]) for v in validation)


def test_frame_rewards_average_each_videos_frames():
    videos = torch.rand(2, 3, 3, 8, 8)
    seen = []

    def reward(images, prompts):
        seen.append(list(prompts))
        return images.mean(dim=(1, 2, 3))

    scores = frame_rewards(reward, videos, ["a", "b"])
    torch.testing.assert_close(scores, videos.mean(dim=(2, 3, 4)).mean(1))
    assert seen == [["a"] * 3 + ["b"] * 3]
    images = torch.rand(2, 3, 8, 8)
    torch.testing.assert_close(frame_rewards(reward, images, ["a", "b"]), images.mean(dim=(1, 2, 3)))


def test_frames_on_an_image_pipeline_is_one_line(tmp_path, capsys):
    code = main(["generate", "--model", "tiny", "--prompt", "a", "--num-frames", "2", "--out", str(tmp_path / "out")])
    assert code == 2
    err = capsys.readouterr().err
    assert "video pipelines only" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_temporal_flickering_as_vbench_defines_it():
    from reneg.rewards.video import temporal_flickering

    still = torch.full((1, 4, 3, 8, 8), 0.5)
    assert float(temporal_flickering(still)[0]) == 1.0
    alternating = torch.zeros(1, 4, 3, 8, 8)
    alternating[:, 1::2] = 1.0  # black/white every frame: MAE 255 between every pair
    assert float(temporal_flickering(alternating)[0]) == 0.0
    step = torch.zeros(1, 3, 3, 8, 8)
    step[:, 2] = 51 / 255  # MAEs 0 and 51: mean 25.5
    assert float(temporal_flickering(step)[0]) == pytest.approx((255 - 25.5) / 255)


def test_background_consistency_as_vbench_defines_it():
    from reneg.models.tiny import tiny_clip
    from reneg.rewards.video import background_consistency

    model, processor = tiny_clip(image_size=32)
    generator = torch.Generator().manual_seed(0)
    videos = torch.rand(2, 3, 3, 32, 32, generator=generator)
    videos[1] = videos[1, :1]  # a still video
    scores = background_consistency(videos, model, processor)
    assert float(scores[1]) == pytest.approx(1.0, abs=1e-5)
    # by hand for the first video: features of each frame, then VBench's mean of (prev, first) similarities
    from reneg.io import to_pil

    pixels = processor(images=to_pil(videos[0]), return_tensors="pt").pixel_values
    with torch.no_grad():
        features = model.get_image_features(pixel_values=pixels)
    features = torch.nn.functional.normalize(getattr(features, "pooler_output", features), dim=-1)
    cos = lambda a, b: max(0.0, float((features[a] * features[b]).sum()))  # noqa: E731
    expected = ((cos(1, 0) + cos(1, 0)) / 2 + (cos(2, 1) + cos(2, 0)) / 2) / 2
    assert float(scores[0]) == pytest.approx(expected, abs=1e-5)


def _midpoint(img0, img1, embt):
    """A deterministic interpolator: the mean of the two frames (exact for linear motion)."""
    return {"imgt_pred": (img0 + img1) / 2}


def test_motion_smoothness_is_one_for_linear_motion():
    from reneg.rewards.video import motion_smoothness

    ramp = torch.arange(7).view(1, 7, 1, 1, 1) * 9 + torch.arange(20).view(1, 1, 1, 1, 20) % 5  # brightness ramp
    videos = ramp.expand(2, 7, 3, 13, 20) / 255  # 13 x 20: padded to 16 x 32 and back
    assert motion_smoothness(videos, _midpoint).tolist() == [1.0, 1.0]


def test_motion_smoothness_as_vbench_defines_it():
    """By hand for 6 frames: even frames 0, 2, 4; midpoints of (0, 2) and (2, 4) against frames 1 and 3 (frame 5
    has no midpoint), each truncated to uint8 as AMT's tensor2img; score (255 - mean MAE) / 255."""
    from reneg.rewards.video import motion_smoothness

    levels = torch.randint(0, 256, (1, 6, 3, 5, 7), generator=torch.Generator().manual_seed(0)).double()
    score = motion_smoothness(levels.float() / 255, lambda a, b, t: (a + b) / 2 + 0.3 / 255)
    frames = levels[0].permute(0, 2, 3, 1).numpy()  # (F, H, W, 3) uint8 values
    maes = []
    for odd in (1, 3):
        predicted = ((frames[odd - 1] / 255 + frames[odd + 1] / 255) / 2 + 0.3 / 255) * 255
        maes.append(np.abs(frames[odd] - np.clip(predicted, 0, 255).astype(np.uint8)).mean())
    assert float(score[0]) == pytest.approx((255 - np.mean(maes)) / 255, abs=1e-12)
    assert float(score[0]) < 1


def test_motion_smoothness_needs_three_frames_and_a_loadable_interpolator(tmp_path):
    from reneg.errors import ReNegError
    from reneg.rewards.video import load_interpolator, motion_smoothness

    with pytest.raises(ReNegError, match="at least 3 frames"):
        motion_smoothness(torch.rand(1, 2, 3, 8, 8), _midpoint)
    with pytest.raises(ReNegError, match="does not exist"):
        load_interpolator(tmp_path / "none.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a zip")
    with pytest.raises(ReNegError, match="TorchScript"):
        load_interpolator(tmp_path / "junk.pt")
