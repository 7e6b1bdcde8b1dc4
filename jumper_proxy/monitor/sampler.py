"""The sampling thread: CPU, memory, I/O and GPU of process trees while one cell runs.

A :class:`Sampler` measures the trees rooted at the pids ``roots()`` returns (asked again at
every sample; a tree is the root and all its descendants). Its thread takes the baseline as
soon as :meth:`Sampler.start` is called, then one sample every ``1 / frequency_hz`` seconds,
each describing the interval since the previous one; :meth:`Sampler.stop` ends it with a final
sample and returns the columns named in :data:`jumper_proxy.monitor.store.SAMPLE_COLUMNS`.

Accounting: CPU is the trees' CPU-seconds per wall second (100 = one core), from per-process
``cpu_times`` deltas keyed by (pid, create time), including the times of children reaped
inside the trees, so processes born and gone between two samples are still counted. I/O counts
from each process's first sight (from zero for processes born during the cell) and keeps the
share of processes that have ended. psutil races (a process gone, a zombie, access denied)
only drop that process from one sample.

Bounded: when ``max_samples`` samples are held, neighbouring pairs are merged and the sampling
interval doubles, so a multi-hour cell keeps at most ``max_samples`` evenly spaced samples.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import psutil

from jumper_proxy.errors import ConfigurationError, MonitorError
from jumper_proxy.monitor.gpu import GpuProbe
from jumper_proxy.monitor.store import SAMPLE_COLUMNS, downsample, merge_samples

log = logging.getLogger(__name__)

__all__ = ["MAX_FREQUENCY_HZ", "Sampler"]

#: The highest sampling frequency accepted (samples per second).
MAX_FREQUENCY_HZ = 100.0

_IO_ZERO = (0, 0, 0, 0)
# psutil create times are accurate to about a second (the boot time is whole seconds).
_CREATE_TIME_SLACK_S = 2.0
_JOIN_TIMEOUT_S = 5.0
_PS_RACES = (psutil.NoSuchProcess, psutil.AccessDenied)

_Key = tuple[int, float]
_Io = tuple[int, int, int, int]


@dataclass
class _Tracked:
    """One process of the trees, as last seen."""

    proc: psutil.Process
    cpu: float  # own and reaped children's CPU seconds
    io_base: _Io
    io: _Io
    ppid: int


class Sampler:
    """Samples the process trees of ``roots()`` from :meth:`start` to :meth:`stop`."""

    def __init__(
        self,
        roots: Callable[[], Iterable[int]],
        frequency_hz: float,
        gpu: GpuProbe | None = None,
        max_samples: int = 3600,
        min_rows: int = 0,
    ) -> None:
        if math.isnan(frequency_hz) or not 0 < frequency_hz <= MAX_FREQUENCY_HZ:
            raise ConfigurationError(
                f"The report frequency must be above 0 and at most {MAX_FREQUENCY_HZ:g} "
                f"samples per second, not {frequency_hz!r}."
            )
        if max_samples < 4:
            raise ConfigurationError(f"max_samples must be at least 4, not {max_samples}.")
        self._roots = roots
        self._period = 1.0 / frequency_hz
        self._gpu = gpu
        self._max_samples = max_samples
        self._min_rows = min_rows
        self._columns: dict[str, list[Any]] = {name: [] for name in SAMPLE_COLUMNS}
        self._procs: dict[int, psutil.Process] = {}
        self._tracked: dict[_Key, _Tracked] = {}
        self._io_gone = [0, 0, 0, 0]
        self._node_cpu: list[Any] = []
        self._t0 = self._last_t = self._start_wall = 0.0
        self._latest: dict[str, Any] | None = None
        self._lock = threading.Lock()
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._result: dict[str, list[Any]] | None = None

    @property
    def interval_s(self) -> float:
        """The current sampling interval (it doubles each time the samples are downsampled)."""
        return self._period

    def start(self) -> None:
        """Start the thread, which takes the baseline at once; returns without waiting."""
        if self._thread is not None:
            raise MonitorError("this sampler was already started")
        self._thread = threading.Thread(target=self._run, name="jumper-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> dict[str, list[Any]]:
        """Stop the thread, which takes a final sample; return the samples column by column.

        Returns promptly at any frequency. Calling it again returns the same samples.
        """
        if self._result is not None:
            return self._result
        if self._thread is None:
            raise MonitorError("this sampler was never started")
        self._stop_event.set()
        self._thread.join(timeout=_JOIN_TIMEOUT_S)
        if self._thread.is_alive():
            log.warning("the sampling thread did not stop in time; its last samples are lost")
            with self._lock:
                self._result = _consistent_copy(self._columns)
        else:
            self._result = self._columns
        return self._result

    def snapshot(self) -> dict[str, Any] | None:
        """A copy of the latest sample, or ``None`` before the first one."""
        with self._lock:
            if self._latest is None:
                return None
            return {k: list(v) if isinstance(v, list) else v for k, v in self._latest.items()}

    def _run(self) -> None:
        self._t0 = self._last_t = time.monotonic()
        self._start_wall = time.time()
        self._node_cpu = psutil.cpu_times(percpu=True)
        try:
            self._record(self._baseline_row(), merge=False)
        except Exception:
            log.exception("performance baseline failed")
        deadline = self._t0 + self._period
        while not self._stop_event.wait(max(0.0, deadline - time.monotonic())):
            self._sample_guarded()
            now = time.monotonic()
            deadline += self._period
            if deadline <= now:  # fell behind (a suspended machine): skip, do not burst
                deadline = now + self._period
        # Below ``min_rows`` rows (the baseline included) the final row would not make the cell
        # keep its samples (JUMPER_REPORTS_MIN): spare the work.
        if len(self._columns["time_s"]) >= self._min_rows:
            self._sample_guarded(final=True)

    def _sample_guarded(self, final: bool = False) -> None:
        """Take one sample; a bug here must not end the thread or the cell."""
        try:
            now = time.monotonic()
            # A final interval much shorter than the period would give a noisy rate (CPU
            # times tick in 10 ms steps): fold it into the previous sample instead.
            short = final and now - self._last_t < self._period / 2
            self._record(self._sample(now), merge=short and len(self._columns["time_s"]) > 1)
        except Exception:
            log.exception("performance sample failed")

    def _record(self, row: dict[str, Any], merge: bool) -> None:
        columns = self._columns
        with self._lock:
            if merge:
                times = columns["time_s"]
                before = times[-2] if len(times) > 1 else 0.0
                row = merge_samples(columns, len(times) - 1, row, before)
                for name in SAMPLE_COLUMNS:
                    columns[name][-1] = row[name]
            else:
                if len(columns["time_s"]) >= self._max_samples:
                    downsample(columns)
                    self._period *= 2
                for name in SAMPLE_COLUMNS:
                    columns[name].append(row[name])
            self._latest = row

    def _baseline_row(self) -> dict[str, Any]:
        """The state at the cell's start (time 0): memory, processes, threads; no rates yet."""
        _, rss, procs, threads, _ = self._measure_trees(baseline=True)
        gpu_util, gpu_mem = self._gpu.sample() if self._gpu is not None else ([], [])
        return {
            "time_s": 0.0,
            "cpu_percent": 0.0,
            "cpu_percent_per_core": [0.0] * len(self._node_cpu),
            "memory_rss_bytes": rss,
            "memory_percent": psutil.virtual_memory().percent,
            "io_read_bytes": 0,
            "io_write_bytes": 0,
            "io_read_count": 0,
            "io_write_count": 0,
            "num_procs": procs,
            "num_threads": threads,
            "gpu_util_percent": gpu_util,
            "gpu_memory_bytes": gpu_mem,
        }

    def _sample(self, now: float) -> dict[str, Any]:
        elapsed = now - self._last_t
        self._last_t = now
        cpu_s, rss, procs, threads, io = self._measure_trees(baseline=False)
        node = psutil.cpu_times(percpu=True)
        per_core = [_busy_percent(a, b) for a, b in zip(self._node_cpu, node, strict=False)]
        self._node_cpu = node
        gpu_util, gpu_mem = self._gpu.sample() if self._gpu is not None else ([], [])
        return {
            "time_s": now - self._t0,
            "cpu_percent": 100.0 * cpu_s / elapsed if elapsed > 0 else 0.0,
            "cpu_percent_per_core": per_core,
            "memory_rss_bytes": rss,
            "memory_percent": psutil.virtual_memory().percent,
            "io_read_bytes": io[0],
            "io_write_bytes": io[1],
            "io_read_count": io[2],
            "io_write_count": io[3],
            "num_procs": procs,
            "num_threads": threads,
            "gpu_util_percent": gpu_util,
            "gpu_memory_bytes": gpu_mem,
        }

    def _measure_trees(self, baseline: bool) -> tuple[float, int, int, int, _Io]:
        """Read every process once: CPU seconds since the last reading, RSS, process and
        thread counts, I/O since the start."""
        tracked = self._tracked
        seen: dict[_Key, _Tracked] = {}
        cpu_s = 0.0
        rss = procs = threads = 0
        io_live = [0, 0, 0, 0]
        for key, proc in self._trees():
            try:
                with proc.oneshot():
                    times = proc.cpu_times()
                    mem = proc.memory_info().rss
                    nthreads = proc.num_threads()
                    ppid = proc.ppid()
                    io = _io_counters(proc)
            except _PS_RACES:
                continue
            total = times.user + times.system + times.children_user + times.children_system
            entry = tracked.get(key)
            if entry is None:
                # Present at the baseline (or clearly older than the cell): measured from now.
                # Born during the cell: all of it counts.
                existed = baseline or key[1] < self._start_wall - _CREATE_TIME_SLACK_S
                base = (io or _IO_ZERO) if existed else _IO_ZERO
                entry = _Tracked(proc, total, base, io or base, ppid)
                if not existed:
                    cpu_s += total
            else:
                cpu_s += total - entry.cpu
                entry.cpu, entry.ppid = total, ppid
                if io is not None:
                    entry.io = io
            seen[key] = entry
            rss += mem
            threads += nthreads
            procs += 1
            for i in range(4):
                io_live[i] += entry.io[i] - entry.io_base[i]
        if seen.keys() != tracked.keys():
            cpu_s -= self._forget_gone(seen)
        self._tracked = seen
        g = self._io_gone
        io_total = (g[0] + io_live[0], g[1] + io_live[1], g[2] + io_live[2], g[3] + io_live[3])
        return max(cpu_s, 0.0), rss, procs, threads, io_total

    def _forget_gone(self, seen: dict[_Key, _Tracked]) -> float:
        """Account for processes that left the trees; return the CPU seconds counted twice.

        A process that ended was reaped by its parent, whose ``children_*`` times then grew by
        the process's total, already counted while it lived. That total is counted twice when
        the reaper is in the trees (alive, or itself gone the same way).
        """
        live_pids = {key[0] for key in seen}
        gone = {key[0]: entry for key, entry in self._tracked.items() if key not in seen}
        twice = 0.0
        for entry in gone.values():
            for i in range(4):
                self._io_gone[i] += entry.io[i] - entry.io_base[i]
            if entry.proc.is_running():
                continue  # alive, re-parented out of the trees
            reaper, hops = entry.ppid, 0
            while reaper in gone and hops < len(gone):
                reaper, hops = gone[reaper].ppid, hops + 1
            if reaper in live_pids:
                twice += entry.cpu
        return twice

    def _trees(self) -> list[tuple[_Key, psutil.Process]]:
        """(key, process) for every root and descendant, each once, roots first."""
        cache = self._procs
        found: list[tuple[_Key, psutil.Process]] = []
        procs: dict[int, psutil.Process] = {}
        for pid in _TABLE.trees(self._roots()):
            proc = cache.get(pid)
            if proc is None:
                try:
                    proc = psutil.Process(pid)
                except _PS_RACES:
                    continue
            procs[pid] = proc
            found.append(((pid, proc.create_time()), proc))
        self._procs = procs
        return found


