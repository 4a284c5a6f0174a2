"""Tests for the LM backbone: chat prompts, batched prompt-shared scoring, trie decoding, the GGUF cache,
S-DPO answer parsing.  Everything runs on tiny models built locally (GPT-2 and a GGUF Llama)."""
import copy
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from fcpo.llm import (  # noqa: E402
    CHAT_TEMPLATE,
    TINY_CHAT_TEMPLATE,
    PromptTemplate,
    TextPolicy,
    TokenTrie,
    batched_continuation_log_probs,
    build_tiny_lm,
    load_causal_lm,
    parse_answers,
    render_prompt,
    trie_greedy_decode,
)
from fcpo.llm import cache as lm_cache  # noqa: E402
from fcpo.llm.scoring import packed_continuation_log_probs  # noqa: E402
from fcpo.policies.base import SlateState  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TITLES = ["Toy Story (1995)", "Heat (1995)", "Casino (1995)", "Sabrina (1995)", "GoldenEye (1995)",
          "Balto (1995)", "Nixon (1995)", "Cutthroat Island (1995)", "Sense and Sensibility (1995)",
          "Four Rooms (1995)", "Get Shorty (1995)", "Copycat (1995)", "Assassins (1995)", "Powder (1995)",
          "Othello (1995)", "Now and Then (1995)", "Persuasion (1995)", "Carrington (1995)", "Dead Man Walking (1995)",
          "Across the Sea of Time (1995)", "It Takes Two (1995)", "Clueless (1995)"]
WORDS = [PromptTemplate().build(["x"], ["y"]), CHAT_TEMPLATE.question_text(["x"], ["y"]), "user assistant"]


@pytest.fixture(scope="module")
def tiny():
    return build_tiny_lm(TITLES, WORDS, vocab_size=500, seed=0)


@pytest.fixture(scope="module")
def chat_tok(tiny):
    tok = copy.deepcopy(tiny[1])
    tok.chat_template = TINY_CHAT_TEMPLATE
    return tok


@pytest.fixture(scope="module")
def gguf_file(tmp_path_factory):
    pytest.importorskip("gguf")
    from fcpo.llm import write_tiny_gguf

    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny-llama.gguf", TITLES, WORDS)


def _state(histories):
    L = max(len(h) for h in histories)
    hist = torch.full((len(histories), L), -1, dtype=torch.long)
    for b, h in enumerate(histories):
        hist[b, :len(h)] = torch.as_tensor(h)
    return SlateState(torch.zeros(len(histories), 0), hist, torch.tensor([len(h) for h in histories]))


def _manual_log_prob(model, prompt_ids, cont_ids):
    """Reference: one unpadded, uncached sequence per candidate."""
    ids = torch.tensor([list(prompt_ids) + list(cont_ids)])
    with torch.no_grad():
        logp = model(input_ids=ids).logits.log_softmax(-1)[0]
    P = len(prompt_ids)
    return sum(float(logp[P - 1 + t, c]) for t, c in enumerate(cont_ids))


# ------------------------------------------------------------------ prompts
def test_chat_template_prompt_is_a_user_turn_and_answers_drop_the_leading_space(tiny, chat_tok):
    model, plain_tok = tiny
    pol = TextPolicy(model, chat_tok, TITLES)
    assert pol.chat and pol.template == CHAT_TEMPLATE
    text = pol.prompt([0, 1], [2, 3])
    assert text == ('<s>user: This user has watched the following movies, in order: "Toy Story (1995)", '
                    '"Heat (1995)". Which movie will the user watch next? Choose exactly one of these candidate '
                    'movies: "Casino (1995)", "Sabrina (1995)". Answer with the title only.\n<s>assistant:')
    ids = pol._prompt_ids(text)
    assert ids.count(chat_tok.bos_token_id) == 2  # the template's two <s>, none added on top
    assert pol.answer_ids[1] == chat_tok("Heat (1995)", add_special_tokens=False)["input_ids"] + [chat_tok.eos_token_id]
    # the same tokenizer without chat: the plain S-DPO prompt and " " + title answers
    plain = TextPolicy(model, chat_tok, TITLES, chat=False)
    assert plain.prompt([0], None) == 'The user watched: "Toy Story (1995)". Which movie will the user choose next? Answer:'
    assert plain.answer_ids[1][:-1] == chat_tok(" Heat (1995)", add_special_tokens=False)["input_ids"]
    # a model without a chat template falls back to the plain prompt; forcing chat is an error
    assert not TextPolicy(model, plain_tok, TITLES).chat
    assert render_prompt(plain_tok, "Q?") == "Q?"
    with pytest.raises(ValueError, match="chat_template"):
        TextPolicy(model, plain_tok, TITLES, chat=True)
    # an explicit template in chat mode: its question, no " Answer:" cue
    custom = TextPolicy(model, chat_tok, TITLES, PromptTemplate())
    assert custom.prompt([0]) == ('<s>user: The user watched: "Toy Story (1995)". Which movie will the user '
                                  'choose next?\n<s>assistant:')
    with_system = TextPolicy(model, chat_tok, TITLES, system="Be brief.")
    assert with_system.prompt([0]).startswith("<s>system: Be brief.\n<s>user: ")


