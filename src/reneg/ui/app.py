"""``reneg ui``: the Gradio app. One model is loaded at start (``--model``, the shapes world by default); the
page takes a prompt, a seed, steps and guidance scales, ticks methods (null, handcrafted, a learned embedding
file, per-sample, DNP, NPO, any other spec) and shows them side by side from the same x_T, each image with its
scores, and two of them in an image slider. Other tabs: win rates of the chosen methods over N prompts
(``reneg eval --limit N``'s numbers), training (``reneg train`` in the background, a live curve, Stop; the file
joins the methods) and export (``reneg export`` to a host's layout). Bad input shows a one-line message in the
page, never a traceback.

Bound to 127.0.0.1 unless ``--allow-remote`` (the UI reads files by the paths typed into it).
"""

from __future__ import annotations

import functools
import tempfile
from dataclasses import dataclass
from pathlib import Path

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
    workdir: str | None = arg(None, "where the page's trainings, win rates and exports go unless it names a place "
                                    "(default: a new temporary folder)", metavar="DIR")

    def __post_init__(self):
        require(self.host in LOCAL_HOSTS or self.allow_remote,
                f"--host {self.host} would serve the UI beyond this machine (and it opens files by the paths typed "
                "into it): pass --allow-remote to mean it, or leave --host at 127.0.0.1")


def _short(spec: str) -> str:
    """A spec with its file paths cut to their names (``embedding=.../neg.safetensors`` -> ``embedding=neg...``)."""
    from pathlib import PurePath

    return ",".join("=".join(PurePath(part).name if "/" in part else part for part in piece.split("="))
                    for piece in spec.split(","))


def _page_error(error: Exception):
    """The one line the page shows for ``error`` (a ReNegError's own message; anything else named)."""
    import gradio as gr

    text = str(error) if isinstance(error, ReNegError) else f"internal error: {type(error).__name__}: {error}"
    return gr.Error(text, print_exception=False)


def _one_line(handler):
    """``handler`` with its errors shown as one line in the page, never a traceback."""
    import gradio as gr

    @functools.wraps(handler)
    def run(*args):
        try:
            return handler(*args)
        except gr.Error:
            raise
        except Exception as error:  # noqa: BLE001 - the page shows one line, as the CLI does
            raise _page_error(error) from None

    return run


def _frame(headers: list[str], rows: list[list]):
    import pandas as pd

    return pd.DataFrame(rows, columns=headers)


def build_app(model, scorer, *, methods: str = "", workdir: str | Path | None = None):
    """The Gradio Blocks of the UI over a loaded ``model`` and its :class:`~reneg.ui.grid.Scorer`; ``methods``:
    the specs the page starts with besides the ticks; ``workdir``: where trainings, win rates and exports go by
    default (a new temporary folder if not given)."""
    import gradio as gr

    from .session import Session

    session = Session(model, scorer, Path(workdir or tempfile.mkdtemp(prefix="reneg-ui-")))
    session.workdir.mkdir(parents=True, exist_ok=True)
    with gr.Blocks(title="reneg") as app:
        gr.Markdown(f"### reneg: negatives side by side  \nmodel `{model.name}`; every image from the same x_T "
                    "(the first image `reneg generate --seed S` makes)")
        with gr.Row():
            ticked = gr.CheckboxGroup(list(TICKS), value=["null", "handcrafted"], label="methods", min_width=340)
            learned = gr.Dropdown([], value=[], multiselect=True, allow_custom_value=True,
                                  label="learned files (the training tab's, or a typed path)")
            others = gr.Textbox(label="more methods: specs as in `reneg eval --methods` (embedding=FILE, "
                                      "per-sample=FILE, npo=DIR, negative-prompt=TEXT, ...)", value=methods, scale=2)
        chosen = [ticked, others, learned]
        with gr.Tabs():
            with gr.Tab("grid"):
                _grid_tab(gr, app, session, chosen)
            with gr.Tab("win rates"):
                _win_rate_tab(gr, session, chosen)
            with gr.Tab("train"):
                file_choices = _train_tab(gr, session, learned)
            with gr.Tab("export"):
                _export_tab(gr, session, file_choices)
    return app


def _grid_tab(gr, app, session, chosen) -> None:
    model, scorer = session.model, session.scorer

    @_one_line
    def run(prompt, seed, steps, scales, ticked, others, learned):
        from .session import method_specs

        cells = session.grid(prompt, method_specs(ticked, learned, others), seed=seed, steps=steps, scales=scales)
        labels = [f"{_short(c.spec)} @ {c.guidance_scale:g}" for c in cells]
        gallery = [(c.image, f"{label}  " + "  ".join(f"{k} {v:.4f}" for k, v in c.scores.items()))
                   for c, label in zip(cells, labels)]
        table = [[label, *[round(v, 5) for v in c.scores.values()]] for c, label in zip(cells, labels)]
        return gallery, table, (cells[0].image, cells[-1].image)

    with gr.Row():
        prompt = gr.Textbox(label="prompt", value="a red circle on a blue background", scale=3)
        seed = gr.Number(label="seed", value=0, precision=0)
        steps = gr.Number(label="steps", value=model.defaults.num_inference_steps, precision=0)
        scales = gr.Textbox(label="guidance scales (comma-separated; empty: the model's default)", value="")
    go = gr.Button("generate", variant="primary")
    gallery = gr.Gallery(label="same seed, each method", columns=6, height=320, object_fit="contain")
    table = gr.Dataframe(headers=["method @ guidance", *scorer.names], label="scores")
    slider = gr.ImageSlider(label="first vs last")
    inputs = [prompt, seed, steps, scales, *chosen]
    go.click(run, inputs, [gallery, table, slider], api_name="grid")
    app.load(run, inputs, [gallery, table, slider])


