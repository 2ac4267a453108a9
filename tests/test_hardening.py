"""Property-based bad input: every loader and flag either works or refuses with one ReNegError line.

Never another exception type, never a traceback, never a file half-written. Everything here fails (or
passes) before a model loads, so hundreds of cases run in seconds.
"""

import argparse
import contextlib
import io
import json
import math
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from reneg import checkpoint
from reneg.benchmarks import load_benchmark
from reneg.cli import main
from reneg.config import build_config
from reneg.embedding import NegativeEmbedding
from reneg.errors import ReNegError
from reneg.evaluate import EvalConfig
from reneg.generate import GenerateConfig
from reneg.prompts import load_prompts
from reneg.train import TrainConfig

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
    import dataclasses

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


NUMBERS = st.sampled_from(["nan", "inf", "-inf", "-1", "0", "1e309", "abc", "", "1.5", "-0", "99999999999999999999"])
FLAGS = {
    "train": ["--lr", "--train-steps", "--batch-size", "--micro-batch-size", "--steps", "--grad-window",
              "--guidance-scale", "--weight-decay", "--warmup-steps", "--resolution", "--seed", "--checkpoint-every",
              "--log-every", "--validate-every", "--max-nonfinite-steps"],
    "generate": ["--num-images", "--steps", "--guidance-scale", "--resolution", "--seed", "--batch-size"],
    "eval": ["--images-per-prompt", "--limit", "--seed", "--steps", "--guidance-scale", "--resolution",
             "--batch-size", "--gallery-items"],
}


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