def test_parse_answers_follows_the_sdpo_rule():
    cands = [["Heat (1995)", "Casino (1995)"]] * 5
    texts = ['"Heat (1995)"', "Casino (1995) or Heat (1995)", "heat (1995)", "", "I pick Casino (1995)."]
    parsed = parse_answers(texts, cands, ["Heat (1995)", "Heat (1995)", "Heat (1995)", "Casino (1995)",
                                          "Casino (1995)"])
    assert parsed.choice.tolist() == [0, -1, -1, -1, 1]
    assert parsed.valid.tolist() == [True, False, False, False, True]
    assert parsed.hit.tolist() == [True, False, False, False, True]
    assert parsed.valid_ratio == pytest.approx(0.4) and parsed.hr1 == pytest.approx(0.4)
    assert not parse_answers(["Heat (1995)"], [["Heat (1995)", "Casino (1995)"]]).hit.any()
    with pytest.raises(ValueError, match="targets"):
        parse_answers(["a"], [["a"]], ["a", "b"])


# ------------------------------------------------------------------ batched scoring
@pytest.mark.parametrize("chat,scoring", [(False, "packed"), (True, "packed"), (False, "cache"), (True, "cache")])
def test_batched_scoring_equals_per_candidate_scoring(tiny, chat_tok, chat, scoring):
    model, tok = tiny
    pol = TextPolicy(model, chat_tok if chat else tok, TITLES, score_batch_size=3, scoring=scoring)
    assert TextPolicy(model, tok, TITLES).scoring == "packed"  # GPT-2 with SDPA takes 4-D masks
    rng = np.random.default_rng(0)
    histories = [rng.choice(len(TITLES), size=n, replace=False).tolist() for n in (1, 4, 2, 7, 3)]
    cands = torch.as_tensor(np.stack([rng.permutation(len(TITLES))[:20] for _ in histories]))
    state = _state(histories)
    with torch.no_grad():
        batched = pol.item_log_probs(state, cands, cands)
    prompts = pol.prompts(state, cands)
    ref = torch.tensor([[_manual_log_prob(model, pol._prompt_ids(p), pol.answer_ids[int(i)]) for i in row]
                        for p, row in zip(prompts, cands)])
    assert batched.shape == (5, 20)
    torch.testing.assert_close(batched, ref, rtol=0, atol=1e-5)
    with torch.no_grad():
        normed = pol.item_log_probs(state, cands[:, [4, 0]], cands, normalize=True)
    torch.testing.assert_close(normed, (ref - ref.logsumexp(1, keepdim=True))[:, [4, 0]], rtol=0, atol=1e-5)


