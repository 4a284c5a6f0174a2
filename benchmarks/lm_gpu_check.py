"""CPU vs CUDA agreement of the text policy's title log-probabilities on a fixed batch.

    python benchmarks/lm_gpu_check.py [--model tiny|smollm2|PATH] [--device cuda] [--tol 1e-3]

Scores 4 prompts x 20 candidate titles (batched, prompt-shared scoring) and runs trie-constrained
decoding on both devices; exits 1 when the log-probabilities differ by more than ``--tol`` or the
trie picks differ, 0 otherwise.  Without a CUDA device it prints "no CUDA device: skipped" and exits 0.
"""
from __future__ import annotations

import argparse
import copy
import sys
import time

import numpy as np
import torch


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", help="tiny (built locally), smollm2, or a model path")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tol", type=float, default=1e-3)
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device: skipped")
        return 0
    from fcpo.data import load_dataset
    from fcpo.llm import TextPolicy, build_tiny_lm, load_causal_lm
    from fcpo.llm.prompts import CHAT_TEMPLATE, PromptTemplate
    from fcpo.policies.base import SlateState

    titles = load_dataset("synthetic").item_titles
    if args.model == "tiny":
        model, tok = build_tiny_lm(titles, [PromptTemplate().build(["x"], ["y"]),
                                            CHAT_TEMPLATE.question_text(["x"], ["y"])], seed=0)
    else:
        model, tok = load_causal_lm(args.model)
    rng = np.random.default_rng(0)
    hist = torch.as_tensor(rng.integers(0, len(titles), size=(4, 5)))
    cands = torch.as_tensor(np.stack([rng.permutation(len(titles))[:20] for _ in range(4)]))
    state = SlateState(torch.zeros(4, 0), hist, torch.arange(4))
    out = {}
    for device in ("cpu", args.device):
        pol = TextPolicy(copy.deepcopy(model), tok, titles, device=device)
        st = SlateState(state.obs.to(device), state.history.to(device), state.user.to(device))
        t0 = time.perf_counter()
        with torch.no_grad():
            lp = pol.item_log_probs(st, cands.to(device), cands.to(device)).float().cpu()
        picks = pol.constrained_choice(st, cands.to(device)).cpu()
        out[device] = (lp, picks, time.perf_counter() - t0)
    (lp_c, pk_c, t_c), (lp_g, pk_g, t_g) = out["cpu"], out[args.device]
    diff = float((lp_c - lp_g).abs().max())
    same = bool(torch.equal(pk_c, pk_g))
    print(f"model={args.model} max |logp_cpu - logp_{args.device}| = {diff:.2e} (tol {args.tol}); "
          f"trie picks equal: {same}; seconds cpu {t_c:.2f} {args.device} {t_g:.2f}")
    return 0 if diff <= args.tol and same else 1


if __name__ == "__main__":
    sys.exit(main())
