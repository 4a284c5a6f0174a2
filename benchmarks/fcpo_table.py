"""Reproduce the FCPO table (Ge et al., WSDM 2021) — a thin wrapper over ``fcpo-bench``.

    python benchmarks/fcpo_table.py --dataset ml-100k --data-dir ../shared/data
    python benchmarks/fcpo_table.py --dataset ml-1m --data-dir ../shared/data --seeds 0 1 2
"""
import subprocess
import sys

if __name__ == "__main__":  # runs the fcpo-bench program (benchmarks never import a CLI module)
    sys.exit(subprocess.call([sys.executable, "-m", "fcpo.cli.bench", *sys.argv[1:]]))
