"""Sampling CPU, memory, I/O and GPU of process trees while one cell runs.

A :class:`Sampler` measures the trees rooted at the pids ``roots()`` returns (asked again at
every sample; a tree is the root and all its descendants). :meth:`Sampler.start` has the
baseline taken at once, then one sample every ``1 / frequency_hz`` seconds, each describing
the interval since the previous one; :meth:`Sampler.finish` ends it with a final sample and
resolves :attr:`Sampler.samples` with the columns named in
:data:`jumper_proxy.monitor.store.SAMPLE_COLUMNS`.

Every sampler of the process is served by one long-lived thread (``jumper-sampler``), so that
starting and finishing a cell's sampler costs a queued call, not a thread; the thread sleeps
while no sampler is due.

Accounting: CPU is the trees' CPU-seconds per wall second (100 = one core), from per-process
CPU time deltas keyed by (pid, start time), including the times of children reaped inside the
trees, so processes born and gone between two samples are still counted. I/O counts from each
process's first sight (from zero for processes born during the cell) and keeps the share of
processes that have ended. A process that ends or cannot be read while it is being read is
only left out of that sample.

Bounded: when ``max_samples`` samples are held, neighbouring pairs are merged and the sampling
interval doubles, so a multi-hour cell keeps at most ``max_samples`` evenly spaced samples.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

from jumper_proxy.errors import ConfigurationError, MonitorError
from jumper_proxy.monitor.gpu import GpuProbe
from jumper_proxy.monitor.procfs import Io, ProcessReading, Reader, reader
from jumper_proxy.monitor.store import SAMPLE_COLUMNS, downsample, merge_samples

log = logging.getLogger(__name__)

__all__ = ["MAX_FREQUENCY_HZ", "Sampler"]

#: The highest sampling frequency accepted (samples per second).
MAX_FREQUENCY_HZ = 100.0

_IO_ZERO = (0, 0, 0, 0)
# Start times are accurate to a clock tick, and psutil's (where /proc is not read) to about a
# second (the boot time is whole seconds).
_START_SLACK_S = 2.0
_FINISH_TIMEOUT_S = 5.0

_Key = tuple[int, float]
_READER: Reader = reader()


@dataclass
class _Tracked:
    """One process of the trees, as last seen."""

    cpu: float  # own and reaped children's CPU seconds
    io_base: Io
    io: Io
    ppid: int


class Sampler:
    """Samples the process trees of ``roots()`` from :meth:`start` to :meth:`finish`."""

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
        self._tracked: dict[_Key, _Tracked] = {}
        self._io_gone = [0, 0, 0, 0]
        self._node_cpu: list[tuple[float, float]] = []
        self._forks: int | None = None
        self._t0 = self._last_t = self._start_clock = 0.0
        self._deadline = math.inf
        self._latest: dict[str, Any] | None = None
        self._lock = threading.Lock()
        self._started = self._scheduled = self._finishing = False
        self._result: dict[str, list[Any]] | None = None
        #: resolved with the samples, column by column, once :meth:`finish` has run
        self.samples: Future[dict[str, list[Any]]] = Future()

    @property
    def interval_s(self) -> float:
        """The current sampling interval (it doubles each time the samples are downsampled)."""
        return self._period

    def start(self) -> None:
        """Have the baseline taken at once and the samples follow; returns without waiting."""
        self._claim_start()
        self._scheduled = True
        _THREAD.call(self._begin_and_schedule)

    def begin(self) -> None:
        """Take the baseline now, in the calling thread; samples follow once :meth:`schedule`
        is called. For a caller that is awake anyway at the start: no thread is woken."""
        self._claim_start()
        self._begin()

    def schedule(self) -> None:
        """Hand a sampler begun with :meth:`begin` to the sampling thread for its samples."""
        if not self._started or self._scheduled or self._finishing:
            return
        self._scheduled = True
        _THREAD.call(self._activate)

    def finish(self) -> None:
        """Have the final sample taken and :attr:`samples` resolved. Returns without waiting
        when sampling is on the sampling thread; otherwise (begun, never scheduled) the final
        sample, if any, is taken in the calling thread."""
        if not self._started:
            raise MonitorError("this sampler was never started")
        if self._finishing:
            return
        self._finishing = True
        if self._scheduled:
            _THREAD.call(self._end)
        else:
            self._end()

    def _claim_start(self) -> None:
        if self._started:
            raise MonitorError("this sampler was already started")
        self._started = True

    def stop(self) -> dict[str, list[Any]]:
        """:meth:`finish`, then wait for the samples and return them.

        Returns promptly at any frequency. Calling it again returns the same samples.
        """
        if self._result is not None:
            return self._result
        self.finish()
        try:
            self._result = self.samples.result(timeout=_FINISH_TIMEOUT_S)
        except FutureTimeout:
            log.warning("the sampling thread did not finish in time; its last samples are lost")
            with self._lock:
                self._result = _consistent_copy(self._columns)
        return self._result

    def snapshot(self) -> dict[str, Any] | None:
        """A copy of the latest sample, or ``None`` before the first one."""
        with self._lock:
            if self._latest is None:
                return None
            return {k: list(v) if isinstance(v, list) else v for k, v in self._latest.items()}

    # ---- on the sampling thread (or the caller's, before schedule()) -----------------------

    def _begin(self) -> None:
        self._t0 = self._last_t = time.monotonic()
        self._start_clock = _READER.start_clock()
        try:
            self._node_cpu, self._forks = _READER.node_cpu()
            self._record(self._baseline_row(), merge=False)
        except Exception:
            log.exception("performance baseline failed")
        self._deadline = self._t0 + self._period

    def _activate(self) -> None:
        if not self._finishing:
            _THREAD.active.add(self)

    def _begin_and_schedule(self) -> None:
        self._begin()
        self._activate()

    def _tick(self, now: float) -> None:
        self._sample_guarded()
        self._deadline += self._period
        if self._deadline <= now:  # fell behind (a suspended machine): skip, do not burst
            self._deadline = now + self._period

    def _end(self) -> None:
        if self._scheduled:  # on the sampling thread, the only one to touch its samplers
            _THREAD.active.discard(self)
        # Below ``min_rows`` rows (the baseline included) the final row would not make the cell
        # keep its samples (JUMPER_REPORTS_MIN): spare the work.
        try:
            if len(self._columns["time_s"]) >= self._min_rows:
                self._sample_guarded(final=True)
        finally:
            self.samples.set_result(self._columns)

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
            "memory_percent": _READER.memory_percent(),
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
        node, self._forks = _READER.node_cpu()  # first: the fork count must not be newer
        cpu_s, rss, procs, threads, io = self._measure_trees(baseline=False)
        per_core = [_busy_percent(a, b) for a, b in zip(self._node_cpu, node, strict=False)]
        self._node_cpu = node
        gpu_util, gpu_mem = self._gpu.sample() if self._gpu is not None else ([], [])
        return {
            "time_s": now - self._t0,
            "cpu_percent": 100.0 * cpu_s / elapsed if elapsed > 0 else 0.0,
            "cpu_percent_per_core": per_core,
            "memory_rss_bytes": rss,
            "memory_percent": _READER.memory_percent(),
            "io_read_bytes": io[0],
            "io_write_bytes": io[1],
            "io_read_count": io[2],
            "io_write_count": io[3],
            "num_procs": procs,
            "num_threads": threads,
            "gpu_util_percent": gpu_util,
            "gpu_memory_bytes": gpu_mem,
        }

    def _measure_trees(self, baseline: bool) -> tuple[float, int, int, int, Io]:
        """Read every process once: CPU seconds since the last reading, RSS, process and
        thread counts, I/O since the start."""
        tracked = self._tracked
        seen: dict[_Key, _Tracked] = {}
        cpu_s = 0.0
        rss = procs = threads = 0
        io_live = [0, 0, 0, 0]
        roots = list(self._roots())
        members = set(roots)
        for pid in _TABLE.trees(roots, self._forks):  # parents before their children
            now = _READER.process(pid)
            if now is None or (now.ppid not in members and pid not in roots):
                # ended, or re-parented out of the trees (its parent ended): the table is
                # out of date, and so are its descendants here
                _TABLE.invalidate()
                continue
            members.add(pid)
            key = (pid, now.start)
            entry = tracked.get(key)
            if entry is None:
                # Present at the baseline (or clearly older than the cell): measured from now.
                # Born during the cell: all of it counts.
                existed = baseline or now.start < self._start_clock - _START_SLACK_S
                base = (now.io or _IO_ZERO) if existed else _IO_ZERO
                entry = _Tracked(now.cpu_s, base, now.io or base, now.ppid)
                if not existed:
                    cpu_s += now.cpu_s
            else:
                cpu_s += now.cpu_s - entry.cpu
                entry.cpu, entry.ppid = now.cpu_s, now.ppid
                if now.io is not None:
                    entry.io = now.io
            seen[key] = entry
            rss += now.rss
            threads += now.threads
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
        gone = {key[0]: (key, entry) for key, entry in self._tracked.items() if key not in seen}
        twice = 0.0
        for key, entry in gone.values():
            for i in range(4):
                self._io_gone[i] += entry.io[i] - entry.io_base[i]
            if _still_running(key):
                continue  # alive, re-parented out of the trees
            reaper, hops = entry.ppid, 0
            while reaper in gone and hops < len(gone):
                reaper, hops = gone[reaper][1].ppid, hops + 1
            if reaper in live_pids:
                twice += entry.cpu
        return twice


def _still_running(key: _Key) -> bool:
    now: ProcessReading | None = _READER.process(key[0])
    return now is not None and abs(now.start - key[1]) < 1e-6


class _SamplingThread:
    """The one thread that runs every sampler's work: calls queued by :meth:`call`, and the
    samples of the active samplers as they fall due. Started on first use (again in a forked
    child); it sleeps while nothing is due."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._calls: list[Callable[[], None]] = []
        self._thread: threading.Thread | None = None
        #: samplers taking periodic samples (touched on the thread only)
        self.active: set[Sampler] = set()

    def call(self, work: Callable[[], None]) -> None:
        with self._cond:
            self._calls.append(work)
            if self._thread is None or not self._thread.is_alive():
                self.active.clear()
                self._thread = threading.Thread(
                    target=self._run, name="jumper-sampler", daemon=True
                )
                self._thread.start()
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._calls:
                    due = min((s._deadline for s in self.active), default=math.inf)
                    wait = due - time.monotonic()
                    if wait <= 0:
                        break
                    self._cond.wait(None if wait == math.inf else wait)
                calls, self._calls = self._calls, []
            for work in calls:
                try:
                    work()
                except Exception:
                    log.exception("sampling failed")
            now = time.monotonic()
            for sampler in [s for s in self.active if s._deadline <= now]:
                sampler._tick(now)


