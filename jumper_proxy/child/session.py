"""One ``%%execute_with_scorep`` cell from start to end: :func:`run_scorep_cell`.

The proxy works on the upstream kernel only through an injected ``run_hidden`` (silent code in
the user's namespace, expressions back as literals; see :mod:`.bootstrap`), so this module runs
against any stand-in.

Steps: probe the kernel (its Python, directory, environment, marshallers) and its bindings
(importable, ``scorep-config`` on PATH); export the namespace into a fresh store; start the
child (from a prepared init library when one fits, see :mod:`.faststart`); import its changes
into the kernel. Whatever happens, every segment, file and directory made for the cell is
removed, and the kernel's state changes only after a successful child.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from jumper_proxy import leftovers
from jumper_proxy.child import notes, transport, workspace
from jumper_proxy.child.bootstrap import RunHidden, bundle, in_kernel
from jumper_proxy.child.faststart import BindingArgs, InitCache, split_binding_args
from jumper_proxy.child.launcher import (
    SCOREP_CONFIG_HINT,
    SCOREP_INSTALL_HINT,
    ChildResult,
    build_child_command,
    build_child_env,
    describe_child_exit,
    find_experiment_dir,
    probe_bindings,
    run_child,
)
from jumper_proxy.errors import (
    ChildError,
    ChildFailed,
    ChildInterrupted,
    ConfigurationError,
    HandoverError,
    ScorepNotFound,
)

T = TypeVar("T")
_HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class HandoverSettings:
    """How the state travels: ``marshaller`` (``dill``/``cloudpickle``), ``mode``
    (``memory``: shared memory; ``disk``: files), and for disk mode the directory under which a
    private directory is made (else ``SCOREP_KERNEL_PERSISTENCE_DIR`` of the kernel's or the
    Score-P environment, else the system's temporary directory; relative to the kernel's)."""

    marshaller: str = "dill"
    mode: str = "memory"
    persistence_dir: str | None = None

    def __post_init__(self) -> None:
        if self.marshaller not in ("dill", "cloudpickle"):
            raise ConfigurationError(
                f"MARSHALLER must be dill or cloudpickle, not {self.marshaller!r}"
            )
        if self.mode not in transport.MODES:
            raise ConfigurationError(f"MODE must be memory or disk, not {self.mode!r}")


@dataclass(frozen=True)
class CellCode:
    """One cell's code for the child, the name of its region in the measurement (``cell [7]``),
    and a line printed before it runs (a multi-cell block's ``--- cell 1 of 3 ---``)."""

    code: str
    region: str = "cell"
    header: str | None = None


@dataclass(frozen=True)
class ScorepCellResult:
    """A successful Score-P cell: the names set and deleted in the kernel, the warning lines
    (already streamed to stderr), where the experiment went, whether the child started from a
    prepared init library, and seconds per phase (``probe``, ``export``, ``prepare``, ``child``
    with its ``child_load`` and ``child_dump``, ``import``)."""

    updated: list[str]
    deleted: list[str]
    warnings: list[str]
    experiment_dir: Path | None
    returncode: int
    timings: dict[str, float] = field(default_factory=dict)
    fast_start: bool = False


async def run_scorep_cell(
    code: str | Sequence[CellCode],
    settings: HandoverSettings,
    run_hidden: RunHidden,
    on_output: Callable[[str, str], None],
    interrupt: asyncio.Event,
    python: str | None = None,
    binding_args: Sequence[str] = (),
    scorep_env: Mapping[str, str] | None = None,
    *,
    launcher_prefix: Sequence[str] = (),
    on_child_started: Callable[[int], None] | None = None,
    interrupt_grace: float = 5.0,
    terminate_grace: float = 3.0,
    init_cache: InitCache | None = None,
) -> ScorepCellResult:
    """Run ``code`` (one cell, or several in order) under Score-P in a child of the kernel's
    Python with the notebook's state.

    ``python`` defaults to the kernel's ``sys.executable``; the child runs in the kernel's
    directory with the kernel's environment plus ``scorep_env``. Output reaches ``on_output``
    as ``("stdout"|"stderr", text)`` while the child writes it, followed by the warning lines,
    ``Score-P experiment directory: PATH`` and notes on what Score-P reported. Setting
    ``interrupt`` stops the child. With ``init_cache`` the child starts from an init library
    prepared once per configuration (see :mod:`.faststart`).

    Raises :class:`ScorepNotFound`, :class:`HandoverError`, :class:`ChildFailed` (the cell
    raised, with the user's traceback, or the child crashed) or :class:`ChildInterrupted`; in
    each case the kernel's state is as before.
    """
    cells = [CellCode(code)] if isinstance(code, str) else list(code)
    env_overrides = dict(scorep_env or {})
    timings: dict[str, float] = {}
    clock = time.monotonic()

    probe = await in_kernel(run_hidden, {"action": "probe"}, "inspecting the kernel")
    python = python or probe["python"]
    cwd = Path(probe["cwd"])
    env = build_child_env(probe["env"], env_overrides)
    if settings.marshaller not in probe["marshallers"]:
        raise HandoverError(
            f"{settings.marshaller} is not installed in the kernel's environment: install it "
            f"there (pip install {settings.marshaller}) or choose another MARSHALLER with "
            "%%marshalling_settings."
        )
    if init_cache is not None:
        bindings = await init_cache.probe(python, env, cwd)
    else:
        bindings = await probe_bindings(python, env, cwd)
    if bindings.bindings is None:
        raise ScorepNotFound(
            f"The Score-P Python bindings are not importable by {python}. " + SCOREP_INSTALL_HINT
        )
    if bindings.scorep_config is None:
        raise ScorepNotFound(
            f"The Score-P Python bindings are installed for {python}, but scorep-config is not "
            "on the kernel's PATH, so Score-P cannot start. " + SCOREP_CONFIG_HINT
        )
    refused = notes.refusal(cwd, env)
    if refused is not None:
        raise ChildError(refused)
    args = split_binding_args(binding_args)
    timings["probe"] = _lap(clock)

    workdir = workspace.new_cell_dir()
    store: transport.Store | None = None
    job: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
    starting: asyncio.Future[tuple[ChildResult, bool, float]] | None = None
    output = notes.ScorepOutput(on_output)
    try:
        store = _prepare(_new_store, settings, probe["env"], env_overrides, cwd)
        job_cells = _prepare(_write_files, workdir, cells)
        # the bindings build in the cell's directory; the runner gives the cell TMPDIR back
        child_env = {**env, "TMPDIR": str(workdir)}
        cmd = build_child_command(
            python, binding_args, workdir / "runner.py", launcher_prefix, ["-"]
        )
        previous = notes.experiments_before(cwd, env)
        started_at = time.time()

        async def start_child() -> tuple[ChildResult, bool, float]:
            """Prepare the init library if it is not, start the child; it reads the job from
            its stdin, so it starts while the kernel exports."""
            clock = time.monotonic()
            fast_env = None
            if init_cache is not None and not launcher_prefix:
                fast_env = await init_cache.second_stage_env(
                    bindings.key(), args, python, child_env, cwd
                )
            prepared = _lap(clock)
            try:
                child = await run_child(
                    cmd,
                    fast_env or child_env,
                    cwd,
                    output,
                    interrupt,
                    interrupt_grace=interrupt_grace,
                    terminate_grace=terminate_grace,
                    on_started=on_child_started,
                    stdin=job,
                )
            finally:
                output.close()
            return child, fast_env is not None, prepared

        starting = asyncio.ensure_future(start_child())
        clock = time.monotonic()
        request = {"action": "export", "marshaller": settings.marshaller}
        exported = await in_kernel(
            run_hidden,
            {**request, "mode": store.mode, "where": store.where},
            "handing the notebook's state over",
        )
        timings["export"] = _lap(clock)
        warnings = list(exported.pop("warnings"))
        for line in warnings:
            on_output("stderr", line + "\n")
        if interrupt.is_set():
            raise ChildInterrupted("KeyboardInterrupt", "interrupted before the Score-P cell ran")
        job.set_result(_job(workdir, job_cells, exported, settings, store, args, env).encode())
        child, fast_start, timings["prepare"] = await starting
        timings["child"] = child.duration
        experiment = find_experiment_dir(cwd, env, started_at)
        if experiment is not None:
            on_output("stdout", f"Score-P experiment directory: {experiment}\n")
        moved = notes.moved_experiment(cwd, env, previous) if experiment is not None else None
        for note in [*output.notes(env), *([moved] if moved else [])]:
            on_output("stderr", note + "\n")
        outcome = _outcome(workdir / "result.json", child, experiment, output.explain())
        timings.update(outcome["timings"])
        warnings += outcome["warnings"]  # the child wrote them to its stderr
        # the kernel's segments the child did not hand back are not needed any more
        handed_back = {name for name, _, _ in outcome["manifest"]["data"]["buffers"]}
        for name in exported["data"]["blobs"]:
            if name not in handed_back:
                store.remove(name)

        clock = time.monotonic()
        request = {"action": "import", "manifest": outcome["manifest"]}
        imported = await in_kernel(run_hidden, request, "bringing the cell's state back")
        timings["import"] = _lap(clock)
        for line in imported["warnings"]:
            on_output("stderr", line + "\n")
        return ScorepCellResult(
            updated=imported["updated"],
            deleted=imported["deleted"],
            warnings=warnings + list(imported["warnings"]),
            experiment_dir=experiment,
            returncode=child.returncode,
            timings=timings,
            fast_start=fast_start,
        )
    finally:
        job.cancel()  # a child still waiting for its job gets an empty stdin
        if starting is not None and not starting.done():
            starting.cancel()  # and is killed with its process group
            with contextlib.suppress(BaseException):
                await starting
        if store is not None:
            store.remove_all()
        shutil.rmtree(workdir, ignore_errors=True)


def _prepare(step: Callable[..., T], *args: Any) -> T:
    """``step(*args)``, an OSError of which (a full disk, a directory not writable) becomes a
    HandoverError saying so."""
    try:
        return step(*args)
    except OSError as exc:
        raise HandoverError(
            f"Cannot prepare the Score-P cell: {exc}. The kernel's state is unchanged."
        ) from exc


def _new_store(
    settings: HandoverSettings,
    kernel_env: Mapping[str, str],
    scorep_env: Mapping[str, str],
    cwd: Path,
) -> transport.Store:
    if settings.mode == transport.MEMORY:
        return transport.Store(transport.MEMORY, transport.new_shm_prefix(os.getpid()))
    base = (
        settings.persistence_dir
        or kernel_env.get("SCOREP_KERNEL_PERSISTENCE_DIR")
        or scorep_env.get("SCOREP_KERNEL_PERSISTENCE_DIR")
    )
    folder = str(cwd / base) if base else tempfile.gettempdir()
    leftovers.sweep(folder, [(leftovers.HANDOVER_PREFIX, "-")])  # of proxies that died
    where = workspace.make_dir(folder, leftovers.owned_prefix(leftovers.HANDOVER_PREFIX))
    return transport.Store(transport.DISK, where)


def _write_files(workdir: Path, cells: Sequence[CellCode]) -> list[dict[str, Any]]:
    """The runner, the private package and the cells' code in ``workdir`` (0700); the job's
    entry of each cell."""
    package, sources = bundle()
    _write(workdir / "runner.py", (_HERE / "runner.py").read_text(encoding="utf-8"))
    (workdir / package).mkdir(mode=0o700)
    _write(workdir / package / "__init__.py", "")
    for name, source in sources:
        _write(workdir / package / f"{name}.py", source)
    job_cells = []
    for number, cell in enumerate(cells, 1):
        path = workdir / ("cell.py" if len(cells) == 1 else f"cell_{number}.py")
        _write(path, cell.code)
        job_cells.append({"file": str(path), "region": cell.region, "header": cell.header})
    return job_cells


def _job(
    workdir: Path,
    cells: list[dict[str, Any]],
    exported: dict[str, Any],
    settings: HandoverSettings,
    store: transport.Store,
    args: BindingArgs,
    env: Mapping[str, str],
) -> str:
    """What the runner does, as JSON (it reads it from its stdin)."""
    return json.dumps(
        {
            "package": bundle()[0],
            "cells": cells,
            "instrument": args.instrument,
            "tmpdir": env.get("TMPDIR"),
            "result_file": str(workdir / "result.json"),
            "input": exported,
            "output": {
                "marshaller": settings.marshaller,
                "mode": store.mode,
                "where": store.where,
            },
        }
    )


def _write(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with open(fd, "w", encoding="utf-8") as f:
        f.write(text)


def _outcome(
    path: Path, child: ChildResult, experiment: Path | None, explanation: str | None
) -> dict[str, Any]:
    """The child's answer if it succeeded: it answered ``ok`` and exited with 0."""
    try:
        outcome: dict[str, Any] | None = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        outcome = None
    failed = outcome is not None and outcome["status"] != "ok"
    if child.interrupted:
        raise ChildInterrupted(
            "KeyboardInterrupt",
            "the Score-P cell was interrupted; nothing was carried back",
            outcome["traceback"] if outcome is not None and failed else None,
            returncode=child.returncode,
            experiment_dir=experiment,
        )
    if outcome is not None and failed:
        raise ChildFailed(
            outcome["ename"],
            outcome["evalue"],
            outcome["traceback"],
            returncode=child.returncode,
            experiment_dir=experiment,
        )
    if outcome is None or child.returncode != 0:
        why = f" {explanation}" if explanation else ""
        raise ChildFailed(
            "ChildError",
            describe_child_exit(child.returncode) + why + " Nothing was carried back.",
            returncode=child.returncode,
            experiment_dir=experiment,
        )
    return outcome


def _lap(since: float) -> float:
    return time.monotonic() - since


def remove_stale_segments(
    shm_dir: str = transport.SHM_DIR, temp_dir: str | None = None
) -> list[str]:
    """Remove this user's shared-memory segments, Score-P directories and disk-mode handover
    directories in the temporary directory, of proxies that died; their names."""
    return leftovers.sweep(shm_dir, [(leftovers.SEGMENT_PREFIX, "_")]) + leftovers.sweep(
        temp_dir or tempfile.gettempdir(),
        [(leftovers.SCOREP_DIR_PREFIX, "-"), (leftovers.HANDOVER_PREFIX, "-")],
    )
