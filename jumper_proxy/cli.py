"""The command line: run the proxy kernel (what a kernelspec's argv calls), install, list and
uninstall kernelspecs, and run a notebook headless through the proxy.

Errors a user can cause end with one ``Error: ...`` line on stderr and a non-zero exit.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import click

from jumper_proxy import __version__
from jumper_proxy.config import ProxyConfig, UpstreamSpec
from jumper_proxy.errors import ConfigurationError, JumperError

#: the default kernelspec name of ``install`` (as in jumper_proxy.kernelspec, which is not
#: imported when the kernel runs: it starts the kernel before importing anything heavy)
DEFAULT_NAME = "jumper-proxy"

UPSTREAM_TRANSPORTS = ("tcp", "ipc")

_upstream_args = click.option(
    "--upstream-arg",
    "upstream_args",
    multiple=True,
    metavar="ARG",
    help="Argument the wrapped kernel is started with (repeatable), e.g. "
    "--upstream-arg=--HistoryManager.hist_file=:memory:",
)


class _Group(click.Group):
    """A click group that shows the project's errors as one ``Error: ...`` line, exit 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except JumperError as exc:
            raise click.ClickException(str(exc)) from exc


@dataclass(frozen=True)
class _Options:
    debug: bool


def _configure_logging(level: int) -> None:
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format="[jumper-proxy %(levelname)s %(asctime)s %(name)s] %(message)s",
    )


@click.group(
    cls=_Group,
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.option("--upstream", metavar="KERNELSPEC", help="Kernelspec of the kernel to wrap.")
@click.option(
    "--upstream-python",
    metavar="PATH",
    help="Python interpreter (with ipykernel) to run the wrapped kernel with.",
)
@_upstream_args
@click.option(
    "-f",
    "connection_file",
    metavar="CONNECTION_FILE",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Connection file written by the frontend.",
)
@click.option(
    "--upstream-transport",
    type=click.Choice(UPSTREAM_TRANSPORTS),
    default="ipc",
    show_default=True,
    help="Transport of the private connection to the wrapped kernel.",
)
@click.option("--debug", is_flag=True, help="Log every routed message type.")
@click.version_option(__version__, prog_name="jumper-proxy")
@click.pass_context
def main(
    ctx: click.Context,
    upstream: str | None,
    upstream_python: str | None,
    upstream_args: tuple[str, ...],
    connection_file: Path | None,
    upstream_transport: str,
    debug: bool,
) -> None:
    """jumper-proxy: a Jupyter kernel for performance engineering that stands in front of a
    real kernel.

    Without a command it runs the kernel, as a kernelspec's argv does:
    jumper-proxy --upstream python3 -f CONNECTION_FILE
    """
    ctx.obj = _Options(debug=debug)
    if ctx.invoked_subcommand is not None:
        _configure_logging(logging.DEBUG if debug else logging.WARNING)
        given = [
            flag
            for flag, value in (
                ("--upstream", upstream),
                ("--upstream-python", upstream_python),
                ("--upstream-arg", upstream_args or None),
                ("-f", connection_file),
            )
            if value is not None
        ]
        if given:
            raise click.UsageError(
                f"{', '.join(given)} belong to running the kernel, not to the "
                f"{ctx.invoked_subcommand!r} command; give them after the command name."
            )
        return
    if connection_file is None:
        raise click.UsageError(
            "Missing -f CONNECTION_FILE (or a command: install, list, uninstall, run)."
        )
    _configure_logging(logging.DEBUG if debug else logging.INFO)
    if not connection_file.is_file():
        raise ConfigurationError(f"Connection file {connection_file} does not exist.")
    from jumper_proxy.launch import launch_for_proxy, upstream_spec

    config = ProxyConfig(
        connection_file=connection_file.resolve(),
        upstream=replace(upstream_spec(upstream, upstream_python), args=upstream_args),
        debug=debug,
        upstream_transport=upstream_transport,
    )
    # the kernel first: it boots while the proxy imports the rest of itself
    runtime_dir, first = launch_for_proxy(
        config.upstream, config.connection_file, config.upstream_transport
    )
    from jumper_proxy.kernel import serve_and_exit

    serve_and_exit(config, runtime_dir, first)


def _parse_env(
    _ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]
) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}")
        env[key] = value
    return env


@main.command()
@click.option("--user", is_flag=True, help="Install for the current user.")
@click.option("--sys-prefix", is_flag=True, help="Install into this Python's sys.prefix.")
@click.option("--prefix", metavar="DIR", help="Install into DIR/share/jupyter/kernels.")
@click.option("--name", default=DEFAULT_NAME, show_default=True, help="Kernelspec name.")
@click.option("--display-name", metavar="TEXT", help="Name shown in the launcher.")
@click.option("--upstream", metavar="KERNELSPEC", help="Kernelspec to wrap [default: python3].")
@click.option("--upstream-python", metavar="PATH", help="Python interpreter to wrap.")
@_upstream_args
@click.option(
    "--env",
    "env",
    multiple=True,
    metavar="KEY=VALUE",
    callback=_parse_env,
    help="Environment variable for the kernel (repeatable).",
)
def install(
    user: bool,
    sys_prefix: bool,
    prefix: str | None,
    name: str,
    display_name: str | None,
    upstream: str | None,
    upstream_python: str | None,
    upstream_args: tuple[str, ...],
    env: dict[str, str],
) -> None:
    """Install a kernelspec that starts jumper-proxy with this Python."""
    from jumper_proxy.kernelspec import install_kernelspec, resolve_upstream

    spec = resolve_upstream(upstream, upstream_python, upstream_args)
    destination = install_kernelspec(
        user=user,
        prefix=prefix,
        sys_prefix=sys_prefix,
        name=name,
        display_name=display_name,
        upstream=spec,
        env=env,
    )
    click.echo(f"Installed kernelspec {name.lower()} in {destination} (wraps {spec.describe()})")
    note = _python_magics_note(spec)
    if note:
        click.echo(note, err=True)