class _ProcessTable:
    """Parent and children of every process on the node, kept up to date incrementally.

    Each use lists the pids (one directory read on Linux) and reads the parent only of
    processes that are new, or whose parent ended (re-parented), so a sample costs little even
    on a node with thousands of processes. The table is rebuilt from scratch when it is older
    than ``max_age_s``, which bounds the harm of a pid reused between two uses. Processes that
    cannot be read (other users' on a hardened node) are left out. Thread-safe.
    """

    def __init__(self, max_age_s: float = 60.0) -> None:
        self._max_age_s = max_age_s
        self._built_at = -math.inf
        self._ppid: dict[int, int] = {}
        self._children: dict[int, set[int]] = {}
        self._lock = threading.Lock()

    def trees(self, roots: Iterable[int]) -> list[int]:
        """The roots present and all their descendants, each pid once, roots first."""
        wanted = list(dict.fromkeys(roots))
        with self._lock:
            self._refresh()
            order = [pid for pid in wanted if pid in self._ppid]
            seen = set(order)
            i = 0
            while i < len(order):
                for child in self._children.get(order[i], ()):
                    if child not in seen:
                        seen.add(child)
                        order.append(child)
                i += 1
        return order

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._built_at > self._max_age_s:
            self._ppid.clear()
            self._children.clear()
            self._built_at = now
        pids = set(psutil.pids())
        ppid = self._ppid
        gone = ppid.keys() - pids
        recheck = pids - ppid.keys()
        for pid in gone:
            self._unlink(pid)
            recheck.update(self._children.pop(pid, ()))
        for pid in recheck & pids:
            if pid in ppid:
                self._unlink(pid)
            try:
                parent = psutil.Process(pid).ppid()
            except _PS_RACES:
                continue
            ppid[pid] = parent
            self._children.setdefault(parent, set()).add(pid)

    def _unlink(self, pid: int) -> None:
        siblings = self._children.get(self._ppid.pop(pid))
        if siblings is not None:
            siblings.discard(pid)


# One table for all samplers of the process: consecutive cells only pay for what changed.
_TABLE = _ProcessTable()


def _io_counters(proc: psutil.Process) -> _Io | None:
    try:
        io = proc.io_counters()
    except psutil.AccessDenied:
        return None
    return (io.read_bytes, io.write_bytes, io.read_count, io.write_count)


def _busy_percent(before: Any, after: Any) -> float:
    """Busy share of one core between two ``psutil.cpu_times`` readings, as psutil computes it."""
    total = _total_time(after) - _total_time(before)
    if total <= 0:
        return 0.0
    idle = _idle_time(after) - _idle_time(before)
    return max(0.0, min(100.0, 100.0 * (total - idle) / total))


def _total_time(t: Any) -> float:
    # guest time is already part of user time on Linux
    return float(sum(t)) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)


def _idle_time(t: Any) -> float:
    return float(t.idle + getattr(t, "iowait", 0.0))


def _consistent_copy(columns: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """A copy of ``columns`` cut to the length every column has reached."""
    n = min(len(values) for values in columns.values())
    return {name: values[:n] for name, values in columns.items()}
