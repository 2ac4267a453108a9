"""Attend-and-Excite's CLIP scores that DNP reports: Min. Object and Full Prompt (DNP Sec. 5, "CLIP Score").

DNP follows the protocol of A&E (Chefer et al. 2023,
``yuval-alaluf/Attend-and-Excite`` ``metrics/compute_clip_similarity.py``):

* CLIP ViT-B/16 (OpenAI) with ``clip.load``'s transform (:mod:`.transforms`);
* a text's embedding is the normalised mean of the normalised embeddings of
  the 80 ImageNet prompt templates filled with it (after the reference's
  ``'a a' -> 'a'`` and ``'the a' -> 'a'`` replacements);
* the score is the raw cosine of normalised features (DNP's 0.258 etc.);
* Min. Object: the prompt is split into object phrases on ``" and "`` (else
  on ``" with "``), and the score is the minimum over the phrases. A&E skips a
  prompt with neither; here it is one phrase (the full-prompt score). A&E
  reads the first two parts; here the minimum runs over all parts (the same
  on two-object prompts such as A&E's).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from .base import as_scores, check_inputs, register_reward
from .clip import MAX_TEXT_TOKENS, ClipReward, load_clip, projected_features
from .transforms import ClipLoadPreprocess

AE_CLIP_MODEL = "openai/clip-vit-base-patch16"
#: Phrase separators, tried in order (the first one found in the prompt splits it).
OBJECT_SEPARATORS = (" and ", " with ")
#: Replacements A&E applies to every filled template (they undo "a a cat" and "the a cat").
TEMPLATE_FIXES = (("a a", "a"), ("the a", "a"))
#: CLIP's 80 ImageNet prompt templates, in A&E's order.
IMAGENET_TEMPLATES = (
    "a bad photo of a {}.", "a photo of many {}.", "a sculpture of a {}.", "a photo of the hard to see {}.",
    "a low resolution photo of the {}.", "a rendering of a {}.", "graffiti of a {}.", "a bad photo of the {}.",
    "a cropped photo of the {}.", "a tattoo of a {}.", "the embroidered {}.", "a photo of a hard to see {}.",
    "a bright photo of a {}.", "a photo of a clean {}.", "a photo of a dirty {}.", "a dark photo of the {}.",
    "a drawing of a {}.", "a photo of my {}.", "the plastic {}.", "a photo of the cool {}.",
    "a close-up photo of a {}.", "a black and white photo of the {}.", "a painting of the {}.",
    "a painting of a {}.", "a pixelated photo of the {}.", "a sculpture of the {}.", "a bright photo of the {}.",
    "a cropped photo of a {}.", "a plastic {}.", "a photo of the dirty {}.", "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.", "a photo of the {}.", "a good photo of the {}.", "a rendering of the {}.",
    "a {} in a video game.", "a photo of one {}.", "a doodle of a {}.", "a close-up photo of the {}.",
    "a photo of a {}.", "the origami {}.", "the {} in a video game.", "a sketch of a {}.", "a doodle of the {}.",
    "a origami {}.", "a low resolution photo of a {}.", "the toy {}.", "a rendition of the {}.",
    "a photo of the clean {}.", "a photo of a large {}.", "a rendition of a {}.", "a photo of a nice {}.",
    "a photo of a weird {}.", "a blurry photo of a {}.", "a cartoon {}.", "art of a {}.", "a sketch of the {}.",
    "a embroidered {}.", "a pixelated photo of a {}.", "itap of the {}.", "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.", "a plushie {}.", "a photo of the nice {}.", "a photo of the small {}.",
    "a photo of the weird {}.", "the cartoon {}.", "art of the {}.", "a drawing of the {}.",
    "a photo of the large {}.", "a black and white photo of a {}.", "the plushie {}.", "a dark photo of a {}.",
    "itap of a {}.", "graffiti of the {}.", "a toy {}.", "itap of my {}.", "a photo of a cool {}.",
    "a photo of a small {}.", "a tattoo of the {}.",
)


def object_phrases(prompt: str) -> list[str]:
    """``"a cat and a dog"`` -> ``["a cat", "a dog"]``: split on the first of " and ", " with " present, else whole."""
    for separator in OBJECT_SEPARATORS:
        if separator in prompt:
            return prompt.split(separator)
    return [prompt]


def whole_prompt(prompt: str) -> list[str]:
    """The full prompt as the only phrase (A&E's full-text score)."""
    return [prompt]


def fill_templates(text: str, templates: Sequence[str] = IMAGENET_TEMPLATES) -> list[str]:
    """Each template filled with ``text``, with A&E's replacements applied in order."""
    filled = []
    for template in templates:
        sentence = template.format(text)
        for old, new in TEMPLATE_FIXES:
            sentence = sentence.replace(old, new)
        filled.append(sentence)
    return filled


class TemplateClipScore(ClipReward):
    """``min_{phrase in split(p)} cos(E_img(x), E_tmpl(phrase))``: A&E's CLIP score on ``clip.load`` preprocessing.

    ``split`` maps a prompt to its phrases (:func:`object_phrases` for Min.
    Object, :func:`whole_prompt` for Full Prompt); ``E_tmpl`` is the template
    ensemble of :func:`fill_templates`, cached per phrase.
    """

    def __init__(self, model, processor, *, split: Callable[[str], list[str]] = object_phrases,
                 templates: Sequence[str] = IMAGENET_TEMPLATES, quantize: bool = True):
        super().__init__(model, processor, scale=1.0, quantize=quantize)
        self.preprocess = ClipLoadPreprocess(model.config.vision_config.image_size, quantize=quantize)
        self.split = split
        self.templates = tuple(templates)
        self._phrase_cache: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def phrase_embed(self, phrase: str) -> torch.Tensor:
        """The normalised mean of the normalised template embeddings of ``phrase``, ``(D,)`` float32."""
        if phrase not in self._phrase_cache:
            tokens = self.tokenizer(fill_templates(phrase, self.templates), padding=True, truncation=True,
                                    max_length=MAX_TEXT_TOKENS, return_tensors="pt").to(self.device)
            output = self.model.get_text_features(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask)
            per_template = F.normalize(projected_features(output).float(), dim=-1)
            self._phrase_cache[phrase] = F.normalize(per_template.mean(dim=0), dim=-1)
        return self._phrase_cache[phrase]

    def __call__(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        check_inputs(images, prompts)
        image_embeds = self.image_embeds(images)
        scores = [
            (torch.stack([self.phrase_embed(phrase) for phrase in self.split(prompt)]) @ image_embed).min()
            for image_embed, prompt in zip(image_embeds, prompts)
        ]
        return as_scores(torch.stack(scores), images)


@register_reward("clip-score-min-object", default_model=AE_CLIP_MODEL,
                 description="DNP/A&E Min. Object CLIP score: min over 'X and Y' phrases of template-ensembled cos")
def clip_score_min_object(model: str | None, *, device: torch.device, dtype: torch.dtype) -> TemplateClipScore:
    """A&E's ``min(first_half, second_half)`` CLIP similarity (raw cosine, ViT-B/16 by default)."""
    clip, processor = load_clip(model or AE_CLIP_MODEL, device=device, dtype=dtype)
    return TemplateClipScore(clip, processor, split=object_phrases)


@register_reward("clip-score-full-prompt", default_model=AE_CLIP_MODEL,
                 description="DNP/A&E Full Prompt CLIP score: template-ensembled cos(image, prompt)")
def clip_score_full_prompt(model: str | None, *, device: torch.device, dtype: torch.dtype) -> TemplateClipScore:
    """A&E's ``full_text`` CLIP similarity (raw cosine, ViT-B/16 by default)."""
    clip, processor = load_clip(model or AE_CLIP_MODEL, device=device, dtype=dtype)
    return TemplateClipScore(clip, processor, split=whole_prompt)
