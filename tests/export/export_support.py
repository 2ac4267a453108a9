"""Shared by the ``reneg export`` tests: random-valued canonical files per family, and stand-ins for host modules.

The files are written with reneg's own ``NegativeEmbedding.save`` and the text encoders' real fingerprints: the
embedded world (SD, (32, 64)) and tiny SD1.5 / SDXL / SD3 pipelines of the real architectures (``reneg.models.tiny``).
The stand-ins reproduce only the API surface the exported host code calls, as read from the hosts' sources (named
at each one); they are not the hosts.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import subprocess
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from reneg.embedding import NegativeEmbedding
from reneg.families import family_for

FAMILY_MODELS = {"world": None, "sd": "tiny", "sdxl": "tiny-sdxl", "sd3": "tiny-sd3"}


@functools.lru_cache(maxsize=None)
def pipeline(kind: str):
    """The pipeline of ``kind`` (``world`` is the embedded default), loaded once per test session."""
    from reneg.models import load_model

    return load_model(FAMILY_MODELS[kind]).pipe


def canonical_file(kind: str, folder: Path, *, seed: int = 0) -> Path:
    """A random-valued canonical reneg file for ``kind``'s text encoder(s), written by ``NegativeEmbedding.save``."""
    family = family_for(pipeline(kind))
    (length, width), pooled = family.negative_shape()
    generator = torch.Generator().manual_seed(seed)
    metadata = {"text_encoder_fingerprint": family.fingerprint(), "base_model": FAMILY_MODELS[kind] or "shapes",
                "family": family.name, "reward": "shapes-hps", "steps": "20", "guidance_scale": "1.5",
                "resolution": "64", "lr": "0.005", "seed": str(seed)}
    embedding = NegativeEmbedding(torch.randn(length, width, generator=generator), metadata,
                                  None if pooled is None else torch.randn(pooled, generator=generator))
    return embedding.save(folder / f"{kind}.safetensors")


def load_package(init: Path, name: str):
    """Import a folder as InvokeAI's ``load_custom_nodes`` does: ``spec_from_file_location(name, __init__.py)``."""
    spec = importlib.util.spec_from_file_location(name, init)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_script(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _module(name: str, **attributes) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attributes)
    return module


# ---------------------------------------------------------------- InvokeAI stand-ins


@dataclass
class BasicConditioningInfo:  # invokeai/backend/stable_diffusion/diffusion/conditioning_data.py: fields as there
    embeds: torch.Tensor


@dataclass
class SDXLConditioningInfo(BasicConditioningInfo):
    pooled_embeds: torch.Tensor
    add_time_ids: torch.Tensor


@dataclass
class SD3ConditioningInfo:
    clip_l_pooled_embeds: torch.Tensor
    clip_l_embeds: torch.Tensor
    clip_g_pooled_embeds: torch.Tensor
    clip_g_embeds: torch.Tensor
    t5_embeds: torch.Tensor | None


@dataclass
class ConditioningFieldData:
    conditionings: list


@dataclass
class ConditioningField:  # invokeai/app/invocations/fields.py (SD3ConditioningField has the same field)
    conditioning_name: str


@dataclass
class ConditioningOutput:  # invokeai/app/invocations/primitives.py
    conditioning: ConditioningField


class BaseInvocation:
    """pydantic model in InvokeAI; here the InputField defaults become attributes, keyword arguments override."""

    def __init__(self, **values):
        for name, value in {**type(self).defaults, **values}.items():
            setattr(self, name, value)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.defaults = {name: value for name, value in vars(cls).items() if isinstance(value, (str, int, float))
                        and not name.startswith("_")}


REGISTERED_INVOCATIONS: dict = {}


def invocation(invocation_type: str, **options):  # invokeai/app/invocations/baseinvocation.py `invocation`
    def register(cls):
        REGISTERED_INVOCATIONS[invocation_type] = (cls, options)
        return cls
    return register


class ConditioningStore:
    """``context.conditioning`` (invokeai/app/services/shared/invocation_context.py): save() returns a name."""

    def __init__(self):
        self.saved = {}

    def save(self, data) -> str:
        name = f"conditioning-{len(self.saved)}"
        self.saved[name] = data
        return name


def install_invokeai(monkeypatch) -> None:
    """The modules the exported node imports, with the names the InvokeAI source gives them."""
    api = _module("invokeai.invocation_api", BaseInvocation=BaseInvocation, BasicConditioningInfo=BasicConditioningInfo,
                  ConditioningField=ConditioningField, ConditioningFieldData=ConditioningFieldData,
                  ConditioningOutput=ConditioningOutput, InputField=lambda default=None, **_: default,
                  InvocationContext=object, SDXLConditioningInfo=SDXLConditioningInfo, invocation=invocation)
    modules = {
        "invokeai": _module("invokeai"), "invokeai.invocation_api": api,
        "invokeai.app.invocations.fields": _module("invokeai.app.invocations.fields",
                                                   SD3ConditioningField=ConditioningField),
        "invokeai.app.invocations.primitives": _module("invokeai.app.invocations.primitives",
                                                       SD3ConditioningOutput=ConditioningOutput),
        "invokeai.backend.stable_diffusion.diffusion.conditioning_data": _module(
            "invokeai.backend.stable_diffusion.diffusion.conditioning_data", SD3ConditioningInfo=SD3ConditioningInfo),
    }
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)


