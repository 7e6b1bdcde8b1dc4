"""Score-P's results in the notebook, through the proxy with real kernels and real Score-P:
``%%display_scorep_profile`` and ``%%display_scorep_trace`` draw what Score-P wrote (bokeh,
offline, with a text twin), a large trace is reduced and says so, and each magic says clearly
what is missing and which Score-P variable turns it on."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import scorep_helpers as helpers
from conftest import SCOREP_KERNEL
from jupyter_client.blocking import BlockingKernelClient
from kernel_helpers import ok
from scorep_helpers import displays, experiment_of, scorep_cell, setting, started, trace_events

pytestmark = [pytest.mark.e2e, pytest.mark.real_scorep]


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BlockingKernelClient, Path]]:
    cwd = tmp_path_factory.mktemp("results-cwd")
    with started(SCOREP_KERNEL, cwd) as (_, kc):
        yield kc, cwd


@pytest.fixture
def kc(kernel: tuple[BlockingKernelClient, Path]) -> BlockingKernelClient:
    return kernel[0]


def failed(kc: BlockingKernelClient, code: str) -> dict[str, Any]:
    return helpers.failed(kc, code)[0]


def tracing(kc: BlockingKernelClient, experiment: Path) -> contextlib.AbstractContextManager[None]:
    """Tracing on, into ``experiment``, for a while."""
    return setting(
        kc,
        f"%%scorep_env\nSCOREP_ENABLE_TRACING=true\nSCOREP_EXPERIMENT_DIRECTORY={experiment}",
        "%%scorep_env\nSCOREP_ENABLE_TRACING=false\nSCOREP_EXPERIMENT_DIRECTORY=",
    )


def graph(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The one display of a graph magic: offline bokeh HTML and a text twin."""
    shown = displays(messages)
    assert len(shown) == 1
    data = shown[0]
    assert (
        "embed_item" in data["text/html"]
        and "https://" not in data["text/html"].split("<script", 1)[0]
    )
    assert data["text/plain"]
    return data


def test_before_any_experiment_the_magics_say_so(kc: BlockingKernelClient) -> None:
    for magic in ("display_scorep_profile", "display_scorep_trace"):
        error = failed(kc, f"%%{magic}")
        assert "no instrumented cell has written a Score-P experiment yet" in error["evalue"]


def test_the_profile_is_drawn_with_its_call_tree(kc: BlockingKernelClient) -> None:
    ok(kc, "def inner():\n    return sum(range(1000))\ndef outer():\n    return inner() + inner()")
    count, _ = scorep_cell(kc, "for _ in range(3):\n    outer()")
    for args in ("", f" {count}"):
        data = graph(ok(kc, f"%%display_scorep_profile{args}"))
        text = data["text/plain"]
        assert f"cell [{count}]" in text.splitlines()[0]
        tree = [line for line in text.splitlines() if "__main__:" in line]
        depth = {line.strip().split()[0]: len(line) - len(line.lstrip()) for line in tree}
        assert depth["__main__:cell"] < depth["__main__:outer"] < depth["__main__:inner"]
        inner = next(line for line in tree if "__main__:inner" in line)
        assert inner.split()[-1] == "6"  # visits
        assert (
            "jumper-scorep-calltree" in data["text/html"] and "__main__:inner" in data["text/html"]
        )


def test_the_profile_of_a_named_directory(kernel: tuple[BlockingKernelClient, Path]) -> None:
    kc, cwd = kernel
    _, msgs = scorep_cell(kc, "named = 1")
    experiment = experiment_of(msgs)
    data = graph(ok(kc, f"%%display_scorep_profile {experiment.relative_to(cwd)}"))
    assert str(experiment / "profile.cubex") in data["text/plain"]
    error = failed(kc, "%%display_scorep_profile no-such-dir")
    assert "no-such-dir does not exist" in error["evalue"]
    error = failed(kc, "%%display_scorep_profile 100000")
    assert "cell [100000] was not an instrumented cell" in error["evalue"]


def test_the_trace_is_a_timeline(kc: BlockingKernelClient, tmp_path: Path) -> None:
    with tracing(kc, tmp_path / "t"):
        ok(kc, "import time\ndef nap():\n    time.sleep(0.01)")
        count, msgs = scorep_cell(kc, "for _ in range(4):\n    nap()")
        assert trace_events(experiment_of(msgs))[("Enter", "__main__:nap")] == 4
        data = graph(ok(kc, "%%display_scorep_trace"))
        text = data["text/plain"]
        assert "1 locations (Master thread)" in text and "Reduced" not in text
        assert "__main__:nap" in text and f"cell [{count}]" in text
        items = data["text/html"].split("embed_item(", 1)[1]
        assert items.count("__main__:nap") >= 1  # the bars' regions are in the embedded data


def test_a_large_trace_is_reduced_and_says_how(kc: BlockingKernelClient, tmp_path: Path) -> None:
    with tracing(kc, tmp_path / "big"):
        ok(kc, "def tick():\n    pass\ndef tock():\n    pass")
        scorep_cell(kc, "for _ in range(100_000):\n    tick()\n    tock()")
        data = graph(ok(kc, "%%display_scorep_trace"))
        assert "were merged with their neighbours" in data["text/plain"]
        size = len(json.dumps(data))
        assert size < 4_000_000, size


def test_missing_profile_and_trace_name_the_variable(kc: BlockingKernelClient) -> None:
    with setting(
        kc,
        "%%scorep_env\nSCOREP_ENABLE_PROFILING=false",
        "%%scorep_env\nSCOREP_ENABLE_PROFILING=true",
    ):
        _, msgs = scorep_cell(kc, "unprofiled = 1")
        assert displays(msgs) == []  # no summary, and no complaint: profiling is off
        error = failed(kc, "%%display_scorep_profile")
        assert "SCOREP_ENABLE_PROFILING" in error["evalue"]
    error = failed(kc, "%%display_scorep_trace")
    assert "SCOREP_ENABLE_TRACING" in error["evalue"] and "No trace" in error["evalue"]
