"""``reneg export NPO_DIR``: a Diffusion-NPO adapter (``reneg npo --out DIR``) for diffusers or ComfyUI.

The adapter is a LoRA delta for CFG's negative branch only: theta + beta*delta there, theta on the prompt's branch
(NPO Eq. 10). A plain LoRA loader puts it on both branches, which is not NPO, so each layout ships the switch with
the weights:

- ``--to diffusers``: the adapter folder as it is (the LoRA file's bytes, ``npo.json``) and a model card; reneg's
  :func:`~reneg.methods.npo.weights.apply_npo` is the switch in any diffusers pipeline with a UNet.
- ``--to comfyui``: the LoRA in kohya's key layout (``models/loras/``), the custom node *ReNeg NPO (negative branch
  only)* (``custom_nodes/reneg_npo/``: :mod:`reneg.export.payload.comfyui_npo_node` copied verbatim), an API-format
  workflow and README.txt. ComfyUI 0.3.64 has no core node that runs other weights for the unconditional pass (its
  DualCFGGuider is two conditionings on one model), hence the node.

A folder is taken for an NPO adapter by its ``npo.json``; the other hosts are refused.
"""

from __future__ import annotations

import functools
import json
import math
import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch

from ..core.fingerprint import ENCODER_SEPARATOR
from ..errors import ReNegError
from ..io import save_tensors
from ..methods.npo.weights import ADAPTER_FILE, METADATA_FILE, read_metadata
from ..methods.npo.weights import FORMAT as ADAPTER_FORMAT
from . import comfyui, hub
from .layout import FAMILY_NAMES, file_sha256, safe_name, staged, write_json, write_manifest, write_text

HOSTS = ("comfyui", "diffusers")
#: Families whose UNet LoRA keys ComfyUI's key map names one Linear layer each (``comfy.lora.model_lora_keys_unet``).
COMFYUI_FAMILIES = ("sd", "sdxl")
LORA_PREFIX = "unet."
KOHYA_PREFIX = "lora_unet_"
KOHYA_FORMAT = "reneg.npo_kohya_lora"
NODE_PACK = "reneg_npo"
NODE_TITLE = "ReNeg NPO (negative branch only)"
#: npo.json entries that the model card shows in its own places, not in the recipe table.
NOT_RECIPE = {"format", "version", "base_model", "reward", "base_model_fingerprint", "text_encoder_fingerprint"}


@dataclass(frozen=True)
class Adapter:
    """An NPO adapter folder: its ``npo.json``, the family it is for, and the base name of the exported files."""

    path: Path
    metadata: dict
    family: str
    name: str

    @property
    def weights(self) -> Path:
        return self.path / ADAPTER_FILE

    @functools.cached_property
    def sha256(self) -> str:
        return file_sha256(self.weights)


def is_adapter_path(file: str) -> bool:
    """Whether ``reneg export FILE`` takes FILE for an NPO adapter: a folder, or a missing path without a file
    suffix (its error then names both kinds of input); anything else is a negative embedding file."""
    path = Path(file).expanduser()
    return path.is_dir() or (not path.exists() and not path.suffix)


def adapter_family(metadata: dict) -> str:
    """``sd`` or ``sdxl`` for a ``UNet2DConditionModel`` adapter (one text encoder, or SDXL's two, by npo.json's
    fingerprints), else the denoiser's class name (``SD3Transformer2DModel``, ...) or ``unknown``."""
    if metadata.get("family"):
        return str(metadata["family"])
    parts = str(metadata.get("base_model_fingerprint") or "").split(":")
    denoiser = parts[1] if len(parts) > 2 else "unknown"
    if denoiser != "UNet2DConditionModel":
        return denoiser
    encoders = [part for part in str(metadata.get("text_encoder_fingerprint") or "").split(ENCODER_SEPARATOR) if part]
    return {1: "sd", 2: "sdxl"}.get(len(encoders), "unknown")


def read_adapter(file: str, name: str | None) -> Adapter:
    """The adapter folder ``file``; ReNegError (one line) unless it is one that `reneg npo` wrote."""
    path = Path(file).expanduser()
    if not path.exists():
        raise ReNegError(f"'{path}' does not exist: pass an NPO adapter folder (`reneg npo --out DIR`) or a "
                         "negative embedding file")
    metadata = read_metadata(path)
    if metadata.get("format") != ADAPTER_FORMAT:
        raise ReNegError(f"'{path}' is a folder without the {METADATA_FILE} of `reneg npo`: pass an NPO adapter "
                         "folder (`reneg npo --out DIR`) or a negative embedding file")
    if not (path / ADAPTER_FILE).is_file():
        raise ReNegError(f"NPO adapter '{path}' holds no {ADAPTER_FILE}: pass the folder `reneg npo --out DIR` wrote")
    return Adapter(path, metadata, adapter_family(metadata), safe_name(name or path.resolve().name))


