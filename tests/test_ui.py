"""reneg ui: the grid's images are `reneg generate`'s, the app answers through gradio_client, bad input is a
message in the page, and a non-local host needs --allow-remote."""

from __future__ import annotations

import socket

import numpy as np
import pytest
from PIL import Image

from reneg.cli import main
from reneg.errors import ReNegError

gradio = pytest.importorskip("gradio")


@pytest.fixture(scope="module")
def served():
    from reneg.models.loading import load_model
    from reneg.ui.app import build_app
    from reneg.ui.grid import Scorer

    model = load_model("tiny")
    scorer = Scorer(model, ["contrast", "saturation"])
    app = build_app(model, scorer)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield model, scorer, f"http://127.0.0.1:{port}/"
    app.close()


def test_a_grid_cell_is_reneg_generate_s_first_image(served, tmp_path):
    from reneg.ui.grid import grid

    model, scorer, _ = served
    cells = grid(model, scorer, "a red circle", ["null", "handcrafted"], seed=3, steps=3, guidance_scales=[None])
    assert [c.spec for c in cells] == ["null", "handcrafted"] and set(cells[0].scores) == {"contrast", "saturation"}
    assert main(["generate", "--model", "tiny", "--prompt", "a red circle", "--seed", "3", "--steps", "3",
                 "--handcrafted", "--out", str(tmp_path / "g")]) == 0
    made = np.asarray(Image.open(tmp_path / "g" / "00000.png").convert("RGB"))
    assert np.array_equal(np.asarray(cells[1].image), made)
    assert not np.array_equal(np.asarray(cells[0].image), made)  # null differs from the handcrafted negative


def test_the_app_answers_through_gradio_client(served):
    from gradio_client import Client

    _, _, url = served
    client = Client(url, verbose=False)
    gallery, table, pair = client.predict("a blue square", 1, 2, "3,5", ["null", "handcrafted"], "",
                                          api_name="/grid")
    assert len(gallery) == 4  # two methods at two scales
    assert [row[0] for row in table["data"]] == ["null @ 3", "null @ 5", "handcrafted @ 3", "handcrafted @ 5"]
    assert all(isinstance(v, float) for row in table["data"] for v in row[1:])
    with pytest.raises(Exception, match="the prompt is empty"):
        client.predict("", 1, 2, "", ["null"], "", api_name="/grid")
    with pytest.raises(Exception, match="does not exist"):
        client.predict("x", 1, 2, "", [], "embedding=/nonexistent.safetensors", api_name="/grid")


def test_a_non_local_host_needs_allow_remote():
    from reneg.ui.app import UiConfig

    with pytest.raises(ReNegError, match="--allow-remote"):
        UiConfig(host="0.0.0.0")
    assert UiConfig(host="0.0.0.0", allow_remote=True).host == "0.0.0.0"


def test_the_world_s_rewards_score_the_sampler_s_inference_tensors():
    """The sampler returns inference tensors; the world's scorers (truth, shapes-hps) score them in the UI."""
    from reneg.models.loading import load_model
    from reneg.ui.grid import Scorer, grid

    world = load_model("shapes")
    cells = grid(world, Scorer(world, ["shapes-hps", "truth-adherence"]), "a red circle on a blue background",
                 ["null"], seed=0, steps=2, guidance_scales=[None])
    assert set(cells[0].scores) == {"shapes-hps", "truth-adherence"}
