"""The opened core: guidance rules, branches with their own conditioning and weights, families, precision."""

import copy

import pytest
import torch

from reneg.core.denoiser import BASE, AdapterWeights, Branch, GuidedDenoiser, ModuleWeights, _concat
from reneg.core.guidance import CFG, DNS, THREE_TERM, cfg, dns, three_term
from reneg.core.rollout import rollout, text_branches
from reneg.errors import ReNegError
from reneg.families import TextConditioning, family_for
from reneg.models.loading import load_model

PROMPTS = ["a red circle on a blue background", "a green star"]


@pytest.fixture(scope="module")
def model():
    return load_model("tiny")


def test_three_term_with_null_negative_is_plain_cfg():
    null, cond = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    assert torch.equal(three_term(null, null, cond, 7.5), cfg(null, cond, 7.5))


def test_dns_is_negative_prompting_with_an_empty_positive():
    """DNP Eq. 20: DNS (Eq. 19) is the three-term rule (Eq. 4) with positive phi and negative p."""
    null, prompt = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    assert torch.allclose(dns(null, prompt, 5.0), three_term(null, prompt, null, 5.0))


def test_dns_rollout_equals_three_term_rollout_with_swapped_prompts(model):
    family = model.family
    latents = family.initial_latents(2, resolution=64, generator=torch.Generator().manual_seed(0))
    prompts, null = family.encode(PROMPTS), family.null_text()
    dns_images = rollout(family, text_branches(family, prompts, null=null, resolution=64), latents, steps=4,
                         guidance_scale=3.0, rule=DNS)
    swapped = text_branches(family, null.expand(2), prompts, null=null, resolution=64)  # cond = phi, negative = p
    three = rollout(family, swapped, latents, steps=4, guidance_scale=3.0, rule=THREE_TERM)
    assert (dns_images - three).abs().max() < 1e-5


def test_three_term_rollout_with_null_negative_equals_cfg_rollout(model):
    family = model.family
    latents = family.initial_latents(2, resolution=64, generator=torch.Generator().manual_seed(1))
    prompts, null = family.encode(PROMPTS), family.null_text()
    plain = rollout(family, text_branches(family, prompts, null, resolution=64), latents, steps=4,
                    guidance_scale=7.5, rule=CFG)
    three = rollout(family, text_branches(family, prompts, null, null=null, resolution=64), latents, steps=4,
                    guidance_scale=7.5, rule=THREE_TERM)
    assert (plain - three).abs().max() < 1e-5


def test_negative_branch_with_its_own_weights(model):
    """A negative branch on other weights equals CFG of two separate calls; identical weights equal one call."""
    family = model.family
    unet = family.model
    other = copy.deepcopy(unet)
    with torch.no_grad():
        for parameter in other.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    t = torch.tensor(500)
    cond = {"encoder_hidden_states": family.encode(PROMPTS).embeds}
    negative = {"encoder_hidden_states": family.null_text().embeds.expand(2, -1, -1)}
    with torch.no_grad():
        guided = GuidedDenoiser(unet, {"cond": Branch(cond), "negative": Branch(negative, ModuleWeights(other))},
                                7.5)(x, t)
        expected = cfg(other(x, t, **negative).sample, unet(x, t, **cond).sample, 7.5)
        assert torch.allclose(guided, expected, atol=1e-6)
        same = GuidedDenoiser(unet, {"cond": Branch(cond), "negative": Branch(negative, ModuleWeights(unet))},
                              7.5)(x, t)
        batched = GuidedDenoiser(unet, {"cond": Branch(cond), "negative": Branch(negative)}, 7.5)(x, t)
        assert torch.allclose(same, batched, atol=1e-5)


