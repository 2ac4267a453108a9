"""`reneg eval` on the tiny model: schema, win rates, reproducibility, crash and resume, @GS specs, guidance sweep."""

import json
import shutil

import pytest
import torch

import reneg.methods.base as methods_module
from reneg.cli import main
from reneg.core.fingerprint import text_encoder_fingerprint
from reneg.embedding import NegativeEmbedding
from reneg.errors import ReNegError
from reneg.evaluate import EvalConfig, evaluate, parse_method_spec, parse_method_specs, win_rate
from reneg.evaluate.metrics import MetricSpec
from reneg.evaluate.runner import item_latents, make_plan
from reneg.methods.spec import split_method_list
from reneg.models.loading import load_model
from reneg.rewards import DIAGNOSTICS, available_rewards

PROMPTS = {"shapes": ["a red circle on a blue background", "a green square on a white background"],
           "scenes": ["a yellow star above a purple house", "an orange triangle in a gray room"]}
METRICS = ["contrast", "random-linear"]


@pytest.fixture(scope="module")
def model():
    return load_model("tiny")


@pytest.fixture(scope="module")
def files(tmp_path_factory, model):
    directory = tmp_path_factory.mktemp("eval-inputs")
    benchmark = directory / "bench.json"
    benchmark.write_text(json.dumps(PROMPTS))
    embedding = directory / "neg.safetensors"
    fingerprint = text_encoder_fingerprint(model.pipe.text_encoder)
    NegativeEmbedding(torch.randn(77, 32, generator=torch.Generator().manual_seed(1)),
                      {"text_encoder_fingerprint": fingerprint}).save(embedding)
    return {"benchmark": str(benchmark), "embedding": str(embedding)}


@pytest.fixture(scope="module")
def reference(files, model, tmp_path_factory):
    """results.json of an uninterrupted run with the default test settings."""
    return evaluate(_config(files, tmp_path_factory.mktemp("reference")), model=model)


def _config(files, out, **overrides):
    settings = dict(benchmark=files["benchmark"], methods=["null", f"embedding={files['embedding']}"],
                    metrics=METRICS, steps=1, batch_size=2, device="cpu", out=str(out))
    return EvalConfig(**{**settings, **overrides})


class Counter:
    """Wraps a function: counts the images it is asked for and raises once ``fail_after`` calls are done."""

    def __init__(self, function, fail_after=None):
        self.function, self.fail_after, self.calls, self.images = function, fail_after, 0, 0

    def __call__(self, first, prompts, *args, **kwargs):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise RuntimeError("simulated crash")
        self.calls, self.images = self.calls + 1, self.images + len(prompts)
        return self.function(first, prompts, *args, **kwargs)


def test_results_json_md_and_html_follow_the_contract(files, reference):
    path, out = reference, reference.parent
    assert {p.name for p in out.iterdir()} >= {"results.json", "results.md", "index.html"}
    results = json.loads(path.read_text())
    specs = ["null", f"embedding={files['embedding']}"]
    assert results["benchmark"] == files["benchmark"] and results["model"] == "tiny"
    assert results["seed"] == 0 and results["num_prompts"] == 4
    diagnostics = [name for name in DIAGNOSTICS if name in available_rewards()]
    assert "saturation" in diagnostics and results["diagnostics"] == diagnostics
    assert results["metrics"] == [*METRICS, *diagnostics]  # the diagnostics are always added
    assert list(results["methods"]) == specs  # the specs exactly as given
    for method in results["methods"].values():
        assert set(method["mean"]) == set(results["metrics"])
        assert set(method["by_category"]) == {"shapes", "scenes"}
        assert all(isinstance(v, float) for c in method["by_category"].values() for v in c.values())
    assert set(results["win_rates"]) == {f"{specs[0]} vs {specs[1]}", f"{specs[1]} vs {specs[0]}"}
    for metric in results["metrics"]:
        forward, backward = (results["win_rates"][pair][metric] for pair in results["win_rates"])
        assert forward + backward == pytest.approx(1.0)
    assert len(list((out / "images").glob("*/*.png"))) == 8
    markdown = (out / "results.md").read_text()
    assert "| method | shapes | scenes | average |" in markdown and "## Win rates" in markdown
    html = (out / "index.html").read_text()
    assert 'src="images/' in html and 'src="plots/' in html and str(out) not in html
    # the report leads with what people would rather look at than read: gallery, then plots, then tables
    assert html.index("<h2>Gallery") < html.index("<h2>Plots") < html.index("<h2>Mean scores")


