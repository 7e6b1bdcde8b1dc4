"""The proxy's Score-P directory: one private directory (0700) per proxy process, in its
temporary directory, named ``jumper-scorep-<pid>-<random>`` after the proxy (see
:mod:`jumper_proxy.leftovers`).

It holds each cell's work directory (the runner, the job, the cells' code, the result, and the
bindings' own build directory when they compile their init library themselves) and the init
libraries prepared once per Score-P configuration. It is made on first use, removed when the
proxy exits, and swept by a later proxy when this one was killed.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

from jumper_proxy.child import transport
from jumper_proxy.errors import HandoverError
from jumper_proxy.leftovers import SCOREP_DIR_PREFIX, owned_prefix

_roots: dict[tuple[int, str], Path] = {}


def root() -> Path:
    """This process's Score-P directory (made now if there is none yet)."""
    key = (os.getpid(), tempfile.gettempdir())
    path = _roots.get(key)
    if path is None or not path.is_dir():
        path = Path(make_dir(None, owned_prefix(SCOREP_DIR_PREFIX)))
        _roots[key] = path
        atexit.register(shutil.rmtree, path, True)
    return path


def new_cell_dir() -> Path:
    """A fresh private directory for one cell, inside :func:`root`."""
    return Path(make_dir(str(root()), "cell-"))


def make_dir(base: str | None, prefix: str) -> str:
    """A private directory under ``base`` (default: the temporary directory); an OSError
    becomes a HandoverError that says which directory could not be written."""
    try:
        return transport.make_private_dir(base, prefix)
    except OSError as exc:
        where = base or tempfile.gettempdir()
        raise HandoverError(
            f"Cannot prepare the Score-P cell: cannot create a private directory in {where} "
            f"({exc.strerror or exc}). Point TMPDIR (or, for disk mode, "
            "SCOREP_KERNEL_PERSISTENCE_DIR) at a writable directory. "
            "The kernel's state is unchanged."
        ) from exc
