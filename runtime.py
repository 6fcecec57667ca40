"""Start-of-run helpers shared by the scripts: strict flag parsing, one-line input errors, path
checks, the wandb switch.

Every script ends in `run_main(main)` (argparse scripts, whose parser is a `runtime.ArgumentParser`)
or `run_cli(train)` (sft.py, rl.py: flags from the entry function's signature). Both read every flag
before any work, so a misspelled flag or a bad value stops the script in its first second, and both
report a `runtime.InputError` as one line without a traceback; any other exception is a bug and
keeps its traceback.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import inspect
import os
import re
import sys
import types
import typing
from pathlib import Path

# exit statuses: a bad flag is a usage error (as argparse and fire report it), any other bad input 1
USAGE_ERROR = 2
INPUT_ERROR = 1

_TRUE = ("true", "yes", "1")
_FALSE = ("false", "no", "0")


class InputError(ValueError):
    """Bad input from the user (a flag, a file, a row): reported as one line naming the flag or
    file (and line, field) and what to do, exit status 1, no traceback. Anything else is a bug
    and keeps its traceback."""


class FlagError(InputError):
    """A flag that does not exist or a value its type cannot take (exit status 2)."""


class PathNotFound(InputError, FileNotFoundError):
    """A path flag names nothing (also a FileNotFoundError, for callers that catch that)."""


def require_paths(**flags):
    """Fail before any work when a required path flag is empty or names nothing."""
    for flag, path in flags.items():
        if not path:
            raise InputError(f"--{flag} is required")
        if not Path(path).exists():
            raise PathNotFound(f"--{flag} {path}: not found")


def report_to(wandb_project: str) -> str:
    """TrainingArguments.report_to: wandb only when a project is named, and then offline unless
    WANDB_MODE / WANDB_API_KEY say otherwise (no login prompt, no network by surprise)."""
    if not wandb_project:
        return "none"
    os.environ["WANDB_PROJECT"] = wandb_project
    if "WANDB_MODE" not in os.environ and "WANDB_API_KEY" not in os.environ:
        os.environ["WANDB_MODE"] = "offline"
    return "wandb"


# --- reporting ---------------------------------------------------------------------------------


def reporting_input_errors(work, *args):
    """work(*args), except that an InputError ends the script with one line `script: message` on
    stderr and exit status 1 (2 for a FlagError) instead of a traceback."""
    try:
        return work(*args)
    except InputError as error:
        print(f"{Path(sys.argv[0]).name}: {error}", file=sys.stderr)
        sys.exit(USAGE_ERROR if isinstance(error, FlagError) else INPUT_ERROR)


def run_main(main, *args):
    """The last line of a script: `sys.exit(main(*args))` with input errors reported as one line
    (reporting_input_errors). `main` returns None or an exit status."""
    sys.exit(reporting_input_errors(main, *args))


def _did_you_mean(name: str, valid) -> str:
    close = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.6)
    return f"; did you mean --{close[0]}?" if close else "; see --help for the flags"


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the scripts' error style: no prefix matching of long flags (`--batch` is not
    `--batch_size`), and a bad command line is one line naming the closest valid flag, exit 2."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        unknown = re.match(r"unrecognized arguments: (.*)", message)
        if unknown:
            valid = [option.lstrip("-") for action in self._actions for option in action.option_strings]
            flags = [word for word in unknown.group(1).split() if word.startswith("--")]
            if flags:
                name = flags[0][2:].split("=", 1)[0]
                message = f"unknown flag --{name}{_did_you_mean(name, valid)}"
        print(f"{self.prog}: {message}", file=sys.stderr)
        sys.exit(USAGE_ERROR)


def boolean(text: str) -> bool:
    """argparse type of a True/False flag, read as run_cli reads bool parameters (`--bn False` is
    False; True/False, true/false, yes/no, 1/0 and nothing else)."""
    word = text.strip().lower()
    if word in _TRUE or word in _FALSE:
        return word in _TRUE
    raise argparse.ArgumentTypeError(f"{text!r} is not a boolean; give True or False (or true/false, yes/no, 1/0)")


def positive_int(text: str) -> int:
    """argparse type of a count that must be at least 1 (a batch size, a beam count)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must be at least 1")
    return value


# --- strict flags from a function's signature (sft.py, rl.py) ----------------------------------

ENTRY = re.compile(r"^(\w+)\s*(?:\([^)]*\))?:\s*(.*)$")  # "name: meaning" or "name (type): meaning"


