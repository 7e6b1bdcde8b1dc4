"""The magic table's help, completion and inspection (pure functions)."""

from __future__ import annotations

from jumper_proxy.magics.registry import build_table, complete_magic, help_text, inspect_magic


def test_help_lists_every_magic() -> None:
    table = build_table()
    text = help_text(table)
    for name in table.names():
        assert f"%%{name}" in text


def test_completion_of_a_magic_prefix() -> None:
    table = build_table()
    assert complete_magic(table, "%%jump", 6) == (["%%jumper_help"], 0)
    assert complete_magic(table, "  %%", 4) == ([f"%%{n}" for n in table.names()], 2)


def test_no_completion_outside_the_first_line_or_after_arguments() -> None:
    table = build_table()
    assert complete_magic(table, "x = 1\n%%jump", 12) is None
    assert complete_magic(table, "%%jumper_help x", 15) is None
    assert complete_magic(table, "%%zzz", 5) is None
    assert complete_magic(table, "pri", 3) is None


def test_inspection_of_a_proxy_magic() -> None:
    table = build_table()
    text = inspect_magic(table, "%%jumper_help\n", 5)
    assert text is not None and "list the proxy's magics" in text
    assert inspect_magic(table, "%%time\nx", 3) is None
    assert inspect_magic(table, "%%jumper_help\nbody", 16) is None
