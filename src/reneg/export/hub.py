"""``--to diffusers``: a Hub-style folder, ``negative_embedding.safetensors`` and a model card (``README.md``).

The folder uploads as it is (``hf upload ORG/NAME DIR``) and reads back with
``NegativeEmbedding.from_pretrained(DIR_OR_ID)`` (hub ids from the local cache only). The weights file is the
canonical reneg file plus the marker (:mod:`reneg.export.layout`): diffusers' ``load_textual_inversion`` refuses it
(a folder has no ``learned_embeds.safetensors``; the file itself has more than one tensor).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..embedding import FINGERPRINT_KEY, HUB_FILENAME
from ..errors import ReNegError
from .layout import FAMILY_NAMES, Source, embedding_tensors, export_metadata, write_tensors, write_text

FAMILIES = None  # every family: the folder holds the canonical tensors
#: Metadata that the card shows in its own places, not in the recipe table.
NOT_RECIPE = {"format", "version", "family", "base_model", "reward", FINGERPRINT_KEY, "reneg_source_sha256"}
TAGS = {"sd": "stable-diffusion", "sdxl": "stable-diffusion-xl", "sd3": "stable-diffusion-3"}
PIPELINES = {"sd": "StableDiffusionPipeline", "sdxl": "StableDiffusionXLPipeline", "sd3": "StableDiffusion3Pipeline"}


def read_results(path: str) -> dict:
    """A ``reneg eval`` results.json (it has a ``methods`` table), or ReNegError."""
    try:
        data = json.loads(Path(path).expanduser().read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReNegError(f"--results '{path}' does not exist: pass the results.json that `reneg eval` wrote") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ReNegError(f"--results '{path}' is not a readable JSON file ({type(error).__name__}): pass the "
                         "results.json that `reneg eval` wrote") from None
    methods = data.get("methods") if isinstance(data, dict) else None
    if not isinstance(methods, dict) or not all(isinstance(m, dict) and isinstance(m.get("mean"), dict)
                                                for m in methods.values()):
        raise ReNegError(f"--results '{path}' has no 'methods' table of means: pass the results.json of `reneg eval`")
    return data


def write(source: Source, folder: Path, *, results: dict | None = None) -> None:
    write_tensors(folder / HUB_FILENAME, embedding_tensors(source), export_metadata(source))
    write_text(folder / "README.md", model_card(source, results))


# ---------------------------------------------------------------- the model card


def model_card(source: Source, results: dict | None) -> str:
    """YAML front matter, what the file is, what it was learned for and how, the measured table, usage."""
    sections = [front_matter(source), f"# {source.name}: a learned negative embedding (ReNeg)\n", about(source),
                learned_for(source), recipe(source), measured(results), usage(source), files(source)]
    return "\n".join(section for section in sections if section)


def front_matter(source: Source) -> str:
    lines = ["---", "library_name: reneg"]
    base = source.metadata.get("base_model", "")
    if is_hub_id(base):
        lines.append(f"base_model: {json.dumps(base)}")
    tags = ["reneg", "negative-embedding", "text-to-image", "diffusers", TAGS.get(source.family, source.family)]
    lines += ["tags:", *(f"- {json.dumps(tag)}" for tag in tags), "---", ""]
    return "\n".join(lines)


def is_hub_id(name: str) -> bool:
    """``org/name``, not a local path."""
    return name.count("/") == 1 and not name.startswith((".", "/", "~"))


def about(source: Source) -> str:
    length, width = source.embedding.shape
    pooled = "" if source.embedding.pooled is None else f" and a pooled part ({len(source.embedding.pooled)},)"
    return (f"A negative embedding learned with ReNeg (learned negative embeddings with reward guidance): the text "
            f"encoder's *output* for an ideal negative prompt, shape ({length}, {width}){pooled}, for "
            f"{FAMILY_NAMES.get(source.family, source.family)}. It replaces the encoded negative prompt "
            "(diffusers' `negative_prompt_embeds`); it is **not** a textual inversion and "
            "`load_textual_inversion` refuses it.\n")


def table(rows: list[tuple[str, str]], header: tuple[str, str]) -> str:
    lines = [f"| {header[0]} | {header[1]} |", "| --- | --- |"]
    lines += [f"| {key} | {str(value).replace('|', chr(92) + '|')} |" for key, value in rows]
    return "\n".join(lines) + "\n"


def learned_for(source: Source) -> str:
    metadata = source.metadata
    rows = [("base model", f"`{metadata.get('base_model', 'not recorded')}`"),
            ("family", FAMILY_NAMES.get(source.family, source.family)),
            ("text encoder fingerprint", f"`{metadata.get(FINGERPRINT_KEY, 'not recorded')}`"),
            ("reward", f"`{metadata.get('reward', 'not recorded')}`")]
    return "## Learned for\n\n" + table(rows, ("", "")) + (
        "\nApplying it to a pipeline whose text encoder has another fingerprint fails (reneg checks it).\n")


def recipe(source: Source) -> str:
    rows = [(key, f"`{value}`") for key, value in sorted(source.metadata.items()) if key not in NOT_RECIPE]
    return "## Recipe\n\n" + (table(rows, ("setting", "value")) if rows else "The file records no training "
                                                                                "settings.\n")


def measured(results: dict | None) -> str:
    """The means per method and metric of a ``reneg eval`` results.json, or nothing."""
    if not results:
        return ""
    methods = results["methods"]
    metrics = sorted({metric for method in methods.values() for metric in method["mean"]})
    lines = ["## Measured", "", f"`reneg eval` on benchmark `{results.get('benchmark', '?')}`, "
             f"{results.get('num_prompts', '?')} prompts, seed {results.get('seed', '?')} (means):", "",
             "| method | " + " | ".join(metrics) + " |", "| --- |" + " --- |" * len(metrics)]
    for name, method in methods.items():
        values = [_format(method["mean"].get(metric)) for metric in metrics]
        lines.append(f"| `{name}` | " + " | ".join(values) + " |")
    return "\n".join(lines) + "\n"


def _format(value) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "–"


def load_snippet(base: str, family: str, names: str) -> str:
    """A model card's lines that import ``names`` from reneg and load ``base``: by diffusers for a hub id or a
    path, by reneg for one of its built-in models (the shapes world, tiny models)."""
    pipeline = PIPELINES.get(family, "DiffusionPipeline")
    if is_hub_id(base) or "/" in base:
        return (f'from diffusers import {pipeline}\nfrom reneg import {names}\n\n'
                f'pipe = {pipeline}.from_pretrained("{base}")')
    return f'from reneg import {names}\nfrom reneg.models import load_model\n\npipe = load_model("{base}").pipe'


def usage(source: Source) -> str:
    pooled = ",\n             negative_pooled_prompt_embeds=negative.expand_pooled(len(prompts))" if (
        source.embedding.pooled is not None) else ""
    load = load_snippet(source.metadata.get("base_model", "BASE_MODEL"), source.family, "NegativeEmbedding")
    return f"""## Usage

```python
{load}
negative = NegativeEmbedding.from_pretrained("THIS_REPO_OR_FOLDER").for_pipeline(pipe)  # checks the text encoder
prompts = ["a photo of a cat"]
images = pipe(prompts, negative_prompt_embeds=negative.expand(len(prompts)){pooled}).images
```

Without reneg: `safetensors.torch.load_file("{HUB_FILENAME}")["negative_embedding"][None]` is the
`negative_prompt_embeds` of one prompt{" (and `negative_pooled_embedding` the pooled part)" if pooled else ""}.
With reneg's command line: `reneg generate --negative {HUB_FILENAME} --prompt "..."`.
"""


def files(source: Source) -> str:
    return f"## Files\n\n- `{HUB_FILENAME}`: the embedding (source sha256 `{source.sha256}`)\n"
