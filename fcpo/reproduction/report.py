"""Reports of a grid.  The table preset: mean ± std rows (:func:`aggregate`), the Markdown table next to
the paper's ML-1M numbers, the checks, and the plots (trade-off, Lorenz curves of item exposure, per-step
popular share under dynamic groups).  The front preset: rows keyed by (method, constraint mode, α')
(:func:`front_rows`) carrying the constraint's view (:func:`constraint_view`), the front's checks
(:func:`front_checks`), its table and its two-panel plot (:func:`write_front_report`)."""
from __future__ import annotations

import math

import numpy as np

from fcpo.reproduction.grid import LAGRANGIAN_ROWS, PAPER_ML1M, RERANKER_MODE, GridSpec

def write_report(spec: GridSpec, results: list[dict], out) -> tuple[dict, str]:
    """``<dataset>.json`` (rows, long-term rows, checks, environment, raw results), ``<dataset>.md`` and
    the three plots into ``out``; returns the JSON payload and the Markdown text.  A grid with
    constraint modes (the front preset) is written by :func:`write_front_report`."""
    from pathlib import Path

    if spec.constraint_modes:
        return write_front_report(spec, results, out)

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


# ------------------------------------------------------------------ the accuracy–fairness front
FRONT_METHOD_ORDER = ("fcpo", "trpo", "ppo-lagrangian", "wolpertinger", "tpgr", "fair-mf", "mf", "popularity", "random")
EXPECTED_WINDOW_METHODS = ("fcpo", "ppo-lagrangian")  # the CMDP agents the expected-mode window applies to
EXPECTED_WINDOW = 0.05  # expected mode: mean test share within [α' - 0.05, α'] for α' <= 0.8
LARGE_ACTION_SHARE_BOUND = 0.45  # TPGR and Wolpertinger at α' = 0.4, both modes
LONG_TERM_MIN_STEPS = 29  # of 30: FCPO within α' under dynamic groups
_TOL = 1e-9


def constraint_view(result: dict) -> dict:
    """The constraint's view of one result: ``result["eval"]["constraint"]`` (the evaluator's
    :func:`fcpo.evaluate.constraint.constraint_report`) when the report has it, else what the report's
    per-step G0 shares give (``fraction_above_cap`` and ``per_slate_ok`` are then ``None``: a per-step
    mean does not say how many single slates exceed the cap)."""
    from fcpo.evaluate.constraint import per_slate_cap

    report, job = result["eval"], result["job"]
    k = int(report.get("k", job.get("slate_size", 5)))
    given = report.get("constraint")
    if given is not None:
        view = dict(given)
    else:
        per_step = [float(x) for x in report["popular_share_per_step"]]
        view = {"popular_share": float(report["metrics"].get("popularity_rate", np.mean(per_step))),
                "popular_share_per_step": per_step, "max_step_share": float(np.max(per_step)),
                "fraction_above_cap": None, "per_slate_ok": None}
    view.setdefault("cap", per_slate_cap(job["alpha"], k))
    return view


def _mean_std(values) -> tuple[float | None, float | None]:
    vals = [v for v in values if v is not None]
    if not vals:
        return None, None
    return float(np.mean(vals)), float(np.std(vals))


def front_label(method: str, mode: str, alpha: float) -> str:
    return f"{method} [{mode}] a'={alpha:g}"


def front_rows(results: list[dict], k: int = 5, steps: int = 10) -> list[dict]:
    """Rows keyed by (method, constraint mode, α'): mean ± std over seeds (accuracy in %, shares as
    fractions in [0, 1]), the mean per-step G0 profile, the worst run's maximum per-step share, and
    the train seconds.  A result whose job stands for several modes (α' = 1) feeds each of them."""
    last = k * steps
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        if r["job"].get("long_term"):
            continue
        for mode in r["job"].get("modes") or (r["job"].get("constraint") or "none",):
            groups.setdefault((r["job"]["method"], mode, float(r["job"]["alpha"])), []).append(r)
    acc_keys = (f"f1@{last}", f"ndcg@{last}", f"recall@{last}", f"f1@{k}")
    rows = []
    for (method, mode, alpha), rs in groups.items():
        views = [constraint_view(r) for r in rs]
        row = {"method": method, "constraint": mode, "alpha": alpha, "label": front_label(method, mode, alpha),
               "seeds": len(rs), "shared_run": len(rs[0]["job"].get("modes") or ()) > 1, "cap": views[0]["cap"]}
        for key in acc_keys:
            row[key], row[key + "_std"] = _mean_std([100 * r["eval"]["metrics"][key] for r in rs])
        for key in ("popular_share", "max_step_share", "fraction_above_cap"):
            row[key], row[key + "_std"] = _mean_std([v.get(key) for v in views])
        row["max_step_share_worst"] = float(max(v["max_step_share"] for v in views))
        oks = [v.get("per_slate_ok") for v in views]
        row["per_slate_ok"] = None if any(o is None for o in oks) else bool(all(oks))
        profile = np.array([v["popular_share_per_step"] for v in views], dtype=float)
        row["popular_share_per_step"] = profile.mean(axis=0).tolist()
        row["popular_share_per_step_std"] = profile.std(axis=0).tolist()
        row["train_seconds"], row["train_seconds_std"] = _mean_std([r["train_seconds"] for r in rs])
        rows.append(row)
    order = {m: i for i, m in enumerate(FRONT_METHOD_ORDER)}
    return sorted(rows, key=lambda r: (order.get(r["method"], 99), r["method"], r["constraint"], r["alpha"]))


