"""results.json (the contract's schema plus extra keys) and results.md (tables in the papers' layout)."""

from __future__ import annotations

from itertools import permutations
from pathlib import Path
from typing import TYPE_CHECKING

from ..io import atomic_path
from .labels import short_labels
from .metrics import grouped, mean, win_rate
from .sweep import main_run, scale_label, summarize_sweep

if TYPE_CHECKING:
    from .plan import Plan

SEED_RULE = ("item (prompt p, image i) draws x_T from torch.Generator().manual_seed(s), "
             "s = numpy SeedSequence([seed, p, i]).generate_state(1, uint64)[0] & (2**63 - 1)")


def _method_summary(scores: dict[str, list[float]], categories: list[str]) -> dict:
    by_category: dict[str, dict[str, float]] = {}
    for metric, values in scores.items():
        for category, group in grouped(values, categories).items():
            by_category.setdefault(category, {})[metric] = mean(group)
    return {"mean": {metric: mean(values) for metric, values in scores.items()}, "by_category": by_category}


def _win_rates(method_scores: dict[str, dict[str, list[float]]], categories: list[str]) -> tuple[dict, dict]:
    """Every ordered pair "A vs B": overall and per category, per metric (ReNeg Table 3)."""
    overall, by_category = {}, {}
    for a, b in permutations(method_scores, 2):
        pair = f"{a} vs {b}"
        overall[pair] = {m: win_rate(method_scores[a][m], method_scores[b][m]) for m in method_scores[a]}
        by_category[pair] = {}
        for metric in method_scores[a]:
            groups_a = grouped(method_scores[a][metric], categories)
            groups_b = grouped(method_scores[b][metric], categories)
            for category in groups_a:
                by_category[pair].setdefault(category, {})[metric] = win_rate(groups_a[category], groups_b[category])
    return overall, by_category


def scores_by_method(plan: Plan, scores: dict[str, dict[str, list[float]]]) -> dict[str, dict[str, list[float]]]:
    """Spec as given -> metric -> scores in item order (from the run key -> ... table of all runs)."""
    return {spec.text: scores[main_run(spec, plan.guidance_scale).key] for spec in plan.specs}


def build_results(plan: Plan, scores: dict[str, dict[str, list[float]]], *, version: str) -> dict:
    """The results.json document: means (overall, by category), win rates, settings, and the guidance sweep."""
    config, categories = plan.config, [item.prompt.category for item in plan.items]
    runs = {spec.text: main_run(spec, plan.guidance_scale) for spec in plan.specs}
    by_method = scores_by_method(plan, scores)
    win_rates, win_rates_by_category = _win_rates(by_method, categories)
    results = {
        "benchmark": plan.settings["benchmark"], "model": plan.model.name, "seed": config.seed,
        "num_prompts": len(plan.prompts),
        "metrics": [m.text for m in plan.metrics],
        "methods": {text: {**_method_summary(by_method[text], categories), "guidance_scale": run.guidance_scale,
                           "images": run.slug} for text, run in runs.items()},
        "win_rates": win_rates,
        "win_rates_by_category": win_rates_by_category,
        "categories": list(dict.fromkeys(categories)),
        "diagnostics": [m.text for m in plan.metrics if m.diagnostic],
        "metric_models": {m.text: m.model_or_default for m in plan.metrics},
        "num_images_per_prompt": config.images_per_prompt, "num_items": len(plan.items),
        "settings": {**plan.settings, "guidance_scale": plan.guidance_scale, "batch_size": config.batch_size,
                     "limit": config.limit, "seed_rule": SEED_RULE, "reneg_version": version,
                     "reward_precision": config.reward_precision, "rewards": plan.metric_settings},
    }
    if plan.scales:
        results["guidance_sweep"] = summarize_sweep(plan.specs, plan.runs, scores,
                                                    metrics=results["metrics"], scales=plan.scales,
                                                    default_scale=plan.guidance_scale)
    return results


# ---------------------------------------------------------------- Markdown


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows] + [""]


def _bold_best(columns: list[list[float]]) -> list[list[str]]:
    """Format numbers column-wise, the highest of each column in **bold** (as the papers' tables)."""
    formatted = []
    for column in columns:
        best = max(column)
        formatted.append([f"**{v:.4f}**" if v == best and len(column) > 1 else f"{v:.4f}" for v in column])
    return [list(row) for row in zip(*formatted)]


def _escape(text: str) -> str:
    return text.replace("|", "\\|")


