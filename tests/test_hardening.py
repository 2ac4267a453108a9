"""Property-based bad input: every loader and flag either works or refuses with one ReNegError line.

Never another exception type, never a traceback, never a file half-written. Everything here fails (or
passes) before a model loads, so hundreds of cases run in seconds.
"""

import argparse
import contextlib
import dataclasses
import io
import json
import math
import tempfile
import typing
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from reneg.cli import main
from reneg.config import _base_type, build_config
from reneg.embedding import NegativeEmbedding
from reneg.errors import ReNegError
from reneg.evaluate import EvalConfig
from reneg.generate import GenerateConfig
from reneg.methods import checkpoints as checkpoint
from reneg.methods.reneg.train import TrainConfig
from reneg.prompts import load_benchmark, load_prompts

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
CONFIGS = (TrainConfig, GenerateConfig, EvalConfig)
# values of every JSON-ish kind, including the ones that break naive parsers
VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
                      lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                   max_size=3), max_leaves=5)


def _refuses_or_works(call):
    """Run ``call``; only a ReNegError (with a one-line message) may come out."""
    try:
        call()
    except ReNegError as error:
        assert "\n" not in str(error) and str(error).strip(), repr(str(error))


def _keys(cls):
    return sorted(f.name for f in dataclasses.fields(cls) if f.name not in ("out", "resume"))


@SETTINGS
@given(cls=st.sampled_from(CONFIGS), data=st.data())
def test_config_files_with_any_values(cls, data):
    values = data.draw(st.dictionaries(st.sampled_from(_keys(cls)), VALUES, max_size=4))
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "c.yaml"
        path.write_text(json.dumps(values))  # JSON is YAML
        _refuses_or_works(lambda: build_config(cls, argparse.Namespace(), config_file=str(path)))


@SETTINGS
@given(cls=st.sampled_from(CONFIGS), raw=st.binary(max_size=200), suffix=st.sampled_from([".toml", ".yaml", ".yml"]))
def test_config_files_of_random_bytes(cls, raw, suffix):
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / f"c{suffix}"
        path.write_bytes(raw)
        _refuses_or_works(lambda: build_config(cls, argparse.Namespace(), config_file=str(path)))


@SETTINGS
@given(raw=st.binary(max_size=300) | st.text(max_size=300).map(str.encode),
       suffix=st.sampled_from([".txt", ".json", ".tsv", ".csv"]))
def test_prompt_files_of_random_content(raw, suffix):
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / f"p{suffix}"
        path.write_bytes(raw)
        _refuses_or_works(lambda: load_prompts(path))
        _refuses_or_works(lambda: load_benchmark(str(path)))


@SETTINGS
@given(shape=st.lists(st.integers(0, 5), min_size=0, max_size=4), fill=st.sampled_from([0.0, math.nan, math.inf]),
       dtype=st.sampled_from([torch.float32, torch.float16, torch.int64, torch.bool]),
       key=st.sampled_from(["negative_embedding", "emb_params", "clip_l", "other"]))
def test_embedding_files_of_any_shape_dtype_and_values(shape, fill, dtype, key):
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "n.safetensors"
        tensor = torch.full(shape, fill) if dtype.is_floating_point else torch.zeros(shape, dtype=dtype)
        save_file({key: tensor.to(dtype)}, str(path))
        _refuses_or_works(lambda: NegativeEmbedding.load(path))


class _Payload:
    def __reduce__(self):
        return (exec, ("raise SystemExit('a pickle ran')",))


@SETTINGS
@given(raw=st.binary(max_size=300), suffix=st.sampled_from([".safetensors", ".pt", ".bin", ".pth"]))
def test_embedding_files_of_random_bytes(raw, suffix):
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / f"n{suffix}"
        path.write_bytes(raw)
        _refuses_or_works(lambda: NegativeEmbedding.load(path))


def test_a_pickled_payload_in_a_pt_file_never_runs(tmp_path):
    path = tmp_path / "n.pt"
    torch.save({"x": _Payload()}, path)
    with pytest.raises(ReNegError):
        NegativeEmbedding.load(path)


@SETTINGS
@given(state=VALUES, parameters=st.binary(max_size=100), optimizer=st.binary(max_size=100),
       latest=st.binary(max_size=40))
def test_checkpoint_dirs_of_random_content(state, parameters, optimizer, latest):
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        step = root / "step-000001"
        step.mkdir()
        (step / "state.json").write_text(json.dumps(state))
        (step / "parameters.safetensors").write_bytes(parameters)
        (step / "optimizer.safetensors").write_bytes(optimizer)
        (root / "latest").write_bytes(latest)
        _refuses_or_works(lambda: checkpoint.load(root))


