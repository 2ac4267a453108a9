"""index.html of ``reneg eval``: tables, distribution and guidance plots, a side-by-side gallery; headless checks.

Every path in the page is relative (``images/...``, ``plots/...``), so the
``--out`` folder can be moved or served as it is. A small script in the page
reports, on load, how many of its images loaded (``#image-status``), which is
what :func:`image_status` reads back through headless Chromium.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from html import escape
from html.parser import HTMLParser
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ReNegError
from ..io import atomic_path
from .labels import short_labels
from .sweep import scale_label

if TYPE_CHECKING:
    from .plan import Plan
    from .store import ImageStore

PLOTS_DIR = "plots"
CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome")
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run", "--hide-scrollbars")
#: Virtual time the page gets to load its images before Chromium dumps or captures it (ms).
LOAD_BUDGET_MS = 10000

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: right; vertical-align: top; }
th:first-child, td:first-child { text-align: left; }
td.best { font-weight: bold; }
.gallery td { text-align: center; }
.gallery img { width: 160px; height: auto; image-rendering: pixelated; display: block; margin: auto; }
.prompt { max-width: 18em; text-align: left; }
.scores { font-size: 0.8em; color: #444; }
.scores .best { font-weight: bold; color: #000; }
.gallery img.side { width: 80px; margin-top: 0.3em; } .side .caption { font-size: 0.8em; max-width: 12em; margin: auto; }
.plots img { max-width: 48%; margin: 0 1% 1em 0; }
#image-status.ok { color: #070; } #image-status.bad { color: #b00; font-weight: bold; }
"""

STATUS_SCRIPT = """
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var broken = images.filter(function (img) { return !(img.complete && img.naturalWidth > 0); });
  var status = document.getElementById("image-status");
  status.setAttribute("data-total", images.length);
  status.setAttribute("data-loaded", images.length - broken.length);
  status.setAttribute("data-broken", broken.map(function (img) { return img.getAttribute("src"); }).join(" "));
  status.className = broken.length ? "bad" : "ok";
  status.textContent = broken.length
    ? broken.length + " of " + images.length + " images failed to load: keep images/ and plots/ beside index.html"
    : "all " + images.length + " images loaded";
});
"""


def _slug(text: str) -> str:
    readable = re.sub(r"[^A-Za-z0-9._-]+", "-", text)[:40].strip("-.")
    return f"{readable}-{hashlib.sha256(text.encode()).hexdigest()[:6]}"


# ---------------------------------------------------------------- plots (matplotlib, PNGs under plots/)


def _figure(width: float = 6.4, height: float = 3.6):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt, *plt.subplots(figsize=(width, height), dpi=100, layout="constrained")


