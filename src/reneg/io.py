"""Atomic file output (a file appears whole under its name, or not at all), images as PNGs, videos as frames + GIF."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

import torch
from PIL import Image


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()


@contextlib.contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, _FILE_MODE)  # mkstemp makes 0600; a finished output is readable like any other file
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def sort_safetensors_metadata(path: str | Path) -> None:
    """Rewrite a safetensors file's header with its string metadata in sorted key order, in place.

    safetensors writes ``__metadata__`` in hash order, which changes from process to process: two identical
    runs would write byte-different files. Tensors and their data are untouched; the header is padded with
    spaces to 8 bytes, as safetensors pads it."""
    path = Path(path)
    with open(path, "rb") as handle:
        length = int.from_bytes(handle.read(8), "little")
        header = json.loads(handle.read(length))
        data = handle.read()
    if "__metadata__" in header:
        header = {"__metadata__": dict(sorted(header["__metadata__"].items())),
                  **{k: v for k, v in header.items() if k != "__metadata__"}}
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as handle:
        handle.write(len(text).to_bytes(8, "little") + text + data)


@contextlib.contextmanager
def exclusive(path: str | Path, *, flag: str = "--out"):
    """Hold an advisory lock on ``path`` for the block (released when the process ends, even killed); a second
    reneg process writing the same path is refused in one line instead of interleaving its files. The lock file
    lives in the temp folder, named by the path's hash: nothing is written beside the output.

    The processes the holder starts (world-build's evaluators, a launcher's workers) are part of its run: the
    held keys travel to them in ``RENEG_HELD_LOCKS``, and their own lock on the same path is a no-op."""
    import fcntl
    import hashlib

    from .errors import ReNegError

    key = hashlib.sha256(str(Path(path).expanduser().absolute()).encode()).hexdigest()[:24]
    held = os.environ.get(HELD_LOCKS, "").split(",")
    if key in held:
        yield  # a child of the process holding it
        return
    folder = Path(tempfile.gettempdir()) / f"reneg-locks-{os.getuid()}"
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        handle = open(folder / f"{key}.lock", "a+")
    except OSError:
        yield  # no temp folder to lock in: run unlocked
        return
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise ReNegError(f"{flag} {path} is being written by another reneg process: wait for it to end, or pick "
                         f"another {flag}") from None
    previous = os.environ.get(HELD_LOCKS)
    os.environ[HELD_LOCKS] = ",".join([k for k in held if k] + [key])
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(HELD_LOCKS, None)
        else:
            os.environ[HELD_LOCKS] = previous
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


#: The environment variable naming the locks this process (or its parent) holds.
HELD_LOCKS = "RENEG_HELD_LOCKS"


def write_json(path: str | Path, data) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """(B, 3, H, W) in [0, 1] -> PIL images, rounded as diffusers' ``numpy_to_pil``."""
    array = (images.detach().float().cpu().permute(0, 2, 3, 1).numpy() * 255).round().astype("uint8")
    return [Image.fromarray(a) for a in array]


def save_png(image: Image.Image, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


#: Milliseconds each frame of the animated GIF shows (8 frames per second, AnimateDiff's usual export).
GIF_FRAME_MS = 125


def save_output(image: torch.Tensor, out: str | Path, index: int) -> dict:
    """Save one output under ``out``: an image as ``NNNNN.png``; a video (F, 3, H, W) as its frames
    ``NNNNN/FFFFF.png`` and the animated ``NNNNN.gif``. Returns its record (``file``, and ``frames``)."""
    out, stem = Path(out), f"{index:05d}"
    if image.dim() == 3:
        save_png(to_pil(image[None])[0], out / f"{stem}.png")
        return {"file": f"{stem}.png"}
    names = save_video(to_pil(image), out, stem)
    return {"file": f"{stem}.gif", "frames": names}


def frame_names(stem: str, count: int) -> list[str]:
    """The frames' file names of the video ``stem``: ``stem/00000.png``, ``stem/00001.png``, ..."""
    return [f"{stem}/{number:05d}.png" for number in range(count)]


def save_video(frames: list[Image.Image], out: str | Path, stem: str) -> list[str]:
    """Save the frames as ``out/stem/FFFFF.png``, then the animated ``out/stem.gif`` (last: a video whose GIF
    exists is whole). Returns the frames' names relative to ``out``."""
    out, names = Path(out), frame_names(stem, len(frames))
    for frame, name in zip(frames, names):
        save_png(frame, out / name)
    with atomic_path(out / f"{stem}.gif") as tmp:
        frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:], duration=GIF_FRAME_MS, loop=0)
    return names