_THREAD = _SamplingThread()


class _ProcessTable:
    """Parent and children of every process on the node, kept up to date incrementally.

    A use lists the pids (one directory read on Linux) and reads the parent only of processes
    that are new, or whose parent ended (re-parented), so a sample costs little even on a node
    with thousands of processes. It skips even that when the node's count of processes ever
    created is the one of the last listing and nothing has been found out of date
    (:meth:`invalidate`) since: then no process can have appeared. The table is rebuilt from
    scratch when it is older than ``max_age_s``, which bounds the harm of a pid reused between
    two uses. Processes that cannot be read (other users' on a hardened node) are left out.
    Thread-safe.
    """

    def __init__(self, max_age_s: float = 60.0) -> None:
        self._max_age_s = max_age_s
        self._built_at = -math.inf
        self._ppid: dict[int, int] = {}
        self._children: dict[int, set[int]] = {}
        self._forks: int | None = None
        self._lock = threading.Lock()

    def trees(self, roots: Iterable[int], forks: int | None = None) -> list[int]:
        """The roots present and all their descendants, each pid once, roots first, parents
        before their children. ``forks``: the node's count of processes created, if known."""
        wanted = list(dict.fromkeys(roots))
        with self._lock:
            stale = time.monotonic() - self._built_at > self._max_age_s
            if forks is None or forks != self._forks or stale:
                self._refresh()
                self._forks = forks
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

    def invalidate(self) -> None:
        """Have the next use list the processes again."""
        with self._lock:
            self._forks = None

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._built_at > self._max_age_s:
            self._ppid.clear()
            self._children.clear()
            self._built_at = now
        pids = set(_READER.pids())
        ppid = self._ppid
        gone = ppid.keys() - pids
        recheck = pids - ppid.keys()
        for pid in gone:
            self._unlink(pid)
            recheck.update(self._children.pop(pid, ()))
        for pid in recheck & pids:
            if pid in ppid:
                self._unlink(pid)
            parent = _READER.parent(pid)
            if parent is None:
                continue
            ppid[pid] = parent
            self._children.setdefault(parent, set()).add(pid)

    def _unlink(self, pid: int) -> None:
        siblings = self._children.get(self._ppid.pop(pid))
        if siblings is not None:
            siblings.discard(pid)


# One table for all samplers of the process: consecutive cells only pay for what changed.
_TABLE = _ProcessTable()


def _busy_percent(before: tuple[float, float], after: tuple[float, float]) -> float:
    """Busy share of one core between two (total, idle) readings, as psutil computes it."""
    total = after[0] - before[0]
    if total <= 0:
        return 0.0
    idle = after[1] - before[1]
    return max(0.0, min(100.0, 100.0 * (total - idle) / total))


def _consistent_copy(columns: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """A copy of ``columns`` cut to the length every column has reached."""
    n = min(len(values) for values in columns.values())
    return {name: values[:n] for name, values in columns.items()}
