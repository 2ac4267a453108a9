"""``reneg ui``: the Gradio app. One model is loaded at start (``--model``, the shapes world by default); the
page takes a prompt, a seed, steps and guidance scales, ticks methods (null, handcrafted, a learned embedding
file, per-sample, DNP, NPO, any other spec) and shows them side by side from the same x_T, each image with its
scores, and two of them in an image slider. Bad input shows a one-line message in the page, never a traceback.

Bound to 127.0.0.1 unless ``--allow-remote`` (the UI reads files by the paths typed into it).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import MODEL, arg, builtin_command, require
from ..errors import ReNegError

#: The methods offered as ticks; files and other specs go in the text field.
TICKS = ("null", "handcrafted", "dnp")
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass
class UiConfig:
    """Settings of ``reneg ui``."""

    model: str | None = MODEL()
    device: str = arg("auto", "cpu, cuda, cuda:N or auto")
    host: str = arg("127.0.0.1", "address to serve on (another than localhost needs --allow-remote)")
    port: int = arg(7860, "port to serve on", min=1, max=65535)
    allow_remote: bool = arg(False, "serve on a non-local --host (anyone who reaches it may read files by path)")
    methods: str = arg("", "methods filled in at start besides null and handcrafted, as in `reneg eval --methods` "
                           "(e.g. embedding=negative.safetensors)", metavar="SPECS")

    def __post_init__(self):
        require(self.host in LOCAL_HOSTS or self.allow_remote,
                f"--host {self.host} would serve the UI beyond this machine (and it opens files by the paths typed "
                "into it): pass --allow-remote to mean it, or leave --host at 127.0.0.1")


def _specs(ticked: list[str], others: str) -> list[str]:
    from ..methods.spec import split_method_list

    return [*ticked, *split_method_list([others])] if others and others.strip() else list(ticked)


def _scales(text: str) -> list[float | None]:
    if not text or not text.strip():
        return [None]  # the model's default
    try:
        scales = [float(piece) for piece in text.replace(" ", "").split(",") if piece]
    except ValueError:
        raise ReNegError(f"guidance scales must be numbers separated by commas, e.g. 3,7.5; got '{text}'") from None
    if not all(0 <= s <= 100 for s in scales):
        raise ReNegError(f"guidance scales must be between 0 and 100, got '{text}'")
    return scales or [None]


def _short(spec: str) -> str:
    """A spec with its file paths cut to their names (``embedding=.../neg.safetensors`` -> ``embedding=neg...``)."""
    from pathlib import PurePath

    return ",".join("=".join(PurePath(part).name if "/" in part else part for part in piece.split("="))
                    for piece in spec.split(","))


def build_app(model, scorer, *, methods: str = ""):
    """The Gradio Blocks of the UI over a loaded ``model`` and its :class:`~reneg.ui.grid.Scorer`; ``methods``:
    the specs the page starts with besides the ticks."""
    import gradio as gr

    from .grid import grid

    def run(prompt, seed, steps, scales, ticked, others):
        try:
            cells = grid(model, scorer, prompt, _specs(ticked or [], others), seed=int(seed), steps=int(steps),
                         guidance_scales=_scales(scales))
        except ReNegError as error:
            raise gr.Error(str(error), print_exception=False) from None
        except Exception as error:  # noqa: BLE001 - the page shows one line, as the CLI does
            raise gr.Error(f"internal error: {type(error).__name__}: {error}", print_exception=False) from None
        labels = [f"{_short(c.spec)} @ {c.guidance_scale:g}" for c in cells]
        gallery = [(c.image, f"{label}  " + "  ".join(f"{k} {v:.4f}" for k, v in c.scores.items()))
                   for c, label in zip(cells, labels)]
        table = [[label, *[round(v, 5) for v in c.scores.values()]] for c, label in zip(cells, labels)]
        pair = (cells[0].image, cells[-1].image)
        return gallery, table, pair

    with gr.Blocks(title="reneg") as app:
        gr.Markdown(f"### reneg: negatives side by side  \nmodel `{model.name}`; every image from the same x_T "
                    "(the first image `reneg generate --seed S` makes)")
        with gr.Row():
            prompt = gr.Textbox(label="prompt", value="a red circle on a blue background", scale=3)
            seed = gr.Number(label="seed", value=0, precision=0)
            steps = gr.Number(label="steps", value=model.defaults.num_inference_steps, precision=0)
            scales = gr.Textbox(label="guidance scales (comma-separated; empty: the model's default)", value="")
        with gr.Row():
            ticked = gr.CheckboxGroup(list(TICKS), value=["null", "handcrafted"], label="methods")
            others = gr.Textbox(label="more methods: specs as in `reneg eval --methods` (embedding=FILE, "
                                      "per-sample=FILE, npo=DIR, negative-prompt=TEXT, ...)", value=methods, scale=3)
        go = gr.Button("generate", variant="primary")
        gallery = gr.Gallery(label="same seed, each method", columns=6, height=320, object_fit="contain")
        table = gr.Dataframe(headers=["method @ guidance", *scorer.names], label="scores")
        slider = gr.ImageSlider(label="first vs last")
        go.click(run, [prompt, seed, steps, scales, ticked, others], [gallery, table, slider], api_name="grid")
        app.load(run, [prompt, seed, steps, scales, ticked, others], [gallery, table, slider])
    return app


def serve(config: UiConfig) -> None:
    """Load the model and its scorer, then serve the app until interrupted."""
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise ReNegError("reneg ui needs Gradio: pip install 'reneg[ui]' (or pip install gradio)") from None
    from ..models.device import resolve_device
    from ..models.loading import load_model
    from .grid import Scorer

    model = load_model(config.model, device=resolve_device(config.device))
    app = build_app(model, Scorer(model), methods=config.methods)
    app.launch(server_name=config.host, server_port=config.port, show_error=False, quiet=False)


COMMAND = builtin_command("ui", UiConfig, serve)
