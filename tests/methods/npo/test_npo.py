"""Diffusion-NPO: training routes, adapter files, one-call inference, the pipeline wrapper, the reversed DPO loss."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from reneg.cli import main
from reneg.core.denoiser import BASE, AdapterWeights, Branch, GuidedDenoiser
from reneg.methods.npo.dpo import diffusion_dpo_loss, npo_dpo_loss
from reneg.methods.npo.weights import apply_npo, install_npo, remove_npo, save_adapter
from reneg.methods.spec import build_methods, parse_method_spec
from reneg.models.loading import load_model

TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]


def _random_lora(pipe, directory, *, seed, rank=4, zero=False):
    """A LoRA on ``pipe.unet`` with random (or zero) weights, saved as an NPO adapter directory and removed."""
    from peft import LoraConfig

    torch.manual_seed(seed)
    unet = pipe.unet
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=TARGETS,
                                init_lora_weights="gaussian" if zero else False), adapter_name="made")
    save_adapter(unet, "made", directory, {"route": "test"})
    unet.delete_adapters("made")
    return directory


@pytest.fixture()
def model():
    return load_model("tiny")  # a fresh pipeline: adapters added here stay out of other tests


def _images(model, spec, latents, *, guidance_scale=7.5, steps=3, prompts=("a red circle", "a blue square")):
    method = build_methods([parse_method_spec(spec)], model)[parse_method_spec(spec).base]
    return method.images(model, list(prompts), latents.clone(), guidance_scale=guidance_scale, steps=steps)


def _latents(model, seed=0, batch=2):
    return model.family.initial_latents(batch, resolution=model.resolution, generator=torch.Generator().manual_seed(seed))


def test_beta_zero_or_zero_delta_is_plain_cfg_bit_for_bit(model, tmp_path):
    delta = _random_lora(model.pipe, tmp_path / "delta", seed=1)
    zero = _random_lora(model.pipe, tmp_path / "zero", seed=2, zero=True)  # Gaussian init: B = 0, delta = 0
    latents = _latents(model)
    plain = _images(model, "null", latents)
    assert torch.equal(_images(model, f"npo={delta},beta=0", latents), plain)
    assert torch.equal(_images(model, f"npo={zero}", latents), plain)
    assert not torch.allclose(_images(model, f"npo={delta},beta=1", latents), plain, atol=1e-3)  # delta acts


def test_one_call_equals_separate_calls(model, tmp_path):
    """cond theta+eta, negative theta+alpha*eta+beta*delta in one call == two calls with peft's set_adapters."""
    pipe, unet = model.pipe, model.pipe.unet
    delta, eta = _random_lora(pipe, tmp_path / "delta", seed=1), _random_lora(pipe, tmp_path / "eta", seed=3, rank=2)
    weights = install_npo(pipe, npo=delta, beta=0.7, lora=eta, alpha=0.4)
    eta_name, delta_name = [n for n in unet.peft_config if n.startswith("lora_")]  # loaded in this order
    x, t = torch.randn(2, 4, 8, 8), torch.tensor(500)
    cond, negative = {"encoder_hidden_states": torch.randn(2, 77, 32)}, {"encoder_hidden_states": torch.randn(2, 77, 32)}
    cond_weights, negative_weights = weights.branch_weights()
    calls = []
    handle = unet.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape[0]))
    with torch.no_grad():
        one = GuidedDenoiser(unet, {"negative": Branch(negative, negative_weights),
                                    "cond": Branch(cond, cond_weights)}).outputs(x, t, ("negative", "cond"))
        handle.remove()
        separate_negative = AdapterWeights((eta_name, delta_name), (0.4, 0.7)).forward(unet, x, t, negative)
        separate_cond = AdapterWeights((eta_name,), (1.0,)).forward(unet, x, t, cond)
        base_negative = BASE.forward(unet, x, t, negative)
    assert calls == [4]  # one batched UNet call for both branches
    assert torch.allclose(one["negative"], separate_negative, atol=1e-5)
    assert torch.allclose(one["cond"], separate_cond, atol=1e-5)
    assert (separate_negative - base_negative).abs().max() > 1e-3


