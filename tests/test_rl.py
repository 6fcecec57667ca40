"""RL stage: rewards on hand-made groups, candidate selection, a policy that learns a rewarded item,
resume, clear errors, and two processes (torchrun, gloo) giving the single-process advantages."""

import math
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

import data
import rl
from decoding import constrained_sample, sid_beam_search
from decoding_reference import score_completions
from sid_trie import SidTrie
from minionerec_trainer import (ReReConfig, ReReTrainer, completion_logits, listwise_kl, rows_in_group_order,
                                select_candidates)
from runtime import InputError
from rewards import build_reward_funcs, make_ranking_reward, make_semantic_reward, ndcg_penalties, rule_reward
from tests import tiny

A, B, C, D = "<a_0><b_0><c_0>", "<a_0><b_0><c_1>", "<a_0><b_0><c_2>", "<a_0><b_0><c_3>"


# --- rewards ------------------------------------------------------------------------------------


def test_rule_reward_is_per_row_even_for_identical_prompts():
    # two rows with the same history (same prompt) and different targets keep their own targets
    completions = [A, A, B, B]
    targets = [A, A, B, A]
    assert rule_reward(completions=completions, target=targets) == [1.0, 1.0, 1.0, 0.0]
    assert rule_reward(completions=["<a_9>garbage", A], target=[A, A]) == [0.0, 1.0]


def test_ranking_reward_hand_computed():
    g = 6
    w = [1 / math.log2(i + 2) for i in range(g)]
    w = [x / sum(w) for x in w]
    reward = make_ranking_reward(g)
    others = ["<a_1><b_0><c_%d>" % i for i in range(g)]
    hit_at_0 = [A] + others[1:]
    hit_at_5 = others[:5] + [A]
    no_hit = others
    got = reward(completions=hit_at_0 + hit_at_5 + no_hit, target=[A] * (3 * g))
    assert got[:g] == pytest.approx([0.0] + [-x for x in w[1:]])
    assert got[g:2 * g] == pytest.approx([-x for x in w[:5]] + [0.0])
    assert got[2 * g:] == [0.0] * g
    assert ndcg_penalties(g).sum().item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="groups of 6"):
        reward(completions=[A] * 5, target=[A] * 5)


def test_semantic_reward_and_missing_files(tmp_path):
    index = {"0": ["<a_0>", "<b_0>", "<c_0>"], "1": ["<a_0>", "<b_0>", "<c_1>"], "2": ["<a_0>", "<b_0>", "<c_2>"]}
    emb = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]], dtype=np.float32)
    np.save(tmp_path / "emb.npy", emb)
    reward = make_semantic_reward(tmp_path / "emb.npy", index)
    got = reward(completions=[A, B, C, "<a_7><b_7><c_7>"], target=[A] * 4, target_sid=[A] * 4,
                 answer_type=["sid"] * 4)
    assert got == pytest.approx([1.0, 0.0, 1 / math.sqrt(2), 0.0])
    with pytest.raises(ValueError, match="--ada_path"):
        build_reward_funcs("semantic", 4, index, beam_search=False)
    with pytest.raises(FileNotFoundError, match="--ada_path"):
        build_reward_funcs("semantic", 4, index, beam_search=False, ada_path=str(tmp_path / "none.npy"))
    with pytest.raises(ValueError, match="--cf_path"):
        build_reward_funcs("sasrec", 4, index, beam_search=False)
    with pytest.raises(FileNotFoundError, match="--cf_path"):
        build_reward_funcs("sasrec", 4, index, beam_search=False, cf_path=str(tmp_path / "none.pt"))
    with pytest.raises(ValueError, match="beam"):
        build_reward_funcs("ranking", 4, index, beam_search=False)


