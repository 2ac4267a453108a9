"""What every exported layout shares: the source embedding seen per family, the safe tensor file, the staging folder.

**Never a textual inversion.** Each loader of textual inversions reads a safetensors file's tensors in the order
``safetensors.torch.load_file`` gives them (sorted by name) and trusts a file with one tensor, or its first one:

- diffusers ``TextualInversionLoaderMixin._retrieve_tokens_and_embeddings``: a file with exactly one tensor is a
  ``{token: embedding}`` concept, so a canonical SD1.x file becomes the 77-vector token ``negative_embedding``;
- A1111/Forge ``create_embedding_from_data``: one tensor, registered when its width is the text encoder's;
- ComfyUI ``comfy/sd1_clip.py`` ``load_embed`` (prompt text ``embedding:NAME``): the first tensor, spliced into the
  prompt's token vectors when its last dimension is the tokenizer's embedding width;
- InvokeAI ``TI_Config_Base._get_base_or_raise``: the first tensor's ``shape[0]`` is taken as the token width.

So every file written here carries :data:`MARKER_KEY`, one fp32 value that sorts before every other key: diffusers and
A1111/Forge refuse a file of two or more tensors, ComfyUI ignores a first tensor of width 1 ("shape mismatch"), and
InvokeAI finds no model base of token width 1. All tensors are fp32, so the file's data order is the key order too.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import __version__
from ..embedding import (EMBEDDING_KEY, FINGERPRINT_KEY, FORMAT, MARKER_KEY, POOLED_KEY, VERSION, NegativeEmbedding,
                         marker)
from ..errors import ReNegError
from ..io import save_tensors

#: Token length of the CLIP part (SD1.x/2.x, SDXL, and the CLIP rows of SD3's joint sequence).
CLIP_LENGTH = 77
#: The manifest every export folder holds; ``--overwrite`` replaces only folders that have one.
MANIFEST = "reneg-export.json"
#: Families the host layouts know, by reneg's family names (``reneg.families``).
HOST_FAMILIES = ("sd", "sdxl", "sd3")
FAMILY_NAMES = {"sd": "SD1.x/SD2.x", "sdxl": "SDXL", "sd3": "SD3"}


@dataclass(frozen=True)
class Source:
    """The embedding to export, with where it came from and its family (``sd``, ``sdxl``, ``sd3`` or another)."""

    embedding: NegativeEmbedding
    path: Path
    family: str
    name: str

    @property
    def metadata(self) -> dict[str, str]:
        return self.embedding.metadata

    @functools.cached_property
    def sha256(self) -> str:
        return file_sha256(self.path)

    def sd3_clip_l_width(self) -> int:
        """Width of SD3's CLIP-L part (where CLIP-G starts in the joint CLIP rows), from the fingerprint or SD3's
        published sizes; ReNegError when neither tells."""
        widths = fingerprint_widths(self.metadata.get(FINGERPRINT_KEY, ""))
        if len(widths) == 3:
            return widths[0]
        if self.embedding.shape[1] == 4096 and self.embedding.pooled is not None and len(self.embedding.pooled) == 2048:
            return 768
        raise ReNegError(f"{self.path}: cannot tell where CLIP-L ends in this SD3 embedding (its metadata has no "
                         "text_encoder_fingerprint); export it from a file written by `reneg train`")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fingerprint_widths(fingerprint: str) -> list[int]:
    """The hidden sizes ``d<N>`` of each text encoder named in a fingerprint (``reneg.core.fingerprint``), in order."""
    widths = []
    for part in fingerprint.split("|"):
        match = re.search(r":d(\d+):", part)
        if match:
            widths.append(int(match.group(1)))
    return widths


def family_of(embedding: NegativeEmbedding) -> str:
    """The family the file names (``family`` metadata of `reneg train`), else the one its shapes imply."""
    named = embedding.metadata.get("family", "").strip()
    if named:
        return named
    if embedding.pooled is None:
        return "sd"
    return "sdxl" if embedding.shape[0] == CLIP_LENGTH else "sd3"


def check_family(source: Source) -> None:
    """ReNegError unless the file's pooled part agrees with its family (SDXL and SD3 have one, SD1.x/2.x none)."""
    has_pooled = source.embedding.pooled is not None
    if source.family == "sd" and has_pooled:
        raise ReNegError(f"{source.path} says family 'sd' but holds a pooled embedding: it is damaged; "
                         "export the file `reneg train` wrote")
    if source.family in ("sdxl", "sd3") and not has_pooled:
        raise ReNegError(f"{source.path} is a {FAMILY_NAMES[source.family]} embedding without its pooled part "
                         f"('{POOLED_KEY}'); re-export it from `reneg train`")
    if source.family == "sd3" and source.embedding.shape[0] <= CLIP_LENGTH:
        raise ReNegError(f"{source.path}: an SD3 embedding holds {CLIP_LENGTH} CLIP rows then the T5 rows, but "
                         f"this one has {source.embedding.shape[0]} rows; export the file `reneg train` wrote")


