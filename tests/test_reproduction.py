"""The reproduction pipeline (fcpo-bench) end to end on synthetic data, and its pure helpers."""
from __future__ import annotations

import json

import pytest

from fcpo import reproduction as rp
from fcpo.cli import bench


def test_quick_bench_writes_table_json_and_plots(tmp_path):
    out = tmp_path / "bench"
    code = bench.main(["--dataset", "synthetic", "--quick", "--out", str(out), "--workers", "1", "--ray", "no",
                       "--no-progress", "--methods", "fcpo", "popularity", "fair-mf", "--alphas", "1.0", "0.4"])
    payload = json.loads((out / "synthetic.json").read_text())
    assert code == (1 if any(not c["holds"] for c in payload["checks"]) else 0)  # a failed check fails the command
    # every trained job is a run folder written by fcpo.runs.train_loop (log, checkpoint, metrics)
    jobs = sorted(p.name for p in (out / "jobs").iterdir())
    assert jobs == ["fcpo-a0.4-s0", "fcpo-a0.4-s0-dynamic", "fcpo-a1-s0"]
    job = out / "jobs" / "fcpo-a0.4-s0"
    assert [json.loads(x)["iteration"] for x in (job / "log.jsonl").read_text().splitlines()] == [0, 1, 2]
    assert (job / "checkpoint.pt").is_file() and (job / "config.yaml").is_file()
    saved = json.loads((job / "metrics.json").read_text())["test"]["metrics"]
    row = next(r for r in payload["results"] if r["job"]["method"] == "fcpo" and r["job"]["alpha"] == 0.4
               and not r["job"].get("long_term"))
    assert saved == row["eval"]["metrics"]
    methods = {r["method"] for r in payload["rows"]}
    assert {"fcpo a'=1", "fcpo a'=0.4", "popularity", "fair-mf a'=0.4"} <= methods
    assert payload["long_term"] and len(payload["long_term"][0]["per_step"]) == 6
    table = (out / "synthetic.md").read_text()
    assert "| fcpo a'=0.4 |" in table and "Paper (ML-1M" in table
    for name in ("tradeoff", "lorenz", "long_term"):
        assert (out / f"synthetic_{name}.png").stat().st_size > 2000
    pop = next(r for r in payload["rows"] if r["method"] == "popularity")
    assert pop["popularity_rate"] > 99.0  # G0 first; only users who saw most of G0 get a tail item


def test_grid_jobs_cover_methods_alphas_and_seeds():
    spec = rp.GridSpec(seeds=(0, 1), alphas=(1.0, 0.4), methods=("fcpo", "trpo", "random", "fair-mf"), ppo_alphas=())
    jobs = spec.jobs()
    fcpo_static = [j for j in jobs if j["method"] == "fcpo" and not j.get("long_term")]
    assert sorted((j["alpha"], j["seed"]) for j in fcpo_static) == [(0.4, 0), (0.4, 1), (1.0, 0), (1.0, 1)]
    assert sum(j["method"] == "random" for j in jobs) == 2  # random ranker: every seed
    assert sum(j["method"] == "fair-mf" and not j.get("long_term") for j in jobs) == 2  # per α', one seed
    assert sum(bool(j.get("long_term")) for j in jobs) == 3  # fcpo x 2 seeds + fair-mf


