"""Make a pairs file of the shapes world for `reneg npo --route dpo` (clean and correct vs degraded or wrong).

    python benchmarks/world_pairs.py --out runs/world-pairs [--count 256] [--seed 0]
    reneg npo --route dpo --pairs runs/world-pairs/pairs.jsonl --out runs/npo-dpo

Writes images/NNNNN_preferred.png, images/NNNNN_rejected.png and pairs.jsonl (one {"prompt", "preferred",
"rejected", "kind"} object a line, paths relative to the file) into --out.
"""

from __future__ import annotations

import argparse

from reneg.world.pairs import write_world_pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--count", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(write_world_pairs(args.out, count=args.count, seed=args.seed))


if __name__ == "__main__":
    main()
