"""``fcpo-plot``: compare run folders — training curves in one PNG, test metrics in one table.

    fcpo-plot runs/fcpo-ml-100k-a0.8-s0-* runs/trpo-ml-100k-s0-*        # -> comparison.png + comparison.md
    fcpo-plot runs/fcpo-*-s0-* runs/fcpo-*-s1-* runs/fcpo-*-s2-* --out seeds.png
    fcpo-plot runs/a runs/b --metric reward popular_share kl

Runs that share agent, α', env and hyper-parameters and differ only by seed are drawn as one curve
(mean ± one standard deviation over seeds).  The cost panel draws each run's logged ``cost_limit``
(α'·K G0 items per step over the mean episode length, the number fcpo-train prints) and the
popular-share panel draws α'.  The table lists each run's test metrics from ``metrics.json``
(F1 and NDCG at the last cut-off K·L, popular share, max per-step share, constraint met).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

from fcpo.cli.common import CLIError, Parser, quiet_interrupt, run_cli

PROG = "fcpo-plot"
DEFAULT_METRICS = ("reward", "cost", "popular_share")
#: a metric -> the logged key of its limit, drawn dashed in the same colour
LIMIT_KEYS = {"cost": "cost_limit", "discounted_cost": "discounted_cost_limit"}
PERCENT = {"popular_share", "gini"}
TITLES = {"reward": "reward per episode", "cost": "cost: G0 items per episode (dashed: limit)",
          "popular_share": "popular share % (dashed: α')", "discounted_cost": "discounted cost (dashed: limit)"}


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folders written by fcpo-train / fcpo-bench")
    p.add_argument("--out", default="comparison.png", metavar="FILE.png",
                   help="the figure (default comparison.png); the table goes beside it as FILE.md")
    p.add_argument("--metric", nargs="+", default=list(DEFAULT_METRICS), metavar="KEY",
                   help="log.jsonl keys to plot, one panel each (default: reward cost popular_share)")
    p.add_argument("--no-group", action="store_true", help="one curve per run, even for seeds of one setting")
    return p


@dataclass
class Run:
    path: Path
    config: object  # fcpo.runs.RunConfig
    records: list[dict]
    metrics: dict | None

    @property
    def alpha(self):
        return self.config.agent_config.get("alpha_prime")

    def setting(self) -> str:
        """Everything but the seed: runs with equal settings are seeds of one experiment."""
        return json.dumps([self.config.agent, self.config.env, self.config.agent_config], sort_keys=True, default=str)


def load(path: str) -> Run:
    from fcpo import runs

    folder = Path(path)
    if not folder.is_dir():
        raise CLIError(f"{folder}: no such folder (expected a run folder written by fcpo-train)")
    config = runs.load_config(folder)  # FileNotFoundError/ValueError name the file
    metrics_path = folder / runs.METRICS
    try:
        metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else None
    except json.JSONDecodeError as exc:
        raise CLIError(f"{metrics_path}: not valid JSON ({exc})") from None
    return Run(folder, config, runs.read_jsonl(folder / runs.LOG), metrics)


def group_runs(runs_: list[Run], grouped: bool = True) -> list[tuple[str, list[Run]]]:
    """``[(label, runs)]`` in first-seen order; runs differing only by seed share a group (runs that
    repeat a seed of their setting are drawn one by one)."""
    groups: dict[str, list[Run]] = {}
    for i, run in enumerate(runs_):
        groups.setdefault(run.setting() if grouped else str(i), []).append(run)
    out = []
    for members in groups.values():
        seeds = [r.config.seed for r in members]
        if len(set(seeds)) < len(seeds):  # repeats of one seed are not a seed band: one curve each
            out += [(r.path.name, [r]) for r in members]
            continue
        if len(members) == 1:
            label = members[0].path.name
        else:
            alpha = members[0].alpha
            seeds = ",".join(str(r.config.seed) for r in members)
            label = f"{members[0].config.agent}" + (f" α'={alpha:g}" if alpha is not None else "") + \
                f" {members[0].config.env.get('dataset', '')} (seeds {seeds}: mean ± sd)"
        out.append((label, members))
    labels = [lab for lab, _ in out]
    return [(lab + f" [{m[0].path.name}]" if labels.count(lab) > 1 else lab, m) for lab, m in out]


def _curve(members: list[Run], key: str):
    """(iterations, mean, sd or None) of ``key`` over the members (NaN where a run lacks it)."""
    import numpy as np

    its = sorted({r["iteration"] for run in members for r in run.records if "iteration" in r})
    if not its:
        return None
    col = {it: j for j, it in enumerate(its)}
    values = np.full((len(members), len(its)), np.nan)
    for i, run in enumerate(members):
        for r in run.records:
            v = r.get(key)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and "iteration" in r:
                values[i, col[r["iteration"]]] = v
    if np.isnan(values).all():
        return None
    count = (~np.isnan(values)).sum(axis=0)
    mean = np.nansum(values, axis=0) / np.maximum(count, 1)
    mean[count == 0] = np.nan
    sd = None
    if len(members) > 1:
        spread = np.sqrt(np.nansum((values - mean) ** 2, axis=0) / np.maximum(count, 1))
        sd = np.where(count >= 2, spread, np.nan)
    return np.array(its), mean, sd


# ------------------------------------------------------------------ the table
def _fmt(x, percent: bool = True) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{100 * x:.2f}" if percent else f"{x:g}"


def table_rows(runs_: list[Run]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the test-metric table (values in %), one row per run."""
    from fcpo.runs import constraint_on_test

    cutoffs = {r.metrics["test"]["k"] * r.metrics["test"]["steps"] for r in runs_ if r.metrics and "test" in r.metrics}
    n = f"@{next(iter(cutoffs))}" if len(cutoffs) == 1 else "@K·L"
    header = ["run", "agent", "α'", "seed", "iterations", f"F1{n} %", f"NDCG{n} %", "popular share %",
              "max per-step share %", "constraint met"]
    rows = []
    for run in runs_:
        done = run.records[-1]["iteration"] + 1 if run.records else 0
        row = [run.path.name, run.config.agent, _fmt(run.alpha, False), str(run.config.seed),
               f"{done}/{run.config.iterations}"]
        test = (run.metrics or {}).get("test")
        if test:
            m, cut = test["metrics"], test["k"] * test["steps"]
            verdict = constraint_on_test(run.config.agent_config, test)
            met = {True: "yes", False: "no", None: "–"}[verdict["met"]] + f" ({verdict['rule']})"
            at = "" if len(cutoffs) == 1 else f" (@{cut})"
            row += [_fmt(m.get(f"f1@{cut}")) + at, _fmt(m.get(f"ndcg@{cut}")) + at, _fmt(verdict["popular_share"]),
                    _fmt(verdict["max_step_share"]) if test.get("protocol") == "rollout" else "–", met]
        else:
            row += ["–", "–", "–", "–", "no test metrics"]
        rows.append(row)
    return header, rows


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ the figure
def plot(groups: list[tuple[str, list[Run]]], metrics: list[str], header, rows, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    from fcpo.runs import save_figure

    n = len(metrics)
    table_h = 0.35 * (len(rows) + 1) + 0.4
    fig = plt.figure(figsize=(max(4.8 * n, 12), 4.2 + table_h))
    grid = fig.add_gridspec(2, n, height_ratios=[4.2, table_h])
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for j, key in enumerate(metrics):
        ax = fig.add_subplot(grid[0, j])
        scale = 100.0 if key in PERCENT else 1.0
        for g, (label, members) in enumerate(groups):
            colour = colours[g % len(colours)]
            curve = _curve(members, key)
            if curve is None:
                continue
            its, mean, sd = curve
            ax.plot(its, scale * mean, color=colour, label=label, linewidth=1.6)
            if sd is not None:
                ax.fill_between(its, scale * (mean - sd), scale * (mean + sd), color=colour, alpha=0.2, linewidth=0)
            if key in LIMIT_KEYS:
                limit = _curve(members, LIMIT_KEYS[key])
                if limit is not None:
                    ax.plot(limit[0], scale * limit[1], color=colour, linestyle="--", linewidth=1.0)
            elif key == "popular_share" and members[0].alpha is not None:
                ax.axhline(scale * members[0].alpha, color=colour, linestyle="--", linewidth=1.0)
        ax.set(xlabel="iteration", title=TITLES.get(key, key))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if j == 0:
            ax.legend(loc="best", fontsize=7)
    tax = fig.add_subplot(grid[1, :])
    tax.axis("off")
    table = tax.table(cellText=rows, colLabels=header, loc="center", cellLoc="center")
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    table.auto_set_column_width(list(range(len(header))))
    table.scale(1.0, 1.3)
    tax.set_title("test metrics (metrics.json)", fontsize=9)
    fig.tight_layout()
    path = save_figure(fig, out, dpi=110)
    plt.close(fig)
    return path


def _main(args) -> int:
    from fcpo.runs import atomic_write

    runs_ = [load(p) for p in args.run_dirs]
    if not any(r.records for r in runs_):
        raise CLIError("none of the run folders has a training log (log.jsonl) yet")
    known = sorted({k for r in runs_ for rec in r.records for k, v in rec.items()
                    if isinstance(v, (int, float)) and not isinstance(v, bool)} - {"iteration"})
    unknown = [m for m in args.metric if m not in known]
    if unknown:
        raise CLIError(f"--metric {' '.join(unknown)}: not in the runs' log.jsonl; logged keys: {', '.join(known)}")
    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise CLIError(f"--out {out}: give a .png file name")
    groups = group_runs(runs_, grouped=not args.no_group)
    header, rows = table_rows(runs_)
    text = markdown(header, rows)
    plot(groups, list(args.metric), header, rows, out)
    md = out.with_suffix(".md")
    atomic_write(md, text)
    print(text, end="")
    print(f"{PROG}: wrote {out} and {md}", file=sys.stderr)
    return 0


def main(argv=None) -> int:
    with quiet_interrupt(PROG):
        args = build_parser().parse_args(argv)
        return run_cli(PROG, _main, args)


if __name__ == "__main__":
    sys.exit(main())
