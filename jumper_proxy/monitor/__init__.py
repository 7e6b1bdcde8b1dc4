"""Per-cell monitoring of the upstream kernel's process tree.

``sampler`` measures process trees (CPU, memory, I/O, GPU) on a thread while a cell runs,
``gpu`` is the NVML boundary, ``store`` holds the bounded per-cell records and their schema.
"""

from jumper_proxy.monitor.gpu import GpuProbe, open_gpu_probe
from jumper_proxy.monitor.sampler import MAX_FREQUENCY_HZ, Sampler
from jumper_proxy.monitor.store import (
    METRICS,
    SAMPLE_COLUMNS,
    CellRecord,
    PerfStore,
    finish_record,
    sample_count,
)

__all__ = [
    "MAX_FREQUENCY_HZ",
    "METRICS",
    "SAMPLE_COLUMNS",
    "CellRecord",
    "GpuProbe",
    "PerfStore",
    "Sampler",
    "finish_record",
    "open_gpu_probe",
    "sample_count",
]
