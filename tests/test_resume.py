"""Resume takes only a complete checkpoint of the same run (checkpoints.py), and saved models keep the
usual file mode."""

from __future__ import annotations

import json
import logging
import os
import shutil

import pytest

import checkpoints
import data
import rl
import sft
from modeling import save_pretrained_atomic
from runtime import InputError
from tests import tiny


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    paths = tiny.write_dataset(root / "data", n_items=16, n_users=40)
    tiny.write_base_model(root / "base")
    return root, paths


def _sft_args(root, paths, out, **overrides):
    args = dict(
        base_model=str(root / "base"), train_file=str(paths["train"]), eval_file=str(paths["valid"]),
        sid_index_path=str(paths["index"]), item_meta_path=str(paths["item"]), output_dir=str(out),
        category=paths["category"], batch_size=16, micro_batch_size=8, max_steps=3, eval_per_epoch=100,
        eval_sample=8, learning_rate=3e-3, logging_steps=1, seed=0, tasks="sid_history_to_sid:64",
    )
    args.update(overrides)
    return args


def _trained_steps(trainer) -> list[int]:
    return [h["step"] for h in trainer.state.log_history if "loss" in h]


def test_checkpoints_are_complete_and_recorded(workspace, tmp_path):
    root, paths = workspace
    out = tmp_path / "out"
    trainer = sft.train(**_sft_args(root, paths, out))
    found = checkpoints.checkpoints_newest_first(out)
    assert found
    for checkpoint in found:
        record = checkpoints.read_record(checkpoint)
        assert record == trainer.run_record and record["settings"]["learning_rate"] == 3e-3
        assert "output_dir" not in record["settings"] and set(record["inputs"]) >= {"train_file", "base_model"}
        state = json.loads((checkpoint / "trainer_state.json").read_text())
        assert state["best_model_checkpoint"] in {str(c) for c in found}  # not the staging folder
    assert not any((out / checkpoints.STAGING_NAME).iterdir())


def test_foreign_checkpoint_is_not_resumed(workspace, tmp_path, caplog):
    """Point 3: a folder holding an older run's checkpoint; the new run (other settings) starts at
    step 0 instead of taking it, and says what differs."""
    root, paths = workspace
    out = tmp_path / "out"
    old = sft.train(**_sft_args(root, paths, out, learning_rate=1e-2))
    assert old.state.global_step == 3
    with caplog.at_level(logging.INFO, logger="checkpoints"):
        new = sft.train(**_sft_args(root, paths, out, resume_from_checkpoint=True))
    assert _trained_steps(new) == [1, 2, 3]
    assert max(h["learning_rate"] for h in new.state.log_history if "loss" in h) <= 3e-3  # not the old run's
    assert "another run's checkpoint (--learning_rate was 0.01, now 0.003)" in caplog.text
    assert "no complete checkpoint of this run" in caplog.text


def test_incomplete_checkpoint_is_skipped(workspace, tmp_path, caplog):
    """Point 4: a checkpoint cut short by a kill (no trainer state, no run record) is skipped with a
    warning and the newest complete one of the run is resumed."""
    root, paths = workspace
    out = tmp_path / "out"
    sft.train(**_sft_args(root, paths, out, max_steps=2))
    complete = checkpoints.checkpoints_newest_first(out)[0]
    cut_short = out / "checkpoint-3"
    shutil.copytree(complete, cut_short)
    for name in ("trainer_state.json", checkpoints.RECORD_NAME):
        (cut_short / name).unlink()
    (out / checkpoints.STAGING_NAME / "checkpoint-4").mkdir(parents=True)  # a staged save, killed
    with caplog.at_level(logging.INFO, logger="checkpoints"):
        resumed = sft.train(**_sft_args(root, paths, out, max_steps=4, resume_from_checkpoint=True))
    assert f"skipping {cut_short}: incomplete" in caplog.text
    assert f"continuing this run from {complete}" in caplog.text
    assert _trained_steps(resumed) == [1, 2, 3, 4]  # the checkpoint's history, then the steps after it
    assert all(checkpoints.read_record(c) == resumed.run_record for c in checkpoints.checkpoints_newest_first(out))
    assert not (out / checkpoints.STAGING_NAME / "checkpoint-4").exists()


