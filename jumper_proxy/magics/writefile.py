"""Write mode: ``%%start_writefile [SCRIPT]`` records the following cells instead of running
them, ``%%end_writefile`` writes them as a Python script plus a bash script that runs it under
Score-P, and ``%%abort_writefile`` drops the recording.

What is recorded: code cells; ``%%execute_with_scorep`` cells and the cells of a recorded
multi-cell block (``%%enable_multicellmode`` ... ``%%finalize_multicellmode``), written as
they are so that they are instrumented, while other cells are wrapped in
``with scorep.instrumenter.disable():``; and ``%%scorep_env`` and
``%%scorep_python_binding_arguments``, which go to the run script only (the kernel's own
settings do not change). The proxy's other magics (help, monitoring, marshalling settings, the
write-mode magics) run as usual.

Generating the files is pure (:func:`script_text`, :func:`run_script_text`); writing them is
done by the user's kernel, so they land in its working directory.
"""

from __future__ import annotations

import io
import shlex
import tokenize
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from jumper_proxy import kernelside
from jumper_proxy.api import Magic, MagicContext, MagicTable
from jumper_proxy.cells import Cell
from jumper_proxy.errors import MagicError
from jumper_proxy.magics.multicell import (
    MulticellState,
    check_syntax,
    no_code,
    to_python,
    trim_blank_lines,
)
from jumper_proxy.magics.scorep import parse_assignments

DEFAULT_SCRIPT = "jupyter_to_script.py"
#: the proxy magics whose cells are recorded; the others run as usual while recording
RECORDED_MAGICS = frozenset(
    {
        "execute_with_scorep",
        "scorep_env",
        "scorep_python_binding_arguments",
        "enable_multicellmode",
        "finalize_multicellmode",
        "abort_multicellmode",
    }
)
DISABLE = "with scorep.instrumenter.disable():\n"


@dataclass(frozen=True)
class Piece:
    """One recorded code cell: plain Python, and whether it runs instrumented."""

    code: str
    instrumented: bool


def script_name(args: str) -> str:
    """The script named on ``%%start_writefile``'s line (``.py`` added if missing)."""
    try:
        names = shlex.split(args)
    except ValueError as exc:
        raise MagicError(f"%%start_writefile: {exc}") from None
    if len(names) > 1:
        raise MagicError(f"%%start_writefile takes one file name, not {len(names)}")
    name = names[0] if names else DEFAULT_SCRIPT
    base = name.rsplit("/", 1)[-1]
    if base in ("", ".", "..", ".py") or "\n" in name:
        raise MagicError(f"%%start_writefile: {name!r} is not a file name")
    return name if name.endswith(".py") else name + ".py"


def run_script_name(script: str) -> str:
    """``prog.py`` is run by ``prog_run.sh``, next to it."""
    return script[: -len(".py")] + "_run.sh"


def _inside_rows(code: str) -> set[int]:
    """The 1-based rows that start inside a token begun on an earlier row (a multi-line
    string): indenting them would change the string."""
    rows: set[int] = set()
    try:
        for tok in tokenize.generate_tokens(io.StringIO(code).readline):
            rows.update(range(tok.start[0] + 1, tok.end[0] + 1))
    except (tokenize.TokenError, SyntaxError):
        return set()
    return rows


def indent_block(code: str) -> str:
    """``code`` as the body of a block: every line one level deeper (a tab where the code
    indents with tabs), except blank lines and the inside of multi-line strings."""
    lines = io.StringIO(code).readlines()
    tabs = any(line[: len(line) - len(line.lstrip())].count("\t") for line in lines)
    prefix = "\t" if tabs else "    "
    inside = _inside_rows(code)
    return "".join(
        line if number in inside or not line.strip() else prefix + line
        for number, line in enumerate(lines, 1)
    )


def piece_text(piece: Piece) -> str:
    """How ``piece`` appears in the script ('' for an empty instrumented cell)."""
    code = trim_blank_lines(piece.code)
    if piece.instrumented:
        return code
    return DISABLE + indent_block(code or "pass\n")


def script_text(pieces: Sequence[Piece], run_script: str) -> str:
    """The Python script of the recorded cells, in order."""
    head = f"# Recorded in a notebook. Run it under Score-P with: bash {run_script}\n"
    parts = [head + "import scorep.instrumenter\n"]
    parts += [text for text in map(piece_text, pieces) if text]
    return "\n".join(parts)


