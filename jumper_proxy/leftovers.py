"""Recognising what a proxy that died left behind: files named after the proxy's pid.

A killed proxy cannot remove its private directory or the shared-memory segments of a cell
it was running; the next proxy of the same user that starts removes them.
"""

from __future__ import annotations

import os
from pathlib import Path

import psutil


def owner_is_gone(path: Path, pid_text: str) -> bool:
    """Whether ``path`` belongs to this user and its owner, the process ``pid_text``, no
    longer runs (a zombie, dead and not yet reaped, counts as gone)."""
    try:
        if not pid_text.isdigit() or path.stat().st_uid != os.getuid():
            return False
        return psutil.Process(int(pid_text)).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
    except (OSError, psutil.Error):
        return False
