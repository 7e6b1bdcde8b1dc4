"""Reading processes and the node for the sampler, at the least cost per sample.

On Linux a process is read from two files, ``/proc/PID/stat`` (CPU times, parent, threads,
resident memory, start time) and ``/proc/PID/io``, and the node from ``/proc/stat`` and
``/proc/meminfo``: one ``open`` and ``read`` each, where psutil needs four files per process
and builds several objects per reading. Elsewhere the same readings come from psutil.

The figures are the ones psutil reports (``cpu_times``, ``memory_info().rss``,
``num_threads``, ``ppid``, ``io_counters``, ``cpu_times(percpu=True)``,
``virtual_memory().percent``). A process is identified by its pid and its start time, read
on the clock ``start_clock()`` gives. With the node's CPU times comes the number of processes
created since boot (Linux), which tells whether any process can have appeared since.
"""

from __future__ import annotations

import os
import time
from typing import NamedTuple, Protocol

import psutil

__all__ = ["ProcessReading", "Reader", "reader"]

Io = tuple[int, int, int, int]


class ProcessReading(NamedTuple):
    """One process as read now."""

    start: float  # start time on the reader's start clock, in seconds
    cpu_s: float  # own CPU seconds and those of the children it reaped
    rss: int
    threads: int
    ppid: int
    io: Io | None  # read bytes, write bytes, read calls, write calls; None if not allowed


class Reader(Protocol):
    def pids(self) -> list[int]: ...

    def parent(self, pid: int) -> int | None: ...

    def process(self, pid: int) -> ProcessReading | None: ...

    def start_clock(self) -> float: ...

    def node_cpu(self) -> tuple[list[tuple[float, float]], int | None]: ...

    def memory_percent(self) -> float: ...


class ProcfsReader:
    """Linux: straight from ``/proc``."""

    def __init__(self) -> None:
        self._tick = float(os.sysconf("SC_CLK_TCK"))
        self._page = os.sysconf("SC_PAGE_SIZE")

    def pids(self) -> list[int]:
        return [int(name) for name in os.listdir("/proc") if name.isdigit()]

    def parent(self, pid: int) -> int | None:
        fields = _stat_fields(pid)
        return int(fields[1]) if fields is not None else None

    def process(self, pid: int) -> ProcessReading | None:
        fields = _stat_fields(pid)
        if fields is None:
            return None
        # fields[0] is field 3 of proc(5): state, ppid, ..., utime (14) ... rss (24)
        tick = self._tick
        cpu = int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
        return ProcessReading(
            start=int(fields[19]) / tick,
            cpu_s=cpu / tick,
            rss=int(fields[21]) * self._page,
            threads=int(fields[17]),
            ppid=int(fields[1]),
            io=_io(pid),
        )

    def start_clock(self) -> float:
        return time.clock_gettime(time.CLOCK_BOOTTIME)

    def node_cpu(self) -> tuple[list[tuple[float, float]], int | None]:
        with open("/proc/stat", "rb") as f:
            lines = f.read().splitlines()
        cores = []
        forks = None
        for line in lines[1:]:
            if line.startswith(b"cpu"):
                values = [int(v) for v in line.split()[1:]]
                # user nice system idle iowait irq softirq steal guest guest_nice; guest time
                # is already part of user and nice time
                total = sum(values[:8])
                idle = values[3] + (values[4] if len(values) > 4 else 0)
                cores.append((float(total), float(idle)))
            elif line.startswith(b"processes "):
                forks = int(line.split()[1])
        return cores, forks

    def memory_percent(self) -> float:
        with open("/proc/meminfo", "rb") as f:
            info = {}
            for line in f:
                key, _, value = line.partition(b":")
                if key in (b"MemTotal", b"MemAvailable"):
                    info[key] = int(value.split()[0])
                    if len(info) == 2:
                        break
        total, available = info.get(b"MemTotal", 0), info.get(b"MemAvailable")
        if not total or available is None:
            return float(psutil.virtual_memory().percent)
        return 100.0 * (total - available) / total


def _stat_fields(pid: int) -> list[bytes] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # the command name (field 2) is in parentheses and may itself contain ") "
    return data[data.rfind(b")") + 2 :].split()


def _io(pid: int) -> Io | None:
    try:
        with open(f"/proc/{pid}/io", "rb") as f:
            data = f.read()
    except OSError:
        return None
    values = {}
    for line in data.splitlines():
        key, _, value = line.partition(b":")
        values[key] = int(value)
    try:
        return (values[b"read_bytes"], values[b"write_bytes"], values[b"syscr"], values[b"syscw"])
    except KeyError:  # a kernel without storage accounting
        return (0, 0, values.get(b"syscr", 0), values.get(b"syscw", 0))


_RACES = (psutil.NoSuchProcess, psutil.AccessDenied)


class PsutilReader:
    """Any platform psutil supports."""

    def pids(self) -> list[int]:
        return psutil.pids()

    def parent(self, pid: int) -> int | None:
        try:
            return psutil.Process(pid).ppid()
        except _RACES:
            return None

    def process(self, pid: int) -> ProcessReading | None:
        try:
            proc = psutil.Process(pid)
            with proc.oneshot():
                times = proc.cpu_times()
                reading = ProcessReading(
                    start=proc.create_time(),
                    cpu_s=times.user + times.system + times.children_user + times.children_system,
                    rss=proc.memory_info().rss,
                    threads=proc.num_threads(),
                    ppid=proc.ppid(),
                    io=None,
                )
                try:
                    io = proc.io_counters()
                except (AttributeError, psutil.AccessDenied):
                    return reading
        except _RACES:
            return None
        return reading._replace(io=(io.read_bytes, io.write_bytes, io.read_count, io.write_count))

    def start_clock(self) -> float:
        return time.time()

    def node_cpu(self) -> tuple[list[tuple[float, float]], int | None]:
        cores = []
        for t in psutil.cpu_times(percpu=True):
            total = float(sum(t)) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)
            cores.append((total, float(t.idle + getattr(t, "iowait", 0.0))))
        return cores, None

    def memory_percent(self) -> float:
        return float(psutil.virtual_memory().percent)


def reader() -> Reader:
    """The cheapest reader this system offers."""
    if os.path.exists(f"/proc/{os.getpid()}/io") and os.path.exists("/proc/meminfo"):
        return ProcfsReader()
    return PsutilReader()
