"""FLAGS.md's flag tables are the ones scripts/flags_table.py generates from the scripts, and the
fire entry points document every parameter in their own docstring entry."""

import inspect
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
from scripts import flags_table

FIRE_ENTRIES = [(script, function) for script, function in flags_table.SCRIPTS.items() if function]


def test_flags_file_is_generated():
    readme = (REPO / "FLAGS.md").read_text(encoding="utf-8")
    rendered = flags_table.render()
    stale = flags_table.differing_scripts(readme, rendered)
    assert not stale, (f"FLAGS.md flag tables out of date for {', '.join(stale)}: "
                       f"run python scripts/flags_table.py --write FLAGS.md")
    start, end = flags_table.readme_block(readme, "FLAGS.md")
    assert readme[start:end] == flags_table.block(rendered)
    # every flag of every script has a row with a meaning
    for script in flags_table.SCRIPTS:
        for flag, _, meaning in flags_table.script_rows(script):
            assert meaning.strip(), f"{script} {flag}: no help text"


@pytest.mark.parametrize("script,function", FIRE_ENTRIES)
def test_fire_entry_documents_each_parameter(script, function):
    func = getattr(flags_table.load_script(script), function)
    params = [name for name, p in inspect.signature(func).parameters.items()
              if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    documented = flags_table.docstring_args(func)  # raises on grouped entries ("a / b: ...")
    assert not set(params) - set(documented), f"{script} {function}: undocumented {set(params) - set(documented)}"
    assert not set(documented) - set(params), f"{script} {function}: documents unknown {set(documented) - set(params)}"
    assert all(documented[name].strip() for name in params)


def test_docstring_args_rejects_grouped_entries():
    def f(a=1, b=2):
        """Doc.

        Args:
            a / b: grouped.
        """

    with pytest.raises(ValueError, match="not `name: meaning`"):
        flags_table.docstring_args(f)


def test_table_cells_escape_pipes_and_join_lines():
    assert flags_table._cell("rule | ranking\n  more") == "rule \\| ranking more"
    assert flags_table._cell("SID<TAB>title `<a>`") == "SID\\<TAB>title `<a>`"


def test_check_names_the_stale_scripts():
    rendered = "### a.py\n\n| flag | default | meaning |\n|---|---|---|\n| `--x` | `1` | x |\n\n" \
               "### b.py\n\n| flag | default | meaning |\n|---|---|---|\n| `--y` | `2` | y |\n"
    readme = f"# R\n\n{flags_table.START}{flags_table.block(rendered)}{flags_table.END}\n\n## Next\n"
    assert flags_table.differing_scripts(readme, rendered) == []
    assert flags_table.differing_scripts(readme, rendered.replace("`--y` | `2`", "`--y` | `3`")) == ["b.py"]
    assert flags_table.differing_scripts(readme, rendered + "\n### c.py\n") == ["c.py"]


def test_readme_results_are_rendered_from_the_committed_results_files():
    from scripts import readme_results

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert readme_results.replaced(readme, readme_results.render(), "README.md") == readme, (
        "README.md results section out of date: run python scripts/readme_results.py --write README.md")
