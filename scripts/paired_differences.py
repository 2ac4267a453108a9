"""Paired differences between methods of one `reneg eval` run: mean difference per metric over the same items,
its standard error and the share of items A beats B (ties half), from the run's scores.jsonl.

    python scripts/paired_differences.py runs/nag-table/eval "nag@5" "null@1" [METRIC ...]

A and B are run names as scores.jsonl writes them without their #hash (e.g. `null@1`, `embedding=FILE@5`, or a
prefix of one).
"""

from __future__ import annotations

import json
import math
import sys
from collections import defaultdict
from pathlib import Path


def _scores(directory: Path) -> dict:
    table = defaultdict(dict)
    for line in (directory / "scores.jsonl").read_text().splitlines():
        row = json.loads(line)
        table[(row["run"].split("#")[0], row["metric"].split("#")[0])][row["item"]] = row["score"]
    return table


def _run(table, prefix: str) -> str:
    runs = sorted({run for run, _ in table})
    matches = [r for r in runs if r == prefix] or [r for r in runs if r.startswith(prefix)]
    if len(matches) != 1:
        raise SystemExit(f"'{prefix}' names {len(matches)} of the runs {runs}: give one of them")
    return matches[0]


def main(argv: list[str]) -> None:
    directory, first, second, *metrics = argv
    table = _scores(Path(directory))
    a, b = _run(table, first), _run(table, second)
    metrics = metrics or sorted({metric for run, metric in table if run == a})
    print(f"| metric | mean({a}) - mean({b}) | standard error | items | {a} wins |")
    print("| --- | --- | --- | --- | --- |")
    for metric in metrics:
        left, right = table[(a, metric)], table[(b, metric)]
        items = sorted(set(left) & set(right))
        diffs = [left[i] - right[i] for i in items]
        mean = sum(diffs) / len(diffs)
        sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1))
        wins = sum(1.0 if d > 0 else 0.5 if d == 0 else 0.0 for d in diffs) / len(diffs)
        print(f"| {metric} | {mean:+.4f} | {sd / math.sqrt(len(diffs)):.4f} | {len(diffs)} | {wins:.2f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
