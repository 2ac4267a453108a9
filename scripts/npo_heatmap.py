"""NPO's alpha/beta heat map (the paper's Fig. 10) on the shapes world, through `reneg eval`.

    OMP_NUM_THREADS=1 python scripts/npo_heatmap.py --npo DELTA_DIR --lora ETA_DIR --out runs/heatmap \
        [--alphas 0,0.5,1] [--betas 0,0.5,1] [--limit 40] [--prompts benchmarks/world_heldout_100.json]

Each cell is the eval method ``npo=DELTA,beta=B,lora=ETA,alpha=A`` (prompt's branch theta + eta, negative
branch theta + A*eta + B*delta, NPO Eq. 10) on the same prompts and seeds, beside ``null`` (plain CFG with
theta) as reference. Writes the eval's results into --out and ``heatmap.png`` (one panel per metric, the
cell's mean; the title gives plain CFG's mean), and prints a markdown table per metric.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    from reneg.evaluate import EvalConfig, evaluate

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--npo", required=True)
    parser.add_argument("--lora", required=True)
    parser.add_argument("--alphas", default="0,0.5,1")
    parser.add_argument("--betas", default="0,0.5,1")
    parser.add_argument("--limit", type=int, default=40)
    parser.add_argument("--prompts", default="benchmarks/world_heldout_100.json")
    parser.add_argument("--out", required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--plot-metrics", default="shapes-hps,shapes-pick,truth-adherence,truth-cleanliness",
                        help="metrics drawn in heatmap.png (all are printed)")
    args = parser.parse_args()
    alphas = [float(a) for a in args.alphas.split(",")]
    betas = [float(b) for b in args.betas.split(",")]
    cells = {(a, b): f"npo={args.npo},beta={b},lora={args.lora},alpha={a}" for a in alphas for b in betas}
    results = json.loads(evaluate(EvalConfig(prompts=args.prompts, limit=args.limit, device=args.device,
                                             methods=["null", *cells.values()], out=args.out)).read_text())
    methods = results["methods"]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = results["metrics"]
    drawn = [m for m in args.plot_metrics.split(",") if m in metrics] or metrics[:4]
    columns = min(2, len(drawn))
    rows = -(-len(drawn) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.0 * columns, 3.4 * rows), squeeze=False)
    panels = dict(zip(drawn, axes.flat))
    for metric in metrics:
        axis = panels.get(metric)
        grid = [[methods[cells[(a, b)]]["mean"][metric] for b in betas] for a in alphas]
        print(f"\n{metric} (plain CFG, theta: {methods['null']['mean'][metric]:.4f})\n")
        print("| alpha \\ beta | " + " | ".join(str(b) for b in betas) + " |")
        print("| --- |" + " --- |" * len(betas))
        for a, row in zip(alphas, grid):
            print(f"| {a} | " + " | ".join(f"{v:.4f}" for v in row) + " |")
        if axis is None:
            continue
        image = axis.imshow(grid, origin="lower", cmap="viridis")
        axis.set_xticks(range(len(betas)), [str(b) for b in betas])
        axis.set_yticks(range(len(alphas)), [str(a) for a in alphas])
        axis.set_xlabel("beta (delta)")
        axis.set_ylabel("alpha (eta)")
        axis.set_title(f"{metric}\nplain CFG {methods['null']['mean'][metric]:.3f}", fontsize=8)
        for i, row in enumerate(grid):
            for j, value in enumerate(row):
                axis.text(j, i, f"{value:.3f}", ha="center", va="center", fontsize=8, color="white")
        figure.colorbar(image, ax=axis, fraction=0.046)
    figure.tight_layout()
    figure.savefig(Path(args.out) / "heatmap.png", dpi=120)
    print(f"\n{Path(args.out) / 'heatmap.png'}")


if __name__ == "__main__":
    main()
