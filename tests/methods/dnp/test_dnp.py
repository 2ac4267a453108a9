"""DNS, DNP and auto-DNP (DNP Sec. 3.4-3.5): the rules through the rollout, `reneg dnp`, `generate --dnp`, the eval
methods `dnp` / `dnp=FILE`, captioners (a tiny random-weight BLIP-2 round trip, the shapes world's), bad inputs."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from reneg.cli import main
from reneg.core.guidance import THREE_TERM
from reneg.core.rollout import guided_images
from reneg.methods.dnp.captioners import DEFAULT_BLIP2, available_captioners, load_captioner
from reneg.methods.dnp.images import dnp_images, dns_images
from reneg.models.loading import load_model

PROMPTS = ["a red circle on a blue background", "a green square on a white background"]
WORLD_PROMPT = "a red circle and a blue square on a white background"


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny")


def _latents(model, batch, seed=3):
    return model.family.initial_latents(batch, resolution=64, generator=torch.Generator().manual_seed(seed))


def _png(path):
    return np.asarray(Image.open(path)).astype(int)


def _one_error_line(capsys):
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


# ---------------------------------------------------------------- the rules through the rollout


def test_dns_is_negative_prompting_with_an_empty_positive_and_p_as_negative(tiny):
    """DNP Eq. 20: DNS (Eq. 19) equals negative prompting (Eq. 4) with positive phi = "" and negative p."""
    family, latents = tiny.family, _latents(tiny, 2)
    ours = dns_images(family, PROMPTS, latents, guidance_scale=5.0, steps=4)
    negative_prompting = guided_images(family, ["", ""], family.encode(PROMPTS), latents, guidance_scale=5.0,
                                       steps=4, resolution=64, rule=THREE_TERM)
    assert (ours - negative_prompting).abs().max() < 1e-5
    plain = guided_images(family, PROMPTS, family.null_text(), latents, guidance_scale=5.0, steps=4, resolution=64)
    assert (ours - plain).abs().max() > 1e-2  # guidance away from p is not guidance towards it


def test_dnp_with_the_null_text_as_n_star_is_plain_cfg_in_both_forms(tiny):
    """n* = "" (the null text): three-term Eq. 4 and two-term both reduce to CFG; with a real n* they differ."""
    family, latents = tiny.family, _latents(tiny, 2)
    cfg = guided_images(family, PROMPTS, family.null_text(), latents, guidance_scale=7.5, steps=3, resolution=64)
    for rule in ("two-term", "three-term"):
        images = dnp_images(family, PROMPTS, ["", ""], latents, guidance_scale=7.5, steps=3, rule=rule)
        assert (images - cfg).abs().max() < 1e-5, rule
    two, three = (dnp_images(family, PROMPTS, ["blurry", "dark"], latents, guidance_scale=7.5, steps=3, rule=rule)
                  for rule in ("two-term", "three-term"))
    assert (two - three).abs().max() > 1e-3


# ---------------------------------------------------------------- reneg dnp and generate


def test_reneg_dnp_with_a_caption_writes_three_files_per_prompt(tmp_path):
    out = tmp_path / "several"
    args = ["dnp", "--model", "tiny", "--caption", "blurry, dark", "--steps", "2", "--device", "cpu",
            "--out", str(out)]
    assert main([*args, "--prompt", PROMPTS[0], "--prompt", PROMPTS[1], "--num-images", "2"]) == 0
    index = json.loads((out / "index.json").read_text())
    assert [item["prompt"] for item in index["items"]] == [PROMPTS[0]] * 2 + [PROMPTS[1]] * 2
    assert index["dnp_rule"] == "two-term" and index["captioner"] == "manual (--caption)"
    for item in index["items"]:
        folder = out / item["dir"]
        assert sorted(p.name for p in folder.iterdir()) == ["caption.txt", "dnp.png", "dns.png"]
        assert (folder / "caption.txt").read_text() == "blurry, dark\n" and item["caption"] == "blurry, dark"
        assert _png(folder / "dns.png").shape == (64, 64, 3)
    one = tmp_path / "one"
    assert main(["dnp", "--model", "tiny", "--caption", "x", "--steps", "2", "--device", "cpu", "--dnp-rule",
                 "three-term", "--prompt", PROMPTS[0], "--out", str(one)]) == 0
    assert sorted(p.name for p in one.iterdir()) == ["caption.txt", "dnp.png", "dns.png", "index.json"]


def test_generate_caption_is_the_two_term_negative_prompt(tmp_path):
    """`generate --caption n*` (manual DNP, two-term default) gives the pixels of `--negative-prompt n*`."""
    common = ["generate", "--model", "tiny", "--steps", "3", "--device", "cpu", "--prompt", PROMPTS[0]]
    assert main([*common, "--caption", "blurry", "--out", str(tmp_path / "dnp")]) == 0
    assert main([*common, "--negative-prompt", "blurry", "--out", str(tmp_path / "neg")]) == 0
    assert np.array_equal(_png(tmp_path / "dnp" / "00000.png"), _png(tmp_path / "neg" / "00000.png"))
    record = json.loads((tmp_path / "dnp" / "generation.json").read_text())
    assert record["method"] == "dnp-caption=blurry" and record["images"][0]["caption"] == "blurry"


def test_world_auto_dnp_and_generate_dnp_start_from_the_same_noise(tmp_path):
    """On the shapes world (its captioner): `reneg dnp` and `reneg generate --dnp` with one seed agree."""
    assert main(["dnp", "--prompt", WORLD_PROMPT, "--steps", "4", "--device", "cpu", "--out", str(tmp_path / "d")]) == 0
    caption = (tmp_path / "d" / "caption.txt").read_text().strip()
    assert caption and "background" in caption  # world words: "<objects> on a <colour> background[, flaws]"
    assert main(["generate", "--dnp", "--prompt", WORLD_PROMPT, "--steps", "4", "--device", "cpu",
                 "--out", str(tmp_path / "g")]) == 0
    record = json.loads((tmp_path / "g" / "generation.json").read_text())
    assert record["method"] == "dnp" and record["images"][0]["caption"] == caption
    assert np.array_equal(_png(tmp_path / "g" / "00000.png"), _png(tmp_path / "d" / "dnp.png"))


# ---------------------------------------------------------------- eval methods


def test_eval_dnp_with_a_caption_file_saves_captions_and_shows_them(tmp_path):
    prompts, captions = tmp_path / "prompts.txt", tmp_path / "captions.json"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    captions.write_text(json.dumps({PROMPTS[0]: "a blue square", PROMPTS[1]: "a red circle"}))
    out = tmp_path / "eval"
    assert main(["eval", "--model", "tiny", "--prompts", str(prompts), "--limit", "2", "--methods",
                 f"null,dnp={captions}", "--metrics", "contrast", "--steps", "2", "--device", "cpu",
                 "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert list(results["methods"]) == ["null", f"dnp={captions}"]
    saved = sorted(p.read_text().strip() for p in (out / "images").glob("dnp-*/side/*.txt"))
    assert saved == ["a blue square", "a red circle"]
    assert "n*: a blue square" in (out / "index.html").read_text()


def test_eval_selects_the_three_term_rule(tmp_path):
    """``dnp=FILE,rule=three-term`` is DNP Eq. 4: other images than the two-term default with a real n*."""
    prompts, captions = tmp_path / "prompts.txt", tmp_path / "captions.json"
    prompts.write_text("\n".join(PROMPTS[:2]) + "\n")
    captions.write_text(json.dumps({PROMPTS[0]: "a blue square", PROMPTS[1]: "a red circle"}))
    out = tmp_path / "eval"
    assert main(["eval", "--model", "tiny", "--prompts", str(prompts), "--methods",
                 f"dnp={captions},dnp={captions},rule=three-term", "--metrics", "contrast", "--steps", "2",
                 "--device", "cpu", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert list(results["methods"]) == [f"dnp={captions}", f"dnp={captions},rule=three-term"]
    folders = sorted(d for d in (out / "images").iterdir() if d.is_dir())
    assert len(folders) == 2
    pictures = [sorted(f.read_bytes() for f in folder.glob("*.png")) for folder in folders]
    assert len(pictures[0]) == 2 and pictures[0] != pictures[1]


def test_eval_auto_dnp_on_the_world_shows_the_dns_image_beside_the_dnp_image(tmp_path):
    out = tmp_path / "eval"
    assert main(["eval", "--limit", "2", "--methods", "dnp", "--metrics", "truth-adherence", "--steps", "3",
                 "--device", "cpu", "--out", str(out)]) == 0
    side = sorted(p.name for p in (out / "images").glob("dnp-*/side/*"))
    assert side == ["p00000-i00.png", "p00000-i00.txt", "p00001-i00.png", "p00001-i00.txt"]
    assert 'alt="DNS image"' in (out / "index.html").read_text()


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("args, needle", [
    (["eval", "--methods", "dnp=missing.json"], "does not exist"),
    (["eval", "--methods", "dnp=BAD"], "not valid JSON"),
    (["eval", "--methods", "dnp=rule=four-term"], "rule must be one of two-term, three-term"),
    (["eval", "--methods", "dnp=PARTIAL", "--prompts", "PROMPTS"], "no caption for the prompt"),
    (["generate", "--dnp", "--negative-prompt", "x", "--prompt", "a"], "drop --negative-prompt"),
    (["generate", "--dnp", "--caption", "x", "--prompt", "a"], "choose one"),
    (["dnp", "--prompt", "a", "--captioner-model", "nobody/not-a-cached-model"], "not in the local hub cache"),
    (["dnp", "--prompt", "a", "--captioner", "nope"], "unknown captioner 'nope'"),
    (["generate", "--dnp", "--prompt", "a", "--captioner-model", "nobody/not-a-cached-model"], "local hub cache"),
    (["eval", "--methods", "dnp", "--prompts", "PROMPTS"], DEFAULT_BLIP2),  # tiny: blip2, not cached
])
def test_bad_dnp_input_exits_2_with_one_line(args, needle, tmp_path, capsys):
    if needle == DEFAULT_BLIP2:
        from huggingface_hub import try_to_load_from_cache

        if isinstance(try_to_load_from_cache(DEFAULT_BLIP2, "config.json"), str):
            pytest.skip(f"{DEFAULT_BLIP2} is in this machine's hub cache")
    files = {"BAD": tmp_path / "bad.json", "PARTIAL": tmp_path / "partial.json", "PROMPTS": tmp_path / "p.txt"}
    files["BAD"].write_text("{not json")
    files["PARTIAL"].write_text(json.dumps({PROMPTS[0]: "x"}))
    files["PROMPTS"].write_text("\n".join(PROMPTS))
    args = [str(files[a]) if a in files else f"dnp={files[a[4:]]}" if a[4:] in files else a for a in args]
    status = main([*args, "--model", "tiny", "--steps", "1", "--device", "cpu", "--out", str(tmp_path / "o")])
    err = _one_error_line(capsys)
    assert status == 2 and len(err) == 1 and needle in err[0], err


# ---------------------------------------------------------------- captioners


def _tiny_blip2(directory):
    """A random-weight BLIP-2 (ViT, Q-Former, OPT of width 16) and its processor, saved; built offline."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import (
        Blip2Config,
        Blip2ForConditionalGeneration,
        Blip2Processor,
        Blip2QFormerConfig,
        Blip2VisionConfig,
        BlipImageProcessor,
        OPTConfig,
        PreTrainedTokenizerFast,
    )

    words = ["</s>", "<pad>", "<unk>", *"a red blue circle square on background and the of".split()]
    word_level = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    word_level.pre_tokenizer, word_level.decoder = pre_tokenizers.Whitespace(), decoders.WordPiece()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=word_level, bos_token="</s>", eos_token="</s>",
                                        pad_token="<pad>", unk_token="<unk>")
    processor = Blip2Processor(BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer, num_query_tokens=4)
    image_token = tokenizer.convert_tokens_to_ids("<image>")  # the processor adds it
    vocab = len(tokenizer)
    config = Blip2Config(
        vision_config=Blip2VisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                        num_attention_heads=2, image_size=32, patch_size=8).to_dict(),
        qformer_config=Blip2QFormerConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                          intermediate_size=32, encoder_hidden_size=16, vocab_size=vocab).to_dict(),
        text_config=OPTConfig(vocab_size=vocab, hidden_size=16, ffn_dim=32, num_hidden_layers=1, num_attention_heads=2,
                              word_embed_proj_dim=16, max_position_embeddings=64, bos_token_id=0, eos_token_id=0,
                              pad_token_id=1, tie_word_embeddings=False).to_dict(),
        num_query_tokens=4, image_token_index=image_token)
    torch.manual_seed(0)
    model = Blip2ForConditionalGeneration(config).eval()
    with torch.no_grad():  # random weights, steered so that greedy decoding says words rather than stopping at once
        decoder = model.language_model.model.decoder
        decoder.final_layer_norm.weight.mul_(0.1)
        decoder.final_layer_norm.bias.fill_(1.0)  # hidden states near all-ones
        head = model.language_model.lm_head.weight
        head.normal_(0.1, 0.1)
        head[[0, 1, 2, image_token]] = -1.0  # special tokens score far below words
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return words[3:]