def test_select_candidates_dynamic_sampling_and_add_gt():
    # sampled candidates (with repeats), rollout order kept
    items = torch.tensor([[5, 5, 7, 5, 9, 3], [1, 2, 2, 4, 4, 4]])
    targets = torch.tensor([3, 8])
    kept = select_candidates(items, targets, 4, dynamic_sampling=True, add_gt=False)
    # row 0: the target 3 first, then first occurrences 5, 7, 9 (the repeated 5s lose to them)
    assert kept.tolist()[0] == [5, 7, 9, 3]
    # row 1: target absent; first occurrences 1, 2, 4 then the most frequent repeat (4)
    assert sorted(kept.tolist()[1]) == [1, 2, 4, 4]
    with_gt = select_candidates(items, targets, 4, dynamic_sampling=True, add_gt=True)
    assert with_gt.tolist()[0] == [5, 7, 9, 3]  # already there: unchanged
    assert with_gt[1, -1].item() == 8 and with_gt[1, :3].tolist() == kept[1, :3].tolist()
    plain = select_candidates(items, targets, 4, dynamic_sampling=False, add_gt=False)
    assert plain.tolist() == items[:, :4].tolist()


# --- training -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny from-scratch 'SFT checkpoint' (model + tokenizer with SID tokens) and its data."""
    root = tmp_path_factory.mktemp("rl")
    paths = tiny.write_dataset(root / "data", n_items=8, n_users=16, seq_len=5)
    tok = tiny.tokenizer_with_sids("gpt2_bpe", data.read_index(paths["index"]))
    model = tiny.make_model(tok)
    model.save_pretrained(root / "ckpt")
    tok.save_pretrained(root / "ckpt")
    return root, paths


def _rl_args(root, paths, out, **overrides):
    args = dict(
        model_path=str(root / "ckpt"), train_file=str(paths["train"]), eval_file=str(paths["valid"]),
        info_file=str(paths["info"]), sid_index_path=str(paths["index"]),
        item_meta_path=str(paths["item"]), output_dir=str(out), category=paths["category"],
        train_batch_size=8, eval_batch_size=8, num_generations=4, beam_search=True,
        reward_type="ranking", max_steps=2, eval_step=1000, save_steps=1, learning_rate=1e-3,
        beta=0.04, eval_sample=8, seed=0,
    )
    args.update(overrides)
    return args


@pytest.mark.parametrize("objective, beta", [("grpo", 0.0), ("listwise", 0.1)])
def test_policy_learns_a_rewarded_item(checkpoint, tmp_path, objective, beta):
    root, paths = checkpoint
    tok = rl.load_tokenizer(root / "ckpt")
    model = rl.load_causal_lm(root / "ckpt")
    trie = SidTrie.from_info_file(paths["info"], tok)
    favourite = trie.sids[5]
    rows = data.SidDataset(paths["train"], tokenizer=tok, max_len=512, category="toy store items")
    train_data = rl.to_hf_dataset(rl.rl_rows(rows.inputs))

    def favourite_reward(completions, **kwargs):
        return [float(c.strip() == favourite) for c in completions]

    probe = tok([x["prompt"] for x in rows.inputs[:6]])["input_ids"]
    before = score_completions(model, trie, probe)[:, 5].exp().mean().item()
    args = ReReConfig(
        output_dir=str(tmp_path), per_device_train_batch_size=8, num_generations=4, max_steps=8,
        learning_rate=5e-3, beta=beta, temperature=1.0, max_completion_length=trie.depth,
        logging_steps=1, save_strategy="no", report_to="none", remove_unused_columns=False, seed=0,
        bf16=False, test_during_training=False, objective=objective,
    )
    trainer = ReReTrainer(model=model, reward_funcs=[favourite_reward], args=args,
                          train_dataset=train_data, trie=trie, processing_class=tok)
    trainer.train()
    after = score_completions(model, trie, probe)[:, 5].exp().mean().item()
    assert after > 2 * before, (before, after)
    logged = [h for h in trainer.state.log_history if "reward" in h]
    assert all("time/generation_s_per_step" in h and "frac_reward_zero_std" in h for h in logged)


def _plain_listwise_kl(policy, target, groups):
    """Reference: one group at a time, by the definition."""
    losses = []
    for g in groups.unique():
        rows = groups == g
        q = target[rows].softmax(0)
        losses.append((q * (q.log() - policy[rows].log_softmax(0))).sum())
    return torch.stack(losses).mean()


