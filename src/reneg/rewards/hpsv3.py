"""HPSv3 (Ma et al. 2025, arXiv 2508.03789): a Qwen2-VL-7B preference model; the score is the mu of its (mu, sigma).

Reference: the ``hpsv3`` package (PyPI 1.0.0, MizzenAI/HPSv3), ``hpsv3/inference.py``
(``HPSv3RewardInferencer.prepare_batch`` and ``reward``), ``hpsv3/model/qwen2vl_trainer.py``
(``Qwen2VLRewardModelBT``), ``hpsv3/train.py`` (``create_model_and_processor``), ``hpsv3/dataset/utils.py``
(``fetch_image``, ``smart_resize``), ``hpsv3/dataset/data_collator_qwen.py`` (``INSTRUCTION``,
``prompt_with_special_token``) and ``hpsv3/config/HPSv3_7B.yaml``. The package pins transformers 4.45.2; this
module rebuilds the same computation on transformers 5's Qwen2-VL modules:

1. image: ``fetch_image`` resizes to ``smart_resize(H, W, factor=28, min_pixels=max_pixels=256*28*28)`` (both
   sides multiples of 28, about 200,704 pixels: 448x448 for a square) with PIL bicubic on the uint8 image;
   Qwen2-VL's image processor then leaves that size as it is, rescales by 1/255, normalises with
   ``preprocessor_config.json``'s mean/std (OpenAI CLIP's) and cuts (grid_t, grid_h, grid_w) = (1, H/14, W/14)
   patches, the image repeated twice along time (temporal patch 2) and the patches ordered by 2x2 merge
   groups. Here: uint8 rounding straight-through, the PIL-faithful separable bicubic of
   :class:`.clip.ClipPreprocess`, the same normalisation and patch order, all in torch;
2. text: one user turn, the image then ``INSTRUCTION.format(text_prompt=prompt) + prompt_with_special_token``,
   through the base's chat template with the generation prompt; ``<|image_pad|>`` repeated
   ``grid_t*grid_h*grid_w / 4`` times (as Qwen2-VL's processor does); right padding;
3. model: ``Qwen2VLRewardModelBT.forward`` embeds the tokens, scatters the vision tower's merged patch
   embeddings into the ``<|image_pad|>`` positions and runs the decoder with ``position_ids=None``, i.e. plain
   sequential positions on all three M-RoPE axes (the package calls the 4.45 text model directly, bypassing
   ``get_rope_index``'s 3-D image positions); the ``ranknet`` head ``Linear(3584, 1024), ReLU, Dropout,
   Linear(1024, 16), ReLU, Linear(16, 2)`` in fp32 reads the final hidden state at ``<|Reward|>`` (a special
   token appended to the tokenizer, the embedding resized to it);
4. score: ``logits[:, 0]``, the mu of (mu, sigma) (the package's README: "we select miu as the final output").

Files: ``HPSv3.safetensors`` of the model repo ``MizzenAI/HPSv3`` (the whole fine-tuned model in the 4.45
layout ``visual.*``, ``model.*``, ``lm_head.weight``, ``rm_head.*``; ``lm_head`` is not used by the score and
not loaded), and the config, tokenizer, chat template and preprocessor config of the base
``Qwen/Qwen2-VL-7B-Instruct`` (not its weights).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from ..errors import ReNegError
from ..models import hub
from .base import as_scores, check_inputs, freeze, register_reward
from .clip import ClipPreprocess
from .files import CheckpointSource, load_weights, resolve_checkpoint

HPSV3_CHECKPOINT = CheckpointSource("HPSv3 checkpoint", "MizzenAI/HPSv3", ("HPSv3.safetensors",))
#: The base model whose config, tokenizer and chat template HPSv3 uses (``model_name_or_path`` of HPSv3_7B.yaml).
HPSV3_BASE = "Qwen/Qwen2-VL-7B-Instruct"
#: The base's files HPSv3 reads (no weights): the config and tokenizer are required.
BASE_FILES = ("config.json", "tokenizer_config.json")
BASE_DOWNLOAD = f'`hf download {HPSV3_BASE} --exclude "*.safetensors"`'
#: The special token whose final hidden state the reward head reads (``special_tokens`` in train.py).
REWARD_TOKEN = "<|Reward|>"
#: ``prepare_batch``'s ``min_pixels = max_pixels = 256 * 28 * 28``.
PIXELS = 256 * 28 * 28
#: ``smart_resize``'s limit on the aspect ratio.
MAX_ASPECT_RATIO = 200
#: The checkpoint's key prefixes: the parts the score uses, and the one it does not (the LM head).
USED_PREFIXES = ("visual.", "model.", "rm_head.")
UNUSED_PREFIXES = ("lm_head.",)
#: The ``ranknet`` head's Linear layers, as indices of its ``nn.Sequential`` (Linear, ReLU, Dropout, Linear, ReLU,
#: Linear).
HEAD_LINEARS = (0, 3, 5)
HEAD_DROPOUT = 0.05
#: ``INSTRUCTION`` of hpsv3/dataset/data_collator_qwen.py, byte for byte (trailing spaces included).
INSTRUCTION = (
    "\n"
    "You are tasked with evaluating a generated image based on Visual Quality and Text Alignment and give a "
    "overall score to estimate the human preference. Please provide a rating from 0 to 10, with 0 being the "
    "worst and 10 being the best. \n"
    "\n"
    "**Visual Quality:**  \n"
    "Evaluate the overall visual quality of the image. The following sub-dimensions should be considered:\n"
    "- **Reasonableness:** The image should not contain any significant biological or logical errors, such as "
    "abnormal body structures or nonsensical environmental setups.\n"
    "- **Clarity:** Evaluate the sharpness and visibility of the image. The image should be clear and easy to "
    "interpret, with no blurring or indistinct areas.\n"
    "- **Detail Richness:** Consider the level of detail in textures, materials, lighting, and other visual "
    "elements (e.g., hair, clothing, shadows).\n"
    "- **Aesthetic and Creativity:** Assess the artistic aspects of the image, including the color scheme, "
    "composition, atmosphere, depth of field, and the overall creative appeal. The scene should convey a "
    "sense of harmony and balance.\n"
    "- **Safety:** The image should not contain harmful or inappropriate content, such as political, violent, "
    "or adult material. If such content is present, the image quality and satisfaction score should be the "
    "lowest possible. \n"
    "\n"
    "**Text Alignment:**  \n"
    "Assess how well the image matches the textual prompt across the following sub-dimensions:\n"
    "- **Subject Relevance** Evaluate how accurately the subject(s) in the image (e.g., person, animal, "
    "object) align with the textual description. The subject should match the description in terms of number, "
    "appearance, and behavior.\n"
    "- **Style Relevance:** If the prompt specifies a particular artistic or stylistic style, evaluate how "
    "well the image adheres to this style.\n"
    "- **Contextual Consistency**: Assess whether the background, setting, and surrounding elements in the "
    "image logically fit the scenario described in the prompt. The environment should support and enhance the "
    "subject without contradictions.\n"
    "- **Attribute Fidelity**: Check if specific attributes mentioned in the prompt (e.g., colors, clothing, "
    "accessories, expressions, actions) are faithfully represented in the image. Minor deviations may be "
    "acceptable, but critical attributes should be preserved.\n"
    "- **Semantic Coherence**: Evaluate whether the overall meaning and intent of the prompt are captured in "
    "the image. The generated content should not introduce elements that conflict with or distort the "
    "original description.\n"
    "Textual prompt - {text_prompt}\n"
    "\n"
    "\n"
)
#: ``prompt_with_special_token`` of the same file.
PROMPT_SUFFIX = "\nPlease provide the overall ratings of this image: " + REWARD_TOKEN + "\n\nEND\n"


def smart_resize(height: int, width: int, *, factor: int = 28, min_pixels: int = PIXELS,
                 max_pixels: int = PIXELS) -> tuple[int, int]:
    """hpsv3/dataset/utils.py ``smart_resize`` (qwen-vl-utils'): the (height, width) to resize to.

    Both sides are multiples of ``factor`` (rounded, at least ``factor``); if that leaves more than
    ``max_pixels`` (fewer than ``min_pixels``) pixels, the sides are scaled by ``sqrt`` of the ratio and floored
    (ceiled) to multiples of ``factor``. Python's ``round`` (half to even), as the reference.
    """
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise ReNegError(f"HPSv3 takes images of aspect ratio at most {MAX_ASPECT_RATIO}, got {width}x{height}")
    new_height = max(factor, round(height / factor) * factor)
    new_width = max(factor, round(width / factor) * factor)
    if new_height * new_width > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        new_height = math.floor(height / beta / factor) * factor
        new_width = math.floor(width / beta / factor) * factor
    elif new_height * new_width < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        new_height = math.ceil(height * beta / factor) * factor
        new_width = math.ceil(width * beta / factor) * factor
    return new_height, new_width


class Hpsv3Preprocess(ClipPreprocess):
    """[0,1] ``(B,3,H,W)`` -> Qwen2-VL ``pixel_values`` ``(B*grid_h*grid_w, 3*2*14*14)`` and ``grid_thw`` ``(B, 3)``.

    The resize to :func:`smart_resize`'s size is :class:`.clip.ClipPreprocess`'s PIL-faithful bicubic (the
    reference resizes with PIL; uint8 rounding straight-through with ``quantize``), then the normalisation
    and :func:`patchify`.
    """

    def __init__(self, *, patch_size: int = 14, temporal_patch_size: int = 2, merge_size: int = 2,
                 mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD, pixels: int = PIXELS, quantize: bool = True):
        settings = SimpleNamespace(do_resize=True, size={}, resample=3, do_center_crop=False, do_normalize=True,
                                   image_mean=list(mean), image_std=list(std))
        super().__init__(settings, quantize=quantize)
        self.patch_size, self.temporal_patch_size, self.merge_size = patch_size, temporal_patch_size, merge_size
        self.pixels = pixels

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        return smart_resize(height, width, factor=self.patch_size * self.merge_size, min_pixels=self.pixels,
                            max_pixels=self.pixels)

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        normalised = super().__call__(images)
        return patchify(normalised, patch_size=self.patch_size, temporal_patch_size=self.temporal_patch_size,
                        merge_size=self.merge_size)


def patchify(images: torch.Tensor, *, patch_size: int = 14, temporal_patch_size: int = 2,
             merge_size: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Qwen2-VL's patches of normalised ``(B, C, H, W)`` images, each one image repeated ``temporal_patch_size``
    times along time: ``(B * grid_h * grid_w, C * temporal_patch_size * patch_size**2)`` in the image
    processor's order (merge groups of ``merge_size x merge_size`` patches row by row; within a patch: channel,
    time, row, column), and ``grid_thw`` = ``(1, H / patch_size, W / patch_size)`` per image."""
    batch, channels, height, width = images.shape
    grid_h, grid_w = height // patch_size, width // patch_size
    frames = images.unsqueeze(1).expand(batch, temporal_patch_size, channels, height, width)
    patches = frames.reshape(batch, temporal_patch_size, channels, grid_h // merge_size, merge_size, patch_size,
                             grid_w // merge_size, merge_size, patch_size)
    patches = patches.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)  # B, h-group, w-group, h in group, w in group, C, T, p, p
    patches = patches.reshape(batch * grid_h * grid_w, channels * temporal_patch_size * patch_size * patch_size)
    grid = torch.tensor([[1, grid_h, grid_w]] * batch, device=images.device)
    return patches, grid


def reward_head(hidden_size: int, widths: Sequence[int]) -> nn.Sequential:
    """The ``ranknet`` head of ``Qwen2VLRewardModelBT`` (no ``rm_head_kwargs``): ``widths`` = (1024, 16, 2)."""
    first, second, outputs = widths
    return nn.Sequential(nn.Linear(hidden_size, first), nn.ReLU(), nn.Dropout(HEAD_DROPOUT), nn.Linear(first, second),
                         nn.ReLU(), nn.Linear(second, outputs))


class Hpsv3Model(nn.Module):
    """Qwen2-VL's vision tower and decoder with HPSv3's head, named as the checkpoint's keys (``visual``,
    ``model``, ``rm_head``): ``(tokens, patches) -> head outputs (B, 2)`` at the reward token."""

    def __init__(self, visual: nn.Module, model: nn.Module, rm_head: nn.Module, *, image_token_id: int,
                 reward_token_id: int):
        super().__init__()
        self.visual, self.model, self.rm_head = visual, model, rm_head
        self.image_token_id, self.reward_token_id = image_token_id, reward_token_id

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, pixel_values: torch.Tensor,
                image_grid_thw: torch.Tensor) -> torch.Tensor:
        embeds = self.model.embed_tokens(input_ids)
        image_embeds = self.visual(pixel_values.to(self.visual.get_dtype()), grid_thw=image_grid_thw).pooler_output
        image_mask = input_ids == self.image_token_id
        if int(image_mask.sum()) != image_embeds.shape[0]:
            raise ReNegError(f"HPSv3: {int(image_mask.sum())} image tokens for {image_embeds.shape[0]} image "
                             f"embeddings: a prompt may not hold Qwen2-VL's special tokens (<|image_pad|>, ...)")
        embeds = embeds.masked_scatter(image_mask.unsqueeze(-1).expand_as(embeds), image_embeds.to(embeds.dtype))
        # position_ids=None: sequential positions on every M-RoPE axis, as the package's forward runs the decoder.
        hidden = self.model(inputs_embeds=embeds, attention_mask=attention_mask, use_cache=False).last_hidden_state
        reward_mask = input_ids == self.reward_token_id
        if not bool((reward_mask.sum(dim=1) == 1).all()):
            raise ReNegError(f"HPSv3 reads its score at the one {REWARD_TOKEN} of each text: a prompt may not hold "
                             f"Qwen2-VL's or HPSv3's special tokens ({REWARD_TOKEN}, <|image_pad|>, ...)")
        return self.rm_head(hidden[reward_mask].float())


