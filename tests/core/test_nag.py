"""NAG (reneg.core.nag) against a direct implementation of the paper's formula, on tiny SD, SDXL and SD3.

The direct implementation recomputes every guided attention layer from its projections: the attention output
for the prompt's text (z+) and for the negative's (z-), NAG Eq. 4-6 on them, then the output projection. It
is installed on a copy of the model, which then runs the prompt's pass; reneg's rule runs the original.
"""

import copy

import pytest
import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import AttnProcessor2_0

from reneg.core.denoiser import Branch, GuidedDenoiser
from reneg.core.nag import nag, nag_rule
from reneg.core.rollout import text_branches
from reneg.families import family_for
from reneg.models.tiny import tiny_flux_pipeline, tiny_sd3_pipeline, tiny_sd_pipeline, tiny_sdxl_pipeline

PROMPTS = ["a red circle", "two blue squares"]
SCALE, TAU = 4.0, 2.5


def paper_formula(z_pos, z_neg, scale, tau, alpha):
    """NAG Eq. 4-6 as the paper writes them: the L1 ratio, clipped at tau, blended with alpha."""
    z_tilde = scale * z_pos - (scale - 1) * z_neg
    ratio = z_tilde.abs().sum(-1, keepdim=True) / z_pos.abs().sum(-1, keepdim=True)
    z_hat = torch.where(ratio > tau, z_tilde / ratio * tau, z_tilde)
    return alpha * z_hat + (1 - alpha) * z_pos


def _heads(attn, x):
    return x.view(x.shape[0], -1, attn.heads, x.shape[-1] // attn.heads).transpose(1, 2)


def _merge(attn, x):
    return x.transpose(1, 2).reshape(x.shape[0], -1, x.shape[1] * x.shape[-1])


class DirectCrossNAG:
    """A UNet cross-attention layer with NAG written out: q from the image, k/v from each text."""

    def __init__(self, negative, alpha):
        self.negative, self.alpha = negative, alpha

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, **kwargs):
        if encoder_hidden_states is None:
            return AttnProcessor2_0()(attn, hidden_states)
        query = _heads(attn, attn.to_q(hidden_states))

        def attend(text):
            return _merge(attn, F.scaled_dot_product_attention(query, _heads(attn, attn.to_k(text)),
                                                               _heads(attn, attn.to_v(text))))

        z = paper_formula(attend(encoder_hidden_states), attend(self.negative), SCALE, TAU, self.alpha)
        return attn.to_out[1](attn.to_out[0](z))


class DirectJointNAG:
    """An SD3 joint attention with NAG written out: rows [0, B) carry the prompt's text, [B, 2B) the negative's;
    both rows attend jointly to their own text and the image, the image tokens' outputs are combined."""

    def __init__(self, alpha):
        self.alpha = alpha

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, **kwargs):
        query, key, value = (_heads(attn, f(hidden_states)) for f in (attn.to_q, attn.to_k, attn.to_v))
        if attn.norm_q is not None:
            query, key = attn.norm_q(query), attn.norm_k(key)
        text_q, text_k, text_v = (_heads(attn, f(encoder_hidden_states))
                                  for f in (attn.add_q_proj, attn.add_k_proj, attn.add_v_proj))
        if attn.norm_added_q is not None:
            text_q, text_k = attn.norm_added_q(text_q), attn.norm_added_k(text_k)
        out = F.scaled_dot_product_attention(torch.cat([query, text_q], 2), torch.cat([key, text_k], 2),
                                             torch.cat([value, text_v], 2))
        out = _merge(attn, out)
        image, text = out[:, : hidden_states.shape[1]], out[:, hidden_states.shape[1]:]
        positive, negative = image.chunk(2)
        guided = paper_formula(positive, negative, SCALE, TAU, self.alpha)
        image = attn.to_out[1](attn.to_out[0](torch.cat([guided, guided])))
        if attn.context_pre_only:
            return image, text
        return image, attn.to_add_out(text)


def _branches(family, negative_prompt="blurry, watermark"):
    return text_branches(family, family.encode(PROMPTS), family.encode([negative_prompt]), resolution=64)


def _latents(family):
    return family.initial_latents(len(PROMPTS), resolution=64, generator=torch.Generator().manual_seed(0))


def _set_processors(model, make):
    model.set_attn_processor({name: make(name, processor) for name, processor in model.attn_processors.items()})


