"""One ``%%execute_with_scorep`` cell from start to end: :func:`run_scorep_cell`.

The proxy works on the upstream kernel only through an injected ``run_hidden`` (silent code in
the user's namespace, expressions back as literals), so this module runs against any stand-in.
The kernel-side code it sends is built here from the source text of :mod:`.transport`,
:mod:`.pickling` and :mod:`.handover`, installed in the kernel as a private package (named
after a hash of that text) and called there; the child gets the same text as files next to the
runner. The upstream environment needs neither jumper_proxy nor anything but the chosen
marshaller.

Steps: probe the kernel (its Python, directory, environment, marshallers); check that the
bindings are importable; export the namespace into a fresh store; run the child; import its
changes into the kernel. Whatever happens, every segment, file and directory made for the cell
is removed, and the kernel's state changes only after a successful child.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import shutil
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

from jumper_proxy.child import transport
from jumper_proxy.child.launcher import (
    SCOREP_INSTALL_HINT,
    build_child_command,
    build_child_env,
    describe_child_exit,
    find_experiment_dir,
    run_child,
    scorep_importable,
)
from jumper_proxy.errors import (
    ChildFailed,
    ChildInterrupted,
    ConfigurationError,
    HandoverError,
    HiddenExecutionError,
    ScorepNotFound,
)
from jumper_proxy.leftovers import owner_is_gone

#: ``await run_hidden(code, expressions)``: run ``code`` silently in the user's namespace and
#: return each expression's value as a literal; raises HiddenExecutionError when code raises
RunHidden = Callable[[str, dict[str, str]], Awaitable[dict[str, Any]]]

T = TypeVar("T")
_HERE = Path(__file__).resolve().parent
#: the modules of the private package, in import order
_BUNDLE = ("transport", "pickling", "handover")

_BOOTSTRAP = """\
import linecache, sys, types

def _install(package, sources):
    if package + ".handover" in sys.modules:
        return
    root = types.ModuleType(package)
    root.__path__ = []
    root.__package__ = package
    sys.modules[package] = root
    try:
        for name, source in sources:
            full = package + "." + name
            filename = "<" + full + ">"
            linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
            module = types.ModuleType(full)
            module.__package__ = package
            module.__file__ = filename
            sys.modules[full] = module
            exec(compile(source, filename, "exec"), module.__dict__)
            setattr(root, name, module)
    except BaseException:
        for key in [package] + [package + "." + name for name, _ in sources]:
            sys.modules.pop(key, None)
        raise

