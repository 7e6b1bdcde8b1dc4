"""A fake NVML binding module (the ``pynvml`` boundary) for machines without an NVIDIA GPU.

``FakeNVML`` is a module object with the few NVML calls the GPU probe uses. Its devices report
fixed utilisation and memory; ``driver=False`` makes ``nvmlInit`` fail like a machine without
the driver, ``failing=True`` makes every device query fail like a lost GPU.
"""

from __future__ import annotations

import types
from dataclasses import dataclass

NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_UNINITIALIZED = 1


class NVMLError(Exception):
    """Stands in for ``pynvml.NVMLError``: carries an NVML error code."""

    def __init__(self, value: int) -> None:
        super().__init__(f"NVML error {value}")
        self.value = value


@dataclass
class FakeDevice:
    util_percent: int
    used_bytes: int
    total_bytes: int = 16 * 2**30


@dataclass(frozen=True)
class _Utilization:
    gpu: int
    memory: int


@dataclass(frozen=True)
class _Memory:
    total: int
    free: int
    used: int


class FakeNVML(types.ModuleType):
    """A fake ``pynvml`` module over ``devices``; it counts init and shutdown calls."""

    NVMLError = NVMLError

    def __init__(
        self, devices: list[FakeDevice] | None = None, *, driver: bool = True, failing: bool = False
    ) -> None:
        super().__init__("fake_pynvml")
        self.devices = list(devices or [])
        self.driver = driver
        self.failing = failing
        self.init_calls = 0
        self.shutdown_calls = 0
        self._initialised = False

    def nvmlInit(self) -> None:
        self.init_calls += 1
        if not self.driver:
            raise NVMLError(NVML_ERROR_DRIVER_NOT_LOADED)
        self._initialised = True

    def nvmlShutdown(self) -> None:
        self.shutdown_calls += 1
        if not self._initialised:
            raise NVMLError(NVML_ERROR_UNINITIALIZED)
        self._initialised = False

    def nvmlDeviceGetCount(self) -> int:
        self._check()
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeDevice:
        self._check()
        return self.devices[index]

    def nvmlDeviceGetUtilizationRates(self, handle: FakeDevice) -> _Utilization:
        self._check()
        return _Utilization(gpu=handle.util_percent, memory=0)

    def nvmlDeviceGetMemoryInfo(self, handle: FakeDevice) -> _Memory:
        self._check()
        return _Memory(
            handle.total_bytes, handle.total_bytes - handle.used_bytes, handle.used_bytes
        )

    def _check(self) -> None:
        if not self._initialised:
            raise NVMLError(NVML_ERROR_UNINITIALIZED)
        if self.failing:
            raise NVMLError(NVML_ERROR_GPU_IS_LOST)
