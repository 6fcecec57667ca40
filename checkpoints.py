"""Trainer checkpoints a resumed run can trust (sft.py, rl.py).

- A checkpoint becomes visible only when complete: the Trainer writes it under
  `output_dir/.incomplete/checkpoint-N`, and the main process renames it to `output_dir/checkpoint-N`
  once every process has written its part. A kill mid-save leaves no `checkpoint-N` behind (the
  staging copy is removed at the next save).
- Every checkpoint carries a run record (`run_record.json`, written last): the run's settings (all
  flags but the ones that do not change what a step computes, NOT_PART_OF_THE_RUN), the size and
  mtime of every input file (or model folder's files) a flag names, and the number of processes.
- `resume_from_checkpoint=True` resumes the newest checkpoint whose record matches this run, and
  says which; checkpoints of another run (saying what differs) and checkpoints without a record
  (cut short, or written by another program) are skipped with a warning. With no such checkpoint
  the run starts from step 0. An explicit folder is used as given (with a warning when its record
  differs); one that is not a complete checkpoint is an InputError.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import re
import shutil
from pathlib import Path

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

from modeling import save_pretrained_atomic
from runtime import InputError

logger = logging.getLogger(__name__)

RECORD_NAME = "run_record.json"
TRAINER_STATE_NAME = "trainer_state.json"
STAGING_NAME = ".incomplete"
# flags that change where or how a run reports, saves or tests, or where it stops (a finished run
# may be resumed to train longer), not what its steps compute
NOT_PART_OF_THE_RUN = frozenset({
    "output_dir", "resume_from_checkpoint", "wandb_project", "wandb_run_name", "logging_steps",
    "log_completions", "save_steps", "save_total_limit", "decode_batch_size", "test_during_training",
    "test_beam", "test_file", "test_sample", "max_steps", "num_epochs", "num_train_epochs",
})
_CHECKPOINT = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")


# --- the run record -----------------------------------------------------------------------------


def _stamp(path: Path):
    """Size and mtime of a file; of each file in a folder (a model folder: its weights, config and
    tokenizer files), by name."""
    if path.is_file():
        stat = path.stat()
        return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    return {f.name: _stamp(f) for f in sorted(path.iterdir()) if f.is_file()}


def flag_defaults(entry_point) -> dict:
    """The default of each flag of an entry point (its keyword parameters)."""
    return {name: parameter.default for name, parameter in inspect.signature(entry_point).parameters.items()
            if parameter.default is not inspect.Parameter.empty}


def run_record(settings: dict, defaults: dict | None = None) -> dict:
    """What identifies a run: its settings (flag -> value, without NOT_PART_OF_THE_RUN), a stamp of
    each input a string setting names, and the number of processes; with the flags' `defaults`, a
    flag added to the script after a checkpoint was saved does not make it another run while it
    keeps its default. JSON-normal (tuples as lists), so a record read back compares equal."""
    kept = {name: value for name, value in sorted(settings.items()) if name not in NOT_PART_OF_THE_RUN}
    inputs = {name: _stamp(Path(value)) for name, value in kept.items()
              if isinstance(value, str) and value and Path(value).exists()}
    record = {"settings": kept, "inputs": inputs, "world_size": int(os.environ.get("WORLD_SIZE", "1")),
              "defaults": {name: value for name, value in (defaults or {}).items() if name in kept}}
    return json.loads(json.dumps(record, default=str))


def differences(saved: dict, current: dict) -> list[str]:
    """What makes `saved` another run than `current`, one phrase per difference."""
    if not saved.get("settings"):
        return ["the checkpoint has no run settings"]
    found = []
    for name in sorted(set(saved["settings"]) | set(current["settings"])):
        before, now = saved["settings"].get(name, "(unset)"), current["settings"].get(name, "(unset)")
        added_since_at_its_default = name not in saved["settings"] and now == current.get("defaults", {}).get(
            name, "(unset)")
        if before != now and not added_since_at_its_default:
            found.append(f"--{name} was {before!r}, now {now!r}")
    for name in sorted(set(saved.get("inputs", {})) | set(current["inputs"])):
        if name in saved["settings"] and saved["settings"].get(name) != current["settings"].get(name):
            continue  # already named as a changed flag
        if saved.get("inputs", {}).get(name) != current["inputs"].get(name):
            found.append(f"--{name} {current['settings'].get(name)}: changed on disk since the checkpoint")
    if saved.get("world_size") != current["world_size"]:
        found.append(f"{saved.get('world_size')} processes then, {current['world_size']} now")
    return found


def read_record(checkpoint: Path) -> dict | None:
    """The checkpoint's run record, or None when it has none (the save was cut short, or another
    program wrote it)."""
    try:
        return json.loads((checkpoint / RECORD_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


# --- choosing the checkpoint to resume ------------------------------------------------------------


def checkpoints_newest_first(output_dir) -> list[Path]:
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if p.is_dir() and (m := _CHECKPOINT.match(p.name))]
    return [path for _, path in sorted(found, reverse=True)]


def resolve_resume(resume_from_checkpoint, output_dir, record: dict) -> str | None:
    """The checkpoint folder Trainer.train should resume, or None to start at step 0 (see the
    module docstring). `resume_from_checkpoint` is None/False/"" (start fresh), True, or a folder."""
    if resume_from_checkpoint in (None, False, ""):
        return None
    if resume_from_checkpoint is not True:
        return _explicit_checkpoint(Path(resume_from_checkpoint), record)
    for checkpoint in checkpoints_newest_first(output_dir):
        saved = read_record(checkpoint)
        if saved is None:
            logger.warning("resume: skipping %s: incomplete (no %s: its save was cut short, or another "
                           "program wrote it)", checkpoint, RECORD_NAME)
            continue
        changed = differences(saved, record)
        if changed:
            logger.warning("resume: skipping %s: another run's checkpoint (%s)", checkpoint, "; ".join(changed))
            continue
        logger.info("resume: continuing this run from %s", checkpoint)
        return str(checkpoint)
    logger.warning("resume: no complete checkpoint of this run in %s: training from step 0", output_dir)
    return None


def _explicit_checkpoint(checkpoint: Path, record: dict) -> str:
    flag = f"--resume_from_checkpoint {checkpoint}"
    if not checkpoint.is_dir():
        raise InputError(f"{flag}: not a folder (give a checkpoint-N folder, or True for this run's newest)")
    if not (checkpoint / TRAINER_STATE_NAME).is_file():
        raise InputError(f"{flag}: not a complete checkpoint (no {TRAINER_STATE_NAME}); give an earlier "
                         f"checkpoint-N, or True for this run's newest complete one")
    saved = read_record(checkpoint)
    changed = differences(saved, record) if saved is not None else [f"it has no {RECORD_NAME}"]
    if changed:
        logger.warning("resume: %s is used as given, although %s", checkpoint, "; ".join(changed))
    logger.info("resume: continuing from %s", checkpoint)
    return str(checkpoint)


# --- writing checkpoints -------------------------------------------------------------------------------


class RunCheckpoints:
    """Trainer mixin (first among the bases): checkpoints staged and renamed into place when
    complete, each with the trainer's `run_record` (set it before train(); see run_record), and
    train(resume_from_checkpoint=True) resolved by resolve_resume."""

    run_record: dict | None = None
    _staging: Path | None = None  # set while a checkpoint is being written

    def train(self, resume_from_checkpoint=None, *args, **kwargs):
        if resume_from_checkpoint is True and self.run_record is None:
            raise RuntimeError("set trainer.run_record (checkpoints.run_record) before resuming with True")
        resume = resolve_resume(resume_from_checkpoint, self.args.output_dir, self.run_record)
        return super().train(resume, *args, **kwargs)

    def _get_output_dir(self, trial):
        return str(self._staging) if self._staging is not None else super()._get_output_dir(trial)

    def _save_checkpoint(self, model, trial):
        run_dir = Path(super()._get_output_dir(trial))
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        staging_root = run_dir / STAGING_NAME
        if self.args.should_save and staging_root.is_dir():
            for leftover in staging_root.iterdir():  # a save cut short by a kill
                if leftover.name != name:
                    shutil.rmtree(leftover, ignore_errors=True)
        self._staging = staging_root
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._staging = None
        if self.state.best_model_checkpoint and Path(self.state.best_model_checkpoint).parent == staging_root:
            self.state.best_model_checkpoint = str(run_dir / Path(self.state.best_model_checkpoint).name)
        self.accelerator.wait_for_everyone()  # every process has written its files
        if self.args.should_save:
            staged, final = staging_root / name, run_dir / name
            # trainer_state.json was written while the best checkpoint's path still named the staging folder
            self.state.save_to_json(str(staged / TRAINER_STATE_NAME))
            (staged / RECORD_NAME).write_text(json.dumps(self.run_record or {}, indent=1), encoding="utf-8")
            if final.exists():  # a checkpoint of an earlier run at the same step
                shutil.rmtree(final)
            os.replace(staged, final)
            rotate_checkpoints(output_dir=str(run_dir), save_total_limit=self.args.save_total_limit,
                               best_model_checkpoint=self.state.best_model_checkpoint, use_mtime=True)
        self.accelerator.wait_for_everyone()  # no process goes on before the checkpoint is visible


def save_outputs(trainer, tokenizer, output_dir):
    """What a finished run leaves, as the original's sft.py/rl.py: the (best) model in output_dir
    (`trainer.save_model`), and model + tokenizer in output_dir/final_checkpoint (atomically)."""
    trainer.save_model(output_dir)
    if trainer.is_world_process_zero():
        trainer.save_state()
        final = Path(output_dir) / "final_checkpoint"
        save_pretrained_atomic(trainer.accelerator.unwrap_model(trainer.model), tokenizer, final)
        logger.info("saved %s and %s", output_dir, final)
