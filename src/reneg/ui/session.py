"""What one served page holds, without Gradio: the loaded model, its scorer, a lock on the model, a work folder,
the files learned in the training tab and the training running now. The page's handlers call these methods."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ReNegError
from ..models.loading import LoadedModel
from .exporting import Exported, export_to, fresh_path
from .grid import Cell, Scorer, grid
from .training import TrainingJob, TrainRequest
from .winrates import WinRateRequest, win_rates


def method_specs(ticked: list[str], learned: list[str], others: str) -> list[str]:
    """The ticked methods, the chosen learned files (``embedding=FILE`` unless written as a spec) and the typed
    specs (comma-separated, as ``reneg eval --methods``)."""
    from ..methods.spec import split_method_list

    files = [path if "=" in path else f"embedding={path}" for path in learned or [] if path and path.strip()]
    typed = split_method_list([others]) if others and others.strip() else []
    return [*(ticked or []), *files, *typed]


def guidance_scales(text: str) -> list[float | None]:
    """``3,7.5`` -> [3.0, 7.5]; empty: [None], the model's default."""
    if not text or not text.strip():
        return [None]
    try:
        scales = [float(piece) for piece in text.replace(" ", "").split(",") if piece]
    except ValueError:
        raise ReNegError(f"guidance scales must be numbers separated by commas, e.g. 3,7.5; got '{text}'") from None
    if not all(0 <= s <= 100 for s in scales):
        raise ReNegError(f"guidance scales must be between 0 and 100, got '{text}'")
    return scales or [None]


@dataclass
class Session:
    """The state behind the page; ``lock`` keeps one computation at a time on the model (training: one step)."""

    model: LoadedModel
    scorer: Scorer
    workdir: Path
    lock: threading.Lock = field(default_factory=threading.Lock)
    learned: list[str] = field(default_factory=list)
    job: TrainingJob | None = None

    def grid(self, prompt: str, specs: list[str], *, seed: int, steps: int, scales: str) -> list[Cell]:
        with self.lock:
            return grid(self.model, self.scorer, prompt, specs, seed=int(seed), steps=int(steps),
                        guidance_scales=guidance_scales(scales))

    def win_rates(self, request: WinRateRequest) -> tuple[dict, Path]:
        """``reneg eval --limit N`` of ``request`` into a new folder under the work folder; its results.json and
        that file's path."""
        with self.lock:
            return win_rates(self.model, request, self.fresh("winrates"))

    def train(self, request: TrainRequest) -> TrainingJob:
        """Start a training in the background; one at a time."""
        if self.job is not None and self.job.running:
            raise ReNegError("a training is running: stop it (Stop) or wait for it before starting another")
        self.job = TrainingJob(self.model, request.config(self.model), self.lock).start()
        return self.job

    def finished(self, job: TrainingJob) -> str:
        """The finished ``job``'s message; its file joins the learned files. A failed job's error as ReNegError."""
        if job.saved and job.saved not in self.learned:
            self.learned.append(job.saved)
        if job.error:
            raise ReNegError(job.error)
        return job.message

    def stop(self) -> str:
        if self.job is None or not self.job.running:
            return "no training is running"
        self.job.stop()
        return "stopping after the current step (the file is saved with the steps done)"

    def export(self, file: str, host: str, folder: str) -> Exported:
        return export_to(file, host, folder, workdir=self.workdir)

    def fresh(self, stem: str, suffix: str = "") -> Path:
        return fresh_path(self.workdir, stem, suffix)
