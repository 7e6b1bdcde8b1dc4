"""NVIDIA GPUs through NVML: per-device utilisation and used memory.

This is the only module that touches ``pynvml`` (from nvidia-ml-py). A machine without the
NVIDIA driver, without the library, or with NVML failing in any way simply has no GPU data:
:func:`open_gpu_probe` returns ``None`` and nothing is shown on the user's cells.
"""

from __future__ import annotations

import importlib
import logging
from types import ModuleType
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["GpuProbe", "open_gpu_probe"]


class GpuProbe:
    """An initialised NVML session over the devices present when it was opened.

    Open one with :func:`open_gpu_probe`; :meth:`close` ends the NVML session.
    """

    def __init__(self, nvml: ModuleType, handles: list[Any]) -> None:
        self._nvml = nvml
        self._handles = handles
        self._closed = False

    @property
    def device_count(self) -> int:
        return len(self._handles)

    def sample(self) -> tuple[list[float], list[int]]:
        """Utilisation (percent) and used memory (bytes) of each device, in device order.

        Any NVML error (a device lost, a call not supported) gives two empty lists for this
        sample; it never raises.
        """
        if self._closed:
            return [], []
        nvml = self._nvml
        util: list[float] = []
        used: list[int] = []
        try:
            for handle in self._handles:
                util.append(float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu))
                used.append(int(nvml.nvmlDeviceGetMemoryInfo(handle).used))
        except nvml.NVMLError as err:
            log.debug("NVML sample failed: %s", err)
            return [], []
        return util, used

    def close(self) -> None:
        """End the NVML session. Calling it again does nothing."""
        if self._closed:
            return
        self._closed = True
        try:
            self._nvml.nvmlShutdown()
        except self._nvml.NVMLError as err:
            log.debug("nvmlShutdown failed: %s", err)


def open_gpu_probe(nvml: ModuleType | None = None) -> GpuProbe | None:
    """Initialise NVML and return a probe over its devices, or ``None`` when there is no GPU data.

    ``nvml`` is the NVML binding module; by default ``pynvml`` is imported here. A missing
    module, a missing driver, any NVML error or zero devices all give ``None`` (logged at debug
    level only: a machine without a GPU is normal).
    """
    if nvml is None:
        try:
            nvml = importlib.import_module("pynvml")
        except ImportError as err:
            log.debug("pynvml is not importable, no GPU data: %s", err)
            return None
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as err:
        log.debug("NVML is not available, no GPU data: %s", err)
        return None
    try:
        handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(nvml.nvmlDeviceGetCount())]
    except nvml.NVMLError as err:
        log.debug("NVML could not list devices, no GPU data: %s", err)
        _shutdown_quietly(nvml)
        return None
    if not handles:
        log.debug("NVML reports no devices, no GPU data")
        _shutdown_quietly(nvml)
        return None
    log.debug("NVML: monitoring %d GPU(s)", len(handles))
    return GpuProbe(nvml, handles)


def _shutdown_quietly(nvml: ModuleType) -> None:
    try:
        nvml.nvmlShutdown()
    except nvml.NVMLError as err:
        log.debug("nvmlShutdown failed: %s", err)
