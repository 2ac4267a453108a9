"""Run inside a Stable Diffusion WebUI Forge checkout (cwd): the parts of Forge that meet `reneg export --to a1111`'s
extension, run from Forge's own source, without the web UI; prints a JSON report.

Used by tests/export/test_export_hosts.py in a subprocess (Forge's ``modules`` and ``backend`` packages and their
global state stay out of the test process). Argument: a JSON object with ``step`` and/or ``textual_inversion``.

Forge's own code that runs here: ``modules/prompt_parser.py`` (``ScheduledPromptConditioning``,
``reconstruct_cond_batch``: the typed negative as ``CFGDenoiser.forward`` hands it on), ``modules/script_callbacks.py``
(``on_cfg_denoiser``, which the extension's script calls when it is imported, ``CFGDenoiserParams``,
``cfg_denoiser_callback``), ``backend/sampling/sampling_function.py`` (``sampling_function``: ``compile_conditions``
of ``text_uncond``, the batched model calls and CFG) and ``backend/text_processing/textual_inversion.py``
(``EmbeddingDatabase``, Forge's textual-inversion loader). Stand-ins, for what the running web UI would hold: the
web UI's extension list, options and ``modules.scripts`` (``basedir``, ``Script``, ``AlwaysVisible``: that module
imports the whole UI), the processing object ``p`` and Forge's model, a diffusers UNet (``denoised = x - sigma * eps``)
that records each call.

- ``step``: ``{"extension": folder, "name": negative, "strength": float, "typed": file (``crossattn``, and
  ``vector`` for SDXL), "positive": file (same keys), "unet": folder, "pooled": SDXL's pooled width or null,
  "cfg": float, "sigma": float, "out": file}``:
  the script processes a generation with the negative enabled, Forge builds the step's ``CFGDenoiserParams`` and
  dispatches the callback, then ``sampling_function`` runs one CFG evaluation; what each branch's model call got and
  returned, and the result, go to ``out``.
- ``textual_inversion``: ``{"folder": folder of files, "expected_shape": width}``: which files Forge's loader
  registers as embeddings, which it sets aside (``skipped_embeddings``), and what it printed.
"""

import contextlib
import importlib.util
import io
import json
import sys
import types
from pathlib import Path

sys.argv = [sys.argv[0], "--always-cpu", *sys.argv[1:]]  # backend/args.py reads the command line when imported
REQUEST = json.loads(sys.argv[-1])

import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402


def _module(name: str, **attributes) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attributes)
    sys.modules[name] = module
    return module


def install_webui_state(extension: Path) -> None:
    """What the running web UI holds and script_callbacks imports: no other extension, default options."""
    _module("modules.extensions", extensions=[], find_extension=lambda filename: None)
    _module("modules.shared", opts=types.SimpleNamespace())
    _module("modules.util", topological_sort=lambda dependencies: list(dependencies))

    class Script:
        pass

    _module("modules.scripts", Script=Script, AlwaysVisible=object(), basedir=lambda: str(extension))


class Recorder(torch.nn.Module):
    """Forge's model as sampling_function calls it: ``apply_model(x, sigma, c_crossattn=..., y=...)`` returns the
    denoised latent; here a diffusers UNet at a fixed timestep. ``y`` (SDXL's vector) gives the pooled part."""

    def __init__(self, unet, pooled: int | None):
        super().__init__()
        self.unet, self.pooled, self.calls = unet, pooled, []

    def memory_required(self, shape) -> int:
        return 0

    def apply_model(self, x, sigma, c_crossattn=None, y=None, transformer_options=None, **unused):
        extra = {}
        if self.pooled:
            ids = torch.tensor([[64.0, 64, 0, 0, 64, 64]]).expand(x.shape[0], -1)
            extra["added_cond_kwargs"] = {"text_embeds": y[:, :self.pooled], "time_ids": ids}
        with torch.no_grad():
            eps = self.unet(x / (sigma[:, None, None, None] ** 2 + 1) ** 0.5, 500, encoder_hidden_states=c_crossattn,
                            **extra).sample
        denoised = x - sigma[:, None, None, None] * eps
        self.calls.append({"x": x, "sigma": sigma, "c_crossattn": c_crossattn, "y": y, "denoised": denoised,
                           "cond_or_uncond": list(transformer_options["cond_or_uncond"])})
        return denoised


