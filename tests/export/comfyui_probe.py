"""Run inside a ComfyUI checkout (cwd): load files through ComfyUI's own code and print what it made of them (JSON).

Used by tests/test_export_safety.py and tests/test_export_roundtrip.py in a subprocess, so that importing ComfyUI
(its global device and logging state) stays out of the test process. Arguments: a JSON object
``{"width": token embedding width, "embeddings": [files for embedding:NAME], "conditionings": [files]}``.

- ``embedding:NAME``: ComfyUI's tokenizer and text model, ``comfy.sd1_clip.SDTokenizer.tokenize_with_weights`` and
  ``SDClipModel.process_tokens`` (a CLIP of the given width, random weights): which token vectors it spliced in.
- Load Conditioning: ``comfy.utils.load_torch_file(path, safe_load=True, return_metadata=True)``, then the node's
  ``sd.pop("conditioning")`` / options rule of ``comfy_extras/nodes_cond.py`` ``ConditioningLoader.execute``
  (re-expressed: the checkout may predate the node); the tensors are written beside each file as ``.loaded``.
"""

import json
import logging
import sys
from pathlib import Path

import comfy.cli_args

comfy.cli_args.args.cpu = True  # before comfy.model_management is imported: no GPU probing

import comfy.sd1_clip  # noqa: E402
import comfy.utils  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402


class Warnings(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def spliced(path: Path, width: int, warnings: Warnings) -> dict:
    config = {"hidden_size": width, "intermediate_size": 2 * width, "num_attention_heads": 2, "num_hidden_layers": 1,
              "max_position_embeddings": 77, "vocab_size": 49408, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5,
              "projection_dim": width, "eos_token_id": 49407, "bos_token_id": 0, "pad_token_id": 1}
    model = comfy.sd1_clip.SDClipModel(textmodel_json_config=config)
    tokenizer = comfy.sd1_clip.SDTokenizer(embedding_directory=str(path.parent), embedding_size=width)
    warnings.messages.clear()
    batches = tokenizer.tokenize_with_weights(f"a photo of a cat embedding:{path.stem}")
    infos = [model.process_tokens([[token for token, *_ in batch]], "cpu")[3] for batch in batches]  # 77 a batch
    return {"spliced_vectors": sum(info["size"] for batch in infos for info in batch),
            "warnings": [m for m in warnings.messages if "embedding" in m]}


def load_conditioning(path: Path) -> dict:
    sd, metadata = comfy.utils.load_torch_file(str(path), safe_load=True, return_metadata=True)
    cond = sd.pop("conditioning")
    options = json.loads((metadata or {}).get("conditioning_options", "{}"))
    options.update(sd)
    save_file({"conditioning": cond.contiguous(), **{k: v.contiguous() for k, v in options.items()
                                                     if isinstance(v, torch.Tensor)}},
              str(path.with_suffix(".loaded")))
    return {"scalar_options": {k: v for k, v in options.items() if not isinstance(v, torch.Tensor)}}


def main() -> None:
    request = json.loads(sys.argv[1])
    warnings = Warnings()
    logging.getLogger().addHandler(warnings)
    report = {"embeddings": {p: spliced(Path(p), request["width"], warnings) for p in request["embeddings"]},
              "conditionings": {p: load_conditioning(Path(p)) for p in request["conditionings"]}}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
