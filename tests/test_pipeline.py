"""pipeline.py: content-addressed stages (skipped while their recipe is unchanged, shared between
runs; a stage that runs redoes the stages that read it, a forced one every stage after it),
profiles and overrides, dataset discovery, and one whole run on a tiny model and dataset (SIDs from
the given index, a test sample stage, a report with the paired bootstrap) with the analysis scripts
on it."""

import json
import random
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import data
import pipeline
import report
from runtime import InputError
from scripts import confirm_heldout, prediction_popularity, run_twice, sample_rows, sasrec_rerank
from tests import tiny


def _append(path, text):
    return [sys.executable, "-c", f"open({str(path)!r}, 'a').write({text!r})"]


def _run(store, log, second="b", force_stages=(), force=False):
    pipe = pipeline.Pipeline(store, set(force_stages), force)
    first = pipe.stage("first", lambda out: [_append(log, "a")])
    # "second" reads what "first" wrote: its recipe names first's folder
    second_dir = pipe.stage("second", lambda out: [_append(log, second), ["true", str(first)]])
    pipe.stage("third", lambda out: [_append(log, "c"), ["true", str(second_dir)]])
    return pipe


def test_stages_skip_when_unchanged_and_redo_downstream(tmp_path):
    log = tmp_path / "log.txt"
    pipe = _run(tmp_path / "store", log)
    assert log.read_text() == "abc"
    assert set(json.loads((Path(pipe.stages["second"]["dir"]) / ".done.json").read_text())) == {
        "seconds", "commands"}
    assert not any(stage["reused"] for stage in pipe.stages.values())

    again = _run(tmp_path / "store", log)  # the same recipes: all reused, from any run
    assert log.read_text() == "abc"
    assert all(stage["reused"] for stage in again.stages.values())

    changed = _run(tmp_path / "store", log, second="B")  # second's recipe changed: second and third
    assert log.read_text() == "abcBc"
    assert changed.stages["second"]["dir"] != pipe.stages["second"]["dir"]
    assert changed.stages["third"]["dir"] != pipe.stages["third"]["dir"]  # it reads another folder

    _run(tmp_path / "store", log, second="b")  # back to the first recipe: its folders are still there
    assert log.read_text() == "abcBc"

    _run(tmp_path / "store", log, second="B", force_stages={"first"})  # first forced: all again
    assert log.read_text() == "abcBcaBc"

    _run(tmp_path / "store", log, second="B", force=True)
    assert log.read_text() == "abcBcaBcaBc"

    # a stage that runs because it is new (or its marker is gone) redoes only the stages that read it:
    # a test sample drawn from other rows does not retrain a model that never reads it
    def independent(sample_rows: str):
        pipe = pipeline.Pipeline(tmp_path / "store2", set(), False)
        sample = pipe.stage("sample", lambda out: [_append(log, sample_rows)])
        pipe.stage("train", lambda out: [_append(log, "t")])
        pipe.stage("score", lambda out: [_append(log, "s"), ["true", str(sample)]])
        return pipe

    log.write_text("")
    independent("1")
    first = independent("2")
    assert log.read_text() == "1ts2s" and first.stages["train"]["reused"]
    (Path(first.stages["sample"]["dir"]) / ".done.json").unlink()
    independent("2")
    assert log.read_text() == "1ts2s2s"


def test_failed_stage_leaves_no_marker(tmp_path):
    pipe = pipeline.Pipeline(tmp_path, set(), False)
    with pytest.raises(SystemExit, match=r"stage broken failed \(exit 3\)"):
        pipe.stage("broken", lambda out: [[sys.executable, "-c", "raise SystemExit(3)"]])
    assert not list(tmp_path.glob("broken-*/.done.json"))


def test_profiles_pass_every_flag_their_stages_rely_on():
    for name in ("small", "smollm2"):
        profile = pipeline.load_profile(name)
        assert set(pipeline.FLAG_SECTIONS) <= set(profile)
        # the settings whose defaults other scripts change: pinned in the profile
        assert {"learning_rate", "num_epochs", "batch_size", "micro_batch_size", "tasks", "seed"} <= set(profile["sft"])
        assert {"learning_rate", "max_steps", "beta", "num_generations", "reward_type", "beam_search",
                "test_during_training", "seed"} <= set(profile["rl"])
    with pytest.raises(InputError, match="profiles: .*small"):
        pipeline.load_profile("nope")


