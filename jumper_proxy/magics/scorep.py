"""Score-P magics: the Score-P environment, the binding arguments, the marshalling settings,
and ``%%execute_with_scorep``, which runs a cell in a child interpreter under Score-P with the
notebook's state handed over and brought back, then shows the cell's top regions.

Settings are kept in :class:`ScorepSettings` for the kernel's life. A setting magic with a bad
value changes nothing and says why; one that changes what the init library is built from
clears the prepared one. The magics that draw Score-P's results are in :mod:`.scorep_results`.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field, replace

from jumper_proxy.api import Magic, MagicContext, MagicTable
from jumper_proxy.child import CellCode, HandoverSettings, InitCache, run_scorep_cell
from jumper_proxy.errors import ChildFailed, ConfigurationError, MagicError
from jumper_proxy.magics.scorep_results import show_summary

MARSHALLERS = ("dill", "cloudpickle")
MODES = ("memory", "disk")


@dataclass
class ScorepSettings:
    """What ``%%execute_with_scorep`` uses: Score-P's environment, the arguments of
    ``python -m scorep``, and how the notebook's state is handed over."""

    env: dict[str, str] = field(default_factory=dict)
    binding_args: list[str] = field(default_factory=list)
    handover: HandoverSettings = field(default_factory=HandoverSettings)
    #: a command put in front of the child, e.g. ``mpirun -np 4`` (see launcher.build_child_command)
    launcher_prefix: list[str] = field(default_factory=list)
    #: the bindings' init library, prepared for the settings in use
    init_cache: InitCache = field(default_factory=InitCache)


def settings_of(ctx: MagicContext) -> ScorepSettings:
    return ctx.services.state(ScorepSettings)


