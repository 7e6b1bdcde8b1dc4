"""Multi-cell mode's pure parts: cells turned into plain Python, the program of the marked
cells, the marking state, and which cells the mode takes."""

from __future__ import annotations

import os

import pytest

from jumper_proxy.api import MagicTable
from jumper_proxy.cells import parse_cell
from jumper_proxy.errors import MagicError
from jumper_proxy.magics import monitoring, multicell, scorep
from jumper_proxy.magics.multicell import (
    MulticellState,
    block_cells,
    env_assignment,
    no_code,
    to_python,
    trim_blank_lines,
)


def test_magic_lines_are_dropped_where_statements_start() -> None:
    code = (
        "%%time\n"
        "import os\n"
        "x = (10\n"
        "% 3)\n"
        's = """a\n'
        "%s\n"
        '!b"""\n'
        "%matplotlib inline\n"
        "!ls -la\n"
        "print(x, s)\n"
    )
    converted = to_python(code)
    assert converted.dropped == ["%%time", "%matplotlib inline", "!ls -la"]
    lines = converted.code.splitlines()
    assert len(lines) == len(code.splitlines())  # line numbers stay those of the cell
    assert lines[3] == "% 3)" and lines[5] == "%s" and lines[6] == '!b"""'
    assert lines[0] == lines[7] == lines[8] == ""
    namespace: dict[str, object] = {"print": lambda *a: None}
    exec(compile(converted.code, "<cell>", "exec"), namespace)
    assert namespace["x"] == 1 and namespace["s"] == "a\n%s\n!b"


def test_an_indented_magic_line_leaves_a_pass() -> None:
    converted = to_python("total = 0\nfor i in range(3):\n    %time total += i\n")
    assert converted.code == "total = 0\nfor i in range(3):\n    pass\n"
    assert converted.dropped == ["%time total += i"]


def test_code_the_tokenizer_cannot_read_still_loses_its_magic_lines() -> None:
    converted = to_python('%%bash\ncat <<EOF\n"""\nEOF\n')
    assert converted.dropped == ["%%bash"]
    assert converted.code == '\ncat <<EOF\n"""\nEOF\n'


def test_env_assignments_stay_and_print_what_ipython_prints(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("JP_TEST_A", "old")
    monkeypatch.setenv("JP_TEST_B", "old")
    converted = to_python("if True:\n    %env JP_TEST_A=one two\n%set_env JP_TEST_B 3\n%env\n")
    assert converted.env == [("JP_TEST_A", "one two"), ("JP_TEST_B", "3")]
    assert converted.dropped == ["%env"]  # listing the environment has no place in a program
    exec(compile(converted.code, "<cell>", "exec"), {})
    assert os.environ["JP_TEST_A"] == "one two" and os.environ["JP_TEST_B"] == "3"
    assert capsys.readouterr().out == "env: JP_TEST_A=one two\nenv: JP_TEST_B=3\n"


def test_env_lines_that_only_read_or_need_expansion() -> None:
    assert env_assignment("%env HOME") is None
    assert env_assignment("%env") is None
    assert env_assignment("%envy X=1") is None
    assert env_assignment("%env A=b=c") == ("A", "b=c")
    with pytest.raises(MagicError, match="not expanded"):
        to_python("%env PATH=$PATH:/opt/bin\n")
    with pytest.raises(MagicError, match="spaces"):
        env_assignment("%env A B=c")


def test_trim_blank_lines() -> None:
    assert trim_blank_lines("\n  \nx = 1\n  if_kept = 2\n\n\n") == "x = 1\n  if_kept = 2\n"
    assert trim_blank_lines("\n \n") == ""


def test_the_marked_cells_become_regions_named_after_their_counts_in_order() -> None:
    cells = block_cells([("\nvalue = 1\nprint('one', value)\n", 4), ("value += 1", None)])
    assert [(c.code, c.region, c.header) for c in cells] == [
        ("value = 1\nprint('one', value)\n", "cell [4]", "--- cell 1 of 2 ---"),
        ("value += 1\n", "cell", "--- cell 2 of 2 ---"),
    ]


def test_marking_state_and_its_misuse() -> None:
    state = MulticellState()
    with pytest.raises(MagicError, match="off"):
        state.ready()
    with pytest.raises(MagicError, match="nothing to abort"):
        state.abort()
    state.enable()
    with pytest.raises(MagicError, match="already on"):
        state.enable()
    with pytest.raises(MagicError, match="No cell is marked"):
        state.ready()
    assert state.mark("a = 1\n", 3) == 1 and state.mark("b = 2\n") == 2
    assert state.ready() == [("a = 1\n", 3), ("b = 2\n", None)]
    assert state.abort() == 2
    assert not state.enabled and state.cells == []


def test_mode_magics_stand_alone() -> None:
    no_code("abort_multicellmode", "", "  \n")
    with pytest.raises(MagicError, match="stands alone"):
        no_code("abort_multicellmode", "", "x = 1")
    with pytest.raises(MagicError, match="stands alone"):
        no_code("abort_multicellmode", "now", "")


def test_while_marking_only_code_and_scorep_cells_are_taken() -> None:
    table = MagicTable()
    monitoring.register(table)
    scorep.register(table)
    state = multicell.register(table)

    def taker(code: str) -> str | None:
        magic = table.resolve(parse_cell(code))
        return magic.name if magic is not None else None

    assert taker("x = 1") is None
    state.enable()
    assert taker("x = 1") == "multicell_mark"
    assert taker("%%execute_with_scorep\nx = 1") == "multicell_mark"
    assert taker("%%time\nx = 1") == "multicell_mark"
    assert taker("%%scorep_env\nSCOREP_ENABLE_TRACING=1") == "scorep_env"
    assert taker("%%display_code_history") == "display_code_history"
    assert taker("%%finalize_multicellmode") == "finalize_multicellmode"
    assert taker("%%enable_multicellmode") == "enable_multicellmode"
    assert taker(" \n") is None
    state.reset()
    assert taker("x = 1") is None