def run_script_text(
    python: str, script: str, env: Mapping[str, str], binding_args: Sequence[str]
) -> str:
    """The bash script that runs ``script`` (a name in its own directory) under Score-P with
    ``python``, from any directory."""
    program = "./" + script if script.startswith("-") else script
    lines = [
        "#!/usr/bin/env bash",
        f"# Runs {script} under Score-P with the settings recorded in the notebook.",
        "set -euo pipefail",
        'cd "$(dirname "$0")"',
        "# the bindings set these for themselves; inherited values would mislead them",
        "unset LD_PRELOAD SCOREP_PYTHON_BINDINGS_INITIALISED",
        *(f"export {key}={shlex.quote(value)}" for key, value in env.items()),
        shlex.join([python, "-m", "scorep", *binding_args, program]) + ' "$@"',
    ]
    return "\n".join(lines) + "\n"


def binding_arguments(args: str, body: str) -> list[str]:
    """The arguments of ``%%scorep_python_binding_arguments``, as that magic reads them."""
    try:
        return shlex.split(" ".join(part for part in (args, body) if part.strip()), comments=True)
    except ValueError as exc:
        raise MagicError(f"%%scorep_python_binding_arguments: {exc}") from None


@dataclass
class Recording:
    """The cells recorded so far and the settings for the run script."""

    script: str
    pieces: list[Piece] = field(default_factory=list)
    #: from ``%%scorep_env`` cells
    scorep_env: dict[str, str] = field(default_factory=dict)
    #: ``SCOREP_*`` variables set by ``%env`` lines: Score-P reads them when it starts
    env_lines: dict[str, str] = field(default_factory=dict)
    binding_args: list[str] = field(default_factory=list)
    #: where the open multi-cell block starts in ``pieces``, if one is open
    block_start: int | None = None

    def piece(self, code: str, scorep_cell: bool) -> Piece:
        return Piece(code, scorep_cell or self.block_start is not None)

    def add(self, piece: Piece, env: Sequence[tuple[str, str]] = ()) -> int:
        self.pieces.append(piece)
        self.env_lines.update((k, v) for k, v in env if k.startswith("SCOREP_"))
        return len(self.pieces)

    def exports(self) -> dict[str, str]:
        """The run script's environment: ``%%scorep_env`` wins, as it does for a Score-P cell."""
        return {**self.env_lines, **self.scorep_env}

    def open_block(self) -> None:
        if self.block_start is not None:
            raise MagicError("A multi-cell block is already open in the recording.")
        self.block_start = len(self.pieces)

    def close_block(self) -> int:
        """End the open block; how many cells it holds."""
        if self.block_start is None:
            raise MagicError("No multi-cell block is open in the recording.")
        count = len(self.pieces) - self.block_start
        if not count:
            raise MagicError(
                "The recorded multi-cell block has no cells: record some, or %%abort_multicellmode."
            )
        self.block_start = None
        return count

    def drop_block(self) -> int:
        """Forget the open block's cells, as aborting drops them in the notebook."""
        if self.block_start is None:
            raise MagicError("No multi-cell block is open in the recording.")
        count = len(self.pieces) - self.block_start
        del self.pieces[self.block_start :]
        self.block_start = None
        return count

    def check_complete(self) -> None:
        if self.block_start is not None:
            raise MagicError(
                "A multi-cell block is open in the recording: record %%finalize_multicellmode "
                "or %%abort_multicellmode first."
            )