def require_host(adapter: Adapter, host: str) -> None:
    """ReNegError unless ``host`` takes this adapter (comfyui: SD1.x/2.x and SDXL UNets; diffusers: any)."""
    if host not in HOSTS:
        raise ReNegError(f"{adapter.path} is an NPO adapter: an NPO adapter exports to comfyui or diffusers only "
                         f"(--to {host} has no switch that puts it on the negative branch alone)")
    if host == "comfyui" and adapter.family == "unknown":
        raise ReNegError(f"{adapter.path}: its {METADATA_FILE} names no UNet and text encoder fingerprints, so "
                         "SD1.x/SD2.x cannot be told from SDXL for --to comfyui: use --to diffusers")
    if host == "comfyui" and adapter.family not in COMFYUI_FAMILIES:
        raise ReNegError(f"{adapter.path} is an NPO adapter for '{adapter.family}'; --to comfyui takes SD1.x/SD2.x "
                         "and SDXL UNet adapters only (the node finds each layer through ComfyUI's UNet LoRA key map; "
                         "ComfyUI's SD3 fuses q, k and v into one layer): use --to diffusers")


def export(config) -> Path:
    """Write the NPO adapter ``config.file`` in the layout of ``config.to`` into ``config.out``; return the folder."""
    adapter = read_adapter(config.file, config.name)
    require_host(adapter, config.to)
    results = hub.read_results(config.results) if config.results else None
    out = Path(config.out).expanduser()
    with staged(out, overwrite=config.overwrite) as folder:
        WRITERS[config.to](adapter, folder, results=results)
        write_manifest(folder, host=config.to, source=adapter.path, source_sha256=adapter.sha256,
                       family=adapter.family)
    return out


# ---------------------------------------------------------------- the LoRA in kohya's key layout


