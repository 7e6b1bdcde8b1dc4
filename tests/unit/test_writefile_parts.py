"""Write mode's pure parts: the script and run-script texts, file names, the recording's
state, and which cells the mode takes."""

from __future__ import annotations

import ast
import shlex

import pytest

from jumper_proxy.api import MagicTable
from jumper_proxy.cells import parse_cell
from jumper_proxy.errors import MagicError
from jumper_proxy.magics import monitoring, multicell, scorep, writefile
from jumper_proxy.magics.multicell import to_python
from jumper_proxy.magics.writefile import (
    Piece,
    Recording,
    binding_arguments,
    indent_block,
    run_script_name,
    run_script_text,
    script_name,
    script_text,
)

PLAIN = '''\
%matplotlib inline
import math
%env GREETING=hi
def helper(n):
    return [math.isqrt(i) for i in range(n)]
text = """kept
  as it is
%also kept"""
roots = helper(10)
class Box:
    size = 3
'''
MEASURED = "%%execute_with_scorep\nmeasured = sum(roots) * Box.size\nprint(text, measured)\n"


def recorded_script() -> str:
    pieces = [
        Piece(to_python(PLAIN).code, instrumented=False),
        Piece(to_python(MEASURED).code, instrumented=True),
        Piece(to_python("%who\n").code, instrumented=False),
        Piece(to_python("%%execute_with_scorep\n").code, instrumented=True),
    ]
    return script_text(pieces, "prog_run.sh")


def test_the_script_compiles_and_has_no_magic_lines() -> None:
    text = recorded_script()
    compile(text, "prog.py", "exec")
    assert text.startswith(
        "# Recorded in a notebook. Run it under Score-P with: bash prog_run.sh\n"
    )
    for line in text.splitlines():
        assert not line.lstrip().startswith(("%%", "%matplotlib", "%who", "%env", "!")), line


def test_ordinary_cells_are_wrapped_and_instrumented_ones_are_not() -> None:
    tree = ast.parse(recorded_script())
    kinds = [type(node).__name__ for node in tree.body]
    assert kinds == ["Import", "With", "Assign", "Expr", "With"]
    assert ast.unparse(tree.body[0]) == "import scorep.instrumenter"
    wrapped, empty = tree.body[1], tree.body[4]
    assert isinstance(wrapped, ast.With) and isinstance(empty, ast.With)
    assert ast.unparse(wrapped.items[0]) == "scorep.instrumenter.disable()"
    defined = {type(node).__name__ for node in wrapped.body}
    assert {"Import", "FunctionDef", "ClassDef", "Assign"} <= defined
    assert [type(node).__name__ for node in empty.body] == ["Pass"]


def test_a_multi_line_string_is_not_indented_with_its_cell() -> None:
    tree = ast.parse(recorded_script())
    strings = [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    ]
    assert "kept\n  as it is\n%also kept" in strings


