"""Recognising and removing what a proxy that died left behind: names that carry the proxy's pid.

A killed proxy cannot remove its private directories or the shared-memory segments of a cell
it was running, so everything a proxy makes is named after its pid:

* ``/dev/shm/jp<pid>_<token>...``: the handover segments of a Score-P cell (memory mode);
* ``$TMPDIR/jumper-scorep-<pid>-<random>/``: the proxy's Score-P directory (each cell's work
  directory, the prepared init libraries, the bindings' own build directory);
* ``<persistence dir>/jumper-handover-<pid>-<random>/``: the handover of a cell in disk mode;
* ``$TMPDIR/jumper-proxy-<pid>-<random>/``: the upstream kernel's connection (``upstream.py``).

The next proxy of the same user removes the ones whose owner no longer runs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

import psutil

#: the Score-P directory of a proxy, in its temporary directory
SCOREP_DIR_PREFIX = "jumper-scorep-"
#: a disk-mode handover directory, under the persistence directory
HANDOVER_PREFIX = "jumper-handover-"
#: a memory-mode handover segment (the pid is followed by ``_``, see transport.new_shm_prefix)
SEGMENT_PREFIX = "jp"


def owned_prefix(prefix: str, owner: int | None = None) -> str:
    """``prefix`` followed by the owner's pid (this process by default) and ``-``."""
    return f"{prefix}{os.getpid() if owner is None else owner}-"


def owner_is_gone(path: Path, pid_text: str) -> bool:
    """Whether ``path`` belongs to this user and its owner, the process ``pid_text``, no
    longer runs (a zombie, dead and not yet reaped, counts as gone)."""
    try:
        if not pid_text.isdigit() or path.lstat().st_uid != os.getuid():
            return False
        return psutil.Process(int(pid_text)).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
    except (OSError, psutil.Error):
        return False


def sweep(directory: str | Path, prefixes: Iterable[tuple[str, str]]) -> list[str]:
    """Remove the entries of ``directory`` named ``<prefix><pid><separator>...`` whose owner is
    gone, for each ``(prefix, separator)``; the names removed. Directories go with everything
    in them; a directory that cannot be read is left alone."""
    removed: list[str] = []
    wanted = list(prefixes)
    with contextlib.suppress(OSError), os.scandir(directory) as entries:
        for entry in list(entries):
            for prefix, separator in wanted:
                if not entry.name.startswith(prefix):
                    continue
                pid_text = entry.name[len(prefix) :].split(separator, 1)[0]
                if owner_is_gone(Path(entry.path), pid_text) and _remove(entry):
                    removed.append(entry.name)
                break
    return removed


def _remove(entry: os.DirEntry[str]) -> bool:
    try:
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path)
        else:
            os.unlink(entry.path)
    except OSError:
        return False
    return True
