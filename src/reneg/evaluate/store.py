"""What ``reneg eval`` keeps in ``--out`` between runs: saved images per run, and a JSONL cache of scores.

    OUT/images/<run-slug>/run.json       the settings that made these images (checked on every rerun)
    OUT/images/<run-slug>/<item>.png     one image per (prompt, seed) item, written atomically
    OUT/images/<run-slug>/side/<item>.*  what a method made on the way (DNP: the DNS image .png, the caption .txt)
    OUT/scores.jsonl                     {"run", "metric", "item", "score"} per line, appended as scored
    OUT/scores.rank<K>.jsonl             the same, of process K when several processes score (merged into
                                         scores.jsonl by the main process at the end, then removed)

A rerun skips every image that exists and every score in the cache, so an
interrupted run resumes where it stopped.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import ReNegError
from ..io import atomic_path, open_rgb, save_png, to_pil, write_json

RUN_FILE = "run.json"
#: settings that run.json records since a later version: a folder written before holds none, and is reused
RECORDED_LATER = frozenset({"batch_size"})
SCORES_FILE = "scores.jsonl"
RANK_SCORES_GLOB = "scores.rank*.jsonl"
IMAGES_DIR = "images"
SIDE_DIR = "side"


class ImageStore:
    """Images of each run under ``OUT/images/<slug>/``, with the settings that made them in ``run.json``."""

    def __init__(self, out: str | Path):
        self.out = Path(out)

    def directory(self, slug: str) -> Path:
        return self.out / IMAGES_DIR / slug

    def path(self, slug: str, item: str) -> Path:
        return self.directory(slug) / f"{item}.png"

    def relative_path(self, slug: str, item: str) -> str:
        """The image's path relative to ``OUT`` (for index.html, so the folder can be moved)."""
        return f"{IMAGES_DIR}/{slug}/{item}.png"

    def has(self, slug: str, item: str) -> bool:
        """Whether the image is saved whole: a file that does not decode (cut short by a crash of the disk, or
        edited) counts as missing and is made again, with a warning."""
        path = self.path(slug, item)
        if not path.is_file():
            return False
        try:
            with Image.open(path) as image:
                image.verify()
            return True
        except Exception:  # noqa: BLE001 - any decoding failure means "not whole"
            logging.getLogger("reneg").warning("saved image %s does not decode: it is made again", path)
            return False

    def check_settings(self, slug: str, settings: dict) -> None:
        """ReNegError if ``OUT`` holds images of this run made with other settings (nothing is written)."""
        record = self.directory(slug) / RUN_FILE
        if not record.is_file():
            return
        try:
            saved = json.loads(record.read_text())
        except json.JSONDecodeError:
            saved = {}
        differing = sorted(key for key in settings.keys() | saved.keys() if settings.get(key) != saved.get(key)
                           and not (key in RECORDED_LATER and key not in saved))
        if differing:
            raise ReNegError(f"{self.directory(slug)} holds images made with other settings ({', '.join(differing)} "
                             f"differ): pass a fresh --out DIR, or delete that folder to remake them")

    def start(self, slug: str, settings: dict) -> None:
        """Record the settings of a run before its first image is saved."""
        record = self.directory(slug) / RUN_FILE
        if not record.is_file():
            write_json(record, settings)

    def save(self, slug: str, item: str, image: Image.Image, text: dict[str, str] | None = None) -> None:
        save_png(image, self.path(slug, item), text)

    def save_side(self, slug: str, item: str, side: dict) -> None:
        """A method's by-products of one image (``side_outputs``: DNP's DNS image ``dns`` and ``caption``)."""
        if side.get("dns") is not None:
            save_png(side["dns"], self.directory(slug) / SIDE_DIR / f"{item}.png")
        if side.get("caption") is not None:
            with atomic_path(self.directory(slug) / SIDE_DIR / f"{item}.txt") as tmp:
                tmp.write_text(side["caption"] + "\n", encoding="utf-8")

    def side(self, slug: str, item: str) -> dict:
        """What :meth:`save_side` kept: ``dns`` (path relative to OUT) and ``caption`` (text), where present."""
        found, directory = {}, self.directory(slug) / SIDE_DIR
        if (directory / f"{item}.png").is_file():
            found["dns"] = f"{IMAGES_DIR}/{slug}/{SIDE_DIR}/{item}.png"
        if (directory / f"{item}.txt").is_file():
            found["caption"] = (directory / f"{item}.txt").read_text(encoding="utf-8").strip()
        return found

    def outputs(self, images: torch.Tensor) -> list[Image.Image]:
        """A generated batch (B, 3, H, W) in [0, 1] as what :meth:`save` takes, one per item."""
        return to_pil(images)

    def load(self, slug: str, items: list[str]) -> torch.Tensor:
        """Saved images as floats in [0, 1], (B, 3, H, W): what every score is computed from."""
        return read_rgb([self.path(slug, item) for item in items])


