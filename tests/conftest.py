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
    from reneg.models import load_model

    return load_model("tiny").pipe


@pytest.fixture(scope="session", params=["epsilon", "v_prediction"])
def tiny_pipeline_dir(request, tmp_path_factory):
    """A tiny SD pipeline saved with save_pretrained, for each prediction type."""
    from reneg.tiny import tiny_sd_pipeline

    directory = tmp_path_factory.mktemp(f"tiny-sd-{request.param}")
    tiny_sd_pipeline(prediction_type=request.param).save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_epsilon_dir(tmp_path_factory):
    from reneg.tiny import tiny_sd_pipeline

    directory = tmp_path_factory.mktemp("tiny-sd")
    tiny_sd_pipeline().save_pretrained(directory)
    return directory