def front_long_term_rows(results: list[dict]) -> list[dict]:
    """Long-term (dynamic groups) rows per (method, mode): the mean per-step profile and, per seed, the
    number of steps whose share stays within α' (``steps_within_min``: the worst seed)."""
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        if r["job"].get("long_term"):
            for mode in r["job"].get("modes") or (r["job"].get("constraint") or "none",):
                groups.setdefault((r["job"]["method"], mode, float(r["job"]["alpha"])), []).append(r)
    rows = []
    for (method, mode, alpha), rs in sorted(groups.items()):
        shares = np.array([constraint_view(r)["popular_share_per_step"] for r in rs], dtype=float)
        within = (shares <= alpha + _TOL).sum(axis=1)
        mean = shares.mean(axis=0)
        rows.append({"method": f"{method} [{mode}]", "family": method, "constraint": mode, "alpha": alpha,
                     "seeds": len(rs), "per_step": mean.tolist(), "max_share": float(shares.max()),
                     "mean_share": float(shares.mean()), "steps_within_min": int(within.min()),
                     "steps_above_alpha": int((mean > alpha + _TOL).sum()), "steps": int(shares.shape[1])})
    return rows


def _check(name: str, value, bound, holds: bool) -> dict:
    return {"check": name, "value": value, "bound": bound, "holds": bool(holds)}


def front_checks(rows: list[dict], long_rows: list[dict], results: list[dict] | None = None) -> list[dict]:
    """The front's statements that must hold (shares as fractions):

    * per-slate: the maximum per-step test share <= α' on every run (every seed) of every per-slate row;
    * FCPO [per-slate] F1@L·K >= the α'-fair re-ranker's at every α' (means over seeds);
    * expected: mean test share within [α' − 0.05, α'] for α' <= 0.8 (:data:`EXPECTED_WINDOW_METHODS`);
    * TPGR and Wolpertinger at α' = 0.4: mean test share <= 0.45 in both modes;
    * long-term (dynamic groups): FCPO [per-slate] within α' on >= 29 of 30 steps (worst seed).
    """
    out = []
    f1 = next((key for key in (rows[0] if rows else {}) if key.startswith("f1@") and not key.endswith("_std")
               and key != "f1@5"), "f1@50")
    by = {(r["method"], r["constraint"], r["alpha"]): r for r in rows}
    for r in rows:
        a = r["alpha"]
        if r["constraint"] == "per-slate":
            out.append(_check(f"{r['label']}: max per-step test share <= α' on every run",
                              r["max_step_share_worst"], a, r["max_step_share_worst"] <= a + _TOL))
        if r["method"] == "fcpo" and r["constraint"] == "per-slate":
            fair = by.get(("fair-mf", RERANKER_MODE, a))
            if fair is not None:
                out.append(_check(f"{r['label']}: {f1.upper()} >= fair-mf a'={a:g} {f1.upper()}", r[f1], fair[f1],
                                  r[f1] >= fair[f1]))
        if r["constraint"] == "expected" and r["method"] in EXPECTED_WINDOW_METHODS and a <= 0.8 + _TOL:
            lo = a - EXPECTED_WINDOW
            out.append(_check(f"{r['label']}: mean test share in [α' - {EXPECTED_WINDOW:g}, α']", r["popular_share"],
                              [lo, a], lo - _TOL <= r["popular_share"] <= a + _TOL))
        if r["method"] in ("tpgr", "wolpertinger") and abs(a - 0.4) < _TOL:
            out.append(_check(f"{r['label']}: mean test share <= {LARGE_ACTION_SHARE_BOUND:g}", r["popular_share"],
                              LARGE_ACTION_SHARE_BOUND, r["popular_share"] <= LARGE_ACTION_SHARE_BOUND + _TOL))
    for r in long_rows:
        if r["family"] == "fcpo" and r["constraint"] == "per-slate":
            need = math.ceil(LONG_TERM_MIN_STEPS * r["steps"] / 30 - 1e-9)  # 29 of 30 (quick runs: pro rata)
            out.append(_check(f"{r['method']} a'={r['alpha']:g} (dynamic groups): steps within α' "
                              f"(worst seed) >= {need:g} of {r['steps']}", r["steps_within_min"], need,
                              r["steps_within_min"] >= need))
    return out


