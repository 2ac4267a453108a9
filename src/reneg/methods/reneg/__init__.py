"""ReNeg (Li et al.): the learned negative embedding.

- :mod:`~reneg.methods.reneg.objective`: the loss of one batch (Sec. 4.2, Eq. 5-7);
- :mod:`~reneg.methods.reneg.train`: global training, ``reneg train``;
- :mod:`~reneg.methods.reneg.adapt`: per-sample embeddings (Algorithm 1), ``reneg adapt``;
- :mod:`~reneg.methods.reneg.apply`: the ``per-sample=FILE`` method (``embedding=FILE`` is a baseline).
"""
