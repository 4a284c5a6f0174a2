"""Reports of a grid: mean ± std rows (:func:`aggregate`), the Markdown table next to the paper's ML-1M
numbers, the checks, and the plots (trade-off front, Lorenz curves of item exposure, per-step popular
share under dynamic groups)."""
from __future__ import annotations

import numpy as np

from fcpo.reproduction.grid import LAGRANGIAN_ROWS, PAPER_ML1M, GridSpec

def write_report(spec: GridSpec, results: list[dict], out) -> tuple[dict, str]:
    """``<dataset>.json`` (rows, long-term rows, checks, environment, raw results), ``<dataset>.md`` and
    the three plots into ``out``; returns the JSON payload and the Markdown text."""
    from pathlib import Path

    from fcpo.runs import atomic_write, environment_info, write_json

    out = Path(out)
    label_ = "ml-1m (reconstructed)" if spec.dataset == "ml-1m" else spec.dataset
    rows = aggregate(results, spec.slate_size, spec.eval_steps)
    long_rows = long_term_rows(results)
    checks_ = checks(rows)
    out.mkdir(parents=True, exist_ok=True)
    table = markdown_table(rows, label_, spec.eval_steps, spec.slate_size)
    lt = "\n".join(f"- {r['method']}: max popular share {100 * r['max_share']:.1f} %, mean {100 * r['mean_share']:.1f} %, "
                   f"{r['steps_above_alpha']}/{r['steps']} steps above α'={r['alpha']:g}" for r in long_rows)
    ck = "\n".join(f"- [{'x' if c['holds'] else ' '}] {c['check']}: {c['value']:.2f} vs {c['bound']:.2f}"
                   for c in checks_)
    text = table + ("\n\nLong-term fairness (dynamic groups):\n" + lt if lt else "") + \
        ("\n\nChecks:\n" + ck if ck else "")
    payload = {"spec": dict(spec.__dict__), "dataset_label": label_, "rows": rows, "long_term": long_rows,
               "checks": checks_, "environment": environment_info(), "results": results, "out": str(out)}
    write_json(out / f"{spec.dataset}.json", payload)
    atomic_write(out / f"{spec.dataset}.md", text + "\n")
    plot_tradeoff(rows, str(out / f"{spec.dataset}_tradeoff.png"), f"accuracy vs popular share · {label_}")
    plot_lorenz(results, str(out / f"{spec.dataset}_lorenz.png"), f"item exposure · {label_}")
    plot_long_term(long_rows, str(out / f"{spec.dataset}_long_term.png"), f"long-term popular share · {label_}")
    return payload, text


def label(job: dict) -> str:
    if job["method"] in ("fcpo", "fair-mf") + LAGRANGIAN_ROWS:
        return f"{job['method']} a'={job['alpha']:g}" + (" (dynamic)" if job.get("long_term") else "")
    return job["method"] + (" (dynamic)" if job.get("long_term") else "")


def aggregate(results: list[dict], k: int = 5, steps: int = 10) -> list[dict]:
    """Mean ± std over seeds per method row (percentages)."""
    groups: dict[str, list[dict]] = {}
    for r in results:
        if r["job"].get("long_term"):
            continue
        groups.setdefault(label(r["job"]), []).append(r)
    rows = []
    last = k * steps
    keys = {"recall@5": f"recall@{k}", "f1@5": f"f1@{k}", "ndcg@5": f"ndcg@{k}",
            f"recall@{last}": f"recall@{last}", f"f1@{last}": f"f1@{last}", f"ndcg@{last}": f"ndcg@{last}",
            "popularity_rate": "popularity_rate", "gini": "gini", "coverage": "coverage"}
    for name, rs in groups.items():
        row = {"method": name, "seeds": len(rs), "alpha": rs[0]["job"]["alpha"],
               "train_seconds": float(np.mean([r["train_seconds"] for r in rs]))}
        for out_key, key in keys.items():
            vals = [100 * r["eval"]["metrics"][key] for r in rs]
            row[out_key] = float(np.mean(vals))
            row[out_key + "_std"] = float(np.std(vals))
        rows.append(row)
    return rows


def long_term_rows(results: list[dict]) -> list[dict]:
    rows = []
    groups: dict[str, list[dict]] = {}
    for r in results:
        if r["job"].get("long_term"):
            groups.setdefault(label(r["job"]), []).append(r)
    for name, rs in groups.items():
        shares = np.array([r["eval"]["popular_share_per_step"] for r in rs])
        alpha = rs[0]["job"]["alpha"]
        mean = shares.mean(axis=0)
        rows.append({"method": name, "alpha": alpha, "seeds": len(rs), "per_step": mean.tolist(),
                     "max_share": float(mean.max()), "mean_share": float(mean.mean()),
                     "steps_above_alpha": int((mean > alpha + 1e-9).sum()), "steps": len(mean)})
    return rows