def test_rl_resume_skips_another_runs_checkpoint(tmp_path, caplog):
    """SFT and RL alike: ReReTrainer saves recorded checkpoints and resolves True the same way."""
    paths = tiny.write_dataset(tmp_path / "data", n_items=8, n_users=16, seq_len=5)
    tok = tiny.tokenizer_with_sids("gpt2_bpe", data.read_index(paths["index"]))
    tiny.make_model(tok).save_pretrained(tmp_path / "ckpt")
    tok.save_pretrained(tmp_path / "ckpt")
    args = dict(
        model_path=str(tmp_path / "ckpt"), train_file=str(paths["train"]), eval_file=str(paths["valid"]),
        info_file=str(paths["info"]), sid_index_path=str(paths["index"]), item_meta_path=str(paths["item"]),
        output_dir=str(tmp_path / "out"), category=paths["category"], train_batch_size=8, eval_batch_size=8,
        num_generations=4, beam_search=True, max_steps=2, eval_step=1000, save_steps=1,
        learning_rate=1e-3, eval_sample=8, seed=0,
    )
    first = rl.train(**args)
    assert checkpoints.read_record(tmp_path / "out" / "checkpoint-2") == first.run_record
    with caplog.at_level(logging.INFO, logger="checkpoints"):
        other = rl.train(**dict(args, beta=0.5, resume_from_checkpoint=True))
    assert "--beta was 0.04, now 0.5" in caplog.text
    assert _trained_steps(other) == [1, 2]


def _record(**settings):
    return checkpoints.run_record({"learning_rate": 1e-3, "output_dir": "out", **settings})


def test_record_names_what_differs(tmp_path):
    train_file = tmp_path / "train.csv"
    train_file.write_text("a\n")
    saved = _record(train_file=str(train_file))
    assert checkpoints.differences(saved, _record(train_file=str(train_file), output_dir="elsewhere")) == []
    train_file.write_text("a, longer\n")
    assert checkpoints.differences(saved, _record(train_file=str(train_file))) == [
        f"--train_file {train_file}: changed on disk since the checkpoint"]
    assert checkpoints.differences(saved, _record(train_file=str(train_file), learning_rate=0.1))[0] == \
        "--learning_rate was 0.001, now 0.1"
    assert checkpoints.differences({}, saved) == ["the checkpoint has no run settings"]
    # a flag the script gained after the checkpoint: the same run while it keeps its default
    older = _record()
    newer = checkpoints.run_record({**older["settings"], "optim": "adamw_torch"}, {"optim": "adamw_torch"})
    assert checkpoints.differences(older, newer) == []
    changed = checkpoints.run_record({**older["settings"], "optim": "adamw_torch_fused"}, {"optim": "adamw_torch"})
    assert checkpoints.differences(older, changed) == ["--optim was '(unset)', now 'adamw_torch_fused'"]


def test_explicit_checkpoint_folder(tmp_path, caplog):
    record = _record()
    with pytest.raises(InputError, match="not a folder"):
        checkpoints.resolve_resume(str(tmp_path / "none"), tmp_path, record)
    cut_short = tmp_path / "checkpoint-5"
    cut_short.mkdir()
    with pytest.raises(InputError, match="not a complete checkpoint"):
        checkpoints.resolve_resume(str(cut_short), tmp_path, record)
    (cut_short / "trainer_state.json").write_text("{}")
    with caplog.at_level(logging.INFO, logger="checkpoints"):
        assert checkpoints.resolve_resume(str(cut_short), tmp_path, record) == str(cut_short)
    assert "used as given, although it has no run_record.json" in caplog.text
    assert checkpoints.resolve_resume(False, tmp_path, record) is None
    assert checkpoints.resolve_resume(True, tmp_path / "missing", record) is None


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_saved_model_folder_follows_the_umask(tmp_path, umask):
    """Point 9: final_checkpoint is not created with mkdtemp's 0700."""
    tok = tiny.make_tokenizer("gpt2_bpe")
    previous = os.umask(umask)
    try:
        save_pretrained_atomic(tiny.make_model(tok), tok, tmp_path / "final_checkpoint")
    finally:
        os.umask(previous)
    assert (tmp_path / "final_checkpoint").stat().st_mode & 0o777 == 0o777 & ~umask
    assert [p.name for p in tmp_path.iterdir()] == ["final_checkpoint"]