def sd3_denoise_embeddings(info: SD3ConditioningInfo) -> tuple[torch.Tensor, torch.Tensor]:
    """(prompt_embeds, pooled) as InvokeAI's SD3 Denoise rebuilds them from the parts
    (invokeai/app/invocations/sd3_denoise.py ``SD3DenoiseInvocation._load_text_conditioning``, re-expressed)."""
    clip = torch.cat([info.clip_l_embeds, info.clip_g_embeds], dim=-1)
    clip = torch.nn.functional.pad(clip, (0, info.t5_embeds.shape[-1] - clip.shape[-1]))
    return (torch.cat([clip, info.t5_embeds], dim=-2),
            torch.cat([info.clip_l_pooled_embeds, info.clip_g_pooled_embeds], dim=-1))


# ---------------------------------------------------------------- A1111 / Forge stand-ins


class DictWithShape(dict):  # modules/prompt_parser.py: SDXL's conditioning dict whose shape is crossattn's
    @property
    def shape(self):
        return self["crossattn"].shape


@dataclass
class CFGDenoiserParams:  # modules/script_callbacks.py: the fields the callback reads and writes
    text_cond: object
    text_uncond: object
    sampling_step: int = 0
    total_sampling_steps: int = 20


class _Component:
    def __init__(self, *args, value=None, **kwargs):
        self.value = value

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def install_a1111(monkeypatch, extension: Path) -> list:
    """``modules.scripts``, ``modules.script_callbacks`` and ``gradio`` as the script uses them; returns the list
    the registered ``on_cfg_denoiser`` callbacks go into."""
    callbacks = []

    class Script:
        pass

    scripts = _module("modules.scripts", Script=Script, AlwaysVisible=object(), basedir=lambda: str(extension))
    gradio = _module("gradio", **{name: _Component for name in ("Accordion", "Checkbox", "Dropdown", "Slider")})
    script_callbacks = _module("modules.script_callbacks", on_cfg_denoiser=callbacks.append)
    modules = {"modules": _module("modules", scripts=scripts, script_callbacks=script_callbacks),
               "modules.scripts": scripts, "modules.script_callbacks": script_callbacks, "gradio": gradio}
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    return callbacks


class Processing:
    """The ``p`` of a generation: the script writes its infotext into ``extra_generation_params``."""

    def __init__(self):
        self.extra_generation_params = {}


# ---------------------------------------------------------------- ComfyUI's own code


def comfyui_checkout() -> Path:
    """The ComfyUI checkout named by RENEG_COMFYUI; skips (one line) without one."""
    checkout = os.environ.get("RENEG_COMFYUI", "")
    if not (Path(checkout) / "comfy" / "sd1_clip.py").is_file():
        pytest.skip("ComfyUI absent: set RENEG_COMFYUI to a ComfyUI checkout (scripts/host_checks.sh makes one)")
    return Path(checkout)


