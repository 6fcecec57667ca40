"""evaluate.py / calc.py / evaluate.sh: hand-computed metrics, the predictions file, and a
2-process run (evaluate.sh -> torchrun, gloo on CPU) that merges to the same file as 1 process."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import calc
import metrics
import data
import evaluate
from decoding_reference import exhaustive_beam_search
from runtime import InputError
from sid_trie import SidTrie
from tests import tiny

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny dataset (category folder) and a from-scratch checkpoint saved like sft.py saves one."""
    root = tmp_path_factory.mktemp("eval")
    paths = tiny.write_dataset(root / "data" / "Toy_Store", n_items=12, n_users=40)
    tok = tiny.tokenizer_with_sids("sentencepiece_bos", data.read_index(paths["index"]))
    model = tiny.make_model(tok, seed=7)
    model.save_pretrained(root / "model")
    tok.save_pretrained(root / "model")
    return root, paths


# ---------------------------------------------------------------------------------------------
# metrics


def test_metrics_on_a_hand_made_ranking():
    catalogue = {f"<a_{i}>" for i in range(10)}
    rows = [
        {"output": "<a_1>", "predict": ["<a_1>", "<a_2>", "<a_3>", "<a_4>", "<a_5>"]},  # rank 0
        {"output": "<a_3>", "predict": ["<a_1>", "<a_2>", "<a_3>", "<a_4>", "<a_5>"]},  # rank 2
        {"output": "<a_9>", "predict": ["<a_1>", "<a_2>", "<a_3>", "<a_4>", "<a_5>"]},  # miss
        {"output": ["<a_5>"], "predict": ["<a_1>", "<zz>", "<a_3>", "<a_4>", '"<a_5>\n"']},  # rank 4, 1 invalid
    ]
    m = metrics.compute_metrics(rows, catalogue)
    assert m["ks"] == [1, 3, 5] and m["num_beams"] == 5 and m["n_rows"] == 4
    assert m["HR@1"] == pytest.approx(1 / 4)
    assert m["HR@3"] == pytest.approx(2 / 4)
    assert m["HR@5"] == pytest.approx(3 / 4)
    assert m["NDCG@1"] == pytest.approx(1 / 4)
    assert m["NDCG@3"] == pytest.approx((1 + 1 / math.log2(4)) / 4)
    assert m["NDCG@5"] == pytest.approx((1 + 1 / math.log2(4) + 1 / math.log2(6)) / 4)
    assert m["invalid_predictions"] == 1 and m["duplicate_predictions"] == 0
    with_dup = metrics.compute_metrics([{"output": "<a_1>", "predict": ["<a_2>", "<a_2>", "<a_1>"]}], catalogue)
    assert with_dup["duplicate_predictions"] == 1 and with_dup["HR@3"] == 1.0 and with_dup["ks"] == [1, 3]


def test_calc_cli_writes_table_json_png_and_fails_on_invalid(tmp_path, capsys):
    info = tmp_path / "info.txt"
    info.write_text("<a_1><b_1>\tone\t1\n<a_1><b_2>\ttwo\t2\n")
    good = tmp_path / "good.json"
    good.write_text(json.dumps([{"output": "<a_1><b_2>", "predict": ["<a_1><b_1>", "<a_1><b_2>"]}]))
    assert calc.main(["--path", str(good), "--item_path", str(info)]) == 0
    out = capsys.readouterr().out
    assert "| good.json | 0.0000 |" in out and "invalid predictions 0" in out
    saved = json.loads((tmp_path / "good_metrics.json").read_text())
    assert saved["NDCG@1"] == 0.0 and saved["invalid_predictions"] == 0
    assert (tmp_path / "good_metrics.png").read_bytes()[:4] == b"\x89PNG"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"output": "<a_1><b_2>", "predict": ["<a_9><b_9>"]}]))
    assert calc.main(["--path", str(bad), "--item_path", str(info)]) == 1
    assert calc.main(["--path", str(bad), "--item_path", str(info), "--allow_invalid"]) == 0


# ---------------------------------------------------------------------------------------------
# evaluate.py


