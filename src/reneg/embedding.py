"""``NegativeEmbedding``: a learned negative embedding, its file format, and how it meets a pipeline.

The embedding lives in the text encoder's *output* space (ReNeg Sec. 4): a
``(L, D)`` tensor that stands where diffusers would put the encoding of the
negative prompt, and enters through the public ``negative_prompt_embeds``::

    neg = NegativeEmbedding.load("neg.safetensors").for_pipeline(pipe)
    images = pipe(prompts, negative_prompt_embeds=neg.expand(len(prompts)),
                  num_images_per_prompt=n).images

File format (safetensors): tensor ``negative_embedding`` ``(L, D)``, for SDXL and SD3 also
``negative_pooled_embedding`` ``(P,)``; string metadata with ``format`` =
``reneg.negative_embedding``, ``version`` = ``1``, ``text_encoder_fingerprint``,
``base_model`` and the training settings. Plain ``.pt``/``.pth``/``.bin`` tensors
(the form of the ReNeg authors' releases) are read with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import operator
import os
import pickle
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .core.fingerprint import combined_fingerprint, fingerprints_match
from .errors import ReNegError, why_not_a_file
from .io import atomic_path, sort_safetensors_metadata

FORMAT = "reneg.negative_embedding"
VERSION = "1"
EMBEDDING_KEY = "negative_embedding"
POOLED_KEY = "negative_pooled_embedding"
#: One fp32 value that sorts before every other key: it keeps every textual-inversion loader away from a reneg file
#: (diffusers and A1111/Forge refuse a file of two or more tensors, ComfyUI ignores a first tensor of width 1,
#: InvokeAI finds no model base of token width 1; :mod:`reneg.export.layout` has each loader's rule). Readers
#: ignore it: a file without it (written before 2026-12-05) reads the same.
MARKER_KEY = "_reneg_not_a_textual_inversion"


def marker() -> torch.Tensor:
    """The value of :data:`MARKER_KEY`."""
    return torch.ones(1, dtype=torch.float32)
FINGERPRINT_KEY = "text_encoder_fingerprint"
TORCH_SUFFIXES = (".pt", ".pth", ".bin")
#: The weights file of a Hub-style folder (``reneg export --to diffusers``; :meth:`NegativeEmbedding.from_pretrained`).
HUB_FILENAME = "negative_embedding.safetensors"
#: Keys of input-space textual-inversion files (A1111 ``.pt``/``.safetensors``, SDXL, ComfyUI).
TEXTUAL_INVERSION_KEYS = ("string_to_param", "string_to_token", "emb_params", "clip_l", "clip_g")


# ---------------------------------------------------------------- validation


def _shape(tensor: torch.Tensor) -> str:
    return str(tuple(tensor.shape))


def _as_embedding(tensor, *, source: str) -> torch.Tensor:
    """A finite float ``(L, D)`` or ``(1, L, D)`` tensor as ``(L, D)`` fp32 on the CPU, else ReNegError."""
    if not isinstance(tensor, torch.Tensor):
        raise ReNegError(f"{source}: expected a tensor, got {type(tensor).__name__}")
    if not tensor.is_floating_point():
        raise ReNegError(f"{source}: expected a floating-point tensor, got dtype {tensor.dtype}")
    if tensor.ndim == 3 and tensor.shape[0] == 1:
        tensor = tensor[0]
    if tensor.ndim != 2 or 0 in tensor.shape:
        raise ReNegError(
            f"{source}: tensor has shape {_shape(tensor)}; a negative embedding has shape (L, D) or (1, L, D), "
            "L tokens by the text encoder's width D (e.g. (77, 768) for SD1.5)"
        )
    return _finite_fp32(tensor, source=source)


def _as_pooled(tensor, *, source: str) -> torch.Tensor:
    """A finite float ``(P,)`` or ``(1, P)`` tensor as ``(P,)`` fp32 on the CPU, else ReNegError."""
    if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
        raise ReNegError(f"{source}: the pooled negative embedding must be a floating-point tensor")
    if tensor.ndim == 2 and tensor.shape[0] == 1:
        tensor = tensor[0]
    if tensor.ndim != 1 or tensor.shape[0] == 0:
        raise ReNegError(f"{source}: pooled negative embedding has shape {_shape(tensor)}; expected (P,)")
    return _finite_fp32(tensor, source=source)


def _finite_fp32(tensor: torch.Tensor, *, source: str) -> torch.Tensor:
    tensor = tensor.detach().to(device="cpu", dtype=torch.float32).contiguous()
    if not torch.isfinite(tensor).all():
        raise ReNegError(f"{source}: the tensor contains NaN or inf values: the file is corrupt or its training "
                         "diverged; use another file")
    largest = tensor.abs().max().item() if tensor.numel() else 0.0
    if largest > MAX_ABS:
        raise ReNegError(f"{source}: the tensor holds values up to {largest:.3g}, far outside any text encoder's "
                         f"output (|x| < {MAX_ABS:g}): it would turn every image into NaN; use another file")
    return tensor


#: The largest magnitude a text encoder's output reaches (CLIP, OpenCLIP and T5 stay below a few hundred).
MAX_ABS = 1e4


def _textual_inversion_error(path: Path) -> ReNegError:
    return ReNegError(
        f"{path} is a textual inversion file: it holds input-space token vectors, but reneg needs an "
        "output-space negative embedding (the text encoder's output, shape (L, D)); "
        "load it with diffusers' pipe.load_textual_inversion instead, or learn one with `reneg train`"
    )


def _looks_like_textual_inversion(keys) -> bool:
    """Whether a file's keys are those of a textual-inversion embedding (A1111, SDXL, diffusers ``<token>``)."""
    keys = [str(k) for k in keys]
    if any(k == m or k.startswith(m + ".") for k in keys for m in TEXTUAL_INVERSION_KEYS):
        return True
    return len(keys) == 1 and keys[0].startswith("<") and keys[0].endswith(">")


