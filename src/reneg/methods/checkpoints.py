"""Training checkpoints that cannot lie and run nothing: safetensors and JSON only, replaced atomically.

    <out>.checkpoint/
        latest                       {"step_dir": "step-000250"}, replaced atomically after the step is whole
        step-000250/
            parameters.safetensors   the trainable tensors (negative embedding, learned guidance scale)
            optimizer.safetensors    the optimizer's per-parameter state tensors
            state.json               step, the recipe (resolved settings), optimizer hyper-parameters,
                                     lr schedule, loss-scaler state; written last

A new checkpoint is written completely beside the old one; only then does
``latest`` point to it, and only then is the old one removed, so a kill at any
moment leaves one whole checkpoint. Nothing is ever unpickled: a crafted file
can fail to load (one line), never run code.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from ..errors import ReNegError
from ..io import atomic_path, save_tensors

FORMAT = "reneg.methods.checkpoints"
VERSION = 1
LATEST = "latest"
STATE = "state.json"
PARAMETERS = "parameters.safetensors"
OPTIMIZER = "optimizer.safetensors"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """The optimizer's state tensors by ``state.<param>.<name>``, and its param groups (JSON-able)."""
    state = optimizer.state_dict()
    tensors = {}
    for index, values in state["state"].items():
        for name, value in values.items():
            value = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f"state.{index}.{name}"] = value.detach().cpu().contiguous()
    groups = [{k: list(v) if isinstance(v, tuple) else v for k, v in group.items()} for group in state["param_groups"]]
    return tensors, groups