NUMBERS = st.sampled_from(["nan", "inf", "-inf", "-1", "0", "1e309", "abc", "", "1.5", "-0", "99999999999999999999",
                           "0x10", "1_000", " 3", "\u0661", "--", "1e-400"]) | st.floats().map(str) | \
    st.integers(-(2 ** 70), 2 ** 70).map(str)


def _numeric_flags(cls) -> list[str]:
    """Every int or float flag of a command's config, so a new flag is covered without editing this file."""
    hints = typing.get_type_hints(cls)
    return [f.metadata.get("flag", "--" + f.name.replace("_", "-")) for f in dataclasses.fields(cls)
            if _base_type(hints[f.name])[0] in (int, float)]


FLAGS = {"train": _numeric_flags(TrainConfig), "generate": _numeric_flags(GenerateConfig),
         "eval": _numeric_flags(EvalConfig)}


@settings(max_examples=60, deadline=None)
@given(command=st.sampled_from(sorted(FLAGS)), data=st.data(), value=NUMBERS)
def test_numeric_flags_refuse_bad_values_in_one_line(command, data, value):
    flag = data.draw(st.sampled_from(FLAGS[command]))
    with tempfile.TemporaryDirectory() as directory:
        out = Path(directory) / ("n.safetensors" if command == "train" else "out")
        # an unknown model makes any run that passed validation stop before loading anything heavy
        args = [command, flag, value, "--model", str(Path(directory) / "no-such-model"), "--out", str(out)]
        if command == "generate":
            args += ["--prompt", "a red circle"]
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            try:
                code = main(args)
            except SystemExit as exit_:  # argparse's own usage errors (e.g. "-1" read as a flag) exit here
                code = exit_.code
        lines = [line for line in stderr.getvalue().splitlines() if line.strip()]
        assert code == 2, (args, stderr.getvalue())
        assert len(lines) == 1 and lines[0].startswith(f"reneg {command}: error:"), (args, lines)
        assert not out.exists() or (out.is_dir() and not any(out.iterdir()))


def _toml(value) -> str | None:
    """``value`` as a TOML value (None where TOML has none); NaN and inf as TOML's own nan and inf."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    items = value.items() if isinstance(value, dict) else enumerate(value)
    parts = [(key, _toml(item)) for key, item in items]
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(key)} = {text}" for key, text in parts if text is not None) + "}"
    return "[" + ", ".join(text for _, text in parts if text is not None) + "]"


@SETTINGS
@given(cls=st.sampled_from(CONFIGS), data=st.data())
def test_toml_config_files_with_any_values(cls, data):
    values = data.draw(st.dictionaries(st.sampled_from(_keys(cls)), VALUES, max_size=4))
    text = "".join(f"{key} = {_toml(value)}\n" for key, value in values.items() if value is not None)
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "c.toml"
        path.write_text(text)
        _refuses_or_works(lambda: build_config(cls, argparse.Namespace(), config_file=str(path)))


@SETTINGS
@given(shape=VALUES, text=st.text(max_size=60), encoding=st.sampled_from(["utf-8", "utf-16", "utf-8-sig", "latin-1",
                                                                          "cp1252"]),
       suffix=st.sampled_from([".txt", ".json", ".tsv", ".csv"]))
def test_prompt_files_of_any_json_shape_and_encoding(shape, text, encoding, suffix):
    """JSON of every shape (lists of numbers, nested tables, null), and text in encodings other than UTF-8."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / f"p{suffix}"
        content = json.dumps(shape) if suffix == ".json" else text
        path.write_bytes(content.encode(encoding, errors="replace"))
        _refuses_or_works(lambda: load_prompts(path))
        _refuses_or_works(lambda: load_benchmark(str(path)))


class _Ran(Exception):
    """Raised by a payload if unpickling ever runs it."""


class _CustomObject:
    pass


PAYLOADS = st.sampled_from([_Payload(), _CustomObject(), argparse.Namespace(a=1), Path("x"), {1, 2}, b"bytes"])


@SETTINGS
@given(value=VALUES | PAYLOADS | st.lists(PAYLOADS, max_size=2), wrap=st.sampled_from(["plain", "dict", "tensor"]),
       suffix=st.sampled_from([".pt", ".bin", ".pth"]))
def test_pt_files_holding_any_pickle_never_run_it(value, wrap, suffix):
    """Non-tensor pickles (plain data, objects of any class, code) are refused in one line, never executed."""
    obj = {"plain": value, "dict": {"negative_embedding": value}, "tensor": [torch.zeros(2, 4), value]}[wrap]
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / f"n{suffix}"
        torch.save(obj, path)
        with pytest.raises(ReNegError):
            NegativeEmbedding.load(path)


