"""reneg: learned negative guidance for diffusion models (ReNeg, DNP, Diffusion-NPO) on diffusers."""

__version__ = "0.1.0"

__all__ = ["NegativeEmbedding", "__version__"]


def __getattr__(name):
    if name == "NegativeEmbedding":  # imported lazily: `import reneg` stays light
        from .embedding import NegativeEmbedding

        return NegativeEmbedding
    raise AttributeError(f"module 'reneg' has no attribute '{name}'")
