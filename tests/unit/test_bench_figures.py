"""The benchmarks' pure helpers: figures against plain ipykernel, tables, and deadline waits."""

from __future__ import annotations

import queue
import time
from typing import Any

import pytest

from benchmarks.figures import compare, ratio, seconds, table, within
from benchmarks.guarded import idle_of, reply_to, wait_for


def test_compare_gives_medians_ratios_and_time_added_against_plain() -> None:
    rows = compare({"plain": [1.0, 3.0, 2.0], "proxy": [2.5, 2.0, 4.0]})

    assert rows["plain"] == {
        "median_s": 2.0,
        "runs": 3,
        "min_s": 1.0,
        "max_s": 3.0,
        "ratio_vs_plain": 1.0,
        "added_s": 0.0,
    }
    assert rows["proxy"]["median_s"] == 2.5
    assert rows["proxy"]["ratio_vs_plain"] == 1.25
    assert rows["proxy"]["added_s"] == 0.5


def test_paired_difference_is_the_median_of_per_round_differences() -> None:
    # drift: round 3 is slow for both; the difference of medians and the paired one differ
    rows = compare({"plain": [1.0, 1.0, 5.0], "proxy": [1.1, 1.3, 5.1]})

    assert rows["proxy"]["added_s"] == pytest.approx(0.3)
    assert rows["proxy"]["paired_added_s"] == pytest.approx(0.1)


def test_no_paired_difference_when_the_kernels_ran_different_rounds() -> None:
    rows = compare({"plain": [1.0, 1.0, 1.0, 1.0], "jumper": [2.0]})

    assert "paired_added_s" not in rows["jumper"]
    assert "paired_added_s" not in rows["plain"]
    assert rows["jumper"]["ratio_vs_plain"] == 2.0


def test_a_kernel_without_runs_has_no_figures() -> None:
    rows = compare({"plain": [1.0], "wrapper": []})

    assert rows["wrapper"] == {
        "median_s": None,
        "runs": 0,
        "ratio_vs_plain": None,
        "added_s": None,
    }
    assert within(rows["wrapper"], 0.15) is None


def test_without_a_plain_figure_there_is_nothing_to_compare_with() -> None:
    rows = compare({"plain": [], "proxy": [1.0]})

    assert rows["proxy"]["median_s"] == 1.0
    assert rows["proxy"]["ratio_vs_plain"] is None
    assert rows["proxy"]["added_s"] is None


def test_within_a_target_of_time_added() -> None:
    rows = compare({"plain": [0.7], "proxy": [0.8], "slow": [1.0]})

    assert within(rows["proxy"], 0.15) is True
    assert within(rows["slow"], 0.15) is False


@pytest.mark.parametrize(
    ("value", "signed", "text"),
    [
        (0.00441, False, "4.41 ms"),
        (0.0441, True, "+44.10 ms"),
        (-0.012, True, "-12.00 ms"),
        (0.5, False, "0.500 s"),
        (1.2345, True, "+1.234 s"),
        (None, False, "-"),
    ],
)
def test_seconds_in_the_unit_that_reads_best(value: float | None, signed: bool, text: str) -> None:
    assert seconds(value, signed) == text


def test_ratio_text() -> None:
    assert ratio(1.23456) == "1.235"
    assert ratio(None) == "-"


def test_table_aligns_the_first_column_left_and_the_others_right() -> None:
    text = table(["cell", "plain", "proxy"], [["pass", "4.40 ms", "5.29 ms"], ["x", "1 s", "-"]])

    assert text.splitlines() == [
        "cell    plain    proxy",
        "pass  4.40 ms  5.29 ms",
        "x         1 s        -",
    ]


def _messages(*msgs: dict[str, Any]) -> Any:
    pending = list(msgs)

    def get(timeout: float) -> dict[str, Any]:
        if not pending:
            raise queue.Empty
        return pending.pop(0)

    return get


def _msg(parent: str, msg_type: str = "execute_reply", **content: Any) -> dict[str, Any]:
    return {"parent_header": {"msg_id": parent}, "msg_type": msg_type, "content": content}


def test_wait_for_skips_other_messages_and_returns_the_match() -> None:
    get = _messages(_msg("other"), _msg("mine"))

    found = wait_for(get, reply_to("mine"), time.monotonic() + 60)

    assert found == _msg("mine")


def test_wait_for_gives_up_as_soon_as_the_kernel_is_gone() -> None:
    checks: list[bool] = []

    def alive() -> bool:
        checks.append(False)
        return False

    found = wait_for(_messages(_msg("other")), reply_to("mine"), time.monotonic() + 3600, alive)

    assert found is None
    assert checks == [False]


def test_wait_for_a_deadline_already_past_reads_nothing() -> None:
    get = _messages(_msg("mine"))

    assert wait_for(get, reply_to("mine"), time.monotonic() - 1) is None


def test_idle_of_a_cell_only() -> None:
    is_idle = idle_of("mine")

    assert is_idle(_msg("mine", "status", execution_state="idle"))
    assert not is_idle(_msg("mine", "status", execution_state="busy"))
    assert not is_idle(_msg("other", "status", execution_state="idle"))
    assert not is_idle(_msg("mine", "stream", name="stdout", text="idle"))