def test_evaluate_rows_in_order_with_exact_beams(checkpoint):
    root, paths = checkpoint
    model, tok = evaluate.load_model_and_tokenizer(str(root / "model"))
    trie = SidTrie.from_info_file(paths["info"], tok)
    ds = data.EvalSidDataset(train_file=paths["test"], tokenizer=tok, max_len=512, test=True, category="toy store items")
    rows = evaluate.evaluate_rows(model, tok, trie, ds, num_beams=len(trie), batch_size=3)
    assert [r["output"] for r in rows] == [r.item_sid + "\n" for r in ds.rows]  # the original's record
    assert [r["user_id"] for r in rows] == [r.user_id for r in ds.rows]
    exact = exhaustive_beam_search(model, trie, [it["input_ids"] for it in ds], len(trie))
    for row, sids, scores in zip(rows, exact.sids, exact.scores):
        assert sorted(row["predict"]) == sorted(trie.sids)  # every item exactly once
        assert row["scores"] == pytest.approx(scores.tolist(), abs=1e-4)
        assert row["predict_item_ids"] == [int(trie.item_ids[trie.sid_to_index[s]][0]) for s in row["predict"]]


def test_evaluate_rejects_a_tokenizer_without_sid_tokens(checkpoint, tmp_path):
    root, paths = checkpoint
    tok = tiny.make_tokenizer("gpt2_bpe")
    tok.pad_token = tok.eos_token
    tiny.make_model(tok).save_pretrained(tmp_path / "plain")
    tok.save_pretrained(tmp_path / "plain")
    with pytest.raises(InputError, match="SID tokens"):
        evaluate.main(["--base_model", str(tmp_path / "plain"), "--info_file", str(paths["info"]),
                       "--test_data_path", str(paths["test"]), "--result_json_data", str(tmp_path / "x.json")])