class Hpsv3Reward:
    """HPSv3's mu of each (image, prompt); the model stays loaded, prompt tokens cached for the last batch."""

    name = "hpsv3"

    def __init__(self, model: Hpsv3Model, tokenizer, chat_template: str, preprocess: Hpsv3Preprocess):
        self.model = freeze(model)
        self.tokenizer = tokenizer
        self.chat_template = chat_template
        self.preprocess = preprocess
        self._token_cache: tuple[tuple, object] | None = None

    @property
    def device(self) -> torch.device:
        return self.model.rm_head[0].weight.device

    def texts(self, prompts: Sequence[str], image_tokens: int) -> list[str]:
        """Each prompt's chat text (``prepare_batch``'s message through the chat template), the image placeholder
        repeated ``image_tokens`` times."""
        texts = []
        for prompt in prompts:
            message = [{"role": "user", "content": [
                {"type": "image"}, {"type": "text", "text": INSTRUCTION.format(text_prompt=prompt) + PROMPT_SUFFIX},
            ]}]
            text = self.tokenizer.apply_chat_template(message, chat_template=self.chat_template, tokenize=False,
                                                      add_generation_prompt=True)
            texts.append(text.replace(self.image_token, self.image_token * image_tokens))
        return texts

    @property
    def image_token(self) -> str:
        return self.tokenizer.convert_ids_to_tokens(self.model.image_token_id)

    def tokens(self, prompts: Sequence[str], image_tokens: int):
        """Token ids and attention mask of :meth:`texts`, right-padded, cached for the last prompt list."""
        key = (tuple(prompts), image_tokens)
        if self._token_cache is None or self._token_cache[0] != key:
            tokens = self.tokenizer(self.texts(prompts, image_tokens), padding=True, padding_side="right",
                                    return_tensors="pt")
            self._token_cache = (key, tokens.to(self.device))
        return self._token_cache[1]

    def __call__(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        check_inputs(images, prompts)
        pixel_values, grid = self.preprocess(images.to(self.device))
        image_tokens = int(grid[0].prod()) // self.preprocess.merge_size**2
        tokens = self.tokens(prompts, image_tokens)
        outputs = self.model(tokens.input_ids, tokens.attention_mask, pixel_values, grid)
        return as_scores(outputs[:, 0], images)


# ---------------------------------------------------------------- loading


def resolve_base(base: str | None, checkpoint: Path) -> Path:
    """The directory of the base's files: ``base`` (a directory or a cached hub id); by default the checkpoint's
    directory when it holds them, else the cached ``Qwen/Qwen2-VL-7B-Instruct``."""
    if base is None:
        if all((checkpoint.parent / name).is_file() for name in BASE_FILES):
            return checkpoint.parent
        base = HPSV3_BASE
    try:
        directory = Path(hub.resolve(base, what="HPSv3 base model"))
    except ReNegError:
        raise ReNegError(f"HPSv3 needs the config and tokenizer of its base {HPSV3_BASE} (not its weights), and "
                         f"'{base}' is neither a directory nor in the local hub cache: download them where there "
                         f"is network ({BASE_DOWNLOAD}) and copy the cache here, or pass base=DIR") from None
    missing = [name for name in BASE_FILES if not (directory / name).is_file()]
    if missing:
        raise ReNegError(f"HPSv3 base '{base}' lacks {', '.join(missing)}: get {HPSV3_BASE}'s config and tokenizer "
                         f"files ({BASE_DOWNLOAD})")
    return directory


def read_chat_template(directory: Path, tokenizer) -> str:
    """The processor's chat template (``chat_template.json`` or ``chat_template.jinja``, what the package's
    ``processor.apply_chat_template`` uses), else the tokenizer's."""
    try:
        if (directory / "chat_template.json").is_file():
            return json.loads((directory / "chat_template.json").read_text(encoding="utf-8"))["chat_template"]
        if (directory / "chat_template.jinja").is_file():
            return (directory / "chat_template.jinja").read_text(encoding="utf-8")
    except (OSError, ValueError, KeyError) as error:
        raise ReNegError(f"cannot read the chat template of HPSv3 base '{directory}': {error}") from None
    if tokenizer.chat_template:
        return tokenizer.chat_template
    raise ReNegError(f"HPSv3 base '{directory}' has no chat template (chat_template.json): get {HPSV3_BASE}'s "
                     f"files ({BASE_DOWNLOAD})")


def read_normalisation(directory: Path) -> tuple[list[float], list[float]]:
    """``image_mean`` and ``image_std`` of the base's ``preprocessor_config.json`` (OpenAI CLIP's without one)."""
    path = directory / "preprocessor_config.json"
    if not path.is_file():
        return list(OPENAI_CLIP_MEAN), list(OPENAI_CLIP_STD)
    try:
        settings = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ReNegError(f"cannot read HPSv3 base preprocessor config '{path}': {error}") from None
    return list(settings.get("image_mean", OPENAI_CLIP_MEAN)), list(settings.get("image_std", OPENAI_CLIP_STD))


class CheckpointTensors:
    """The checkpoint's tensors by name, read one at a time (safetensors) so that a 16 GB file is never held
    twice in memory; a ``.pt``/``.pth`` state dict (``{"model": ...}`` unwrapped, as the package does) is loaded."""

    def __init__(self, path: Path):
        self.path = path
        self._handle = None
        try:
            if path.suffix == ".safetensors":
                from safetensors import safe_open

                self._handle = safe_open(str(path), framework="pt", device="cpu")
                self.shapes = {key: tuple(self._handle.get_slice(key).get_shape()) for key in self._handle.keys()}
            else:
                weights = load_weights(path, what=HPSV3_CHECKPOINT.what)
                self._weights = weights.get("model", weights)
                self.shapes = {key: tuple(value.shape) for key, value in self._weights.items()}
        except ReNegError:
            raise
        except Exception as error:  # noqa: BLE001 - an unreadable or truncated file
            raise ReNegError(f"cannot read {HPSV3_CHECKPOINT.what} '{path}': {' '.join(str(error).split())[:300]}"
                             ) from None

    def __getitem__(self, key: str) -> torch.Tensor:
        return self._handle.get_tensor(key) if self._handle is not None else self._weights[key]


def load_into(module: nn.Module, tensors: CheckpointTensors, prefix: str, *, what: str) -> None:
    """Copy ``prefix``-ed checkpoint tensors into ``module``'s parameters and buffers, one at a time, strictly."""
    expected = module.state_dict()
    present = {key[len(prefix):]: shape for key, shape in tensors.shapes.items() if key.startswith(prefix)}
    missing = [key for key in expected if key not in present]
    unexpected = [key for key in present if key not in expected]
    wrong = [key for key in expected if key in present and present[key] != tuple(expected[key].shape)]
    problems = [f"{label} {', '.join(prefix + key for key in keys[:3])}{' ...' if len(keys) > 3 else ''}"
                for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if keys]
    if problems:
        raise ReNegError(f"{what} does not fit HPSv3's architecture ({'; '.join(problems)}): pass the HPSv3 "
                         f"checkpoint ({HPSV3_CHECKPOINT.filenames[0]} of {HPSV3_CHECKPOINT.repo}) and its base "
                         f"{HPSV3_BASE}'s config")
    with torch.no_grad():
        for key, target in expected.items():
            target.copy_(tensors[prefix + key])


def _head_widths(shapes: Mapping[str, tuple[int, ...]], hidden_size: int, *, what: str) -> tuple[int, int, int]:
    keys = [f"rm_head.{index}.weight" for index in HEAD_LINEARS]
    if not all(key in shapes for key in keys) or shapes[keys[0]][1:] != (hidden_size,):
        raise ReNegError(f"{what} has no HPSv3 reward head ({', '.join(keys)} of input width {hidden_size}): pass "
                         f"{HPSV3_CHECKPOINT.filenames[0]} of {HPSV3_CHECKPOINT.repo}")
    return tuple(shapes[key][0] for key in keys)


def load_hpsv3(checkpoint: str | None, *, base: str | None = None, device: torch.device | str = "cpu",
               dtype: torch.dtype = torch.float32) -> Hpsv3Reward:
    """Load HPSv3.

    Args:
        checkpoint: ``HPSv3.safetensors`` (or a ``.pt``/``.pth`` state dict), a directory holding it, or a cached
            hub id (default ``MizzenAI/HPSv3``).
        base: a directory or cached hub id with the base's ``config.json``, tokenizer files, ``chat_template.json``
            and ``preprocessor_config.json``; default: the checkpoint's directory when it holds them, else the
            cached ``Qwen/Qwen2-VL-7B-Instruct``.
        device, dtype: where the frozen model lives (the package runs it in bf16); the head stays fp32.
    """
    from transformers import AutoTokenizer, Qwen2VLConfig
    from transformers.initialization import no_init_weights
    from transformers.models.qwen2_vl.modeling_qwen2_vl import (
        Qwen2VisionTransformerPretrainedModel,
        Qwen2VLTextModel,
    )

    path = resolve_checkpoint(checkpoint, HPSV3_CHECKPOINT)
    directory = resolve_base(base, path)
    try:
        config = Qwen2VLConfig.from_pretrained(directory, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise ReNegError(f"cannot load HPSv3 base '{directory}' as Qwen2-VL's config and tokenizer: "
                         f"{' '.join(str(error).split())[:300]}") from None
    if config.model_type != "qwen2_vl":
        raise ReNegError(f"HPSv3 base '{directory}' is a {config.model_type} model, not Qwen2-VL: use {HPSV3_BASE}")
    tokenizer.add_tokens([REWARD_TOKEN], special_tokens=True)  # create_model_and_processor's special token
    chat_template = read_chat_template(directory, tokenizer)
    mean, std = read_normalisation(directory)

    what = f"{HPSV3_CHECKPOINT.what} '{path}'"
    tensors = CheckpointTensors(path)
    stray = [key for key in tensors.shapes if not key.startswith(USED_PREFIXES + UNUSED_PREFIXES)]
    if stray:
        raise ReNegError(f"{what} does not fit HPSv3's architecture (unexpected {', '.join(stray[:3])}): pass "
                         f"{HPSV3_CHECKPOINT.filenames[0]} of {HPSV3_CHECKPOINT.repo}")
    text_config, vision_config = config.text_config, config.vision_config
    rows = tensors.shapes.get("model.embed_tokens.weight", (text_config.vocab_size,))[0]
    if len(tokenizer) > rows:
        raise ReNegError(f"HPSv3's tokenizer from '{directory}' has {len(tokenizer)} tokens with {REWARD_TOKEN}, more "
                         f"than the checkpoint's {rows} embeddings: use {HPSV3_BASE}'s tokenizer")
    text_config.vocab_size = rows  # the embedding HPSv3's training resized to its tokenizer
    widths = _head_widths(tensors.shapes, text_config.hidden_size, what=what)
    with no_init_weights(), torch.device(device):  # allocated where it runs, filled from the checkpoint below
        visual = Qwen2VisionTransformerPretrainedModel._from_config(vision_config, dtype=dtype)
        decoder = Qwen2VLTextModel._from_config(text_config, dtype=dtype)
        rm_head = reward_head(text_config.hidden_size, widths)
    for prefix, module in zip(USED_PREFIXES, (visual, decoder, rm_head)):
        load_into(module, tensors, prefix, what=what)
    model = Hpsv3Model(visual, decoder, rm_head, image_token_id=config.image_token_id,
                       reward_token_id=tokenizer.convert_tokens_to_ids(REWARD_TOKEN))
    image_token = tokenizer.convert_ids_to_tokens(config.image_token_id)
    if image_token != "<|image_pad|>":
        raise ReNegError(f"HPSv3 base '{directory}': its config's image_token_id {config.image_token_id} is "
                         f"{image_token!r} in its tokenizer, not <|image_pad|>: use {HPSV3_BASE}")
    preprocess = Hpsv3Preprocess(patch_size=vision_config.patch_size,
                                 temporal_patch_size=vision_config.temporal_patch_size,
                                 merge_size=vision_config.spatial_merge_size, mean=mean, std=std)
    tokenizer.padding_side = "right"
    return Hpsv3Reward(model, tokenizer, chat_template, preprocess)


@register_reward("hpsv3", default_model=HPSV3_CHECKPOINT.repo,
                 description="HPSv3 (Ma et al. 2025): Qwen2-VL-7B preference model, the mu of its (mu, sigma) head")
def hpsv3(model: str | None, *, device: torch.device, dtype: torch.dtype, base: str | None = None) -> Hpsv3Reward:
    """HPSv3 from ``HPSv3.safetensors`` and its base's files (see the module docstring)."""
    return load_hpsv3(model, base=base, device=device, dtype=dtype)
