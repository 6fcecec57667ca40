"""Constrained decoding: the SID trie, the logits processor, the fast beam search and sampling,
each checked against a plain reference (brute-force prefix sets, exhaustive scoring of every
valid completion, HF generate with the processor)."""

import pytest
import torch

import data
import decoding
from convert_gguf import smollm2_gguf_path
from decoding import constrained_sample, sid_beam_search
from decoding_reference import exhaustive_beam_search, hf_beam_search, score_completions
from LogitProcessor import ConstrainedLogitsProcessor, explicit_generation_config
from sid_trie import ConstrainedDecodingError, SidTrie
from tests import tiny


def variable_depth_catalogue():
    """12 items of 3 levels plus collision-level SIDs: one is a token prefix of another."""
    index, _ = tiny.make_catalogue(12)
    index["12"] = index["0"] + ["<d_1>"]
    index["13"] = index["5"] + ["<d_0>"]
    index["14"] = index["5"] + ["<d_2>"]
    del index["5"]
    return index


FIXED_INDEX = tiny.make_catalogue(12)[0]
VARIABLE_INDEX = variable_depth_catalogue()
BOTH_INDEXES = {**FIXED_INDEX, **{f"v{k}": v for k, v in VARIABLE_INDEX.items()}}  # every SID token


@pytest.fixture(scope="module")
def smollm2_base():
    try:
        gguf = smollm2_gguf_path()
    except FileNotFoundError as err:
        pytest.skip(f"SmolLM2 GGUF tokenizer unavailable: {err}")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)


@pytest.fixture(scope="module")
def smollm2_tokenizer(smollm2_base):
    import copy

    tok = copy.deepcopy(smollm2_base)
    return tiny.with_sids(tok, BOTH_INDEXES)


def tokenizer_of(kind, request):
    if kind == "smollm2":
        return request.getfixturevalue("smollm2_tokenizer")
    return tiny.with_sids(tiny.make_tokenizer(kind), BOTH_INDEXES)


FAMILIES = ["gpt2_bpe", "sentencepiece_bos", "smollm2"]


def _prompts(tok, n=3):
    texts = ["Which item comes next?", "The user has interacted with the following items in chronological order: "
             "<a_0><b_1><c_2>, <a_0><b_2><c_0>. Can you predict the next possible item the user may expect?",
             "x", "paper pen office blue"]
    return [tok(data.build_prompt("Recommend the next item.", t))["input_ids"] for t in texts[:n]]


def _brute_allowed(completions, eos, prefix):
    if eos in prefix:
        return {eos}
    t = len(prefix)
    return {c[t] for c in completions if len(c) > t and c[:t] == prefix}


def _assert_same_ranking(a, b, atol=1e-4):
    """Same SIDs in the same order, except that near-equal scores may swap."""
    assert torch.allclose(a.scores, b.scores, atol=atol), (a.scores - b.scores).abs().max()
    for row_a, row_b, scores in zip(a.sids, b.sids, a.scores):
        if row_a != row_b:
            for x, y, s in zip(row_a, row_b, scores.tolist()):
                if x != y:
                    assert any(abs(s - t) < atol for t in scores.tolist() if t != s), (row_a, row_b)


# ---------------------------------------------------------------------------------------------
# the trie, for three tokenizer families