_install({package!r}, {sources!r})
sys.modules[{package!r} + ".handover"].kernel_request(sys._getframe(1).f_globals, {request!r})
"""


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
class ScorepCellResult:
    """A successful Score-P cell: the names set and deleted in the kernel, the warning lines
    (already streamed to stderr), where the experiment went, and seconds per phase (``probe``,
    ``export``, ``child`` with its ``child_load`` and ``child_dump``, ``import``)."""

    updated: list[str]
    deleted: list[str]
    warnings: list[str]
    experiment_dir: Path | None
    returncode: int
    timings: dict[str, float] = field(default_factory=dict)


async def run_scorep_cell(
    code: str,
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
) -> ScorepCellResult:
    """Run ``code`` under Score-P in a child of the kernel's Python with the notebook's state.

    ``python`` defaults to the kernel's ``sys.executable``; the child runs in the kernel's
    directory with the kernel's environment plus ``scorep_env``. Output reaches ``on_output``
    as ``("stdout"|"stderr", text)`` while the child writes it, followed by the warning lines and
    ``Score-P experiment directory: PATH``. Setting ``interrupt`` stops the child.

    Raises :class:`ScorepNotFound`, :class:`HandoverError`, :class:`ChildFailed` (the cell
    raised, with the user's traceback, or the child crashed) or :class:`ChildInterrupted`; in
    each case the kernel's state is as before.
    """
    env_overrides = dict(scorep_env or {})
    timings: dict[str, float] = {}
    clock = time.monotonic()

    probe = await _kernel(run_hidden, {"action": "probe"}, "inspecting the kernel")
    python = python or probe["python"]
    cwd = Path(probe["cwd"])
    env = build_child_env(probe["env"], env_overrides)
    if settings.marshaller not in probe["marshallers"]:
        raise HandoverError(
            f"{settings.marshaller} is not installed in the kernel's environment: install it "
            f"there (pip install {settings.marshaller}) or choose another MARSHALLER with "
            "%%marshalling_settings."
        )
    if not await scorep_importable(python, env, cwd):
        raise ScorepNotFound(
            f"The Score-P Python bindings are not importable by {python}. " + SCOREP_INSTALL_HINT
        )
    timings["probe"] = _lap(clock)

    workdir = Path(_prepare(transport.make_private_dir, None, "jumper-scorep-"))
    store: transport.Store | None = None
    try:
        store = _prepare(_new_store, settings, probe["env"], env_overrides, cwd)
        clock = time.monotonic()
        request = {"action": "export", "marshaller": settings.marshaller}
        exported = await _kernel(
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

        job = _prepare(_write_job, workdir, code, exported, settings, store)
        cmd = build_child_command(
            python, binding_args, workdir / "runner.py", launcher_prefix, [str(job)]
        )
        started_at = time.time()
        child = await run_child(
            cmd,
            env,
            cwd,
            on_output,
            interrupt,
            interrupt_grace=interrupt_grace,
            terminate_grace=terminate_grace,
            on_started=on_child_started,
        )
        timings["child"] = child.duration
        experiment = find_experiment_dir(cwd, env, started_at)
        if experiment is not None:
            on_output("stdout", f"Score-P experiment directory: {experiment}\n")
        outcome = _outcome(workdir / "result.json", child.interrupted, child.returncode, experiment)
        timings.update(outcome["timings"])
        warnings += outcome["warnings"]  # the child wrote them to its stderr
        # the kernel's segments the child did not hand back are not needed any more
        handed_back = {name for name, _, _ in outcome["manifest"]["data"]["buffers"]}
        for name in exported["data"]["blobs"]:
            if name not in handed_back:
                store.remove(name)

        clock = time.monotonic()
        request = {"action": "import", "manifest": outcome["manifest"]}
        imported = await _kernel(run_hidden, request, "bringing the cell's state back")
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
        )
    finally:
        if store is not None:
            store.remove_all()
        shutil.rmtree(workdir, ignore_errors=True)


@lru_cache(maxsize=1)
def bundle() -> tuple[str, list[tuple[str, str]]]:
    """The private package's name and its ``(module, source)`` pairs."""
    sources = [(name, (_HERE / f"{name}.py").read_text(encoding="utf-8")) for name in _BUNDLE]
    digest = hashlib.sha256("\0".join(text for _, text in sources).encode()).hexdigest()
    return f"_jumper_proxy_child_{digest[:12]}", sources


def kernel_code(request: Mapping[str, Any]) -> tuple[str, dict[str, str]]:
    """The hidden code and expressions that run one handover ``request`` in the kernel.

    The code is one line (base64) so that no IPython input transformation can touch it; it
    defines no names in the user's namespace. The expression ``result`` is the JSON answer.
    """
    package, sources = bundle()
    program = _BOOTSTRAP.format(package=package, sources=sources, request=json.dumps(request))
    encoded = base64.b64encode(program.encode()).decode("ascii")
    code = (
        "__import__('builtins').exec(__import__('builtins').compile("
        f"__import__('base64').b64decode('{encoded}'), '<jumper-proxy>', 'exec'), "
        "{'__name__': '_jumper_proxy_hidden'})"
    )
    expression = f"__import__('sys').modules[{package + '.handover'!r}].take_result()"
    return code, {"result": expression}


async def _kernel(run_hidden: RunHidden, request: Mapping[str, Any], doing: str) -> Any:
    code, expressions = kernel_code(request)
    try:
        values = await run_hidden(code, expressions)
    except HiddenExecutionError as exc:
        hint = ""
        if "No space left on device" in exc.evalue:
            hint = (
                " (memory mode: /dev/shm is full, choose MODE=disk with %%marshalling_settings;"
                " disk mode: point SCOREP_KERNEL_PERSISTENCE_DIR at a larger file system)"
            )
        raise HandoverError(
            f"Failed while {doing}: {exc.ename}: {exc.evalue}{hint}. "
            "The kernel's state is unchanged."
        ) from exc
    return json.loads(values["result"])


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
    where = transport.make_private_dir(str(cwd / base) if base else None)
    return transport.Store(transport.DISK, where)


def _write_job(
    workdir: Path,
    code: str,
    exported: dict[str, Any],
    settings: HandoverSettings,
    store: transport.Store,
) -> Path:
    """The runner, the private package, the cell's code and the job, in ``workdir`` (0700)."""
    package, sources = bundle()
    _write(workdir / "runner.py", (_HERE / "runner.py").read_text(encoding="utf-8"))
    (workdir / package).mkdir(mode=0o700)
    _write(workdir / package / "__init__.py", "")
    for name, source in sources:
        _write(workdir / package / f"{name}.py", source)
    _write(workdir / "cell.py", code)
    job = {
        "package": package,
        "cell_file": str(workdir / "cell.py"),
        "result_file": str(workdir / "result.json"),
        "input": exported,
        "output": {"marshaller": settings.marshaller, "mode": store.mode, "where": store.where},
    }
    _write(workdir / "job.json", json.dumps(job))
    return workdir / "job.json"


def _write(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with open(fd, "w", encoding="utf-8") as f:
        f.write(text)


def _outcome(
    path: Path, interrupted: bool, returncode: int, experiment: Path | None
) -> dict[str, Any]:
    """The child's answer if it succeeded: it answered ``ok`` and exited with 0."""
    try:
        outcome: dict[str, Any] | None = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        outcome = None
    failed = outcome is not None and outcome["status"] != "ok"
    if interrupted:
        raise ChildInterrupted(
            "KeyboardInterrupt",
            "the Score-P cell was interrupted; nothing was carried back",
            outcome["traceback"] if outcome is not None and failed else None,
            returncode=returncode,
            experiment_dir=experiment,
        )
    if outcome is not None and failed:
        raise ChildFailed(
            outcome["ename"],
            outcome["evalue"],
            outcome["traceback"],
            returncode=returncode,
            experiment_dir=experiment,
        )
    if outcome is None or returncode != 0:
        raise ChildFailed(
            "ChildError",
            describe_child_exit(returncode) + " Nothing was carried back.",
            returncode=returncode,
            experiment_dir=experiment,
        )
    return outcome


def _lap(since: float) -> float:
    return time.monotonic() - since


def remove_stale_segments(shm_dir: str = transport.SHM_DIR) -> list[str]:
    """Remove this user's shared-memory segments of proxies that died mid-cell; their names."""
    removed = []
    for path in Path(shm_dir).glob("jp*_*"):
        if owner_is_gone(path, path.name[2:].split("_", 1)[0]):
            with contextlib.suppress(OSError):
                path.unlink()
                removed.append(path.name)
    return removed
