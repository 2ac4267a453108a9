"""``reneg eval``: benchmark x methods x metrics, win rates, a matched-guidance sweep, tables and a gallery.

    from reneg.evaluate import EvalConfig, evaluate
    evaluate(EvalConfig(methods=["null", "embedding=neg.safetensors"], metrics=["pickscore"], out="eval"))

New methods register with :func:`register_method` (see :mod:`reneg.evaluate.methods`).
"""

from .methods import (
    METHODS,
    FixedNegative,
    Method,
    MethodSpec,
    available_methods,
    guided_images,
    parse_method_spec,
    parse_method_specs,
    register_method,
)
from . import dnp_methods  # noqa: F401  - registers dnp, dnp=CAPTION_FILE and dnp-caption=TEXT
from . import per_sample  # noqa: F401  - registers per-sample=FILE
from . import npo_method  # noqa: F401  - registers npo=DIR and npo-merge=LORA
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
