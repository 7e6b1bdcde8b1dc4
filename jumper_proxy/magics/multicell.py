"""Multi-cell mode: ``%%enable_multicellmode`` marks the following cells instead of running
them, ``%%finalize_multicellmode`` runs the marked cells in order as one Score-P cell, and
``%%abort_multicellmode`` drops them. Each marked cell is a region of its own in the
measurement, named after the execution count it got when it was marked. Also what marking
shares with write mode: turning a cell's code into plain Python (:func:`to_python`) and
checking it with the kernel's own Python.

While marking, the proxy's own magics run as usual (Score-P and marshalling settings,
monitoring, help, the mode magics); every other cell is marked, ``%%execute_with_scorep``
cells too (the magic adds nothing there). Empty cells and frontends' silent requests are
never marked.
"""

from __future__ import annotations

import io
import tokenize
from dataclasses import dataclass, field

from jumper_proxy import kernelside
from jumper_proxy.api import Magic, MagicContext, MagicTable
from jumper_proxy.cells import Cell
from jumper_proxy.child import CellCode
from jumper_proxy.errors import HiddenExecutionError, MagicError
from jumper_proxy.magics.scorep import cell_region, run_instrumented

#: the proxy magics whose cells are marked (without their magic line) rather than run
MARKED_MAGICS = frozenset({"execute_with_scorep"})
#: IPython's line magics that set an environment variable (``%env KEY=VALUE``)
_ENV_MAGICS = ("env", "set_env")
_OPENING = frozenset({tokenize.LPAR, tokenize.LSQB, tokenize.LBRACE})
_CLOSING = frozenset({tokenize.RPAR, tokenize.RSQB, tokenize.RBRACE})


@dataclass(frozen=True)
class Converted:
    """A cell as plain Python: ``code`` keeps the cell's line numbers (a dropped magic line
    becomes blank, or ``pass`` where it was indented); ``dropped`` are the magic lines left
    out; ``env`` the ``%env`` assignments, which ``code`` keeps as ``os.environ`` settings."""

    code: str
    dropped: list[str]
    env: list[tuple[str, str]]


def _magic_rows(lines: list[str]) -> set[int]:
    """The 1-based rows holding an IPython magic (``%...``) or shell (``!...``) line.

    Only lines where a statement starts count, so ``%`` inside a string or an expression
    continued over lines stays. Code the tokenizer cannot read falls back to every line that
    starts with ``%`` or ``!``.
    """
    rows: set[int] = set()
    depth, at_start, skip_row = 0, True, 0
    try:
        for tok in tokenize.generate_tokens(io.StringIO("".join(lines)).readline):
            if tok.type == tokenize.NEWLINE or (tok.type == tokenize.NL and depth == 0):
                at_start = True
                continue
            if tok.type in (tokenize.NL, tokenize.INDENT, tokenize.DEDENT, tokenize.COMMENT):
                continue
            if tok.type == tokenize.ENDMARKER or tok.start[0] == skip_row:
                continue
            if at_start and depth == 0 and tok.string in ("%", "!"):
                rows.add(tok.start[0])
                skip_row = tok.start[0]
            elif tok.exact_type in _OPENING:
                depth += 1
            elif tok.exact_type in _CLOSING:
                depth = max(0, depth - 1)
            at_start = False
    except (tokenize.TokenError, SyntaxError):
        return {n for n, line in enumerate(lines, 1) if line.lstrip().startswith(("%", "!"))}
    return rows


def env_assignment(line: str) -> tuple[str, str] | None:
    """``(KEY, VALUE)`` of an ``%env KEY=VALUE`` / ``%env KEY VALUE`` line, split as IPython
    splits it; ``None`` for other lines (``%env`` alone or ``%env KEY`` only read)."""
    name, _, param = line.strip().lstrip("%").partition(" ")
    if name not in _ENV_MAGICS or not param.strip():
        return None
    bits = param.split("=" if "=" in param else None, 1)
    if len(bits) < 2:
        return None
    key, value = bits[0].strip(), bits[1].strip()
    if not key or any(c.isspace() for c in key):
        raise MagicError(f"{line.strip()}: the variable name may not contain spaces")
    if "$" in value or "{" in value:
        raise MagicError(
            f"{line.strip()}: values with $name or {{expression}} are not expanded outside the "
            f"notebook; write os.environ[{key!r}] = ... instead"
        )
    return key, value


def to_python(code: str) -> Converted:
    """``code`` with its magic lines dropped and its ``%env`` assignments turned into
    ``os.environ`` settings that print what IPython prints (``env: KEY=VALUE``)."""
    lines = io.StringIO(code).readlines()
    rows = _magic_rows(lines)
    out: list[str] = []
    dropped: list[str] = []
    env: list[tuple[str, str]] = []
    for number, line in enumerate(lines, 1):
        if number not in rows:
            out.append(line)
            continue
        indent = line[: len(line) - len(line.lstrip())]
        end = "\n" if line.endswith("\n") else ""
        assignment = env_assignment(line)
        if assignment is not None:
            key, value = assignment
            env.append(assignment)
            statement = (
                f"__import__('os').environ[{key!r}] = {value!r}; print({f'env: {key}={value}'!r})"
            )
            out.append(indent + statement + end)
        else:
            dropped.append(line.strip())
            out.append((indent + "pass" if indent else "") + end)
    return Converted("".join(out), dropped, env)


def trim_blank_lines(code: str) -> str:
    """``code`` without blank lines at its start and end, ending in one newline if not empty."""
    lines = [line.rstrip("\r\n") for line in io.StringIO(code).readlines()]
    while lines and not lines[0].strip():
        lines.pop(0)
    while lines and not lines[-1].strip():
        lines.pop()
    return "".join(line + "\n" for line in lines)


