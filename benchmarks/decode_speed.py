"""Benchmark: the slate decoders' building blocks, old against new, with equality checks (issue 17).

One CPU thread, synthetic scores at the shapes of the ml-100k training rollout (932 users, K = 5,
1,682 items, d = 32, cap 2 of 5) and of the default ml-1m evaluation (6,016 users, 3,706 items);
each figure is the median of ``--repeats`` timed calls after a warm-up, in milliseconds.

* ``row_scores``: W Vᵀ with excluded items at -inf -- the batched ``baddbmm`` of B small products
  with a 0/-inf bias (before) against one [B·K, d] × [d, n] GEMM plus an in-place add
  (:func:`fcpo.policies.capped.row_scores`);
* ``exclusion``: applying a bool exclusion mask -- ``masked_fill`` against the integer-built additive
  bias (:func:`fcpo.policies.base.exclusion_bias`) and an in-place add;
* ``greedy_decode``: the Gaussian actor's deployed slate (W = μ: rows u + o_j), decoded from the full
  [B, K, n] scores (before) against one selection over the shared scores plus the row corrections
  (:meth:`SlateActor.decode_mean`), at several sizes of the corrections relative to the shared scores
  (``--offset-scales``: the std of o_j relative to the std of u); the share of rows that needed the
  second or the full pass is reported (a weak bound costs time, never correctness);
* ``rank_top1``: the K = 1 ranking step -- ``topk(1)`` against ``max``;
* ``slot_decode``: the decoder of sampled W on given [B, K, n] scores (the training rollout's) -- each
  row's top-K list per group then the merge (before) against slot-by-slot row maxima with the taken
  columns masked (:func:`fcpo.policies.capped._slot_maxima`), capped (group-permuted scores) and
  uncapped (``row_decode``), on one row block of ``DECODE_SCORE_BUDGET`` scores as the decoder runs;
  the new one overwrites taken columns, so it is timed on a copy and the copy's time is given;
* ``sampled_decode_blocks``: the decoder of a sampled W (the training rollout's) with row blocks of
  at most ``DECODE_SCORE_BUDGET`` scores, for several budgets (2^26 before, 2^22 now).

Every pair is checked to give the same picks.  Results: ``results/benchmarks/decode_speed.json``.

    python benchmarks/decode_speed.py [--repeats 20] [--offset-scales 0 0.03 0.1 0.3]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, machine_info, write_json  # noqa: E402

#: DECODE_SCORE_BUDGET values compared for the decoder of sampled W (scores per row block)
BLOCK_BUDGETS = (1 << 26, 1 << 22, 1 << 21, 1 << 20)
#: (label, users, K, items, d, cap)
SHAPES = (("ml-100k rollout", 932, 5, 1682, 32, 2), ("ml-1m evaluation", 6016, 5, 3706, 32, None))


def median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(1e3 * (time.perf_counter() - t0))
    return statistics.median(times)


def bench_shape(label, b, k, n, d, cap, repeats, offset_scales, seed=0) -> dict:
    import torch

    from fcpo.policies.actor import SlateActor
    from fcpo.policies.base import exclusion_bias
    from fcpo.policies.capped import capped_row_decode, row_scores

    g = torch.Generator().manual_seed(seed)
    items = torch.randn(n, d, generator=g)
    pop = torch.rand(n, generator=g) < 0.2
    exclude = torch.rand(b, n, generator=g) < 0.03
    w = torch.randn(b, k, d, generator=g)
    out = {"shape": label, "users": b, "k": k, "items": n, "dim": d, "cap": cap}

    def old_scores():
        bias = torch.where(exclude, float("-inf"), 0.0).unsqueeze(1)
        return torch.baddbmm(bias, w, items.T.expand(b, d, n))

    same = torch.equal(torch.isinf(old_scores()), torch.isinf(row_scores(w, items, exclude))) and torch.allclose(
        old_scores().nan_to_num(neginf=0.0), row_scores(w, items, exclude).nan_to_num(neginf=0.0), atol=1e-5)
    out["row_scores"] = {"baddbmm_ms": median_ms(old_scores, repeats),
                         "gemm_add_ms": median_ms(lambda: row_scores(w, items, exclude), repeats), "same": same}

    import fcpo.policies.capped as capped_module

    default_budget, blocks = capped_module.DECODE_SCORE_BUDGET, {}
    try:
        for budget in BLOCK_BUDGETS:
            capped_module.DECODE_SCORE_BUDGET = budget
            picks = capped_module.capped_row_decode_from_embeddings(w, items, cap, pop, exclude)
            blocks[str(budget)] = {"ms": median_ms(lambda: capped_module.capped_row_decode_from_embeddings(
                w, items, cap, pop, exclude), repeats), "picks": picks}
    finally:
        capped_module.DECODE_SCORE_BUDGET = default_budget
    first = blocks[str(BLOCK_BUDGETS[0])]["picks"]
    out["sampled_decode_blocks"] = {budget: {"ms": v["ms"], "same": torch.equal(v["picks"], first)}
                                    for budget, v in blocks.items()}

    s = torch.randn(b, n, generator=g)
    bias_same = torch.equal(s.masked_fill(exclude, float("-inf")), s + exclusion_bias(exclude))
    out["exclusion"] = {"masked_fill_ms": median_ms(lambda: s.masked_fill(exclude, float("-inf")), repeats),
                        "bias_build_ms": median_ms(lambda: exclusion_bias(exclude), repeats),
                        "bias_build_and_add_ms": median_ms(lambda: s.clone().add_(exclusion_bias(exclude)), repeats),
                        "clone_ms": median_ms(lambda: s.clone(), repeats), "same": bias_same}

    masked = s + exclusion_bias(exclude)
    out["rank_top1"] = {"topk_ms": median_ms(lambda: torch.topk(masked, 1, dim=1), repeats),
                        "max_ms": median_ms(lambda: masked.max(dim=1), repeats),
                        "same": torch.equal(torch.topk(masked, 1, dim=1).indices.squeeze(1), masked.max(dim=1).indices)}

    perm, m1 = capped_module._group_layout(pop)
    users = min(b, max(1, capped_module.DECODE_SCORE_BUDGET // (k * n)))  # one row block, as the decoder runs
    full = row_scores(w[:users], items, exclude[:users])
    scores_p = capped_module._permute(full, perm)
    dec_cap = cap if cap is not None else 2
    lists = capped_module._merge_row_lists(capped_module._split_permuted(scores_p, perm, m1), k, dec_cap)
    out["slot_decode"] = {
        "cap": dec_cap, "block_users": users,
        "capped_topk_lists_ms": median_ms(lambda: capped_module._merge_row_lists(
            capped_module._split_permuted(scores_p, perm, m1), k, dec_cap), repeats),
        "capped_slot_maxima_ms": median_ms(lambda: capped_module._slot_maxima(scores_p.clone(), k, dec_cap, perm, m1),
                                           repeats),
        "capped_same": torch.equal(lists, capped_module._slot_maxima(scores_p.clone(), k, dec_cap, perm, m1)),
        "uncapped_topk_lists_ms": median_ms(lambda: capped_module._row_decode_candidates(
            torch.topk(full, k, dim=2).indices), repeats),
        "uncapped_slot_maxima_ms": median_ms(lambda: capped_module.row_decode(full.clone(), overwrite=True), repeats),
        "uncapped_same": torch.equal(capped_module._row_decode_candidates(torch.topk(full, k, dim=2).indices),
                                     capped_module.row_decode(full)),
        "copy_ms": median_ms(lambda: full.clone(), repeats)}

    actor = SlateActor(items, 5, k, slate_cap=cap, is_popular=pop)
    u = torch.randn(b, d, generator=g)
    rows = []
    for scale in offset_scales:
        with torch.no_grad():
            actor.row_offset.copy_(scale * float(u.std()) * torch.randn(k, d, generator=g))
        mean = (u.unsqueeze(1) + actor.row_offset.detach()).reshape(b, k * d)
        ref_cap = actor.slate_cap if actor.cap_active(k) else None

        def full():  # the decoder on the full scores s + t_j (what decode_mean must equal)
            t = actor.row_offset.detach() @ items.T
            scores = (u @ items.T + exclusion_bias(exclude)).unsqueeze(1) + t.unsqueeze(0)
            return capped_row_decode(scores, ref_cap, pop if ref_cap is not None else None)

        stats: dict = {}
        picks = actor.decode_mean(u, exclude, stats=stats)
        rows.append({
            "offset_scale": scale,
            "one_product_ms": median_ms(lambda: actor.decode(mean, exclude), repeats),
            "full_scores_ms": median_ms(full, repeats),
            "decode_mean_ms": median_ms(lambda: actor.decode_mean(u, exclude), repeats),
            "same_as_full_scores": torch.equal(picks, full()),
            "picks_differing_from_one_product": int((picks != actor.decode(mean, exclude)).sum()),
            "rows": stats.get("rows", 0), "retried_share": stats.get("retried", 0) / max(1, stats.get("rows", 1)),
            "recomputed_share": stats.get("recomputed", 0) / max(1, stats.get("rows", 1)),
        })
    out["greedy_decode"] = rows
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--offset-scales", type=float, nargs="+", default=[0.0, 0.03, 0.1, 0.3])
    ap.add_argument("--shapes", nargs="+", choices=[s[0].split()[0] for s in SHAPES],
                    default=[s[0].split()[0] for s in SHAPES], help="which shapes (by data set)")
    ap.add_argument("--out", default=str(RESULTS / "decode_speed.json"))
    args = ap.parse_args(argv)
    if args.repeats < 1:
        ap.error("--repeats must be >= 1")
    import torch

    torch.set_num_threads(1)
    before = machine_info()
    results = [bench_shape(*shape, args.repeats, args.offset_scales) for shape in SHAPES
               if shape[0].split()[0] in args.shapes]
    for r in results:
        print(f"{r['shape']} (B={r['users']}, K={r['k']}, n={r['items']}, cap={r['cap']}):")
        rs, ex, r1 = r["row_scores"], r["exclusion"], r["rank_top1"]
        print(f"  row scores  baddbmm {rs['baddbmm_ms']:.1f} ms -> GEMM + add {rs['gemm_add_ms']:.1f} ms (same {rs['same']})")
        print(f"  exclusion   masked_fill {ex['masked_fill_ms']:.2f} ms -> bias {ex['bias_build_ms']:.2f} ms "
              f"(+ add on a copy {ex['bias_build_and_add_ms']:.2f} ms, the copy alone {ex['clone_ms']:.2f}) (same {ex['same']})")
        print(f"  top-1       topk {r1['topk_ms']:.2f} ms -> max {r1['max_ms']:.2f} ms (same {r1['same']})")
        sd = r["slot_decode"]
        print(f"  sampled-W slots, one block of {sd['block_users']} users, cap {sd['cap']}: top-K lists {sd['capped_topk_lists_ms']:.1f} ms -> slot maxima "
              f"{sd['capped_slot_maxima_ms']:.1f} ms incl. a copy of {sd['copy_ms']:.1f} (same {sd['capped_same']}); "
              f"uncapped {sd['uncapped_topk_lists_ms']:.1f} -> {sd['uncapped_slot_maxima_ms']:.1f} ms "
              f"(same {sd['uncapped_same']})")
        print("  sampled-W decode by block budget: " + ", ".join(
            f"2^{int(b).bit_length() - 1} {v['ms']:.1f} ms (same {v['same']})" for b, v in r["sampled_decode_blocks"].items()))
        for row in r["greedy_decode"]:
            print(f"  greedy, offsets x{row['offset_scale']:<5}: one product {row['one_product_ms']:.1f} ms, "
                  f"full scores {row['full_scores_ms']:.1f} ms -> decode_mean {row['decode_mean_ms']:.1f} ms "
                  f"(same {row['same_as_full_scores']}; retried {row['retried_share']:.1%}, "
                  f"recomputed {row['recomputed_share']:.1%}; picks differing from one product: "
                  f"{row['picks_differing_from_one_product']})")
    payload = {"results": results, "threads": torch.get_num_threads(), "load_avg_before": before["load_avg"],
               "load_avg_after": machine_info()["load_avg"], "args": vars(args)}
    write_json(args.out, payload)
    print(f"wrote {args.out}")
    return payload


if __name__ == "__main__":
    main()