def save(directory: str | Path, *, step: int, parameters: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer,
         extra: dict) -> Path:
    """Write a checkpoint of ``step`` under ``directory`` (see the module docstring); returns ``directory``."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:06d}"
    staging = root / f".{name}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    save_tensors({k: v.detach().cpu().contiguous() for k, v in parameters.items()}, staging / PARAMETERS)
    tensors, groups = _optimizer_tensors(optimizer)
    save_tensors(tensors, staging / OPTIMIZER)
    state = {"format": FORMAT, "version": VERSION, "step": step, "param_groups": groups, **extra}
    (staging / STATE).write_text(json.dumps(state, indent=1))
    for file in staging.iterdir():
        with open(file, "rb") as handle:
            os.fsync(handle.fileno())
    _fsync_dir(staging)
    final = root / name
    shutil.rmtree(final, ignore_errors=True)
    os.replace(staging, final)
    _fsync_dir(root)
    with atomic_path(root / LATEST) as tmp:  # the switch: one atomic rename
        tmp.write_text(json.dumps({"step_dir": name}))
    for old in root.iterdir():  # only now is the previous checkpoint dropped
        if old.is_dir() and old.name != name and (old.name.startswith("step-") or old.name.endswith(".tmp")):
            shutil.rmtree(old, ignore_errors=True)
    return root


def _step_dir(directory: Path) -> Path:
    """The whole checkpoint that ``directory`` (a checkpoint root or one of its step folders) points to."""
    if (directory / STATE).is_file():
        return directory
    latest = directory / LATEST
    if latest.is_file():
        try:
            step_dir = directory / json.loads(latest.read_text())["step_dir"]
        except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
            raise ReNegError(f"checkpoint '{directory}' has a corrupt '{LATEST}' file: pass a step-* folder "
                             "inside it to --resume, or start a fresh run") from None
        if (step_dir / STATE).is_file() and step_dir.parent == directory:
            return step_dir
    complete = sorted(d for d in directory.glob("step-*") if (d / STATE).is_file())
    if complete:
        return complete[-1]
    raise ReNegError(f"'{directory}' is not a reneg checkpoint (no {LATEST} or step-*/{STATE}): pass the "
                     ".checkpoint directory that `reneg train` wrote")


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_state(state: dict) -> None:
    """ValueError unless ``state`` has the shape :func:`save` writes (a crafted state.json fails here, in one line)."""
    recipe = state.get("recipe", {})
    if not isinstance(recipe, dict):
        raise ValueError("'recipe' is not a table")
    if not _is_count(state["step"]) or (_is_count(recipe.get("train_steps"))
                                        and state["step"] > recipe["train_steps"]):
        raise ValueError(f"step {state['step']!r} is not between 0 and the recipe's train_steps")
    if not _is_count(state.get("nonfinite_in_a_row", 0)):
        raise ValueError("'nonfinite_in_a_row' is not a count")
    groups = state.get("param_groups")
    if not isinstance(groups, list) or not all(isinstance(group, dict) for group in groups):
        raise ValueError("'param_groups' is not a list of tables")
    schedule, scaler = state.get("lr_scheduler", {}), state.get("scaler") or {}
    if not isinstance(schedule, dict) or not isinstance(scaler, dict):
        raise ValueError("'lr_scheduler' or 'scaler' is not a table")
    # optimizer and scaler settings, and what every LRScheduler keeps: numbers, flags or lists of them
    common = {k: schedule[k] for k in ("base_lrs", "_last_lr", "last_epoch", "_step_count") if k in schedule}
    for table in [*groups, scaler, common]:
        for key, value in table.items():
            items = value if isinstance(value, list) else [value]
            if not all(item is None or (isinstance(item, (int, float)) and math.isfinite(item)) for item in items):
                raise ValueError(f"setting '{key}' is {value!r}, not a finite number")


def _check_tensors(tensors: dict[str, torch.Tensor], name: str) -> None:
    """ValueError unless every floating tensor of ``name`` is finite (parameters must be floating)."""
    for key, tensor in tensors.items():
        if name == PARAMETERS and not tensor.is_floating_point():
            raise ValueError(f"{name} holds '{key}' of dtype {tensor.dtype}, not a floating-point tensor")
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise ValueError(f"{name} holds NaN or inf values in '{key}'")


def load(directory: str | Path) -> tuple[dict, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``(state, parameters, optimizer tensors)`` of the checkpoint at ``directory``; a bad one is ReNegError."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ReNegError(f"checkpoint '{directory}' does not exist or is not a directory: pass the .checkpoint "
                         "directory that `reneg train` wrote")
    step_dir = _step_dir(directory)
    try:
        state = json.loads((step_dir / STATE).read_text())
        if not isinstance(state, dict) or state.get("format") != FORMAT or not isinstance(state.get("step"), int):
            raise ValueError("not a reneg checkpoint state")
        if state.get("version") != VERSION:
            raise ReNegError(f"checkpoint '{step_dir}' has format version {state.get('version')}, this reneg reads "
                             f"{VERSION}: resume with the reneg version that wrote it")
        _check_state(state)
        parameters, optimizer = load_file(str(step_dir / PARAMETERS)), load_file(str(step_dir / OPTIMIZER))
        _check_tensors(parameters, PARAMETERS)
        _check_tensors(optimizer, OPTIMIZER)
        return state, parameters, optimizer
    except ReNegError:
        raise
    except (OSError, ValueError, SafetensorError, UnicodeDecodeError) as error:
        raise ReNegError(f"checkpoint '{step_dir}' is corrupt or incomplete ({type(error).__name__}: "
                         f"{str(error).splitlines()[0] if str(error) else ''}): resume from another checkpoint or "
                         "start a fresh run") from None


def check_recipe(directory: str | Path, saved: dict, own: dict, flags: dict[str, str] | None = None) -> None:
    """Refuse, in one line naming each difference, a resume whose settings differ from the checkpoint's recipe.

    JSON is the comparison (a tuple and its list are the same setting). ``flags`` names a key's flag where it
    is not ``--key-with-dashes``."""
    flags = flags or {}
    differing = [key for key in own if json.dumps(saved.get(key)) != json.dumps(own[key])]
    if differing:
        changes = ", ".join(f"{flags.get(key, '--' + key.replace('_', '-'))} (checkpoint: {saved.get(key)!r}, "
                            f"this run: {own[key]!r})" for key in differing)
        raise ReNegError(f"cannot resume from '{directory}': this run differs in {changes}; resume with the "
                         "checkpoint's settings, or start a fresh run with another --out")


def restore_parameters(directory: str | Path, tensors: dict[str, torch.Tensor],
                       own: dict[str, torch.Tensor]) -> None:
    """Copy a checkpoint's trainable tensors into ``own`` (same names and shapes, else one line)."""
    if set(tensors) != set(own) or any(tensors[k].shape != own[k].shape for k in own):
        raise ReNegError(f"checkpoint '{directory}' holds parameters of another shape: start a fresh run")
    with torch.no_grad():
        for name, parameter in own.items():
            parameter.copy_(tensors[name].to(parameter.device))