def test_aggregate_and_checks_on_hand_made_results():
    def result(method, alpha, seed, f1, pop):
        metrics = {"recall@5": 0.1, "f1@5": f1, "ndcg@5": 0.1, "recall@50": 0.3, "f1@50": 0.1, "ndcg@50": 0.2,
                   "popularity_rate": pop, "gini": 0.5, "coverage": 0.5}
        return {"job": {"method": method, "alpha": alpha, "seed": seed}, "train_seconds": 1.0,
                "eval": {"metrics": metrics}}
    rows = rp.aggregate([result("fcpo", 0.4, 0, 0.02, 0.40), result("fcpo", 0.4, 1, 0.04, 0.50),
                         result("fair-mf", 0.4, 0, 0.035, 0.4), result("popularity", 1.0, 0, 0.01, 1.0)])
    fcpo = next(r for r in rows if r["method"] == "fcpo a'=0.4")
    assert fcpo["f1@5"] == pytest.approx(3.0) and fcpo["f1@5_std"] == pytest.approx(1.0)
    assert fcpo["popularity_rate"] == pytest.approx(45.0)
    checks = {c["check"]: c["holds"] for c in rp.checks(rows, tolerance=4.0)}
    assert checks["fcpo a'=0.4: popular share <= α' + 4 pts"] is False  # 45 > 44
    assert checks["fcpo a'=0.4 F1@5 > fair-mf a'=0.4 F1@5"] is False  # 3.0 < 3.5


# ------------------------------------------------------------------ the accuracy–fairness front
def test_front_preset_jobs_cover_modes_alphas_and_seeds_once():
    from collections import Counter

    spec = rp.GridSpec.front()
    jobs = spec.jobs()
    static = [j for j in jobs if not j.get("long_term")]
    cells = Counter((j["method"], j["constraint"], j["alpha"], j["seed"]) for j in static)
    assert max(cells.values()) == 1  # no cell runs twice
    for method in ("fcpo", "ppo-lagrangian", "wolpertinger", "tpgr"):
        for seed in (0, 1, 2):
            for a in (0.2, 0.4, 0.6, 0.8):
                assert cells[(method, "per-slate", a, seed)] == cells[(method, "expected", a, seed)] == 1
            at_one = [j for j in static if j["method"] == method and j["alpha"] == 1.0 and j["seed"] == seed]
            assert len(at_one) == 1 and at_one[0]["modes"] == ("per-slate", "expected")  # once, labelled for both
            assert spec.iterations_of(method) == at_one[0]["iterations"] == rp.FRONT_ITERATIONS[method]
    trpo = [j for j in jobs if j["method"] == "trpo"]
    assert sorted(j["seed"] for j in trpo) == [0, 1, 2] and {j["alpha"] for j in trpo} == {1.0}
    assert all(j["constraint"] is None for j in trpo)
    fair = [j for j in static if j["method"] == "fair-mf"]
    assert sorted(j["alpha"] for j in fair) == [0.2, 0.4, 0.6, 0.8, 1.0] and all(j["seed"] == 0 for j in fair)
    assert Counter(j["method"] for j in static if j["method"] in ("mf", "popularity", "random")) == \
        Counter({"mf": 1, "popularity": 1})
    long_term = sorted((j["method"], j["modes"]) for j in jobs if j.get("long_term"))
    assert long_term == [("fair-mf", ("per-slate",))] + [("fcpo", ("expected",))] * 3 + [("fcpo", ("per-slate",))] * 3
    assert all(j["eval_steps"] == 30 and j["grouping"] == "dynamic" for j in jobs if j.get("long_term"))
    assert len(jobs) == 3 * (4 * 9 + 1 + 2) + 6 + 2 == 125
    assert len({rp.job_name(j) for j in jobs}) == len(jobs)  # one run folder per job
    assert rp.job_name(static[0]) == "fcpo-per-slate-a0.2-s0"
    assert 15 * 60 < spec.estimated_seconds(workers=2) <= 30 * 60  # the preset fits the 30-minute budget
    with pytest.raises(ValueError, match="constraint"):
        rp.GridSpec.front(constraint_modes=("per-slate", "sometimes"))


def test_table_preset_jobs_carry_no_constraint_mode():
    jobs = rp.GridSpec().jobs()
    assert jobs and all("constraint" not in j and "modes" not in j for j in jobs)
    assert {j["iterations"] for j in jobs} == {60}
    assert "constraint" not in rp.job_config(jobs[0]).agent_config
    assert rp.job_name(jobs[0]) == "fcpo-a1-s0"