def parse_assignments(body: str, magic: str) -> dict[str, str]:
    """``KEY=VALUE`` lines (blank lines and ``#`` comments ignored), in order."""
    values: dict[str, str] = {}
    for number, raw in enumerate(body.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        key = key.strip()
        if line.startswith("export "):
            key = key[len("export ") :].strip()
        if not sep or not key or not key.replace("_", "a").isalnum() or key[0].isdigit():
            raise MagicError(f"%%{magic}, line {number}: expected KEY=VALUE, got {raw.strip()!r}")
        values[key] = _unquote(value.strip())
    return values


def _unquote(value: str) -> str:
    if len(value) > 1 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def parse_handover(body: str, current: HandoverSettings) -> HandoverSettings:
    """New marshalling settings from ``MARSHALLER=...`` / ``MODE=...`` lines."""
    settings = current
    for key, value in parse_assignments(body, "marshalling_settings").items():
        name = key.upper()
        if name in ("MARSHALLER", "SERIALIZER"):
            if value not in MARSHALLERS:
                raise MagicError(
                    f"MARSHALLER must be one of {', '.join(MARSHALLERS)}, not {value!r}"
                )
            settings = replace(settings, marshaller=value)
        elif name == "MODE":
            if value not in MODES:
                raise MagicError(f"MODE must be one of {', '.join(MODES)}, not {value!r}")
            settings = replace(settings, mode=value)
        elif name == "SCOREP_KERNEL_PERSISTENCE_DIR":
            settings = replace(settings, persistence_dir=value or None)
        else:
            raise MagicError(
                f"%%marshalling_settings knows MARSHALLER, MODE and "
                f"SCOREP_KERNEL_PERSISTENCE_DIR, not {key!r}"
            )
    return settings


def describe_handover(settings: HandoverSettings) -> str:
    where = (
        settings.persistence_dir
        or "$SCOREP_KERNEL_PERSISTENCE_DIR or a private temporary directory"
    )
    lines = [f"MARSHALLER={settings.marshaller}", f"MODE={settings.mode}"]
    if settings.mode == "disk":
        lines.append(f"disk mode writes under: {where}")
    return "\n".join(lines) + "\n"


async def scorep_env(ctx: MagicContext, args: str, body: str) -> None:
    values = parse_assignments(body, "scorep_env")
    if not values:
        raise MagicError(
            "%%scorep_env needs KEY=VALUE lines below the magic, e.g. SCOREP_ENABLE_TRACING=1"
        )
    settings = settings_of(ctx)
    settings.env.update(values)
    settings.init_cache.clear()
    for key, value in values.items():
        ctx.out.stream(f"{key}={value}\n")


async def scorep_python_binding_arguments(ctx: MagicContext, args: str, body: str) -> None:
    text = " ".join(part for part in (args, body) if part.strip())
    try:
        arguments = shlex.split(text, comments=True)
    except ValueError as exc:
        raise MagicError(f"%%scorep_python_binding_arguments: {exc}") from None
    settings = settings_of(ctx)
    if arguments != settings.binding_args:
        settings.init_cache.clear()
    settings.binding_args = arguments
    shown = shlex.join(arguments) if arguments else "(none)"
    ctx.out.stream(f"python -m scorep {shown} ...\n")


async def marshalling_settings(ctx: MagicContext, args: str, body: str) -> None:
    settings = settings_of(ctx)
    text = "\n".join(part for part in (args.replace(" ", "\n"), body) if part.strip())
    if text.strip():
        try:
            settings.handover = parse_handover(text, settings.handover)
        except ConfigurationError as exc:
            raise MagicError(str(exc)) from None
    ctx.out.stream(describe_handover(settings.handover))


async def execute_with_scorep(ctx: MagicContext, args: str, body: str) -> None:
    await run_instrumented(ctx, [CellCode(body, cell_region(ctx.execution_count))])


def cell_region(execution_count: int | None) -> str:
    """The name of a cell's region in the measurement: ``cell [7]``, as the prompt shows it."""
    return "cell" if execution_count is None else f"cell [{execution_count}]"


async def run_instrumented(ctx: MagicContext, cells: list[CellCode]) -> None:
    """Run ``cells`` under Score-P in one child, watched by the monitor; errors as the cell's.
    Then the top regions of the cells, from the profile Score-P wrote."""
    settings = settings_of(ctx)
    monitor = ctx.services.monitor
    children: list[int] = []

    def watch(pid: int) -> None:
        children.append(pid)
        monitor.extra_roots.add(pid)

    try:
        result = await run_scorep_cell(
            cells,
            settings.handover,
            ctx.run_hidden,
            lambda name, text: ctx.out.stream(text, name),
            ctx.interrupted,
            binding_args=settings.binding_args,
            scorep_env=settings.env,
            launcher_prefix=settings.launcher_prefix,
            on_child_started=watch,
            init_cache=settings.init_cache,
        )
    except ChildFailed as exc:
        if exc.experiment_dir is not None:
            await show_summary(ctx, exc.experiment_dir, [cell.region for cell in cells])
        raise
    finally:
        monitor.extra_roots.difference_update(children)
    if result.experiment_dir is not None:
        await show_summary(ctx, result.experiment_dir, [cell.region for cell in cells])


def register(table: MagicTable) -> None:
    for magic in (
        Magic(
            "scorep_env",
            scorep_env,
            "Score-P environment for instrumented cells (KEY=VALUE lines below)",
        ),
        Magic(
            "scorep_python_binding_arguments",
            scorep_python_binding_arguments,
            "arguments of python -m scorep, e.g. --instrumenter-type=cProfile",
            "[ARGS]",
        ),
        Magic(
            "marshalling_settings",
            marshalling_settings,
            "MARSHALLER=dill|cloudpickle and MODE=memory|disk lines; alone, shows the settings",
        ),
        Magic("serializer_settings", marshalling_settings, "old name of %%marshalling_settings"),
        Magic(
            "execute_with_scorep",
            execute_with_scorep,
            "run the cell under Score-P in a child interpreter, with the notebook's state",
            measured=True,
            needs_python=True,
        ),
    ):
        table.add(magic)
