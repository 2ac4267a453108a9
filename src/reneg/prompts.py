"""Prompt files: one prompt a line (.txt), a JSON list, or a TSV/CSV with a Prompt column."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from .errors import ReNegError


@dataclass(frozen=True)
class Prompt:
    text: str
    category: str = "all"


def _from_json(data, path: Path) -> list[Prompt]:
    if isinstance(data, dict):  # {"category": [prompts]} as in HPSv2's per-style files merged
        if not all(isinstance(items, list) and all(isinstance(p, str) for p in items) for items in data.values()):
            raise ReNegError(f"prompts file '{path}' is a table whose values are not all lists of strings: "
                             'write {"category": ["a prompt", ...]} or a JSON list of prompts')
        return [Prompt(p, cat) for cat, items in data.items() for p in items]
    if not isinstance(data, list):
        raise ReNegError(f"prompts file '{path}' must hold a JSON list of prompts or a {{category: [prompts]}} table")
    prompts = []
    for item in data:
        if isinstance(item, str):
            prompts.append(Prompt(item))
        elif (isinstance(item, dict) and isinstance(item.get("prompt"), str)
              and isinstance(item.get("category", "all"), str)):
            prompts.append(Prompt(item["prompt"], item.get("category", "all")))
        else:
            raise ReNegError(f"prompts file '{path}' has an entry that is neither a string nor "
                             '{"prompt": ..., "category": ...}: fix that entry')
    return prompts


def _from_table(path: Path, delimiter: str) -> list[Prompt]:
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL  # TSV prompts keep their quotes
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter=delimiter, quoting=quoting))
    if not rows or "Prompt" not in rows[0]:
        raise ReNegError(f"prompts file '{path}' needs a header row with a 'Prompt' column (as PartiPrompts.tsv)")
    return [Prompt(row["Prompt"] or "", row.get("Category") or "all") for row in rows]  # short rows: None


def load_prompts(path: str | Path) -> list[Prompt]:
    """Prompts (with categories where the file has them) from a .txt, .json, .tsv or .csv file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ReNegError(f"prompts file '{path}' does not exist: pass a .txt (one prompt a line), .json or .tsv file")
    try:
        if path.suffix == ".json":
            prompts = _from_json(json.loads(path.read_text(encoding="utf-8")), path)
        elif path.suffix in (".tsv", ".csv"):
            prompts = _from_table(path, "\t" if path.suffix == ".tsv" else ",")
        else:
            prompts = [Prompt(line.strip()) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ReNegError(f"prompts file '{path}' is malformed ({error}): fix it or pass another file") from None
    prompts = [p for p in prompts if p.text.strip()]
    if not prompts:
        raise ReNegError(f"prompts file '{path}' holds no prompts: add at least one")
    return prompts
