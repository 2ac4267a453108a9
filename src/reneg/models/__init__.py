"""Models: load a diffusers pipeline by built-in name, directory or cached hub id; device and dtype; tiny models.

- :mod:`~reneg.models.loading`: ``load_model``, ``LoadedModel`` (with its ``ModelDefaults``), the built-in models;
- :mod:`~reneg.models.hub`: hub ids resolved through the local cache only (never a download);
- :mod:`~reneg.models.device`: ``--device`` and ``--precision`` to torch's device and dtype;
- :mod:`~reneg.models.tiny`, :mod:`~reneg.models.tokenizers`: random-weight models with the real architectures.
"""

from .loading import (
    COMMUNITY_NEGATIVE_PROMPT,
    BuiltinModel,
    LoadedModel,
    ModelDefaults,
    builtin_models,
    default_model,
    encode_prompts,
    load_model,
    register_model,
)

__all__ = ["COMMUNITY_NEGATIVE_PROMPT", "BuiltinModel", "LoadedModel", "ModelDefaults", "builtin_models",
           "default_model", "encode_prompts", "load_model", "register_model"]
