"""What the language-model rows cost on this machine, measured, and what the issue's full table would cost.

    nice -n 19 python benchmarks/lm_cost.py [--model smollm2] [--threads 1] [--out results/benchmarks/lm_cost.json]

Costs are CPU seconds of this (one-thread) process, i.e. core-seconds, so they do not grow when other
jobs share the machine; the wall-clock seconds are recorded beside them (``wall_seconds_per_unit``).
Measured on ml-100k prompts of the alignment experiment (chat template, S-DPO prompt with 20
candidate titles, LoRA rank 8, packed candidate scoring), in seconds:

* ``sft_per_prompt``: one SFT step (forward + backward + AdamW) divided by its prompts;
* ``dpo_per_pair`` / ``sdpo3_per_group`` / ``sdpo8_per_group``: the reference pass plus one
  DPO / S-DPO (3 or 8 negatives) step, per prompt;
* per test user: ``free_generation`` (greedy answer to the candidate prompt), ``open_generation``
  (answer to the open prompt: SPRec's top-K protocol and its self-play negatives), ``trie_decoding``
  and ``score_20_candidates`` (the packed log-probabilities of the 20 titles);
* ``ialp_oracle_per_state``: the 135M LM oracle scoring 50 candidate titles for one state.

From those, :func:`table_cost` adds up the issue's table (SFT -> DPO, S-DPO 3 and 8 negatives,
SPRec 2 or 3 iterations; ``train`` prompts, ``test`` users, 3 seeds; every model evaluated with free
generation, trie decoding, candidate scores and the open top-K prompt) and :func:`ialp_cost` the iALP
benchmark with the LM oracle (3 presets share one oracle per seed; its non-oracle part taken from the
MiniLM run in ``results/benchmarks/ialp_minilm.json``), both in core-seconds against the budget of
60 minutes on 2 cores; :func:`slice_size` is the largest "base vs SFT" slice that fits a given time
on one core.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, write_json  # noqa: E402

BUDGET_CORE_S = 60 * 60 * 2  # the issue: at most 60 minutes on 2 cores


WALL: dict = {}  # wall-clock seconds of the last timed call per unit (the machine is shared: CPU time is the cost)


def _timed(fn, *args, **kwargs):
    """(result, CPU seconds of this process): with one torch thread, the core-seconds the call used --
    unlike the wall clock, not inflated when other jobs share the cores.  The wall clock goes to WALL."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    WALL["last"] = time.perf_counter() - t0
    return out, time.process_time() - c0


def table_cost(unit: dict, train: int = 1000, test: int = 500, seeds: int = 3, sprec_iterations: int = 3,
               topk_eval: bool = True) -> dict:
    """Core-seconds of the issue's LM table from the per-unit costs ``unit`` (module docstring)."""
    eval_user = unit["free_generation"] + unit["trie_decoding"] + unit["score_20_candidates"] + (
        unit["open_generation"] if topk_eval else 0.0)
    models = 4 + sprec_iterations  # SFT, DPO, S-DPO 3, S-DPO 8, one per SPRec iteration
    parts = {
        "sft": train * unit["sft_per_prompt"],
        "dpo": train * unit["dpo_per_pair"],
        "sdpo3": train * unit["sdpo3_per_group"],
        "sdpo8": train * unit["sdpo8_per_group"],
        "sprec": sprec_iterations * train * (unit["open_generation"] + unit["sft_per_prompt"] + unit["dpo_per_pair"]),
        "evaluation": models * test * eval_user,
    }
    per_seed = sum(parts.values())
    total = seeds * per_seed
    return {"train_prompts": train, "test_users": test, "seeds": seeds, "sprec_iterations": sprec_iterations,
            "topk_eval": topk_eval, "per_seed_parts_s": parts, "per_seed_s": per_seed, "total_core_s": total,
            "total_hours_on_2_cores": total / 2 / 3600, "budget_core_s": BUDGET_CORE_S,
            "times_over_budget": total / BUDGET_CORE_S}


def ialp_cost(unit: dict, non_oracle_per_seed_s: float, states: int = 512, seeds: int = 3) -> dict:
    """Core-seconds of the iALP benchmark with the LM oracle: per seed one oracle query of ``states``
    states (shared by the 3 presets) plus the reward model, pre-training and online runs."""
    oracle = states * unit["ialp_oracle_per_state"]
    total = seeds * (oracle + non_oracle_per_seed_s)
    return {"oracle_states": states, "seeds": seeds, "presets": 3, "oracle_per_seed_s": oracle,
            "non_oracle_per_seed_s": non_oracle_per_seed_s, "total_core_s": total,
            "times_over_budget": total / BUDGET_CORE_S}


def slice_size(unit: dict, seconds: float = 15 * 60, train_per_test: float = 1.0) -> dict:
    """Largest n with ``train_per_test * n`` SFT prompts and n test users evaluated twice (base, SFT) with
    free generation, trie decoding and candidate scores (no open top-K prompt) in ``seconds`` of one core."""
    per_user = 2 * (unit["free_generation"] + unit["trie_decoding"] + unit["score_20_candidates"])
    n = int(seconds / (per_user + train_per_test * unit["sft_per_prompt"]))
    return {"seconds": seconds, "test_users": n, "train_prompts": int(train_per_test * n),
            "hr1_ci95_half_width_at_p_0.1": 1.96 * float(np.sqrt(0.1 * 0.9 / max(n, 1)))}