def docstring_args(func) -> dict[str, str]:
    """{parameter: meaning} from the `Args:` section of func's docstring (args_section)."""
    return args_section(inspect.getdoc(func) or "", f"{func.__module__}.{func.__qualname__}")


def args_section(docstring: str, where: str = "docstring") -> dict[str, str]:
    """{parameter: meaning} from a Google-style `Args:` section; each entry is `name: meaning` with
    continuation lines indented deeper (joined into one line). Raises ValueError (naming `where`)
    on a line that is neither an entry nor a continuation (e.g. `a / b: ...`) and on a name given
    twice."""
    lines = docstring.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "Args:")
    except StopIteration:
        raise ValueError(f"{where}: the docstring has no Args: section") from None
    section_indent = _indent(lines[start])
    entries: dict[str, list[str]] = {}
    entry_indent = None
    current = None
    for line in lines[start + 1:]:
        if not line.strip():
            continue
        indent = _indent(line)
        if indent <= section_indent:
            break  # the next section (Returns:, ...)
        if entry_indent is None:
            entry_indent = indent
        if indent > entry_indent and current is not None:
            entries[current].append(line.strip())
            continue
        match = ENTRY.match(line.strip())
        if indent != entry_indent or not match:
            raise ValueError(f"{where}: Args: line is not `name: meaning`: {line.strip()!r}")
        current = match.group(1)
        if current in entries:
            raise ValueError(f"{where}: Args: {current} is documented twice")
        entries[current] = [match.group(2)]
    return {name: " ".join(part for part in parts if part) for name, parts in entries.items()}


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _members(kind) -> tuple:
    """The types a flag may take: (int,) for int, (str, bool, NoneType) for `str | bool | None`."""
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        return typing.get_args(kind)
    return (kind,)


def _type_name(kind) -> str:
    return " | ".join("None" if member is type(None) else member.__name__ for member in _members(kind))


def convert_flag(name: str, text: str, kind):
    """The value of `--name text` for a parameter annotated `kind`.

    bool takes True/False/true/false/yes/no/1/0 and nothing else. In `bool | int` (a row count that
    may also be switched off) the digits are the integer and only the words are booleans; in a type
    with None, `None` (and an empty value) is None; str takes any text."""
    members = _members(kind)
    if type(None) in members and text in ("None", ""):
        return None
    if bool in members:
        word = text.strip().lower()
        words_only = int in members
        if word in _TRUE and not (words_only and word.isdigit()):
            return True
        if word in _FALSE and not (words_only and word.isdigit()):
            return False
    if int in members:
        try:
            return int(text)
        except ValueError:
            pass
    if float in members:
        try:
            return float(text)
        except ValueError:
            pass
    if str in members:
        return text
    if members == (bool,):
        raise FlagError(f"--{name} {text!r}: not a boolean; give True or False (or true/false, yes/no, 1/0)")
    raise FlagError(f"--{name} {text!r}: not a valid {_type_name(kind)}")


def entry_signature(func) -> inspect.Signature:
    """func's signature with its annotations evaluated (the scripts use `from __future__ import
    annotations`, so they are strings until then)."""
    hints = typing.get_type_hints(func)
    signature = inspect.signature(func)
    return signature.replace(parameters=[p.replace(annotation=hints.get(name, str))
                                         for name, p in signature.parameters.items()])


class _SourceDefault:
    """A default as its source text (`ORIGINAL_RL_TASKS`, `3e-4`): parsing needs only whether a
    parameter has a default, and --help shows the text."""

    def __init__(self, node):
        self.text = ast.unparse(node)

    def __repr__(self):
        return self.text


_FLAG_TYPES = {"str": str, "int": int, "float": float, "bool": bool, "None": None}