def test_two_process_evaluation_merges_to_the_one_process_file(checkpoint, tmp_path):
    root, paths = checkpoint
    args = ["--base_model", str(root / "model"), "--info_file", str(paths["info"]), "--category", "Toy_Store",
            "--test_data_path", str(paths["test"]), "--batch_size", "2", "--num_beams", "5", "--no_progress"]
    single = tmp_path / "single.json"
    assert evaluate.main(args + ["--result_json_data", str(single)]) == 0  # in-process, 1 thread

    # evaluate.sh as shipped: 2 torchrun workers (gloo), then calc.py
    env = {**os.environ, "MODEL": str(root / "model"), "DATA_ROOT": str(root / "data"), "NPROC": "2",
           "OUT_DIR": str(tmp_path / "sh"), "NUM_BEAMS": "5", "BATCH_SIZE": "2", "PYTHON": sys.executable,
           "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(["bash", str(REPO / "evaluate.sh")], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    merged = tmp_path / "sh" / "final_result_Toy_Store.json"
    assert merged.read_text() == single.read_text()
    assert "2 process(es)" in proc.stderr + proc.stdout
    assert (tmp_path / "sh" / "final_result_Toy_Store_metrics.json").is_file()
    assert (tmp_path / "sh" / "final_result_Toy_Store_metrics.png").is_file()
    rows = json.loads(single.read_text())
    n_test = len(data.read_split_csv(paths["test"]))
    assert len(rows) == n_test and all(len(r["predict"]) == 5 for r in rows)
    assert not list((tmp_path / "sh").glob(".*.tmp"))  # atomic write left nothing behind


def _original_checkpoint(paths, folder):
    """A tiny model saved the way the original's sft.py saves one: tokenizer.add_tokens of the
    sorted SID tokens, resize_token_embeddings, pad token = EOS, bf16 weights, save_pretrained of
    model and tokenizer."""
    tok = tiny.make_tokenizer("gpt2_bpe")
    model = tiny.make_model(tok, seed=3)
    index = json.loads(Path(paths["index"]).read_text())
    tok.add_tokens(sorted({t for tokens in index.values() for t in tokens}))
    model.resize_token_embeddings(len(tok))
    tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    model.to(dtype=torch.bfloat16).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def test_a_checkpoint_saved_by_the_original_evaluates_with_its_flags(checkpoint, tmp_path):
    root, paths = checkpoint
    model_dir = _original_checkpoint(paths, tmp_path / "original")
    out = tmp_path / "res" / "final_result_Toy_Store.json"
    # the flags of the original's evaluate.sh, in its order
    argv = ["--base_model", str(model_dir), "--info_file", str(paths["info"]), "--category", "Toy_Store",
            "--test_data_path", str(paths["test"]), "--result_json_data", str(out), "--batch_size", "8",
            "--num_beams", "5", "--max_new_tokens", "256", "--temperature", "1.0", "--guidance_scale", "1.0",
            "--length_penalty", "0.0", "--precision", "fp32", "--no_progress"]
    assert evaluate.main(argv) == 0
    rows = json.loads(out.read_text())
    test_rows = data.read_split_csv(paths["test"])
    assert [r["output"] for r in rows] == [t.item_sid + "\n" for t in test_rows]
    sids = {sid for sid, _, _ in data.read_info(paths["info"])}
    assert all(len(r["predict"]) == 5 and set(r["predict"]) <= sids for r in rows)
    assert rows[0]["input"].startswith("Can you predict the next possible item the user may expect, given")


def test_bad_result_path_and_unreachable_targets_fail_before_decoding(checkpoint, tmp_path, monkeypatch):
    root, paths = checkpoint
    args = ["--base_model", str(root / "model"), "--info_file", str(paths["info"]),
            "--test_data_path", str(paths["test"]), "--num_beams", "3", "--no_progress"]

    def no_model(*a, **k):
        raise AssertionError("the model was loaded before the input was checked")

    monkeypatch.setattr(evaluate, "load_model_and_tokenizer", no_model)
    with pytest.raises(InputError, match=f"--result_json_data {tmp_path}: is a folder"):
        evaluate.main(args + ["--result_json_data", str(tmp_path)])
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(InputError, match="--result_json_data .*a_file/x.json: cannot write there"):
        evaluate.main(args + ["--result_json_data", str(blocker / "x.json")])

    rows = data.read_split_csv(paths["test"])
    wrong = rows[1].__class__(**{**rows[1].__dict__, "item_sid": rows[0].item_sid if rows[0].item_sid != rows[1].item_sid
                                 else rows[2].item_sid})
    bad_test = tmp_path / "test.csv"
    data.write_split_csv([rows[0], wrong] + list(rows[2:]), bad_test)
    bad_args = [a if a != str(paths["test"]) else str(bad_test) for a in args]
    with pytest.raises(InputError, match=r"test.csv: 1 of \d+ rows have a target the catalogue cannot produce "
                                         r"\(first at line 3: item_sid .* is not the SID of item"):
        evaluate.main(bad_args + ["--result_json_data", str(tmp_path / "r.json")])
    monkeypatch.undo()
    assert evaluate.main(bad_args + ["--result_json_data", str(tmp_path / "r.json"),
                                     "--allow_unreachable_targets", "True"]) == 0
    assert len(json.loads((tmp_path / "r.json").read_text())) == len(rows)


UPSTREAM = REPO.parent / "shared" / "upstream"


@pytest.mark.skipif(not (UPSTREAM / "evaluate.py").is_file(), reason="/work/shared/upstream (the original) is absent")
def test_every_flag_of_the_original_evaluate_py_and_sh_with_its_default():
    import ast
    import re

    tree = ast.parse((UPSTREAM / "evaluate.py").read_text())
    original = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main").args
    defaults = {a.arg: ast.literal_eval(d) for a, d in zip(original.args[-len(original.defaults):], original.defaults)}
    parser = evaluate.build_parser()
    ours = {a.dest: a for a in parser._actions}
    for name, default in defaults.items():
        assert name in ours, name
        if not ours[name].required:
            assert ours[name].default == default, name
    sh_flags = set(re.findall(r"--(\w+)", (UPSTREAM / "evaluate.sh").read_text().split("evaluate.py", 1)[1]
                              .split("&", 1)[0]))
    assert sh_flags and sh_flags <= set(ours), sh_flags - set(ours)


def test_auto_precision_ranks_in_fp32_on_a_cpu(monkeypatch):
    import hardware
    import modeling

    monkeypatch.setattr(hardware, "cpu_prefers_bf16", lambda: True)  # a CPU where training picks bf16
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert modeling.default_dtype("auto") == torch.bfloat16
    assert evaluate.evaluation_dtype("auto") == torch.float32
    assert evaluate.evaluation_dtype("bf16") == torch.bfloat16
