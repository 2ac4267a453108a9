"""Evaluation: ``reneg eval`` (benchmark x methods x metrics, win rates, a matched-guidance sweep, tables and a
gallery), ``reneg compare`` (the demo's picture and line) and ``reneg efficiency`` (ReNeg Table 1).

    from reneg.evaluate import EvalConfig, evaluate
    evaluate(EvalConfig(methods=["null", "embedding=neg.safetensors"], metrics=["pickscore"], out="eval"))

The methods it evaluates live in :mod:`reneg.methods` (re-exported here: ``register_method`` and the spec
parsers), so that ``reneg generate`` takes the same specs without the eval harness.
"""

from ..methods.base import METHODS, FixedNegative, Method, available_methods, guided_images, register_method
from ..methods.spec import MethodSpec, parse_method_spec, parse_method_specs
from .metrics import win_rate
from .runner import EvalConfig, evaluate

__all__ = [
    "METHODS",
    "EvalConfig",
    "FixedNegative",
    "Method",
    "MethodSpec",
    "available_methods",
    "evaluate",
    "guided_images",
    "parse_method_spec",
    "parse_method_specs",
    "register_method",
    "win_rate",
]
