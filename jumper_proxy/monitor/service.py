"""The monitor as the proxy runs it: one sampler per cell, from the upstream's busy to idle,
over the kernel's process tree (and any Score-P child beside it), records kept in the store,
and the optional live view.

A cell's baseline is read in the event loop right after its request has gone to the kernel
(the loop is awake then; waking a thread would cost more), unless the kernel's tree had more
than a few processes when last seen. Its samples are taken on the sampling thread from the
first period on, and its sampler is told to finish only once the cell's idle status is on its
way: a short cell of a small tree wakes no thread at all, and no sample delays a reply.
Records are added in the order cells ran.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, replace
from typing import Any

from jumper_proxy.api import CellRun
from jumper_proxy.monitor.gpu import GpuProbe
from jumper_proxy.monitor.sampler import MAX_FREQUENCY_HZ, Sampler
from jumper_proxy.monitor.store import CellRecord, PerfStore, finish_record

log = logging.getLogger(__name__)

FREQUENCY_VAR = "JUMPER_REPORT_FREQUENCY"
REPORTS_MIN_VAR = "JUMPER_REPORTS_MIN"
#: up to this many processes in the kernel's tree, a cell's baseline is read in the event loop
INLINE_BASELINE_MAX_PROCS = 16
#: a cell running longer than this gets a live display (when the live view is on)
LIVE_AFTER_S = 2.0
LIVE_EVERY_S = 1.0

Publish = Callable[[str, dict[str, Any], dict[str, Any]], None]


@dataclass(frozen=True)
class MonitorSettings:
    """``JUMPER_REPORT_FREQUENCY`` (samples per second) and ``JUMPER_REPORTS_MIN``."""

    frequency_hz: float = 2.0
    reports_min: int = 2
    live: bool = False


def settings_from_env(env: Mapping[str, str | None], current: MonitorSettings) -> MonitorSettings:
    """New settings from environment values; a bad value keeps the current one (logged)."""
    settings = current
    raw = env.get(FREQUENCY_VAR)
    if raw is not None:
        try:
            value = float(raw)
            if not (0 < value <= MAX_FREQUENCY_HZ) or math.isnan(value):
                raise ValueError(raw)
            settings = replace(settings, frequency_hz=value)
        except ValueError:
            log.warning(
                "Ignoring %s=%r: expected samples per second in (0, %g]",
                FREQUENCY_VAR,
                raw,
                MAX_FREQUENCY_HZ,
            )
    raw = env.get(REPORTS_MIN_VAR)
    if raw is not None:
        try:
            count = int(raw)
            if count < 0:
                raise ValueError(raw)
            settings = replace(settings, reports_min=count)
        except ValueError:
            log.warning("Ignoring %s=%r: expected a whole number >= 0", REPORTS_MIN_VAR, raw)
    return settings


@dataclass
class _Running:
    request: CellRun
    sampler: Sampler
    start_wall: float
    start_mono: float
    sample_timer: asyncio.TimerHandle | None = None
    live_id: str | None = None
    live_timer: asyncio.TimerHandle | None = None
    index: int = -1


@dataclass
class _Finishing:
    running: _Running
    end_wall: float
    end_mono: float

    @property
    def samples(self) -> Future[dict[str, list[Any]]]:
        return self.running.sampler.samples


class Monitor:
    """Records every monitored cell; the scheduler's cell observer."""

    def __init__(
        self,
        kernel_pid: Callable[[], int | None],
        publish: Publish,
        gpu: GpuProbe | None = None,
        settings: MonitorSettings | None = None,
        store: PerfStore | None = None,
    ) -> None:
        self.kernel_pid = kernel_pid
        self.publish = publish
        self.gpu = gpu
        self.settings = settings or settings_from_env(os.environ, MonitorSettings())
        self.store = store or PerfStore()
        self.extra_roots: set[int] = set()
        self._running: dict[str, _Running] = {}
        self._finishing: deque[_Finishing] = deque()
        self._last_sampler: Sampler | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        #: called with each cell whose code may have changed the settings
        self.on_settings_touched: Callable[[], None] | None = None

    @property
    def live(self) -> bool:
        return self.settings.live

    @live.setter
    def live(self, on: bool) -> None:
        self.settings = replace(self.settings, live=on)

    def roots(self) -> list[int]:
        pid = self.kernel_pid()
        return ([pid] if pid is not None else []) + sorted(self.extra_roots)

    # ---- the scheduler's observer --------------------------------------------------------

    def cell_started(self, request: CellRun) -> None:
        if request.content.get("silent"):
            return  # a frontend's silent housekeeping is not a cell of the user's
        self._loop = asyncio.get_running_loop()
        settings = self.settings
        # A cell whose rows, with a final one, would still be fewer than the reports asked for
        # keeps no samples (store.finish_record): it needs no final sample either.
        need = max(settings.reports_min, 1)
        sampler = Sampler(self.roots, settings.frequency_hz, self.gpu, min_rows=need)
        running = _Running(request, sampler, time.time(), time.monotonic())
        last = self._last_sampler.snapshot() if self._last_sampler is not None else None
        self._last_sampler = sampler
        if last is None or last["num_procs"] <= INLINE_BASELINE_MAX_PROCS:
            # The loop is awake now and the request is on its way: the baseline costs less
            # here than a thread woken to take it. The sampling thread takes over at the first
            # sample.
            sampler.begin()
            running.sample_timer = self._loop.call_later(sampler.interval_s, sampler.schedule)
        else:  # a large tree takes a while to read: not in the relay's loop
            sampler.start()
        self._running[request.msg_id] = running
        if settings.live:
            running.live_timer = self._loop.call_later(LIVE_AFTER_S, self._live, running)

    def cell_finished(self, request: CellRun) -> None:
        running = self._running.pop(request.msg_id, None)
        if running is None:
            return
        for timer in (running.sample_timer, running.live_timer):
            if timer is not None:
                timer.cancel()
        if running.live_id is not None:  # the last word, before the cell's idle goes out
            self._send_live(running, self._live_bundle(running, finished=True), update=True)
        sampler = running.sampler
        self._flush()
        self._finishing.append(_Finishing(running, time.time(), time.monotonic()))
        loop = self._loop or asyncio.get_running_loop()
        loop.call_soon(sampler.finish)  # once the idle this is called for has gone out
        if "JUMPER_" in request.cell.code and self.on_settings_touched is not None:
            self.on_settings_touched()

    def _flush(self) -> None:
        """Store the records of finished cells, in the order the cells ran.

        Done at the next cell's end and by :meth:`drain`, which everything reading the store
        awaits first: the event loop is not woken for each cell's last sample.
        """
        while self._finishing and self._finishing[0].samples.done():
            done = self._finishing.popleft()
            try:
                samples = done.samples.result()
            except Exception:
                log.exception("Sampling a cell failed; it is recorded without samples")
                samples = {}
            self.store.add(self._record(done, samples))

    def _record(self, done: _Finishing, samples: dict[str, list[Any]]) -> CellRecord:
        running = done.running
        return finish_record(
            index=self.store.next_index,
            code=running.request.cell.code,
            start=running.start_wall,
            end=done.end_wall,
            duration=done.end_mono - running.start_mono,
            status=running.request.reply_status or "ok",
            samples=samples,
            reports_min=self.settings.reports_min,
        )

    async def drain(self) -> None:
        """Wait until every finished cell's record is in the store."""
        while self._finishing:
            await asyncio.wrap_future(self._finishing[-1].samples)
            await asyncio.sleep(0)
            self._flush()

    # ---- live view -----------------------------------------------------------------------

    def _live(self, running: _Running) -> None:
        if running.request.msg_id not in self._running:
            return
        first = running.live_id is None
        if first:
            running.live_id = f"jumper-live-{running.request.msg_id}"
        self._send_live(running, self._live_bundle(running), update=not first)
        assert self._loop is not None
        running.live_timer = self._loop.call_later(LIVE_EVERY_S, self._live, running)

    def _live_bundle(self, running: _Running, finished: bool = False) -> dict[str, Any]:
        snapshot = running.sampler.snapshot()
        index = self.store.next_index + len(self._finishing)  # the index its record will get
        elapsed = time.monotonic() - running.start_mono
        from jumper_proxy.plots import live_bundle

        return live_bundle(index, elapsed, snapshot, finished=finished)

    def _send_live(self, running: _Running, bundle: dict[str, Any], update: bool) -> None:
        content = {"data": bundle, "metadata": {}, "transient": {"display_id": running.live_id}}
        kind = "update_display_data" if update else "display_data"
        self.publish(kind, content, running.request.msg.as_parent())

    # ---- the proxy's other parts ---------------------------------------------------------

    def export(self) -> list[dict[str, Any]]:
        return [record.to_dict() for record in self.store.records()]

    def close(self) -> None:
        for running in self._running.values():
            running.sampler.stop()
        self._running.clear()
        for done in self._finishing:  # finish() may not have had its turn in the loop yet
            done.running.sampler.finish()
        if self.gpu is not None:
            self.gpu.close()
