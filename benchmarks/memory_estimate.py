"""Peak memory of ReNeg's grad step at SD1.5 size, counted on fake tensors: no compute, no RAM, seconds.

    python benchmarks/memory_estimate.py [--batches 1,2,8] [--dtype bf16] [--tiny]

The models and the step are ``gpu_real_size.py``'s (random SD1.5 UNet, VAE, text encoder, a ViT-H-14 reward;
512²). Under ``FakeTensorMode`` every tensor has a shape, a dtype and a storage size but no data, so the step
runs its real operator sequence, autograd graph and gradient checkpointing without arithmetic. A dispatch mode
counts the bytes of the storages that the step's operators create while they are alive (the parameters are
not counted); its maximum is the step's peak. It is what an ideal allocator would need: a real process adds
allocator slack (CPU: glibc's heap, RSS; CUDA: the caching allocator's blocks), so measure a batch that fits
(``gpu_real_size.py --memory-only``) to see the gap. Only the grad part is counted (the grad call at x_t,
Eq. 6, decode, reward, backward, AdamW): the no-grad prefix keeps one latent (BENCHMARKS.md, "Peak memory vs T").
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import weakref

import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gpu_real_size as real  # noqa: E402


class LiveBytes(TorchDispatchMode):
    """Counts the bytes of the storages created by operators under it while they are alive, and their peak."""

    def __init__(self, ignore=()):
        super().__init__()
        self.current = self.peak = 0
        self._seen: dict[int, weakref.ref | None] = {}
        # the parameters and buffers: there before the step, not its memory; held, so that their ids stay theirs
        self._ignored = [tensor.untyped_storage() for tensor in ignore]
        self._seen.update((id(storage), None) for storage in self._ignored)

    def _free(self, key: int, nbytes: int) -> None:
        self._seen.pop(key, None)
        self.current -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_flatten(out)[0]:
            if isinstance(tensor, torch.Tensor):
                storage = tensor.untyped_storage()
                key = id(storage)
                if key not in self._seen:
                    nbytes = storage.nbytes()
                    self._seen[key] = weakref.ref(storage, lambda _, k=key, n=nbytes: self._free(k, n))
                    self.current += nbytes
                    self.peak = max(self.peak, self.current)
        return out


def estimate(models: real.Models, *, batch: int, checkpointing: bool, batched_decode: bool = False) -> float:
    """Peak MiB of the storages the grad step creates (fake tensors: nothing is computed)."""
    models.checkpointing(checkpointing)
    models.checkpointed_decode = checkpointing and not batched_decode
    negative = torch.nn.Parameter(torch.zeros(1, 77, models.width))
    optimizer = torch.optim.AdamW([negative], lr=1e-3)
    prompts = torch.zeros(batch, 77, models.width, dtype=models.dtype)
    tokens = torch.zeros(batch, 77, dtype=torch.long)
    latents = torch.zeros(batch, 4, models.latent, models.latent)
    t, alpha = 999, 0.0047  # SD's last-but-one DDIM time: the memory does not depend on it
    frozen = [x for m in (models.unet, models.vae, models.text, models.clip) for x in (*m.parameters(), *m.buffers())]
    counter = LiveBytes(ignore=frozen)
    with counter:
        real.grad_step(models, negative, optimizer, latents=latents, t=t, alpha=alpha, prompts=prompts,
                       tokens=tokens, scale=7.5)
    return counter.peak / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny models of the same classes")
    parser.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp32"])
    parser.add_argument("--batches", default="1,2,8", type=real.batch_list, help="comma-separated batch sizes")
    parser.add_argument("--batched-decode", action="store_true",
                        help="with checkpointing, decode the batch at once (the VAE's block checkpointing alone: "
                             "reneg before its per-sample decode)")
    args = parser.parse_args()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
    rows = []
    with FakeTensorMode(allow_non_fake_inputs=True):
        models = real.Models(tiny=args.tiny, device=torch.device("cpu"), dtype=dtype)
        parameters_mib = sum(p.numel() * p.element_size() for m in (models.unet, models.vae, models.text,
                                                                        models.clip) for p in m.parameters()) / 2**20
        for batch in args.batches:
            for checkpointing in (True, False):
                rows.append({"batch": batch, "checkpointing": checkpointing,
                             "step_peak_mib": round(estimate(models, batch=batch, checkpointing=checkpointing,
                                                             batched_decode=args.batched_decode), 1)})
                print(json.dumps(rows[-1]), flush=True)
    decode = "batched decode" if args.batched_decode else "per-sample decode under checkpointing"
    print(f"\nfake-tensor count, {'tiny' if args.tiny else 'SD1.5-size'} models in {args.dtype}, {decode} "
          f"({parameters_mib:.0f} MiB of parameters, not counted), {models.resolution}², the grad step\n")
    print("| batch | checkpointing | step peak MiB (counted) |\n| --- | --- | --- |")
    for r in rows:
        print(f"| {r['batch']} | {'on' if r['checkpointing'] else 'off'} | {r['step_peak_mib']:.0f} |")


if __name__ == "__main__":
    main()
