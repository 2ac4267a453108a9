"""A text encoder's fingerprint: which text encoder a negative embedding was learned for.

A negative embedding lives in the *output* space of one particular text encoder,
so applying it with another one (SD1.5's CLIP-L vs SD2.1's OpenCLIP-H, or two
different trainings of the same architecture) is meaningless. The fingerprint
lets ``reneg`` refuse that, while accepting the same text encoder loaded in
fp32, fp16 or bf16 on any device. A hash cannot survive dtype rounding, so the
fingerprint is a structural part compared exactly plus a numeric signature
compared with a tolerance::

    te1:CLIPTextModel:d768:l12:v49408:m0,a0,m1,a1,...,m7,a7

``d``, ``l``, ``v`` are the hidden size, the number of layers and the vocabulary
size; ``m_i``/``a_i`` the float64 mean and mean-abs (``%.6e``) of 8 evenly spaced
parameter tensors of at least 1024 elements, in the order of their sorted names.

SDXL-style pipelines with two text encoders use :func:`pipeline_fingerprint`,
the encoders' fingerprints joined by ``|``.
"""

from __future__ import annotations

import math

import torch

#: Version tag of the fingerprint scheme (the first field).
SCHEME = "te1"
#: Number of parameter tensors that enter the numeric signature.
NUM_SAMPLED_TENSORS = 8
#: Smallest tensor (in elements) that enters the signature, so bf16 rounding averages out.
MIN_SAMPLED_NUMEL = 1024
#: Separator between the fingerprints of several text encoders (``%e`` never writes it).
ENCODER_SEPARATOR = "|"
#: Elements reduced at a time, to bound the float64 copy of a large embedding table.
_CHUNK = 1 << 22


def _config_field(config, name: str):
    """``config.name``, or the same field of a nested ``text_config``, or ``"?"``."""
    for source in (config, getattr(config, "text_config", None)):
        value = getattr(source, name, None) if source is not None else None
        if value is not None:
            return value
    return "?"


def _structure(text_encoder) -> str:
    """The exact-match part: scheme, class name, width, depth and vocabulary size."""
    config = text_encoder.config
    return ":".join([
        SCHEME,
        type(text_encoder).__name__,
        f"d{_config_field(config, 'hidden_size')}",
        f"l{_config_field(config, 'num_hidden_layers')}",
        f"v{_config_field(config, 'vocab_size')}",
    ])


def _sampled_parameters(text_encoder) -> list[torch.Tensor]:
    """Up to 8 parameter tensors, evenly spaced over the parameters sorted by name.

    Only tensors of at least ``MIN_SAMPLED_NUMEL`` elements take part (all of
    them when fewer than 8 qualify): bf16 rounds each element by up to 2^-8
    relative, so a small tensor's mean can move by more than the tolerance,
    while over >= 1024 elements the rounding errors average out far below it.
    """
    params = sorted(text_encoder.named_parameters(), key=lambda item: item[0])
    large = [item for item in params if item[1].numel() >= MIN_SAMPLED_NUMEL]
    params = large if len(large) >= NUM_SAMPLED_TENSORS else params
    if not params:
        return []
    count = min(NUM_SAMPLED_TENSORS, len(params))
    if count == 1:
        return [params[0][1]]
    indices = sorted({round(i * (len(params) - 1) / (count - 1)) for i in range(count)})
    return [params[i][1] for i in indices]


@torch.no_grad()
def _mean_and_mean_abs(tensor: torch.Tensor) -> tuple[float, float]:
    """Float64 mean and mean of absolute values, on the CPU, in bounded-size chunks."""
    flat = tensor.detach().reshape(-1)
    total, total_abs = 0.0, 0.0
    for start in range(0, flat.numel(), _CHUNK):
        chunk = flat[start : start + _CHUNK].to(device="cpu", dtype=torch.float64)
        total += chunk.sum().item()
        total_abs += chunk.abs().sum().item()
    n = max(flat.numel(), 1)
    return total / n, total_abs / n


def text_encoder_fingerprint(text_encoder) -> str:
    """Fingerprint of a transformers text model, equal across fp32/fp16/bf16 and devices.

    Detects: a different text encoder, whether another architecture, size or
    vocabulary (exact structural prefix), or the same architecture with
    other weights (another training, another random init), through the mean and
    mean-abs of 8 parameter tensors. Does not detect: a very light fine-tune
    that moves those statistics by less than the tolerance of
    :func:`fingerprints_match` (relative 1e-3), nor changes confined to
    parameters outside the 8 sampled tensors.

    Args:
        text_encoder: any ``transformers`` text model (``CLIPTextModel``,
            ``CLIPTextModelWithProjection``, ``T5EncoderModel``, ...), in any
            dtype, on any device.

    Returns:
        ``"te1:<Class>:d<hidden>:l<layers>:v<vocab>:"`` followed by 16
        comma-separated ``%.6e`` numbers (mean, mean-abs per sampled tensor).
    """
    numbers = []
    for tensor in _sampled_parameters(text_encoder):
        mean, mean_abs = _mean_and_mean_abs(tensor)
        numbers += [f"{mean:.6e}", f"{mean_abs:.6e}"]
    return f"{_structure(text_encoder)}:{','.join(numbers)}"


