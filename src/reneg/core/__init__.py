"""The core: guidance rules, branch conditioning, the guided denoiser, the one sampler and the rollout.

It depends on torch and diffusers and, of reneg, only on :mod:`reneg.errors`; everything else builds on it.

- :mod:`~reneg.core.guidance`: CFG (ReNeg Eq. 5), the three-term rule (DNP Eq. 4), DNS (DNP Eq. 19), one-step x0
  (ReNeg Eq. 6; epsilon, v, sample, flow matching);
- :mod:`~reneg.core.denoiser`: ``Branch`` (model keyword arguments + ``Weights``) and ``GuidedDenoiser``;
- :mod:`~reneg.core.sampling`: the one sampler ``sample(denoiser, scheduler, x_T, grad_from=None | k)``;
- :mod:`~reneg.core.family`: the family protocol the rollout calls (``reneg.families`` implements it);
- :mod:`~reneg.core.rollout`: encode -> denoise -> sample -> decode, once;
- :mod:`~reneg.core.fingerprint`: what text encoders and denoisers hold, as a short string.
"""