def typed_conditioning(path: str):
    """The typed prompt's conditioning, one schedule entry, through Forge's reconstruct_cond_batch."""
    from modules import prompt_parser

    tensors = load_file(path)
    cond = tensors["crossattn"][0]
    if "vector" in tensors:
        cond = prompt_parser.DictWithShape({"crossattn": cond, "vector": tensors["vector"][0]})
    return prompt_parser.reconstruct_cond_batch([[prompt_parser.ScheduledPromptConditioning(20, cond)]], 3)


def step(request: dict) -> dict:
    from diffusers import UNet2DConditionModel

    extension = Path(request["extension"])
    install_webui_state(extension)
    from modules import script_callbacks

    spec = importlib.util.spec_from_file_location("reneg_negative_script", extension / "scripts" / "reneg_negative.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    registered = [c.callback for c in script_callbacks.callback_map["callbacks_cfg_denoiser"]]
    assert registered == [script.on_cfg_denoiser], registered

    p = types.SimpleNamespace(extra_generation_params={}, seeds=[0])
    script.ReNegNegativeScript().process(p, True, request["name"], request["strength"], 0.0, 1.0)
    typed, positive = typed_conditioning(request["typed"]), typed_conditioning(request["positive"])
    unet = UNet2DConditionModel.from_pretrained(request["unet"]).eval()
    shape = (1, unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    sigma = torch.tensor([request["sigma"]])
    params = script_callbacks.CFGDenoiserParams(x, None, sigma, 3, 20, positive, typed, None)
    errors = io.StringIO()
    with contextlib.redirect_stderr(errors):
        script_callbacks.cfg_denoiser_callback(params)  # Forge reports a failing callback and goes on
    assert "Error executing callback" not in errors.getvalue(), errors.getvalue()

    from backend.sampling.sampling_function import sampling_function

    model = Recorder(unet, request.get("pooled"))
    patcher = types.SimpleNamespace(model=model, controlnet_linked_list=None, extra_concat_condition=None,
                                    model_options={})
    denoiser = types.SimpleNamespace(inner_model=types.SimpleNamespace(inner_model=types.SimpleNamespace(
        forge_objects=types.SimpleNamespace(unet=patcher))), p=p)
    denoised, cond_pred, uncond_pred = sampling_function(denoiser, params, request["cfg"], [[(0, 1.0)]])
    tensors = {"x": x, "sigma": sigma, "denoised": denoised, "cond_pred": cond_pred, "uncond_pred": uncond_pred}
    for call in model.calls:
        for index, which in enumerate(call["cond_or_uncond"]):  # 0: positive, 1: negative
            name = ("positive", "negative")[which]
            tensors[f"{name}.c_crossattn"] = call["c_crossattn"][index:index + 1]
            tensors[f"{name}.denoised"] = call["denoised"][index:index + 1]
            if call["y"] is not None:
                tensors[f"{name}.y"] = call["y"][index:index + 1]
    save_file({k: v.detach().to("cpu", torch.float32).contiguous() for k, v in tensors.items()}, request["out"])
    return {"calls": len(model.calls), "infotext": p.extra_generation_params,
            "uncond_type": type(typed).__name__}


def textual_inversion(request: dict) -> dict:
    from backend.text_processing.textual_inversion import EmbeddingDatabase

    from reneg.models.tokenizers import build_clip_tokenizer

    database = EmbeddingDatabase(build_clip_tokenizer(), expected_shape=request["expected_shape"])
    database.add_embedding_dir(request["folder"])
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        database.load_textual_inversion_embeddings()
    return {"registered": sorted(database.word_embeddings), "skipped": sorted(database.skipped_embeddings),
            "printed": printed.getvalue().splitlines()}


def main() -> None:
    report = {}
    with contextlib.redirect_stdout(sys.stderr):  # Forge's backend prints its device on import
        if "step" in REQUEST:
            report["step"] = step(REQUEST["step"])
    if "textual_inversion" in REQUEST:
        report["textual_inversion"] = textual_inversion(REQUEST["textual_inversion"])
    print(json.dumps(report))


if __name__ == "__main__":
    main()
