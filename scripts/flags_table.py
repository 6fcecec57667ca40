"""FLAGS.md, generated from the scripts themselves: one `### script` heading and one
`flag | default | meaning` table per script.

argparse scripts: the parser comes from `build_parser()` where a script has one, else from its
entry point (`main(argv)`, or `parse_args(argv)` in sasrec.py) run with `ArgumentParser.parse_args`
swapped for one that raises with the parser, so nothing past the parser runs. fire scripts: flags
and defaults from the entry function's signature, meanings from its docstring's Google-style
`Args:` section (one `name: meaning` entry per parameter).

    python scripts/flags_table.py                    # print the Markdown
    python scripts/flags_table.py --write FLAGS.md   # replace the text between the markers
    python scripts/flags_table.py --check FLAGS.md   # exit 1 when the file is out of date
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import inspect
import os
import sys
import tempfile
from pathlib import Path

from runtime import docstring_args  # also behind sft.py/rl.py --help

REPO = Path(__file__).resolve().parents[1]
START = "<!-- flags:start -->"
END = "<!-- flags:end -->"

# script (relative to the repository root) -> its fire entry function, or None for argparse
SCRIPTS = {
    "sft.py": "train",
    "rl.py": "train",
    "evaluate.py": None,
    "calc.py": None,
    "sasrec.py": None,
    "rq/build_sids.py": None,
    "rq/embeddings.py": None,
    "rq/text2emb/amazon_text2emb.py": None,
    "rq/rqkmeans_faiss.py": None,
    "rq/rqkmeans_constrained.py": None,
    "rq/rqvae.py": None,
    "rq/generate_indices.py": None,
    "rq/rqkmeans_plus.py": None,
    "rq/generate_indices_plus.py": None,
    "data/prepare_ml100k.py": None,
    "data/amazon18_data_process.py": None,
    "convert_dataset.py": None,
    "split.py": None,
    "merge.py": None,
    "convert_gguf.py": "convert",
    "pipeline.py": None,
    "ablate.py": None,
    "scripts/sample_rows.py": None,
    "scripts/readme_results.py": None,
}


# --- loading the scripts ----------------------------------------------------------------------


def load_script(script: str):
    """Import a script file as a module (not as __main__, so it does nothing). The repository is
    installed (editable), so a script's own imports work without its folder on sys.path."""
    path = REPO / script
    spec = importlib.util.spec_from_file_location(f"flags_table_{script.replace('/', '_')[:-3]}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _ParserCaptured(Exception):
    def __init__(self, parser):
        super().__init__("parser captured")
        self.parser = parser


@contextlib.contextmanager
def _capturing_parse_args():
    original = argparse.ArgumentParser.parse_args

    def capture(self, *args, **kwargs):
        raise _ParserCaptured(self)

    argparse.ArgumentParser.parse_args = capture
    try:
        yield
    finally:
        argparse.ArgumentParser.parse_args = original


def argparse_parser(module) -> argparse.ArgumentParser:
    """The script's parser, built without running the script's work."""
    if hasattr(module, "build_parser"):
        return module.build_parser()
    entry = getattr(module, "parse_args", None) or module.main
    with _capturing_parse_args():
        try:
            entry([])
        except _ParserCaptured as captured:
            return captured.parser
    raise RuntimeError(f"{module.__file__}: {entry.__name__}([]) returned without parsing arguments")


# --- rows -------------------------------------------------------------------------------------


def _value(value) -> str:
    if isinstance(value, (list, tuple)):
        return " ".join(map(str, value))
    if value == "":
        return '""'
    return str(value)


def argparse_rows(parser: argparse.ArgumentParser) -> list[tuple[str, str, str]]:
    rows = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS:
            continue
        flag = max(action.option_strings, key=len) if action.option_strings else action.dest
        default = "required" if action.required else f"`{_value(action.default)}`"
        meaning = action.help or ""
        if "%(" in meaning:  # argparse's own help expansion
            meaning = meaning % {**vars(action), "prog": parser.prog}
        if action.choices and not all(str(choice) in meaning for choice in action.choices):
            choices = ", ".join(f"`{choice}`" for choice in action.choices)
            meaning = f"{meaning} (one of {choices})" if meaning else f"one of {choices}"
        if action.nargs in ("+", "*"):
            meaning += "; one or more values" if action.nargs == "+" else "; any number of values"
        rows.append((f"`{flag}`", default, meaning))
    return rows


def fire_rows(func) -> list[tuple[str, str, str]]:
    meanings = docstring_args(func)
    rows = []
    for name, param in inspect.signature(func).parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        default = "required" if param.default is param.empty else f"`{_value(param.default)}`"
        rows.append((f"`--{name}`", default, meanings.get(name, "").removesuffix(".")))
    return rows


def script_rows(script: str) -> list[tuple[str, str, str]]:
    module = load_script(script)
    function = SCRIPTS[script]
    if function:
        return fire_rows(getattr(module, function))
    return argparse_rows(argparse_parser(module))


# --- Markdown ---------------------------------------------------------------------------------


def _cell(text: str) -> str:
    """One line; `|` escaped (it would end the cell), and `<` outside code spans (`<TAB>` would
    read as an HTML tag)."""
    parts = " ".join(str(text).split()).replace("|", "\\|").split("`")
    return "`".join(part if i % 2 else part.replace("<", "\\<") for i, part in enumerate(parts))


def script_table(script: str) -> str:
    lines = [f"### {script}", "", "| flag | default | meaning |", "|---|---|---|"]
    lines += [f"| {' | '.join(_cell(cell) for cell in row)} |" for row in script_rows(script)]
    return "\n".join(lines) + "\n"


def render() -> str:
    """Every script's table, blank lines between."""
    return "\n".join(script_table(script) for script in SCRIPTS)


def block(rendered: str) -> str:
    """The README's text between the markers for the rendered tables."""
    return "\n\n" + rendered + "\n"


def split_tables(markdown: str) -> dict[str, str]:
    """{script: its `### script` section} of a rendered block."""
    sections: dict[str, str] = {}
    current = None
    for line in markdown.splitlines():
        if line.startswith("### "):
            current = line[4:].strip()
            sections[current] = ""
        if current is not None:
            sections[current] += line + "\n"
    return {script: text.strip() for script, text in sections.items()}


def readme_block(text: str, path) -> tuple[int, int]:
    """(start, end) offsets of the text between the markers."""
    if text.count(START) != 1 or text.count(END) != 1:
        raise ValueError(f"{path}: needs exactly one {START} and one {END} line")
    start = text.index(START) + len(START)
    end = text.index(END)
    if end < start:
        raise ValueError(f"{path}: {END} comes before {START}")
    return start, end


def differing_scripts(readme_text: str, rendered: str, path="README.md") -> list[str]:
    """Scripts whose README table is not the generated one (missing, stale or extra); ["(text
    between the markers)"] when only the text around the tables differs; [] when up to date."""
    start, end = readme_block(readme_text, path)
    if readme_text[start:end] == block(rendered):
        return []
    have, want = split_tables(readme_text[start:end]), split_tables(rendered)
    stale = [script for script in list(want) + [s for s in have if s not in want]
             if have.get(script) != want.get(script)]
    return stale or ["(text between the markers)"]


def write_readme(path, rendered: str) -> bool:
    """Replace the text between the markers (atomically: temp file, then os.replace); returns
    whether anything changed."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    start, end = readme_block(text, path)
    new = text[:start] + block(rendered) + text[end:]
    if new == text:
        return False
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(new)
        os.chmod(tmp, path.stat().st_mode & 0o7777)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return True


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", metavar="README", help="replace the README's flags section with the tables")
    group.add_argument("--check", metavar="README", help="exit 1 if the README's flags section is out of date")
    args = parser.parse_args(argv)
    rendered = render()
    if not (args.write or args.check):
        sys.stdout.write(rendered)
        return 0
    try:
        if args.write:
            changed = write_readme(args.write, rendered)
            print(f"{args.write}: flags section {'rewritten' if changed else 'already up to date'}")
            return 0
        stale = differing_scripts(Path(args.check).read_text(encoding="utf-8"), rendered, args.check)
    except ValueError as error:  # the markers are missing
        print(error, file=sys.stderr)
        return 1
    if stale:
        print(f"{args.check}: flags section out of date for: {', '.join(stale)}; "
              f"regenerate it with: python scripts/flags_table.py --write {args.check}", file=sys.stderr)
        return 1
    print(f"{args.check}: flags section up to date")
    return 0

if __name__ == "__main__":
    sys.exit(main())