def _flag_type(node):
    """The type an annotation's source names: a builtin flag type, None, or a union of them
    (`str | bool | None`); anything else is a TypeError."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _flag_type(node.left) | _flag_type(node.right)
    if isinstance(node, ast.Name) and node.id in _FLAG_TYPES:
        return _FLAG_TYPES[node.id]
    if isinstance(node, ast.Constant) and node.value is None:
        return None
    if isinstance(node, ast.Constant) and isinstance(node.value, str):  # a quoted annotation
        return _flag_type(ast.parse(node.value, mode="eval").body)
    raise TypeError(f"not a flag type: {ast.unparse(node)}")


def source_signature(path, name: str) -> tuple[inspect.Signature, str] | None:
    """(signature, docstring) of the function `name` in the script at `path`, read from its source
    without importing it (so without torch), or None when an annotation is more than the builtin
    types the flags use. Defaults are _SourceDefault."""
    tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    node = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name), None)
    if node is None or node.args.posonlyargs or node.args.vararg or node.args.kwarg:
        return None
    arguments = ([(a, inspect.Parameter.POSITIONAL_OR_KEYWORD) for a in node.args.args]
                 + [(a, inspect.Parameter.KEYWORD_ONLY) for a in node.args.kwonlyargs])
    defaults = [None] * (len(node.args.args) - len(node.args.defaults)) + node.args.defaults + node.args.kw_defaults
    parameters = []
    try:
        for (argument, kind), default in zip(arguments, defaults):
            annotation = _flag_type(argument.annotation) if argument.annotation else str
            parameters.append(inspect.Parameter(
                argument.arg, kind, annotation=annotation,
                default=inspect.Parameter.empty if default is None else _SourceDefault(default)))
    except (NameError, TypeError, SyntaxError):
        return None
    return inspect.Signature(parameters), ast.get_docstring(node) or ""


def parse_flags(signature: inspect.Signature, argv: list[str]) -> dict:
    """`--flag value` / `--flag=value` words -> keyword arguments of a function with this signature
    (entry_signature), converted by the parameters' annotations (see convert_flag). A bool flag with
    no value is True. Raises FlagError on an unknown flag (naming the closest valid one), a repeated
    flag, a stray word, a missing or unconvertible value, and a required parameter left out."""
    parameters = signature.parameters
    kwargs: dict = {}
    i = 0
    while i < len(argv):
        word = argv[i]
        if not word.startswith("--") or word == "--":
            raise FlagError(f"unexpected argument {word!r}: every value follows its --flag")
        name, has_value, text = word[2:].partition("=")
        if name not in parameters and name.replace("-", "_") in parameters:
            name = name.replace("-", "_")
        if name not in parameters:
            raise FlagError(f"unknown flag --{name}{_did_you_mean(name, parameters)}")
        if name in kwargs:
            raise FlagError(f"--{name} is given twice")
        kind = parameters[name].annotation
        if not has_value:
            if i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                i += 1
                text = argv[i]
            elif bool in _members(kind):
                text = "True"
            else:
                raise FlagError(f"--{name} needs a value ({_type_name(kind)})")
        kwargs[name] = convert_flag(name, text, kind)
        i += 1
    missing = [name for name, p in parameters.items() if p.default is p.empty and name not in kwargs]
    if missing:
        raise FlagError("required: " + ", ".join(f"--{name}" for name in missing))
    return kwargs


def flags_help(signature: inspect.Signature, docstring: str) -> str:
    """`--help` of a run_cli script: the docstring's summary, then one line per flag with its type
    and default, and its docstring Args entry below."""
    summary = docstring.split("\nArgs:")[0].strip()
    meanings = args_section(docstring)
    lines = [f"usage: {Path(sys.argv[0]).name} [--flag value | --flag=value] ...", "", summary, "",
             "flags (booleans: True/False, true/false, yes/no, 1/0; a boolean flag alone means True):"]
    for name, p in signature.parameters.items():
        default = "required" if p.default is p.empty else f"default {p.default!r}"
        lines.append(f"  --{name} ({_type_name(p.annotation)}, {default})")
        lines.append(f"      {meanings.get(name, '')}")
    return "\n".join(lines)


def _help_or_flags(signature, docstring, argv) -> dict:
    if "--help" in argv or "-h" in argv:
        print(flags_help(signature, docstring))
        sys.exit(0)
    return parse_flags(signature, argv)


def check_flags_early(script_path, name: str = "train"):
    """Parse the command line against the entry function `name` of the script at `script_path`
    before the script imports torch, so `--help` and a bad flag answer in well under a second.
    Call it at the top of the script under `if __name__ == "__main__":`; run_cli parses again
    against the real function."""
    found = source_signature(script_path, name)
    if found is not None:
        reporting_input_errors(_help_or_flags, *found, sys.argv[1:])


def run_cli(entry, argv: list[str] | None = None):
    """`python script.py --flag value ...` -> entry(flag=value, ...) with every flag parsed and
    checked (parse_flags) before entry runs; `--help` / `-h` prints flags_help. entry's return value
    (a Trainer) is dropped; errors are reported as run_main reports them."""
    argv = sys.argv[1:] if argv is None else argv
    signature = entry_signature(entry)
    run_main(lambda: entry(**_help_or_flags(signature, inspect.getdoc(entry) or "", argv)) and None)
