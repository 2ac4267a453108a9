"""The PixArt-alpha family: T5 text of 120 tokens with the negative's attention mask; the released layout applies."""

import json

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, DDIMScheduler, PixArtAlphaPipeline, PixArtTransformer2DModel
from PIL import Image
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

from reneg.embedding import NegativeEmbedding
from reneg.errors import ReNegError
from reneg.generate import GenerateConfig, generate
from reneg.models.loading import LoadedModel, _prepare
from reneg.models.tiny import SD_SCHEDULER

PROMPTS = ["a red circle on a blue background", "a yellow star on a black background"]
WORDS = ["<pad>", "</s>", "<unk>", "a", "red", "circle", "on", "blue", "background", "yellow", "star", "black"]
WIDTH = 4096  # the released file's width: T5-XXL's


def _tokenizer():
    """A word-level tokenizer with T5's special tokens (no download): the pipeline only calls it."""
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])  # T5's EOS
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                   model_max_length=512)


def _pipeline():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        text_encoder = T5EncoderModel(T5Config(vocab_size=len(WORDS), d_model=WIDTH, d_ff=8, d_kv=4, num_layers=1,
                                               num_heads=2, relative_attention_num_buckets=8))
        transformer = PixArtTransformer2DModel(sample_size=8, num_layers=1, patch_size=2, attention_head_dim=4,
                                               num_attention_heads=2, in_channels=4, out_channels=8,
                                               cross_attention_dim=8, caption_channels=WIDTH,
                                               norm_type="ada_norm_single", num_embeds_ada_norm=1000)
        vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, sample_size=64, norm_num_groups=4,
                            block_out_channels=(8, 8, 8, 8), layers_per_block=1,
                            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
    return PixArtAlphaPipeline(tokenizer=_tokenizer(), text_encoder=text_encoder, vae=vae, transformer=transformer,
                               scheduler=DDIMScheduler(**SD_SCHEDULER))


@pytest.fixture(scope="module")
def pixart():
    return LoadedModel(_prepare(_pipeline(), device=torch.device("cpu"), dtype=torch.float32), "tiny-pixart")


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """A file in the ReNeg authors' released PixArt layout: a plain (1, 120, 4096) tensor in a .pt file."""
    path = tmp_path_factory.mktemp("released") / "pixart_neg_emb.pt"
    torch.save(torch.randn(1, 120, WIDTH, generator=torch.Generator().manual_seed(1)) * 0.3, path)
    return path


def _ours(out):
    record = json.loads((out / "generation.json").read_text())
    return np.stack([np.asarray(Image.open(out / item["file"])) / 255.0 for item in record["images"]])


def _theirs(pipe, negative, mask, *, seed=3, steps=3, guidance_scale=4.5):
    """diffusers takes negative_prompt_embeds only beside prompt_embeds (with their masks)."""
    embeds, embeds_mask, _, _ = pipe.encode_prompt(PROMPTS, do_classifier_free_guidance=False, clean_caption=False)
    return pipe(prompt_embeds=embeds, prompt_attention_mask=embeds_mask, negative_prompt=None,
                negative_prompt_embeds=negative,
                negative_prompt_attention_mask=mask,
                num_inference_steps=steps, guidance_scale=guidance_scale, use_resolution_binning=False,
                clean_caption=False, generator=torch.Generator().manual_seed(seed), output_type="np").images


def test_released_layout_matches_the_pipeline_with_its_mask(pixart, released, tmp_path):
    """The released (1, 120, 4096) file applies; pixels equal diffusers' with the same embeds and an all-ones mask."""
    config = GenerateConfig(model="tiny-pixart", prompt=PROMPTS, negative=str(released), seed=3, steps=3,
                            guidance_scale=4.5, device="cpu", out=str(tmp_path / "out"))
    with pytest.warns(UserWarning, match="fingerprint"):
        generate(config, model=pixart)
    ours = _ours(tmp_path / "out")
    embeds = torch.load(released).expand(len(PROMPTS), -1, -1)
    theirs = _theirs(pixart.pipe, embeds, torch.ones(len(PROMPTS), 120, dtype=torch.long))
    assert ours.shape == theirs.shape == (2, 64, 64, 3)
    assert np.abs(ours - theirs).max() <= 2 / 255


def test_null_text_carries_its_mask(pixart, tmp_path):
    """Null text: our default negative is diffusers' negative_prompt="" (its embeds *and* its padding mask)."""
    null = pixart.family.null_text()
    assert null.embeds.shape == (1, 120, WIDTH) and null.mask.shape == (1, 120) and 0 < int(null.mask.sum()) < 120
    generate(GenerateConfig(model="tiny-pixart", prompt=PROMPTS, seed=3, steps=3, guidance_scale=4.5, device="cpu",
                            out=str(tmp_path / "null")), model=pixart)
    theirs = pixart.pipe(PROMPTS, negative_prompt="", num_inference_steps=3, guidance_scale=4.5,
                         use_resolution_binning=False, clean_caption=False,
                         generator=torch.Generator().manual_seed(3), output_type="np").images
    assert np.abs(_ours(tmp_path / "null") - theirs).max() <= 2 / 255