def _save(plt, figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    plt.close(figure)


def distribution_plot(path: Path, metric: str, method_scores: dict[str, list[float]]) -> None:
    """Box plot of one metric's per-item scores for each method, with the items as points."""
    plt, figure, axes = _figure(height=1.2 + 0.45 * len(method_scores))
    labels = list(method_scores)[::-1]
    axes.boxplot([method_scores[m] for m in labels], orientation="horizontal", showfliers=False,
                 tick_labels=[label if len(label) <= 40 else label[:37] + "..." for label in labels])
    for row, label in enumerate(labels, start=1):
        values = method_scores[label]
        offsets = [row + 0.25 * (((index * 0.618) % 1.0) - 0.5) for index in range(len(values))]
        axes.scatter(values, offsets, s=6, alpha=0.5, color="tab:blue")
    axes.set_xlabel(metric)
    axes.set_title(f"{metric}: distribution over items")
    _save(plt, figure, path)


def sweep_plot(path: Path, metric: str, sweep: dict, labels: dict[str, str] | None = None) -> None:
    """Mean reward against guidance scale: a line per baseline, the learned methods as points."""
    labels = labels or {}
    plt, figure, axes = _figure()
    colors = iter(plt.rcParams["axes.prop_cycle"].by_key()["color"] * 8)
    for base, summary in sweep["baselines"].items():
        scales = [float(s) for s in summary["by_scale"]]
        axes.plot(scales, [summary["by_scale"][s][metric] for s in summary["by_scale"]], marker="o",
                  label=labels.get(base, base)[:40],
                  color=next(colors))
    for text, learned in sweep["learned"].items():
        axes.scatter([learned["guidance_scale"]], [learned["mean"][metric]], marker="*", s=120, zorder=3,
                     label=labels.get(text, text)[:40], color=next(colors))
    axes.set_xlabel("guidance scale")
    axes.set_ylabel(f"mean {metric}")
    axes.set_title(f"{metric} against guidance scale")
    axes.legend(fontsize="small")
    _save(plt, figure, path)


def write_plots(out: Path, results: dict, method_scores: dict[str, dict[str, list[float]]]) -> dict[str, list[str]]:
    """The report's plots by section ("distributions", "guidance sweep"); paths relative to ``out``."""
    plots: dict[str, list[str]] = {"guidance sweep": [], "distributions": []}
    labels = short_labels(list(method_scores))
    for metric in results["metrics"]:
        relative = f"{PLOTS_DIR}/{_slug(metric)}.png"
        distribution_plot(out / relative, metric, {labels[m]: scores[metric] for m, scores in method_scores.items()})
        plots["distributions"].append(relative)
        if "guidance_sweep" in results:
            relative = f"{PLOTS_DIR}/guidance-{_slug(metric)}.png"
            sweep_plot(out / relative, metric, results["guidance_sweep"],
                       short_labels([*results["guidance_sweep"]["baselines"], *results["guidance_sweep"]["learned"]]))
            plots["guidance sweep"].append(relative)
    return plots


# ---------------------------------------------------------------- the page


def _head(text: str, labels: dict[str, str]) -> str:
    """A method's short label, its full spec on hover."""
    return f"<code title=\"{escape(text)}\">{escape(labels.get(text, text))}</code>"


def _legend(labels: dict[str, str]) -> str:
    shortened = {spec: label for spec, label in labels.items() if label != spec}
    if not shortened:
        return ""
    items = "".join(f"<li><code>{escape(label)}</code>: <code>{escape(spec)}</code></li>"
                    for spec, label in shortened.items())
    return f"<p>Methods:</p><ul class=\"legend\">{items}</ul>"


def _means_table(results: dict) -> str:
    metrics, labels = results["metrics"], short_labels(list(results["methods"]))
    best = {m: max(method["mean"][m] for method in results["methods"].values()) for m in metrics}
    rows = "".join(
        f"<tr><td>{_head(text, labels)}</td><td>{scale_label(method['guidance_scale'])}</td>"
        + "".join(f"<td class=\"{'best' if method['mean'][m] == best[m] else ''}\">{method['mean'][m]:.4f}</td>"
                  for m in metrics) + "</tr>"
        for text, method in results["methods"].items())
    header = "".join(f"<th>{escape(m)}</th>" for m in metrics)
    return f"<table><tr><th>method</th><th>GS</th>{header}</tr>{rows}</table>"


def _win_rate_tables(results: dict) -> str:
    methods, parts = list(results["methods"]), []
    labels = short_labels(methods)
    for metric in results["metrics"]:
        header = "".join(f"<th>{_head(b, labels)}</th>" for b in methods)
        rows = "".join(f"<tr><th>{_head(a, labels)}</th>" + "".join(
            "<td>-</td>" if a == b else f"<td>{results['win_rates'][f'{a} vs {b}'][metric]:.2f}</td>"
            for b in methods) + "</tr>" for a in methods)
        parts.append(f"<h3>{escape(metric)}: row beats column</h3><table><tr><th></th>{header}</tr>{rows}</table>")
    return "".join(parts)


def _side(side: dict) -> str:
    """A method's by-products under its image: DNP's DNS image and its caption n*."""
    image = (f"<img class=\"side\" src=\"{escape(side['dns'])}\" alt=\"DNS image\"><small>DNS image</small><br>"
             if "dns" in side else "")
    caption = f"<div class=\"caption\">n*: {escape(side['caption'])}</div>" if "caption" in side else ""
    return f"<div class=\"side\">{image}{caption}</div>" if image or caption else ""


def _gallery(plan: Plan, results: dict, method_scores: dict, store: ImageStore) -> str:
    methods, metrics = results["methods"], results["metrics"]
    labels = short_labels(list(methods))
    header = "".join(f"<th>{_head(text, labels)}</th>" for text in methods)
    rows = []
    for index, item in enumerate(plan.items[:plan.config.gallery_items]):
        cells = [f"<td class=\"prompt\">{escape(item.prompt.text)}<br><small>{escape(item.prompt.category)} · "
                 f"image {item.image_index} · seed {item.seed}</small></td>"]
        for text, method in methods.items():
            scores = {m: method_scores[text][m][index] for m in metrics}
            best = {m: max(method_scores[t][m][index] for t in methods) for m in metrics}
            lines = "<br>".join(f"<span class=\"{'best' if scores[m] == best[m] else ''}\">{escape(m)} "
                                f"{scores[m]:.4f}</span>" for m in metrics)
            source = store.relative_path(method["images"], item.name)
            cells.append(f"<td><img src=\"{escape(source)}\" alt=\"{escape(text)}: {escape(item.prompt.text)}\">"
                         f"<div class=\"scores\">{lines}</div>{_side(store.side(method['images'], item.name))}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    shown = min(len(plan.items), plan.config.gallery_items)
    return (f"<p>First {shown} of {len(plan.items)} items; the same prompt and initial noise in each row.</p>"
            f"<table class=\"gallery\"><tr><th>prompt</th>{header}</tr>{''.join(rows)}</table>")


def render_html(plan: Plan, results: dict, method_scores: dict, plots: dict[str, list[str]],
                store: ImageStore) -> str:
    settings = results["settings"]
    title = f"reneg eval: {results['benchmark']} on {results['model']}"
    plot_sections = "".join(
        f"<h3>{escape(section)}</h3><div class=\"plots\">"
        + "".join(f"<img src=\"{escape(p)}\" alt=\"{escape(p)}\">" for p in paths) + "</div>"
        for section, paths in plots.items() if paths)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title><style>{STYLE}</style></head>
<body>
<h1>{escape(title)}</h1>
<p>{results['num_prompts']} prompts × {results['num_images_per_prompt']} images, seed {results['seed']},
{settings['steps']} DDIM steps, {settings['resolution']} px, {escape(settings['precision'])}.
Tables: <a href="results.md">results.md</a>, <a href="results.json">results.json</a>.</p>
<p id="image-status">checking images…</p>
{_legend(short_labels(list(results["methods"])))}
<h2>Gallery</h2>{_gallery(plan, results, method_scores, store)}
<h2>Plots</h2>{plot_sections}
<h2>Mean scores</h2>{_means_table(results)}
<h2>Win rates</h2><p>Share of items on which the row's method scores higher, ties counting half.</p>
{_win_rate_tables(results)}
<script>{STATUS_SCRIPT}</script>
</body></html>
"""


def write_html(out: str | Path, plan: Plan, method_scores: dict[str, dict[str, list[float]]], results: dict, *,
               store: ImageStore) -> Path:
    """Write the plots and ``index.html`` into ``out``; ``method_scores``: spec -> metric -> scores in item order."""
    out = Path(out)
    plots = write_plots(out, results, method_scores)
    path = out / "index.html"
    with atomic_path(path) as tmp:
        tmp.write_text(render_html(plan, results, method_scores, plots, store), encoding="utf-8")
    return path


# ---------------------------------------------------------------- headless Chromium


def chromium_path() -> str | None:
    """The Chromium (or Chrome) executable on PATH, or None."""
    return next((found for name in CHROMIUM_CANDIDATES if (found := shutil.which(name))), None)


def _run_chromium(page: Path, *extra: str, timeout: float) -> subprocess.CompletedProcess:
    executable = chromium_path()
    if executable is None:
        raise ReNegError("Chromium is not installed: install it (Debian: apt-get install chromium) to check or "
                         "capture the report")
    with tempfile.TemporaryDirectory(prefix="reneg-chromium-") as profile:
        command = [executable, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                   f"--virtual-time-budget={LOAD_BUDGET_MS}", *extra, Path(page).resolve().as_uri()]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)


class _StatusParser(HTMLParser):
    def __init__(self):
        super().__init__()
        self.attributes: dict[str, str | None] | None = None

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if attributes.get("id") == "image-status":
            self.attributes = attributes


def image_status(index_html: str | Path, *, timeout: float = 60) -> dict:
    """Open the page in headless Chromium as a browser does and report {"total", "loaded", "broken": [src]}."""
    result = _run_chromium(Path(index_html), "--dump-dom", timeout=timeout)
    parser = _StatusParser()
    parser.feed(result.stdout)
    attributes = parser.attributes or {}
    if "data-total" not in attributes:
        raise RuntimeError(f"the page reported no image status (chromium exit {result.returncode}): "
                           f"{result.stderr.strip()[-500:]}")
    return {"total": int(attributes["data-total"]), "loaded": int(attributes["data-loaded"]),
            "broken": (attributes.get("data-broken") or "").split()}


def screenshot(index_html: str | Path, png_path: str | Path, *, width: int = 1280, height: int = 1600,
               timeout: float = 60) -> Path:
    """Capture the page as a PNG of ``width`` x ``height`` pixels with headless Chromium (written atomically)."""
    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=png_path.parent, prefix=f".{png_path.name}.") as scratch:
        shot = Path(scratch) / "screenshot.png"  # Chromium picks the format from the suffix
        result = _run_chromium(Path(index_html), f"--screenshot={shot.resolve()}", f"--window-size={width},{height}",
                               timeout=timeout)
        if not shot.is_file() or shot.stat().st_size == 0:
            raise RuntimeError(f"chromium wrote no screenshot (exit {result.returncode}): "
                               f"{result.stderr.strip()[-500:]}")
        os.replace(shot, png_path)
    return png_path