# ---------------------------------------------------------------- readers


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """All tensors and the metadata of a safetensors file, or ReNegError."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            keys = list(f.keys())
            if _looks_like_textual_inversion(keys):
                raise _textual_inversion_error(path)
            for key in (k for k in keys if k in (EMBEDDING_KEY, POOLED_KEY)):  # sizes from the header first
                _check_size(path, f.get_slice(key).get_shape())
            tensors = {k: f.get_tensor(k) for k in keys if k in (EMBEDDING_KEY, POOLED_KEY)}
            metadata = dict(f.metadata() or {})
    except ReNegError:
        raise
    except Exception as exc:  # safetensors raises its own error types for a bad header
        raise ReNegError(f"{path} is not a readable safetensors file ({exc}); re-download or re-export it") from None
    if EMBEDDING_KEY not in tensors:
        raise ReNegError(
            f"{path} has no tensor '{EMBEDDING_KEY}' (it holds {sorted(keys)}); "
            "reneg reads negative embeddings written by `reneg train` or plain (L, D) tensors in .pt files"
        )
    return tensors, metadata


#: The most values a negative embedding may hold: far above any text encoder's output (T5-XXL's 512 x 4096 is
#: 2 M), so a file larger than this is refused before it is read whole.
MAX_ELEMENTS = 16 * 2**20


def _check_size(path: Path, shape) -> None:
    elements = 1
    for size in shape:
        elements *= int(size)
    if elements > MAX_ELEMENTS:
        raise ReNegError(f"{path} holds a tensor of shape {tuple(shape)} ({elements:,} values), far larger than "
                         f"any text encoder's output (at most {MAX_ELEMENTS:,}): it is not a negative embedding")


def _read_torch(path: Path) -> torch.Tensor:
    """The one tensor of a ``.pt``/``.pth``/``.bin`` file, loaded with ``weights_only=True``, or ReNegError."""
    if path.stat().st_size > 4 * MAX_ELEMENTS + 2**20:  # fp32 values and a pickle's header: read whole, so first
        raise ReNegError(f"{path} is {path.stat().st_size / 2**20:.0f} MiB, far larger than any negative "
                         "embedding: it is not one (pass the file `reneg train` wrote)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError for unsafe pickles, RuntimeError for a broken archive, ...
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, pickle.UnpicklingError) and first_line.startswith("Weights only load failed"):
            first_line = "it holds Python objects other than tensors, which are never unpickled"  # torch's own
            # text here goes on to explain how to unpickle it anyway: advice reneg must not pass on
        raise ReNegError(
            f"{path} cannot be loaded safely with torch.load(weights_only=True) ({first_line}); "
            "reneg only reads plain tensors from .pt/.pth/.bin files"
        ) from None
    if isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, dict):
        if _looks_like_textual_inversion(obj.keys()):
            raise _textual_inversion_error(path)
        tensors = [v for v in obj.values() if isinstance(v, torch.Tensor)]
        if len(tensors) == 1:
            return tensors[0]
        raise ReNegError(
            f"{path} holds a dict with {len(tensors)} tensors (keys {sorted(map(str, obj.keys()))}); "
            "expected one tensor of shape (L, D) or (1, L, D)"
        )
    raise ReNegError(f"{path} holds a {type(obj).__name__}; expected one tensor of shape (L, D) or (1, L, D)")


def _check_version(path: Path, metadata: dict[str, str]) -> None:
    if metadata.get("format") == FORMAT and metadata.get("version", VERSION) != VERSION:
        raise ReNegError(
            f"{path} has negative-embedding format version {metadata['version']}, this reneg reads version "
            f"{VERSION}; upgrade reneg"
        )


# ---------------------------------------------------------------- writer


def _write_atomically(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """safetensors written atomically (:func:`reneg.io.atomic_path`): no leftovers on failure."""
    try:
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=metadata)
            sort_safetensors_metadata(tmp)  # identical runs write identical bytes
    except OSError as exc:
        raise ReNegError(f"cannot write {path}: {exc.strerror or exc}; choose a writable --out location") from None


# ---------------------------------------------------------------- the dataclass


@dataclass
class NegativeEmbedding:
    """A negative embedding in the text encoder's output space, with its file metadata.

    Attributes:
        tensor: ``(L, D)`` fp32 on the CPU (a ``(1, L, D)`` input is squeezed).
        metadata: string metadata (``text_encoder_fingerprint``, ``base_model``,
            training settings, ...).
        pooled: the pooled negative embedding ``(P,)`` of SDXL and SD3, or None.
    """

    tensor: torch.Tensor
    metadata: dict[str, str] = field(default_factory=dict)
    pooled: torch.Tensor | None = None

    def __post_init__(self) -> None:
        self.tensor = _as_embedding(self.tensor, source="negative embedding")
        if self.pooled is not None:
            self.pooled = _as_pooled(self.pooled, source="negative embedding")
        self.metadata = {str(k): str(v) for k, v in self.metadata.items()}

    @property
    def shape(self) -> tuple[int, int]:
        """``(L, D)``."""
        return tuple(self.tensor.shape)

    # ------------------------------------------------------------ files

    def save(self, path: str | os.PathLike) -> Path:
        """Write a ``.safetensors`` file atomically (fp32; metadata as strings, with ``format`` and ``version``).

        Args:
            path: destination; its directory is created if missing.

        Returns:
            The path written.
        """
        path = Path(path)
        if path.suffix.lower() != ".safetensors":
            raise ReNegError(f"{path}: negative embeddings are written as .safetensors; give a path ending in "
                             ".safetensors")
        tensors = {MARKER_KEY: marker(), EMBEDDING_KEY: self.tensor.contiguous()}
        if self.pooled is not None:
            tensors[POOLED_KEY] = self.pooled.contiguous()
        metadata = {**self.metadata, "format": FORMAT, "version": VERSION}
        _write_atomically(path, tensors, metadata)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> NegativeEmbedding:
        """Read a negative embedding: reneg ``.safetensors``, or a plain tensor in ``.pt``/``.pth``/``.bin``.

        fp16/bf16 tensors are upcast to fp32. Raises ReNegError for a missing
        file, an unknown suffix, a textual-inversion file, an unsafe pickle, a
        shape other than ``(L, D)``/``(1, L, D)``, or NaN/inf values.
        """
        path = Path(path)
        if not path.is_file():
            raise ReNegError(f"negative embedding file {path} {why_not_a_file(path)}: pass the .safetensors (or .pt) "
                             "file that `reneg train` wrote")
        suffix = path.suffix.lower()
        if suffix == ".safetensors":
            tensors, metadata = _read_safetensors(path)
            _check_version(path, metadata)
            pooled = tensors.get(POOLED_KEY)
            return cls(
                _as_embedding(tensors[EMBEDDING_KEY], source=str(path)),
                metadata,
                None if pooled is None else _as_pooled(pooled, source=str(path)),
            )
        if suffix in TORCH_SUFFIXES:
            return cls(_as_embedding(_read_torch(path), source=str(path)), {})
        raise ReNegError(
            f"{path}: unknown negative-embedding file type '{path.suffix}'; use .safetensors, .pt, .pth or .bin"
        )

    @classmethod
    def from_pretrained(cls, path_or_id: str | os.PathLike, *, filename: str = HUB_FILENAME) -> NegativeEmbedding:
        """Read a Hub-style folder (``reneg export --to diffusers``), by path or by hub id from the local cache only.

        Args:
            path_or_id: the folder, or ``"org/name"`` already in the Hugging Face cache (never downloaded: a miss
                raises ReNegError that says how to make it available).
            filename: the weights file in the folder.
        """
        from .models.hub import resolve

        folder = Path(resolve(str(path_or_id), what="negative embedding"))
        if folder.is_file():
            return cls.load(folder)
        if not (folder / filename).is_file():
            raise ReNegError(f"{folder} has no {filename}: pass a folder written by `reneg export --to diffusers`")
        return cls.load(folder / filename)

    # ------------------------------------------------------------ pipelines

    def check_compatible(self, *, text_encoder, tokenizer, text_encoder_2=None, text_length: int | None = None) -> None:
        """Raise ReNegError unless this embedding fits these text encoder(s); warn if it has no fingerprint.

        Args:
            text_encoder: the pipeline's text encoder (may be None when
                ``text_encoder_2`` is given, as in the SDXL refiner).
            tokenizer: its tokenizer; ``L`` must equal ``tokenizer.model_max_length``.
            text_encoder_2: SDXL's second text encoder; ``D`` is then the sum of
                both widths and a pooled embedding is required.
            text_length: ``L`` where the pipeline pads to its own length (PixArt's 120 T5 tokens).
        """
        encoders = [te for te in (text_encoder, text_encoder_2) if te is not None]
        if not encoders:
            raise ReNegError("the pipeline has no text encoder; a negative embedding needs one")
        expected = (int(text_length or tokenizer.model_max_length), sum(int(te.config.hidden_size) for te in encoders))
        if self.shape != expected:
            raise ReNegError(
                f"negative embedding has shape {self.shape} but this pipeline's text encoder gives {expected}; "
                "use an embedding trained for this base model"
            )
        if text_encoder_2 is not None and self.pooled is None:
            raise ReNegError("this pipeline has two text encoders (SDXL) and needs a pooled negative embedding, "
                             "which this file lacks")
        self._check_fingerprint(combined_fingerprint(encoders))

    def _check_fingerprint(self, actual: str) -> None:
        stored = self.metadata.get(FINGERPRINT_KEY)
        if not stored:
            warnings.warn(
                "negative embedding has no text_encoder_fingerprint; cannot check that it was learned "
                "for this text encoder (its shape fits, so it is used)",
                UserWarning,
                stacklevel=3,
            )
            return
        if not fingerprints_match(stored, actual):
            raise ReNegError(
                f"negative embedding was learned for another text encoder: file fingerprint {stored} != "
                f"pipeline fingerprint {actual}; use an embedding trained for this base model"
            )

    def for_pipeline(self, pipe) -> NegativeEmbedding:
        """Check that this embedding fits ``pipe``'s text encoder(s) and return self; else one-line ReNegError.

        The pipeline's family gives the expected ``(L, D)`` and pooled size ``P``
        (SD: (77, 768) and none; SDXL: (77, 2048) and 1280; SD3: (333, 4096) and
        2048). A mismatch names the text encoders on both sides; a matching shape
        is then checked against the stored fingerprint (:meth:`check_compatible`'s rule).
        """
        from .families import family_for

        family = family_for(pipe)
        (length, width), pooled = family.negative_shape()
        ours = None if self.pooled is None else int(self.pooled.shape[0])
        if self.shape != (length, width) or ours != pooled:
            encoders = " + ".join(type(e).__name__ for e in family.text_encoders())
            raise ReNegError(
                f"negative embedding of shape {_describe(self.shape, ours)} was learned for {self._learned_for()}, "
                f"but this {type(pipe).__name__} ({family.description}) with text encoder(s) {encoders} needs "
                f"shape {_describe((length, width), pooled)}; use an embedding trained for this base model"
            )
        self._check_fingerprint(family.fingerprint())
        return self

    def _learned_for(self) -> str:
        """The text encoders named in the file's fingerprint (and its family), or what its shape says."""
        stored = self.metadata.get(FINGERPRINT_KEY, "")
        names = [part.split(":")[1] for part in stored.split("|") if part.count(":") >= 2]
        family = self.metadata.get("family")
        if names:
            return (f"{family} " if family else "") + "text encoder(s) " + " + ".join(names)
        return f"a text encoder of width {self.shape[1]}" + (" with a pooled output" if self.pooled is not None
                                                             else "") + " (the file names none)"

    def expand(self, batch_size: int, *, device=None, dtype=None) -> torch.Tensor:
        """``(batch_size, L, D)`` view of the embedding, for diffusers' ``negative_prompt_embeds``.

        Pass ``batch_size = len(prompts)`` (the number of prompts, *not* prompts
        times ``num_images_per_prompt``): diffusers' ``encode_prompt`` itself
        repeats ``negative_prompt_embeds`` ``num_images_per_prompt`` times, by
        ``.repeat(1, n, 1).view(batch_size * n, L, -1)``, which silently mangles
        the last dimension (and then fails in the UNet) if any other batch is
        given. The result is an ``expand`` view (no copy; do not write into it).

        Args:
            batch_size: number of prompts in the pipeline call.
            device: target device (diffusers also moves it to the text
                encoder's device itself).
            dtype: target dtype (diffusers also casts it to the text encoder's
                dtype itself).
        """
        return self.tensor.to(device=device, dtype=dtype).unsqueeze(0).expand(_batch(batch_size), -1, -1)

    def expand_pooled(self, batch_size: int, *, device=None, dtype=None) -> torch.Tensor:
        """``(batch_size, P)`` view of the pooled part (SDXL, SD3: ``negative_pooled_prompt_embeds``); same batch
        rule as :meth:`expand`."""
        if self.pooled is None:
            raise ReNegError("this negative embedding has no pooled part (it is not an SDXL or SD3 embedding)")
        return self.pooled.to(device=device, dtype=dtype).unsqueeze(0).expand(_batch(batch_size), -1)


def _describe(shape: tuple[int, int], pooled: int | None) -> str:
    return f"{tuple(shape)}" + (f" + pooled ({pooled},)" if pooled is not None else " without a pooled part")


def _batch(batch_size: int) -> int:
    """``batch_size`` as a positive int, else ValueError."""
    try:
        size = operator.index(batch_size)
    except TypeError:
        size = 0
    if isinstance(batch_size, bool) or size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    return size


# ---------------------------------------------------------------- the null text


def null_text_embedding(pipe_or_pair) -> torch.Tensor:
    """The text encoder's output for ``""``, ``(L, D)`` fp32 on the CPU: diffusers' default negative.

    Args:
        pipe_or_pair: a pipeline of a supported family, or a ``(tokenizer, text_encoder)`` pair of a
            single-text-encoder model (computed as ``StableDiffusionPipeline.encode_prompt`` does, see
            :func:`reneg.families.sd.null_text`).
    """
    from .families import family_for
    from .families.sd import null_text

    if isinstance(pipe_or_pair, tuple):
        return null_text(*pipe_or_pair)
    return family_for(pipe_or_pair).null_text().embeds[0]
