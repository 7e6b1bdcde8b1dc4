"""The NVML boundary: a fake NVML module stands in for GPUs; the real pynvml finds none here."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from types import ModuleType

import pytest

from jumper_proxy.monitor import Sampler, open_gpu_probe


@pytest.fixture
def fake_nvml(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The ``tests/fakes/fake_nvml.py`` module."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent.parent / "fakes"))
    import fake_nvml

    return fake_nvml


def two_gpus(fake_nvml: ModuleType) -> ModuleType:
    result: ModuleType = fake_nvml.FakeNVML(
        [fake_nvml.FakeDevice(37, 3 * 2**30), fake_nvml.FakeDevice(0, 512 * 2**20)]
    )
    return result


def test_devices_are_sampled_in_order(fake_nvml: ModuleType) -> None:
    nvml = two_gpus(fake_nvml)
    probe = open_gpu_probe(nvml)
    assert probe is not None and probe.device_count == 2
    assert probe.sample() == ([37.0, 0.0], [3 * 2**30, 512 * 2**20])
    probe.close()
    probe.close()
    assert nvml.shutdown_calls == 1


def test_no_driver_means_no_probe(fake_nvml: ModuleType) -> None:
    nvml = fake_nvml.FakeNVML([fake_nvml.FakeDevice(1, 1)], driver=False)
    assert open_gpu_probe(nvml) is None
    assert nvml.init_calls == 1


def test_no_devices_means_no_probe_and_nvml_is_shut_down(fake_nvml: ModuleType) -> None:
    nvml = fake_nvml.FakeNVML([])
    assert open_gpu_probe(nvml) is None
    assert nvml.shutdown_calls == 1


def test_listing_devices_failing_means_no_probe(fake_nvml: ModuleType) -> None:
    nvml = fake_nvml.FakeNVML([fake_nvml.FakeDevice(1, 1)], failing=True)
    assert open_gpu_probe(nvml) is None
    assert nvml.shutdown_calls == 1


def test_an_nvml_error_during_a_sample_gives_empty_lists(fake_nvml: ModuleType) -> None:
    nvml = two_gpus(fake_nvml)
    probe = open_gpu_probe(nvml)
    assert probe is not None
    nvml.failing = True
    assert probe.sample() == ([], [])
    nvml.failing = False
    assert probe.sample() == ([37.0, 0.0], [3 * 2**30, 512 * 2**20])
    probe.close()
    assert probe.sample() == ([], [])


def test_the_sampler_records_one_entry_per_device(fake_nvml: ModuleType) -> None:
    probe = open_gpu_probe(two_gpus(fake_nvml))
    sampler = Sampler(lambda: [], frequency_hz=50, gpu=probe)
    sampler.start()
    deadline = time.monotonic() + 5
    while sampler.snapshot() is None:
        assert time.monotonic() < deadline, "no sample in 5 s"
        threading.Event().wait(0.01)
    samples = sampler.stop()
    assert samples["gpu_util_percent"] and set(map(tuple, samples["gpu_util_percent"])) == {
        (37.0, 0.0)
    }
    assert set(map(tuple, samples["gpu_memory_bytes"])) == {(3 * 2**30, 512 * 2**20)}


@pytest.mark.skipif(
    Path("/proc/driver/nvidia").exists(), reason="this machine has an NVIDIA driver"
)
def test_the_real_pynvml_without_a_driver_gives_no_probe() -> None:
    assert open_gpu_probe() is None


def test_pynvml_not_importable_gives_no_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)
    assert open_gpu_probe() is None