def test_pipeline_wrapper_equals_reneg_sampler(model, tmp_path):
    from diffusers import StableDiffusionPipeline

    delta, eta = _random_lora(model.pipe, tmp_path / "delta", seed=1), _random_lora(model.pipe, tmp_path / "eta", seed=3)
    prompts = ["a red circle", "a blue square"]
    ours = _images(model, f"npo={delta},beta=0.8,lora={eta},alpha=0.3", _latents(model, seed=5), prompts=prompts)
    pipe = StableDiffusionPipeline(**model.pipe.components)  # the same modules, diffusers' own sampling loop
    apply_npo(pipe, npo=delta, beta=0.8, lora=eta, alpha=0.3)
    theirs = pipe(prompts, num_inference_steps=3, guidance_scale=7.5, generator=torch.Generator().manual_seed(5),
                  output_type="pt").images
    assert theirs.shape == ours.shape
    assert (theirs - ours).abs().max() < 1e-4


def test_reversed_pair_dpo_is_dpo_with_winner_and_loser_swapped():
    generator = torch.Generator().manual_seed(0)
    model_w, model_l, ref_w, ref_l = (torch.rand(6, generator=generator) for _ in range(4))
    reversed_loss = npo_dpo_loss(model_w, model_l, ref_w, ref_l, beta=50.0)
    assert torch.allclose(reversed_loss, diffusion_dpo_loss(model_l, model_w, ref_l, ref_w, beta=100.0))
    # the NPO release's formula written out (no factor 1/2), the rejected image in the winner's place
    by_hand = -F.logsigmoid(50.0 * ((ref_l - ref_w) - (model_l - model_w))).mean()
    assert torch.allclose(reversed_loss, by_hand)
    assert not torch.allclose(reversed_loss, diffusion_dpo_loss(model_w, model_l, ref_w, ref_l, beta=100.0))
    # lowering the rejected image's error relative to the reference lowers the reversed loss
    assert npo_dpo_loss(model_w, model_l - 0.01, ref_w, ref_l, beta=50.0) < reversed_loss


def test_adapter_round_trip_through_diffusers_load_lora_weights(model, tmp_path):
    from diffusers import StableDiffusionPipeline
    from peft.utils import get_peft_model_state_dict

    from reneg.models.tiny import tiny_sd_pipeline

    directory = _random_lora(model.pipe, tmp_path / "delta", seed=4)
    metadata = json.loads((directory / "npo.json").read_text())
    assert metadata["format"] == "reneg.npo_adapter" and metadata["base_model_fingerprint"].startswith("dn1:")
    pipe = tiny_sd_pipeline()
    assert isinstance(pipe, StableDiffusionPipeline)
    pipe.load_lora_weights(str(directory), adapter_name="loaded")
    config = pipe.unet.peft_config["loaded"]
    assert config.r == 4 and config.lora_alpha == 8 and set(config.target_modules) == set(TARGETS)
    # the same weights as written: reload them onto the model that made them
    model.pipe.load_lora_weights(str(directory), adapter_name="again")
    theirs = get_peft_model_state_dict(pipe.unet, adapter_name="loaded")
    again = get_peft_model_state_dict(model.pipe.unet, adapter_name="again")
    assert theirs.keys() == again.keys() and all(torch.equal(theirs[k], again[k]) for k in theirs)