def test_overrides_and_flags():
    profile = pipeline.apply_overrides(pipeline.load_profile("small"), ["rl.reward_type=rule", "sft.new_flag=3"])
    assert profile["rl"]["reward_type"] == "rule" and profile["sft"]["new_flag"] == "3"
    assert pipeline.load_profile("small")["rl"]["reward_type"] != "rule"  # the file's profile is untouched
    for bad in ("rl.reward_type", "reward_type=rule", "nosuch.flag=1"):
        with pytest.raises(InputError, match="--set"):
            pipeline.apply_overrides(profile, [bad])
    assert pipeline.as_flags({"a": True, "b": False, "c": 2}, fire=False) == ["--a", "--c", "2"]
    assert pipeline.as_flags({"a": True, "b": False}, fire=True) == ["--a", "True", "--b", "False"]


def test_find_dataset_flat_and_original_layout(tmp_path):
    flat = tiny.write_dataset(tmp_path / "flat")
    found = pipeline.find_dataset(tmp_path / "flat", "Toy_Store")
    assert found["index.json"] == flat["index"] and found["test.csv"] == flat["test"]

    amazon = tmp_path / "Amazon"
    names = {"train.csv": "train/Toy_Store_5_2016-10-2018-11.csv", "valid.csv": "valid/Toy_Store_5_2016-10-2018-11.csv",
             "test.csv": "test/Toy_Store_5_2016-10-2018-11.csv", "index.json": "index/Toy_Store.index.json",
             "item.json": "index/Toy_Store.item.json", "info.txt": "info/Toy_Store_5_2016-10-2018-11.txt"}
    for name, relative in names.items():
        (amazon / relative).parent.mkdir(parents=True, exist_ok=True)
        (amazon / relative).write_text((tmp_path / "flat" / name).read_text())
    found = pipeline.find_dataset(amazon, "Toy_Store")
    assert {name: path.relative_to(amazon).as_posix() for name, path in found.items()} == names
    with pytest.raises(InputError, match="--category Office_Products.*train.csv"):
        pipeline.find_dataset(amazon, "Office_Products")
    with pytest.raises(InputError, match="missing train.csv"):
        pipeline.find_dataset(tmp_path, "Toy_Store")


def test_paired_bootstrap():
    base = np.zeros(400)
    better = np.zeros(400)
    better[:40] = 1.0
    result = report.paired_bootstrap(base, better)
    assert result["diff"] == pytest.approx(0.1)
    assert 0 < result["low"] < 0.1 < result["high"]
    same = report.paired_bootstrap(better, better)
    assert same["low"] == same["high"] == 0.0
    assert report.paired_bootstrap(base, better) == result  # seeded
    with pytest.raises(ValueError, match="equal-length"):
        report.paired_bootstrap(base, better[:10])
    ranks = np.array([0, 3, -1, 12])
    assert list(report.per_row_metric(ranks, "HR@10")) == [1, 1, 0, 0]
    assert report.per_row_metric(ranks, "NDCG@10")[1] == pytest.approx(1 / np.log2(5))


def tiny_setup(root):
    """A tiny flat dataset, a tiny backbone folder and a profile that runs every stage in seconds."""
    paths = tiny.write_dataset(root / "data", n_items=8, n_users=16, seq_len=5)
    tok = tiny.make_tokenizer("gpt2_bpe")
    tok.pad_token = tok.eos_token
    tiny.make_model(tok).save_pretrained(root / "backbone")
    tok.save_pretrained(root / "backbone")
    profile = {
        "backbone": {"path": str(root / "backbone")},
        "test_rows": 5, "test_seed": 42,
        "sasrec": {"model": "SASRec", "epoch": 1, "early_stop": 1, "seed": 42, "batch_size": 16, "monitor": "NDCG@5"},
        "sft": {"tasks": "sid_history_to_sid", "num_epochs": 1, "learning_rate": 0.01, "batch_size": 8,
                "micro_batch_size": 8, "cutoff_len": 256, "group_by_length": False, "warmup_ratio": 0.0,
                "eval_sample": 8, "seed": 42},
        "eval": {"num_beams": 4, "batch_size": 4},
        "rl": {"train_batch_size": 8, "eval_batch_size": 8, "num_generations": 4, "max_steps": 2,
               "learning_rate": 0.001, "beta": 0.0, "beam_search": True, "reward_type": "rule",
               "add_gt": True, "dynamic_sampling": False, "test_during_training": False, "eval_step": 1000000,
               "eval_sample": 8, "save_steps": 100, "cutoff_len": 256, "seed": 42,
               "rl_tasks": "sid_history_to_sid,title_description_to_sid,title_history_to_sid:8"},
    }
    (root / "tiny.json").write_text(json.dumps(profile))
    return paths