def _python_magics_note(spec: UpstreamSpec) -> str | None:
    """A note naming the magics a kernel that is not IPython will not have, or ``None``."""
    from jumper_proxy.kernelspec import is_ipython_upstream
    from jumper_proxy.launch import command_for

    if is_ipython_upstream(spec):
        return None
    from jumper_proxy.magics.registry import build_table

    command = command_for(spec)

    names = ", ".join(f"%%{m.name}" for m in build_table().all() if m.needs_python)
    language = command.language or "another language"
    return (
        f"Note: {spec.describe()} is not an IPython kernel ({language}); the relay, the monitor "
        f"and the monitoring magics work in front of it, but {names} run Python in the kernel "
        "and will say so instead."
    )


@main.command(name="list")
def list_command() -> None:
    """List the installed jumper-proxy kernelspecs and what each wraps."""
    from jumper_proxy.kernelspec import list_kernelspecs

    installed = list_kernelspecs()
    if not installed:
        click.echo("No jumper-proxy kernelspecs installed.")
        return
    width = max(len(spec.name) for spec in installed)
    for spec in installed:
        wraps = spec.upstream.describe() if spec.upstream is not None else "unknown upstream"
        click.echo(f"{spec.name.ljust(width)}  wraps {wraps}  {spec.resource_dir}")


@main.command()
@click.argument("name")
def uninstall(name: str) -> None:
    """Remove the jumper-proxy kernelspec NAME."""
    from jumper_proxy.kernelspec import uninstall_kernelspec

    removed = uninstall_kernelspec(name)
    click.echo(f"Removed kernelspec {name} from {removed}")


@main.command()
@click.argument("notebook", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Executed notebook [default: NOTEBOOK.out.ipynb beside NOTEBOOK].",
)
@click.option(
    "--json",
    "json_path",
    metavar="PERF.json",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the per-cell table as JSON.",
)
@click.option(
    "--html",
    "html_path",
    metavar="REPORT.html",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write a self-contained HTML report: the table and every cell's graphs.",
)
@click.option("--upstream", metavar="KERNELSPEC", help="Kernelspec to wrap.")
@click.option("--upstream-python", metavar="PATH", help="Python interpreter to wrap.")
@_upstream_args
@click.option(
    "--timeout",
    type=click.IntRange(min=1),
    metavar="SECONDS",
    help="Per-cell time limit; a cell running longer is interrupted [default: none].",
)
@click.option("--allow-errors", is_flag=True, help="Keep running after a cell fails.")
@click.pass_obj
def run(
    options: _Options,
    notebook: Path,
    output: Path | None,
    json_path: Path | None,
    html_path: Path | None,
    upstream: str | None,
    upstream_python: str | None,
    upstream_args: tuple[str, ...],
    timeout: int | None,
    allow_errors: bool,
) -> None:
    """Execute NOTEBOOK headless through jumper-proxy and print per-cell performance.

    Without --upstream/--upstream-python the notebook's own kernel is wrapped (what a
    jumper-proxy kernelspec of that name wraps), or python3. Progress goes to stderr (on a
    terminal with a live line while a cell runs), the table to stdout; the executed notebook
    keeps each cell's figures in its metadata.jumper.
    """
    from jumper_proxy.headless import default_output, read_notebook, run_notebook
    from jumper_proxy.kernelspec import resolve_upstream, upstream_for_notebook
    from jumper_proxy.report import format_table, rows_to_json

    if upstream is None and upstream_python is None:
        saved_with = read_notebook(notebook).metadata.get("kernelspec", {}).get("name")
        spec = upstream_for_notebook(saved_with)
        if upstream_args:
            spec = replace(spec, args=(*spec.args, *upstream_args))
    else:
        spec = resolve_upstream(upstream, upstream_python, upstream_args)
    destination = output if output is not None else default_output(notebook)
    for path in (json_path, html_path):
        if path is not None and not path.parent.is_dir():
            raise ConfigurationError(f"Cannot write {path}: {path.parent} is not a directory.")
    click.echo(f"Running {notebook} through jumper-proxy, wrapping {spec.describe()}", err=True)
    result = run_notebook(
        notebook,
        destination,
        upstream=spec,
        timeout=timeout,
        allow_errors=allow_errors,
        debug=options.debug,
        progress=lambda line: click.echo(line, err=True),
        status=_status_line if sys.stderr.isatty() else None,
    )
    click.echo(f"Saved the executed notebook to {destination}", err=True)
    if result.records is None:
        click.echo("The kernel sent no perf data; perf columns are empty.", err=True)
    click.echo(format_table(result.rows))
    if json_path is not None:
        _write(json_path, json.dumps(rows_to_json(result.rows), indent=1) + "\n")
    if html_path is not None:
        from jumper_proxy.html_report import report_html

        _write(html_path, report_html(notebook.name, result.rows, result.records or []))
        click.echo(f"Wrote the report to {html_path}", err=True)
    if result.error is not None:
        raise click.ClickException(result.error)


def _status_line(text: str) -> None:
    """Rewrite the terminal's last line with ``text`` (cut to the terminal's width)."""
    width = shutil.get_terminal_size().columns - 1
    sys.stderr.write("\r\x1b[K" + text[:width])
    sys.stderr.flush()


def _write(path: Path, text: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"Cannot write {path}: {exc.strerror}.") from None