def checks(rows: list[dict], tolerance: float = 5.0) -> list[dict]:
    """The issue's 'what must hold' statements, evaluated (percent units; tolerance in points)."""
    by = {r["method"]: r for r in rows}
    out = []
    for r in rows:
        if r["method"].startswith("fcpo a'="):
            a = 100 * r["alpha"]
            out.append({"check": f"{r['method']}: popular share <= α' + {tolerance:g} pts",
                        "value": r["popularity_rate"], "bound": a + tolerance,
                        "holds": r["popularity_rate"] <= a + tolerance})
            fair = by.get(f"fair-mf a'={r['alpha']:g}")
            if fair is not None and r["alpha"] < 1.0:
                out.append({"check": f"{r['method']} F1@5 > fair-mf a'={r['alpha']:g} F1@5",
                            "value": r["f1@5"], "bound": fair["f1@5"], "holds": r["f1@5"] > fair["f1@5"]})
    if "fcpo a'=1" in by and "popularity" in by:
        out.append({"check": "fcpo a'=1 F1@5 >= popularity F1@5", "value": by["fcpo a'=1"]["f1@5"],
                    "bound": by["popularity"]["f1@5"], "holds": by["fcpo a'=1"]["f1@5"] >= by["popularity"]["f1@5"]})
    return out


def markdown_table(rows: list[dict], dataset_label: str, steps: int = 10, k: int = 5) -> str:
    last = k * steps
    cols = ["recall@5", "f1@5", "ndcg@5", f"recall@{last}", f"f1@{last}", "popularity_rate", "gini", "coverage"]
    head = "| method | " + " | ".join(c.replace("popularity_rate", "popular share") for c in cols) + " | train s |"
    lines = [f"**{dataset_label}** (test users, rollout protocol K={k}, L={steps}; % mean ± std over seeds)", "",
             head, "|" + "---|" * (len(cols) + 2)]
    order = {m: i for i, m in enumerate(("fcpo", "trpo", "ppo-lagrangian", "wolpertinger", "tpgr", "fair-mf", "mf",
                                         "popularity", "random"))}
    rows = sorted(rows, key=lambda r: (order.get(r["method"].split(" ")[0], 9), -r["alpha"]))
    for r in rows:
        cells = [f"{r[c]:.2f} ± {r[c + '_std']:.2f}" if r["seeds"] > 1 else f"{r[c]:.2f}" for c in cols]
        lines.append(f"| {r['method']} | " + " | ".join(cells) + f" | {r['train_seconds']:.0f} |")
    lines += ["", "Paper (ML-1M, Ge et al. 2021 Table 2): " + "; ".join(
        f"{m}: Recall {v['recall']}, F1 {v['f1']}, Gini {v['gini']}, popularity rate {v['popularity_rate']}"
        for m, v in PAPER_ML1M.items())]
    return "\n".join(lines)


def _savefig(fig, path):
    from fcpo.runs import save_figure

    save_figure(fig, path, dpi=110, bbox_inches="tight")


def plot_tradeoff(rows: list[dict], path: str, title: str) -> None:
    """Accuracy (F1@5) against popular share, one marker per method row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.8))
    style = {"fcpo": ("o", "tab:red"), "trpo": ("s", "tab:purple"), "ppo-lagrangian": ("^", "tab:orange"),
             "wolpertinger": ("p", "tab:brown"), "tpgr": ("h", "tab:pink"),
             "fair-mf": ("D", "tab:blue"), "mf": ("P", "tab:cyan"), "popularity": ("X", "tab:gray"),
             "random": ("v", "tab:olive")}
    seen = set()
    for r in rows:
        family = r["method"].split(" ")[0]
        marker, color = style.get(family, ("o", "k"))
        ax.errorbar(r["popularity_rate"], r["f1@5"], xerr=r["popularity_rate_std"], yerr=r["f1@5_std"],
                    marker=marker, color=color, linestyle="none", capsize=2, markersize=7,
                    label=None if family in seen else family)
        seen.add(family)
        if "a'=" in r["method"]:
            ax.annotate(r["method"].split(" ")[1], (r["popularity_rate"], r["f1@5"]), textcoords="offset points",
                        xytext=(5, 4), fontsize=7, color=color)
    ax.set(xlabel="popular share of recommendations (%)", ylabel="F1@5 (%)", title=title)
    ax.legend(fontsize=8, loc="best")
    ax.grid(alpha=0.3)
    _savefig(fig, path)
    plt.close(fig)


def plot_lorenz(results: list[dict], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    seen = set()
    for r in results:
        name = label(r["job"])
        if r["job"].get("long_term") or name in seen:
            continue
        seen.add(name)
        ax.plot(r["lorenz"]["x"], r["lorenz"]["y"], label=name)
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set(xlabel="cumulative share of items", ylabel="cumulative share of exposure", title=title)
    ax.legend(fontsize=7)
    _savefig(fig, path)
    plt.close(fig)


def plot_long_term(rows: list[dict], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not rows:
        return
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for r in rows:
        ax.plot(range(1, len(r["per_step"]) + 1), r["per_step"], marker=".", label=r["method"])
    ax.axhline(rows[0]["alpha"], color="k", ls="--", lw=1, label="α'")
    ax.set(xlabel="rollout step", ylabel="popular share (dynamic G0)", title=title, ylim=(0, 1))
    ax.legend(fontsize=8)
    _savefig(fig, path)
    plt.close(fig)