def require_family(source: Source, host: str, families) -> None:
    """ReNegError naming the host and what it takes when the file's family is not among ``families`` (None: all)."""
    if families is not None and source.family not in families:
        names = ", ".join(FAMILY_NAMES.get(f, f) for f in families)
        raise ReNegError(f"{source.path} is a '{source.family}' embedding; --to {host} takes {names} embeddings: "
                         "use --to diffusers for this one")


# ---------------------------------------------------------------- files


def embedding_tensors(source: Source) -> dict[str, torch.Tensor]:
    """The canonical tensors (``negative_embedding`` (L, D), ``negative_pooled_embedding`` (P,)) and the marker."""
    tensors = {MARKER_KEY: marker(), EMBEDDING_KEY: source.embedding.tensor}
    if source.embedding.pooled is not None:
        tensors[POOLED_KEY] = source.embedding.pooled
    return tensors


def export_metadata(source: Source, **extra: str) -> dict[str, str]:
    """The source's metadata (format, version, fingerprint, base model, training settings) and what the export adds."""
    return {"format": FORMAT, "version": VERSION, **source.metadata, "family": source.family,
            "reneg_source_sha256": source.sha256,
            **{key: str(value) for key, value in extra.items()}}


def write_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> Path:
    """A safetensors file of fp32 contiguous CPU tensors; the marker must be among them."""
    if MARKER_KEY not in tensors or min(tensors) != MARKER_KEY:
        raise ValueError(f"every exported tensor file carries '{MARKER_KEY}', first in key order")
    tensors = {key: value.detach().to("cpu", torch.float32).contiguous() for key, value in tensors.items()}
    return save_tensors(tensors, path, metadata)


def write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
    return path


def write_json(path: Path, data) -> Path:
    return write_text(path, json.dumps(data, indent=2))


def write_manifest(folder: Path, *, host: str, source: Path, source_sha256: str, family: str) -> Path:
    """:data:`MANIFEST`: the host, the source and its sha256, the family, every file written, reneg's version."""
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    return write_json(folder / MANIFEST, {"host": host, "source": str(source.resolve()), "source_sha256": source_sha256,
                                          "family": family, "files": files, "reneg_version": __version__})


def safe_name(stem: str) -> str:
    """A file stem every host accepts: letters, digits, ``-``, ``_`` and ``.``; other characters become ``_``."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or "negative"
    return name


# ---------------------------------------------------------------- the output folder


def check_out(out: Path, *, overwrite: bool) -> None:
    """ReNegError unless ``out`` is absent, empty, or (with ``overwrite``) an earlier export (it has a manifest)."""
    if not out.exists():
        return
    if not out.is_dir():
        raise ReNegError(f"--out '{out}' is a file: pass a folder path")
    if not any(out.iterdir()):
        return
    if not overwrite:
        raise ReNegError(f"--out '{out}' is not empty: pass a new folder, or --overwrite to replace an earlier export")
    if not (out / MANIFEST).is_file():
        raise ReNegError(f"--out '{out}' is not empty and holds no {MANIFEST} (it is not an earlier export): "
                         "pass a new folder")


@contextlib.contextmanager
def staged(out: Path, *, overwrite: bool):
    """Yield a temporary folder beside ``out``; on success it becomes ``out`` (an earlier export is replaced), on any
    error it is removed and ``out`` is left as it was."""
    check_out(out, overwrite=overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        yield stage
        os.chmod(stage, 0o777 & ~_umask())  # mkdtemp makes 0700; a finished folder is readable like any other
        _replace(stage, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _replace(stage: Path, out: Path) -> None:
    """Move ``stage`` to ``out``; an existing ``out`` (empty, or an export) is moved aside first and then removed."""
    if not out.exists():
        os.replace(stage, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
    os.replace(out, old / "previous")
    try:
        os.replace(stage, out)
    except OSError:
        os.replace(old / "previous", out)
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