def _fmt(mean, std, seeds, scale=1.0, digits=2) -> str:
    if mean is None:
        return "n/a"
    if seeds > 1 and std is not None:
        return f"{scale * mean:.{digits}f} ± {scale * std:.{digits}f}"
    return f"{scale * mean:.{digits}f}"


def front_markdown(rows: list[dict], long_rows: list[dict], checks_: list[dict], dataset_label: str,
                   steps: int = 10, k: int = 5) -> str:
    """The front as a Markdown table (accuracy in %, shares in %), the long-term rows and the checks."""
    last = k * steps
    lines = [f"**{dataset_label}: accuracy–fairness front** (test users, rollout protocol K={k}, L={steps}; "
             "mean ± std over seeds; shares of G0 items in %; α' = 1 is one run shown under both modes)", "",
             f"| method | mode | α' | seeds | F1@{last} | NDCG@{last} | Recall@{last} | F1@{k} | popular share | "
             "max per-step share | slates above cap | train s |", "|" + "---|" * 12]
    for r in rows:
        n = r["seeds"]
        cells = [_fmt(r[f"f1@{last}"], r[f"f1@{last}_std"], n), _fmt(r[f"ndcg@{last}"], r[f"ndcg@{last}_std"], n),
                 _fmt(r[f"recall@{last}"], r[f"recall@{last}_std"], n), _fmt(r[f"f1@{k}"], r[f"f1@{k}_std"], n),
                 _fmt(r["popular_share"], r["popular_share_std"], n, 100, 1),
                 _fmt(r["max_step_share"], r["max_step_share_std"], n, 100, 1),
                 _fmt(r["fraction_above_cap"], r["fraction_above_cap_std"], n, 100, 1),
                 _fmt(r["train_seconds"], r["train_seconds_std"], 1, 1, 0)]
        lines.append(f"| {r['method']} | {r['constraint']} | {r['alpha']:g} | {n} | " + " | ".join(cells) + " |")
    if long_rows:
        lines += ["", "Long-term fairness (dynamic groups):"]
        lines += [f"- {r['method']} a'={r['alpha']:g}: worst seed within α' on {r['steps_within_min']}/{r['steps']} "
                  f"steps; max per-step share {100 * r['max_share']:.1f} %, mean {100 * r['mean_share']:.1f} %"
                  for r in long_rows]
    if checks_:
        lines += ["", "Checks:"]
        lines += [f"- [{'x' if c['holds'] else ' '}] {c['check']}: {_fmt_value(c['value'])} vs "
                  f"{_fmt_value(c['bound'])}" for c in checks_]
    return "\n".join(lines)


def _fmt_value(v) -> str:
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_fmt_value(x) for x in v) + "]"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


_FRONT_COLORS = {"fcpo": "tab:red", "trpo": "tab:purple", "ppo-lagrangian": "tab:orange", "wolpertinger": "tab:brown",
                 "tpgr": "tab:pink", "fair-mf": "tab:blue", "mf": "tab:cyan", "popularity": "tab:gray",
                 "random": "tab:olive"}
_FRONT_MODE_STYLE = {"per-slate": ("-", "o"), "expected": ("--", "s"), "none": ("none", "*")}