def _metric_tables(results: dict) -> list[str]:
    lines, categories = [], results["categories"]
    for metric in results["metrics"]:
        methods = results["methods"]
        columns = [[methods[m]["by_category"][c][metric] for m in methods] for c in categories]
        columns.append([methods[m]["mean"][metric] for m in methods])
        cells, labels = _bold_best(columns), short_labels(list(methods))
        lines += [f"## {metric}", ""]
        lines += _table(["method", *categories, "average"],
                        [[f"`{_escape(labels[m])}`", *row] for m, row in zip(methods, cells)])
    return lines


def _win_rate_tables(results: dict) -> list[str]:
    lines = ["## Win rates", "", "Share of (prompt, seed) items on which A scores higher than B, ties counting "
             "half (ReNeg Table 3).", ""]
    categories, labels = results["categories"], short_labels(list(results["methods"]))

    def pair_label(pair: str) -> str:
        for a in results["methods"]:  # "A vs B" where A and B may themselves hold " vs "
            if pair.startswith(a + " vs ") and pair[len(a) + 4:] in results["methods"]:
                return f"{labels[a]} vs {labels[pair[len(a) + 4:]]}"
        return pair

    for metric in results["metrics"]:
        rows = [[f"`{_escape(pair_label(pair))}`", *(f"{results['win_rates_by_category'][pair][c][metric]:.2f}"
                                         for c in categories), f"{rates[metric]:.2f}"]
                for pair, rates in results["win_rates"].items()]
        lines += [f"### {metric}", ""] + _table(["A vs B", *categories, "average"], rows)
    return lines


def _sweep_tables(sweep: dict, metrics: list[str]) -> list[str]:
    lines = ["## Guidance sweep", "", "Baselines at each guidance scale (mean); learned methods against each "
             "baseline at the same scale and at the baseline's best scale for that metric.", ""]
    for metric in metrics:
        lines += [f"### {metric}", ""]
        scales = sorted({float(s) for summary in sweep["baselines"].values() for s in summary["by_scale"]})
        rows = [[f"`{_escape(base)}`", *(f"{summary['by_scale'][scale_label(s)][metric]:.4f}"
                                        if scale_label(s) in summary["by_scale"] else "-" for s in scales),
                 scale_label(summary["best_scale"][metric])] for base, summary in sweep["baselines"].items()]
        lines += _table(["baseline", *[f"GS {scale_label(s)}" for s in scales], "best GS"], rows)
        rows = []
        for text, learned in sweep["learned"].items():
            for base, versus in learned["vs"].items():
                same, best = versus[metric]["same_scale"], versus[metric]["best_scale"]
                rows.append([f"`{_escape(text)}`", f"{learned['mean'][metric]:.4f}", f"`{_escape(base)}`",
                             f"{same['baseline_mean']:.4f} (GS {scale_label(same['guidance_scale'])})",
                             f"{same['win_rate']:.2f}",
                             f"{best['baseline_mean']:.4f} (GS {scale_label(best['guidance_scale'])})",
                             f"{best['win_rate']:.2f}"])
        if rows:
            lines += _table(["method", "mean", "baseline", "baseline, same GS", "win rate",
                             "baseline, best GS", "win rate"], rows)
    return lines


def render_markdown(results: dict) -> str:
    """results.md: one table per metric (rows methods, columns categories then average), win rates, sweep."""
    settings = results["settings"]
    lines = [f"# reneg eval: {results['benchmark']} on {results['model']}", "",
             f"{results['num_prompts']} prompts x {results['num_images_per_prompt']} images, seed {results['seed']}, "
             f"{settings['steps']} DDIM steps, default guidance scale {scale_label(settings['guidance_scale'])}, "
             f"{settings['resolution']} px, {settings['precision']} (rewards in "
             f"{settings.get('reward_precision', 'fp32')}). Diagnostics: "
             f"{', '.join(results['diagnostics']) or 'none'}. Best of each column in bold; average over all items.", ""]
    if settings.get("num_frames"):
        lines += [f"Each item is a video of {settings['num_frames']} frames; a reward metric scores it by the mean "
                  "of its frames' rewards, a vbench-* metric by VBench's definition.", ""]
    shortened = {s: label for s, label in short_labels(list(results["methods"])).items() if label != s}
    if shortened:
        lines += ["Methods: " + "; ".join(f"`{_escape(label)}` = `{_escape(s)}`" for s, label in shortened.items()),
                  ""]
    lines += _metric_tables(results) + _win_rate_tables(results)
    if "guidance_sweep" in results:
        lines += _sweep_tables(results["guidance_sweep"], results["metrics"])
    return "\n".join(lines)


def write_markdown(path: str | Path, results: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(render_markdown(results))
