"""reneg ui: the grid's images are `reneg generate`'s, the win rates `reneg eval`'s, the training tab trains a file
the grid then uses (and stops on Stop), the export tab writes the host's files; the app answers through
gradio_client, bad input is a message in the page, and a non-local host needs --allow-remote."""

from __future__ import annotations

import json
import socket
import time
import zipfile

import numpy as np
import pytest
from PIL import Image

from reneg.cli import main
from reneg.errors import ReNegError

gradio = pytest.importorskip("gradio")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from reneg.models.loading import load_model
    from reneg.ui.app import build_app
    from reneg.ui.grid import Scorer

    model = load_model("tiny")
    scorer = Scorer(model, ["contrast", "saturation"])
    app = build_app(model, scorer, workdir=tmp_path_factory.mktemp("ui-work"))
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
    gallery, table, pair = client.predict("a blue square", 1, 2, "3,5", ["null", "handcrafted"], "", [],
                                          api_name="/grid")
    assert len(gallery) == 4  # two methods at two scales
    assert [row[0] for row in table["data"]] == ["null @ 3", "null @ 5", "handcrafted @ 3", "handcrafted @ 5"]
    assert all(isinstance(v, float) for row in table["data"] for v in row[1:])
    with pytest.raises(Exception, match="the prompt is empty"):
        client.predict("", 1, 2, "", ["null"], "", [], api_name="/grid")
    with pytest.raises(Exception, match="does not exist"):
        client.predict("x", 1, 2, "", [], "embedding=/nonexistent.safetensors", [], api_name="/grid")
    with pytest.raises(Exception, match="does not exist"):
        client.predict("x", 1, 2, "", [], "", ["/nonexistent.safetensors"], api_name="/grid")


def test_the_win_rates_are_reneg_eval_s(served, tmp_path):
    """Two methods over 4 prompts: the tables hold the means and win rates `reneg eval --limit 4` writes."""
    from gradio_client import Client

    _, _, url = served
    client = Client(url, verbose=False)
    means, wins, results = client.predict("tiny", 4, 5, 3, 7.5, ["null", "handcrafted"], "", [],
                                          api_name="/win_rates")
    assert main(["eval", "--model", "tiny", "--limit", "4", "--methods", "null,handcrafted", "--metrics",
                 "contrast,saturation", "--seed", "5", "--steps", "3", "--guidance-scale", "7.5",
                 "--out", str(tmp_path / "eval")]) == 0
    expected = json.loads((tmp_path / "eval" / "results.json").read_text())
    metrics = expected["metrics"]  # the chosen two and eval's diagnostics
    assert means["headers"] == ["method", *metrics] and wins["headers"][1:] == metrics
    assert {row[0]: row[1:] for row in means["data"]} == {
        method: [summary["mean"][m] for m in metrics] for method, summary in expected["methods"].items()}
    assert {row[0]: row[1:] for row in wins["data"]} == {
        pair: [rates[m] for m in metrics] for pair, rates in expected["win_rates"].items()}
    assert json.loads(open(results).read())["win_rates"] == expected["win_rates"]
    assert expected["num_prompts"] == 4


def test_win_rates_refuse_bad_input_in_one_line(served, tmp_path):
    from gradio_client import Client

    client = Client(served[2], verbose=False)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    for prompt_set, count, ticked, needle in [("", 4, ["null", "handcrafted"], "the prompt set is empty"),
                                              (str(empty), 4, ["null", "handcrafted"], "holds no prompts"),
                                              ("tiny", 0, ["null", "handcrafted"], "between 1 and"),
                                              ("tiny", 4, ["null"], "at least two methods")]:
        with pytest.raises(Exception, match=needle):
            client.predict(prompt_set, count, 0, 3, 7.5, ticked, "", [], api_name="/win_rates")


def _train(client, out, *, train_steps=2, **changes):
    settings = {"prompts": "", "prompts_file": "", "reward": "contrast", "train_steps": train_steps, "lr": 0.01,
                "scale": 7.5, "steps": 3, "batch": 2, "validate": 2, "out": str(out), **changes}
    return client.submit(*settings.values(), api_name="/train")