@pytest.mark.slow
def test_whole_run_on_a_given_dataset(tmp_path):
    tiny_setup(tmp_path)
    argv = ["--profile", str(tmp_path / "tiny.json"), "--data_dir", str(tmp_path / "data"), "--category", "Toy_Store",
            "--runs_dir", str(tmp_path / "runs"), "--results_dir", str(tmp_path / "results"), "--nproc", "1"]
    report_dir = pipeline.run(argv)
    assert report_dir == tmp_path / "results" / "Toy_Store-tiny"
    summary = json.loads((report_dir / "results.json").read_text())
    assert set(summary["models"]) == {"Popularity", "SASRec", "SFT", "SFT+RL"}
    assert {m["n_rows"] for m in (summary["models"]["SFT"], summary["models"]["SFT+RL"])} == {5}
    assert set(summary["rl_vs_sft"]) == {"HR@10", "NDCG@10"}
    assert summary["profile"]["name"] == "tiny" and summary["commit"]
    assert "SFT+RL minus SFT" in (report_dir / "results.md").read_text()
    run = first_run = json.loads((tmp_path / "runs" / "Toy_Store-tiny" / "run.json").read_text())
    # the given index is used as it is: no data/SID stages; the test sample is a stage
    assert list(run["stages"]) == ["test_sample", "sasrec", "sft", "eval_sft", "rl", "eval_rl"]
    assert run["dataset"]["index.json"] == str(tmp_path / "data" / "index.json")
    folder, commands = pipeline.finished_stage(tmp_path / "runs" / "Toy_Store-tiny", "rl")
    assert folder == Path(run["stages"]["rl"]["dir"]) and "rl.py" in commands[0]
    with pytest.raises(InputError, match="no stage 'embeddings'"):
        pipeline.finished_stage(tmp_path / "runs" / "Toy_Store-tiny", "embeddings")

    # re-ranking the SFT's beams by SASRec: lambda 0 is the SFT's own order and metrics
    sasrec_rerank.main(["--run", "Toy_Store-tiny", "--runs_dir", str(tmp_path / "runs"),
                        "--out_dir", str(tmp_path / "analysis")])
    rerank = json.loads((tmp_path / "analysis" / "Toy_Store-tiny-sasrec-rerank.json").read_text())
    for metric in ("HR@1", "HR@3", "NDCG@3"):
        assert rerank["lambdas"]["0.0"]["metrics"][metric] == pytest.approx(summary["models"]["SFT"][metric])
    assert rerank["lambdas"]["0.0"]["vs_sft"]["HR@3"]["diff"] == 0
    # the pmi reward's optimum: the same SFT order at lambda 0, another SASRec term after it
    sasrec_rerank.main(["--run", "Toy_Store-tiny", "--sasrec_score", "pmi", "--runs_dir", str(tmp_path / "runs"),
                        "--out_dir", str(tmp_path / "analysis")])
    pmi = json.loads((tmp_path / "analysis" / "Toy_Store-tiny-pmi-sasrec-rerank.json").read_text())
    assert pmi["sasrec_score"] == "pmi" and pmi["lambdas"]["0.0"]["metrics"] == rerank["lambdas"]["0.0"]["metrics"]

    # an RL override reuses every stage before RL; one naming a flag the stage passes itself
    # (RL prompts from the validation rows) replaces it instead of passing it twice
    pipeline.run(argv + ["--set", "rl.reward_type=ranking", "--set", "rl.train_file={valid_csv}", "--run", "other"])
    run = json.loads((tmp_path / "runs" / "other" / "run.json").read_text())
    assert [name for name, stage in run["stages"].items() if not stage["reused"]] == ["rl", "eval_rl"]
    _, commands = pipeline.finished_stage(tmp_path / "runs" / "other", "rl")
    assert commands[0].count("--train_file") == 1
    assert commands[0][commands[0].index("--train_file") + 1] == str(tmp_path / "data" / "valid.csv")

    # scored on validation rows instead (choosing settings without the test rows): the same SFT,
    # a sample of valid.csv, the report says so
    valid_report = pipeline.run(argv + ["--eval_split", "valid", "--run", "valid"])
    run = json.loads((tmp_path / "runs" / "valid" / "run.json").read_text())
    assert run["stages"]["sft"]["reused"] and not run["stages"]["test_sample"]["reused"]
    _, commands = pipeline.finished_stage(tmp_path / "runs" / "valid", "test_sample")
    assert commands[0][commands[0].index("--input") + 1] == str(tmp_path / "data" / "valid.csv")
    assert "validation rows" in (valid_report / "results.md").read_text()
    assert json.loads((valid_report / "results.json").read_text())["eval_split"] == "valid"

    # confirming a choice on rows that took no part in it: the test rows outside the sample, or,
    # for a choice made on validation rows, every test row
    n_test = len(data.read_split_csv(tmp_path / "data" / "test.csv"))
    for name, heldout in (("Toy_Store-tiny", n_test - 5), ("valid", n_test)):
        confirm_heldout.main(["--run", name, "--runs_dir", str(tmp_path / "runs"),
                              "--out_dir", str(tmp_path / "heldout")])
        confirmed = json.loads((tmp_path / "heldout" / f"{name}.json").read_text())
        assert confirmed["heldout_rows"] == heldout and set(confirmed["rl_vs_sft"]) == {"HR@10", "NDCG@10"}
    # every test row scored (--test_rows -1): nothing is left to confirm on, and confirm says so
    pipeline.run(argv + ["--test_rows", "-1", "--run", "all_rows", "--until", "eval_sft"])
    _, commands = pipeline.finished_stage(tmp_path / "runs" / "all_rows", "test_sample")
    assert len(data.read_split_csv(commands[0][commands[0].index("--output") + 1])) == n_test
    with pytest.raises(InputError, match="none is held out"):
        confirm_heldout.main(["--run", "all_rows", "--runs_dir", str(tmp_path / "runs"),
                              "--out_dir", str(tmp_path / "heldout")])
    prediction_popularity.main(["--run", "Toy_Store-tiny", "--runs_dir", str(tmp_path / "runs"),
                                "--out_dir", str(tmp_path / "analysis"), "--top_n", "3"])
    shares = json.loads((tmp_path / "analysis" / "Toy_Store-tiny-popularity.json").read_text())["models"]
    assert set(shares) == {"SFT", "SFT+RL", "SASRec"} and all(0 <= m["top_n_share"] <= 1 for m in shares.values())
    sasrec_rerank.main(["--run", "Toy_Store-tiny", "--heldout", "--runs_dir", str(tmp_path / "runs"),
                        "--out_dir", str(tmp_path / "analysis")])
    rerank = json.loads((tmp_path / "analysis" / "Toy_Store-tiny-heldout-sasrec-rerank.json").read_text())
    assert rerank["rows"] == n_test - 5 and rerank["lambdas"]["0.0"]["vs_sft"]["HR@3"]["diff"] == 0

    # a finished stage replayed twice (one process): the same weights and predictions as its own run
    run_twice.main(["--run", "Toy_Store-tiny", "--stage", "sft", "--nproc", "1", "--runs_dir", str(tmp_path / "runs"),
                    "--out_dir", str(tmp_path / "repro")])
    replayed = json.loads((tmp_path / "repro" / "Toy_Store-tiny-sft-nproc1.json").read_text())
    assert replayed["weights_first_vs_second"]["identical"]
    assert replayed["predictions_first_vs_second"]["identical_bytes"]
    assert replayed["predictions_first_vs_stage"]["identical_bytes"]

    # the same command again from scratch (one process): the same predictions, bit for bit
    again = pipeline.run([*argv[:argv.index("--runs_dir")], "--runs_dir", str(tmp_path / "runs2"),
                          "--results_dir", str(tmp_path / "results2"), "--nproc", "1"])
    rerun = json.loads((tmp_path / "runs2" / "Toy_Store-tiny" / "run.json").read_text())
    for key in ("eval_sft_dir", "eval_rl_dir"):
        first = (Path(first_run["outputs"][key]) / "predictions.json").read_bytes()
        assert (Path(rerun["outputs"][key]) / "predictions.json").read_bytes() == first
    assert json.loads((again / "results.json").read_text())["models"] == summary["models"]