def test_reward_and_dpo_routes_end_to_end(tmp_path, capsys):
    from reneg.world.pairs import write_world_pairs

    base = ["--model", "tiny", "--train-steps", "2", "--batch-size", "2", "--device", "cpu", "--rank", "2"]
    assert main(["npo", *base, "--route", "reward", "--reward", "contrast", "--steps", "3",
                 "--out", str(tmp_path / "reward")]) == 0
    pairs = write_world_pairs(tmp_path / "pairs", count=4, seed=0)
    assert main(["npo", *base, "--route", "dpo", "--pairs", str(pairs), "--out", str(tmp_path / "dpo")]) == 0
    assert main(["npo", *base, "--route", "reward-cfg", "--joint", "--reward", "contrast", "--steps", "3",
                 "--out", str(tmp_path / "joint")]) == 0
    assert main(["npo", *base, "--route", "positive", "--reward", "contrast", "--steps", "3",
                 "--out", str(tmp_path / "eta")]) == 0
    for name, route in (("reward", "reward"), ("dpo", "dpo"), ("joint", "reward-cfg"), ("eta", "positive")):
        record = json.loads((tmp_path / name / "npo.json").read_text())
        assert record["route"] == route and record["train_steps"] == 2 and record["rank"] == 2
        assert (tmp_path / name / "pytorch_lora_weights.safetensors").is_file()
    assert (tmp_path / "joint" / "negative.safetensors").is_file()
    # ReNeg + NPO at inference: the learned embedding and delta on the negative branch
    assert main(["generate", "--model", "tiny", "--prompt", "a cat", "--steps", "2", "--device", "cpu",
                 "--npo", str(tmp_path / "joint"), "--negative", str(tmp_path / "joint" / "negative.safetensors"),
                 "--out", str(tmp_path / "images")]) == 0
    assert json.loads((tmp_path / "images" / "generation.json").read_text())["method"].startswith("npo=")
    # NPO with a positive LoRA, and the weight merge of NPO Eq. 4
    assert main(["generate", "--model", "tiny", "--prompt", "a cat", "--steps", "2", "--device", "cpu",
                 "--npo", str(tmp_path / "reward"), "--lora", str(tmp_path / "eta"), "--npo-alpha", "0.5",
                 "--out", str(tmp_path / "with-eta")]) == 0
    assert main(["generate", "--model", "tiny", "--prompt", "a cat", "--steps", "2", "--device", "cpu",
                 "--lora", str(tmp_path / "eta"), "--npo-alpha", "0.6", "--out", str(tmp_path / "merge")]) == 0
    assert json.loads((tmp_path / "merge" / "generation.json").read_text())["method"] == \
        f"npo-merge={tmp_path / 'eta'},gamma=0.6"