def test_the_training_tab_trains_a_file_the_grid_then_uses(served, tmp_path):
    from gradio_client import Client

    from reneg.embedding import NegativeEmbedding

    client = Client(served[2], verbose=False)
    out = tmp_path / "learned.safetensors"
    curve, message, learned, export_file, next_out = _train(client, out).result(timeout=120)
    assert message == f"trained 2 steps: saved {out}" and out.is_file()
    assert NegativeEmbedding.load(out).metadata["train_steps"] == "2"
    series = [(step, name) for step, _, name in curve["data"]]
    assert series == [(1, "batch reward"), (2, "batch reward"), (0, "validation reward"), (1, "validation reward"),
                      (2, "validation reward")]
    assert learned["value"] == [str(out)] and export_file["value"] == str(out) and next_out != str(out)
    _, table, _ = client.predict("a red circle", 0, 3, "", ["null"], "", learned["value"], api_name="/grid")
    assert [row[0] for row in table["data"]] == ["null @ 7.5", "embedding=learned.safetensors @ 7.5"]
    assert table["data"][0][1:] != table["data"][1][1:]  # the learned negative changed the image


def test_stop_ends_a_training_after_a_step_and_saves_it(served, tmp_path):
    from gradio_client import Client

    from reneg.embedding import NegativeEmbedding

    client = Client(served[2], verbose=False)
    out = tmp_path / "stopped.safetensors"
    job = _train(client, out, train_steps=500, validate=1)
    deadline = time.monotonic() + 60
    while not (tmp_path / "stopped.log.jsonl").is_file() and time.monotonic() < deadline:  # a step is done
        time.sleep(0.1)
    assert client.predict(api_name="/stop").startswith("stopping after the current step")
    _, message, *_ = job.result(timeout=120)
    steps = int(NegativeEmbedding.load(out).metadata["train_steps"])
    assert 1 <= steps < 500
    assert message.startswith(f"stopped by the Stop button after step {steps}; the checkpoint is ")
    assert message.endswith(f"; saved {out}, the embedding after step {steps}")
    assert client.predict(api_name="/stop") == "no training is running"


def test_one_training_at_a_time(served, tmp_path):
    """A second training is refused while one runs (the page queues its clicks; this guards a lost page)."""
    from reneg.ui.session import Session
    from reneg.ui.training import TrainRequest

    model, scorer, _ = served
    session = Session(model, scorer, tmp_path)
    request = TrainRequest("", "contrast", 500, 0.01, 7.5, 3, 2, 1, str(tmp_path / "a.safetensors"))
    job = session.train(request)
    try:
        with pytest.raises(ReNegError, match="a training is running"):
            session.train(request)
    finally:
        session.stop()
        job.wait(60)
    assert session.finished(job).startswith("stopped by the Stop button") and session.learned == [job.saved]


def test_training_refuses_bad_input_in_one_line(served, tmp_path):
    from gradio_client import Client

    client = Client(served[2], verbose=False)
    for changes, needle in [({"train_steps": 0}, "--train-steps must be >= 1"), ({"lr": 0}, "--lr must be > 0"),
                            ({"reward": "no-such-reward"}, "no-such-reward"),
                            ({"prompts_file": str(tmp_path / "missing.txt")}, "does not exist")]:
        with pytest.raises(Exception, match=needle):
            _train(client, tmp_path / "bad.safetensors", **changes).result(timeout=60)
    assert not (tmp_path / "bad.safetensors").exists()


def test_the_export_tab_writes_the_host_s_files(served, tmp_path):
    from gradio_client import Client

    from reneg.export import ExportConfig, export

    client = Client(served[2], verbose=False)
    file = tmp_path / "neg.safetensors"
    _train(client, file).result(timeout=120)
    message, archive = client.predict(str(file), "comfyui", str(tmp_path / "comfy"), api_name="/export")
    written = sorted(str(p.relative_to(tmp_path / "comfy")) for p in (tmp_path / "comfy").rglob("*") if p.is_file())
    export(ExportConfig(file=str(file), to="comfyui", out=str(tmp_path / "cli")))
    assert written == sorted(str(p.relative_to(tmp_path / "cli")) for p in (tmp_path / "cli").rglob("*")
                             if p.is_file())  # what `reneg export --to comfyui` writes
    assert message.startswith(f"wrote {len(written)} files to {tmp_path / 'comfy'}")
    assert all(f"- {name}" in message for name in written) and "neg.safetensors" in written
    with zipfile.ZipFile(archive) as zipped:
        assert sorted(zipped.namelist()) == written
    message, _ = client.predict(str(file), "diffusers", "", api_name="/export")  # a new folder in the work folder
    assert "README.md" in message and "negative_embedding.safetensors" in message
    with pytest.raises(Exception, match="does not exist"):
        client.predict(str(tmp_path / "missing.safetensors"), "a1111", "", api_name="/export")
    with pytest.raises(Exception, match="no file to export"):
        client.predict("", "a1111", "", api_name="/export")


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
