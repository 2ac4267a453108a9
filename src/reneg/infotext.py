"""What an image reneg writes says about itself: PNG text chunks, as A1111 users expect.

Two chunks: ``parameters`` (A1111's infotext: the prompt, then ``Negative prompt:``, then one line of
``Key: value`` pairs, which hosts and image viewers show) and ``reneg`` (JSON: everything that made the image,
down to its place in its batch, so that ``reneg generate --from-png IMAGE`` makes it again bit for bit: the
x_T of earlier batches are drawn and dropped, the image's own batch is generated whole, since a UNet's float
results depend on the batch they run in).
"""

from __future__ import annotations

import json
from pathlib import Path

from .errors import ReNegError, why_not_a_file
from .identity import path_identity

#: The PNG text chunk holding the JSON record, and its format version.
CHUNK, VERSION = "reneg", 1
#: What a record must hold to be reproduced.
KEYS = ("model", "method", "method_is_flag_text", "seed", "steps", "guidance_scale", "resolution", "precision",
        "batch_size", "batch_start", "batch_prompts", "offset", "files")


def files_of(spec: str) -> dict[str, str]:
    """The files and folders a method spec names (``embedding=FILE``, ``npo=DIR,lora=DIR``) with their content
    identities: an image is reproduced only from the same files."""
    found = {}
    for piece in spec.replace(",", "=").split("="):
        path = Path(piece.rsplit("@", 1)[0]) if piece else None
        if path is not None and (path.is_file() or path.is_dir()):
            found[str(path)] = path_identity(path)
    return found


def parameters_text(prompt: str, negative_text: str | None, pairs: dict) -> str:
    """A1111's infotext: the prompt, ``Negative prompt: ...`` (text methods), then ``Key: value, ...`` (a value
    holding a comma quoted, as A1111 writes it)."""
    lines = [prompt] + ([f"Negative prompt: {negative_text}"] if negative_text else [])
    return "\n".join(lines + [", ".join(f"{key}: {json.dumps(value) if ',' in str(value) else value}"
                                        for key, value in pairs.items())])


def parameters_line(record: dict, *, negative_text: str | None, scheduler: str) -> str:
    """A1111's infotext of one image of ``reneg generate`` (its record)."""
    pairs = {"Steps": record["steps"], "Sampler": scheduler, "CFG scale": record["guidance_scale"],
             "Seed": record["seed"], "Size": f"{record['resolution']}x{record['resolution']}",
             "Model": record["model"], "ReNeg method": record["method"], "Version": f"reneg {record['version']}"}
    return parameters_text(record["batch_prompts"][record["offset"]], negative_text, pairs)


def chunks(record: dict, *, negative_text: str | None, scheduler: str) -> dict[str, str]:
    """The PNG text chunks of one image: ``parameters`` and ``reneg``."""
    return {"parameters": parameters_line(record, negative_text=negative_text, scheduler=scheduler),
            CHUNK: json.dumps({"format": CHUNK, "infotext_version": VERSION, **record}, sort_keys=True)}


def read(path: str | Path) -> dict:
    """The ``reneg`` record of a PNG reneg wrote, or a one-line :class:`ReNegError` saying why there is none."""
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise ReNegError(f"--from-png '{path}' {why_not_a_file(path)}: pass a PNG that `reneg generate` wrote")
    try:
        with Image.open(path) as image:
            text = dict(getattr(image, "text", {}) or {})
    except (OSError, ValueError, SyntaxError) as error:
        raise ReNegError(f"--from-png '{path}' is not a readable image ({error}): pass a PNG that `reneg generate` "
                         "wrote") from None
    if CHUNK not in text:
        raise ReNegError(f"--from-png '{path}' carries no reneg record (a PNG of another program, or one whose "
                         "text chunks were stripped): pass a PNG that `reneg generate` wrote")
    try:
        record = json.loads(text[CHUNK])
    except ValueError:
        record = None
    if not isinstance(record, dict) or record.get("format") != CHUNK or any(key not in record for key in KEYS):
        raise ReNegError(f"--from-png '{path}': its reneg record is damaged or from another version: generate it "
                         "again with its flags")
    if record.get("infotext_version") != VERSION:
        raise ReNegError(f"--from-png '{path}' has record version {record.get('infotext_version')}, this reneg "
                         f"reads {VERSION}: use the reneg that made it")
    for name, identity in record["files"].items():
        if not Path(name).exists() or path_identity(name) != identity:
            raise ReNegError(f"--from-png '{path}': the file {name} it was made with is missing or changed "
                             f"(it was {identity}): restore it to reproduce the image")
    return record