@pytest.mark.parametrize("args, message", [
    (["npo", "--route", "dpo"], "--route dpo needs --pairs"),
    (["npo", "--pairs", "x.jsonl"], "--pairs applies to --route dpo only"),
    (["npo", "--route", "dpo", "--pairs", "missing.jsonl", "--model", "tiny"], "does not exist"),
    (["npo", "--model", "tiny", "--target-modules", "no_such_layer", "--reward", "contrast"], "--target-modules"),
    (["generate", "--model", "tiny", "--prompt", "a", "--npo", "missing-dir"], "does not exist"),
    (["generate", "--model", "tiny", "--prompt", "a", "--npo-beta", "0.5"], "--npo-beta scales --npo"),
    (["eval", "--model", "tiny", "--methods", "npo=missing,beta=x"], "beta must be a finite number"),
])
def test_bad_input_is_one_line(args, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(args + ["--device", "cpu"] if args[0] != "eval" else args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_bad_pairs_line_is_one_line(tmp_path, capsys):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"prompt": "a", "preferred": "a.png"}\n')
    assert main(["npo", "--model", "tiny", "--route", "dpo", "--pairs", str(pairs), "--device", "cpu",
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "line 1 needs" in err and "\n" not in err and not (tmp_path / "o" / "npo.json").exists()


def _guided_reward(model, reward, cond_adapter, negative_adapter, prompts, latents):
    from reneg.core.denoiser import RowAdapter
    from reneg.core.rollout import rollout, text_branches

    family = model.family
    branches = text_branches(family, family.encode(prompts), family.null_text(), resolution=model.resolution,
                             negative_weights=RowAdapter(negative_adapter))
    branches["cond"].weights = RowAdapter(cond_adapter)
    with torch.no_grad():
        return float(reward(rollout(family, branches, latents.clone(), steps=3, guidance_scale=7.5), prompts).mean())


def test_the_default_route_trains_a_delta_that_guidance_turns_into_reward(model, tmp_path):
    """reward-cfg (the default): delta raises the reward through CFG on the negative branch, and lowers it when it
    runs the prompt's branch alone: it has learned what the reward dislikes (NPO Sec. 3.1)."""
    from reneg.core.denoiser import BASE_ROWS
    from reneg.methods.npo.train import NPOConfig, train_npo
    from reneg.rewards import build_reward

    prompts = ["a red circle", "a blue square", "a green star", "a cat"]
    config = NPOConfig(model="tiny", reward="contrast", train_steps=20, batch_size=4, steps=3, device="cpu", lr=3e-2,
                       prompt=prompts, out=str(tmp_path / "delta"), log_every=0)
    assert config.route == "reward-cfg"
    out = train_npo(config, model=model)
    assert json.loads((out / "npo.json").read_text())["route"] == "reward-cfg"
    delta = install_npo(model.pipe, npo=out).negative  # beta = 1: the adapter is delta
    reward, latents = build_reward("contrast"), _latents(model, seed=7, batch=8)
    plain = _guided_reward(model, reward, BASE_ROWS, BASE_ROWS, prompts * 2, latents)
    through_cfg = _guided_reward(model, reward, BASE_ROWS, delta, prompts * 2, latents)
    prompt_branch_alone = _guided_reward(model, reward, delta, BASE_ROWS, prompts * 2, latents)
    assert through_cfg > plain + 0.005
    assert prompt_branch_alone < plain - 0.001


def test_defaults_are_the_release_s(tmp_path):
    from reneg.methods.npo.train import NPOConfig, NPOTrainer

    for route, lr, decay in (("reward-cfg", 1e-5, 0.0), ("reward", 1e-5, 0.0)):
        trainer = NPOTrainer(NPOConfig(model="tiny", route=route, reward="contrast", device="cpu",
                                       out=str(tmp_path / route)))
        group = trainer.optimizer.param_groups[0]
        assert (group["lr"], group["weight_decay"]) == (lr, decay)
        trainer.family.model.delete_adapters("npo_delta")
    from reneg.world.pairs import write_world_pairs

    pairs = write_world_pairs(tmp_path / "pairs", count=2, seed=0)
    trainer = NPOTrainer(NPOConfig(model="tiny", route="dpo", pairs=str(pairs), device="cpu", out=str(tmp_path / "d")))
    group = trainer.optimizer.param_groups[0]
    assert (group["lr"], group["weight_decay"]) == (5e-6, 1e-2) and trainer.config.dpo_beta == 500


def test_lora_at_training_puts_delta_on_theta_plus_eta_and_restores_theta(model, tmp_path):
    from reneg.core.denoiser import AdapterWeights
    from reneg.methods.npo.train import NPOConfig, NPOTrainer, train_npo
    from reneg.methods.npo.weights import load_adapter

    eta = _random_lora(model.pipe, tmp_path / "eta", seed=3, rank=2)
    unet = model.pipe.unet
    x, t, cond = torch.randn(2, 4, 8, 8), torch.tensor(500), {"encoder_hidden_states": torch.randn(2, 77, 32)}
    with torch.no_grad():
        theta = BASE.forward(unet, x, t, cond)
        eta_name = load_adapter(model.pipe, eta, what="--lora")
        theta_eta = AdapterWeights((eta_name,), (1.0,)).forward(unet, x, t, cond)
    unet.delete_adapters(eta_name)
    config = NPOConfig(model="tiny", reward="contrast", train_steps=1, batch_size=2, steps=3, device="cpu",
                       lora=str(eta), out=str(tmp_path / "delta"), log_every=0)
    trainer = NPOTrainer(config, model=model)
    with torch.no_grad():  # the prompt's rows (theta, adapters off) now run theta + eta
        assert torch.allclose(BASE.forward(unet, x, t, cond), theta_eta, atol=1e-5)
    trainer.restore_base()
    unet.delete_adapters("npo_delta")
    out = train_npo(config, model=model)
    with torch.no_grad():
        assert torch.equal(BASE.forward(unet, x, t, cond), theta)  # theta back, bit for bit
    assert json.loads((out / "npo.json").read_text())["lora"].startswith(str(eta))


def test_a_frozen_branch_passes_no_gradient():
    """NPO Eq. 7's ablation (--route reward): the negative branch's output is detached."""

    class Scale(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.tensor(2.0))
            self.dtype = torch.float32

        def forward(self, x, t, encoder_hidden_states, return_dict=False):
            return (self.weight * x * encoder_hidden_states,)

    x, t = torch.ones(1, 1), torch.tensor(1)
    gradients = {}
    for frozen in (False, True):
        model = Scale()
        branches = {"negative": Branch({"encoder_hidden_states": torch.full((1, 1), 3.0)}, frozen=frozen),
                    "cond": Branch({"encoder_hidden_states": torch.full((1, 1), 5.0)})}
        GuidedDenoiser(model, branches, guidance_scale=4.0)(x, t).sum().backward()
        gradients[frozen] = float(model.weight.grad)
    assert gradients == {False: 4.0 * 5.0 + (1 - 4.0) * 3.0, True: 4.0 * 5.0}


def test_generate_lora_alone_is_the_papers_merge_at_gamma_0_6(model, tmp_path):
    eta = _random_lora(model.pipe, tmp_path / "eta", seed=3)
    common = ["generate", "--model", "tiny", "--prompt", "a red circle", "--steps", "3", "--device", "cpu"]
    assert main([*common, "--lora", str(eta), "--out", str(tmp_path / "lora")]) == 0
    assert main([*common, "--method", f"npo-merge={eta},gamma=0.6", "--out", str(tmp_path / "merge")]) == 0
    assert main([*common, "--out", str(tmp_path / "plain")]) == 0
    assert json.loads((tmp_path / "lora" / "generation.json").read_text())["method"] == f"npo-merge={eta},gamma=0.6"
    images = {name: sorted((tmp_path / name).glob("*.png")) for name in ("lora", "merge", "plain")}
    assert len(images["lora"]) == 1
    read = {name: np.asarray(Image.open(files[0])) for name, files in images.items()}  # pixels (the PNGs' text
    assert np.array_equal(read["lora"], read["merge"]) and not np.array_equal(read["lora"], read["plain"])  # differs)


def test_two_runs_with_one_seed_write_the_same_bytes(tmp_path):
    """delta's random start comes from --seed, and the adapter file's metadata is written in sorted order."""
    for name in ("a", "b"):
        assert main(["npo", "--model", "tiny", "--reward", "contrast", "--train-steps", "2", "--batch-size", "2",
                     "--steps", "3", "--rank", "2", "--lr", "1e-2", "--device", "cpu", "--seed", "5",
                     "--out", str(tmp_path / name)]) == 0
    first, second = (tmp_path / n / "pytorch_lora_weights.safetensors" for n in ("a", "b"))
    assert first.read_bytes() == second.read_bytes()
    assert main(["npo", "--model", "tiny", "--reward", "contrast", "--train-steps", "2", "--batch-size", "2",
                 "--steps", "3", "--rank", "2", "--lr", "1e-2", "--device", "cpu", "--seed", "6",
                 "--out", str(tmp_path / "c")]) == 0
    assert (tmp_path / "c" / "pytorch_lora_weights.safetensors").read_bytes() != first.read_bytes()


def test_a_killed_run_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch):
    """--checkpoint-every N, a kill after step 2 of 4, then --resume: delta (and Adam's state) as if never stopped."""
    from safetensors.torch import load_file

    from reneg.methods.npo.train import NPOTrainer

    def run(out, *extra):
        return main(["npo", "--model", "tiny", "--reward", "contrast", "--train-steps", "4", "--batch-size", "2",
                     "--steps", "3", "--rank", "2", "--lr", "1e-2", "--device", "cpu", "--out", str(out), *extra])

    assert run(tmp_path / "whole") == 0
    step = NPOTrainer.train_step

    def killed_at_three(self):
        if self.step == 2:
            raise SystemExit(137)  # what a SIGKILL leaves: nothing after the last checkpoint
        return step(self)

    monkeypatch.setattr(NPOTrainer, "train_step", killed_at_three)
    with pytest.raises(SystemExit):
        run(tmp_path / "cut", "--checkpoint-every", "2")
    assert not (tmp_path / "cut").exists() and (tmp_path / "cut.checkpoint" / "latest").is_file()
    monkeypatch.setattr(NPOTrainer, "train_step", step)
    assert run(tmp_path / "cut", "--resume", str(tmp_path / "cut.checkpoint")) == 0
    whole = load_file(str(tmp_path / "whole" / "pytorch_lora_weights.safetensors"))
    resumed = load_file(str(tmp_path / "cut" / "pytorch_lora_weights.safetensors"))
    assert whole.keys() == resumed.keys() and all(torch.equal(whole[k], resumed[k]) for k in whole)
    # a resume with other settings is refused in one line
    assert main(["npo", "--model", "tiny", "--reward", "contrast", "--train-steps", "4", "--batch-size", "2",
                 "--steps", "3", "--rank", "2", "--lr", "2e-2", "--device", "cpu", "--out", str(tmp_path / "other"),
                 "--resume", str(tmp_path / "cut.checkpoint")]) == 2


def test_low_rank_rows_give_peft_s_images_without_peft(model, tmp_path):
    """The inference path (plain low-rank products on the rows) against peft's mixed batch: the same images to 1e-5,
    and no peft layer in the UNet."""
    from reneg.core.rollout import rollout, text_branches
    from reneg.methods.npo.lowrank import LowRankNPOWeights, lowrank_npo

    delta, eta = _random_lora(model.pipe, tmp_path / "delta", seed=1), _random_lora(model.pipe, tmp_path / "eta", seed=3)
    fast = lowrank_npo(model.pipe, npo=delta, beta=0.8, lora=eta, alpha=0.3)
    assert isinstance(fast, LowRankNPOWeights)
    assert not any(name.startswith("lora_") for name in getattr(model.pipe.unet, "peft_config", {}))  # none loaded
    prompts, family = ["a red circle", "a blue square"], model.family

    def images(weights):
        cond, negative = weights.branch_weights()
        branches = text_branches(family, family.encode(prompts), family.null_text(), resolution=model.resolution,
                                 negative_weights=negative)
        branches["cond"].weights = cond
        with torch.no_grad():
            return rollout(family, branches, _latents(model, seed=5), steps=3, guidance_scale=7.5)

    ours = images(fast)
    theirs = images(install_npo(model.pipe, npo=delta, beta=0.8, lora=eta, alpha=0.3))
    assert (ours - theirs).abs().max() < 1e-5
    plain = images(LowRankNPOWeights(*(type(fast.cond)(),) * 2))
    assert (ours - plain).abs().max() > 1e-3


def test_sigterm_stops_npo_between_steps_and_resumes(tmp_path, capsys, monkeypatch):
    import os
    import signal

    from safetensors.torch import load_file

    from reneg.methods.npo.train import NPOTrainer

    def run(out, *extra):
        return main(["npo", "--model", "tiny", "--reward", "contrast", "--train-steps", "3", "--batch-size", "2",
                     "--steps", "3", "--rank", "2", "--lr", "1e-2", "--device", "cpu", "--out", str(out), *extra])

    step = NPOTrainer.train_step

    def signalled_at_one(self):
        record = step(self)
        if self.step == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return record

    monkeypatch.setattr(NPOTrainer, "train_step", signalled_at_one)
    assert run(tmp_path / "cut") == 143
    error = capsys.readouterr().err.strip().splitlines()[-1]
    checkpoint = tmp_path / "cut.checkpoint"
    assert "stopped by SIGTERM after step 1" in error and f"--resume {checkpoint}" in error
    monkeypatch.setattr(NPOTrainer, "train_step", step)
    assert run(tmp_path / "cut", "--resume", str(checkpoint)) == 0 and run(tmp_path / "whole") == 0
    cut, whole = (load_file(str(tmp_path / n / "pytorch_lora_weights.safetensors")) for n in ("cut", "whole"))
    assert all(torch.equal(cut[k], whole[k]) for k in whole)


def test_remove_npo_gives_the_plain_pipeline_back(model, tmp_path):
    """Loading an adapter makes it active on every row; after remove_npo the UNet runs theta again, bit for bit."""
    delta = _random_lora(model.pipe, tmp_path / "delta", seed=6)

    def latents():
        return model.pipe("a red circle", num_inference_steps=1, guidance_scale=5.0, output_type="latent",
                          generator=torch.Generator().manual_seed(0)).images

    plain = latents()
    apply_npo(model.pipe, npo=delta)
    assert not torch.equal(latents(), plain)
    remove_npo(model.pipe)
    assert torch.equal(latents(), plain)
    apply_npo(model.pipe, npo=delta, beta=0.5)  # again: NPO's rows switch the adapters back on
    assert not torch.equal(latents(), plain)


def test_an_apply_npo_pipeline_saves_the_base_and_reloads(model, tmp_path):
    """save_pretrained after apply_npo writes the base pipeline (no adapter tensors, plain layer names), which
    diffusers loads with the base UNet's weights; NPO stays applied to the live pipeline."""
    from diffusers import StableDiffusionPipeline

    from reneg.methods.npo.weights import NPOUNet

    base = {k: v.clone() for k, v in load_model("tiny").pipe.unet.state_dict().items()}
    delta = _random_lora(model.pipe, tmp_path / "delta", seed=1)
    pipe = StableDiffusionPipeline(**model.pipe.components)
    apply_npo(pipe, npo=delta, beta=0.8)
    pipe.save_pretrained(tmp_path / "saved")
    assert isinstance(pipe.unet, NPOUNet)
    reloaded = StableDiffusionPipeline.from_pretrained(tmp_path / "saved").unet.state_dict()
    assert sorted(reloaded) == sorted(base)
    assert all(torch.equal(reloaded[k], base[k]) for k in base)


def test_npo_writes_the_loop_s_logs_and_a_validation_curve(tmp_path):
    """reneg npo runs the listeners of reneg train: <out>.log.jsonl, <out>.reward.png, <out>.validation.jsonl (step
    0 is delta off), and TensorBoard on request."""
    out = tmp_path / "delta"
    assert main(["npo", "--model", "tiny", "--reward", "contrast", "--train-steps", "2", "--batch-size", "2",
                 "--steps", "3", "--rank", "2", "--lr", "1e-2", "--validate-every", "1", "--validate-prompts", "2",
                 "--device", "cpu", "--out", str(out)]) == 0
    log = [json.loads(line) for line in (tmp_path / "delta.log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2] and all(r["lr"] == 1e-2 for r in log)
    curve = [json.loads(line) for line in (tmp_path / "delta.validation.jsonl").read_text().splitlines()]
    assert [c["step"] for c in curve] == [0, 1, 2] and all(isinstance(c["validation_reward"], float) for c in curve)
    assert (tmp_path / "delta.reward.png").is_file() and (out / "pytorch_lora_weights.safetensors").is_file()