def test_listwise_kl_matches_the_per_group_definition_and_its_gradient():
    gen = torch.Generator().manual_seed(0)
    groups = torch.tensor([2, 0, 1, 2, 0, 2, 1, 0, 3])  # shuffled rows, group 3 partial (one row)
    policy = (torch.randn(9, generator=gen) * 5).requires_grad_()
    target = torch.randn(9, generator=gen) * 5
    loss = listwise_kl(policy, target, groups)
    torch.testing.assert_close(loss, _plain_listwise_kl(policy, target, groups))
    loss.backward()
    share = lambda x: torch.stack([x[i] - x[groups == groups[i]].logsumexp(0) for i in range(9)]).exp()
    # d loss / d policy score = (policy share - target share) / number of groups
    torch.testing.assert_close(policy.grad, (share(policy.detach()) - share(target)) / 4)
    assert listwise_kl(target, target, groups).abs().item() < 1e-6  # zero at the target


def test_rows_in_group_order_restores_each_group_of_a_shuffled_batch():
    rows = torch.arange(12)
    batch = {"group_ids": rows // 4, "completion_ids": torch.stack([rows, -rows], 1),
             "advantages": rows.float(), "num_items_in_batch": torch.tensor(36)}
    shuffle = torch.randperm(12, generator=torch.Generator().manual_seed(1))
    shuffled = {k: (v[shuffle] if v.dim() else v) for k, v in batch.items()}
    ordered = rows_in_group_order(shuffled)
    assert ordered["group_ids"].tolist() == sorted(ordered["group_ids"].tolist())
    # every row keeps its own values, and a group keeps its rows' relative order from the shuffle
    torch.testing.assert_close(ordered["completion_ids"][:, 0], ordered["advantages"].long())
    assert ordered["num_items_in_batch"].item() == 36
    for g in range(3):
        kept = ordered["advantages"][ordered["group_ids"] == g].tolist()
        assert kept == [x for x in shuffled["advantages"].tolist() if x // 4 == g]


def test_completion_logps_match_full_logits_reference(checkpoint, tmp_path):
    """The completion-only log-probs equal a plain full-sequence log-softmax (positions from the
    mask, left padding), and TRL's own fused path on rows without padding."""
    root, paths = checkpoint
    tok = rl.load_tokenizer(root / "ckpt")
    model = rl.load_causal_lm(root / "ckpt")
    trie = SidTrie.from_info_file(paths["info"], tok)
    rows = data.SidDataset(paths["train"], tokenizer=tok, max_len=512, category="toy store items")
    args = ReReConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, num_generations=4,
                      max_completion_length=trie.depth, temperature=0.7, report_to="none", bf16=False,
                      remove_unused_columns=False)
    trainer = ReReTrainer(model=model, reward_funcs=[rule_reward], args=args,
                          train_dataset=rl.to_hf_dataset(rl.rl_rows(rows.inputs)), trie=trie,
                          processing_class=tok)
    k = trie.depth
    prompts = tok([x["prompt"] for x in rows.inputs[:6]])["input_ids"]
    completions = [trie.completion_ids[i, : trie.lengths[i]].tolist() for i in range(6)]
    width = max(len(p) for p in prompts)
    ids = torch.full((6, width + k), tok.pad_token_id)
    mask = torch.zeros_like(ids)
    for row, (prompt, completion) in enumerate(zip(prompts, completions)):
        ids[row, width - len(prompt): width] = torch.tensor(prompt)
        ids[row, width: width + len(completion)] = torch.tensor(completion)
        mask[row, width - len(prompt): width + len(completion)] = 1
    with torch.no_grad():
        fast, entropy, _ = trainer._get_per_token_logps_and_entropies(
            trainer.model, ids, mask, k, batch_size=4, compute_entropy=True)
        logits = trainer.model(input_ids=ids, attention_mask=mask,
                               position_ids=(mask.cumsum(1) - 1).clamp(min=0)).logits[:, -k - 1:-1] / 0.7
        log_softmax = logits.log_softmax(-1)
        reference = log_softmax.gather(-1, ids[:, -k:, None]).squeeze(-1) * mask[:, -k:]
        ref_entropy = -(log_softmax.exp() * log_softmax).sum(-1) * mask[:, -k:]
        torch.testing.assert_close(fast, reference, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(entropy, ref_entropy, atol=1e-5, rtol=1e-5)
        same_length = [i for i, p in enumerate(prompts) if len(p) == width]
        assert 0 < len(same_length) < len(prompts)  # some rows are left-padded, some are not
        trl_logps, _, _ = super(ReReTrainer, trainer)._get_per_token_logps_and_entropies(
            trainer.model, ids[same_length], mask[same_length], k)
        torch.testing.assert_close(fast[same_length], trl_logps, atol=1e-5, rtol=1e-5)


def test_shared_prompt_logits_and_gradients_equal_whole_rows(checkpoint):
    """completion_logits runs each group's prompt once and expands its KV cache to the group: the
    log-probs and the parameter gradients equal one plain forward over whole rows (left-padded
    prompts, right-padded completions of different lengths)."""
    root, paths = checkpoint
    tok = rl.load_tokenizer(root / "ckpt")
    model = rl.load_causal_lm(root / "ckpt")
    trie = SidTrie.from_info_file(paths["info"], tok)
    rows = data.SidDataset(paths["train"], tokenizer=tok, max_len=512, category="toy store items")
    prompts = tok([x["prompt"] for x in rows.inputs[:3]])["input_ids"]
    g, k = 4, trie.depth
    width = max(len(p) for p in prompts)
    ids = torch.full((3 * g, width + k), tok.pad_token_id)
    mask = torch.zeros_like(ids)
    for row in range(3 * g):
        prompt = prompts[row // g]
        item = row % len(trie)
        completion = trie.completion_ids[item, : trie.lengths[item]].tolist()[: k - row % 2]  # some shorter
        ids[row, width - len(prompt): width] = torch.tensor(prompt)
        ids[row, width: width + len(completion)] = torch.tensor(completion)
        mask[row, width - len(prompt): width + len(completion)] = 1
    assert len({len(p) for p in prompts}) > 1, "the prompts are left-padded to one width"

    def logps_and_grads(logits_of):
        model.zero_grad()
        logps = logits_of().float().log_softmax(-1).gather(-1, ids[:, -k:, None]).squeeze(-1) * mask[:, -k:]
        logps.sum().backward()
        return logps.detach(), [p.grad.clone() for p in model.parameters()]

    shared, shared_grads = logps_and_grads(lambda: completion_logits(model, ids, mask, k))
    plain, plain_grads = logps_and_grads(lambda: model(
        input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(1) - 1).clamp(min=0)).logits[:, -k - 1:-1])
    torch.testing.assert_close(shared, plain, atol=1e-5, rtol=1e-5)
    for a, b in zip(shared_grads, plain_grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_errors_before_training(checkpoint, tmp_path):
    root, paths = checkpoint
    with pytest.raises(ValueError, match="not divisible by --num_generations"):
        rl.train(**_rl_args(root, paths, tmp_path, train_batch_size=6))
    with pytest.raises(ValueError, match="--cf_path"):
        rl.train(**_rl_args(root, paths, tmp_path, reward_type="sasrec"))
    with pytest.raises(InputError, match="needs --beta > 0"):
        rl.train(**_rl_args(root, paths, tmp_path, objective="listwise", beta=0.0))
    with pytest.raises(InputError, match="--objective 'ppo'"):
        rl.train(**_rl_args(root, paths, tmp_path, objective="ppo"))
    with pytest.raises((FileNotFoundError, InputError), match="--info_file"):
        rl.train(**_rl_args(root, paths, tmp_path, info_file=str(tmp_path / "none.txt")))
    other = tiny.make_tokenizer("gpt2_bpe")  # no SID tokens: a tokenizer from another checkpoint
    other.save_pretrained(tmp_path / "bad")
    tiny.make_model(other).save_pretrained(tmp_path / "bad")
    with pytest.raises(ValueError, match="SID tokens"):
        rl.train(**_rl_args(root, paths, tmp_path, model_path=str(tmp_path / "bad")))


def test_resume_from_checkpoint(checkpoint, tmp_path):
    root, paths = checkpoint
    first = rl.train(**_rl_args(root, paths, tmp_path, max_steps=2))
    assert first.state.global_step == 2 and (tmp_path / "checkpoint-2").is_dir()
    resumed = rl.train(**_rl_args(root, paths, tmp_path, max_steps=3, resume_from_checkpoint=True))
    assert resumed.state.global_step == 3
    steps = [h["step"] for h in resumed.state.log_history if "loss" in h]
    assert steps == [1, 2, 3]
    assert not any("eval_loss" in h for h in resumed.state.log_history)  # eval_step 1000 > max_steps
    assert (tmp_path / "final_checkpoint" / "model.safetensors").is_file()


def test_two_processes_give_single_process_advantages(checkpoint, tmp_path):
    root, paths = checkpoint
    args = _rl_args(root, paths, tmp_path / "out", max_steps=2, log_completions=True, save_steps=100)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(tiny.REPO / "rl.py")] + [f"--{k}={v}" for k, v in args.items()]
    env = dict(os.environ, PYTHONPATH=str(tiny.REPO), OMP_NUM_THREADS="1")
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    for rank in (0, 1):
        assert f"rank {rank} of 2 finished RL at step 2" in result.stderr, result.stderr[-2000:]
    tables = sorted((tmp_path / "out" / "completions").glob("*.parquet"))
    assert len(tables) == 2
    for table in tables:
        df = pd.read_parquet(table)
        assert len(df) == 2 * 8  # both processes' groups are there
        reward = (df["rule_reward"] + df["ranking_reward"]).to_numpy().reshape(-1, 4)
        # the single-process computation: group-normalised rewards (TRL's epsilon 1e-4)
        expected = (reward - reward.mean(1, keepdims=True)) / (reward.std(1, ddof=1, keepdims=True) + 1e-4)
        np.testing.assert_allclose(df["advantage"].to_numpy(), expected.flatten(), atol=1e-4)
        # each group is one prompt with G distinct beams
        for group in np.split(df["completion"].to_numpy(), len(df) // 4):
            assert len(set(group)) == 4


# --- SID -> title tasks: a trie over the catalogue's titles ---------------------------------------


def test_title_trie_decoding_returns_only_catalogue_titles(checkpoint):
    root, paths = checkpoint
    tok = rl.load_tokenizer(root / "ckpt")
    model = rl.load_causal_lm(root / "ckpt")
    catalogue = data.Catalogue(paths["index"], paths["item"], paths["info"], paths["category"])
    titles, item_ids = rl.catalogue_titles(catalogue)
    assert len(titles) == 8
    trie = SidTrie.from_texts(titles + [f"  {titles[0]} "], tok, item_ids=item_ids + ["again"])
    assert trie.sids == titles and trie.item_ids[0] == [item_ids[0], "again"]  # one completion per title
    first = trie.completion_ids[0, : trie.lengths[0]].tolist()
    assert first == tok(data.build_response(titles[0]), add_special_tokens=False)["input_ids"] + [tok.eos_token_id]

    prompts = tok([data.build_prompt("Name the item.", f"Item {i}?") for i in range(3)])["input_ids"]
    beams = sid_beam_search(model, trie, prompts, 5, tok.pad_token_id)
    reference = score_completions(model, trie, prompts)
    for row in beams.sids:
        assert len(set(row)) == 5 and set(row) <= set(titles)
    # each beam's score is its title's full sequence log-probability, best first
    torch.testing.assert_close(beams.scores, reference.gather(1, beams.item_index), atol=1e-4, rtol=1e-4)
    assert (beams.scores[:, :-1] >= beams.scores[:, 1:]).all()
    sampled = constrained_sample(model, trie, prompts, 6, 1.0, tok.pad_token_id)
    assert all(title in titles for row in sampled.sids for title in row)


def test_rl_with_title_tasks_decodes_each_group_over_its_own_catalogue(checkpoint, tmp_path):
    root, paths = checkpoint
    trainer = rl.train(**_rl_args(
        root, paths, tmp_path, rl_tasks="sid_history_to_sid:8,sid_to_title,sid_history_to_title:8",
        max_steps=3, log_completions=True, save_steps=100, test_beam=5))
    titles = set(rl.catalogue_titles(data.Catalogue(paths["index"], paths["item"]))[0])
    sids = set(SidTrie.from_info_file(paths["info"], trainer.processing_class).sids)
    logged = pd.concat([pd.read_parquet(p) for p in (tmp_path / "completions").glob("*.parquet")])
    kinds = set()
    for (_, prompt), group in logged.groupby(["step", "prompt"], sort=False):
        completions = [c.strip() for c in group["completion"]]
        assert len(completions) == 4 and len(set(completions)) == 4  # G distinct beams
        is_title = set(completions) <= titles
        assert is_title or set(completions) <= sids, completions  # one catalogue per group
        assert is_title == ("title" in prompt.split("### Response")[0].lower()), prompt
        kinds.add(is_title)
    assert kinds == {True, False}  # both catalogues were decoded
    # the original's test_during_training: HR/NDCG of each batch's prompts at every step
    tested = [h for h in trainer.state.log_history if "test/HR@3" in h]
    assert [h["step"] for h in tested] == [1, 2, 3]
    assert all(0 <= h["test/NDCG@5"] <= h["test/HR@5"] <= 1 for h in tested)
    assert "test/HR@10" not in tested[0]  # K up to test_beam only
    assert all(h["time/test_s_per_step"] > 0 for h in tested)  # timed apart from the rollouts
    # outputs as the original: the model in output_dir and model + tokenizer in final_checkpoint
    assert (tmp_path / "model.safetensors").is_file()
    assert (tmp_path / "final_checkpoint" / "model.safetensors").is_file()
    assert (tmp_path / "final_checkpoint" / "tokenizer.json").is_file()


UPSTREAM_RL_SH = tiny.REPO.parent / "shared" / "upstream" / "rl.sh"
# the original rl.sh's values that name its machine's files; every other flag is passed as written
PATH_FLAGS = ("model_path", "train_file", "eval_file", "info_file", "output_dir", "sid_index_path", "item_meta_path")


def upstream_rl_flags() -> list[tuple[str, str]]:
    """The `--flag value` pairs the original rl.sh passes to rl.py."""
    text = UPSTREAM_RL_SH.read_text()
    command = text[text.index("rl.py"):].split("done")[0]
    words = command.replace("\\\n", " ").split()[1:]
    return [(words[i][2:], words[i + 1]) for i in range(0, len(words), 2)]


@pytest.mark.skipif(not UPSTREAM_RL_SH.is_file(), reason=f"the original rl.sh is not at {UPSTREAM_RL_SH}")
def test_the_original_rl_sh_flags_run(tmp_path):
    """rl.sh's own flag set (train batch 64, G 16, beams, ranking reward, sample_train False,
    eval_step 0.0999, sync_ref_model, ...) on a tiny catalogue of 20 items, capped at 2 steps."""
    flags = upstream_rl_flags()
    names = [name for name, _ in flags]
    assert {"sample_train", "eval_step", "sync_ref_model", "num_generations", "reward_type"} <= set(names)
    paths = tiny.write_dataset(tmp_path / "data", n_items=20, n_users=24, seq_len=5)
    tok = tiny.tokenizer_with_sids("gpt2_bpe", data.read_index(paths["index"]))
    tiny.make_model(tok).save_pretrained(tmp_path / "sft")
    tok.save_pretrained(tmp_path / "sft")
    ours = {"model_path": tmp_path / "sft", "train_file": paths["train"], "eval_file": paths["valid"],
            "info_file": paths["info"], "output_dir": tmp_path / "out", "sid_index_path": paths["index"],
            "item_meta_path": paths["item"]}
    argv = []
    for name, value in flags:
        argv += [f"--{name}", str(ours[name]) if name in PATH_FLAGS else value.replace("${category}",
                                                                                      "Industrial_and_Scientific")]
    argv += ["--max_steps", "2"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, str(tiny.REPO / "rl.py"), *argv], env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rank 0 of 1 finished RL at step 2" in result.stderr
    if not torch.cuda.is_available():  # paged_adamw_32bit needs bitsandbytes on CUDA
        assert "--optim paged_adamw_32bit needs bitsandbytes on CUDA" in result.stderr
    assert (tmp_path / "out" / "model.safetensors").is_file()
    assert (tmp_path / "out" / "final_checkpoint" / "tokenizer.json").is_file()


def test_build_datasets_sample_train_and_rl_tasks(checkpoint, tmp_path):
    root, paths = checkpoint
    tok = rl.load_tokenizer(root / "ckpt")
    catalogue = data.Catalogue(paths["index"], paths["item"], paths["info"], paths["category"])

    def build(tasks, **kwargs):
        return rl.build_datasets(rl.parse_rl_tasks(tasks), catalogue, paths["train"], paths["valid"],
                                 paths["item"], paths["index"], tok, 512, **kwargs)

    n_rows = len(data.read_split_csv(paths["train"]))
    every, valid = build("sid_history_to_sid")
    assert len(every) == n_rows and len(valid) == len(data.read_split_csv(paths["valid"]))
    assert set(every.column_names) == set(rl.ROW_COLUMNS)
    assert len(build("sid_history_to_sid", sample_train=5)[0]) == 5  # an integer: rows of the SID task
    unified = build("sid_history_to_sid", prompt_style="unified")[0]
    assert unified["target"] == every["target"] and not set(unified["prompt"]) & set(every["prompt"])
    assert every["prompt"][0].startswith("### User Input:")  # the original's bare RL prompt
    assert len(build("sid_history_to_sid:7")[0]) == 7
    assert len(build("sid_history_to_sid", sample_train=True, model_path="out/rl")[0]) == n_rows
    # the original: True drops the first 20% of the shuffled rows of an SFT model_path
    kept = build("sid_history_to_sid", sample_train=True, model_path="out/sft/final_checkpoint")[0]
    assert len(kept) == n_rows - int(0.2 * n_rows)
    assert kept["prompt"] == every["prompt"][int(0.2 * n_rows):]  # the tail of the same shuffle
    mixed = build("title_description_to_sid,sid_to_title:3")[0]
    assert sorted(mixed["answer_type"]).count("title") == 3
    assert {t for t, kind in zip(mixed["target"], mixed["answer_type"]) if kind == "title"} <= {
        f"Item number {i}" for i in range(8)}
    assert all(h == [] for h in mixed["history_item_ids"])
    for bad, message in [("sid_history_to_sid,nope", "unknown task"), ("sid_to_title:x", "integer"),
                         ("sid_to_title:0", "positive"), ("sid_to_title,sid_to_title", "twice"), ("", "no task")]:
        with pytest.raises(InputError, match=message):
            rl.parse_rl_tasks(bad)
    with pytest.raises(InputError, match="--sample_train"):
        rl.check_flags(str(tmp_path), False, False, 4, 8, 8, sample_train=0)
    with pytest.raises(InputError, match="--prompt_style"):
        rl.check_flags(str(tmp_path), False, False, 4, 8, 8, False, prompt_style="original")
    with pytest.raises(InputError, match="--sasrec_score"):
        rl.check_flags(str(tmp_path), False, False, 4, 8, 8, False, sasrec_score="rank")
    with pytest.raises(InputError, match="--scale_rewards"):
        rl.check_flags(str(tmp_path), False, False, 4, 8, 8, False, scale_rewards="std")


def test_test_during_training_on_a_test_file(checkpoint, tmp_path):
    """--test_file: HR/NDCG of those rows every eval_step steps (the callback), not of each batch."""
    root, paths = checkpoint
    trainer = rl.train(**_rl_args(root, paths, tmp_path, test_file=str(paths["test"]), test_sample=4,
                                  test_beam=6, eval_step=2, max_steps=4, save_steps=100))
    tested = [h for h in trainer.state.log_history if "test/HR@5" in h]
    assert [h["step"] for h in tested] == [2, 4]
    assert all("test/HR@10" not in h and 0 <= h["test/NDCG@5"] <= h["test/HR@5"] <= 1 for h in tested)
    assert not any("time/test_s_per_step" in h for h in trainer.state.log_history)  # no per-batch test
