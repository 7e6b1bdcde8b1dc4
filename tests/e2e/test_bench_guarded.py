"""The benchmarks' guarded kernel survives a kernel that never answers and one that dies: it
notes it, restarts the kernel with its set-up, and leaves no process behind."""

from __future__ import annotations

from collections.abc import Iterator

import psutil
import pytest

from benchmarks.guarded import GuardedKernel

pytestmark = pytest.mark.e2e


@pytest.fixture
def guarded() -> Iterator[GuardedKernel]:
    k = GuardedKernel("plain", "python3")
    k.setup.append("marker = 'set up'")
    k.start()
    yield k
    k.close()


def test_a_cell_past_its_deadline_restarts_the_kernel_with_its_set_up(
    guarded: GuardedKernel,
) -> None:
    wedged_pid = guarded.pid

    _, reply, _ = guarded.run("import time; time.sleep(600)", timeout=1)

    assert reply is None
    assert guarded.restarts == 1
    assert guarded.notes == ["plain: no reply to 'import time; time.sleep(600)' within 1 s"]
    assert guarded.pid != wedged_pid
    assert not psutil.pid_exists(wedged_pid)
    _, reply, text = guarded.run("print(marker)", timeout=60)
    assert reply is not None
    assert reply["content"]["status"] == "ok"
    assert text == "set up\n"


def test_a_kernel_that_dies_is_noticed_and_started_again(guarded: GuardedKernel) -> None:
    _, reply, _ = guarded.run("import os; os._exit(3)", timeout=600)

    assert reply is None
    assert guarded.restarts == 1
    assert guarded.notes[0].endswith("within 600 s (its process had gone)")
    _, reply, _ = guarded.run("pass", timeout=60)
    assert reply is not None
    assert reply["content"]["status"] == "ok"


def test_a_wedged_kernel_is_left_wedged_when_asked(guarded: GuardedKernel) -> None:
    pid = guarded.pid

    _, reply, _ = guarded.run("import time; time.sleep(600)", timeout=1, recover=False)

    assert reply is None
    assert guarded.restarts == 0
    assert guarded.pid == pid


def test_closing_leaves_nothing_running() -> None:
    k = GuardedKernel("plain", "python3")
    k.start()
    tree = [k.pid, *(p.pid for p in psutil.Process(k.pid).children(recursive=True))]

    k.close()

    assert not [pid for pid in tree if psutil.pid_exists(pid)]