def test_job_config_passes_the_constraint_mode_only_to_agents_that_take_it(monkeypatch):
    from dataclasses import fields

    from fcpo.reproduction import grid
    from fcpo.runs import agent_config_class

    job = next(j for j in rp.GridSpec.front().jobs() if j["method"] == "fcpo" and j["constraint"] == "expected")
    takes_it = "constraint" in {f.name for f in fields(agent_config_class("fcpo"))}
    assert rp.job_config(job).agent_config.get("constraint") == ("expected" if takes_it else None)
    monkeypatch.setattr(grid, "_has_constraint_field", lambda method: True)
    cfg = rp.job_config(job).agent_config
    assert cfg["constraint"] == "expected" and cfg["alpha_prime"] == job["alpha"]
    assert cfg["users_per_iteration"] == rp.FRONT_OVERRIDES["fcpo"]["users_per_iteration"]
    ranker = next(j for j in rp.GridSpec.front().jobs() if j["method"] == "fair-mf")
    assert "constraint" not in rp.job_config(ranker).agent_config


def _front_result(method, mode, alpha, seed, f1, per_step, modes=None, constraint=None, long_term=False, ndcg=0.2):
    """A hand-made result: K = 5, L = len(per_step) (the @50 keys stand for the last cut-off)."""
    metrics = {"recall@5": 0.1, "f1@5": f1 / 2, "ndcg@5": 0.1, "recall@50": 0.3, "f1@50": f1, "ndcg@50": ndcg,
               "popularity_rate": float(sum(per_step) / len(per_step)), "gini": 0.5, "coverage": 0.5}
    report = {"k": 5, "steps": len(per_step), "metrics": metrics, "popular_share_per_step": list(per_step)}
    if constraint is not None:
        report["constraint"] = constraint
    job = {"method": method, "alpha": alpha, "seed": seed, "constraint": None if mode == "none" else mode,
           "modes": tuple(modes or (mode,)), "slate_size": 5, "long_term": long_term}
    return {"job": job, "train_seconds": 10.0 + seed, "eval": report}


def _hand_made_front():
    return [
        # per-slate FCPO at 0.4: seed 1 has one step above α' (0.44) -> the every-run check fails
        _front_result("fcpo", "per-slate", 0.4, 0, 0.10, [0.4, 0.4, 0.2, 0.4]),
        _front_result("fcpo", "per-slate", 0.4, 1, 0.12, [0.4, 0.44, 0.2, 0.2]),
        # expected FCPO at 0.4: means 0.375 and 0.325 -> mean 0.35, inside [0.35, 0.40]
        _front_result("fcpo", "expected", 0.4, 0, 0.13, [0.5, 0.5, 0.2, 0.3]),
        _front_result("fcpo", "expected", 0.4, 1, 0.13, [0.5, 0.3, 0.2, 0.3]),
        # α' = 1: one run per seed for both modes
        _front_result("fcpo", "per-slate", 1.0, 0, 0.20, [0.8] * 4, modes=("per-slate", "expected")),
        _front_result("fcpo", "per-slate", 1.0, 1, 0.22, [0.9] * 4, modes=("per-slate", "expected")),
        # the re-ranker, with the evaluator's constraint report: F1 0.105 < 0.11 (FCPO holds), 0.25 > 0.21 (fails)
        _front_result("fair-mf", "per-slate", 0.4, 0, 0.105, [0.4] * 4,
                      constraint={"popular_share": 0.4, "popular_share_per_step": [0.4] * 4, "max_step_share": 0.4,
                                  "fraction_above_cap": 0.0, "cap": 2, "per_slate_ok": True}),
        _front_result("fair-mf", "per-slate", 1.0, 0, 0.25, [0.85] * 4),
        # TPGR at 0.4: expected mode 0.5 > 0.45 fails, per-slate 0.4 holds
        _front_result("tpgr", "expected", 0.4, 0, 0.05, [0.5] * 4),
        _front_result("tpgr", "per-slate", 0.4, 0, 0.05, [0.4] * 4),
        _front_result("trpo", "none", 1.0, 0, 0.2, [0.8] * 4),
        # long term: seed 0 within α' on all 30 steps, seed 1 on 28 -> worst seed 28 < 29 fails
        _front_result("fcpo", "per-slate", 0.4, 0, 0.1, [0.4] * 30, long_term=True),
        _front_result("fcpo", "per-slate", 0.4, 1, 0.1, [0.4] * 28 + [0.6, 0.6], long_term=True),
    ]


