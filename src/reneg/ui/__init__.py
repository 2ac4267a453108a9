"""``reneg ui``: a local web UI (Gradio) over the same methods, sampler and rewards as the commands.

- :mod:`~reneg.ui.grid`: the work, without Gradio: a same-seed grid of methods, each image scored, and a guidance
  sweep (what the UI shows; tested directly);
- :mod:`~reneg.ui.app`: the Gradio app and the ``reneg ui`` command (localhost unless ``--allow-remote``).
"""
