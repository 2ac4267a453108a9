"""``reneg ui``: a local web UI (Gradio) over the same methods, sampler and rewards as the commands.

- :mod:`~reneg.ui.grid`: the work, without Gradio: a same-seed grid of methods, each image scored, and a guidance
  sweep (what the UI shows; tested directly);
- :mod:`~reneg.ui.winrates`: win rates over N prompts of a prompt set, by running ``reneg eval --limit N``;
- :mod:`~reneg.ui.training`: ``reneg train`` in a background thread, its curve, its Stop;
- :mod:`~reneg.ui.exporting`: ``reneg export`` of a learned file, with a zip to download;
- :mod:`~reneg.ui.session`: what one served page holds (the model, its lock, the learned files, the training);
- :mod:`~reneg.ui.app`: the Gradio app and the ``reneg ui`` command (localhost unless ``--allow-remote``).
"""