def _same_kind(saved, own) -> bool:
    """Whether a saved optimizer setting (JSON) has the kind of this optimizer's own value."""
    if isinstance(own, (list, tuple)):
        return isinstance(saved, list) and len(saved) == len(own) and all(_same_kind(s, o) for s, o in zip(saved, own))
    if isinstance(own, bool) or own is None:
        return saved is None or isinstance(saved, bool)
    if isinstance(own, (int, float)):
        return isinstance(saved, (int, float)) and not isinstance(saved, bool)
    return True


def _state_names(optimizer: torch.optim.Optimizer) -> list[set[str]] | None:
    """The state names (``exp_avg``, ...) each parameter gets from one step: a probe on zero copies."""
    groups = [{**{k: v for k, v in group.items() if k != "params"},
               "params": [torch.zeros_like(p, requires_grad=True) for p in group["params"]]}
              for group in optimizer.param_groups]
    copies = [p for group in groups for p in group["params"]]
    for copy in copies:
        copy.grad = torch.zeros_like(copy)
    try:
        probe = type(optimizer)(groups)
        probe.step()
    except (TypeError, ValueError, RuntimeError):  # an optimizer that needs more (a closure, ...): check shapes only
        return None
    return [set(probe.state[copy]) for copy in copies]


def restore_optimizer(optimizer: torch.optim.Optimizer, groups: list, tensors: dict[str, torch.Tensor],
                      *, source: str) -> None:
    """Load the optimizer state saved by :func:`save` into ``optimizer`` (shapes and keys checked)."""
    current = optimizer.state_dict()
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        parts = key.split(".")
        if len(parts) != 3 or parts[0] != "state" or not parts[1].isdigit():
            raise ReNegError(f"checkpoint '{source}' has an unexpected optimizer tensor '{key}': start a fresh run")
        state.setdefault(int(parts[1]), {})[parts[2]] = value
    params = [p for group in optimizer.param_groups for p in group["params"]]  # the indices state_dict uses
    names = _state_names(optimizer)
    for index, values in state.items():
        shape = params[index].shape if index < len(params) else None
        if shape is None or any(value.dim() and value.shape != shape for value in values.values()) or \
                (names is not None and set(values) != names[index]):
            raise ReNegError(f"checkpoint '{source}' has optimizer state of another shape or kind (parameter "
                             f"{index}: {', '.join(sorted(values))}): start a fresh run")
    try:
        if len(groups) != len(current["param_groups"]):
            raise ValueError("parameter groups differ")
        for saved, own in zip(groups, current["param_groups"]):
            bad = [k for k, v in own.items() if k != "params" and not _same_kind(saved.get(k), v)]
            if bad:
                raise ValueError(f"setting '{bad[0]}' is {saved.get(bad[0])!r}")
        restored = [{k: tuple(v) if k == "betas" else v for k, v in group.items()} for group in groups]
        optimizer.load_state_dict({"state": state, "param_groups": restored})
    except (ValueError, KeyError, TypeError, RuntimeError) as error:
        raise ReNegError(f"checkpoint '{source}' does not fit this run's optimizer ({error}): start a fresh run") \
            from None