def test_front_rows_aggregate_by_method_mode_and_alpha():
    results = _hand_made_front()
    rows = {(r["method"], r["constraint"], r["alpha"]): r for r in rp.front_rows(results, k=5, steps=10)}
    assert set(rows) == {("fcpo", "per-slate", 0.4), ("fcpo", "expected", 0.4), ("fcpo", "per-slate", 1.0),
                         ("fcpo", "expected", 1.0), ("fair-mf", "per-slate", 0.4), ("fair-mf", "per-slate", 1.0),
                         ("tpgr", "expected", 0.4), ("tpgr", "per-slate", 0.4), ("trpo", "none", 1.0)}
    ps = rows[("fcpo", "per-slate", 0.4)]
    assert ps["seeds"] == 2 and ps["f1@50"] == pytest.approx(11.0) and ps["f1@50_std"] == pytest.approx(1.0)
    assert ps["popular_share"] == pytest.approx((0.35 + 0.31) / 2)
    assert ps["max_step_share"] == pytest.approx(0.42) and ps["max_step_share_worst"] == pytest.approx(0.44)
    assert ps["popular_share_per_step"] == pytest.approx([0.4, 0.42, 0.2, 0.3])
    assert ps["fraction_above_cap"] is None and ps["per_slate_ok"] is None  # not derivable from per-step means
    assert ps["cap"] == 2 and ps["train_seconds"] == pytest.approx(10.5)
    assert rows[("fcpo", "expected", 0.4)]["popular_share"] == pytest.approx(0.35)
    one_ps, one_ex = rows[("fcpo", "per-slate", 1.0)], rows[("fcpo", "expected", 1.0)]
    assert one_ps["seeds"] == one_ex["seeds"] == 2 and one_ps["f1@50"] == one_ex["f1@50"] == pytest.approx(21.0)
    assert one_ps["shared_run"] and not ps["shared_run"] and one_ps["cap"] == 5
    fair = rows[("fair-mf", "per-slate", 0.4)]  # the evaluator's constraint report is used as given
    assert fair["fraction_above_cap"] == 0.0 and fair["per_slate_ok"] is True and fair["seeds"] == 1
    assert fair["f1@50_std"] == 0.0
    long_rows = rp.front_long_term_rows(results)
    assert len(long_rows) == 1 and long_rows[0]["steps_within_min"] == 28 and long_rows[0]["steps"] == 30
    assert long_rows[0]["per_step"][-1] == pytest.approx(0.5) and long_rows[0]["steps_above_alpha"] == 2


def test_front_checks_fail_exactly_where_the_hand_made_results_break_them():
    results = _hand_made_front()
    rows = rp.front_rows(results, k=5, steps=10)
    checks = {c["check"]: c for c in rp.front_checks(rows, rp.front_long_term_rows(results))}
    holds = {name: c["holds"] for name, c in checks.items()}
    assert holds == {
        "fcpo [per-slate] a'=0.4: max per-step test share <= α' on every run": False,  # 0.44 on seed 1
        "fcpo [per-slate] a'=0.4: F1@50 >= fair-mf a'=0.4 F1@50": True,  # 11.0 >= 10.5
        "fcpo [expected] a'=0.4: mean test share in [α' - 0.05, α']": True,  # 0.35 on the edge
        "fcpo [per-slate] a'=1: max per-step test share <= α' on every run": True,
        "fcpo [per-slate] a'=1: F1@50 >= fair-mf a'=1 F1@50": False,  # 21 < 25
        "fair-mf [per-slate] a'=0.4: max per-step test share <= α' on every run": True,
        "fair-mf [per-slate] a'=1: max per-step test share <= α' on every run": True,
        "tpgr [expected] a'=0.4: mean test share <= 0.45": False,
        "tpgr [per-slate] a'=0.4: max per-step test share <= α' on every run": True,
        "tpgr [per-slate] a'=0.4: mean test share <= 0.45": True,
        "fcpo [per-slate] a'=0.4 (dynamic groups): steps within α' (worst seed) >= 29 of 30": False,
    }
    assert checks["fcpo [expected] a'=0.4: mean test share in [α' - 0.05, α']"]["bound"] == pytest.approx([0.35, 0.4])
    # the expected window fails just outside it, on either side
    low = [dict(r, popular_share=0.349) if r["label"] == "fcpo [expected] a'=0.4" else r for r in rows]
    high = [dict(r, popular_share=0.401) if r["label"] == "fcpo [expected] a'=0.4" else r for r in rows]
    for changed in (low, high):
        assert not next(c["holds"] for c in rp.front_checks(changed, []) if c["check"].startswith("fcpo [expected]"))


