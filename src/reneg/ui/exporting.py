"""``reneg export`` from the UI: a learned file into a host's layout, in a chosen folder or a fresh one under the
UI's work folder, with a zip of it to download."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from ..errors import ReNegError
from ..export import HOSTS, ExportConfig, export


@dataclass
class Exported:
    """Where an export went, the files it wrote (relative to ``folder``) and a zip of the folder."""

    folder: Path
    files: list[str]
    archive: Path

    def message(self) -> str:
        return f"wrote {len(self.files)} files to {self.folder}:\n" + "\n".join(f"- {f}" for f in self.files)


def export_to(file: str, host: str, folder: str, *, workdir: Path) -> Exported:
    """Export ``file`` for ``host`` into ``folder`` (empty: a new folder under ``workdir``); zip it in ``workdir``."""
    if not file or not file.strip():
        raise ReNegError("no file to export: train one in the training tab or type the path of a .safetensors")
    if host not in HOSTS:
        raise ReNegError(f"choose the host to export for: one of {', '.join(sorted(HOSTS))}")
    out = Path(folder.strip()).expanduser() if folder and folder.strip() else fresh_path(workdir, f"export-{host}")
    written = export(ExportConfig(file=file.strip(), to=host, out=str(out)))
    files = sorted(str(p.relative_to(written)) for p in written.rglob("*") if p.is_file())
    archive = shutil.make_archive(str(fresh_path(workdir, f"{written.name}-zip") / written.name), "zip", written)
    return Exported(written, files, Path(archive))


def fresh_path(workdir: Path, stem: str, suffix: str = "") -> Path:
    """A path under ``workdir`` that does not exist yet: ``stem-1``, ``stem-2``, ... (``suffix`` added)."""
    index = 1
    while (workdir / f"{stem}-{index}{suffix}").exists():
        index += 1
    return workdir / f"{stem}-{index}{suffix}"
