"""Shared fixtures: tiny random-weight pipelines saved in diffusers format; never any download."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tiny_pipe():
    """A tiny SD pipeline (epsilon prediction) in memory, CPU fp32, DDIM."""
    from reneg.models.loading import load_model

    return load_model("tiny").pipe


@pytest.fixture(scope="session", params=["epsilon", "v_prediction"])
def tiny_pipeline_dir(request, tmp_path_factory):
    """A tiny SD pipeline saved with save_pretrained, for each prediction type."""
    from reneg.models.tiny import tiny_sd_pipeline

    directory = tmp_path_factory.mktemp(f"tiny-sd-{request.param}")
    tiny_sd_pipeline(prediction_type=request.param).save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_epsilon_dir(tmp_path_factory):
    from reneg.models.tiny import tiny_sd_pipeline

    directory = tmp_path_factory.mktemp("tiny-sd")
    tiny_sd_pipeline().save_pretrained(directory)
    return directory


def _saved(tmp_path_factory, name, pipe):
    directory = tmp_path_factory.mktemp(name)
    pipe.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def sdxl_dir(tmp_path_factory):
    from reneg.models.tiny import tiny_sdxl_pipeline

    return _saved(tmp_path_factory, "tiny-sdxl", tiny_sdxl_pipeline())


@pytest.fixture(scope="session")
def sd3_dir(tmp_path_factory):
    from reneg.models.tiny import tiny_sd3_pipeline

    return _saved(tmp_path_factory, "tiny-sd3", tiny_sd3_pipeline())


@pytest.fixture(scope="session")
def animatediff_dir(tmp_path_factory):
    """A tiny random-weight AnimateDiff (tiny SD UNet + motion adapter, its zero-initialised outputs made non-zero)."""
    from diffusers import AnimateDiffPipeline, MotionAdapter

    from reneg.models.tiny import tiny_sd_pipeline

    sd = tiny_sd_pipeline()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(2)
        adapter = MotionAdapter(block_out_channels=(16, 32), motion_layers_per_block=1, motion_norm_num_groups=8,
                                motion_num_attention_heads=2, motion_max_seq_length=32)
        for name, parameter in adapter.named_parameters():
            if "proj_out" in name:
                parameter.data.normal_(0, 0.2)
    return _saved(tmp_path_factory, "tiny-animatediff", AnimateDiffPipeline(
        vae=sd.vae, text_encoder=sd.text_encoder, tokenizer=sd.tokenizer, unet=sd.unet, motion_adapter=adapter,
        scheduler=sd.scheduler, feature_extractor=None, image_encoder=None))


@pytest.fixture(scope="session")
def text_to_video_dir(tmp_path_factory):
    """A tiny random-weight ModelScope-layout text-to-video pipeline (UNet3DConditionModel)."""
    from diffusers import TextToVideoSDPipeline, UNet3DConditionModel

    from reneg.models.tiny import tiny_sd_pipeline

    sd = tiny_sd_pipeline()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        unet = UNet3DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32),
                                    layers_per_block=1, down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
                                    up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"), cross_attention_dim=32,
                                    attention_head_dim=4, norm_num_groups=8)
    return _saved(tmp_path_factory, "tiny-t2v", TextToVideoSDPipeline(
        vae=sd.vae, text_encoder=sd.text_encoder, tokenizer=sd.tokenizer, unet=unet, scheduler=sd.scheduler))