@SETTINGS
@given(header=VALUES | st.dictionaries(st.sampled_from(["negative_embedding", "pooled_negative_embedding",
                                                         "__metadata__", "emb_params"]),
                                        st.fixed_dictionaries({"dtype": st.sampled_from(["F32", "F16", "I64", "X"]),
                                                               "shape": st.lists(st.integers(-1, 4), max_size=3),
                                                               "data_offsets": st.lists(st.integers(-1, 64),
                                                                                        max_size=3)}) | VALUES,
                                        max_size=3),
       body=st.binary(max_size=64), length_delta=st.integers(-3, 3))
def test_safetensors_with_crafted_headers(header, body, length_delta):
    """A well-framed safetensors file whose JSON header lies: wrong dtypes, shapes, offsets, metadata."""
    encoded = json.dumps(header).encode()
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "n.safetensors"
        path.write_bytes(max(len(encoded) + length_delta, 0).to_bytes(8, "little") + encoded + body)
        _refuses_or_works(lambda: NegativeEmbedding.load(path))


def _a_checkpoint(root: Path) -> None:
    """A real checkpoint of one AdamW step on a (2, 4) negative embedding."""
    parameter = torch.nn.Parameter(torch.zeros(2, 4))
    optimizer = torch.optim.AdamW([parameter], lr=0.1)
    parameter.grad = torch.ones(2, 4)
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    checkpoint.save(root, step=1, parameters={"negative_embedding": parameter}, optimizer=optimizer,
                    extra={"recipe": {"train_steps": 2}, "lr_scheduler": scheduler.state_dict(), "scaler": {},
                           "nonfinite_in_a_row": 0})


STATE_KEYS = st.sampled_from(["step", "recipe", "param_groups", "lr_scheduler", "scaler", "nonfinite_in_a_row",
                              "version"])
TENSORS = st.dictionaries(st.sampled_from(["negative_embedding", "state.0.exp_avg", "state.0.step", "state.7.x",
                                           "bad"]),
                          st.tuples(st.lists(st.integers(0, 4), max_size=3),
                                    st.sampled_from([0.0, 1.0, math.nan, math.inf]),
                                    st.sampled_from([torch.float32, torch.int64])), max_size=3)


@SETTINGS
@given(changes=st.dictionaries(STATE_KEYS, VALUES, max_size=2), group=st.dictionaries(
    st.sampled_from(["lr", "betas", "eps", "params", "weight_decay"]), VALUES, max_size=2),
    tensors=st.none() | TENSORS, which=st.sampled_from(["parameters", "optimizer"]))
def test_checkpoints_with_crafted_fields_refuse_or_restore(changes, group, tensors, which):
    """A whole checkpoint with some fields or tensors replaced: loads and restores into AdamW, or one line."""
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        _a_checkpoint(root)
        step = next(root.glob("step-*"))
        state = json.loads((step / "state.json").read_text())
        state.update(changes)
        if isinstance(state.get("param_groups"), list) and state["param_groups"] and \
                isinstance(state["param_groups"][0], dict):
            state["param_groups"][0].update(group)
        (step / "state.json").write_text(json.dumps(state))
        if tensors is not None:
            save_file({k: torch.full(shape, fill).to(dtype) for k, (shape, fill, dtype) in tensors.items()},
                      str(step / f"{which}.safetensors"))

        def load_and_restore():
            state, parameters, optimizer_tensors = checkpoint.load(root)
            parameter = torch.nn.Parameter(torch.zeros(2, 4))
            optimizer = torch.optim.AdamW([parameter], lr=0.1)
            checkpoint.restore_optimizer(optimizer, state["param_groups"], optimizer_tensors, source=str(root))
            parameter.grad = torch.ones(2, 4)
            optimizer.step()  # the restored state must be usable, not just loadable

        _refuses_or_works(load_and_restore)


def test_the_package_never_unpickles():
    """No ``weights_only=False``, no pickle loads, no unsafe YAML anywhere in src/ (issue 33): every torch.load
    says ``weights_only=True``."""
    import re
    from pathlib import Path

    import reneg

    unsafe = re.compile(r"weights_only\s*=\s*False|pickle\.loads?\(|cPickle|dill|yaml\.(unsafe_)?load\(|"
                        r"yaml\.Loader|yaml\.UnsafeLoader|marshal\.loads?\(")
    found, loads = [], []
    for path in Path(reneg.__file__).parent.rglob("*.py"):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if unsafe.search(line):
                found.append(f"{path.name}:{number}: {line.strip()}")
            if re.search(r"torch\.load\(", line) and not line.lstrip().startswith(("#", "``", "Without")) \
                    and "weights_only=True" not in line:
                loads.append(f"{path.name}:{number}: {line.strip()}")
    assert not found, found
    assert not loads, loads
