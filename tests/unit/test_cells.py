"""Parsing a cell into magic name, argument line and body."""

from __future__ import annotations

from jumper_proxy.cells import parse_cell


def test_plain_code_has_no_magic() -> None:
    cell = parse_cell("x = 1\nprint(x)")
    assert cell.magic is None
    assert cell.body == "x = 1\nprint(x)"


def test_magic_with_arguments_and_body() -> None:
    cell = parse_cell("%%display_graph_for_index 3 cpu_percent\nignored body\n")
    assert cell.magic == "display_graph_for_index"
    assert cell.args == "3 cpu_percent"
    assert cell.body == "ignored body\n"


def test_blank_lines_before_the_magic_are_allowed() -> None:
    cell = parse_cell("\n  \n%%execute_with_scorep\nimport os\n")
    assert cell.magic == "execute_with_scorep"
    assert cell.body == "import os\n"


def test_magic_only_on_the_first_non_blank_line() -> None:
    assert parse_cell("x = 1\n%%jumper_help").magic is None
    assert parse_cell("# comment\n%%jumper_help").magic is None


def test_line_magics_and_bare_percent_signs_are_not_cell_magics() -> None:
    assert parse_cell("%env X=1").magic is None
    assert parse_cell("%%").magic is None
    assert parse_cell("%% x").magic is None
    assert parse_cell("%%a-b").magic is None
