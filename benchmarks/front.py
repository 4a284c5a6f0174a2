"""The accuracy–fairness front (issue 11) — a thin wrapper over ``fcpo-bench --front``.

    python benchmarks/front.py --dataset ml-100k --data-dir ../shared/data          # the whole front, 3 seeds
    python benchmarks/front.py --dataset ml-1m --data-dir ../shared/data --methods fcpo fair-mf

Other ``fcpo-bench`` flags pass through (``--out``, ``--workers``, ``--constraint-modes``, ...).
"""
import sys

from fcpo.cli.bench import main

if __name__ == "__main__":
    sys.exit(main(["--front", *sys.argv[1:]]))