class WriteMode:
    """The mode's magics and its interceptor; ``multicell`` is refused while it marks."""

    def __init__(self, table: MagicTable, multicell: MulticellState) -> None:
        self.table = table
        self.multicell = multicell
        self.recording: Recording | None = None

    def intercept(self, cell: Cell) -> Magic | None:
        if self.recording is None or not cell.code.strip():
            return None
        if cell.magic in self.table and cell.magic not in RECORDED_MAGICS:
            return None

        async def record(ctx: MagicContext, args: str, body: str) -> None:
            await self.record(ctx, cell)

        return Magic("writefile_record", record, "record the cell for %%end_writefile")

    def _active(self) -> Recording:
        if self.recording is None:
            raise MagicError("Write mode is off: start recording with %%start_writefile first.")
        return self.recording

    async def record(self, ctx: MagicContext, cell: Cell) -> None:
        recording = self._active()
        if cell.magic == "scorep_env":
            values = parse_assignments(cell.body, "scorep_env")
            if not values:
                raise MagicError("%%scorep_env needs KEY=VALUE lines below the magic")
            recording.scorep_env.update(values)
            shown = " ".join(f"{k}={shlex.quote(v)}" for k, v in values.items())
            ctx.out.stream(f"recorded for the run script: {shown}\n")
        elif cell.magic == "scorep_python_binding_arguments":
            recording.binding_args = binding_arguments(cell.args, cell.body)
            shown = shlex.join(recording.binding_args) or "(none)"
            ctx.out.stream(f"recorded for the run script: python -m scorep {shown} ...\n")
        elif cell.magic == "enable_multicellmode":
            no_code(cell.magic, cell.args, cell.body)
            recording.open_block()
            ctx.out.stream("recorded: the following cells run instrumented, as one block\n")
        elif cell.magic == "finalize_multicellmode":
            no_code(cell.magic, cell.args, cell.body)
            count = recording.close_block()
            ctx.out.stream(f"recorded: end of the multi-cell block ({count} cells)\n")
        elif cell.magic == "abort_multicellmode":
            no_code(cell.magic, cell.args, cell.body)
            count = recording.drop_block()
            ctx.out.stream(f"recorded: multi-cell block dropped ({count} cells left out)\n")
        else:
            await self._record_code(ctx, recording, cell)

    async def _record_code(self, ctx: MagicContext, recording: Recording, cell: Cell) -> None:
        converted = to_python(cell.code)
        scorep_cell = cell.magic == "execute_with_scorep"
        dropped = converted.dropped[1:] if scorep_cell else converted.dropped
        piece = recording.piece(converted.code, scorep_cell)
        await check_syntax(ctx, piece_text(piece), "The cell")
        number = recording.add(piece, converted.env)
        ctx.out.stream(f"recorded ({number}){', instrumented' if piece.instrumented else ''}\n")
        for line in dropped:
            ctx.out.stream(f"dropped magic line: {line}\n", "stderr")

    async def start(self, ctx: MagicContext, args: str, body: str) -> None:
        no_code("start_writefile", "", body)
        if self.recording is not None:
            raise MagicError(
                f"Write mode is already on (recording to {self.recording.script}): "
                "%%end_writefile writes it, %%abort_writefile drops it."
            )
        if self.multicell.enabled:
            raise MagicError(
                "Multi-cell mode is on: %%finalize_multicellmode or %%abort_multicellmode "
                "first (a multi-cell block can be recorded inside write mode)."
            )
        script = script_name(args)
        self.recording = Recording(script)
        ctx.out.stream(
            f"Write mode on: the following cells are recorded for {script}, not run, until "
            "%%end_writefile (or %%abort_writefile).\n"
        )

    async def end(self, ctx: MagicContext, args: str, body: str) -> None:
        no_code("end_writefile", args, body)
        recording = self._active()
        recording.check_complete()
        run_script = run_script_name(recording.script)
        name = recording.script.rpartition("/")[2]
        program = script_text(recording.pieces, run_script.rpartition("/")[2])
        await check_syntax(ctx, program, "The script")
        python = (await ctx.run_hidden(*kernelside.interpreter()))["python"]
        runner = run_script_text(str(python), name, recording.exports(), recording.binding_args)
        files = [(recording.script, program, None), (run_script, runner, 0o755)]
        paths = (await ctx.run_hidden(*kernelside.write_files(files)))["paths"]
        self.recording = None
        ctx.out.stream(
            f"wrote {paths[0]} ({len(recording.pieces)} cells)\n"
            f"wrote {paths[1]}: run it with bash {run_script}\n"
        )

    async def abort(self, ctx: MagicContext, args: str, body: str) -> None:
        no_code("abort_writefile", args, body)
        recording = self._active()
        self.recording = None
        ctx.out.stream(f"Write mode off; {len(recording.pieces)} recorded cells dropped.\n")


def register(table: MagicTable, multicell: MulticellState) -> WriteMode:
    """Add the mode's magics and interceptor to ``table``; the mode."""
    mode = WriteMode(table, multicell)
    for magic in (
        Magic(
            "start_writefile",
            mode.start,
            "record the following cells for a script instead of running them",
            "[SCRIPT]",
            needs_python=True,
        ),
        Magic(
            "end_writefile",
            mode.end,
            "write SCRIPT and SCRIPT_run.sh (runs it under Score-P) where the kernel runs",
            needs_python=True,
        ),
        Magic("abort_writefile", mode.abort, "drop the recording, stop recording"),
    ):
        table.add(magic)
    table.interceptors.append(mode.intercept)
    return mode