def _win_rate_tab(gr, session, chosen) -> None:
    from .winrates import WinRateRequest, mean_table, win_rate_table

    model = session.model

    @_one_line
    def run(prompt_set, count, seed, steps, scale, ticked, others, learned):
        from .session import method_specs

        request = WinRateRequest(prompt_set, count, method_specs(ticked, learned, others), session.scorer.names,
                                 seed=int(seed), steps=steps and int(steps), guidance_scale=scale)
        results, path = session.win_rates(request)
        return _frame(*mean_table(results)), _frame(*win_rate_table(results)), str(path)

    gr.Markdown("`reneg eval --limit N` on the methods chosen above: N prompts x 1 image from eval's seeds, "
                "each method's mean score and every pair's win rate (ties count half)")
    with gr.Row():
        prompt_set = gr.Textbox(label="prompt set: a benchmark name or a prompts file", value=model.defaults.benchmark,
                                scale=3)
        count = gr.Number(label="N prompts", value=8, precision=0)
        seed = gr.Number(label="seed", value=0, precision=0)
        steps = gr.Number(label="steps", value=model.defaults.num_inference_steps, precision=0)
        scale = gr.Number(label="guidance scale", value=model.defaults.guidance_scale)
    go = gr.Button("win rates", variant="primary")
    means = gr.Dataframe(label="mean score per method")
    wins = gr.Dataframe(label="win rates: A over B")
    results = gr.File(label="results.json")
    go.click(run, [prompt_set, count, seed, steps, scale, *chosen], [means, wins, results], api_name="win_rates")


def _train_tab(gr, session, learned):
    """The training tab; returns the export tab's file choice, which a finished training fills."""
    from .training import TrainRequest, train_default

    defaults = session.model.defaults

    def curve(job=None):
        return _frame(["step", "reward", "series"], job.curve() if job else [])

    def run(prompts, prompts_file, reward, train_steps, lr, scale, steps, batch, validate, out):
        try:
            job = session.train(TrainRequest(prompts, reward, train_steps, lr, scale, steps, batch, validate, out,
                                             prompts_file=prompts_file))
        except Exception as error:  # noqa: BLE001 - one line in the page
            raise _page_error(error) from None
        while job.running:
            yield curve(job), f"training: step {len(job.records)} of {job.config.train_steps}", *[gr.skip()] * 3
            job.wait(0.5)
        try:
            message = session.finished(job)
        except Exception as error:  # noqa: BLE001
            raise _page_error(error) from None
        files = gr.update(choices=list(session.learned), value=[job.saved])
        yield (curve(job), message, files, gr.update(choices=list(session.learned), value=job.saved),
               str(session.fresh("negative", ".safetensors")))

    gr.Markdown("`reneg train` on this model in the background; the curve updates as it goes, Stop ends it after "
                "the current step (the file then holds the steps done); the file joins the learned files above")
    with gr.Row():
        prompts = gr.Textbox(label="training prompts, one a line (empty: the model's)", lines=3, scale=3)
        prompts_file = gr.Textbox(label="or a prompts file (.txt, .json, .tsv)")
        reward = gr.Textbox(label="reward", value=defaults.reward)
    with gr.Row():
        train_steps = gr.Number(label="train steps", value=train_default("train_steps"), precision=0)
        lr = gr.Number(label="lr", value=train_default("lr"))
        scale = gr.Number(label="guidance scale", value=defaults.guidance_scale)
        steps = gr.Number(label="sampling steps", value=defaults.num_inference_steps, precision=0)
        batch = gr.Number(label="batch size", value=train_default("batch_size"), precision=0)
        validate = gr.Number(label="validation prompts", value=train_default("validate_prompts"), precision=0)
    out = gr.Textbox(label="learned file", value=str(session.fresh("negative", ".safetensors")))
    with gr.Row():
        go = gr.Button("train", variant="primary")
        stop = gr.Button("stop", variant="stop")
    plot = gr.LinePlot(curve(), x="step", y="reward", color="series", label="reward per step and validation reward")
    status = gr.Markdown()
    file = gr.Dropdown([], value=None, allow_custom_value=True, label="learned file to export", render=False)
    go.click(run, [prompts, prompts_file, reward, train_steps, lr, scale, steps, batch, validate, out],
             [plot, status, learned, file, out], api_name="train")
    stop.click(session.stop, None, status, api_name="stop")
    return file


def _export_tab(gr, session, file) -> None:
    from ..export import HOSTS

    @_one_line
    def run(path, host, folder):
        exported = session.export(path, host, folder)
        return exported.message(), str(exported.archive)

    gr.Markdown("`reneg export`: a learned file in the layout of the host where you generate")
    with gr.Row():
        file.render()
        host = gr.Radio(sorted(HOSTS), value="comfyui", label="host")
        folder = gr.Textbox(label="folder (new or empty; empty: a new one in the UI's work folder)", scale=2)
    go = gr.Button("export", variant="primary")
    message = gr.Markdown()
    archive = gr.File(label="the folder as a zip")
    go.click(run, [file, host, folder], [message, archive], api_name="export")


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
    workdir = Path(config.workdir or tempfile.mkdtemp(prefix="reneg-ui-")).expanduser()
    app = build_app(model, Scorer(model), methods=config.methods, workdir=workdir)
    app.launch(server_name=config.host, server_port=config.port, show_error=False, quiet=False,
               allowed_paths=[str(workdir)])  # its zips and results.json are offered as downloads


COMMAND = builtin_command("ui", UiConfig, serve)
