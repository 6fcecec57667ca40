"""Command lines are parsed strictly before any work (runtime.run_cli / runtime.ArgumentParser), and
bad input ends a script with one line and no traceback."""

from __future__ import annotations

import argparse
import inspect
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

import rl
import runtime
import sft
from runtime import FlagError, convert_flag, entry_signature, parse_flags

REPO = Path(__file__).resolve().parents[1]
UPSTREAM = REPO.parent / "shared" / "upstream"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}


def run_script(*argv, timeout=120):
    start = time.monotonic()
    done = subprocess.run([sys.executable, *argv], cwd=REPO, env=ENV, capture_output=True, text=True,
                          timeout=timeout)
    return done, time.monotonic() - start


# --- point 1: booleans ------------------------------------------------------------------------


@pytest.mark.parametrize("text,value", [("True", True), ("False", False), ("true", True), ("false", False),
                                        ("1", True), ("0", False), ("yes", True), ("no", False),
                                        ("YES", True), ("No", False)])
def test_bool_words(text, value):
    assert convert_flag("beam_search", text, bool) is value


@pytest.mark.parametrize("text", ["maybe", "", "2", "-1", "none", "off"])
def test_bool_rejects_anything_else(text):
    with pytest.raises(FlagError, match="--beam_search .*not a boolean"):
        convert_flag("beam_search", text, bool)


def test_argparse_boolean_reads_the_same_words():
    for text, value in [("False", False), ("no", False), ("0", False), ("true", True), ("YES", True), ("1", True)]:
        assert runtime.boolean(text) is value
    with pytest.raises(argparse.ArgumentTypeError, match="'maybe' is not a boolean"):
        runtime.boolean("maybe")


def test_lowercase_false_switches_options_off():
    kwargs = parse_flags(entry_signature(sft.train), [
        "--train_from_scratch", "false", "--freeze_LLM", "no", "--group_by_length=0"])
    assert kwargs == {"train_from_scratch": False, "freeze_LLM": False, "group_by_length": False}
    kwargs = parse_flags(entry_signature(rl.train), [
        "--beam_search", "false", "--dapo", "False", "--add_gt", "no", "--sync_ref_model", "true"])
    assert kwargs == {"beam_search": False, "dapo": False, "add_gt": False, "sync_ref_model": True}


def test_bool_flag_alone_is_true():
    kwargs = parse_flags(entry_signature(rl.train), ["--beam_search", "--dapo", "--seed", "-3"])
    assert kwargs == {"beam_search": True, "dapo": True, "seed": -3}


def test_union_types():
    resume = str | bool | None
    assert convert_flag("r", "True", resume) is True
    assert convert_flag("r", "false", resume) is False
    assert convert_flag("r", "None", resume) is None
    assert convert_flag("r", "out/checkpoint-30", resume) == "out/checkpoint-30"
    rows = bool | int  # True/False keep the original's boolean meaning; digits are a row count
    assert convert_flag("sample_train", "False", rows) is False
    assert convert_flag("sample_train", "true", rows) is True
    assert convert_flag("sample_train", "1", rows) == 1 and convert_flag("sample_train", "1", rows) is not True
    assert convert_flag("sample_train", "0", rows) == 0 and convert_flag("sample_train", "0", rows) is not False
    with pytest.raises(FlagError, match="not a valid bool | int"):
        convert_flag("sample_train", "many", rows)


@pytest.mark.parametrize("text,kind,value", [("1e-3", float, 1e-3), ("0.0999", float, 0.0999), ("2", float, 2.0),
                                             ("-1", int, -1), ("512", int, 512), ("", str, "")])
def test_numbers_and_text(text, kind, value):
    converted = convert_flag("x", text, kind)
    assert converted == value and type(converted) is kind


def test_bad_numbers_name_the_flag():
    with pytest.raises(FlagError, match=r"--batch_size '1e3': not a valid int"):
        convert_flag("batch_size", "1e3", int)
    with pytest.raises(FlagError, match=r"--learning_rate 'fast': not a valid float"):
        parse_flags(entry_signature(sft.train), ["--learning_rate", "fast"])


def _upstream_flags(script: str) -> list[str]:
    """The flags of the first `python`/`torchrun`/`accelerate` command of an upstream shell script,
    with its shell variables given placeholder values."""
    text = (UPSTREAM / script).read_text(encoding="utf-8").replace("\\\n", " ")
    text = re.sub(r"\$\{?(\w+)\}?", r"\1_value", text)
    command = next(line for line in text.splitlines() if f" {script.replace('.sh', '.py')} " in f" {line} ")
    words = shlex.split(command)
    return words[words.index(script.replace(".sh", ".py")) + 1:]


@pytest.mark.skipif(not UPSTREAM.is_dir(), reason="needs the original repository in ../shared/upstream")
@pytest.mark.parametrize("script,module", [("sft.sh", sft), ("rl.sh", rl)])
def test_original_command_lines_parse(script, module):
    argv = _upstream_flags(script)
    kwargs = parse_flags(entry_signature(module.train), argv)
    assert len(kwargs) == sum(word.startswith("--") for word in argv) > 10
    if module is sft:
        assert kwargs["train_from_scratch"] is False and kwargs["freeze_LLM"] is False
        assert kwargs["batch_size"] == 1024
    else:
        assert kwargs["beam_search"] is True and kwargs["dapo"] is False and kwargs["sync_ref_model"] is True
        assert kwargs["eval_step"] == 0.0999 and kwargs["beta"] == 1e-3 and kwargs["learning_rate"] == 1e-5
        assert kwargs["sample_train"] is False


