"""The ways to apply a negative, and how each paper learns one.

Shared pieces: the method protocol and registry (:mod:`~reneg.methods.base`), the spec grammar ``name=ARG@GS``
(:mod:`~reneg.methods.spec`), the baselines (:mod:`~reneg.methods.baselines`), addressed randomness
(:mod:`~reneg.methods.randomness`), checkpoints, the one training loop and its processes
(:mod:`~reneg.methods.loop`), its listeners and validation curve. One folder per paper, none importing another's:

- :mod:`reneg.methods.reneg`: ReNeg (objective, global training, per-sample Algorithm 1);
- :mod:`reneg.methods.dnp`: DNS / DNP and the captioners of auto-DNP;
- :mod:`reneg.methods.npo`: Diffusion-NPO (training routes, adapter weights and ``apply_npo``, reversed DPO).

Importing this package registers every built-in method; a new one is one file plus one import line below.
"""

from . import baselines  # noqa: F401  - null, handcrafted, negative-prompt=TEXT, embedding=FILE
from .reneg import apply as _reneg  # noqa: F401  - per-sample=FILE
from .dnp import apply as _dnp  # noqa: F401  - dnp, dnp=CAPTION_FILE, dnp-caption=TEXT
from .npo import apply as _npo  # noqa: F401  - npo=DIR, npo-merge=LORA
