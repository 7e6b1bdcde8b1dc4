"""What Score-P and its bindings say, turned into one clear line each.

:class:`ScorepOutput` sits between the child's output and the cell: it passes everything on as
it arrives, except Score-P's own warnings that repeat (``[Score-P] Trace buffer flush on rank
0.`` / ``Increase SCOREP_TOTAL_MEMORY ...``), which become one note after the cell, and it keeps
the end of stderr to explain a child that failed before the cell ran (:meth:`explain`).
:func:`refusal` says before the child starts that Score-P would refuse to run;
:func:`moved_experiment` what Score-P did with an experiment directory that was reused.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path

_TAG = "[Score-P] "
_FLUSH = re.compile(r"^\[Score-P\] (Trace buffer flush on rank \d+\.|Increase SCOREP_TOTAL_MEMORY)")
_TAIL = 64 * 1024
_FALSE = ("false", "no", "off", "0")

#: (pattern in the child's stderr, what to tell the user); the first that matches explains
_EXPLANATIONS: list[tuple[re.Pattern[str], str]] = [
    (
        re.compile(r"Please increase SCOREP_TOTAL_MEMORY=(\d+)"),
        "Score-P ran out of its measurement memory (SCOREP_TOTAL_MEMORY={0} bytes): raise it "
        "with %%scorep_env, e.g. SCOREP_TOTAL_MEMORY=64M.",
    ),
    (
        re.compile(r"Experiment directory \"([^\"]+)\" exists and overwriting is disabled"),
        "Score-P did not run the cell: the experiment directory {0} exists and "
        "SCOREP_OVERWRITE_EXPERIMENT_DIRECTORY is false.",
    ),
    (
        re.compile(r"Inconsistent profile\. Stop profiling: Exit event for other than current"),
        "Score-P saw the events of several threads as one (the cell runs threads): add "
        "--thread=pthread with %%scorep_python_binding_arguments.",
    ),
    (
        re.compile(r"cannot find -l(unwind|bfd)"),
        "The Score-P bindings could not link their init library: lib{0} is missing (on Debian "
        "and Ubuntu: apt-get install libunwind-dev binutils-dev).",
    ),
    (
        re.compile(r"cannot find -l([^\s:]+)"),
        "The Score-P bindings could not link their init library: the library {0} is missing.",
    ),
    (
        re.compile(r"Subsystem Library at (\S+) cannot be executed"),
        "The Score-P bindings built their init library at {0} but cannot load it (a file "
        "system mounted noexec?): point TMPDIR at a directory that allows executables.",
    ),
    (
        re.compile(r"given config (\[.*?\]) is not supported"),
        "scorep-config rejects the binding arguments {0}: see scorep-config --help, and change "
        "them with %%scorep_python_binding_arguments.",
    ),
    (
        re.compile(r"No usable temporary directory found in \[[^\]\n]*\]"),
        "The Score-P bindings could not build their init library: {0}; point TMPDIR at a "
        "writable directory.",
    ),
]


class ScorepOutput:
    """A ``(stream, text)`` callback in front of ``on_output``; see the module docstring."""

    def __init__(self, on_output: Callable[[str, str], None]) -> None:
        self._on_output = on_output
        self._held = ""
        self.flushes = 0
        self.tail = ""

    def __call__(self, name: str, text: str) -> None:
        if name != "stderr":
            self._on_output(name, text)
            return
        self.tail = (self.tail + text)[-_TAIL:]
        text = self._held + text
        self._held = ""
        lines = text.splitlines(keepends=True)
        if lines and not lines[-1].endswith("\n") and _TAG.startswith(lines[-1][: len(_TAG)]):
            self._held = lines.pop()  # may be the start of a Score-P line: wait for its end
        shown = []
        for line in lines:
            if _FLUSH.match(line):
                self.flushes += line.startswith("[Score-P] Trace buffer flush")
            else:
                shown.append(line)
        if shown:
            self._on_output("stderr", "".join(shown))

    def close(self) -> None:
        """Pass on what was held back; the child has ended."""
        if self._held:
            held, self._held = self._held, ""
            self._on_output("stderr", held)

    def notes(self, env: Mapping[str, str]) -> list[str]:
        """The notes on the cell about what Score-P reported while it ran."""
        if not self.flushes:
            return []
        memory = env.get("SCOREP_TOTAL_MEMORY", "16000k, the default")
        times = "once" if self.flushes == 1 else f"{self.flushes} times"
        return [
            f"Note: Score-P's trace buffer filled up and was flushed to disk {times} during the "
            "cell; the flushes are in the trace and distort its timing. Raise "
            f"SCOREP_TOTAL_MEMORY (now {memory}) with %%scorep_env, e.g. SCOREP_TOTAL_MEMORY=256M."
        ]

    def explain(self) -> str | None:
        """One line on why the child failed, from what it wrote to stderr, if it is known."""
        for pattern, message in _EXPLANATIONS:
            found = pattern.search(self.tail)
            if found:
                return (
                    message.format(*found.groups())
                    if found.groups()
                    else message.format(found.group(0))
                )
        return None


def _configured(cwd: Path, env: Mapping[str, str]) -> Path | None:
    configured = env.get("SCOREP_EXPERIMENT_DIRECTORY")
    if not configured:
        return None
    path = Path(configured)
    return path if path.is_absolute() else cwd / path


def refusal(cwd: Path, env: Mapping[str, str]) -> str | None:
    """Why Score-P would refuse to start in ``cwd`` with ``env``, if it would."""
    path = _configured(cwd, env)
    overwrite = env.get("SCOREP_OVERWRITE_EXPERIMENT_DIRECTORY", "true").strip().lower()
    if path is None or overwrite not in _FALSE or not path.exists():
        return None
    return (
        f"The experiment directory {path} (SCOREP_EXPERIMENT_DIRECTORY) exists and "
        "SCOREP_OVERWRITE_EXPERIMENT_DIRECTORY is false, so Score-P would not run the cell: "
        "remove the directory, set another SCOREP_EXPERIMENT_DIRECTORY, or set "
        "SCOREP_OVERWRITE_EXPERIMENT_DIRECTORY=true with %%scorep_env. Nothing was run."
    )


def experiments_before(cwd: Path, env: Mapping[str, str]) -> set[str] | None:
    """The names next to a configured experiment directory that exists, before a run (Score-P
    will rename it); ``None`` when there is nothing to rename."""
    path = _configured(cwd, env)
    if path is None or not path.is_dir():
        return None
    try:
        return {p.name for p in path.parent.iterdir()}
    except OSError:
        return set()


def moved_experiment(cwd: Path, env: Mapping[str, str], before: set[str] | None) -> str | None:
    """The note on a configured experiment directory that was reused: where Score-P moved the
    previous experiment."""
    path = _configured(cwd, env)
    if before is None or path is None:
        return None
    try:
        moved = sorted(
            p.name
            for p in path.parent.iterdir()
            if p.name not in before and p.name.startswith(path.name + "-") and p.is_dir()
        )
    except OSError:
        moved = []
    where = f"to {path.parent / moved[-1]}" if moved else "aside"
    return (
        f"Note: SCOREP_EXPERIMENT_DIRECTORY={env['SCOREP_EXPERIMENT_DIRECTORY']} was used "
        f"before: Score-P moved the previous experiment {where} and wrote this cell's into "
        f"{path}. Set a new SCOREP_EXPERIMENT_DIRECTORY with %%scorep_env to keep runs apart."
    )