def test_released_layout_is_refused_by_sd_in_one_line(tiny_pipe, released):
    with pytest.raises(ReNegError) as error:
        NegativeEmbedding.load(released).for_pipeline(tiny_pipe)
    message = str(error.value)
    assert "(120, 4096)" in message and "(77, 32)" in message and "\n" not in message
    # and a CLIP-layout file is refused by PixArt likewise
    with pytest.raises(ReNegError, match=r"\(77, 32\).*\(120, 4096\)"):
        NegativeEmbedding(torch.zeros(77, 32), {}).for_pipeline(_pipeline())


def test_train_end_to_end_on_pixart(pixart, tmp_path):
    """reneg train learns a (120, 4096) PixArt negative (no mask: all 120 tokens), which then generates."""
    from reneg.methods.reneg.train import TrainConfig, log_listeners, train

    out = tmp_path / "neg.safetensors"
    config = TrainConfig(model="tiny-pixart", prompt=PROMPTS, reward="contrast", train_steps=2, batch_size=2, steps=3,
                         validate_every=2, device="cpu", out=str(out))
    learned = train(config, model=pixart, listeners=log_listeners(config))  # as the CLI runs it
    assert learned.tensor.shape == (120, WIDTH) and torch.isfinite(learned.tensor).all()
    start = pixart.family.null_text().embeds[0]
    assert not torch.equal(learned.tensor, start)  # two AdamW steps moved it
    validation = [json.loads(line) for line in out.with_suffix(".validation.jsonl").read_text().splitlines()]
    assert validation and all(np.isfinite(v["validation_reward"]) for v in validation)
    generate(GenerateConfig(model="tiny-pixart", prompt=PROMPTS, negative=str(out), seed=3, steps=3, device="cpu",
                            out=str(tmp_path / "images")), model=pixart)
    assert _ours(tmp_path / "images").shape == (2, 64, 64, 3)


def test_training_starts_from_the_pipelines_null_text(pixart, tmp_path):
    """Step 0 of reneg train is diffusers' negative_prompt="" although a file stores no mask: the start attends to
    every token, each the null text's attended token, so the transformer's output is the masked null text's."""
    from reneg.core.family import unmasked
    from reneg.methods.reneg.train import TrainConfig, Trainer

    trainer = Trainer(TrainConfig(model="tiny-pixart", prompt=PROMPTS, reward="contrast", train_steps=1, batch_size=2,
                                  steps=3, device="cpu", out=str(tmp_path / "n.safetensors")), model=pixart)
    family, null = pixart.family, pixart.family.null_text()
    start = trainer.params.negative()
    assert start.mask is None and torch.equal(start.embeds.detach(), unmasked(null).embeds)
    x, t = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)), torch.tensor([500])

    def output(text):
        with torch.no_grad():
            return family.model(x, t, **family.conditioning(text, resolution=64), return_dict=False)[0]

    masked = output(null)
    assert torch.allclose(output(start), masked, atol=1e-5)
    assert not torch.allclose(output(type(null)(null.embeds)), masked, atol=1e-3)  # the mask matters here


def test_npo_trains_and_applies_on_pixart(tmp_path):
    """PixArt's pipeline has no LoRA loader: delta is written in diffusers' transformer layout and loaded by the
    transformer's own adapter loader; beta = 0 is plain CFG, beta = 1 is not."""
    from peft import LoraConfig

    from reneg.methods.npo.train import NPOConfig, train_npo
    from reneg.methods.npo.weights import save_adapter
    from reneg.methods.spec import build_methods, parse_method_spec

    model = LoadedModel(_prepare(_pipeline(), device=torch.device("cpu"), dtype=torch.float32), "tiny-pixart")
    out = train_npo(NPOConfig(model="tiny-pixart", reward="contrast", train_steps=1, batch_size=1, steps=2, rank=2,
                              prompt=[PROMPTS[0]], device="cpu", out=str(tmp_path / "trained")), model=model)
    assert (out / "pytorch_lora_weights.safetensors").is_file()
    transformer = model.pipe.transformer
    torch.manual_seed(0)
    transformer.add_adapter(LoraConfig(r=2, lora_alpha=2, target_modules=["to_q", "to_k", "to_v", "to_out.0"],
                                       init_lora_weights=False), adapter_name="made")
    save_adapter(transformer, "made", tmp_path / "delta", {"route": "test"})
    transformer.delete_adapters("made")
    latents = model.family.initial_latents(1, resolution=64, generator=torch.Generator().manual_seed(0))

    def images(spec):
        parsed = parse_method_spec(spec)
        method = build_methods([parsed], model)[parsed.base]
        return method.images(model, [PROMPTS[0]], latents.clone(), guidance_scale=4.5, steps=2)

    plain = images("null")
    assert torch.equal(images(f"npo={tmp_path / 'delta'},beta=0"), plain)
    assert (images(f"npo={tmp_path / 'delta'}") - plain).abs().max() > 1e-4