def pipeline_fingerprint(pipe) -> str:
    """Fingerprint of a pipeline's text encoder(s): ``text_encoder`` then ``text_encoder_2``, joined by ``|``."""
    encoders = [getattr(pipe, name, None) for name in ("text_encoder", "text_encoder_2")]
    return combined_fingerprint([te for te in encoders if te is not None])


def combined_fingerprint(text_encoders) -> str:
    """The fingerprints of several text encoders (SDXL's two), joined by ``|``."""
    return ENCODER_SEPARATOR.join(text_encoder_fingerprint(te) for te in text_encoders)


def _split(fingerprint: str) -> tuple[str, list[float]] | None:
    """(structural prefix, numbers) of one encoder's fingerprint, or None when malformed."""
    prefix, sep, numbers = fingerprint.strip().rpartition(":")
    if not sep or not prefix.startswith(SCHEME + ":"):
        return None
    try:
        values = [float(x) for x in numbers.split(",")] if numbers else []
    except ValueError:
        return None
    if len(values) % 2 or not all(math.isfinite(v) for v in values):
        return None
    return prefix, values


def _one_matches(a: str, b: str, *, rtol: float) -> bool:
    """Whether two single-encoder fingerprints match (see :func:`fingerprints_match`)."""
    parsed_a, parsed_b = _split(a), _split(b)
    if parsed_a is None or parsed_b is None:
        return False
    (prefix_a, values_a), (prefix_b, values_b) = parsed_a, parsed_b
    if prefix_a != prefix_b or len(values_a) != len(values_b):
        return False
    for i in range(0, len(values_a), 2):
        mean_a, abs_a, mean_b, abs_b = values_a[i], values_a[i + 1], values_b[i], values_b[i + 1]
        scale = rtol * max(abs_a, abs_b)
        if abs(mean_a - mean_b) > scale or abs(abs_a - abs_b) > scale:
            return False
    return True


def fingerprints_match(a: str, b: str, *, rtol: float = 1e-3) -> bool:
    """Whether two fingerprints name the same text encoder(s), up to dtype rounding.

    The structural prefixes must be identical; each sampled tensor's pair
    (mean, mean_abs) matches when ``|Δmean| <= rtol·mean_abs`` and
    ``|Δmean_abs| <= rtol·mean_abs`` (mean_abs being the larger of the two).
    A malformed fingerprint matches nothing. Multi-encoder fingerprints
    (``|``-joined) match encoder by encoder.
    """
    parts_a, parts_b = a.split(ENCODER_SEPARATOR), b.split(ENCODER_SEPARATOR)
    return len(parts_a) == len(parts_b) and all(_one_matches(x, y, rtol=rtol) for x, y in zip(parts_a, parts_b))


def denoiser_fingerprint(model) -> str:
    """Fingerprint of a denoising network (a UNet, a transformer): which base weights an adapter was trained on.

    ``dn1:<Class>:<numbers>``: the class name, then the mean and mean-abs of 8 sampled parameter tensors as in
    :func:`text_encoder_fingerprint` (equal across dtypes and devices up to :func:`fingerprints_match`'s tolerance).
    """
    numbers = []
    for tensor in _sampled_parameters(_without_adapters(model)):
        mean, mean_abs = _mean_and_mean_abs(tensor)
        numbers += [f"{mean:.6e}", f"{mean_abs:.6e}"]
    return f"dn1:{type(model).__name__}:{','.join(numbers)}"


class _without_adapters:  # noqa: N801 - a view, used like a function
    """The model's named parameters without peft adapter weights (``lora_`` tensors), names as without peft."""

    def __init__(self, model):
        self._params = [(name.replace(".base_layer", ""), p) for name, p in model.named_parameters()
                        if "lora_" not in name]

    def named_parameters(self):
        return iter(self._params)


def denoisers_match(a: str, b: str, *, rtol: float = 1e-3) -> bool:
    """Whether two :func:`denoiser_fingerprint` strings name the same base weights (up to dtype rounding)."""
    return _one_matches(a.replace("dn1:", SCHEME + ":", 1), b.replace("dn1:", SCHEME + ":", 1), rtol=rtol)