def test_front_table_and_plots_on_fake_rows(tmp_path):
    results = _hand_made_front()
    rows = rp.front_rows(results, k=5, steps=10)
    long_rows = rp.front_long_term_rows(results)
    text = rp.front_markdown(rows, long_rows, rp.front_checks(rows, long_rows), "ml-100k", steps=10, k=5)
    assert "| fcpo | per-slate | 0.4 | 2 | 11.00 ± 1.00 | 20.00 ± 0.00 |" in text
    assert "| fair-mf | per-slate | 0.4 | 1 | 10.50 | 20.00 | 30.00 | 5.25 | 40.0 | 40.0 | 0.0 | 10 |" in text
    assert "| n/a |" in text  # slates above the cap: unknown without the evaluator's constraint report
    assert "- [ ] fcpo [per-slate] a'=1: F1@50 >= fair-mf a'=1 F1@50: 21.000 vs 25.000" in text
    assert "worst seed within α' on 28/30 steps" in text
    rp.plot_front(rows, str(tmp_path / "front.png"), "front", k=5, steps=10)
    rp.plot_front_long_term(long_rows, str(tmp_path / "long.png"), "long")
    assert (tmp_path / "front.png").stat().st_size > 20000 and (tmp_path / "long.png").stat().st_size > 10000


def test_quick_front_end_to_end_on_synthetic_data(tmp_path, capsys):
    out = tmp_path / "front"
    code = bench.main(["--front", "--dataset", "synthetic", "--quick", "--out", str(out), "--workers", "1",
                       "--ray", "no", "--no-progress", "--no-long-term", "--methods", "fcpo", "fair-mf",
                       "--alphas", "0.4", "1.0"])
    assert "front grid on synthetic: 5 jobs (fcpo 3, fair-mf 2)" in capsys.readouterr().err
    payload = json.loads((out / "synthetic.json").read_text())
    assert payload["preset"] == "front" and payload["spec"]["constraint_modes"] == ["per-slate", "expected"]
    assert code == (1 if any(not c["holds"] for c in payload["checks"]) else 0)
    assert sorted(p.name for p in (out / "jobs").iterdir()) == \
        ["fcpo-expected-a0.4-s0", "fcpo-per-slate-a0.4-s0", "fcpo-per-slate-a1-s0"]
    rows = {(r["method"], r["constraint"], r["alpha"]): r for r in payload["rows"]}
    assert set(rows) == {("fcpo", "per-slate", 0.4), ("fcpo", "expected", 0.4), ("fcpo", "per-slate", 1.0),
                         ("fcpo", "expected", 1.0), ("fair-mf", "per-slate", 0.4), ("fair-mf", "per-slate", 1.0)}
    for r in rows.values():
        assert len(r["popular_share_per_step"]) == 4
        if r["constraint"] == "per-slate":  # greedy: one profile, its maximum
            assert r["max_step_share"] == pytest.approx(max(r["popular_share_per_step"]))
        else:  # sampled over seeds: the worst seed's maximum vs the mean profile
            assert r["max_step_share"] >= max(r["popular_share_per_step"]) - 1e-12
        assert 0.0 <= r["popular_share"] <= r["max_step_share"] <= 1.0
    assert rows[("fcpo", "per-slate", 1.0)]["f1@20"] == rows[("fcpo", "expected", 1.0)]["f1@20"]
    fair = rows[("fair-mf", "per-slate", 0.4)]
    assert fair["max_step_share"] <= 0.4 + 1e-9  # the re-ranker caps every slate at ⌊0.4·5⌋ = 2
    names = {c["check"] for c in payload["checks"]}
    assert "fair-mf [per-slate] a'=0.4: max per-step test share <= α' on every run" in names
    assert "fcpo [per-slate] a'=0.4: F1@20 >= fair-mf a'=0.4 F1@20" in names
    assert "| fcpo | expected | 0.4 | 1 |" in (out / "synthetic.md").read_text()
    assert (out / "synthetic_front.png").stat().st_size > 20000