def test_blip2_captioner_round_trip_on_a_tiny_random_model(tmp_path):
    words = _tiny_blip2(tmp_path / "blip2")
    assert "blip2" in available_captioners() and "shapes-truth" in available_captioners()
    captioner = load_captioner("blip2", str(tmp_path / "blip2"), max_new_tokens=5)
    images = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    captions = captioner(images)
    assert len(captions) == 3 and all(isinstance(c, str) and c for c in captions)
    assert all(len(c.split()) <= 5 and set(c.split()) <= set(words) for c in captions), captions
    assert captioner(images) == captions  # greedy: deterministic


def test_reneg_dnp_auto_with_the_tiny_blip2(tmp_path):
    """auto-DNP end to end on the tiny model: DNS image -> BLIP-2 caption -> DNP image."""
    _tiny_blip2(tmp_path / "blip2")
    assert main(["dnp", "--model", "tiny", "--prompt", PROMPTS[0], "--captioner-model", str(tmp_path / "blip2"),
                 "--max-new-tokens", "4", "--steps", "2", "--device", "cpu", "--out", str(tmp_path / "o")]) == 0
    index = json.loads((tmp_path / "o" / "index.json").read_text())
    assert index["captioner"] == "blip2" and 1 <= len(index["items"][0]["caption"].split()) <= 4


def test_shapes_truth_captioner_names_world_words():
    from reneg.world import vocab

    captioner = load_captioner("shapes-truth")
    captions = captioner(torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)))
    assert len(captions) == 2
    for caption in captions:
        assert "background" in caption and any(shape in caption for shape in vocab.SHAPES)