def read_lora(adapter: Adapter) -> tuple[dict[str, torch.Tensor], dict]:
    """The LoRA file's tensors and its ``LoraConfig`` (diffusers' ``lora_adapter_metadata``, ``unet.`` keys, the
    prefix removed); ReNegError when the file does not read."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(adapter.weights), framework="pt") as file:
            tensors = {key: file.get_tensor(key) for key in file.keys()}
            metadata = file.metadata() or {}
        config = json.loads(metadata.get("lora_adapter_metadata", "{}"))
    except (OSError, ValueError, SafetensorError) as error:
        raise ReNegError(f"{adapter.weights} is not a readable LoRA file ({type(error).__name__}): pass the folder "
                         "`reneg npo` wrote") from None
    return tensors, {key[len(LORA_PREFIX):]: value for key, value in config.items() if key.startswith(LORA_PREFIX)}


def kohya_alpha(adapter: Adapter, config: dict, rank: int) -> float:
    """The ``.alpha`` whose alpha/r is the file's scale: lora_alpha (rsLoRA: lora_alpha*sqrt(r)); lora_alpha = r,
    scale 1, when the file records no config (diffusers' rule)."""
    if config.get("use_dora") or config.get("rank_pattern") or config.get("alpha_pattern"):
        raise ReNegError(f"{adapter.weights}: a DoRA or per-layer rank/alpha LoRA has no kohya layout here: "
                         "use --to diffusers")
    lora_alpha = float(config.get("lora_alpha", rank))
    return lora_alpha * math.sqrt(rank) if config.get("use_rslora") else lora_alpha


def kohya_tensors(adapter: Adapter) -> dict[str, torch.Tensor]:
    """Per adapted module M (diffusers' module path): ``lora_unet_<M, '.' -> '_'>.lora_down.weight`` = lora_A
    (r, in), ``.lora_up.weight`` = lora_B (out, r), both in the file's dtype, and ``.alpha`` (fp32 scalar); the
    names ComfyUI's ``model_lora_keys_unet`` (and A1111/Forge, InvokeAI) give a diffusers UNet's layers."""
    tensors, config = read_lora(adapter)
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        module, _, matrix = key[len(LORA_PREFIX):].rpartition(".lora_")
        if not key.startswith(LORA_PREFIX) or matrix not in ("A.weight", "B.weight") or tensor.ndim != 2:
            raise ReNegError(f"{adapter.weights}: '{key}' is not a UNet linear layer's LoRA matrix "
                             "(unet.<module>.lora_A/B.weight, 2-D): the ComfyUI node adapts linear layers only; "
                             "use --to diffusers")
        pairs.setdefault(module, {})[matrix[0]] = tensor
    kohya = {}
    for module, pair in sorted(pairs.items()):
        if set(pair) != {"A", "B"}:
            raise ReNegError(f"{adapter.weights}: module '{module}' lacks its lora_A or lora_B: pass the folder "
                             "`reneg npo` wrote")
        name = KOHYA_PREFIX + module.replace(".", "_")
        kohya[f"{name}.lora_down.weight"] = pair["A"].contiguous()
        kohya[f"{name}.lora_up.weight"] = pair["B"].contiguous()
        kohya[f"{name}.alpha"] = torch.tensor(kohya_alpha(adapter, config, pair["A"].shape[0]), dtype=torch.float32)
    return kohya


# ---------------------------------------------------------------- --to comfyui


def write_comfyui(adapter: Adapter, folder: Path, *, results=None) -> None:
    """``models/loras/NAME.safetensors``, ``custom_nodes/reneg_npo/__init__.py``, ``workflow-npo.json``,
    ``README.txt``: laid out as a ComfyUI folder, so that copying ``models`` and ``custom_nodes`` installs it."""
    lora = f"{adapter.name}.safetensors"
    (folder / "models" / "loras").mkdir(parents=True)
    save_tensors(kohya_tensors(adapter), folder / "models" / "loras" / lora,
                 {"format": KOHYA_FORMAT, "reneg_source_sha256": adapter.sha256,
                  "npo": json.dumps(adapter.metadata, sort_keys=True)})
    node = resources.files("reneg.export.payload").joinpath("comfyui_npo_node.py").read_text(encoding="utf-8")
    write_text(folder / "custom_nodes" / NODE_PACK / "__init__.py", node)
    write_json(folder / "workflow-npo.json", workflow(adapter, lora))
    write_text(folder / "README.txt", comfyui_readme(adapter, lora))


def workflow(adapter: Adapter, lora: str) -> dict:
    """API format: Load Checkpoint -> ReNeg NPO -> KSampler, a positive and an empty negative CLIPTextEncode."""
    node, size = comfyui.api_node, comfyui.resolution(adapter)
    return {
        "1": node("CheckpointLoaderSimple", "Load Checkpoint", ckpt_name=comfyui.checkpoint_name(adapter)),
        "2": node("CLIPTextEncode", "Positive prompt", text="a photo of a cat", clip=["1", 1]),
        "3": node("CLIPTextEncode", "Negative prompt (empty: NPO's unconditional pass)", text="", clip=["1", 1]),
        "4": node("EmptyLatentImage", "Empty Latent Image", width=size, height=size, batch_size=1),
        "5": node("KSampler", "KSampler", seed=0, denoise=1.0, model=["8", 0], positive=["2", 0], negative=["3", 0],
                  latent_image=["4", 0], **comfyui.sampler_settings(adapter)),
        "6": node("VAEDecode", "VAE Decode", samples=["5", 0], vae=["1", 2]),
        "7": node("SaveImage", "Save Image", filename_prefix="reneg-npo", images=["6", 0]),
        "8": node("ReNegNPO", NODE_TITLE, model=["1", 0], lora_name=lora, strength=1.0),
    }


def comfyui_readme(adapter: Adapter, lora: str) -> str:
    metadata = adapter.metadata
    title = f"ReNeg NPO adapter for ComfyUI: {lora}"
    return f"""{title}
{'=' * len(title)}

A Diffusion-NPO weight offset delta (a LoRA) for {FAMILY_NAMES[adapter.family]},
base model {metadata.get('base_model', 'not recorded')}.
It belongs on CFG's negative (unconditional) pass only: theta + strength*delta there, theta for the prompt
(NPO Eq. 10). Loaded with ComfyUI's "Load LoRA" it would change both passes, which is not NPO.

ComfyUI 0.3.64 has no core node that runs other weights for the unconditional pass (DualCFGGuider is two
conditionings on one model), so this export ships a custom node, "{NODE_TITLE}" (ReNegNPO).
It adds the LoRA's low-rank product to the adapted layers' outputs on the rows of the unconditional pass during
each model call, and keeps any model wrapper already installed.

Install
1. Copy models/loras/{lora} into ComfyUI/models/loras/.
2. Copy the folder custom_nodes/{NODE_PACK} into ComfyUI/custom_nodes/ and restart ComfyUI.
   (Or copy this folder's models and custom_nodes over your ComfyUI folder.)

Use
3. Open workflow-npo.json (drag it onto the canvas). Pick your {FAMILY_NAMES[adapter.family]} checkpoint in
   "Load Checkpoint": the adapter was trained on the UNet fingerprinted below; NPO offsets transfer to fine-tunes of that base.
4. Leave the negative prompt empty (or write one: it is encoded as usual and still runs with delta) and queue.
   strength is NPO's beta (1.0 as trained). The node takes KSampler's / CFGGuider's negative pass (ComfyUI's
   cond_or_uncond 1); other guiders number their conditionings otherwise.

Trained with
  route: {metadata.get('route', '?')}, reward: {metadata.get('reward', 'not recorded')}, guidance scale: \
{metadata.get('guidance_scale', '?')}, sampling steps: {metadata.get('steps', '?')}, rank: {metadata.get('rank', '?')}
  base UNet fingerprint: {metadata.get('base_model_fingerprint', 'not recorded')}
  source LoRA file sha256: {adapter.sha256}
"""


# ---------------------------------------------------------------- --to diffusers


def write_diffusers(adapter: Adapter, folder: Path, *, results: dict | None = None) -> None:
    """The LoRA file and npo.json byte for byte, and README.md (a model card); a LoRA file that does not read is
    refused (:func:`read_lora`), not copied under a card that says it is delta."""
    read_lora(adapter)
    for filename in (ADAPTER_FILE, METADATA_FILE):
        shutil.copyfile(adapter.path / filename, folder / filename)
    write_text(folder / "README.md", model_card(adapter, results))


def model_card(adapter: Adapter, results: dict | None) -> str:
    """YAML front matter, what delta is, what it was trained on and how, the measured table, usage, files."""
    metadata = adapter.metadata
    base = str(metadata.get("base_model") or "")
    lines = ["---", "library_name: reneg", *([f"base_model: {json.dumps(base)}"] if hub.is_hub_id(base) else []),
             "tags:", *(f"- {json.dumps(tag)}" for tag in ("reneg", "diffusion-npo", "lora", "text-to-image",
                                                          "diffusers", *hub.TAGS.get(adapter.family, "").split())),
             "---", ""]
    learned = [("base model", f"`{base or 'not recorded'}`"),
               ("family", FAMILY_NAMES.get(adapter.family, adapter.family)),
               ("base UNet fingerprint", f"`{metadata.get('base_model_fingerprint', 'not recorded')}`"),
               ("text encoder fingerprint", f"`{metadata.get('text_encoder_fingerprint', 'not recorded')}`"),
               ("reward", f"`{metadata.get('reward', 'not recorded')}`")]
    recipe = [(key, f"`{value}`") for key, value in sorted(metadata.items()) if key not in NOT_RECIPE]
    sections = ["\n".join(lines), f"# {adapter.name}: a Diffusion-NPO negative-branch offset\n",
                "A LoRA delta trained with Diffusion-NPO (`reneg npo`): the weight offset of classifier-free "
                "guidance's *negative* branch. Sampling runs that branch with theta + beta*delta and the prompt's "
                "branch with theta (NPO Eq. 10); delta on both branches is not NPO.\n",
                "## Trained for\n\n" + hub.table(learned, ("", "")),
                "## Recipe\n\n" + hub.table(recipe, ("setting", "value")), hub.measured(results),
                card_usage(adapter), "## Files\n\n"
                f"- `{ADAPTER_FILE}`: delta, diffusers' LoRA file (peft keys `unet.<module>.lora_A/B.weight`, the "
                f"LoraConfig in its metadata; sha256 `{adapter.sha256}`)\n- `{METADATA_FILE}`: reneg's record of "
                "the training\n"]
    return "\n".join(section for section in sections if section)


def card_usage(adapter: Adapter) -> str:
    load = hub.load_snippet(str(adapter.metadata.get("base_model") or "BASE_MODEL"), adapter.family,
                            "apply_npo, remove_npo")
    return f"""## Usage

```python
{load}
apply_npo(pipe, npo="THIS_FOLDER", beta=1.0)  # the negative half of every CFG batch runs theta + beta*delta
images = pipe(["a photo of a cat"]).images
remove_npo(pipe)  # the plain pipeline again
```

**Warning:** `pipe.load_lora_weights("THIS_FOLDER")` alone reads the same file but puts delta on **both** branches,
the prompt's too: that is not NPO. From the command line: `reneg generate --npo THIS_FOLDER --prompt "..."`.
"""


#: Host -> writer of the adapter's folder.
WRITERS = {"comfyui": write_comfyui, "diffusers": write_diffusers}
