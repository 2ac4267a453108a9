"""Prompts: files (one a line, JSON, TSV/CSV), ``--prompt``/``--prompts``, and the registry of prompt sets.

A prompt file is one prompt a line (.txt), a JSON list, or a TSV/CSV with a
Prompt column (:func:`load_prompts`). Prompt sets (benchmarks: HPSv2,
PartiPrompts, ImageReward's training prompts, DNP's sets, tiny) are registered
by name; nothing is downloaded. Each set names its files, where to get them
and where they go: ``<root>/<name>/FILE`` (or ``<root>/FILE``), where ``root``
is ``data_dir`` (``--data-dir``), else ``$RENEG_DATA``, else
``~/.cache/reneg/benchmarks``. A path instead of a name reads a prompts file:
a known set's file (``PartiPrompts.tsv``, ``refl_data.json``, ``anime.json``,
...) with that set's reader, any other with :func:`load_prompts`.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .errors import ReNegError, why_not_a_file
from .registry import Registry


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
        raise ReNegError(f"prompts file '{path}' {why_not_a_file(path)}: pass a .txt (one prompt a line), .json or "
                         ".tsv file")
    try:
        if path.suffix == ".json":
            prompts = _from_json(json.loads(path.read_text(encoding="utf-8")), path)
        elif path.suffix in (".tsv", ".csv"):
            prompts = _from_table(path, "\t" if path.suffix == ".tsv" else ",")
        else:
            prompts = [Prompt(line.strip()) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (UnicodeDecodeError, json.JSONDecodeError, csv.Error, RecursionError) as error:
        raise ReNegError(f"prompts file '{path}' is malformed ({error}): fix it or pass another file") from None
    prompts = [p for p in prompts if p.text.strip()]
    if not prompts:
        raise ReNegError(f"prompts file '{path}' holds no prompts: add at least one")
    return prompts


# -- prompt sets (benchmarks) ---------------------------------------------------------------------
logger = logging.getLogger(__name__)

#: The environment variable that sets the data root when no ``data_dir`` is given.
DATA_ENV = "RENEG_DATA"
DEFAULT_DATA_ROOT = "~/.cache/reneg/benchmarks"

#: ``reader(paths) -> prompts``: the benchmark's files that were found, in the order of ``files``.
Reader = Callable[[list[Path]], list[Prompt]]


@dataclass(frozen=True)
class Benchmark:
    """A registered benchmark: its files, where they come from, and the reader that turns them into prompts."""

    name: str
    files: tuple[str, ...]
    description: str
    source: str  # where to get the files; "{file}" is replaced by each file's name
    reader: Reader
    any_of: bool = False  # True: at least one of ``files`` suffices (sets that users curate)
    expected: int | None = None  # the published number of prompts; a different count is logged

    def source_of(self, file: str) -> str:
        return self.source.format(file=file)


#: The registered prompt sets (benchmarks), plugins' included once read.
PROMPT_SETS: Registry[Benchmark] = Registry("benchmark")


def register_benchmark(name: str, *, files: tuple[str, ...] | list[str], description: str, source: str,
                       any_of: bool = False, expected: int | None = None) -> Callable[[Reader], Reader]:
    """Decorator registering ``reader(paths) -> list[Prompt]`` as benchmark ``name``.

    Args:
        name: the name that ``load_benchmark`` and ``--benchmark`` take.
        files: the file names the benchmark needs, looked up in ``<root>/<name>/`` then ``<root>/``.
        description: one line for listings.
        source: where to get the files (a URL; ``{file}`` stands for each file's name).
        any_of: at least one of ``files`` suffices (otherwise all are needed).
        expected: the published prompt count; a file with another count is loaded with a warning.
    """

    return PROMPT_SETS.register(name, lambda reader: Benchmark(name, tuple(files), description, source, reader,
                                                                any_of, expected))


def available_benchmarks() -> dict[str, str]:
    """Registered benchmark names and their descriptions."""
    return PROMPT_SETS.descriptions()


def benchmark_spec(name: str) -> Benchmark:
    """The registered prompt set ``name``; an unknown name is a one-line ReNegError listing the choices."""
    return PROMPT_SETS[name]


def data_root(data_dir: str | Path | None = None) -> Path:
    """``data_dir``, else ``$RENEG_DATA``, else ``~/.cache/reneg/benchmarks``."""
    return Path(data_dir or os.environ.get(DATA_ENV) or DEFAULT_DATA_ROOT).expanduser()


def benchmark_files(name: str, *, data_dir: str | Path | None = None) -> list[Path]:
    """The benchmark's files found under the data root; a missing one raises a one-line :class:`ReNegError`."""
    spec, root = benchmark_spec(name), data_root(data_dir)
    found = {}
    for file in spec.files:
        for directory in (root / name, root):
            if (directory / file).is_file():
                found[file] = directory / file
                break
    missing = [file for file in spec.files if file not in found]
    if missing and (not spec.any_of or not found):
        needed = ("one of " if spec.any_of else "") + ", ".join(missing)
        them = "them" if len(missing) > 1 and not spec.any_of else "it"
        raise ReNegError(f"benchmark '{name}' needs {needed}, not found in {root / name}: get {them} from "
                         f"{spec.source_of(missing[0])} and put {them} in {root / name}/ "
                         f"(or pass --data-dir DIR or set {DATA_ENV}=DIR)")
    return list(found.values())


def load_benchmark(name_or_path: str | Path, *, data_dir: str | Path | None = None) -> list[Prompt]:
    """Prompts (with categories) of a registered benchmark, or of a prompts file given by path.

    Args:
        name_or_path: a registered name (see :func:`available_benchmarks`) or a prompts file.
        data_dir: the data root (default ``$RENEG_DATA``, else ``~/.cache/reneg/benchmarks``).
    """
    name = str(name_or_path)
    if name in PROMPT_SETS:
        spec = PROMPT_SETS[name]
        prompts = _checked(spec.reader(benchmark_files(name, data_dir=data_dir)), f"benchmark '{name}'")
        if spec.expected is not None and len(prompts) != spec.expected and not spec.any_of:
            logger.warning("benchmark '%s' has %d prompts where the published set has %d: check its files",
                           name, len(prompts), spec.expected)
        return prompts
    path = Path(name).expanduser()
    if path.is_file():
        spec = next((s for s in PROMPT_SETS.values() if path.name in s.files), None)
        return _checked(spec.reader([path]), f"prompts file '{path}'") if spec else load_prompts(path)
    if path.exists():
        raise ReNegError(f"'{path}' {why_not_a_file(path)}: pass a benchmark name ({', '.join(PROMPT_SETS)}) "
                         "or a prompts file, and --data-dir for where a benchmark's files are")
    if path.suffix or "/" in name or os.sep in name:
        raise ReNegError(f"prompts file '{path}' does not exist: pass a .txt (one prompt a line), .json or .tsv file")
    raise ReNegError(f"unknown benchmark '{name}': choose one of {', '.join(PROMPT_SETS)} "
                     "or pass a prompts file (.txt one a line, .json, .tsv, .csv)")


# -- readers of the published file formats ---------------------------------------------------------
def _checked(prompts: list[Prompt], what: str) -> list[Prompt]:
    prompts = [p for p in prompts if p.text.strip()]
    if not prompts:
        raise ReNegError(f"{what} holds no prompts: check its files")
    return prompts


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, csv.Error, RecursionError) as error:
        raise ReNegError(f"prompts file '{path}' is malformed ({error}): download it again or fix it") from None