def test_the_script_runs_like_the_cells_in_order(
    scorep_stand_in: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("GREETING", raising=False)
    namespace: dict[str, object] = {"__name__": "__main__"}
    exec(compile(recorded_script(), "prog.py", "exec"), namespace)
    # names assigned inside the wrapping `with` stay module globals, as in the notebook
    assert namespace["roots"] == [0, 1, 1, 1, 2, 2, 2, 2, 2, 3]
    assert namespace["measured"] == 48
    out = capsys.readouterr().out
    assert out == "env: GREETING=hi\nkept\n  as it is\n%also kept 48\n"


def test_indent_block_follows_the_cells_own_indentation() -> None:
    assert indent_block("if x:\n\tx()\n\ny = 1\n") == "\tif x:\n\t\tx()\n\n\ty = 1\n"
    wrapped = "with a:\n" + indent_block('s = """\n  a\n"""\nif s:\n    pass\n')
    assert wrapped == 'with a:\n    s = """\n  a\n"""\n    if s:\n        pass\n'
    compile(wrapped, "<cell>", "exec")


def test_the_run_script() -> None:
    text = run_script_text(
        "/opt/my env/bin/python",
        "prog.py",
        {"SCOREP_ENABLE_TRACING": "true", "SCOREP_FILTERING_FILE": "my filter's.txt"},
        ["--instrumenter-type=cProfile", "--mpp=none"],
    )
    lines = text.splitlines()
    assert lines[0] == "#!/usr/bin/env bash"
    assert "set -euo pipefail" in lines
    cd = lines.index('cd "$(dirname "$0")"')
    exports = [shlex.split(line) for line in lines if line.startswith("export ")]
    assert exports == [
        ["export", "SCOREP_ENABLE_TRACING=true"],
        ["export", "SCOREP_FILTERING_FILE=my filter's.txt"],
    ]
    command = shlex.split(lines[-1])
    assert cd < len(lines) - 1
    assert command == [
        "/opt/my env/bin/python",
        "-m",
        "scorep",
        "--instrumenter-type=cProfile",
        "--mpp=none",
        "prog.py",
        "$@",
    ]
    assert shlex.split(run_script_text("python", "-odd.py", {}, []).splitlines()[-1])[3] == (
        "./-odd.py"
    )


def test_file_names() -> None:
    assert script_name("") == "jupyter_to_script.py"
    assert script_name("prog") == "prog.py"
    assert script_name("'out dir/prog.py'") == "out dir/prog.py"
    assert run_script_name("out dir/prog.py") == "out dir/prog_run.sh"
    assert run_script_name("jupyter_to_script.py") == "jupyter_to_script_run.sh"
    for bad in ("a.py b.py", "out/", ".", "'unclosed"):
        with pytest.raises(MagicError):
            script_name(bad)


def test_binding_arguments_are_read_as_the_settings_magic_reads_them() -> None:
    assert binding_arguments("--mpp=none", "--io=runtime:posix # comment\n'-x y'") == [
        "--mpp=none",
        "--io=runtime:posix",
        "-x y",
    ]
    with pytest.raises(MagicError):
        binding_arguments("'open", "")


def test_the_recording_keeps_blocks_and_settings() -> None:
    recording = Recording("prog.py")
    assert not recording.piece("a = 1\n", scorep_cell=False).instrumented
    assert recording.piece("a = 1\n", scorep_cell=True).instrumented
    recording.add(Piece("a = 1\n", False), [("SCOREP_TOTAL_MEMORY", "1G"), ("OTHER", "x")])
    recording.scorep_env["SCOREP_TOTAL_MEMORY"] = "2G"
    recording.scorep_env["SCOREP_ENABLE_TRACING"] = "1"
    assert recording.exports() == {"SCOREP_TOTAL_MEMORY": "2G", "SCOREP_ENABLE_TRACING": "1"}
    with pytest.raises(MagicError, match="No multi-cell block"):
        recording.close_block()
    recording.open_block()
    with pytest.raises(MagicError, match="already open"):
        recording.open_block()
    with pytest.raises(MagicError, match="no cells"):
        recording.close_block()
    assert recording.piece("b = 1\n", scorep_cell=False).instrumented
    assert recording.add(recording.piece("b = 1\n", scorep_cell=False)) == 2
    with pytest.raises(MagicError, match="block is open"):
        recording.check_complete()
    assert recording.close_block() == 1
    recording.check_complete()
    recording.open_block()
    recording.add(recording.piece("dropped = 1\n", scorep_cell=False))
    assert recording.drop_block() == 1
    assert [p.code for p in recording.pieces] == ["a = 1\n", "b = 1\n"]
    assert [p.instrumented for p in recording.pieces] == [False, True]


def test_while_recording_code_and_the_scorep_magics_are_taken() -> None:
    table = MagicTable()
    monitoring.register(table)
    scorep.register(table)
    mode = writefile.register(table, multicell.register(table))

    def taken(code: str) -> bool:
        return mode.intercept(parse_cell(code)) is not None

    assert not taken("x = 1")
    mode.recording = Recording("prog.py")
    for code in (
        "x = 1",
        "%%time\nx = 1",
        "%%execute_with_scorep\nx = 1",
        "%%scorep_env\nSCOREP_ENABLE_TRACING=1",
        "%%scorep_python_binding_arguments --mpp=none",
        "%%enable_multicellmode",
        "%%finalize_multicellmode",
        "%%abort_multicellmode",
    ):
        assert taken(code), code
    for code in ("%%display_code_history", "%%marshalling_settings", "%%end_writefile", "\n"):
        assert not taken(code), code
