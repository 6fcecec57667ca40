"""Every reward type on rows of every RL task type: defined values, never an exception; the SASRec
reward with an original-style state dict (raw logits) and with our checkpoint (probabilities)."""

import math

import numpy as np
import pytest
import torch

import sasrec
from rewards import build_reward_funcs
from runtime import InputError
from tests import tiny
from tests.test_sasrec import OriginalSASRec

INDEX, META = tiny.make_catalogue(8)
SID = {int(i): "".join(tokens) for i, tokens in INDEX.items()}
TITLE = {int(i): META[i]["title"] for i in META}
G = 2

# one group of G completions per RL task type: (task, answer_type, target, target_sid, history, completions)
ROWS = [
    ("sid_history_to_sid", "sid", SID[3], SID[3], [0, 1, 2], [SID[3], SID[5]]),
    ("title_description_to_sid", "sid", SID[4], SID[4], [], [SID[6], SID[4]]),
    ("title_history_to_sid", "sid", SID[2], SID[2], [7, 1], [SID[1], SID[0]]),
    ("sid_to_title", "title", TITLE[5], SID[5], [], [TITLE[5], TITLE[6]]),
    ("sid_history_to_title", "title", TITLE[1], SID[1], [4, 0], [TITLE[2], TITLE[1]]),
]
HITS = [1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0]


def batch():
    """The keyword arguments TRL passes: one entry per completion (each row repeated G times)."""
    columns = {"completions": [], "target": [], "answer_type": [], "target_sid": [], "history_item_ids": [],
               "task": []}
    for task, answer_type, target, target_sid, history, completions in ROWS:
        for completion in completions:
            for key, value in zip(columns, (completion, target, answer_type, target_sid, history, task)):
                columns[key].append(value)
    return columns


def total_reward(funcs, **kwargs):
    return np.sum([f(**kwargs) for f in funcs], axis=0)


def test_rule_and_ranking_rewards_score_sid_and_title_answers_by_text():
    assert total_reward(build_reward_funcs("rule", G, INDEX, beam_search=True), **batch()).tolist() == HITS
    w = [1 / math.log2(2), 1 / math.log2(3)]
    w = [x / sum(w) for x in w]
    ranking_only = total_reward(build_reward_funcs("ranking_only", G, INDEX, beam_search=True), **batch())
    # groups with the target: the wrong one pays its position's weight; groups without: 0
    expected = [0.0, -w[1], -w[0], 0.0, 0.0, 0.0, 0.0, -w[1], -w[0], 0.0]
    np.testing.assert_allclose(ranking_only, expected, atol=1e-6)
    ranking = total_reward(build_reward_funcs("ranking", G, INDEX, beam_search=True), **batch())
    np.testing.assert_allclose(ranking, np.add(HITS, expected), atol=1e-6)


def test_semantic_reward_on_every_row_type(tmp_path):
    embeddings = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)
    np.save(tmp_path / "emb.npy", embeddings)
    got = total_reward(build_reward_funcs("semantic", G, INDEX, beam_search=False,
                                          ada_path=str(tmp_path / "emb.npy")), **batch())
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    expected = list(HITS)
    for row, (_, answer_type, _, target_sid, _, completions) in enumerate(ROWS):
        if answer_type == "sid":  # title answers keep the rule reward
            target_item = next(i for i, sid in SID.items() if sid == target_sid)
            for j, completion in enumerate(completions):
                item = next(i for i, sid in SID.items() if sid == completion)
                expected[row * G + j] = float(unit[item] @ unit[target_item])
    np.testing.assert_allclose(got, expected, atol=1e-5)


def _expected_sasrec(model, score):
    """SASRec scores of SID answers after a history; the rule reward elsewhere."""
    expected = list(HITS)
    for row, (_, answer_type, _, _, history, completions) in enumerate(ROWS):
        if answer_type != "sid" or not history:
            continue
        states, lengths = model.states_from_histories([history])
        scores = model.forward_eval(states, lengths)[0]
        if score == "prob":
            scores = scores.softmax(-1)
        for j, completion in enumerate(completions):
            expected[row * G + j] = scores[next(i for i, sid in SID.items() if sid == completion)].item()
    return expected


def test_sasrec_reward_with_an_original_state_dict_uses_raw_logits(tmp_path):
    torch.manual_seed(0)
    original = OriginalSASRec(hidden=32, item_num=8, state_size=10).eval()
    torch.save(original.state_dict(), tmp_path / "original.pth")
    funcs = build_reward_funcs("sasrec", G, INDEX, beam_search=True, cf_path=str(tmp_path / "original.pth"))
    got = total_reward(funcs, **batch())
    np.testing.assert_allclose(got, _expected_sasrec(sasrec.load_sasrec_checkpoint(tmp_path / "original.pth"),
                                                     "logit"), atol=1e-5)
    # the logit is the original module's own output for the same history
    states = torch.tensor([[0, 1, 2] + [8] * 7])
    assert got[0] == pytest.approx(original.forward_eval(states, torch.tensor([3]))[0, 3].item(), abs=1e-5)
    assert got[0] != HITS[0] and got[6:].tolist() == HITS[6:]  # title rows: rule reward