def test_batched_scoring_gradients_match_the_per_prompt_path(tiny):
    model, tok = tiny
    prompts = [tok("The user watched: Heat")["input_ids"], tok("Casino")["input_ids"]]
    conts = [[tok(" Toy Story (1995)")["input_ids"] + [tok.eos_token_id], [tok.eos_token_id]]] * 2
    grads = []
    for batched in (batched_continuation_log_probs, packed_continuation_log_probs, None):
        m = copy.deepcopy(model)
        if batched is not None:
            lp = batched(m, prompts, conts, tok.pad_token_id)
        else:
            lp = torch.stack([torch.stack([  # one unpadded, uncached pass per prompt + continuation
                m(input_ids=torch.tensor([p + c])).logits.log_softmax(-1)[0, len(p) - 1:-1]
                .gather(1, torch.tensor(c)[:, None]).sum() for c in cs]) for p, cs in zip(prompts, conts)])
        lp.sum().backward()
        grads.append(m.transformer.wte.weight.grad.clone())
    assert grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[0], grads[2], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grads[1], grads[2], rtol=1e-4, atol=1e-5)


def test_batched_scoring_on_a_rotary_llama_from_gguf(gguf_file, tmp_path):
    model, tok = load_causal_lm(str(gguf_file), cache_dir=tmp_path)
    prompts = [tok("The user watched: Heat (1995)")["input_ids"], tok("Casino")["input_ids"]]
    conts = [[tok(" " + t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for t in TITLES[:6]]] * 2
    ref = torch.tensor([[_manual_log_prob(model, p, c) for c in cs] for p, cs in zip(prompts, conts)])
    for impl in ("sdpa", "eager"):
        model.config._attn_implementation = impl
        with torch.no_grad():
            for score in (batched_continuation_log_probs, packed_continuation_log_probs):
                torch.testing.assert_close(score(model, prompts, conts, tok.pad_token_id), ref, rtol=0, atol=1e-5)


def test_batched_scoring_rejects_ragged_candidate_lists(tiny):
    model, _ = tiny
    for score in (batched_continuation_log_probs, packed_continuation_log_probs):
        with pytest.raises(ValueError, match="same number"):
            score(model, [[1], [2]], [[[3]], [[3], [4]]])
    with pytest.raises(ValueError, match="scoring"):
        TextPolicy(model, tiny[1], TITLES, scoring="fast")


# ------------------------------------------------------------------ trie
@st.composite
def _prefix_free_sets(draw):
    n = draw(st.integers(1, 8))
    seqs = [draw(st.lists(st.integers(3, 12), min_size=0, max_size=5)) + [1] for _ in range(n)]  # 1 = eos
    return seqs


@settings(max_examples=60, deadline=None)
@given(_prefix_free_sets(), st.randoms(use_true_random=False))
def test_token_trie_walks_only_to_its_sequences(seqs, rnd):
    trie = TokenTrie(seqs)
    assert trie.allowed([]) == sorted({s[0] for s in seqs})
    for j, s in enumerate(seqs):
        assert trie.match(s) == seqs.index(s)  # duplicates map to the first
        assert trie.match(s[:-1]) is None
    prefix = []
    while trie.allowed(prefix):  # a random walk always ends on a member
        prefix.append(rnd.choice(trie.allowed(prefix)))
    assert prefix in seqs
    with pytest.raises(ValueError, match="prefix"):
        TokenTrie([[5, 6], [5, 6, 7]])


def _reference_trie_greedy(model, prompt, seqs):
    """Brute force: recompute the full sequence at every step, argmax over the allowed tokens."""
    trie, out = TokenTrie(seqs), []
    while trie.allowed(out):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([list(prompt) + out])).logits[0, -1]
        allowed = trie.allowed(out)
        out.append(allowed[int(logits[allowed].argmax())])
    return trie.match(out), out


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(st.integers(0, len(TITLES) - 1), min_size=2, max_size=8, unique=True), min_size=1,
                max_size=3), st.integers(0, 3))
def test_trie_decoding_emits_only_candidate_titles(tiny, rows, seed):
    model, tok = tiny
    pol = TextPolicy(model, tok, TITLES, gen_batch_size=2)
    width = min(len(r) for r in rows)
    cands = torch.as_tensor([r[:width] for r in rows])
    state = _state([[(seed + b) % len(TITLES)] * (1 + b) for b in range(len(rows))])
    texts = pol.generate(state, cands, constrained=True)
    assert all(t in [TITLES[i] for i in row] for t, row in zip(texts, cands.tolist()))
    assert parse_answers(texts, [[TITLES[i] for i in r] for r in cands.tolist()]).valid.all()  # no title contains another
    prompts = [pol._prompt_ids(p) for p in pol.prompts(state, cands)]
    seqs = [[pol.answer_ids[i] for i in row] for row in cands.tolist()]
    idx, gen = trie_greedy_decode(model, prompts, seqs, tok.pad_token_id)
    for b in range(len(rows)):
        assert (idx[b], gen[b]) == _reference_trie_greedy(model, prompts[b], seqs[b])
        assert texts[b] == TITLES[int(cands[b, idx[b]])]


