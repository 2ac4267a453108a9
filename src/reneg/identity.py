"""What a model *is*, as a short string: saved images and scores stay valid only while it is unchanged.

A name (``runwayml/stable-diffusion-v1-5``, ``~/ckpt/hps.pt``) says where a
model was found, not what it holds: a checkpoint replaced at the same path or
hub id would otherwise be scored from stale files. The identity of a file or
directory is a sha256 over its files' (relative path, size, content digest):

* a file of at most :data:`FULL_HASH_LIMIT` bytes: the sha256 of its bytes;
* a larger file (multi-GB UNets): sha256 of its size, ``mtime_ns`` and its
  first and last :data:`EDGE_BYTES` (a full hash of a few GB would cost tens of
  seconds per run; a file rewritten in place changes its mtime, and a
  different checkpoint its header or tail). Touching such a file without
  changing it therefore changes its identity too: a safe miss;
* a file in the Hugging Face hub cache (a symlink into ``blobs/``): the blob's
  name, which *is* the hash of its content (git sha1 or LFS sha256).

Digests are cached per process by (path, size, mtime_ns, inode), so a file is
read once per process unless one of those changes.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from . import __version__

#: Files up to this size are hashed whole (sha256 of the bytes).
FULL_HASH_LIMIT = 64 << 20
#: Bytes read from each end of a larger file.
EDGE_BYTES = 1 << 20
#: How many hex digits an identity keeps.
DIGEST_CHARS = 16

_BLOB_NAME = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_DIGESTS: dict[tuple, str] = {}


def _hub_blob(path: Path) -> str | None:
    """The content hash a hub-cache symlink points at (``.../blobs/<hash>``), else None."""
    if not path.is_symlink():
        return None
    target = path.resolve()
    if target.parent.name == "blobs" and _BLOB_NAME.fullmatch(target.name):
        return "blob:" + target.name
    return None


def file_digest(path: str | Path) -> str:
    """Content digest of one file (see the module docstring for the rule); cached per process."""
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino)
    if key not in _DIGESTS:
        _DIGESTS[key] = _hub_blob(path) or _read_digest(path, stat)
    return _DIGESTS[key]


def _read_digest(path: Path, stat: os.stat_result) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        if stat.st_size <= FULL_HASH_LIMIT:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
            return "sha256:" + digest.hexdigest()
        digest.update(f"{stat.st_size}:{stat.st_mtime_ns}:".encode())
        digest.update(handle.read(EDGE_BYTES))
        handle.seek(stat.st_size - EDGE_BYTES)
        digest.update(handle.read(EDGE_BYTES))
    return "edges:" + digest.hexdigest()


def _files(directory: Path) -> list[Path]:
    """The regular files under ``directory`` (following symlinks), hidden ones (``.cache/``, ``.git``) left out."""
    files = []
    for root, folders, names in os.walk(directory, followlinks=True):
        folders[:] = sorted(folder for folder in folders if not folder.startswith("."))
        files += [Path(root) / name for name in sorted(names) if not name.startswith(".")]
    return [path for path in files if path.is_file()]


def path_identity(path: str | Path) -> str:
    """``sha256:<16 hex>`` over a file's or a directory's files (relative path, size, content digest)."""
    path = Path(path).expanduser()
    files = [path] if path.is_file() else _files(path)
    digest = hashlib.sha256()
    for file in files:
        relative = file.name if file == path else file.relative_to(path).as_posix()
        digest.update(f"{relative}\0{file.stat().st_size}\0{file_digest(file)}\n".encode())
    return "sha256:" + digest.hexdigest()[:DIGEST_CHARS]


def model_identity(model) -> str:
    """The identity of a :class:`~reneg.models.loading.LoadedModel`: what decides its images besides the settings.

    A model loaded from a directory (a path, a cached hub snapshot, a built-in
    shipped as files) is :func:`path_identity` of that directory, as diffusers
    recorded it (``pipe.name_or_path``). A model built in code (``tiny``) is
    its name and the reneg version that builds it.
    """
    directory = getattr(model.pipe, "name_or_path", None)
    if directory and Path(directory).is_dir():
        return f"{Path(directory).resolve()}@{path_identity(directory)}"
    return f"builtin:{model.name}@reneg-{__version__}"


def reference_identity(reference: str | None) -> str:
    """The identity of a reward model given as a path, a hub id (``org/name`` or ``org/name/file``) or None.

    A path or a cached hub snapshot is :func:`path_identity` of what it names;
    None (a reward without a model) is ``none``; a hub id missing from the cache
    keeps its name (building the reward then fails with its own message).
    """
    if reference is None:
        return "none"
    path = Path(reference).expanduser()
    if path.exists():
        return f"{path.resolve()}@{path_identity(path)}"
    local = _cached_hub_path(reference)
    return f"{local}@{path_identity(local)}" if local is not None else f"unresolved:{reference}"


def _cached_hub_path(reference: str) -> Path | None:
    """The cached snapshot (or the file within it) of ``org/name[/file]``, else None; never downloads."""
    parts = reference.split("/")
    if reference.startswith((".", "/", "~")) or len(parts) < 2 or not all(parts):
        return None
    from huggingface_hub import snapshot_download

    try:
        snapshot = Path(snapshot_download("/".join(parts[:2]), local_files_only=True))
    except Exception:  # noqa: BLE001 - any failure means "not in the local cache"
        return None
    local = snapshot.joinpath(*parts[2:])
    return local if local.exists() else None


def file_identity(path: str | Path) -> str:
    """``sha256:<16 hex>`` of a file's content: saved images stay valid only while it is unchanged.

    A ``.safetensors`` file is keyed by its tensors (name, dtype, shape and bytes, by name) and its metadata,
    not by its bytes: the same tensors written in another order or with the metadata in another order (another
    tool, an older reneg) are the same embedding. Any other file by its bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        if not _safetensors_content(handle, digest):
            handle.seek(0)
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return "sha256:" + digest.hexdigest()[:16]


def _safetensors_content(handle, digest) -> bool:
    """Feed a safetensors file's canonical content to ``digest``; False (nothing fed) if it is not one."""
    import json
    import struct

    head = handle.read(8)
    if len(head) != 8:
        return False
    (length,) = struct.unpack("<Q", head)
    if not 2 <= length <= 100 * 2**20:
        return False
    try:
        header = json.loads(handle.read(length))
        tensors = {name: (entry["dtype"], list(entry["shape"]), [int(o) for o in entry["data_offsets"]])
                   for name, entry in header.items() if name != "__metadata__"}
    except (ValueError, TypeError, KeyError, AttributeError):
        return False
    digest.update(b"safetensors\0" + json.dumps(header.get("__metadata__") or {}, sort_keys=True).encode())
    for name in sorted(tensors):
        dtype, shape, (start, end) = tensors[name]
        digest.update(json.dumps([name, dtype, shape]).encode())
        handle.seek(8 + length + start)
        remaining = end - start
        while remaining > 0:
            block = handle.read(min(remaining, 1 << 20))
            if not block:
                break
            digest.update(block)
            remaining -= len(block)
    return True
