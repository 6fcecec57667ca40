"""pipeline.py's stage markers: a finished stage is skipped only while its commands are unchanged
and nothing before it ran again; a redone stage redoes every stage after it."""

import json
import sys

import pytest

import pipeline


def _append(path, text):
    return [sys.executable, "-c", f"open({str(path)!r}, 'a').write({text!r})"]


def _run(run_dir, log, second="b", force_stages=(), force=False):
    pipe = pipeline.Pipeline(run_dir, run_dir, set(force_stages), force)
    pipe.stage("first", _append(log, "a"))
    pipe.stage("second", _append(log, second))
    pipe.stage("third", _append(log, "c"))
    return pipe


def test_stages_skip_when_unchanged_and_redo_downstream(tmp_path):
    log = tmp_path / "log.txt"
    pipe = _run(tmp_path, log)
    assert log.read_text() == "abc"
    assert set(json.loads((tmp_path / ".done" / "second.json").read_text())) == {"seconds", "commands"}
    assert set(pipe.timings) == {"first", "second", "third"}

    _run(tmp_path, log)  # everything finished with the same commands
    assert log.read_text() == "abc"

    _run(tmp_path, log, second="B")  # second's command changed: second and third again
    assert log.read_text() == "abcBc"

    _run(tmp_path, log, second="B", force_stages={"first"})  # first forced: all again
    assert log.read_text() == "abcBcaBc"

    _run(tmp_path, log, second="B", force=True)
    assert log.read_text() == "abcBcaBcaBc"


def test_failed_stage_leaves_no_marker(tmp_path):
    pipe = pipeline.Pipeline(tmp_path, tmp_path, set(), False)
    with pytest.raises(SystemExit, match=r"stage broken failed \(exit 3\)"):
        pipe.stage("broken", [sys.executable, "-c", "raise SystemExit(3)"])
    assert not (tmp_path / ".done" / "broken.json").exists()