@pytest.mark.parametrize("build", [tiny_sd_pipeline, tiny_sdxl_pipeline], ids=["sd", "sdxl"])
def test_cross_attention_nag_equals_the_paper(build):
    family = family_for(build())
    branches = _branches(family)
    x, t = _latents(family), torch.tensor(501)
    rule = nag_rule(family.attention_guidance)
    direct = copy.deepcopy(family.model)
    negative = branches["negative"].conditioning["encoder_hidden_states"]
    _set_processors(direct, lambda name, p: DirectCrossNAG(negative, rule.alpha) if "attn2" in name else p)
    with torch.no_grad():
        expected = direct(x, t, **branches["cond"].conditioning, return_dict=False)[0]
        ours = GuidedDenoiser(family.model, branches, SCALE, rule)(x, t)
        plain = family.model(x, t, **branches["cond"].conditioning, return_dict=False)[0]
    assert (ours - plain).abs().max() > 1e-3  # NAG changed the output
    assert torch.allclose(ours, expected, atol=1e-5, rtol=0)


def test_joint_attention_nag_equals_the_paper():
    family = family_for(tiny_sd3_pipeline())
    branches = _branches(family)
    x, t = _latents(family), torch.tensor(501.0)
    rule = nag_rule(family.attention_guidance)
    direct = copy.deepcopy(family.model.transformer)
    _set_processors(direct, lambda name, p: DirectJointNAG(rule.alpha))
    cond, negative = branches["cond"].conditioning, branches["negative"].conditioning
    with torch.no_grad():
        out = direct(hidden_states=torch.cat([x, x]), timestep=t.expand(2 * len(x)),
                     encoder_hidden_states=torch.cat([cond["encoder_hidden_states"],
                                                      negative["encoder_hidden_states"]]),
                     pooled_projections=torch.cat([cond["pooled_projections"]] * 2), return_dict=False)[0]
        ours = GuidedDenoiser(family.model, branches, SCALE, rule)(x, t)
        plain = family.model(x, t, **cond, return_dict=False)[0]
    assert torch.allclose(out[: len(x)], out[len(x):], atol=1e-6)  # one image stream
    assert (ours - plain).abs().max() > 1e-3
    assert torch.allclose(ours, out[: len(x)], atol=1e-5, rtol=0)


@pytest.mark.parametrize("build", [tiny_sd_pipeline, tiny_sdxl_pipeline, tiny_sd3_pipeline, tiny_flux_pipeline],
                         ids=["sd", "sdxl", "sd3", "flux"])
def test_negative_equal_to_the_prompt_or_scale_one_is_the_plain_pass(build):
    family = family_for(build())
    prompts = family.encode(PROMPTS)
    x, t = _latents(family), torch.tensor(301.0)
    rule = nag_rule(family.attention_guidance)
    cond = text_branches(family, prompts, resolution=64)["cond"]
    with torch.no_grad():
        plain = family.model(x, t, **cond.conditioning, return_dict=False)[0]
        same = GuidedDenoiser(family.model, {"cond": cond, "negative": Branch(cond.conditioning)}, SCALE, rule)
        at_one = GuidedDenoiser(family.model, _branches(family), torch.tensor(1.0), rule)  # through the NAG path
        assert torch.allclose(same(x, t), plain, atol=1e-5, rtol=0)
        assert torch.allclose(at_one(x, t), plain, atol=1e-5, rtol=0)


def test_outside_the_step_window_nag_is_the_plain_pass():
    family = family_for(tiny_sd_pipeline())
    branches = _branches(family)
    x = _latents(family)
    rule = nag_rule("cross", end=0.5)  # NAG at t >= 500 only
    with torch.no_grad():
        plain = family.model(x, torch.tensor(201), **branches["cond"].conditioning, return_dict=False)[0]
        late = GuidedDenoiser(family.model, branches, SCALE, rule)(x, torch.tensor(201))
        early = GuidedDenoiser(family.model, branches, SCALE, rule)(x, torch.tensor(801))
    assert torch.equal(late, plain)
    assert not torch.allclose(early, family.model(x, torch.tensor(801), **branches["cond"].conditioning,
                                                  return_dict=False)[0])


def test_formula_clips_the_norm_ratio_and_is_safe_at_zero():
    generator = torch.Generator().manual_seed(0)
    z_pos, z_neg = torch.randn(3, 5, 8, generator=generator), torch.randn(3, 5, 8, generator=generator)
    assert torch.allclose(nag(z_pos, z_neg, 6.0, tau=2.5, alpha=0.3), paper_formula(z_pos, z_neg, 6.0, 2.5, 0.3),
                          atol=1e-6)
    guided = nag(z_pos, z_neg, 6.0, tau=2.5, alpha=1.0)
    ratio = guided.abs().sum(-1) / z_pos.abs().sum(-1)
    assert ratio.max() <= 2.5 + 1e-5
    zero = torch.zeros(1, 2, 4)
    assert torch.equal(nag(zero, zero, 5.0), zero)


