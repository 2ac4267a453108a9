"""reneg efficiency: the random-projection estimate of ||J||_F^2 against the exact Jacobian (ReNeg Sec. 4.1)."""

import json

import pytest
import torch

from reneg.cli import main
from reneg.evaluate.efficiency import (
    ParameterSet,
    basis_probes,
    denoised_latents,
    efficiency_of,
    gaussian_probes,
    mean_interval,
    measure,
    projected_norms,
    worst_case_interval,
)

STEPS, RESOLUTION = 2, 16  # latents 4 x 2 x 2: D = 16


def test_basis_probes_give_the_exact_norm_and_gaussian_probes_cover_it():
    generator = torch.Generator().manual_seed(0)
    jacobian = torch.randn(12, 30, generator=generator)  # X (3 x 4) = J theta, theta of size 30
    theta = torch.randn(30, generator=generator, requires_grad=True)
    output = (jacobian @ theta).view(3, 4)
    sets = [ParameterSet("theta", "theta", [theta])]
    exact = float(projected_norms(output, sets, basis_probes((3, 4))).sum())
    assert exact == pytest.approx(float(jacobian.pow(2).sum()), rel=1e-6)
    norms = projected_norms(output, sets, gaussian_probes((3, 4), 400, generator=generator))[:, 0]
    mean, low, high = mean_interval(norms, 0.99)
    assert low <= exact <= high
    low, high = worst_case_interval(norms, 0.99)
    assert low <= exact <= high and low < mean < high
    assert abs(mean - exact) / exact < 0.15
    assert efficiency_of(exact, samples=3, dim=4, size=30) == pytest.approx(exact ** 0.5 / 360)


@pytest.fixture(scope="module")
def tiny():
    from reneg.models.loading import load_model

    return load_model("tiny")


def _inputs(model):
    latents = model.family.initial_latents(2, resolution=RESOLUTION, generator=torch.Generator().manual_seed(0))
    return ["a red circle on a blue background", "a green square"], model.family.null_text().embeds, latents


def test_exact_jacobian_of_the_negative_through_the_chain(tiny):
    """The basis-probe norm of n equals the Frobenius norm of J formed by torch.autograd.functional.jacobian."""
    prompts, negative, latents = _inputs(tiny)

    def x_of(n):
        return denoised_latents(tiny, prompts, n, latents, steps=STEPS, guidance_scale=7.5, resolution=RESOLUTION)

    jacobian = torch.autograd.functional.jacobian(x_of, negative.clone())  # (N, D, 1, L, d)
    assert jacobian.shape[:2] == (2, 16) and jacobian.abs().sum() > 0
    record = measure(tiny, prompts, negative, latents, steps=STEPS, guidance_scale=7.5, resolution=RESOLUTION,
                     probes=4, lora_ranks=[], exact=True)
    assert record["exact"]["negative"]["frobenius_squared"] == pytest.approx(float(jacobian.double().pow(2).sum()),
                                                                            rel=1e-4)


def test_estimate_within_its_interval_of_the_exact_value_for_every_parameter_set(tiny):
    prompts, negative, latents = _inputs(tiny)
    unet = tiny.family.model
    before = denoised_latents(tiny, prompts, negative, latents, steps=STEPS, guidance_scale=7.5,
                              resolution=RESOLUTION).detach()
    record = measure(tiny, prompts, negative, latents, steps=STEPS, guidance_scale=7.5, resolution=RESOLUTION,
                     probes=48, lora_ranks=[8, 16], confidence=0.99, exact=True)
    assert set(record["parameters"]) == {"negative", "unet", "lora-8", "lora-16"}
    for name, entry in record["parameters"].items():
        exact = record["exact"][name]["frobenius_squared"]
        low, high = entry["frobenius_squared_interval_worst_case"]
        assert exact > 0 and low <= exact <= high, name
        assert record["exact"][name]["within_worst_case_interval"]
        assert abs(entry["frobenius_squared"] - exact) / exact < 0.5, name
        for key in ("E_interval", "E_interval_worst_case"):
            assert entry[key][0] <= entry["E"] <= entry[key][1]
    assert record["parameters"]["lora-8"]["d_theta"] * 2 == record["parameters"]["lora-16"]["d_theta"]
    assert record["parameters"]["negative"]["d_theta"] == 77 * 32
    assert record["parameters"]["unet"]["d_theta"] == sum(p.numel() for p in unet.parameters())
    # the model is left as it was: no adapters, no gradients, the same output
    assert not getattr(unet, "peft_config", None)
    assert not any(p.requires_grad for p in unet.parameters())
    after = denoised_latents(tiny, prompts, negative, latents, steps=STEPS, guidance_scale=7.5, resolution=RESOLUTION)
    torch.testing.assert_close(after.detach(), before)


