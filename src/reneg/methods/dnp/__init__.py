"""DNP (Desai & Vasconcelos): diffusion-negative prompting.

- :mod:`~reneg.methods.dnp.images`: DNS (Eq. 19) and DNP (two-term, or three-term Eq. 4) images, ``reneg dnp``;
- :mod:`~reneg.methods.dnp.captioners`: the captioner protocol and registry (BLIP-2), auto-DNP's n*;
- :mod:`~reneg.methods.dnp.apply`: the ``dnp``, ``dnp=CAPTION_FILE`` and ``dnp-caption=TEXT`` methods.
"""
