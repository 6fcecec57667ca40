"""The whole-process evaluation benchmark's parts: the original's evaluate.py, run unchanged through
benchmarks/original_evaluate.py, ranks exactly as our evaluate.py does (live, when the original's code
is present); and the fit that turns timed runs into a projected speed-up."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import data
import evaluate
from benchmarks.bench_eval_process import summarise
from tests import tiny

REPO = Path(__file__).resolve().parents[1]
UPSTREAM = tiny.REPO.parent / "shared" / "upstream"


@pytest.mark.skipif(not (UPSTREAM / "evaluate.py").is_file(), reason="/work/shared/upstream (the original) is absent")
@pytest.mark.skipif(importlib.util.find_spec("fire") is None, reason="fire (the original's CLI library) is absent")
def test_the_original_evaluate_py_ranks_as_ours(tmp_path):
    paths = tiny.write_dataset(tmp_path / "data", n_items=12, n_users=40, category="Office_Products")
    # the original takes the "### Response:\n" prefix to be 3 tokens, 4 when the model path holds "gpt2";
    # this tokenizer makes 4 of it, as SmolLM2's and GPT-2's do
    tok = tiny.with_sids(tiny.make_tokenizer("gpt2_bpe", extra_texts=["### Response:\n"]),
                         data.read_index(paths["index"]))
    assert len(tok("### Response:\n")["input_ids"]) == 4
    model_dir = tmp_path / "tiny-gpt2"
    tiny.make_model(tok, seed=5).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    flags = ["--base_model", str(model_dir), "--info_file", str(paths["info"]), "--category", "Office_Products",
             "--test_data_path", str(paths["test"]), "--batch_size", "3", "--num_beams", "6"]
    ours, theirs = tmp_path / "ours.json", tmp_path / "theirs.json"
    assert evaluate.main([*flags, "--result_json_data", str(ours), "--precision", "fp32", "--no_progress"]) == 0
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "original_evaluate.py"), "--upstream",
                           str(UPSTREAM), "--dtype", "float32", "--", *flags, "--result_json_data", str(theirs)],
                          env={**os.environ, "PYTHONPATH": str(UPSTREAM)}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ours_rows, their_rows = json.loads(ours.read_text()), json.loads(theirs.read_text())
    assert len(ours_rows) == len(their_rows) == len(data.read_split_csv(paths["test"]))
    assert [r["output"] for r in ours_rows] == [r["output"] for r in their_rows]
    assert [r["predict"] for r in ours_rows] == [r["predict"] for r in their_rows]  # all 6 beams, in order


def test_summarise_fits_each_layout_and_projects_the_fastest_pair():
    def runs(layout, fixed, per_user, sizes):
        return [{"layout": layout, "users": n, "seconds": fixed + per_user * n} for n in sizes]

    report = {"settings": {"users": [8, 24], "test_rows": 1000},
              "runs": [*runs("ours_2proc", 15.0, 0.5, [8, 24, 96]), *runs("ours_1proc", 10.0, 0.6, [8, 24, 96]),
                       *runs("original_2proc", 10.0, 20.0, [8, 24]), *runs("original_1proc", 8.0, 25.0, [8, 24])]}
    summarise(report)
    assert report["fits"]["ours_1proc"]["seconds_per_user"] == pytest.approx(0.6)
    assert report["fits"]["original_2proc"]["fixed_seconds"] == pytest.approx(10.0)
    speedup = report["speedup"]
    # ours_1proc is faster at 24 users but ours_2proc over the whole test set: the projection decides
    assert (speedup["ours"], speedup["original"]) == ("ours_2proc", "original_2proc")
    assert speedup["measured"]["24"] == pytest.approx((10 + 20 * 24) / (15 + 0.5 * 24))
    assert speedup["projected_whole_test_set"]["ratio"] == pytest.approx((10 + 20_000) / (15 + 500))


def test_bf16_benchmark_compares_both_precisions_on_the_same_users(tmp_path):
    from benchmarks import bench_bf16

    paths = tiny.write_dataset(tmp_path / "data", n_items=12, n_users=30, category="Toy_Store")
    tok = tiny.tokenizer_with_sids("gpt2_bpe", data.read_index(paths["index"]))
    model = tiny.make_model(tok, seed=3)
    model.save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    out = tmp_path / "bench_bf16.json"
    assert bench_bf16.main(["--checkpoint", str(tmp_path / "model"), "--info_file", str(paths["info"]),
                            "--test_file", str(paths["test"]), "--category", "Toy_Store", "--num_beams", "10",
                            "--users", "6", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert [report["runs"][p]["users"] for p in ("fp32", "bf16")] == [6, 6]
    agreement = report["agreement"]
    assert agreement["users"] == 6 and 0 <= agreement["identical_top10"] <= agreement["identical_top1"] <= 1
    # every beam is a distinct valid item in both runs, so the two top-10 lists share at least 10 - (12 - 10) items
    assert 0.8 <= agreement["mean_top10_overlap"] <= 1
    assert report["bf16_speedup"] > 0
