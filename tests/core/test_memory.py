"""Gradient checkpointing's per-sample decode: the same images and gradient, less memory (counted on fake tensors)."""

import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from benchmarks.memory_estimate import LiveBytes
from reneg.core.family import decode_per_sample
from reneg.core.sampling import decode
from reneg.models.tiny import tiny_sd_pipeline


def _vae():
    vae = tiny_sd_pipeline().vae.requires_grad_(False)
    vae.enable_gradient_checkpointing()
    return vae


def test_per_sample_decode_gives_the_batched_images_and_gradient():
    vae = _vae()
    latents = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    results = []
    for per_sample in (False, True):
        x = latents.clone().requires_grad_(True)
        images = decode_per_sample(lambda z: decode(vae, z), x) if per_sample else decode(vae, x)
        (images * torch.linspace(0, 1, images.numel()).view_as(images)).sum().backward()
        results.append((images.detach(), x.grad))
    assert torch.allclose(results[0][0], results[1][0], atol=1e-5)  # batch-dependent rounding (1.9e-6 here)
    assert results[0][1].abs().sum() > 0
    assert torch.allclose(results[0][1], results[1][1], rtol=1e-4, atol=1e-4)  # |grad| up to 10, rounding 1.5e-5


def test_per_sample_decode_holds_one_samples_activations():
    """The counted peak of decode + backward grows with the batch when decoded batched, not when per sample."""
    peaks = {}
    with FakeTensorMode(allow_non_fake_inputs=True):
        vae = _vae()
        frozen = [*vae.parameters(), *vae.buffers()]
        for per_sample in (False, True):
            for batch in (1, 4):
                x = torch.zeros(batch, 4, 8, 8, requires_grad=True)
                counter = LiveBytes(ignore=frozen)
                with counter:
                    images = decode_per_sample(lambda z: decode(vae, z), x) if per_sample else decode(vae, x)
                    images.sum().backward()
                peaks[per_sample, batch] = counter.peak
    assert peaks[False, 4] > 3 * peaks[False, 1]
    assert peaks[True, 4] < 1.5 * peaks[True, 1]
    assert peaks[True, 4] < 0.5 * peaks[False, 4]
