"""benchmarks/lm_cost.py: the cost arithmetic on hand-checked unit costs, and a seconds-long run on the tiny GPT-2."""
import json

import pytest

from benchmark_scripts import load_benchmark



def _bench():
    return load_benchmark("lm_cost")


UNIT = {"sft_per_prompt": 2.0, "dpo_per_pair": 3.0, "sdpo3_per_group": 4.0, "sdpo8_per_group": 5.0,
        "free_generation": 1.0, "open_generation": 0.5, "trie_decoding": 0.25, "score_20_candidates": 0.25,
        "ialp_oracle_per_state": 2.0}


def test_table_cost_adds_up_every_stage():
    bench = _bench()
    c = bench.table_cost(UNIT, train=10, test=4, seeds=3, sprec_iterations=2)
    parts = c["per_seed_parts_s"]
    assert parts == {"sft": 20.0, "dpo": 30.0, "sdpo3": 40.0, "sdpo8": 50.0,
                     "sprec": 2 * 10 * (0.5 + 2.0 + 3.0),  # self-play answer + SFT + DPO per prompt
                     "evaluation": 6 * 4 * 2.0}  # 6 models x 4 users x (1 + 0.5 + 0.25 + 0.25)
    assert c["total_core_s"] == pytest.approx(3 * (20 + 30 + 40 + 50 + 110 + 48))
    assert c["times_over_budget"] == pytest.approx(c["total_core_s"] / 7200)
    no_topk = bench.table_cost(UNIT, train=10, test=4, seeds=1, sprec_iterations=2, topk_eval=False)
    assert no_topk["per_seed_parts_s"]["evaluation"] == 6 * 4 * 1.5


def test_ialp_and_slice_arithmetic():
    bench = _bench()
    c = bench.ialp_cost(UNIT, non_oracle_per_seed_s=100.0, states=512, seeds=3)
    assert c["total_core_s"] == 3 * (512 * 2.0 + 100.0)
    s = bench.slice_size(UNIT, seconds=900)  # per user 2 x 1.5 evaluation + 2.0 SFT = 5 s
    assert s["test_users"] == 180 and s["train_prompts"] == 180


@pytest.mark.filterwarnings("ignore:fan_in_fan_out", "ignore:`is_gradient_checkpointing`")
def test_lm_cost_runs_on_the_tiny_model(tmp_path):
    pytest.importorskip("transformers")
    pytest.importorskip("peft")
    bench = _bench()
    out = tmp_path / "cost.json"
    assert bench.main(["--model", "tiny", "--dataset", "synthetic", "--out", str(out)]) == 0
    payload = json.loads(out.read_text())
    assert set(UNIT) == set(payload["seconds_per_unit"])
    assert all(v > 0 for v in payload["seconds_per_unit"].values())
    assert payload["model_info"]["chat"] is True and payload["model_info"]["scoring"] == "packed"
    assert payload["full_table"]["train_prompts"] == 1000 and payload["full_table"]["seeds"] == 3