def test_test_sample_and_its_complement_partition_the_split(tmp_path):
    paths = tiny.write_dataset(tmp_path, n_users=40)
    rows = data.read_split_csv(paths["train"])
    sample, rest = tmp_path / "sample.csv", tmp_path / "rest.csv"
    sample_rows.main(["--input", str(paths["train"]), "--output", str(sample), "--rows", "25", "--seed", "3"])
    sample_rows.main(["--input", str(paths["train"]), "--output", str(rest), "--rows", "25", "--seed", "3",
                      "--complement"])
    key = lambda r: (r.user_id, r.item_id, tuple(r.history_item_id))  # noqa: E731
    chosen, left = ([key(r) for r in data.read_split_csv(p)] for p in (sample, rest))
    assert len(chosen) == 25 and len(left) == len(rows) - 25
    assert sorted(chosen + left) == sorted(key(r) for r in rows)
    # the sample is random.sample over the rows, as it always was; the complement keeps file order
    assert chosen == [key(r) for r in random.Random(3).sample(rows, 25)]
    assert left == [key(r) for r in rows if key(r) not in set(chosen)]


def test_popularity_profile_of_known_lists():
    counts = Counter({1: 10, 2: 5, 3: 1})  # item 4 never a training target
    profile = prediction_popularity.popularity_profile([[1, 2], [3, 4]], counts, top_n=2)
    assert profile["top_n_share"] == 0.5
    assert profile["mean_log_count"] == pytest.approx(np.mean(np.log1p([10, 5, 1, 0])))
