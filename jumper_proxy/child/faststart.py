"""Starting Score-P children fast: the bindings' init library, prepared once per configuration.

``python -m scorep`` starts in two stages. The first asks ``scorep-config`` for the
configuration, compiles and links a small init library (``libscorep_init_subsystem-X.Y.so``)
with gcc in a temporary directory, sets ``LD_PRELOAD``, ``LD_LIBRARY_PATH`` and
``SCOREP_PYTHON_BINDINGS_INITIALISED=true``, and executes itself again; the second stage, started
so, only restores ``LD_PRELOAD`` and runs the program. The first stage is most of the start.

:class:`InitCache` runs the first stage once per configuration, with the bindings' own function
(``scorep.subsystem.init_environment``, in the kernel's Python), keeps the library in the proxy's
Score-P directory, and gives later children the environment of a second stage. The
configuration is the key: the interpreter, the bindings (where, which version), ``scorep-config``
(where, its size and time) and the arguments that go to ``scorep-config`` (``--mpp=mpi``,
``--thread=...``). Anything that does not fit falls back to the bindings' own start: an option
only the first stage handles (``--verbose``, ``--keep-files``, ``--io=...``), a library that is
gone, a preparation that failed. A change of the Score-P settings clears the cache.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from jumper_proxy.child import workspace
from jumper_proxy.child.launcher import (
    BindingsProbe,
    communicate,
    die_with_proxy,
    probe_bindings,
)

#: options the bindings handle in their second stage; any other option goes to scorep-config
_SECOND_STAGE = ("--nopython", "--noinstrumenter", "--instrumenter-type=", "--instrumenter-file=")
#: options only the bindings' own first stage handles as the user expects
_FIRST_STAGE = ("--verbose", "-v", "--keep-files", "--help", "--mpi", "--", "--io=")
_NO_PYTHON = ("--nopython", "--noinstrumenter")
#: how long preparing the init library may take (scorep-config and gcc)
_PREPARE_TIMEOUT = 120.0

#: run by the kernel's Python: the bindings' own first stage, its results as JSON on stdout
_PREPARE_CODE = """\
import json, os, sys
import scorep.subsystem
scorep.subsystem.init_environment(json.loads(sys.argv[1]), keep_files=True)
names = ("LD_PRELOAD", "LD_LIBRARY_PATH", "SCOREP_PYTHON_BINDINGS_TEMP_DIR")
print(json.dumps({name: os.environ.get(name) for name in names}))
"""


@dataclass(frozen=True)
class BindingArgs:
    """The binding arguments sorted as the bindings sort them."""

    #: the arguments that go to scorep-config (they shape the init library)
    config: tuple[str, ...]
    #: whether the user's code is instrumented (no ``--noinstrumenter``/``--nopython``)
    instrument: bool
    #: whether the fast start applies (no option that only the first stage handles)
    fast: bool


def split_binding_args(args: Sequence[str]) -> BindingArgs:
    """Sort ``args`` (the arguments of ``python -m scorep`` before the program)."""
    config: list[str] = []
    fast = True
    for arg in args:
        if arg in _FIRST_STAGE or arg.startswith("--io=") or not arg.startswith("-"):
            fast = False
        elif not arg.startswith(_SECOND_STAGE):
            config.append(arg)
    return BindingArgs(tuple(config), not any(a in _NO_PYTHON for a in args), fast)


@dataclass(frozen=True)
class Prepared:
    """A prepared init library: the ``LD_PRELOAD`` value of a second stage, and the directory
    that holds the library (for ``LD_LIBRARY_PATH``)."""

    preload: str
    lib_dir: str

    def usable(self) -> bool:
        names = self.preload.split()
        return bool(names) and (Path(self.lib_dir) / names[-1]).is_file()


class InitCache:
    """The init library of the configuration in use, prepared on first use, and what the
    kernel's Python last found (the bindings, scorep-config)."""

    def __init__(self) -> None:
        self._probed: tuple[tuple[str, ...], BindingsProbe] | None = None
        self._key: tuple[str, ...] | None = None
        self._prepared: Prepared | None = None
        self._dir: Path | None = None
        #: why the last preparation failed (the bindings' own start shows it to the user)
        self.failure: str | None = None

    def clear(self) -> None:
        """Forget the prepared library (and remove its files) and what was probed."""
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
        self._key = self._prepared = self._dir = None
        self._probed = None
        self.failure = None

    async def probe(self, python: str, env: Mapping[str, str], cwd: Path) -> BindingsProbe:
        """:func:`probe_bindings`, asked again only when the interpreter, the environment or
        the directory changed, or a file it found changed or went away."""
        key = (python, str(cwd), *sorted(f"{k}={v}" for k, v in env.items()))
        if self._probed is not None and self._probed[0] == key:
            found = self._probed[1]
            if found.bindings and found.scorep_config and _unchanged(found):
                return found
        found = await probe_bindings(python, env, cwd)
        self._probed = (key, found)
        return found

    async def second_stage_env(
        self,
        key: Sequence[str],
        args: BindingArgs,
        python: str,
        env: Mapping[str, str],
        cwd: Path,
    ) -> dict[str, str] | None:
        """``env`` as a second stage of the bindings wants it, or ``None`` when the child must
        start as the bindings start (the fast start does not apply, or preparing failed).
        ``key`` names the configuration apart from the arguments."""
        if not args.fast:
            return None
        full_key = (*key, *args.config)
        if full_key != self._key:
            self.clear()
            self._key = full_key
            self._prepared = await self._prepare(python, args.config, env, cwd)
        if self._prepared is None or not self._prepared.usable():
            return None
        return second_stage(env, self._prepared)

    async def _prepare(
        self, python: str, config: Sequence[str], env: Mapping[str, str], cwd: Path
    ) -> Prepared | None:
        self._dir = Path(workspace.make_dir(str(workspace.root()), "init-"))
        build_env = {**env, "TMPDIR": str(self._dir)}
        try:
            proc = await asyncio.create_subprocess_exec(
                python,
                "-c",
                _PREPARE_CODE,
                json.dumps(list(config)),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=build_env,
                cwd=str(cwd),
                preexec_fn=functools.partial(die_with_proxy, os.getpid()),
            )
        except OSError as exc:
            self.failure = str(exc)
            return None
        answer = await communicate(proc, _PREPARE_TIMEOUT)
        if answer is None:
            self.failure = "preparing the init library took too long"
            return None
        return self._read(proc.returncode, *answer)

    def _read(self, returncode: int | None, out: bytes, err: bytes) -> Prepared | None:
        try:
            found = json.loads(out.decode().strip().splitlines()[-1]) if returncode == 0 else None
        except (ValueError, IndexError):
            found = None
        if not isinstance(found, dict) or not found.get("LD_PRELOAD"):
            self.failure = err.decode(errors="replace").strip()[-2000:] or "no answer"
            return None
        lib_dir = str(found.get("SCOREP_PYTHON_BINDINGS_TEMP_DIR") or "")
        if not lib_dir.startswith(str(self._dir)):
            self.failure = f"the init library is not where it was built ({lib_dir})"
            return None
        prepared = Prepared(str(found["LD_PRELOAD"]), lib_dir)
        return prepared if prepared.usable() else None


def _unchanged(found: BindingsProbe) -> bool:
    return all(
        stamp is not None and _stamp(stamp.rsplit(":", 2)[0]) == stamp
        for stamp in (found.bindings, found.scorep_config)
    )


def _stamp(path: str) -> str | None:
    """``path:size:mtime`` as the probe writes it."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return f"{path}:{info.st_size}:{info.st_mtime_ns}"


def second_stage(env: Mapping[str, str], prepared: Prepared) -> dict[str, str]:
    """``env`` for ``python -m scorep ...`` started as the bindings' second stage."""
    started = dict(env)
    started.pop("SCOREP_PYTHON_BINDINGS_TEMP_DIR", None)  # else the bindings remove it at exit
    library_path = env.get("LD_LIBRARY_PATH", "")
    started["LD_LIBRARY_PATH"] = ":".join(p for p in (prepared.lib_dir, library_path) if p)
    started["LD_PRELOAD"] = prepared.preload
    started["SCOREP_LD_PRELOAD_BACKUP"] = ""
    started["SCOREP_PYTHON_BINDINGS_INITIALISED"] = "true"
    return started
