"""Blobs of bytes handed between processes: POSIX shared-memory segments or private files.

A :class:`Store` is the place where one Score-P cell keeps its blobs: in ``memory`` mode a
name prefix for POSIX shared-memory segments (``/dev/shm/<prefix>...`` on Linux), in ``disk``
mode a private directory. Blobs are written with ``pwrite`` (no page faults through a mapping,
and a full ``/dev/shm`` is a clean ``OSError`` instead of a ``SIGBUS``) and read back either
zero-copy (a shared mapping of the segment) or into private anonymous memory.

Segments are created through ``shm_open`` directly (mode 0600, ``O_EXCL``) rather than through
``multiprocessing.shared_memory.SharedMemory``: that class registers every segment, also the
ones it merely attaches to, with the ``multiprocessing`` resource tracker, which then unlinks
segments that another process still owns and warns about "leaked" ones at exit. Here the
segment names are known to the process that launched the child, which removes them all, by
name and by prefix, whatever happened to the processes that created them.

This module uses the standard library only: its source text is shipped to the upstream kernel
and to the Score-P child, where jumper_proxy may not be installed.
"""

from __future__ import annotations

import contextlib
import importlib
import mmap
import os
import types
from collections.abc import Iterable, Sequence

MEMORY = "memory"
DISK = "disk"
MODES = (MEMORY, DISK)

#: where Linux shows POSIX shared-memory segments; used to sweep a prefix
SHM_DIR = "/dev/shm"
#: Linux writes at most this many bytes per write(2) call
_IO_CHUNK = 1 << 30


def new_shm_prefix(owner: int) -> str:
    """A fresh, unguessable name prefix for one cell's segments (short: macOS allows 31 chars).

    It starts with ``jp<owner>_``, the pid of the proxy that owns the cell, so that segments
    left behind by a proxy that was killed can be recognised and removed later.
    """
    import secrets  # the proxy's side only: the kernel and the child start faster without it

    return f"jp{owner}_{secrets.token_hex(5)}"


def make_private_dir(base: str | None = None, prefix: str = "jumper-handover-") -> str:
    """Create a directory only the user can enter (0700) under ``base`` (created if missing)."""
    if base:
        os.makedirs(base, mode=0o700, exist_ok=True)
    import tempfile

    return tempfile.mkdtemp(prefix=prefix, dir=base or None)


class Store:
    """The blobs of one handover: created here, opened anywhere, removed by whoever cleans up.

    ``where`` is the segment name prefix (``memory``) or the directory (``disk``). Blob names
    are ``<prefix><suffix>`` for segments and ``<suffix>`` for files.
    """

    def __init__(self, mode: str, where: str) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown handover mode {mode!r}; use one of {', '.join(MODES)}")
        if mode == MEMORY:
            _posixshmem()
        self.mode = mode
        self.where = where
        self.created: list[str] = []

    def create(self, suffix: str, size: int, parts: Iterable[tuple[int, memoryview]]) -> str:
        """Create blob ``suffix`` of ``size`` bytes holding each ``(offset, data)`` of ``parts``."""
        name = self.where + suffix if self.mode == MEMORY else suffix
        fd = self._open_new(name)
        self.created.append(name)
        try:
            if size:
                os.ftruncate(fd, size)
            for offset, data in parts:
                _pwrite_all(fd, data, offset)
        except BaseException:
            os.close(fd)
            self.remove(name)
            raise
        os.close(fd)
        return name

    def open(self, name: str, size: int, *, zero_copy: bool) -> memoryview:
        """Blob ``name`` as a writable buffer of ``size`` bytes.

        ``zero_copy`` maps the blob (shared: writes land in the blob) instead of reading it. The
        memory stays valid after the blob is removed, for as long as the buffer or a view of it
        lives (a mapped file keeps its disk space, and on NFS its name, until then: only
        short-lived processes should map files). Otherwise the bytes are read into private
        anonymous memory.
        """
        if size == 0:
            return memoryview(bytearray())
        fd = self._open_existing(name, writable=zero_copy)
        try:
            if zero_copy:
                return memoryview(mmap.mmap(fd, size))
            view = memoryview(mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE))
            _pread_all(fd, view)
            return view
        finally:
            os.close(fd)

    def remove(self, name: str) -> None:
        """Remove one blob; a blob that is already gone is fine."""
        with contextlib.suppress(FileNotFoundError):
            if self.mode == MEMORY:
                _posixshmem().shm_unlink("/" + name)
            else:
                os.unlink(os.path.join(self.where, name))

    def remove_all(self, names: Sequence[str] = ()) -> None:
        """Remove ``names`` and every blob of this store, also ones nobody reported.

        Memory mode sweeps ``/dev/shm`` for the prefix (where the system shows segments);
        disk mode removes the directory.
        """
        for name in [*names, *self.created]:
            self.remove(name)
        if self.mode == DISK:
            import shutil

            shutil.rmtree(self.where, ignore_errors=True)
            return
        with contextlib.suppress(OSError):
            for entry in os.listdir(SHM_DIR):
                if entry.startswith(self.where):
                    self.remove(entry)

    def _open_new(self, name: str) -> int:
        flags = os.O_CREAT | os.O_EXCL | os.O_RDWR
        if self.mode == MEMORY:
            fd: int = _posixshmem().shm_open("/" + name, flags, mode=0o600)
            return fd
        return os.open(os.path.join(self.where, name), flags | os.O_CLOEXEC, 0o600)

    def _open_existing(self, name: str, writable: bool) -> int:
        if self.mode == MEMORY:
            fd: int = _posixshmem().shm_open("/" + name, os.O_RDWR, mode=0o600)
            return fd
        flags = (os.O_RDWR if writable else os.O_RDONLY) | os.O_CLOEXEC
        return os.open(os.path.join(self.where, name), flags)


def _posixshmem() -> types.ModuleType:
    """CPython's ``shm_open``/``shm_unlink`` (what ``multiprocessing.shared_memory`` uses)."""
    try:
        return importlib.import_module("_posixshmem")
    except ImportError:
        raise OSError("this Python has no POSIX shared memory; use disk mode") from None


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    view = data if data.format == "B" and data.ndim == 1 else data.cast("B")
    while view.nbytes:
        written = os.pwrite(fd, view[:_IO_CHUNK], offset)
        view = view[written:]
        offset += written


def _pread_all(fd: int, into: memoryview) -> None:
    offset = 0
    total = into.nbytes
    while offset < total:
        got = os.preadv(fd, [into[offset : offset + _IO_CHUNK]], offset)
        if got == 0:
            raise OSError(f"handover blob ended after {offset} of {total} bytes")
        offset += got