def test_win_rate_counts_ties_as_half():
    a, b = [3.0, 1.0, 2.0, 5.0], [1.0, 1.0, 3.0, 0.0]  # win, tie, loss, win
    assert win_rate(a, b) == 2.5 / 4 and win_rate(b, a) == 1.5 / 4
    assert win_rate([1.0, 1.0], [1.0, 1.0]) == 0.5
    with pytest.raises(ValueError):
        win_rate([1.0], [1.0, 2.0])


def test_rerun_with_the_same_seed_is_bit_identical(files, model, reference, tmp_path, monkeypatch):
    first = reference.read_bytes()
    assert evaluate(_config(files, tmp_path / "again"), model=model).read_bytes() == first
    counter = Counter(methods_module.guided_images)
    monkeypatch.setattr(methods_module, "guided_images", counter)
    assert evaluate(_config(files, reference.parent), model=model).read_bytes() == first
    assert counter.calls == 0  # everything was saved: nothing is generated again


def test_rerun_with_other_settings_into_the_same_folder_is_refused(files, model, reference):
    with pytest.raises(ReNegError, match="other settings .*steps"):
        evaluate(_config(files, reference.parent, steps=3), model=model)


def test_rerun_with_another_generation_batch_is_refused_but_older_folders_are_reused(files, model, tmp_path):
    """The generation batch decides a few pixel values, so run.json records it; a folder written before it was
    recorded (no key) is reused as it is."""
    out = tmp_path / "e"
    first = evaluate(_config(files, out), model=model).read_bytes()
    with pytest.raises(ReNegError, match="other settings .*batch_size"):
        evaluate(_config(files, out, batch_size=1), model=model)
    for record in (out / "images").glob("*/run.json"):  # as an older reneg wrote it
        saved = json.loads(record.read_text())
        assert saved.pop("batch_size") == 2
        record.write_text(json.dumps(saved))
    assert evaluate(_config(files, out), model=model).read_bytes() == first


