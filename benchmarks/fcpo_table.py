"""Reproduce the FCPO table (Ge et al., WSDM 2021) — a thin wrapper over ``fcpo-bench``.

    python benchmarks/fcpo_table.py --dataset ml-100k --data-dir ../shared/data
    python benchmarks/fcpo_table.py --dataset ml-1m --data-dir ../shared/data --seeds 0 1 2
"""
import sys

from fcpo.cli.bench import main

if __name__ == "__main__":
    sys.exit(main())
