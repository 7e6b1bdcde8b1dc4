"""The /proc reader gives the figures psutil gives, for processes and for the node."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import psutil
import pytest

from jumper_proxy.monitor.procfs import ProcfsReader, PsutilReader, reader

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs /proc")


@pytest.fixture
def busy_child() -> subprocess.Popen[bytes]:
    """A child that has used some CPU and holds 50 MiB, then waits."""
    code = (
        "import time\n"
        "block = bytearray(b'x') * (50 * 2**20)\n"
        "end = time.process_time() + 0.3\n"
        "while time.process_time() < end: pass\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert child.stdout is not None and child.stdout.readline() == b"ready\n"
    yield child
    child.kill()
    child.wait()
    child.stdout.close()


def test_a_process_reads_as_psutil_reads_it(busy_child: subprocess.Popen[bytes]) -> None:
    ours = ProcfsReader().process(busy_child.pid)
    theirs = PsutilReader().process(busy_child.pid)
    assert ours is not None and theirs is not None
    assert ours.cpu_s == pytest.approx(theirs.cpu_s, abs=0.02) and ours.cpu_s >= 0.29
    assert ours.rss == pytest.approx(theirs.rss, rel=0.02) and ours.rss >= 50 * 2**20
    assert (ours.threads, ours.ppid) == (theirs.threads, theirs.ppid) == (1, os.getpid())
    assert ours.io is not None and theirs.io is not None
    assert ours.io[2:] == pytest.approx(theirs.io[2:], abs=5)  # read/write calls
    # the start time, on each reader's own clock, is when the child started
    assert ours.start == pytest.approx(ProcfsReader().start_clock(), abs=5)
    assert theirs.start == pytest.approx(time.time(), abs=5)


def test_the_reaped_children_s_cpu_counts_towards_the_parent() -> None:
    code = (
        "import subprocess, sys\n"
        "burn = 'import time\\nend = time.process_time() + 0.3\\nwhile time.process_time() < end: pass'\n"
        "subprocess.run([sys.executable, '-c', burn], check=True)\n"
        "print('ready', flush=True)\n"
        "input()\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert parent.stdout is not None and parent.stdout.readline() == b"ready\n"
        reading = ProcfsReader().process(parent.pid)
        assert reading is not None and reading.cpu_s >= 0.3
    finally:
        parent.kill()
        parent.wait()
        for pipe in (parent.stdin, parent.stdout):
            if pipe is not None:
                pipe.close()


def test_gone_processes_and_their_parents_read_as_none() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    for each in (ProcfsReader(), PsutilReader()):
        assert each.process(child.pid) is None
        assert each.parent(child.pid) is None


def test_the_node_reads_as_psutil_reads_it() -> None:
    ours, theirs = ProcfsReader(), PsutilReader()
    (cores, forks), (p_cores, no_forks) = ours.node_cpu(), theirs.node_cpu()
    assert forks is not None and forks > 0 and no_forks is None
    assert len(cores) == len(p_cores) == psutil.cpu_count()
    tick = os.sysconf("SC_CLK_TCK")
    for (total, idle), (p_total, p_idle) in zip(cores, p_cores, strict=True):
        assert total / tick == pytest.approx(p_total, abs=1.0)
        assert idle / tick == pytest.approx(p_idle, abs=1.0)
    assert ours.memory_percent() == pytest.approx(theirs.memory_percent(), abs=2.0)
    assert os.getpid() in ours.pids() and set(ours.pids()) <= set(psutil.pids()) | set(ours.pids())
    assert ours.parent(os.getpid()) == os.getppid()


def test_the_fork_count_grows_with_each_new_process() -> None:
    reader_ = ProcfsReader()
    _, before = reader_.node_cpu()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    _, after = reader_.node_cpu()
    assert before is not None and after is not None and after > before
    assert PsutilReader().node_cpu()[1] is None


def test_linux_uses_the_proc_reader() -> None:
    assert isinstance(reader(), ProcfsReader)