def test_job_seconds_scales_with_iterations_budget_knob_rollout_length_and_data_set():
    cost = {"fcpo": {"setup": 1.0, "iteration": 2.0, "eval": 3.0}, "ranker": {"setup": 0.5, "iteration": 0.0, "eval": 1.5}}
    job = {"method": "fcpo", "iterations": 10, "eval_steps": 10, "dataset": "ml-100k",
           "overrides": {"fcpo": {"users_per_iteration": rp.FRONT_OVERRIDES["fcpo"]["users_per_iteration"]}}}
    assert rp.job_seconds(job, cost) == pytest.approx(1 + 10 * 2 + 3)
    full = dict(job, overrides={"fcpo": {"users_per_iteration": 1.0}})  # twice the calibrated 0.5 users
    assert rp.job_seconds(full, cost) == pytest.approx(1 + 10 * 2 * 2 + 3)
    assert rp.job_seconds(dict(job, overrides={}), cost) == pytest.approx(44.0)  # the agent's default: 1.0
    assert rp.job_seconds(dict(job, eval_steps=30, dataset="ml-1m"), cost) == pytest.approx((1 + 20 + 9) * 12.0)
    assert rp.job_seconds({"method": "mf", "iterations": 60, "eval_steps": 10, "dataset": "ml-100k"}, cost) == 2.0
    spec = rp.GridSpec.front(seeds=(0,), methods=("fcpo",), alphas=(1.0,), long_term_alpha=None)
    assert spec.estimated_seconds(workers=2, cost=cost) == pytest.approx(1.2 * (1 + 40 * 2 + 3) / 2)


def test_bench_flags_choose_the_preset_and_keep_its_values_unless_given():
    def spec(*argv):
        return bench.spec_from_args(bench.build_parser().parse_args(list(argv)))

    table = spec()
    assert table.preset == "table" and table.alphas == (1.0, 0.8, 0.4) and table.constraint_modes == ()
    assert [j["iterations"] for j in table.jobs() if j["method"] == "fcpo"][0] == 60
    front = spec("--front")
    assert front.preset == "front" and front.alphas == front.ppo_alphas == rp.FRONT_ALPHAS
    assert front.method_iterations == rp.FRONT_ITERATIONS and spec("--grid", "front").jobs() == front.jobs()
    narrowed = spec("--front", "--alphas", "0.4", "1.0", "--constraint-modes", "expected", "--iterations", "7")
    assert narrowed.ppo_alphas == (0.4, 1.0) and narrowed.constraint_modes == ("expected",)
    assert {j["iterations"] for j in narrowed.jobs() if j["method"] in rp.RL_METHODS} == {7}
    assert {j["constraint"] for j in narrowed.jobs() if j["method"] == "fcpo"} == {"expected"}
    with pytest.raises(bench.CLIError, match="--constraint-modes needs --front"):
        spec("--constraint-modes", "expected")
    with pytest.raises(bench.CLIError, match="given twice"):
        spec("--front", "--constraint-modes", "expected", "expected")
    assert "front grid on ml-100k: 125 jobs" in bench.plan_text(front, 2)
