"""NegativeEmbedding files, fingerprints, and the negative_prompt_embeds door of diffusers' pipeline."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from safetensors.torch import save_file

import reneg.embedding as embedding_module
from reneg.core.fingerprint import fingerprints_match, pipeline_fingerprint, text_encoder_fingerprint
from reneg.embedding import NegativeEmbedding, null_text_embedding
from reneg.errors import ReNegError
from reneg.models.tiny import tiny_sd_pipeline

L, D = 77, 32


@pytest.fixture(scope="module")
def pipe():
    return tiny_sd_pipeline(seed=0)


@pytest.fixture(scope="module")
def other_pipe():
    return tiny_sd_pipeline(seed=1)


def _random_embedding(seed: int = 0, **metadata) -> NegativeEmbedding:
    generator = torch.Generator().manual_seed(seed)
    return NegativeEmbedding(torch.randn(L, D, generator=generator), dict(metadata))


# ---------------------------------------------------------------- files


def test_roundtrip_keeps_values_and_metadata(tmp_path):
    neg = _random_embedding(base_model="tiny", steps=3)
    path = neg.save(tmp_path / "neg.safetensors")
    loaded = NegativeEmbedding.load(path)
    assert torch.equal(loaded.tensor, neg.tensor)
    assert loaded.tensor.dtype == torch.float32 and loaded.pooled is None
    assert loaded.metadata == {"base_model": "tiny", "steps": "3", "format": "reneg.negative_embedding",
                               "version": "1"}


def test_roundtrip_keeps_pooled(tmp_path):
    neg = NegativeEmbedding(torch.zeros(L, D), {}, pooled=torch.ones(1, 16))
    loaded = NegativeEmbedding.load(neg.save(tmp_path / "xl.safetensors"))
    assert loaded.pooled.shape == (16,) and torch.equal(loaded.pooled, torch.ones(16))
    assert loaded.expand_pooled(3).shape == (3, 16)


def test_save_leaves_only_the_file(tmp_path):
    _random_embedding().save(tmp_path / "neg.safetensors")
    assert [p.name for p in tmp_path.iterdir()] == ["neg.safetensors"]


def test_failed_save_leaves_nothing(tmp_path, monkeypatch):
    def broken_save_file(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(embedding_module, "save_file", broken_save_file)
    with pytest.raises(RuntimeError):
        _random_embedding().save(tmp_path / "neg.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_save_refuses_other_suffix(tmp_path):
    with pytest.raises(ReNegError, match="safetensors"):
        _random_embedding().save(tmp_path / "neg.pt")


@pytest.mark.parametrize("shape", [(L, D), (1, L, D)])
@pytest.mark.parametrize("suffix", [".pt", ".bin"])
def test_plain_torch_tensor_loads(tmp_path, shape, suffix):
    tensor = torch.randn(shape)
    torch.save(tensor, tmp_path / f"neg{suffix}")
    loaded = NegativeEmbedding.load(tmp_path / f"neg{suffix}")
    assert loaded.shape == (L, D) and torch.equal(loaded.tensor, tensor.reshape(L, D))


def test_dict_with_one_tensor_loads(tmp_path):
    torch.save({"embedding": torch.ones(1, L, D, dtype=torch.float16)}, tmp_path / "neg.pth")
    loaded = NegativeEmbedding.load(tmp_path / "neg.pth")
    assert loaded.shape == (L, D) and loaded.tensor.dtype == torch.float32


def test_fp16_safetensors_loads_as_fp32(tmp_path):
    half = torch.randn(L, D).half()
    save_file({"negative_embedding": half}, str(tmp_path / "half.safetensors"))
    loaded = NegativeEmbedding.load(tmp_path / "half.safetensors")
    assert loaded.tensor.dtype == torch.float32 and torch.equal(loaded.tensor, half.float())


def test_textual_inversion_pt_is_refused(tmp_path):
    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": torch.randn(4, 768)}, "name": "bad"},
               tmp_path / "ti.pt")
    with pytest.raises(ReNegError, match="textual inversion"):
        NegativeEmbedding.load(tmp_path / "ti.pt")


@pytest.mark.parametrize("key", ["emb_params", "clip_l"])
def test_textual_inversion_safetensors_is_refused(tmp_path, key):
    save_file({key: torch.randn(8, 768)}, str(tmp_path / "ti.safetensors"))
    with pytest.raises(ReNegError, match="textual inversion"):
        NegativeEmbedding.load(tmp_path / "ti.safetensors")


def test_diffusers_token_dict_is_refused(tmp_path):
    torch.save({"<bad-hands>": torch.randn(768)}, tmp_path / "learned_embeds.bin")
    with pytest.raises(ReNegError, match="textual inversion"):
        NegativeEmbedding.load(tmp_path / "learned_embeds.bin")


@pytest.mark.parametrize("shape", [(2, L, D), (L * D,), (1, 1, L, D)])
def test_wrong_shape_is_refused(tmp_path, shape):
    torch.save(torch.zeros(shape), tmp_path / "bad.pt")
    with pytest.raises(ReNegError, match=r"shape \(" + ", ".join(map(str, shape)).rstrip(",")):
        NegativeEmbedding.load(tmp_path / "bad.pt")


def test_nan_is_refused(tmp_path):
    tensor = torch.zeros(L, D)
    tensor[3, 4] = float("nan")
    save_file({"negative_embedding": tensor}, str(tmp_path / "nan.safetensors"))
    with pytest.raises(ReNegError, match="NaN"):
        NegativeEmbedding.load(tmp_path / "nan.safetensors")


def test_bad_inputs_are_refused(tmp_path):
    with pytest.raises(ReNegError, match="does not exist"):
        NegativeEmbedding.load(tmp_path / "missing.safetensors")
    (tmp_path / "neg.npy").write_bytes(b"x")
    with pytest.raises(ReNegError, match="unknown"):
        NegativeEmbedding.load(tmp_path / "neg.npy")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(ReNegError, match="weights_only"):
        NegativeEmbedding.load(tmp_path / "junk.pt")
    torch.save(print, tmp_path / "unsafe.pt")  # a pickled global: refused by weights_only
    with pytest.raises(ReNegError, match="weights_only"):
        NegativeEmbedding.load(tmp_path / "unsafe.pt")
    save_file({"other": torch.zeros(L, D)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ReNegError, match="negative_embedding"):
        NegativeEmbedding.load(tmp_path / "other.safetensors")


# ---------------------------------------------------------------- fingerprints


def test_fingerprint_format(pipe):
    fingerprint = text_encoder_fingerprint(pipe.text_encoder)
    assert fingerprint.startswith("te1:CLIPTextModel:d32:l2:v49408:")
    assert len(fingerprint.rsplit(":", 1)[1].split(",")) == 16


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_fingerprint_survives_precision(pipe, dtype):
    reference = text_encoder_fingerprint(pipe.text_encoder)
    lowered = text_encoder_fingerprint(copy.deepcopy(pipe.text_encoder).to(dtype))
    assert fingerprints_match(reference, lowered)


def test_fingerprint_tells_text_encoders_apart(pipe, other_pipe):
    assert not fingerprints_match(text_encoder_fingerprint(pipe.text_encoder),
                                  text_encoder_fingerprint(other_pipe.text_encoder))
    wider = tiny_sd_pipeline(text_width=64).text_encoder
    assert not fingerprints_match(text_encoder_fingerprint(pipe.text_encoder), text_encoder_fingerprint(wider))


def test_fingerprint_mismatch_names_both(pipe, other_pipe):
    theirs = pipeline_fingerprint(other_pipe)
    neg = _random_embedding(text_encoder_fingerprint=theirs)
    with pytest.raises(ReNegError) as info:
        neg.for_pipeline(pipe)
    assert theirs in str(info.value) and pipeline_fingerprint(pipe) in str(info.value)


def test_matching_fingerprint_is_accepted_silently(pipe):
    neg = _random_embedding(text_encoder_fingerprint=pipeline_fingerprint(pipe))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert neg.for_pipeline(pipe) is neg


def test_missing_fingerprint_warns(pipe):
    with pytest.warns(UserWarning, match="fingerprint"):
        _random_embedding().check_compatible(text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer)


def test_wrong_width_names_both_shapes(pipe):
    neg = NegativeEmbedding(torch.zeros(L, 768))
    with pytest.raises(ReNegError, match=r"\(77, 768\).*\(77, 32\)"):
        neg.for_pipeline(pipe)


# ---------------------------------------------------------------- the pipeline door


@pytest.mark.parametrize("batch_size", [1, 3])
def test_expand_shape(batch_size):
    neg = _random_embedding()
    out = neg.expand(batch_size, dtype=torch.float16)
    assert out.shape == (batch_size, L, D) and out.dtype == torch.float16
    assert torch.equal(out[-1], neg.tensor.half())


def test_expand_rejects_bad_batch():
    with pytest.raises(ValueError):
        _random_embedding().expand(0)


def test_null_text_embedding_equals_diffusers(pipe):
    _, negative = pipe.encode_prompt("x", "cpu", 1, True, negative_prompt="")
    null = null_text_embedding(pipe)
    assert null.shape == (L, D)
    assert torch.equal(null, negative[0])
    assert torch.equal(null_text_embedding((pipe.tokenizer, pipe.text_encoder)), null)


def _images(pipe, prompts, **kwargs):
    return pipe(prompts, num_images_per_prompt=2, num_inference_steps=2, guidance_scale=7.5, output_type="np",
                generator=torch.Generator().manual_seed(0), **kwargs).images


def test_pipeline_with_several_prompts_and_images(pipe):
    prompts = ["a red circle", "a blue square"]
    neg = NegativeEmbedding(null_text_embedding(pipe), {"text_encoder_fingerprint": pipeline_fingerprint(pipe)})
    neg = neg.for_pipeline(pipe)
    ours = _images(pipe, prompts, negative_prompt_embeds=neg.expand(len(prompts), device=pipe.device,
                                                                     dtype=pipe.dtype))
    reference = _images(pipe, prompts, negative_prompt=[""] * len(prompts))
    assert ours.shape == (4, 64, 64, 3)
    assert abs(ours - reference).max() < 1e-5


def test_diffusers_repeats_the_negative_itself(pipe):
    """Passing prompts x images (not prompts) breaks: diffusers repeats negative_prompt_embeds per image."""
    prompts = ["a red circle", "a blue square"]
    neg = NegativeEmbedding(null_text_embedding(pipe))
    _, negative = pipe.encode_prompt(prompts, "cpu", 2, True, negative_prompt_embeds=neg.expand(2))
    assert negative.shape == (4, L, D)
    _, mangled = pipe.encode_prompt(prompts, "cpu", 2, True, negative_prompt_embeds=neg.expand(4))
    assert mangled.shape == (4, L, 2 * D)