# --- point 2: unknown flags -------------------------------------------------------------------


def test_unknown_flag_names_the_closest():
    with pytest.raises(FlagError, match=r"unknown flag --learning_rat; did you mean --learning_rate\?"):
        parse_flags(entry_signature(sft.train), ["--base_model", "m", "--learning_rat", "1e-3"])
    with pytest.raises(FlagError, match="unknown flag --zzz; see --help"):
        parse_flags(entry_signature(sft.train), ["--zzz", "1"])


def test_malformed_command_lines():
    signature = entry_signature(sft.train)
    assert parse_flags(signature, ["--learning-rate", "1e-3"]) == {"learning_rate": 1e-3}
    with pytest.raises(FlagError, match="--seed is given twice"):
        parse_flags(signature, ["--seed", "1", "--seed=2"])
    with pytest.raises(FlagError, match="unexpected argument 'extra'"):
        parse_flags(signature, ["--seed", "1", "extra"])
    with pytest.raises(FlagError, match=r"--seed needs a value \(int\)"):
        parse_flags(signature, ["--seed", "--sample", "3"])


def test_early_check_sees_the_same_signature_as_the_function():
    for module in (sft, rl):
        early, docstring = runtime.source_signature(module.__file__, "train")
        real = entry_signature(module.train).parameters
        assert [(p.name, p.annotation, p.default is p.empty) for p in early.parameters.values()] == \
            [(p.name, p.annotation, p.default is p.empty) for p in real.values()]
        assert docstring == inspect.getdoc(module.train)


@pytest.mark.parametrize("script", ["sft.py", "rl.py"])
def test_misspelled_flag_stops_before_any_work(script, tmp_path):
    done, seconds = run_script(script, "--output_dir", str(tmp_path / "out"), "--learning_rat", "1e-3")
    assert done.returncode == runtime.USAGE_ERROR
    assert done.stderr.strip() == f"{script}: unknown flag --learning_rat; did you mean --learning_rate?"
    assert seconds < 10  # no torch import, no model: well under a second on an idle machine
    assert not (tmp_path / "out").exists()


def test_help_lists_every_flag_with_its_meaning():
    done, _ = run_script("sft.py", "--help")
    assert done.returncode == 0
    for name, meaning in runtime.docstring_args(sft.train).items():
        assert f"--{name} (" in done.stdout and meaning in done.stdout


# --- point 8: one-line errors -----------------------------------------------------------------


def test_input_error_is_one_line_without_traceback(tmp_path):
    done, _ = run_script("sft.py", "--base_model", str(tmp_path / "missing"), "--output_dir", str(tmp_path))
    assert done.returncode == runtime.INPUT_ERROR
    assert done.stderr.strip() == f"sft.py: --base_model {tmp_path / 'missing'}: not found"


@pytest.mark.parametrize("flag", ["--batch_size", "--num_beams"])
def test_evaluate_rejects_a_zero_count_before_any_work(flag, capsys):
    """Point 8: `evaluate.py --batch_size 0` used to end in a range() error after loading the model."""
    import evaluate

    argv = ["--base_model", "m", "--info_file", "i", "--test_data_path", "t", "--result_json_data", "r"]
    with pytest.raises(SystemExit) as exit_:
        evaluate.build_parser().parse_args([*argv, flag, "0"])
    assert exit_.value.code == runtime.USAGE_ERROR
    assert capsys.readouterr().err.strip().endswith(f": argument {flag}: '0': must be at least 1")  # prog: pytest's


def test_missing_input_file_of_an_argparse_script_is_one_line(tmp_path):
    missing = tmp_path / "train.csv"
    done, _ = run_script("sasrec.py", "--train_file", str(missing), "--valid_file", str(missing),
                         "--test_file", str(missing), "--epoch", "1")
    assert done.returncode == runtime.INPUT_ERROR
    assert done.stderr.strip().splitlines()[-1] == f"sasrec.py: {missing}: file not found"
    assert "Traceback" not in done.stderr


def test_unexpected_error_keeps_its_traceback(capsys):
    def broken():
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        runtime.run_main(broken)
    with pytest.raises(SystemExit) as exit_:
        runtime.run_main(lambda: (_ for _ in ()).throw(runtime.InputError("x.csv line 3, field item_id: empty")))
    assert exit_.value.code == runtime.INPUT_ERROR
    assert capsys.readouterr().err.endswith(": x.csv line 3, field item_id: empty\n")


def test_argparse_scripts_reject_prefixes_and_suggest(capsys):
    parser = runtime.ArgumentParser(prog="evaluate.py")
    parser.add_argument("--batch_size", type=runtime.positive_int, default=4)
    parser.add_argument("--num_beams", type=int, default=20)
    assert parser.parse_args(["--batch_size", "2"]).batch_size == 2
    for argv, message in [
        (["--batch_sise", "2"], "evaluate.py: unknown flag --batch_sise; did you mean --batch_size?"),
        (["--batch", "2"], "evaluate.py: unknown flag --batch; did you mean --batch_size?"),
        (["--batch_size", "0"], "evaluate.py: argument --batch_size: '0': must be at least 1"),
    ]:
        with pytest.raises(SystemExit) as exit_:
            parser.parse_args(argv)
        assert exit_.value.code == runtime.USAGE_ERROR
        assert capsys.readouterr().err.strip() == message
