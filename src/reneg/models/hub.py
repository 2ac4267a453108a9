"""Resolve a model argument (local path or hub id) without ever downloading."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ReNegError


def is_local(path_or_id: str) -> bool:
    return Path(path_or_id).expanduser().exists()


def resolve(path_or_id: str, *, what: str = "model") -> str:
    """Return a local directory for ``path_or_id``: the path itself, or the cached hub snapshot.

    Hub ids are looked up in the local Hugging Face cache only (never
    downloaded); a miss raises :class:`ReNegError` that names the id and says
    how to make it available.
    """
    path = Path(path_or_id).expanduser()
    if path.exists():
        return str(path)
    if path_or_id.startswith((".", "/", "~")) or path_or_id.count("/") != 1:
        raise ReNegError(f"{what} '{path_or_id}' does not exist: pass an existing path or a hub id such as 'org/name'")
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(path_or_id, local_files_only=True)
    except Exception:  # noqa: BLE001 - any miss means "not in the local cache"
        cache = os.environ.get("HF_HUB_CACHE") or os.environ.get("HF_HOME") or "~/.cache/huggingface"
        raise ReNegError(
            f"{what} '{path_or_id}' is not in the local hub cache ({cache}): download it where there is network "
            f"(`hf download {path_or_id}`) and copy the cache here, or pass a local directory"
        ) from None