def measure(model: str, batch: int, eval_users: int, oracle_states: int, seed: int = 0,
            dataset: str = "ml-100k") -> tuple[dict, dict]:
    from fcpo.alignment.data import with_candidates
    from fcpo.alignment.experiment import AlignConfig, lm_description, prepare
    from fcpo.alignment.trainer import TrainConfig, history_state, train_preference, train_sft
    from fcpo.llm.oracle import ItemCatalogue, LMOracle, query_preferences

    cfg = AlignConfig(backbone="lm", dataset=dataset, model=model, lora=True, seed=seed,
                      max_train_users=4 * batch, max_test_users=eval_users, gen_batch_size=eval_users,
                      score_batch_size=eval_users)
    ctx, load_s = _timed(prepare, cfg)
    pol = ctx.policy
    info = {"load_and_prepare_s": load_s, **lm_description(pol)}
    info.pop("prompt_example")
    train = with_candidates(ctx.train, ctx.split, cfg.n_candidates, 8, seed=seed + 10)
    unit: dict = {}
    steps = 2
    _, t = _timed(train_sft, pol, train.subset(np.arange(steps * batch)),
                  TrainConfig(epochs=1, batch_size=batch, lr=1e-5, seed=seed))
    unit["sft_per_prompt"] = t / (steps * batch)
    wall = {"sft_per_prompt": WALL["last"] / (steps * batch)}
    for key, method, m in (("dpo_per_pair", "dpo", 1), ("sdpo3_per_group", "sdpo", 3), ("sdpo8_per_group", "sdpo", 8)):
        sub = train.subset(np.arange(batch))
        sub = sub.with_negatives(sub.negatives[:, :m])
        ref = pol.snapshot()
        _, t = _timed(train_preference, pol, ref, sub, TrainConfig(epochs=1, batch_size=batch, lr=1e-5,
                                                                   eval_batch_size=batch), method)
        del ref
        unit[key], wall[key] = t / batch, WALL["last"] / batch
    test = ctx.test
    state = history_state(test, np.arange(len(test)))
    cands = torch.as_tensor(test.candidates)
    n = len(test)
    pol.eval()
    with torch.no_grad():
        free, t = _timed(pol.generate, state, cands)
        unit["free_generation"], wall["free_generation"] = t / n, WALL["last"] / n
        opened, t = _timed(pol.generate, state, None)
        unit["open_generation"], wall["open_generation"] = t / n, WALL["last"] / n
        picks, t = _timed(pol.constrained_choice, state, cands)
        unit["trie_decoding"], wall["trie_decoding"] = t / n, WALL["last"] / n
        lp, t = _timed(pol.item_log_probs, state, cands, cands, normalize=True)
        unit["score_20_candidates"], wall["score_20_candidates"] = t / n, WALL["last"] / n
    prompt_tokens = float(np.mean([len(pol._prompt_ids(p)) for p in pol.prompts(state, cands)]))
    # the oracle's cost: the same network (its LoRA adapters add ~2 % to a forward pass)
    oracle = LMOracle(ItemCatalogue.from_ratings(ctx.data), pol.model, pol.tokenizer)
    rng = np.random.default_rng(seed)
    hist = test.history[:oracle_states]
    _, t = _timed(query_preferences, oracle, hist, 50, 5, rng, batch_size=oracle_states)
    unit["ialp_oracle_per_state"] = t / len(hist)
    wall["ialp_oracle_per_state"] = WALL["last"] / len(hist)
    examples = {"free": free[:2], "open": opened[:2], "trie": [ctx.data.item_titles[i] for i in picks[:2].tolist()],
                "targets": [ctx.data.item_titles[i] for i in test.positive[:2]]}
    info.update(wall_seconds_per_unit=wall, prompt_tokens=prompt_tokens, batch=batch, eval_users=n,
                oracle_states=len(hist), examples=examples, score_rows_finite=bool(torch.isfinite(lp).all()))
    return unit, info


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=2, help="prompts per timed training step")
    parser.add_argument("--eval-users", type=int, default=4, help="test users per timed evaluation batch")
    parser.add_argument("--oracle-states", type=int, default=2)
    parser.add_argument("--slice-seconds", type=float, default=15 * 60)
    parser.add_argument("--out", default=str(RESULTS / "lm_cost.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    unit, info = measure(args.model, args.batch, args.eval_users, args.oracle_states, dataset=args.dataset)
    minilm = Path(__file__).resolve().parents[1] / "results" / "benchmarks" / "ialp_minilm.json"
    m = json.loads(minilm.read_text())
    non_oracle = (m["seconds"] - sum(p["oracle_seconds"] for p in m["pretraining"].values())) / len(m["seeds"])
    payload = {
        "threads": torch.get_num_threads(), "loadavg": os.getloadavg(), "niceness": os.nice(0), "args": vars(args),
        "seconds_per_unit": unit, "model_info": info,
        "full_table": table_cost(unit),
        "minimal_table": table_cost(unit, sprec_iterations=2, topk_eval=False),
        "ialp_lm_oracle": ialp_cost(unit, non_oracle),
        "fits_in_slice": slice_size(unit, args.slice_seconds),
        "measure_seconds": time.perf_counter() - t0,
    }
    for key, value in unit.items():
        print(f"{key:>24}: {value:8.2f} s")
    for key in ("full_table", "minimal_table", "ialp_lm_oracle"):
        c = payload[key]
        print(f"{key}: {c['total_core_s'] / 3600:.1f} core-hours = {c['times_over_budget']:.1f} x the budget "
              f"({BUDGET_CORE_S / 3600:.0f} core-hours)")
    print("slice:", payload["fits_in_slice"])
    print("written", write_json(args.out, payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