def plot_front(rows: list[dict], path: str, title: str, k: int = 5, steps: int = 10) -> None:
    """Two panels, F1@L·K and NDCG@L·K (%) against the test popular share, error bars (std over seeds)
    in both directions, one line per method and mode through its α' points, each point labelled by α'."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    last = k * steps
    fig, axes = plt.subplots(1, 2, figsize=(14, 6.2))
    lines: dict[tuple, list[dict]] = {}
    for r in rows:
        lines.setdefault((r["method"], r["constraint"]), []).append(r)
    for ax, key in zip(axes, (f"f1@{last}", f"ndcg@{last}")):
        for (method, mode), rs in lines.items():
            rs = sorted(rs, key=lambda r: r["alpha"])
            color = _FRONT_COLORS.get(method, "k")
            ls, marker = _FRONT_MODE_STYLE.get(mode, ("-", "o"))
            x = [r["popular_share"] for r in rs]
            y = [r[key] for r in rs]
            ax.errorbar(x, y, xerr=[r["popular_share_std"] or 0 for r in rs], yerr=[r[key + "_std"] or 0 for r in rs],
                        color=color, linestyle=ls, marker=marker, markersize=9 if mode == "none" else 6, capsize=2,
                        lw=1.4, elinewidth=0.8, alpha=0.9, markerfacecolor="white" if mode == "expected" else color,
                        label=method if mode == "none" else f"{method} [{mode}]")
            if len(rs) > 1:
                spots: dict[tuple, list[str]] = {}  # coinciding points get one joint label ("0.8,1")
                for r in rs:
                    if mode == "expected" and r["shared_run"]:
                        continue  # the α' = 1 point is shared with the per-slate line, labelled there
                    spots.setdefault((round(r["popular_share"], 3), round(r[key], 2)), []).append(f"{r['alpha']:g}")
                for (sx, sy), names in spots.items():
                    ax.annotate(",".join(names), (sx, sy), textcoords="offset points",
                                xytext=(4, 3 if mode != "expected" else -9), fontsize=7, color=color)
        ax.set(xlabel="test popular share (share of G0 items recommended)", ylabel=f"{key.upper()} (%)",
               title=f"{key.upper()} vs popular share")
        ax.set_xlim(-0.02, 1.04)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(6, max(1, len(labels))), fontsize=9, frameon=False,
               bbox_to_anchor=(0.5, -0.01))
    fig.suptitle(title + "  ·  numbers at points: α'  ·  solid/filled: per-slate, dashed/hollow: expected, "
                 "stars: unconstrained  ·  bars: ± std over seeds", fontsize=10)
    fig.tight_layout(rect=(0, 0.07 + 0.03 * (len(labels) // 6), 1, 0.97))
    _savefig(fig, path)
    plt.close(fig)


def plot_front_long_term(rows: list[dict], path: str, title: str) -> None:
    """Per-step popular share under dynamic groups, one line per method and mode, α' as a horizontal line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not rows:
        return
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for r in rows:
        ls, marker = _FRONT_MODE_STYLE.get(r["constraint"], ("-", "o"))
        ax.plot(range(1, len(r["per_step"]) + 1), r["per_step"], color=_FRONT_COLORS.get(r["family"], "k"),
                linestyle="-" if ls == "none" else ls, marker=marker, markersize=3,
                label=f"{r['method']} ({r['steps_within_min']}/{r['steps']} steps within α')")
    for alpha in sorted({r["alpha"] for r in rows}):
        ax.axhline(alpha, color="k", ls=":", lw=1.2)
        ax.annotate(f"α' = {alpha:g}", (1, alpha), textcoords="offset points", xytext=(0, 4), fontsize=8)
    top = max(max(max(r["per_step"]) for r in rows), max(r["alpha"] for r in rows))
    ax.set(xlabel="test rollout step", ylabel="popular share (dynamic G0)", title=title, ylim=(0, min(1.02, top + 0.2)))
    ax.legend(fontsize=8, loc="upper right")
    ax.grid(alpha=0.3)
    _savefig(fig, path)
    plt.close(fig)


def write_front_report(spec: GridSpec, results: list[dict], out) -> tuple[dict, str]:
    """``<dataset>.json`` (spec, rows, long-term rows, checks, environment, raw results), ``<dataset>.md``,
    ``<dataset>_front.png`` and ``<dataset>_long_term.png`` into ``out``; returns the payload and the text."""
    from pathlib import Path

    from fcpo.runs import atomic_write, environment_info, write_json

    out = Path(out)
    label_ = "ml-1m (reconstructed)" if spec.dataset == "ml-1m" else spec.dataset
    rows = front_rows(results, spec.slate_size, spec.eval_steps)
    long_rows = front_long_term_rows(results)
    checks_ = front_checks(rows, long_rows)
    out.mkdir(parents=True, exist_ok=True)
    text = front_markdown(rows, long_rows, checks_, label_, spec.eval_steps, spec.slate_size)
    payload = {"spec": dict(spec.__dict__), "preset": "front", "dataset_label": label_, "rows": rows,
               "long_term": long_rows, "checks": checks_, "environment": environment_info(), "results": results,
               "out": str(out)}
    write_json(out / f"{spec.dataset}.json", payload)
    atomic_write(out / f"{spec.dataset}.md", text + "\n")
    plot_front(rows, str(out / f"{spec.dataset}_front.png"), f"accuracy–fairness front · {label_}",
               spec.slate_size, spec.eval_steps)
    plot_front_long_term(long_rows, str(out / f"{spec.dataset}_long_term.png"),
                         f"long-term popular share (dynamic groups) · {label_}")
    return payload, text
