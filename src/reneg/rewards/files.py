"""Single-file reward checkpoints: found locally or in the hub cache (never downloaded) and loaded as plain weights.

A checkpoint argument is one of:

* a file path (``~/ckpt/HPS_v2.1_compressed.pt``);
* a directory holding the checkpoint under one of its known file names;
* a hub id ``org/name`` whose cached snapshot holds it (``xswu/HPSv2``), or a
  file inside a hub repo, ``org/name/path/in/repo.pt``.

A miss is a one-line :class:`ReNegError` naming the file, its hub repo and the
``hf download`` command that fetches it where there is network.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import ReNegError

#: How many missing or unexpected keys a mismatch message lists.
KEYS_SHOWN = 3


@dataclass(frozen=True)
class CheckpointSource:
    """Where a reward checkpoint is published: a label for messages, its hub repo, its file names (canonical first)."""

    what: str
    repo: str
    filenames: tuple[str, ...]

    def download_command(self, repo: str | None = None, filename: str | None = None) -> str:
        return f"`hf download {repo or self.repo} {filename or self.filenames[0]}`"


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def split_hub_spec(spec: str) -> tuple[str, str | None] | None:
    """``org/name`` -> ``(org/name, None)``; ``org/name/file`` -> ``(org/name, file)``; a path-like string -> None."""
    parts = spec.split("/")
    if spec.startswith((".", "/", "~")) or len(parts) < 2 or not all(parts):
        return None
    return "/".join(parts[:2]), ("/".join(parts[2:]) or None)


def _cached_hub_file(repo: str, filename: str) -> Path | None:
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo, filename, local_files_only=True))
    except Exception:  # noqa: BLE001 - any failure means "not in the local cache"
        return None


def resolve_checkpoint(spec: str | None, source: CheckpointSource) -> Path:
    """A local checkpoint file for ``spec`` (default: ``source.repo``); see the module docstring for the forms."""
    spec = spec or source.repo
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        for name in source.filenames:
            if (path / name).is_file():
                return path / name
        raise ReNegError(f"{source.what}: directory '{spec}' holds none of {', '.join(source.filenames)}: get "
                         f"{source.filenames[0]} from the hub repo {source.repo} ({source.download_command()})")
    hub = split_hub_spec(spec)
    if hub is None:
        raise ReNegError(f"{source.what} '{spec}' does not exist: get {source.filenames[0]} from the hub repo "
                         f"{source.repo} ({source.download_command()}) and pass its path")
    repo, filename = hub
    names = (filename,) if filename else source.filenames
    for name in names:
        found = _cached_hub_file(repo, name)
        if found is not None:
            return found
    from huggingface_hub import constants

    raise ReNegError(
        f"{source.what} '{names[0]}' of '{repo}' is not in the local hub cache ({constants.HF_HUB_CACHE}): download it "
        f"where there is network ({source.download_command(repo, names[0])}) and copy the cache here, or pass the "
        f"file's path"
    )


def optional_file(spec: str | None, source: CheckpointSource, filename: str) -> Path | None:
    """``filename`` next to the checkpoint ``spec`` (same directory or same cached hub repo), or None."""
    spec = spec or source.repo
    path = Path(spec).expanduser()
    if path.exists():
        candidate = (path if path.is_dir() else path.parent) / filename
        return candidate if candidate.is_file() else None
    hub = split_hub_spec(spec)
    return None if hub is None else _cached_hub_file(hub[0], filename)


def load_weights(path: Path, *, what: str) -> dict:
    """``torch.load(path, weights_only=True)`` on the CPU; anything beyond plain tensors and containers is refused."""
    try:
        weights = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - unreadable, truncated, or needs unpickling
        raise ReNegError(f"cannot load {what} '{path}' as plain weights (torch.load weights_only=True): "
                         f"{_one_line(error)[:300]}") from None
    if not isinstance(weights, Mapping):
        raise ReNegError(f"{what} '{path}' holds a {type(weights).__name__}, not a state dict")
    return dict(weights)


def load_module_weights(module: nn.Module, state_dict: Mapping[str, torch.Tensor], *, what: str) -> None:
    """``module.load_state_dict(state_dict, strict=True)``; a mismatch is a one-line :class:`ReNegError`."""
    expected = module.state_dict()
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    wrong_shape = [key for key in expected if key in state_dict and state_dict[key].shape != expected[key].shape]
    problems = [f"{label} {', '.join(keys[:KEYS_SHOWN])}{' ...' if len(keys) > KEYS_SHOWN else ''}"
                for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape))
                if keys]
    if problems:
        raise ReNegError(f"{what} does not fit the reward's architecture ({'; '.join(problems)}): "
                         f"pass the matching checkpoint or architecture")
    module.load_state_dict(state_dict, strict=True)