def test_cli_writes_json_and_chart(tmp_path, capsys):
    out = tmp_path / "eff"
    assert main(["efficiency", "--model", "tiny", "--num-samples", "2", "--probes", "3", "--steps", "2",
                 "--resolution", "16", "--lora-ranks", "4", "--out", str(out)]) == 0
    data = json.loads((out / "efficiency.json").read_text())
    assert set(data["parameters"]) == {"negative", "unet", "lora-4"} and data["N"] == 2 and data["D"] == 16
    assert len(data["per_probe_frobenius_squared"]["unet"]) == 3
    assert [c["claim"] for c in data["ordering"]["checks"]] == ["E(negative) >> E(unet)", "E(unet) > E(lora-4)"]
    assert (out / "efficiency.png").read_bytes()[:4] == b"\x89PNG"
    assert capsys.readouterr().out.strip().endswith("efficiency.json")


def test_rms_sensitivity_beside_e_and_the_lora_init_is_a_choice(tmp_path):
    """E divides ||J||_F by N D d_theta, RMS by its square root; LoRA's A at the start changes LoRA's E."""
    records = {}
    for init in ("gaussian", "kaiming"):
        out = tmp_path / init
        assert main(["efficiency", "--model", "tiny", "--num-samples", "2", "--probes", "3", "--steps", "2",
                     "--resolution", "16", "--lora-ranks", "4", "--lora-init", init, "--out", str(out)]) == 0
        records[init] = json.loads((out / "efficiency.json").read_text())
    for name, entry in records["gaussian"]["parameters"].items():
        count = 2 * 16 * entry["d_theta"]
        assert entry["rms_sensitivity"] == pytest.approx(entry["E"] * count / count ** 0.5, rel=1e-9), name
    same = records["kaiming"]["parameters"]
    assert same["negative"]["E"] == records["gaussian"]["parameters"]["negative"]["E"]  # only LoRA's A changed
    assert same["lora-4"]["E"] != records["gaussian"]["parameters"]["lora-4"]["E"]
    assert records["kaiming"]["lora_init"] == "kaiming"


@pytest.mark.parametrize("flags, needle", [(["--probes", "1"], "--probes"), (["--negative", "missing.safetensors"],
                                                                                  "does not exist")])
def test_bad_input_is_one_line(flags, needle, tmp_path, capsys):
    assert main(["efficiency", "--model", "tiny", "--out", str(tmp_path / "eff"), *flags]) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "eff" / "efficiency.json").exists()


def test_lora_rows_are_reproducible_for_a_seed(tmp_path):
    runs = []
    for name in ("a", "b"):
        out = tmp_path / name
        assert main(["efficiency", "--model", "tiny", "--num-samples", "2", "--probes", "2", "--steps", "2",
                     "--resolution", "16", "--lora-ranks", "4", "--seed", "3", "--out", str(out)]) == 0
        runs.append(json.loads((out / "efficiency.json").read_text())["parameters"]["lora-4"]["E"])
    assert runs[0] == runs[1]


@pytest.mark.parametrize("name", ["tiny-sdxl", "tiny-sd3"])
def test_efficiency_runs_on_families_with_a_pooled_negative(name, tmp_path):
    """SDXL's and SD3's negatives have a pooled part: it rides along fixed (was: an internal error)."""
    assert main(["efficiency", "--model", name, "--prompt", "a red circle", "--steps", "2", "--num-samples", "2",
                 "--probes", "2", "--lora-ranks", "1", "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "efficiency.json").read_text())
    assert {"negative", "unet"} <= set(record["parameters"])