def run_comfyui_probe(request: dict) -> dict:
    """tests/export/comfyui_probe.py in the ComfyUI checkout named by RENEG_COMFYUI; skips without one, or where
    ComfyUI does not import. It runs with RENEG_COMFYUI_PYTHON, else this Python: reneg's dependencies plus einops,
    torchsde and av (PyAV) import ComfyUI's comfy/ package and its nodes."""
    checkout = str(comfyui_checkout())
    env = {**os.environ, "PYTHONPATH": checkout, "OMP_NUM_THREADS": "1"}
    python = os.environ.get("RENEG_COMFYUI_PYTHON") or sys.executable
    result = subprocess.run([python, str(Path(__file__).with_name("comfyui_probe.py")), json.dumps(request)],
                            cwd=checkout, env=env, capture_output=True, text=True, timeout=600)
    if result.returncode != 0 and "ModuleNotFoundError" in result.stderr:
        pytest.skip(f"ComfyUI does not import with this Python: {result.stderr.strip().splitlines()[-1]}")
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def comfyui_unet(family: str, width: int, pooled: int | None, *, seed: int = 0):
    """A random-weight diffusers UNet in the layout ComfyUI's own SD1.5 / SDXL model classes build (GroupNorm of 32
    groups; SD1.5's 8 heads, SDXL's 64-wide heads and its six 256-wide size embeddings), or an SD3 transformer as
    ComfyUI detects one (16 latent channels, 64-wide heads, one per layer), at the file's width: (the model, the
    ComfyUI class that takes it)."""
    from diffusers import SD3Transformer2DModel, UNet2DConditionModel

    if family == "sd3":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            transformer = SD3Transformer2DModel(
                sample_size=8, patch_size=2, in_channels=16, out_channels=16, num_layers=1, attention_head_dim=64,
                num_attention_heads=1, caption_projection_dim=64, joint_attention_dim=width,
                pooled_projection_dim=pooled, pos_embed_max_size=16)
        return transformer.eval(), "SD3"

    common = dict(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, norm_num_groups=32,
                  cross_attention_dim=width)
    rng = torch.random.fork_rng(devices=[])
    with rng:
        torch.manual_seed(seed)
        if family == "sdxl":
            unet = UNet2DConditionModel(
                **common, block_out_channels=(64, 128), attention_head_dim=(1, 2), use_linear_projection=True,
                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), addition_embed_type="text_time",
                addition_time_embed_dim=256, projection_class_embeddings_input_dim=6 * 256 + pooled)
            return unet.eval(), "SDXL"
        unet = UNet2DConditionModel(
            **common, block_out_channels=(32, 64), attention_head_dim=8,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
    return unet.eval(), "SD15"


def diffusers_denoised(model, entry: dict, embedding: NegativeEmbedding, size: int) -> torch.Tensor:
    """x - sigma * prediction: diffusers' model on the input ComfyUI scaled (``entry``, a branch the probe recorded),
    at ComfyUI's timestep, with reneg's negative (SDXL: its pooled part and the size ids diffusers gives a ``size``
    image, no crop; SD3: its pooled part; SD3's prediction is a velocity, ComfyUI's denoised the same x - sigma * v)."""
    with torch.no_grad():
        if embedding.metadata["family"] == "sd3":
            prediction = model(entry["xc"], encoder_hidden_states=embedding.expand(1),
                               pooled_projections=embedding.expand_pooled(1), timestep=entry["t"]).sample
        else:
            extra = {}
            if embedding.pooled is not None:
                ids = torch.tensor([[size, size, 0, 0, size, size]], dtype=torch.float32)
                extra["added_cond_kwargs"] = {"text_embeds": embedding.expand_pooled(1), "time_ids": ids}
            prediction = model(entry["xc"], entry["t"], encoder_hidden_states=embedding.expand(1), **extra).sample
    return entry["x"] - entry["sigma"].reshape(-1, 1, 1, 1) * prediction


# ---------------------------------------------------------------- InvokeAI's own code


def invokeai_python() -> str:
    """A Python that imports InvokeAI: RENEG_INVOKEAI_PYTHON, else this one where it has ``invokeai``; skips (one
    line) without either."""
    python = os.environ.get("RENEG_INVOKEAI_PYTHON", "")
    if python:
        if not Path(python).is_file():
            pytest.skip(f"InvokeAI absent: RENEG_INVOKEAI_PYTHON={python} does not exist")
        return python
    if importlib.util.find_spec("invokeai") is None:
        pytest.skip("InvokeAI absent: set RENEG_INVOKEAI_PYTHON to a Python with invokeai 6.x "
                    "(scripts/host_checks.sh makes one)")
    return sys.executable


def run_invokeai_probe(request: dict) -> dict:
    """tests/export/invokeai_probe.py with InvokeAI's Python, INVOKEAI_ROOT in ``request["root"]``."""
    python = invokeai_python()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "INVOKEAI_ROOT": request["root"]}
    result = subprocess.run([python, str(Path(__file__).with_name("invokeai_probe.py")), json.dumps(request)],
                            env=env, capture_output=True, text=True, timeout=600)
    if result.returncode != 0 and "ModuleNotFoundError" in result.stderr:
        pytest.skip(f"InvokeAI does not import with {python}: {result.stderr.strip().splitlines()[-1]}")
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- Forge's own code


def forge_checkout() -> Path:
    """The Stable Diffusion WebUI Forge checkout named by RENEG_FORGE; skips (one line) without one."""
    checkout = os.environ.get("RENEG_FORGE", "")
    if not (Path(checkout) / "modules" / "script_callbacks.py").is_file():
        pytest.skip("Forge absent: set RENEG_FORGE to a stable-diffusion-webui-forge checkout "
                    "(scripts/host_checks.sh makes one)")
    return Path(checkout)


def run_forge_probe(request: dict) -> dict:
    """tests/export/forge_probe.py in the Forge checkout, with RENEG_FORGE_PYTHON (else this Python: reneg's
    dependencies plus gguf and lark import the parts of Forge it runs)."""
    checkout = str(forge_checkout())
    python = os.environ.get("RENEG_FORGE_PYTHON") or sys.executable
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([checkout, *filter(None, [os.environ.get("PYTHONPATH")])]),
           "OMP_NUM_THREADS": "1"}
    result = subprocess.run([python, str(Path(__file__).with_name("forge_probe.py")), json.dumps(request)],
                            cwd=checkout, env=env, capture_output=True, text=True, timeout=600)
    if result.returncode != 0 and "ModuleNotFoundError" in result.stderr:
        pytest.skip(f"Forge does not import with {python}: {result.stderr.strip().splitlines()[-1]}")
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])