async def check_syntax(ctx: MagicContext, code: str, what: str) -> None:
    """Compile ``code`` with the kernel's Python (whose version decides what is valid)."""
    try:
        await ctx.run_hidden(*kernelside.compile_check(code))
    except HiddenExecutionError as exc:
        if exc.ename not in ("SyntaxError", "IndentationError", "TabError"):
            raise
        raise MagicError(
            f"{what} is not plain Python once its magic lines are dropped: "
            f"{exc.ename}: {exc.evalue}",
            ename=exc.ename,
        ) from None


def no_code(magic: str, args: str, body: str) -> None:
    """A mode magic stands alone in its cell."""
    if args.strip() or body.strip():
        raise MagicError(f"%%{magic} stands alone in its cell: put the code in a cell of its own")


def block_cells(cells: list[tuple[str, int | None]]) -> list[CellCode]:
    """The marked cells (code and execution count), in order, each its own region and each
    after a ``--- cell i of n ---`` line, so each cell's output can be told apart."""
    total = len(cells)
    return [
        CellCode(trim_blank_lines(code), cell_region(count), f"--- cell {number} of {total} ---")
        for number, (code, count) in enumerate(cells, 1)
    ]


@dataclass
class MulticellState:
    """Whether cells are being marked, and the marked cells' code (with the execution count
    each got) in order."""

    enabled: bool = False
    cells: list[tuple[str, int | None]] = field(default_factory=list)

    def enable(self) -> None:
        if self.enabled:
            raise MagicError(
                f"Multi-cell mode is already on ({len(self.cells)} cells marked): "
                "%%finalize_multicellmode runs them, %%abort_multicellmode drops them."
            )
        self.enabled = True
        self.cells = []

    def mark(self, code: str, execution_count: int | None = None) -> int:
        self.cells.append((code, execution_count))
        return len(self.cells)

    def ready(self) -> list[tuple[str, int | None]]:
        """The marked cells, for finalizing."""
        if not self.enabled:
            raise MagicError(
                "Multi-cell mode is off: start marking with %%enable_multicellmode first."
            )
        if not self.cells:
            raise MagicError(
                "No cell is marked yet: run the cells to mark after %%enable_multicellmode, "
                "or leave the mode with %%abort_multicellmode."
            )
        return list(self.cells)

    def abort(self) -> int:
        if not self.enabled:
            raise MagicError("Multi-cell mode is off: there is nothing to abort.")
        dropped = len(self.cells)
        self.reset()
        return dropped

    def reset(self) -> None:
        self.enabled = False
        self.cells = []


class MulticellMode:
    """The mode's magics and its interceptor, over one :class:`MulticellState`."""

    def __init__(self, table: MagicTable) -> None:
        self.table = table
        self.state = MulticellState()

    def intercept(self, cell: Cell) -> Magic | None:
        if not self.state.enabled or not cell.code.strip():
            return None
        if cell.magic in self.table and cell.magic not in MARKED_MAGICS:
            return None

        async def mark(ctx: MagicContext, args: str, body: str) -> None:
            await self.mark(ctx, cell)

        return Magic("multicell_mark", mark, "mark the cell for %%finalize_multicellmode")

    async def mark(self, ctx: MagicContext, cell: Cell) -> None:
        converted = to_python(cell.code)
        dropped = converted.dropped
        if cell.magic in MARKED_MAGICS:
            dropped = dropped[1:]  # the cell's own magic line, expected to go
        await check_syntax(ctx, converted.code, "The cell")
        number = self.state.mark(converted.code, ctx.execution_count)
        ctx.out.stream(f"marked ({number})\n")
        if cell.magic in MARKED_MAGICS:
            ctx.out.stream(f"%%{cell.magic} adds nothing in multi-cell mode\n", "stderr")
        for line in dropped:
            ctx.out.stream(f"dropped magic line: {line}\n", "stderr")

    async def enable(self, ctx: MagicContext, args: str, body: str) -> None:
        no_code("enable_multicellmode", args, body)
        self.state.enable()
        ctx.out.stream(
            "Multi-cell mode on: the following cells are marked, not run. "
            "%%finalize_multicellmode runs them as one Score-P cell, "
            "%%abort_multicellmode drops them.\n"
        )

    async def finalize(self, ctx: MagicContext, args: str, body: str) -> None:
        no_code("finalize_multicellmode", args, body)
        cells = self.state.ready()
        try:
            await run_instrumented(ctx, block_cells(cells))
        except BaseException:
            ctx.out.stream("Multi-cell mode is off; the marked cells are dropped.\n", "stderr")
            raise
        finally:
            self.state.reset()
        ctx.out.stream(f"Ran {len(cells)} marked cells as one Score-P cell; multi-cell mode off.\n")

    async def abort(self, ctx: MagicContext, args: str, body: str) -> None:
        no_code("abort_multicellmode", args, body)
        dropped = self.state.abort()
        ctx.out.stream(f"Multi-cell mode off; {dropped} marked cells dropped.\n")


def register(table: MagicTable) -> MulticellState:
    """Add the mode's magics and interceptor to ``table``; the state they share."""
    mode = MulticellMode(table)
    for magic in (
        Magic(
            "enable_multicellmode",
            mode.enable,
            "mark the following cells instead of running them",
            needs_python=True,
        ),
        Magic(
            "finalize_multicellmode",
            mode.finalize,
            "run the marked cells in order as one Score-P cell",
            measured=True,
            needs_python=True,
        ),
        Magic("abort_multicellmode", mode.abort, "drop the marked cells, stop marking"),
    ):
        table.add(magic)
    table.interceptors.append(mode.intercept)
    return mode.state