def read_rgb(paths: list[Path]) -> torch.Tensor:
    """PNGs as floats in [0, 1], (N, 3, H, W)."""
    advice = "delete it and run again to generate it anew"
    arrays = [np.asarray(open_rgb(path, what="saved image", advice=advice)) for path in paths]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255


class ScoreCache:
    """Scores per (run, metric, item), read from ``OUT/scores.jsonl`` and every process's ``scores.rank<K>.jsonl``.

    New scores are appended to ``scores.jsonl``, or with ``rank=K`` to ``scores.rank<K>.jsonl`` (one file per
    process, so that processes never write the same file).
    """

    def __init__(self, out: str | Path, *, rank: int | None = None):
        out = Path(out)
        self.main_path = out / SCORES_FILE
        self.path = self.main_path if rank is None else out / f"scores.rank{rank}.jsonl"
        self.scores: dict[tuple[str, str, str], float] = {}
        for path in [self.main_path, *self.rank_paths()]:
            self._read(path)

    def rank_paths(self) -> list[Path]:
        return sorted(self.main_path.parent.glob(RANK_SCORES_GLOB))

    def _read(self, path: Path) -> None:
        if not path.is_file():
            return
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
                self.scores[(record["run"], record["metric"], record["item"])] = float(record["score"])
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                continue  # a line cut short by a crash: that score is computed again

    def merge(self) -> None:
        """Rewrite ``scores.jsonl`` with every score (sorted) and remove the per-process files; a no-op without them.

        Only the main process calls this, once every process has finished scoring.
        """
        ranks = self.rank_paths()
        if not ranks:
            return
        with atomic_path(self.main_path) as tmp:
            tmp.write_text("".join(json.dumps({"run": run, "metric": metric, "item": item, "score": score}) + "\n"
                                   for (run, metric, item), score in sorted(self.scores.items())))
        for path in ranks:
            path.unlink()

    def has(self, run: str, metric: str, item: str) -> bool:
        return (run, metric, item) in self.scores

    def get(self, run: str, metric: str, item: str) -> float:
        return self.scores[(run, metric, item)]

    def add(self, run: str, metric: str, scores: dict[str, float]) -> None:
        """Append the scores of items (name -> score) and flush them to disk."""
        self.add_many(run, {metric: scores})

    def add_many(self, run: str, scores: dict[str, dict[str, float]]) -> None:
        """Append the scores of several metrics (metric -> item name -> score) of a run with one flush to disk."""
        lines = [json.dumps({"run": run, "metric": metric, "item": item, "score": score})
                 for metric, by_item in scores.items() for item, score in by_item.items()]
        if not lines:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("ab+") as handle:
            size = handle.seek(0, os.SEEK_END)
            if size:
                handle.seek(size - 1)
                if handle.read(1) != b"\n":
                    handle.write(b"\n")  # the last line was cut short by a crash: start a fresh one
            handle.write("".join(line + "\n" for line in lines).encode())
            handle.flush()
            os.fsync(handle.fileno())
        for metric, by_item in scores.items():
            for item, score in by_item.items():
                self.scores[(run, metric, item)] = score