def test_sasrec_reward_probabilities_and_invalid_completions(tmp_path):
    torch.manual_seed(1)
    model = sasrec.SASRec(8, hidden_size=16, state_size=10).eval()
    sasrec.save_checkpoint(model, tmp_path / "ours.pt")
    funcs = build_reward_funcs("sasrec", G, INDEX, beam_search=True, cf_path=str(tmp_path / "ours.pt"),
                               sasrec_score="prob")
    got = total_reward(funcs, **batch())
    np.testing.assert_allclose(got, _expected_sasrec(model, "prob"), atol=1e-6)
    assert all(0 < got[i] < 1 for i in (0, 1, 4, 5))
    # a completion outside the catalogue scores the row's lowest probability, never an error
    invalid = dict(batch(), completions=["<a_9><b_9><c_9>"] + batch()["completions"][1:])
    states, lengths = model.states_from_histories([[0, 1, 2]])
    lowest = model.forward_eval(states, lengths).softmax(-1).min().item()
    assert total_reward(funcs, **invalid)[0] == pytest.approx(lowest, abs=1e-6)


def test_sasrec_pmi_reward_divides_out_the_training_prior(tmp_path):
    """pmi = log p_SASRec(item | history) - log (item's add-one-smoothed share of training targets)."""
    import data

    torch.manual_seed(2)
    model = sasrec.SASRec(8, hidden_size=16, state_size=10).eval()
    sasrec.save_checkpoint(model, tmp_path / "ours.pt")
    rows = tiny.synthetic_rows(INDEX, META, n_users=5, seq_len=4)  # 15 rows
    data.write_split_csv(rows, tmp_path / "train.csv")
    counts = np.ones(8)
    for row in rows:
        counts[row["item_id"]] += 1
    log_prior = np.log(counts / counts.sum())
    funcs = build_reward_funcs("sasrec", G, INDEX, beam_search=True, cf_path=str(tmp_path / "ours.pt"),
                               sasrec_score="pmi", train_file=str(tmp_path / "train.csv"))
    got = total_reward(funcs, **batch())
    expected = list(HITS)
    for row, (_, answer_type, _, _, history, completions) in enumerate(ROWS):
        if answer_type == "sid" and history:
            states, lengths = model.states_from_histories([history])
            logp = model.forward_eval(states, lengths)[0].log_softmax(-1).detach().numpy()
            for j, completion in enumerate(completions):
                item = next(i for i, sid in SID.items() if sid == completion)
                expected[row * G + j] = logp[item] - log_prior[item]
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # within a group (what the advantage sees) pmi is the logit difference minus the prior difference
    logit = total_reward(build_reward_funcs("sasrec", G, INDEX, beam_search=True, cf_path=str(tmp_path / "ours.pt")),
                         **batch())
    items = [next(i for i, sid in SID.items() if sid == c) for c in ROWS[0][5]]
    assert got[0] - got[1] == pytest.approx(logit[0] - logit[1] - (log_prior[items[0]] - log_prior[items[1]]),
                                            abs=1e-5)
    with pytest.raises(InputError, match="--sasrec_score pmi needs --train_file"):
        build_reward_funcs("sasrec", G, INDEX, beam_search=True, cf_path=str(tmp_path / "ours.pt"),
                           sasrec_score="pmi")


def test_sasrec_reward_input_errors(tmp_path):
    (tmp_path / "notes.txt").write_text("hello\n")
    with pytest.raises(InputError, match="--cf_path .*not a SASRec checkpoint"):
        build_reward_funcs("sasrec", G, INDEX, beam_search=True, cf_path=str(tmp_path / "notes.txt"))
    small = sasrec.SASRec(5, hidden_size=8, state_size=10)
    sasrec.save_checkpoint(small, tmp_path / "small.pt")
    with pytest.raises(InputError, match="knows 5 items"):
        build_reward_funcs("sasrec", G, INDEX, beam_search=True, cf_path=str(tmp_path / "small.pt"))
    with pytest.raises(InputError, match="--sasrec_score"):
        build_reward_funcs("sasrec", G, INDEX, beam_search=True, cf_path=str(tmp_path / "small.pt"),
                           sasrec_score="rank")


def test_semantic_reward_input_errors(tmp_path):
    import pickle

    (tmp_path / "emb.pkl").write_bytes(pickle.dumps(np.zeros((8, 4))))  # the original's pickled array
    np.save(tmp_path / "flat.npy", np.zeros(8))
    np.save(tmp_path / "short.npy", np.zeros((3, 4)))
    for name, message in [("emb.pkl", "not a .npy array"), ("flat.npy", "1-d array"), ("short.npy", "3 rows")]:
        with pytest.raises(InputError, match=message):
            build_reward_funcs("semantic", G, INDEX, beam_search=False, ada_path=str(tmp_path / name))