def test_branch_conditioning_concatenates_nested_arguments():
    """Room for SDXL's added_cond_kwargs and ControlNet's residual tuples: batched per branch, then joined."""
    a = {"encoder_hidden_states": torch.zeros(2, 3, 4), "added_cond_kwargs": {"time_ids": torch.zeros(2, 6)},
         "down_block_additional_residuals": (torch.zeros(2, 1), torch.zeros(2, 2)), "cross_attention_kwargs": None}
    b = {"encoder_hidden_states": torch.ones(2, 3, 4), "added_cond_kwargs": {"time_ids": torch.ones(2, 6)},
         "down_block_additional_residuals": (torch.ones(2, 1), torch.ones(2, 2)), "cross_attention_kwargs": None}
    joined = _concat([a, b])
    assert joined["encoder_hidden_states"].shape == (4, 3, 4)
    assert joined["added_cond_kwargs"]["time_ids"][2:].eq(1).all()
    assert [r.shape for r in joined["down_block_additional_residuals"]] == [(4, 1), (4, 2)]
    assert joined["cross_attention_kwargs"] is None


def test_guided_denoiser_needs_the_rules_branches(model):
    with pytest.raises(ValueError, match="needs branches null"):
        GuidedDenoiser(model.family.model, {"cond": Branch({}), "negative": Branch({})}, 3.0, THREE_TERM)


def test_unsupported_pipelines_are_refused_in_one_line():
    from diffusers import StableCascadeDecoderPipeline

    pipe = StableCascadeDecoderPipeline.__new__(StableCascadeDecoderPipeline)
    with pytest.raises(ReNegError) as error:
        family_for(pipe)
    message = str(error.value)
    assert "StableCascadeDecoderPipeline is not supported" in message and "StableDiffusionPipeline" in message
    assert "\n" not in message


def test_text_conditioning_of_a_negative_embedding_keeps_one_row():
    text = TextConditioning.of(torch.zeros(77, 32))
    assert text.embeds.shape == (1, 77, 32) and text.expand(3).embeds.shape == (3, 77, 32)


def test_fp16_training_uses_loss_scaling(tmp_path):
    """fp16 frozen models train with a gradient scaler (the embedding stays fp32 and finite)."""
    from reneg.methods.reneg.train import TrainConfig, Trainer

    config = TrainConfig(model="tiny", reward="contrast", precision="fp16", train_steps=2, batch_size=2, steps=3,
                         device="cpu", out=str(tmp_path / "n.safetensors"))
    trainer = Trainer(config)
    assert trainer.scaler.is_enabled() and trainer.model.pipe.unet.dtype == torch.float16
    init = trainer.embedding().tensor.clone()
    records = list(trainer.run())
    learned = trainer.embedding().tensor
    assert learned.dtype == torch.float32 and torch.isfinite(learned).all()
    assert not torch.equal(learned, init) and not any(r.skipped for r in records)
    assert trainer.scaler.get_scale() > 1  # the loss was scaled


def test_negative_branch_with_a_peft_adapter_on_the_same_model():
    """theta for the prompt, theta + beta * delta for the negative: equal to two separate calls."""
    from peft import LoraConfig

    from reneg.models.tiny import tiny_sd_pipeline

    unet = tiny_sd_pipeline().unet.eval()
    torch.manual_seed(0)
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"],
                                init_lora_weights=False), adapter_name="delta")
    x, t = torch.randn(2, 4, 8, 8), torch.tensor(400)
    cond, negative = {"encoder_hidden_states": torch.randn(2, 77, 32)}, {"encoder_hidden_states": torch.randn(2, 77, 32)}
    with torch.no_grad():
        guided = GuidedDenoiser(unet, {"cond": Branch(cond),
                                       "negative": Branch(negative, AdapterWeights(("delta",), (0.5,)))}, 7.5)(x, t)
        unet.set_adapters(["delta"], weights=[0.5])
        negative_out = unet(x, t, **negative).sample
        unet.disable_adapters()
        cond_out = unet(x, t, **cond).sample
        unet.enable_adapters()
        assert torch.allclose(guided, cfg(negative_out, cond_out, 7.5), atol=1e-6)
        assert (negative_out - BASE.forward(unet, x, t, negative)).abs().max() > 1e-3  # delta acts, BASE turns it off
        zero = GuidedDenoiser(unet, {"cond": Branch(cond),
                                     "negative": Branch(negative, AdapterWeights(("delta",), (0.0,)))}, 7.5)(x, t)
        plain = GuidedDenoiser(unet, {"cond": Branch(cond), "negative": Branch(negative)}, 7.5)(x, t)
        assert torch.allclose(zero, plain, atol=1e-5)  # scale 0 is plain CFG (two calls vs one batched call)
