"""index.json + info.txt + sid_report.json replaced together: a reader sees either the old set or
the new set, never one new file beside an old one, even when the writer is killed half-way.

Layout in the output folder (only these names are links; everything else is untouched):
    index.json      -> .sid_files/index.json
    info.txt        -> .sid_files/info.txt
    sid_report.json -> .sid_files/sid_report.json
    .sid_files      -> .sid_files.<id>        the one link that is swapped (an atomic rename)
    .sid_files.<id>/                          the current set
A new set is written into a fresh `.sid_files.<id>/`, then `.sid_files` is renamed onto a link to
it, then the old set is deleted. Regular files left by an earlier layout are first moved into a
set of their own (readers still see their contents), so the first run is safe as well.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

POINTER = ".sid_files"


def _replace_with_link(path: Path, target: str):
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.link")
    os.symlink(target, tmp)
    os.replace(tmp, path)


def _adopt_regular_files(folder: Path, names) -> None:
    """Older layout (plain files): put them in a set of their own and link the names to it."""
    if (folder / POINTER).is_symlink():
        return
    old = folder / f"{POINTER}.{uuid.uuid4().hex}"
    old.mkdir()
    for name in names:
        if (folder / name).is_file() and not (folder / name).is_symlink():
            os.link(folder / name, old / name)  # same file system: a second name, no copy
    _replace_with_link(folder / POINTER, old.name)
    for name in names:
        _replace_with_link(folder / name, f"{POINTER}/{name}")


def write_together(folder, writers: dict) -> None:
    """writers: {file name: function(path) that writes that file}; every file becomes visible at
    once under folder/<name>."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = list(writers)
    _adopt_regular_files(folder, names)
    new = folder / f"{POINTER}.{uuid.uuid4().hex}"
    new.mkdir()
    try:
        for name, write in writers.items():
            write(new / name)
    except BaseException:
        shutil.rmtree(new, ignore_errors=True)
        raise
    _replace_with_link(folder / POINTER, new.name)
    for name in names:
        link = folder / name
        if not (link.is_symlink() and os.readlink(link) == f"{POINTER}/{name}"):
            _replace_with_link(link, f"{POINTER}/{name}")
    for stale in folder.glob(f"{POINTER}.*"):
        if stale.is_dir() and not stale.is_symlink() and stale.name != new.name:
            shutil.rmtree(stale, ignore_errors=True)