# ------------------------------------------------------------------ GGUF cache
def test_gguf_conversion_is_cached_and_reused(gguf_file, tmp_path):
    before = lm_cache.CONVERSIONS.get(str(gguf_file), 0)
    model, tok = load_causal_lm(str(gguf_file), cache_dir=tmp_path)
    folders = [p for p in tmp_path.iterdir()]
    assert len(folders) == 1 and (folders[0] / "model.safetensors").is_file()
    assert folders[0].name.endswith(lm_cache.file_sha256(gguf_file)[:16])
    mtime = (folders[0] / "model.safetensors").stat().st_mtime_ns
    again, tok2 = load_causal_lm(str(gguf_file), cache_dir=tmp_path)
    assert lm_cache.CONVERSIONS[str(gguf_file)] == before + 1  # the second load did not convert
    assert (folders[0] / "model.safetensors").stat().st_mtime_ns == mtime
    assert tok.chat_template == tok2.chat_template == TINY_CHAT_TEMPLATE  # kept from the GGUF metadata
    direct, _ = load_causal_lm(str(gguf_file), cache=False)
    ids = torch.tensor([tok("Heat (1995)")["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(again(input_ids=ids).logits, direct(input_ids=ids).logits)
    assert lm_cache.CONVERSIONS[str(gguf_file)] == before + 1
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_concurrent_conversions_publish_one_complete_folder(tmp_path):
    source = tmp_path / "weights.bin"
    source.write_bytes(b"stand-in weights")
    barrier = threading.Barrier(2)

    def convert(src, dest):
        barrier.wait(timeout=10)  # both threads convert at the same time
        (dest / "data.txt").write_text(src.read_text() + f" by {threading.get_ident()}")

    out, cache_dir = [], tmp_path / "cache"
    threads = [threading.Thread(target=lambda: out.append(lm_cache.cached_conversion(source, convert, cache_dir)))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(out) == 2 and out[0] == out[1]
    assert sorted(p.name for p in cache_dir.iterdir()) == [out[0].name]  # the loser's copy is gone
    assert (out[0] / "data.txt").read_text().startswith("stand-in weights by ")
    calls = []
    assert lm_cache.cached_conversion(source, lambda s, d: calls.append(1), cache_dir) == out[0] and not calls
    source.write_bytes(b"changed weights")  # new content -> new key
    assert lm_cache.cached_conversion(source, lambda s, d: calls.append(1), cache_dir) != out[0] and calls == [1]
    with pytest.raises(FileNotFoundError):
        lm_cache.cached_conversion(tmp_path / "missing.gguf", convert, cache_dir)


# ------------------------------------------------------------------ devices, LoRA
def test_device_argument_and_gpu_check_script(tiny):
    model, tok = tiny
    pol = TextPolicy(copy.deepcopy(model), tok, TITLES, device="cpu")
    assert pol.device.type == "cpu"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.run([sys.executable, str(REPO / "benchmarks" / "lm_gpu_check.py"), "--device", "cuda"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    if not torch.cuda.is_available():
        assert "no CUDA device: skipped" in run.stdout


@pytest.mark.filterwarnings("ignore:fan_in_fan_out")
def test_default_lora_rank_trains_a_small_share(tiny):
    pytest.importorskip("peft")
    from fcpo.llm import LORA_RANK, apply_lora, trainable_parameters

    model, _ = tiny
    lora = apply_lora(copy.deepcopy(model))
    trainable, total = trainable_parameters(lora)
    assert LORA_RANK == 8 and 0 < trainable < 0.2 * total
    assert all("lora_" in n for n, p in lora.named_parameters() if p.requires_grad)