def _json_prompt_list(path: Path, *, category: str, keys: tuple[str, ...] = ("prompt",)) -> list[Prompt]:
    """A JSON list whose entries are strings or objects holding the prompt under one of ``keys``."""
    data = _read_json(path)
    if not isinstance(data, list):
        raise ReNegError(f"prompts file '{path}' must hold a JSON list of prompts")
    prompts = []
    for index, item in enumerate(data):
        if isinstance(item, dict):
            item = next((item[k] for k in keys if isinstance(item.get(k), str)), None)
        if not isinstance(item, str):
            raise ReNegError(f"prompts file '{path}' entry {index} is neither a string nor an object with "
                             f"{' or '.join(repr(k) for k in keys)}: fix that entry")
        prompts.append(Prompt(item.strip(), category))
    return prompts


def _tsv_prompts(path: Path) -> list[Prompt]:
    """A tab-separated table with ``Prompt`` (and ``Category``) columns, quotes kept as text (PartiPrompts)."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    except (UnicodeDecodeError, csv.Error) as error:
        raise ReNegError(f"prompts file '{path}' is malformed ({error}): download it again") from None
    if not rows or "Prompt" not in rows[0]:
        raise ReNegError(f"prompts file '{path}' needs a tab-separated header with a 'Prompt' column "
                         "(as PartiPrompts.tsv: Prompt, Category, Challenge, Note)")
    bad = next((i + 2 for i, row in enumerate(rows) if row["Prompt"] is None or None in row), None)
    if bad is not None:
        raise ReNegError(f"prompts file '{path}' line {bad} does not have the header's columns: fix that line")
    return [Prompt(row["Prompt"].strip(), (row.get("Category") or "all").strip()) for row in rows]


def _lines_or_json(path: Path) -> list[Prompt]:
    """One prompt a line, or a JSON list of prompts; the category is the file's stem."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ReNegError(f"prompts file '{path}' is malformed ({error}): save it as UTF-8 text") from None
    if text.lstrip().startswith("["):
        return _json_prompt_list(path, category=path.stem, keys=("prompt", "text"))
    return [Prompt(line.strip(), path.stem) for line in text.splitlines() if line.strip()]


