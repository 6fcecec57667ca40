"""ablate.py: one pipeline run per (variant, seed) with the grid's flags, then a table of the mean and
95% interval per variant and metric, paired differences to the first variant and to SFT, and a
plot. The pipeline is replaced by a stand-in that writes predictions with a known hit rate per
variant (tests/test_pipeline.py runs the real one)."""

import json
from pathlib import Path

import numpy as np
import pytest

import ablate
import data
import pipeline
from runtime import InputError

N_ROWS = 300
TARGETS = [f"<a_{i % 7}><b_{i}>" for i in range(N_ROWS)]


def _predictions(path: Path, hits: np.ndarray):
    """Rows whose target is first in the list where `hits`, absent elsewhere."""
    path.mkdir(parents=True, exist_ok=True)
    rows = [{"output": t, "predict": [t if hit else "<a_x>", "<a_y>"]} for t, hit in zip(TARGETS, hits)]
    (path / "predictions.json").write_text(json.dumps(rows))


def fake_run(calls):
    """A pipeline.run stand-in: SFT hits the first 60 rows; RL adds rl.bonus rows, and as many as
    the seed's remainder modulo 3."""
    def run(argv):
        calls.append(argv)
        settings = dict(argv[i + 1].split("=", 1) for i, flag in enumerate(argv) if flag == "--set")
        runs_dir = Path(argv[argv.index("--runs_dir") + 1])
        run_dir = runs_dir / argv[argv.index("--run") + 1]
        seed = int(settings["rl.seed"])
        sft_hits = np.arange(N_ROWS) < 60
        rl_hits = np.arange(N_ROWS) < 60 + int(settings.get("rl.bonus", 0)) + seed % 3
        _predictions(run_dir / "eval_sft", sft_hits)
        _predictions(run_dir / "eval_rl", rl_hits)
        record = {"outputs": {"eval_sft_dir": str(run_dir / "eval_sft"), "eval_rl_dir": str(run_dir / "eval_rl")},
                  "commit": "abc123", "stages": {"sft": {"seconds": 5.0}, "rl": {"seconds": 10.0 + seed}}}
        (run_dir / "run.json").write_text(json.dumps(record))
        return run_dir
    return run


def test_grid_table_and_plot(tmp_path, monkeypatch):
    grid = {"pipeline": ["--profile", "small"], "model": "SFT+RL", "seeds": [1, 2], "seed_flags": ["rl.seed"],
            "metrics": ["HR@1", "NDCG@2"],
            "variants": {"plain": [], "bonus": ["--set", "rl.bonus=30"]}}
    (tmp_path / "g.json").write_text(json.dumps(grid))
    calls = []
    monkeypatch.setattr(pipeline, "run", fake_run(calls))
    summary = ablate.main(["--grid", str(tmp_path / "g.json"), "--runs_dir", str(tmp_path / "runs"),
                           "--out_dir", str(tmp_path / "out")])

    assert len(calls) == 4
    assert calls[1] == ["--profile", "small", "--set", "rl.seed=2", "--run", "g/plain/seed2", "--runs_dir",
                        str(tmp_path / "runs"), "--results_dir", str(tmp_path / "runs" / "reports"), "--until", "eval_rl"]
    assert calls[3][2:6] == ["--set", "rl.bonus=30", "--set", "rl.seed=2"]
    plain, bonus = summary["plain"], summary["bonus"]
    # seeds 1 and 2 add 1 and 2 hit rows: HR@1 = (60 + s) / 300
    assert plain["HR@1"]["per_seed"] == pytest.approx([61 / 300, 62 / 300])
    assert plain["HR@1"]["mean"] == pytest.approx(61.5 / 300)
    assert plain["HR@1"]["low"] < plain["HR@1"]["mean"] < plain["HR@1"]["high"]
    assert bonus["HR@1"]["mean"] == pytest.approx(91.5 / 300)
    assert bonus["HR@1"]["vs_reference"]["diff"] == pytest.approx(0.1)
    assert bonus["HR@1"]["vs_reference"]["low"] > 0
    assert "vs_reference" not in plain["HR@1"]
    assert bonus["HR@1"]["vs_sft"]["diff"] == pytest.approx(31.5 / 300)
    assert plain["HR@1"]["vs_sft"]["low"] >= 0 and plain["HR@1"]["vs_sft"]["diff"] == pytest.approx(1.5 / 300)
    assert bonus["train_seconds"] == pytest.approx(11.5)
    table = (tmp_path / "out" / "table.md").read_text()
    assert "| bonus | 0.3050 [" in table and "abc123" in table and "HR@1 vs SFT [95%]" in table
    assert (tmp_path / "out" / "plot.png").stat().st_size > 0
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["summary"]["bonus"]["NDCG@2"]["mean"] == pytest.approx(bonus["NDCG@2"]["mean"])


