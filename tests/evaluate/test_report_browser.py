"""index.html of `reneg eval` in headless Chromium, as a browser sees it: every image loads, wherever the folder is."""

import json
import re
import shutil

import pytest
from PIL import Image

from reneg.evaluate import EvalConfig, evaluate
from reneg.evaluate.html import chromium_path, image_status, screenshot
from reneg.models.loading import load_model

pytestmark = pytest.mark.skipif(chromium_path() is None,
                                reason="Chromium is not installed (Debian: apt-get install chromium); "
                                       "the report's browser checks need it")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """An eval folder on tiny: 2 prompts, 2 methods, a guidance sweep (so every kind of plot)."""
    directory = tmp_path_factory.mktemp("report")
    benchmark = directory / "bench.json"
    benchmark.write_text(json.dumps({"shapes": ["a red circle"], "scenes": ["a yellow star above a house"]}))
    config = EvalConfig(model="tiny", benchmark=str(benchmark), methods=["null", "handcrafted"], metrics=["saturation"],
                        guidance_sweep="3,7.5", steps=1, device="cpu",
                        out=str(directory / "eval"))
    return evaluate(config, model=load_model("tiny")).parent / "index.html"


def _sources(index_html):
    return re.findall(r'<img src="([^"]+)"', index_html.read_text())


def test_every_image_of_the_report_loads(report):
    sources = _sources(report)
    metrics = json.loads((report.parent / "results.json").read_text())["metrics"]
    assert len(sources) == 2 * 2 + 2 * len(metrics)  # 2 items x 2 methods, a distribution and a sweep plot a metric
    assert all(not source.startswith(("/", "file:")) for source in sources)
    status = image_status(report)
    assert status == {"total": len(sources), "loaded": len(sources), "broken": []}


def test_the_report_folder_can_be_moved_and_a_missing_image_is_reported(report, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(report.parent, tmp_path / "copy")
    shutil.move(tmp_path / "copy", moved)
    assert image_status(moved / "index.html")["loaded"] == len(_sources(report))
    missing = _sources(report)[0]
    (moved / missing).unlink()
    status = image_status(moved / "index.html")
    assert status["broken"] == [missing] and status["loaded"] == status["total"] - 1


def test_screenshot_of_the_report(report, tmp_path):
    path = screenshot(report, tmp_path / "shots" / "report.png", width=800, height=600)
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (800, 600)
    assert list((tmp_path / "shots").iterdir()) == [path]  # no temporary file left behind