@pytest.mark.parametrize("kind", FAMILIES)
@pytest.mark.parametrize("index", [FIXED_INDEX, VARIABLE_INDEX], ids=["fixed", "variable"])
def test_trie_matches_tokenizer_and_brute_force(kind, index, request):
    tok = tokenizer_of(kind, request)
    trie = SidTrie.from_index(index, tok)
    eos = tok.eos_token_id
    assert trie.sids == [data.sid_string(index[i]) for i in index]
    expected = [tok(data.build_response(s), add_special_tokens=False)["input_ids"] + [eos] for s in trie.sids]
    for i, ids in enumerate(expected):
        assert trie.completion_ids[i, : len(ids)].tolist() == ids
        assert (trie.completion_ids[i, len(ids):] == eos).all()
        assert int(trie.lengths[i]) == len(ids)
        # SID level tokens are single tokens, then "\n", then EOS
        assert len(ids) == len(index[list(index)[i]]) + 2
    # every prefix of every completion, corrupted prefixes and finished ones, in one call per length
    g = torch.Generator().manual_seed(0)
    for t in range(trie.depth + 2):
        prefixes = [c[:t] for c in expected if len(c) >= t]
        if t > 0:
            corrupt = [list(p) for p in prefixes[:4]]
            for p in corrupt:
                p[int(torch.randint(0, t, (1,), generator=g))] = int(torch.randint(0, len(tok), (1,), generator=g))
            prefixes += corrupt
            prefixes += [c + [tok.pad_token_id] * (t - len(c)) for c in expected if len(c) < t]  # finished + padding
        if not prefixes:
            continue
        mask = trie.allowed_mask(torch.tensor(prefixes, dtype=torch.long).view(len(prefixes), t), vocab_size=len(tok))
        for row, prefix in zip(mask, prefixes):
            assert set(row.nonzero().flatten().tolist()) == _brute_allowed(expected, eos, prefix), prefix


def test_trie_from_files_and_collisions(tmp_path):
    paths = tiny.write_dataset(tmp_path / "d")
    tok = tiny.tokenizer_with_sids("gpt2_bpe", data.read_index(paths["index"]))
    a = SidTrie.from_info_file(paths["info"], tok)
    b = SidTrie.from_index(data.read_index(paths["index"]), tok)
    assert a.sids == b.sids and torch.equal(a.completion_ids, b.completion_ids)
    assert a.item_ids[3] == ["3"]
    # colliding SIDs (upstream files) load as one valid completion listing both items
    c = SidTrie.from_sids(["<a_0><b_0><c_1>", "<a_0><b_0><c_2>", "<a_0><b_0><c_1>"], tok, item_ids=["7", "8", "9"])
    assert c.sids == ["<a_0><b_0><c_1>", "<a_0><b_0><c_2>"] and c.item_ids == [["7", "9"], ["8"]]


def test_trie_rejects_missing_sid_tokens():
    tok = tiny.make_tokenizer("gpt2_bpe")  # no SID tokens added
    with pytest.raises(ValueError, match="SID tokens"):
        SidTrie.from_index(FIXED_INDEX, tok)
    with pytest.raises(ValueError, match="not a SID"):
        SidTrie.from_sids(["no brackets"], tiny.tokenizer_with_sids("gpt2_bpe", FIXED_INDEX))


# ---------------------------------------------------------------------------------------------
# the processor inside HF generate


def test_processor_raises_on_a_dead_end_and_is_stateless():
    tok = tiny.tokenizer_with_sids("gpt2_bpe", FIXED_INDEX)
    trie = SidTrie.from_index(FIXED_INDEX, tok)
    proc = ConstrainedLogitsProcessor(trie, prompt_length=4, tokenizer=tok)
    scores = torch.zeros(2, len(tok))
    ok = torch.tensor([[5, 6, 7, 8] + trie.completion_ids[0, :2].tolist()] * 2)
    out1 = proc(ok, scores.clone())
    out2 = proc(ok, scores.clone())  # no hidden step counter: same input, same output
    assert torch.equal(out1, out2)
    same_prefix = (trie.completion_ids[:, :2] == trie.completion_ids[0, :2]).all(1)
    assert set(torch.isfinite(out1[0]).nonzero().flatten().tolist()) == set(trie.completion_ids[same_prefix, 2].tolist())
    bad = ok.clone()
    bad[1, 4] = tok.convert_tokens_to_ids("<c_3>")  # a level-c token where level a is expected
    with pytest.raises(ConstrainedDecodingError, match="<c_3>"):
        proc(bad, scores.clone())
    # beam search: dead filler beams are masked, a call with no live row at all raises
    beams = ConstrainedLogitsProcessor(trie, prompt_length=4, num_beams=2)
    masked = beams(bad, scores.clone())
    assert torch.isinf(masked[1]).all() and torch.isfinite(masked[0]).any()
    with pytest.raises(ConstrainedDecodingError):
        beams(bad[[1, 1]], scores.clone())