def test_one_seed_interval_is_a_row_bootstrap():
    rows = np.zeros(200)
    rows[:50] = 1
    mean, low, high = ablate.interval([0.25], rows)
    assert mean == 0.25 and low < 0.25 < high and high - low < 0.15


def test_bad_grids(tmp_path):
    with pytest.raises(InputError, match="not found"):
        ablate.load_grid(tmp_path / "none.json")
    (tmp_path / "g.json").write_text(json.dumps({"pipeline": [], "model": "RL", "seeds": [1], "seed_flags": [],
                                                 "metrics": ["HR@10"], "variants": {"a": []}}))
    with pytest.raises(InputError, match="model 'RL'"):
        ablate.load_grid(tmp_path / "g.json")


def test_shipped_grids_name_real_profile_flags():
    for path in sorted((ablate.REPO / "config" / "ablations").glob("*.json")):
        grid = ablate.load_grid(path)
        profile = pipeline.load_profile(grid["pipeline"][grid["pipeline"].index("--profile") + 1])
        for flags in grid["variants"].values():
            overrides = [flags[i + 1] for i, flag in enumerate(flags) if flag == "--set"]
            pipeline.apply_overrides(profile, overrides)  # raises on a malformed one
        for flag in grid["seed_flags"]:
            section, name = flag.split(".")
            assert name in profile[section], (path.name, flag)


def test_grid_on_another_dataset(tmp_path, monkeypatch):
    grid = {"pipeline": ["--profile", "small"], "model": "SFT", "seeds": [7], "seed_flags": ["rl.seed"],
            "metrics": ["HR@1"], "variants": {"only": []}}
    (tmp_path / "g.json").write_text(json.dumps(grid))
    calls = []
    monkeypatch.setattr(pipeline, "run", fake_run(calls))
    ablate.main(["--grid", str(tmp_path / "g.json"), "--runs_dir", str(tmp_path / "runs"), "--name", "g-office",
                 "--out_dir", str(tmp_path / "out"), "--pipeline_args", "--data_dir 'my data' --category Office_Products"])
    assert calls[0][:6] == ["--profile", "small", "--data_dir", "my data", "--category", "Office_Products"]
    assert calls[0][calls[0].index("--run") + 1] == "g-office/only/seed7"
    assert calls[0][-2:] == ["--until", "eval_sft"]
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["grid"]["name"] == "g-office"


def test_variants_with_other_sids_compare_on_the_same_test_rows(tmp_path):
    """A grid over SID methods: the same test rows under other SID strings are comparable; other
    rows are not."""
    grid = {"model": "SFT", "seeds": [1], "metrics": ["HR@1"], "variants": {"a": [], "b": [], "c": []}}
    rows = [{"user_id": f"U{i}", "item_id": i, "history_item_id": [i + 1], "item_sid": t,
             "history_item_sid": ["<a_1><b_1>"], "item_title": "x", "history_item_title": ["y"]}
            for i, t in enumerate(TARGETS)]
    cells = {}
    for variant, sid_prefix, first_user in (("a", "<a_", 0), ("b", "<z_", 0), ("c", "<z_", 1)):
        folder = tmp_path / variant
        variant_rows = [{**row, "user_id": f"U{i + first_user}", "item_sid": row["item_sid"].replace("<a_", sid_prefix)}
                        for i, row in enumerate(rows)]
        data.write_split_csv(variant_rows, folder / "sample" / "test.csv")
        (folder / "eval").mkdir(parents=True)
        (folder / "eval" / "predictions.json").write_text(json.dumps(
            [{"output": r["item_sid"], "predict": [r["item_sid"]]} for r in variant_rows]))
        cells[variant, 1] = {"run_dir": str(folder), "outputs": {"eval_sft_dir": str(folder / "eval")},
                             "stages": {"sft": {"seconds": 1.0}, "test_sample": {"dir": str(folder / "sample")}}}
    with pytest.raises(ValueError, match="variants a and c were scored on different test rows"):
        ablate.summarise(grid, cells)
    del grid["variants"]["c"]
    summary = ablate.summarise(grid, cells)
    assert summary["b"]["HR@1"]["vs_reference"]["diff"] == 0.0