# -- built-in benchmarks ---------------------------------------------------------------------------
HPSV2_STYLES = ("anime", "concept-art", "paintings", "photo")


@register_benchmark("hpsv2", files=[f"{style}.json" for style in HPSV2_STYLES], expected=3200,
                    description="HPSv2 benchmark (Wu et al. 2023): 4 styles x 800 prompts, ReNeg Table 2",
                    source="https://huggingface.co/datasets/zhwang/HPDv2/resolve/main/benchmark/{file} "
                           "(dataset zhwang/HPDv2; see docs/gpu.md)")
def _hpsv2(paths: list[Path]) -> list[Prompt]:
    """Each style file is a JSON list of prompt strings (tgxs002/HPSv2 ``benchmark_prompts``); category = style."""
    return [p for path in paths for p in _json_prompt_list(path, category=path.stem)]


@register_benchmark("parti", files=["PartiPrompts.tsv"], expected=1632,
                    description="PartiPrompts (Yu et al. 2022): 1632 prompts in 12 categories, ReNeg Table 2",
                    source="https://raw.githubusercontent.com/google-research/parti/main/{file}")
def _parti(paths: list[Path]) -> list[Prompt]:
    """PartiPrompts.tsv: columns Prompt, Category, Challenge, Note; category = Category."""
    return [p for path in paths for p in _tsv_prompts(path)]


@register_benchmark("imagereward-train", files=["refl_data.json"], expected=10000,
                    description="ImageReward's ReFL training prompts (Xu et al. 2023): 10k prompts, ReNeg's "
                                "training set",
                    source="https://raw.githubusercontent.com/THUDM/ImageReward/main/data/{file}")
def _imagereward_train(paths: list[Path]) -> list[Prompt]:
    """``data/refl_data.json``: a JSON list of ``{"text": prompt, "image": id}`` (duplicates kept, as in ReFL)."""
    return [p for path in paths for p in _json_prompt_list(path, category="all", keys=("text", "prompt"))]


DNP_SETS = ("animals", "animals_objects", "objects", "human", "hand")


@register_benchmark("dnp", files=[f"{name}.txt" for name in DNP_SETS], any_of=True,
                    description="DNP's prompt sets (Desai & Vasconcelos 2024): A&E animals / animals_objects / "
                                "objects, H&H human / hand; any subset; one prompt a line or a JSON list",
                    source="the DNP paper, Sec. 4.1 and its supplement (no public file; write {file} yourself, "
                           "one prompt a line)")
def _dnp(paths: list[Path]) -> list[Prompt]:
    """Each present set file is one category (its stem): plain text one a line, or a JSON list."""
    return [p for path in paths for p in _lines_or_json(path)]


TINY_BENCHMARK = (
    Prompt("a red circle on a blue background", "one shape"),
    Prompt("a green square on a white background", "one shape"),
    Prompt("a yellow star on a black background", "one shape"),
    Prompt("a purple triangle on an orange background", "one shape"),
    Prompt("a red circle and a green square on a white background", "two shapes"),
    Prompt("a blue triangle above a yellow star on a black background", "two shapes"),
    Prompt("a small purple circle next to a large orange square", "two shapes"),
    Prompt("a white star inside a red circle on a gray background", "two shapes"),
)


@register_benchmark("tiny", files=[], description="8 shapes prompts in 2 categories, for tests and the tiny model",
                    source="built in")
def _tiny(paths: list[Path]) -> list[Prompt]:
    return list(TINY_BENCHMARK)


def gather_prompts(*, prompt: list[str] | None, prompts_file: str | None, fallback: list[str] | None = None,
                   what: str = "prompts") -> list[Prompt]:
    """Prompts from ``--prompt`` flags and/or ``--prompts FILE`` (any benchmark file format), else ``fallback``;
    none at all is an error."""
    if any(not p.strip() for p in prompt or []):
        raise ReNegError("--prompt is empty: give the prompt's text, e.g. --prompt 'a red circle'")
    gathered = [Prompt(p) for p in prompt or []]
    if prompts_file:
        gathered += load_benchmark(prompts_file)
    if not gathered and fallback:
        gathered = [Prompt(p) for p in fallback]
    if not gathered:
        raise ReNegError(f"no {what} given: pass --prompt TEXT or --prompts FILE")
    return gathered