def test_gradient_reaches_the_negative_as_finite_differences():
    """d/dn of a linear functional of one NAG call equals central differences (float64, tiny SD)."""
    family = family_for(tiny_sd_pipeline())
    family.pipe.to(torch.float64)
    prompts = family.encode(PROMPTS).to(dtype=torch.float64)
    start = family.encode(["blurry"]).to(dtype=torch.float64)
    x = _latents(family).to(torch.float64)
    t = torch.tensor(601)
    rule = nag_rule("cross")
    weights = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    def objective(embeds):
        negative = type(start)(embeds)
        branches = text_branches(family, prompts, negative, resolution=64)
        return (GuidedDenoiser(family.model, branches, SCALE, rule)(x, t) * weights).sum()

    embeds = start.embeds.clone().requires_grad_(True)
    objective(embeds).backward()
    direction = torch.randn(embeds.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    analytic = float((embeds.grad * direction).sum())
    epsilon = 1e-5
    with torch.no_grad():
        numeric = float((objective(start.embeds + epsilon * direction) -
                         objective(start.embeds - epsilon * direction)) / (2 * epsilon))
    assert embeds.grad.abs().max() > 0
    assert abs(analytic - numeric) <= 1e-6 * max(1.0, abs(numeric))


class DirectFluxNAG:
    """Flux's attention with NAG written out: double-stream blocks (own text projections, rotary embedding,
    [text, image] joint attention, output projections) and single-stream blocks ([text, image] rows, no
    projection after the attention); rows [0, B) carry the prompt's text, [B, 2B) the negative's."""

    def __init__(self, alpha, text_tokens):
        self.alpha, self.text_tokens = alpha, text_tokens

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, image_rotary_emb=None):
        from diffusers.models.embeddings import apply_rotary_emb

        def heads(x):
            return x.unflatten(-1, (-1, attn.head_dim))

        query, key, value = heads(attn.to_q(hidden_states)), heads(attn.to_k(hidden_states)), \
            heads(attn.to_v(hidden_states))
        query, key = attn.norm_q(query), attn.norm_k(key)
        if encoder_hidden_states is not None:
            text_q = attn.norm_added_q(heads(attn.add_q_proj(encoder_hidden_states)))
            text_k = attn.norm_added_k(heads(attn.add_k_proj(encoder_hidden_states)))
            text_v = heads(attn.add_v_proj(encoder_hidden_states))
            query, key, value = (torch.cat(pair, 1) for pair in ((text_q, query), (text_k, key), (text_v, value)))
        query = apply_rotary_emb(query, image_rotary_emb, sequence_dim=1)
        key = apply_rotary_emb(key, image_rotary_emb, sequence_dim=1)
        out = F.scaled_dot_product_attention(query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2))
        out = out.transpose(1, 2).flatten(2, 3)
        text_len = self.text_tokens
        positive, negative = out.chunk(2)
        guided = paper_formula(positive[:, text_len:], negative[:, text_len:], SCALE, TAU, self.alpha)
        if encoder_hidden_states is None:  # single-stream: each row keeps its text tokens
            return torch.cat([torch.cat([positive[:, :text_len], guided], 1),
                              torch.cat([negative[:, :text_len], guided], 1)])
        image = attn.to_out[1](attn.to_out[0](torch.cat([guided, guided])))
        return image, attn.to_add_out(out[:, :text_len])


def test_flux_joint_and_single_stream_nag_equals_the_paper():
    family = family_for(tiny_flux_pipeline())
    branches = _branches(family)
    x, t = _latents(family), torch.tensor(701.0)
    rule = nag_rule(family.attention_guidance)
    cond, negative = branches["cond"].conditioning, branches["negative"].conditioning
    text_len = cond["encoder_hidden_states"].shape[1]
    direct = copy.deepcopy(family.model)
    for module in direct.transformer.modules():
        if hasattr(module, "processor") and hasattr(module, "to_q"):
            module.processor = DirectFluxNAG(rule.alpha, text_len)
    both = {"encoder_hidden_states": torch.cat([cond["encoder_hidden_states"], negative["encoder_hidden_states"]]),
            "pooled_projections": torch.cat([cond["pooled_projections"]] * 2), "guidance": cond["guidance"]}
    with torch.no_grad():
        out = direct(torch.cat([x, x]), t, **both, return_dict=False)[0]
        ours = GuidedDenoiser(family.model, branches, SCALE, rule)(x, t)
        plain = family.model(x, t, **cond, return_dict=False)[0]
    assert torch.allclose(out[: len(x)], out[len(x):], atol=1e-6)  # one image stream
    assert (ours - plain).abs().max() > 1e-3
    assert torch.allclose(ours, out[: len(x)], atol=1e-5, rtol=0)
