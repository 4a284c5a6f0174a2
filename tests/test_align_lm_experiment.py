"""The alignment experiment with the language-model backbone (tiny GPT-2, synthetic data): chat-template
prompts, packed scoring, free and trie-constrained evaluation reported apart, 95 % intervals, the CLI."""
import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fcpo.alignment.evaluation import Z95, trie_candidate_metrics, wilson_interval
from fcpo.alignment.experiment import AlignConfig, evaluate, prepare, run_sft
from fcpo.alignment.trainer import TrainConfig, history_state

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")


# ------------------------------------------------------------------ Wilson interval
def test_wilson_interval_hand_checked_values():
    lo, hi = wilson_interval(0.5, 100)
    assert lo == pytest.approx(0.403831, abs=1e-6) and hi == pytest.approx(0.596169, abs=1e-6)
    lo, hi = wilson_interval(0.0, 10)  # upper end z^2/n / (1 + z^2/n)
    assert lo == 0.0 and hi == pytest.approx((Z95 ** 2 / 10) / (1 + Z95 ** 2 / 10), rel=1e-12)
    lo, hi = wilson_interval(1.0, 10)
    assert hi == 1.0 and lo == pytest.approx(1 - (Z95 ** 2 / 10) / (1 + Z95 ** 2 / 10), rel=1e-12)
    with pytest.raises(ValueError, match="n >= 1"):
        wilson_interval(0.5, 0)
    with pytest.raises(ValueError, match="proportion"):
        wilson_interval(1.5, 10)


@settings(max_examples=60, deadline=None)
@given(k=st.integers(0, 500), extra=st.integers(0, 500))
def test_wilson_interval_contains_p_and_narrows_with_n(k, extra):
    n = k + extra + 1
    p = k / n
    lo, hi = wilson_interval(p, n)
    assert 0.0 <= lo <= p + 1e-12 and p - 1e-12 <= hi <= 1.0
    lo4, hi4 = wilson_interval(p, 4 * n)  # same proportion, four times the users: narrower
    assert hi4 - lo4 < hi - lo


# ------------------------------------------------------------------ the experiment
def _tiny_config(**kw) -> AlignConfig:
    small = TrainConfig(epochs=1, batch_size=4, lr=1e-3, eval_batch_size=4)
    base = dict(backbone="lm", dataset="synthetic", model="tiny", max_train_users=4, max_test_users=6,
                n_candidates=5, ks=(5,), sft=small, pref=small, sprec_iterations=1, sprec_sft=small,
                sprec_dpo=small, gen_batch_size=4, score_batch_size=2)
    return AlignConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def tiny_run():
    cfg = _tiny_config(sft=TrainConfig(epochs=2, batch_size=4, lr=3e-3))
    ctx = prepare(cfg)
    run_sft(ctx)
    return ctx, evaluate(ctx, ctx.policy)


def test_lm_backbone_uses_the_chat_template_and_packed_scoring(tiny_run):
    from fcpo.alignment.experiment import lm_description

    ctx, _ = tiny_run
    pol = ctx.policy
    assert pol.chat and pol.scoring == "packed"
    titles = ctx.data.item_titles
    text = pol.prompt(ctx.test.history[0], ctx.test.candidates[0])
    # the S-DPO question as the user turn of the chat template, then the assistant's generation prompt
    assert text.startswith("<s>user: This user has watched the following movies, in order: ")
    assert text.endswith("Answer with the title only.\n<s>assistant:")
    assert all(f'"{titles[i]}"' in text for i in ctx.test.candidates[0])
    assert text.index(titles[ctx.test.history[0][-1]]) < text.index("Choose exactly one")
    info = lm_description(pol)
    assert info["chat"] is True and info["prompt_example"].startswith("<s>user:")
    plain = prepare(_tiny_config(chat=False)).policy
    assert not plain.chat and plain.prompt([0], [1, 2]).endswith("? Answer:")


def test_lm_evaluation_reports_free_and_trie_answers_apart(tiny_run):
    ctx, ev = tiny_run
    n = len(ctx.test)
    for key in ("hr1", "valid_ratio", "hr1_scored", "hr1_trie", "valid_ratio_trie", "ndcg@5"):
        assert key in ev, key
    assert ev["decoding"] == "free" and ev["n_test_users"] == n == 6
    assert ev["valid_ratio_trie"] == 1.0  # trie decoding only spells candidate titles
    # trie HR@1 equals the brute-force share of users whose constrained pick is their target
    state = history_state(ctx.test, np.arange(n))
    picks = ctx.policy.constrained_choice(state, torch.as_tensor(ctx.test.candidates)).numpy()
    assert ev["hr1_trie"] == pytest.approx(float(np.mean(picks == ctx.test.positive)))
    assert all(t in [ctx.data.item_titles[i] for i in row] for t, row in zip(ev["trie_examples"],
                                                                              ctx.test.candidates))
    for key in ("hr1", "hr1_trie", "hr1_scored", "valid_ratio"):
        lo, hi = ev[f"{key}_ci95"]
        assert (lo, hi) == pytest.approx(wilson_interval(ev[key], n)) and lo <= ev[key] <= hi


def test_trie_metrics_need_candidate_lists(tiny_run):
    from dataclasses import replace

    ctx, _ = tiny_run
    with pytest.raises(ValueError, match="candidate lists"):
        trie_candidate_metrics(ctx.policy, replace(ctx.test, candidates=None), ctx.data.item_titles)


def test_candidate_protocol_only_and_no_trie():
    cfg = _tiny_config(trie_eval=False, eval_protocols=("sdpo-candidates",), max_test_users=3)
    ctx = prepare(cfg)
    ev = evaluate(ctx, ctx.policy)
    assert "hr1" in ev and "hr1_trie" not in ev and not any(k.startswith("ndcg@") for k in ev)


def test_config_checks_device_and_protocols():
    with pytest.raises(ValueError, match="device"):
        AlignConfig(backbone="lm", device="tpu")
    with pytest.raises(ValueError, match="lm backbone"):
        AlignConfig(backbone="item", device="cuda")
    with pytest.raises(ValueError, match="eval_protocols"):
        AlignConfig(eval_protocols=("nope",))
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="cuda"):
            prepare(_tiny_config(device="cuda"))


def test_fcpo_align_cli_runs_the_lm_backbone_end_to_end(tmp_path, capsys):
    from fcpo.cli.align import main

    argv = ["--backbone", "lm", "--model", "tiny", "--dataset", "synthetic", "--method", "sdpo", "--negatives", "2",
            "--n-candidates", "5", "--ks", "5", "--max-train-users", "4", "--max-test-users", "4",
            "--sft-batch-size", "4", "--pref-batch-size", "4", "--device", "cpu", "--gen-batch-size", "4",
            "--score-batch-size", "2", "--run-dir", str(tmp_path), "--name", "lm", "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "trie ValidRatio 1.0000" in out and "HR@1" in out
    metrics = json.loads((tmp_path / "lm" / "metrics.json").read_text())
    assert metrics["lm"]["chat"] is True and metrics["lm"]["scoring"] == "packed"
    assert metrics["final"]["valid_ratio_trie"] == 1.0 and "valid_ratio" in metrics["final"]
    assert math.isfinite(metrics["method"]["final_loss"])
    bad = [a for a in argv if a != "--no-progress"]
    bad[bad.index("cpu")], bad[-1] = "tpu", "bad"
    with pytest.raises(SystemExit) as exc:
        main(bad)
    assert exc.value.code == 2
    assert "--device must be cpu, cuda or cuda:N" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
