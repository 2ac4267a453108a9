"""reneg: learned negative guidance for diffusion models (ReNeg, DNP, Diffusion-NPO) on diffusers.

The public names are re-exported here lazily (``import reneg`` stays light; this is the one import that
reaches up the layers, tests/test_layering.py):

- ``reneg.NegativeEmbedding``: load, check and expand a learned negative for any diffusers pipeline;
- ``reneg.apply_npo`` / ``reneg.remove_npo``: Diffusion-NPO's adapters on any diffusers pipeline with a UNet;
- ``reneg.load_model``, ``reneg.register_reward``, ``reneg.register_method``, ``reneg.register_captioner``;
- the modules ``reneg.npo_weights`` and ``reneg.captioners`` under their former names.
"""

__version__ = "0.1.0"

#: public name -> (module, attribute); attribute None: the module itself.
_EXPORTS = {
    "NegativeEmbedding": ("reneg.embedding", "NegativeEmbedding"),
    "apply_npo": ("reneg.methods.npo.weights", "apply_npo"),
    "remove_npo": ("reneg.methods.npo.weights", "remove_npo"),
    "load_model": ("reneg.models.loading", "load_model"),
    "register_reward": ("reneg.rewards.base", "register_reward"),
    "register_method": ("reneg.methods.base", "register_method"),
    "register_captioner": ("reneg.methods.dnp.captioners", "register_captioner"),
    "npo_weights": ("reneg.methods.npo.weights", None),
    "captioners": ("reneg.methods.dnp.captioners", None),
}

__all__ = [name for name in _EXPORTS if name not in ("npo_weights", "captioners")] + ["__version__"]


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'reneg' has no attribute '{name}'")
    from importlib import import_module

    module, attribute = _EXPORTS[name]
    loaded = import_module(module)
    return loaded if attribute is None else getattr(loaded, attribute)
