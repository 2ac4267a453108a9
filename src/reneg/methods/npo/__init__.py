"""Diffusion-NPO (Wang et al.): a negative-preference LoRA delta on the negative branch of CFG.

- :mod:`~reneg.methods.npo.train`: the training routes (reward, reward-cfg, positive, reversed DPO), ``reneg npo``;
- :mod:`~reneg.methods.npo.dpo`: preference pairs and the reversed Diffusion-DPO loss (Eq. 8);
- :mod:`~reneg.methods.npo.weights`: adapter files, theta + alpha*eta + beta*delta (Eq. 10), ``apply_npo``;
- :mod:`~reneg.methods.npo.apply`: the ``npo=DIR`` and ``npo-merge=LORA`` methods.
"""