def test_crash_in_generation_resumes_without_regenerating(files, model, reference, tmp_path, monkeypatch):
    crashing = Counter(methods_module.guided_images, fail_after=3)  # 4 batches of 2: crash on the 4th
    monkeypatch.setattr(methods_module, "guided_images", crashing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        evaluate(_config(files, tmp_path / "out"), model=model)
    saved = {p: p.stat().st_mtime_ns for p in (tmp_path / "out" / "images").glob("*/*.png")}
    assert len(saved) == 6 and not (tmp_path / "out" / "results.json").exists()
    resumed = Counter(crashing.function)
    monkeypatch.setattr(methods_module, "guided_images", resumed)
    assert evaluate(_config(files, tmp_path / "out"), model=model).read_bytes() == reference.read_bytes()
    assert resumed.calls == 1 and resumed.images == 2  # only the unfinished batch
    assert all(p.stat().st_mtime_ns == mtime for p, mtime in saved.items())


def test_crash_in_scoring_resumes_without_rescoring(files, model, reference, tmp_path, monkeypatch):
    build = MetricSpec.build
    counters = {}

    def counted_build(fail_after):
        def build_counted(self, **kwargs):
            counters[self.text] = Counter(build(self, **kwargs), fail_after)
            return counters[self.text]
        return build_counted

    shutil.copytree(reference.parent / "images", tmp_path / "out" / "images")  # the images are done, not scored
    monkeypatch.setattr(MetricSpec, "build", counted_build(fail_after=1))
    with pytest.raises(RuntimeError, match="simulated crash"):
        evaluate(_config(files, tmp_path / "out"), model=model)
    monkeypatch.setattr(MetricSpec, "build", counted_build(fail_after=None))
    assert evaluate(_config(files, tmp_path / "out"), model=model).read_bytes() == reference.read_bytes()
    # the first metric crashed on the second run's scoring batch (all 4 items): the first run's scores were kept
    assert counters["contrast"].images == 8 - 4


def test_method_specs_with_guidance_suffix(files):
    assert parse_method_spec("null") == parse_method_spec(" null ")
    spec = parse_method_spec("null@12")
    assert (spec.text, spec.name, spec.argument, spec.guidance_scale, spec.base) == ("null@12", "null", None, 12.0,
                                                                                      "null")
    spec = parse_method_spec("negative-prompt=blurry, dark@5.5")
    assert (spec.argument, spec.guidance_scale, spec.base) == ("blurry, dark", 5.5, "negative-prompt=blurry, dark")
    spec = parse_method_spec("negative-prompt=photo@night")  # not a number: part of the text
    assert (spec.argument, spec.guidance_scale) == ("photo@night", None)
    spec = parse_method_spec(f"embedding={files['embedding']}@7.5")
    assert (spec.argument, spec.guidance_scale) == (files["embedding"], 7.5)
    assert split_method_list(["null,negative-prompt=blurry, low contrast,handcrafted@3", "null@9"]) == [
        "null", "negative-prompt=blurry, low contrast", "handcrafted@3", "null@9"]


@pytest.mark.parametrize("text, needle", [
    ("nope", "unknown method 'nope': choose one of dnp.*embedding=FILE, handcrafted, nag-embedding=FILE.*negative-prompt=TEXT.*null"),
    ("null=x", "takes no argument"),
    ("negative-prompt", "needs an argument"),
    ("null@-1", ">= 0"),
    ("embedding=/no/such/file.safetensors", "does not exist"),
    ("null,null", "twice"),
])
def test_bad_method_specs(text, needle):
    with pytest.raises(ReNegError, match=needle):
        parse_method_specs([text])


def test_item_noise_does_not_depend_on_batching(files, model, tmp_path):
    plan = make_plan(_config(files, tmp_path / "out", images_per_prompt=2), model=model)
    items = plan.items
    assert len(items) == 8 and len({item.seed for item in items}) == 8
    together = item_latents(plan, items[:3])
    one_by_one = torch.cat([item_latents(plan, [item]) for item in items[:3]])
    assert torch.equal(together, one_by_one)
    assert not (tmp_path / "out").exists()  # planning writes nothing


def test_guidance_sweep_compares_learned_methods_with_the_best_baseline_scale(files, model, tmp_path):
    embedding = f"embedding={files['embedding']}@5"
    config = _config(files, tmp_path / "out", methods=["null", embedding], metrics=["contrast"],
                     guidance_sweep="3,7.5", limit=2)
    results = json.loads(evaluate(config, model=model).read_text())
    sweep = results["guidance_sweep"]
    assert sweep["scales"] == [3.0, 7.5]
    null = sweep["baselines"]["null"]
    assert set(null["by_scale"]) == {"3", "5", "7.5"}  # the swept scales and the learned method's own
    for metric in results["metrics"]:
        best = max(null["by_scale"], key=lambda s: null["by_scale"][s][metric])
        assert null["best_scale"][metric] == float(best)
        assert null["best_mean"][metric] == null["by_scale"][best][metric]
        versus = sweep["learned"][embedding]["vs"]["null"][metric]
        assert versus["same_scale"]["guidance_scale"] == 5.0
        assert versus["same_scale"]["baseline_mean"] == null["by_scale"]["5"][metric]
        assert versus["best_scale"]["guidance_scale"] == float(best)
        assert 0 <= versus["best_scale"]["win_rate"] <= 1
    assert results["methods"]["null"]["mean"] == null["by_scale"]["7.5"]  # one run, shared images
    assert len(list((tmp_path / "out" / "images").iterdir())) == 4  # null@3, @5, @7.5 and the embedding
    assert "## Guidance sweep" in (tmp_path / "out" / "results.md").read_text()
    assert len(list((tmp_path / "out" / "plots").glob("guidance-*.png"))) == len(results["metrics"])


@pytest.mark.parametrize("args, needle", [
    (["--methods", "null,sharpen"], "unknown method 'sharpen'"),
    (["--metrics", "beauty"], "unknown reward 'beauty'"),
    (["--methods", "embedding=missing.safetensors"], "does not exist"),
    (["--benchmark", "EMPTY"], "no prompts"),
    (["--guidance-sweep", "3,x"], "guidance-sweep"),
    (["--metrics", "contrast=some/model"], "uses no model"),
])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(args, needle, tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n")
    args = [str(empty) if arg == "EMPTY" else arg for arg in args]
    status = main(["eval", "--model", "tiny", "--device", "cpu", "--out", str(tmp_path / "o"), *args])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert status == 2 and len(err) == 1 and needle in err[0], err
    assert not (tmp_path / "o").exists()


def test_cli_eval_runs_and_documents_its_flags(files, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    text = capsys.readouterr().out
    for flag in ("--methods", "--metrics", "--images-per-prompt", "--limit", "--guidance-sweep", "--batch-size",
                 "--seed", "--steps", "--device", "--precision", "--config", "--out"):
        assert flag in text
    assert main(["eval", "--model", "tiny", "--benchmark", files["benchmark"], "--limit", "2",
                 "--methods", "null,handcrafted@3", "--metrics", "saturation", "--steps", "1", "--device", "cpu",
                 "--out", str(tmp_path / "o")]) == 0
    results = json.loads((tmp_path / "o" / "results.json").read_text())
    assert list(results["methods"]) == ["null", "handcrafted@3"] and results["metrics"][0] == "saturation"
    assert results["methods"]["handcrafted@3"]["guidance_scale"] == 3.0


def test_prompts_flag_reads_the_file_as_benchmark_does_and_excludes_it(files, tmp_path, capsys):
    common = ["eval", "--model", "tiny", "--limit", "2", "--methods", "null", "--metrics", "contrast", "--steps", "1",
              "--device", "cpu"]
    assert main([*common, "--prompts", files["benchmark"], "--out", str(tmp_path / "p")]) == 0
    assert main([*common, "--benchmark", files["benchmark"], "--out", str(tmp_path / "b")]) == 0
    assert (tmp_path / "p" / "results.json").read_bytes() == (tmp_path / "b" / "results.json").read_bytes()
    capsys.readouterr()
    for extra in (["--prompts", files["benchmark"], "--benchmark", "tiny"], ["--prompts", str(tmp_path / "no.txt")]):
        assert main([*common, *extra, "--out", str(tmp_path / "o")]) == 2
        err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(err) == 1 and ("give one of them" in err[0] or "does not exist" in err[0]), err
    assert not (tmp_path / "o").exists()


def test_a_model_replaced_at_the_same_path_is_not_reused(files, model, tmp_path):
    from reneg.identity import model_identity

    directory = tmp_path / "sd"
    model.pipe.save_pretrained(directory)
    first = load_model(str(directory))
    identity = model_identity(first)
    assert identity.startswith(str(directory.resolve()) + "@sha256:") and identity == model_identity(first)
    assert model_identity(model) == f"builtin:tiny@reneg-{__import__('reneg').__version__}"
    config = _config(files, tmp_path / "out", limit=1, metrics=["contrast"])
    results = json.loads(evaluate(config, model=first).read_text())
    assert results["settings"]["model_identity"] == identity and results["settings"]["reneg_version"]
    with torch.no_grad():
        next(first.pipe.unet.parameters()).add_(1.0)
    first.pipe.unet.save_pretrained(directory / "unet")  # a new checkpoint at the same path
    second = load_model(str(directory))
    assert model_identity(second) != identity
    with pytest.raises(ReNegError, match="other settings .*model_identity"):
        evaluate(config, model=second)


def test_a_reward_model_changed_at_the_same_path_is_rescored(files, model, tmp_path, monkeypatch):
    """A metric ``name=PATH`` is keyed by the file's identity: new weights at PATH are scored anew."""
    from reneg.rewards import base
    from reneg.rewards.simple import contrast

    def scaled_contrast(model_path, *, device, dtype):
        scale = float(open(model_path).read())
        return lambda images, prompts: scale * contrast(images, prompts)

    spec = base.RewardSpec("scaled-contrast", scaled_contrast, None, "test reward")
    monkeypatch.setitem(base.REWARDS.entries, "scaled-contrast", spec)
    weights = tmp_path / "scale.txt"
    weights.write_text("1.0")
    config = _config(files, tmp_path / "out", limit=1, metrics=[f"scaled-contrast={weights}"])
    first = json.loads(evaluate(config, model=model).read_text())
    weights.write_text("2.0")
    counter = Counter(methods_module.guided_images)
    monkeypatch.setattr(methods_module, "guided_images", counter)
    second = json.loads(evaluate(config, model=model).read_text())
    assert counter.calls == 0  # the images are reused: only the scores depend on the reward model
    metric = f"scaled-contrast={weights}"
    assert second["methods"]["null"]["mean"][metric] == pytest.approx(2 * first["methods"]["null"]["mean"][metric])
    assert first["settings"]["rewards"][metric]["model_identity"] != second["settings"]["rewards"][metric][
        "model_identity"]


def test_precision_casts_the_diffusion_model_only(files, tmp_path, monkeypatch):
    built = {}
    build = MetricSpec.build

    def recording_build(self, *, device, dtype):
        built[self.text] = dtype
        return build(self, device=device, dtype=dtype)

    monkeypatch.setattr(MetricSpec, "build", recording_build)
    plan = make_plan(_config(files, tmp_path / "out", model="tiny", precision="bf16", metrics=["contrast"]))
    assert plan.model.pipe.unet.dtype == torch.bfloat16
    assert set(built.values()) == {torch.float32}  # the rewards stay fp32 (as the references score)
    make_plan(_config(files, tmp_path / "out", model="tiny", reward_precision="fp16", metrics=["contrast"]))
    assert set(built.values()) == {torch.float16}
    assert plan.metric_settings["contrast"]["precision"] == "fp32"
    assert plan.metric_key(plan.metrics[0]) != make_plan(
        _config(files, tmp_path / "out", reward_precision="fp16", metrics=["contrast"]),
        model=plan.model).metric_key(plan.metrics[0])


def test_metric_spec_options():
    from reneg.evaluate.metrics import parse_metric_spec

    spec = parse_metric_spec("hpsv2.1:antialias=false")
    assert (spec.name, spec.model, spec.options) == ("hpsv2.1", None, (("antialias", False),))
    spec = parse_metric_spec("hpsv2:antialias=true=/ckpt/HPS_v2_compressed.pt")
    assert (spec.name, spec.model, spec.options) == ("hpsv2", "/ckpt/HPS_v2_compressed.pt", (("antialias", True),))
    assert parse_metric_spec("pickscore=org/name").options == ()
    with pytest.raises(ReNegError, match="no option 'antialias'"):
        parse_metric_spec("contrast:antialias=false")
    with pytest.raises(ReNegError, match="no option 'sharpness'"):
        parse_metric_spec("hpsv2.1:sharpness=2")


def test_short_labels_name_files_by_stem_and_keep_specs_unique():
    from reneg.evaluate.labels import short_labels

    specs = ["null", "null@5", "handcrafted", "embedding=runs/long/neg.safetensors", "embedding=runs/q/neg.safetensors@5",
             "per-sample=runs/g.safetensors", "negative-prompt=blurry, blotchy, low contrast, cropped, watermark",
             "embedding=a/x.safetensors", "embedding=b/x.safetensors"]
    labels = short_labels(specs)
    assert labels["null@5"] == "null@5" and labels["handcrafted"] == "handcrafted"
    assert labels["embedding=runs/long/neg.safetensors"] == "neg"
    assert labels["embedding=runs/q/neg.safetensors@5"] == "neg@5"
    assert labels["per-sample=runs/g.safetensors"] == "per-sample:g"
    assert labels["negative-prompt=blurry, blotchy, low contrast, cropped, watermark"].startswith('"blurry, blotchy')
    assert len(labels["negative-prompt=blurry, blotchy, low contrast, cropped, watermark"]) <= 26
    # two files of one stem are told apart by their folders (world_table.sh's quick/ and long/ runs)
    assert labels["embedding=a/x.safetensors"] == "a/x" and labels["embedding=b/x.safetensors"] == "b/x"
    assert len(set(labels.values())) == len(specs)
    deep = short_labels(["embedding=runs/wt/quick/negative.safetensors", "embedding=runs/wt/long/negative.safetensors",
                         "per-sample=runs/wt/quick/negative.safetensors"])
    assert list(deep.values()) == ["quick/negative", "long/negative", "per-sample:negative"]
    # the same file twice (no folder tells them apart): the full specs
    same = ["embedding=x.safetensors", "embedding=./x.safetensors"]
    assert short_labels(same) == {spec: spec for spec in same}


def test_a_saved_image_that_does_not_decode_is_made_again(tmp_path):
    """A rerun over an image cut short (a crash, a full disk) makes it again instead of reading it as whole."""
    from PIL import Image

    args = ["eval", "--model", "tiny", "--benchmark", "tiny", "--limit", "2", "--methods", "null", "--metrics",
            "contrast", "--steps", "2", "--out", str(tmp_path)]
    assert main(args) == 0
    image = next((tmp_path / "images").rglob("p00001-i00.png"))
    whole = image.read_bytes()
    image.write_bytes(whole[:100])
    for scores in tmp_path.glob("scores*.jsonl"):
        scores.unlink()
    assert main(args) == 0
    assert image.read_bytes() == whole
    Image.open(image).load()