def test_hf_generate_sampling_and_greedy_with_processor():
    tok = tiny.tokenizer_with_sids("sentencepiece_bos", FIXED_INDEX)
    model = tiny.make_model(tok)
    trie = SidTrie.from_index(FIXED_INDEX, tok)
    prompts = _prompts(tok)
    width = max(map(len, prompts))
    ids = torch.tensor([[tok.pad_token_id] * (width - len(p)) + p for p in prompts])
    attn = (torch.arange(width)[None, :] >= torch.tensor([width - len(p) for p in prompts])[:, None]).long()
    proc = ConstrainedLogitsProcessor(trie, width, tokenizer=tok)
    torch.manual_seed(0)
    config = explicit_generation_config(do_sample=True, num_return_sequences=4, max_new_tokens=trie.depth + 2,
                                        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    out = model.generate(input_ids=ids, attention_mask=attn, generation_config=config, logits_processor=[proc])
    completions = {tuple(trie.completion_ids[i].tolist()) for i in range(len(trie))}
    for row in out[:, width:].tolist():
        row = row[: row.index(tok.eos_token_id) + 1]
        assert tuple(row) in completions, tok.convert_ids_to_tokens(row)
    # greedy HF == fast search with one beam
    greedy = hf_beam_search(model, trie, prompts, 1, tok.pad_token_id)
    _assert_same_ranking(greedy, sid_beam_search(model, trie, prompts, 1, tok.pad_token_id))


# ---------------------------------------------------------------------------------------------
# the fast beam search against the references


@pytest.mark.parametrize("kind,arch,index", [
    ("gpt2_bpe", "qwen2", FIXED_INDEX), ("sentencepiece_bos", "llama", VARIABLE_INDEX), ("smollm2", "llama", VARIABLE_INDEX),
], ids=["gpt2-qwen2-fixed", "bos-llama-variable", "smollm2-llama-variable"])
def test_beam_search_equals_exact_ranking(kind, arch, index, request):
    tok = tokenizer_of(kind, request)
    model = tiny.make_model(tok, arch=arch, seed=1)
    trie = SidTrie.from_index(index, tok)
    prompts = _prompts(tok, 4)
    exact = exhaustive_beam_search(model, trie, prompts, len(trie))
    fast = sid_beam_search(model, trie, prompts, num_beams=len(trie) + 5, pad_token_id=tok.pad_token_id, batch_size=3)
    assert fast.scores.shape == (4, len(trie))  # more beams than items: every item, once
    _assert_same_ranking(fast, exact)
    for row in fast.sids:
        assert sorted(row) == sorted(trie.sids)
    # the returned token ids are the items' completions, their scores the teacher-forced sums
    assert torch.equal(fast.completion_ids, trie.completion_ids[fast.item_index])
    assert torch.equal(fast.completion_mask.sum(-1), trie.lengths[fast.item_index])
    assert torch.allclose(fast.scores, score_completions(model, trie, prompts).gather(1, fast.item_index), atol=1e-4)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_tree_attention_equals_expanded_cache(monkeypatch, attn):
    """Beams side by side in one cache row per prompt (4D mask) == one cache row per beam."""
    tok = tiny.tokenizer_with_sids("sentencepiece_bos", VARIABLE_INDEX)
    trie = SidTrie.from_index(VARIABLE_INDEX, tok)
    prompts = _prompts(tok, 4)
    model = tiny.make_model(tok, arch="llama", seed=8)
    model.set_attn_implementation(attn)
    assert decoding.Decoder(model, prompts[:1], tok.pad_token_id).tree
    tree = sid_beam_search(model, trie, prompts, 5, tok.pad_token_id, batch_size=3)
    drawn = constrained_sample(model, trie, prompts, 4, 1.0, tok.pad_token_id, generator=torch.Generator().manual_seed(2))
    monkeypatch.setattr(decoding, "TREE_ATTENTION", False)
    assert not decoding.Decoder(model, prompts[:1], tok.pad_token_id).tree
    _assert_same_ranking(sid_beam_search(model, trie, prompts, 5, tok.pad_token_id, batch_size=3), tree)
    again = constrained_sample(model, trie, prompts, 4, 1.0, tok.pad_token_id, generator=torch.Generator().manual_seed(2))
    assert again.sids == drawn.sids and torch.allclose(again.scores, drawn.scores, atol=1e-4)
    _assert_same_ranking(hf_beam_search(model, trie, prompts, 5, tok.pad_token_id, batch_size=4), tree)


@pytest.mark.parametrize("arch,attn,tree", [("llama", "sdpa", True), ("qwen2", "eager", True), ("llama", "sdpa", False)],
                         ids=["llama-sdpa-tree", "qwen2-eager-tree", "llama-expanded"])
def test_shared_prefix_equals_whole_prompts(monkeypatch, arch, attn, tree):
    """The prompts' common prefix encoded once per call (then copied per batch) gives the scores
    and rankings of encoding every whole prompt, for beam search and sampling."""
    tok = tiny.tokenizer_with_sids("sentencepiece_bos", VARIABLE_INDEX)
    trie = SidTrie.from_index(VARIABLE_INDEX, tok)
    prompts = _prompts(tok, 4)
    model = tiny.make_model(tok, arch=arch, seed=4)
    model.set_attn_implementation(attn)
    monkeypatch.setattr(decoding, "TREE_ATTENTION", tree)
    prefix = decoding.SharedPrefix.of(model, prompts)
    common = 0
    while all(p[common] == prompts[0][common] for p in prompts):
        common += 1
    assert prefix is not None and prefix.length == common >= decoding.MIN_SHARED_PREFIX
    one = decoding.SharedPrefix.of(model, prompts[:1])  # a single prompt keeps its last token to encode
    assert one.length == len(prompts[0]) - 1

    def run():
        beams = sid_beam_search(model, trie, prompts, 6, tok.pad_token_id, batch_size=3)
        drawn = constrained_sample(model, trie, prompts, 4, 1.0, tok.pad_token_id, batch_size=3,
                                   generator=torch.Generator().manual_seed(3))
        return beams, drawn

    shared_beams, shared_drawn = run()
    monkeypatch.setattr(decoding, "SHARE_PREFIX", False)
    assert decoding.SharedPrefix.of(model, prompts) is None
    whole_beams, whole_drawn = run()
    _assert_same_ranking(shared_beams, whole_beams, atol=1e-5)
    assert shared_drawn.sids == whole_drawn.sids
    assert torch.allclose(shared_drawn.scores, whole_drawn.scores, atol=1e-5)
    assert torch.allclose(shared_beams.scores, score_completions(model, trie, prompts).gather(1, shared_beams.item_index),
                          atol=1e-4)


def test_chunked_head_path_equals_full_forward(monkeypatch):
    """The fast path projects final hidden states onto the vocabulary in chunks when the model's
    logits are exactly head(base(...)); the plain full-forward path gives the same answers."""
    tok = tiny.tokenizer_with_sids("gpt2_bpe", VARIABLE_INDEX)
    trie = SidTrie.from_index(VARIABLE_INDEX, tok)
    prompts = _prompts(tok, 3)
    for arch in ("qwen2", "llama"):
        model = tiny.make_model(tok, arch=arch, seed=6)
        assert decoding.split_head(model, prompts[0]) is not None
        chunked = sid_beam_search(model, trie, prompts, 6, tok.pad_token_id, batch_size=2)
        sampled = constrained_sample(model, trie, prompts, 5, 1.0, tok.pad_token_id,
                                     generator=torch.Generator().manual_seed(1))
        with monkeypatch.context() as m:
            m.setattr(decoding, "HEAD_CHUNK_BYTES", 4 * len(tok) * 3)  # 3 rows per chunk
            _assert_same_ranking(sid_beam_search(model, trie, prompts, 6, tok.pad_token_id, batch_size=2), chunked)
            m.setattr(decoding, "split_head", lambda model, probe: None)
            _assert_same_ranking(sid_beam_search(model, trie, prompts, 6, tok.pad_token_id, batch_size=2), chunked)
            again = constrained_sample(model, trie, prompts, 5, 1.0, tok.pad_token_id,
                                       generator=torch.Generator().manual_seed(1))
            assert again.sids == sampled.sids and torch.allclose(again.scores, sampled.scores, atol=1e-4)


def test_head_split_is_probed_once_per_model():
    """split_head runs its probe (the model twice) only the first time it sees a model; a model
    whose logits are not head(base(...)) (here: scaled by 2) stays on the full forward."""
    tok = tiny.tokenizer_with_sids("gpt2_bpe", VARIABLE_INDEX)
    prompt = _prompts(tok, 1)[0]
    for scale in (1.0, 2.0):
        model = tiny.make_model(tok, arch="llama", seed=6)
        if scale != 1.0:
            forward = model.forward

            def scaled(*args, forward=forward, **kwargs):
                out = forward(*args, **kwargs)
                out.logits = out.logits * scale
                return out

            model.forward = scaled
        base_calls = []
        model.model.register_forward_hook(lambda *args: base_calls.append(1))
        for _ in range(3):
            split = decoding.split_head(model, prompt)
            assert (split is not None) == (scale == 1.0)
            assert len(base_calls) == 2  # the probe's full forward and base-only forward, once
        if split is not None:
            assert split == (model.model, model.lm_head)


@pytest.mark.parametrize("index,num_beams", [(FIXED_INDEX, 3), (VARIABLE_INDEX, 6)], ids=["fixed-3", "variable-6"])
def test_beam_search_agrees_with_hf_constrained_beam_search(index, num_beams):
    tok = tiny.tokenizer_with_sids("gpt2_bpe", index)
    model = tiny.make_model(tok, arch="llama", seed=2)
    trie = SidTrie.from_index(index, tok)
    prompts = _prompts(tok, 4)
    hf = hf_beam_search(model, trie, prompts, num_beams, tok.pad_token_id, batch_size=2, tokenizer=tok)
    fast = sid_beam_search(model, trie, prompts, num_beams, tok.pad_token_id, batch_size=2)
    assert fast.scores.shape == (4, num_beams)
    _assert_same_ranking(fast, hf)


def test_checkpoint_generation_config_is_not_inherited():
    """An Instruct checkpoint's sampling filters (top_k=20, top_p=0.8) must not cut the beams."""
    from transformers import GenerationConfig

    tok = tiny.tokenizer_with_sids("gpt2_bpe", FIXED_INDEX)
    model = tiny.make_model(tok)
    model.generation_config = GenerationConfig(do_sample=True, top_k=2, top_p=0.1, temperature=0.2,
                                               repetition_penalty=1.5, eos_token_id=tok.eos_token_id)
    trie = SidTrie.from_index(FIXED_INDEX, tok)
    prompts = _prompts(tok, 2)
    hf = hf_beam_search(model, trie, prompts, len(trie), tok.pad_token_id)
    assert model.generation_config.top_k == 2  # restored afterwards
    _assert_same_ranking(hf, exhaustive_beam_search(model, trie, prompts, len(trie)))


def _train_tiny(tok, trie, steps=60):
    """A few optimiser steps on short "history -> next SID" sequences: non-random weights that
    put their mass on the SID format (the rule itself needs longer training)."""
    sids = trie.sids
    n = len(sids)
    prompts = [tok("history: " + "".join(sids[(i - k) % n] for k in (2, 1, 0)) + " next:")["input_ids"]
               for i in range(n)]
    completions = [trie.completion_ids[(i + 1) % n].tolist() for i in range(n)]
    ids = torch.tensor([p + c for p, c in zip(prompts, completions)])
    labels = torch.tensor([[-100] * len(p) + c for p, c in zip(prompts, completions)])
    model = tiny.make_model(tok, hidden=48, seed=3)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    losses = []
    for _ in range(steps):
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    model.eval()
    assert losses[-1] < losses[0] / 4
    return model, prompts


def test_trained_model_returns_valid_distinct_items():
    tok = tiny.tokenizer_with_sids("gpt2_bpe", FIXED_INDEX)
    trie = SidTrie.from_index(FIXED_INDEX, tok)
    model, prompts = _train_tiny(tok, trie)
    fast = sid_beam_search(model, trie, prompts, 8, tok.pad_token_id, batch_size=4)
    for row in fast.sids:
        assert len(row) == 8 == len(set(row)) and set(row) <= set(trie.sids)
    assert (fast.scores[:, :-1] >= fast.scores[:, 1:] - 1e-6).all()  # best first
    _assert_same_ranking(fast, hf_beam_search(model, trie, prompts, 8, tok.pad_token_id, batch_size=6))
    # trained weights put their mass on valid answers (a random model: about exp(-30) each)
    assert float(fast.scores.exp().sum(1).min()) > 0.1


# ---------------------------------------------------------------------------------------------
# sampling


def _exact_sampling_distribution(model, trie, prompt, temperature):
    """Probability of each item under step-wise sampling restricted to the allowed tokens."""
    probs = []
    for i in range(len(trie)):
        comp = trie.completion_ids[i, : int(trie.lengths[i])]
        ids = torch.tensor([prompt + comp.tolist()])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
        p = 1.0
        for t in range(len(comp)):
            allowed = trie.allowed_mask(comp[:t][None], vocab_size=logp.shape[-1])[0]
            step = logp[len(prompt) + t - 1].masked_fill(~allowed, float("-inf")) / temperature
            p *= float(torch.softmax(step, -1)[comp[t]])
        probs.append(p)
    return torch.tensor(probs)


def test_constrained_sampling_is_valid_and_follows_the_model():
    tok = tiny.tokenizer_with_sids("gpt2_bpe", VARIABLE_INDEX)
    model = tiny.make_model(tok, seed=4, hidden=48)
    trie = SidTrie.from_index(VARIABLE_INDEX, tok)
    prompts = _prompts(tok, 2)
    n = 2000
    res = constrained_sample(model, trie, prompts[:1], n, 0.7, tok.pad_token_id,
                             generator=torch.Generator().manual_seed(0))
    assert all(set(row) <= set(trie.sids) for row in res.sids)
    assert torch.equal(res.completion_ids, trie.completion_ids[res.item_index])
    # scores are the model's sequence log-probabilities of the drawn items
    exact_scores = score_completions(model, trie, prompts[:1])
    assert torch.allclose(res.scores, exact_scores.gather(1, res.item_index), atol=1e-4)
    freq = torch.bincount(res.item_index[0], minlength=len(trie)).float() / n
    expected = _exact_sampling_distribution(model, trie, prompts[0], 0.7)
    assert abs(float(expected.sum()) - 1) < 1e-4
    assert (freq - expected).abs().max() < 0.045, (freq, expected)  # about 4 standard errors
    # temperature 0 is greedy: the single best beam
    greedy = constrained_sample(model, trie, prompts, 2, 0.0, tok.pad_token_id)
    best = sid_beam_search(model, trie, prompts, 1, tok.pad_token_id)
    assert [row[0] for row in greedy.sids] == [row[0] for row in best.sids]


# ---------------------------------------------------------------------------------------------
# the real catalogue (development data)


def test_office_catalogue_with_smollm2_tokenizer(smollm2_base):
    office = tiny.SHARED_OFFICE
    if not (office / "info.txt").is_file():
        pytest.skip(f"{office} is absent (development data only)")
    import copy

    index = data.read_index(office / "index.json")
    tok = tiny.with_sids(copy.deepcopy(smollm2_base), index)
    trie = SidTrie.from_info_file(office / "info.txt", tok)
    assert len(trie) == len({s for s, _, _ in data.read_info(office / "info.txt")})
    assert trie.depth == 5  # three levels, "\n", EOS
    ds = data.EvalSidDataset(train_file=office / "test.csv", tokenizer=tok, max_len=2560, test=True,
                             category=data.category_phrase("Office_Products"))
    prompts = [ds[i]["input_ids"] for i in range(3)]
    model = tiny.make_model(tok, seed=5)
    hf = hf_beam_search(model, trie, prompts, 10, tok.pad_token_id, batch_size=3)
    fast = sid_beam_search(model, trie, prompts, 10, tok.pad_token_id, batch_size=3)
    _assert_same_ranking(fast, hf)
    assert all(len(set(row)) == 10 and set(row) <= set(trie.sids) for row in fast.sids)
