"""Multi-cell mode through the proxy with real kernels and real Score-P: marked cells wait,
``%%finalize_multicellmode`` runs them in one Score-P child with the notebook's state, each
marked cell a region of its own, abort drops them, and every misuse is a clear error after which
the kernel works on.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import SCOREP_KERNEL
from jupyter_client.blocking import BlockingKernelClient
from kernel_helpers import ok, run, shell_reply, stdout, value
from scorep_helpers import call_paths, experiment_of, profile_regions, started

pytestmark = [pytest.mark.e2e, pytest.mark.real_scorep]


@pytest.fixture(scope="module")
def kc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BlockingKernelClient]:
    cwd = tmp_path_factory.mktemp("multicell-cwd")
    with started(SCOREP_KERNEL, cwd) as (_, client):
        yield client


def failed(kc: BlockingKernelClient, code: str, timeout: float = 60) -> dict[str, Any]:
    reply, _ = run(kc, code, timeout=timeout)
    assert reply["content"]["status"] == "error", reply["content"]
    content: dict[str, Any] = reply["content"]
    return content


def stderr(messages: list[dict[str, Any]]) -> str:
    return "".join(
        m["content"]["text"]
        for m in messages
        if m["msg_type"] == "stream" and m["content"]["name"] == "stderr"
    )


def peek(kc: BlockingKernelClient, expression: str) -> Any:
    """``expression`` evaluated by a silent request, as a frontend's housekeeping sends it:
    no mode takes those, so it works while cells are being marked."""
    msg_id = kc.execute("", silent=True, user_expressions={"v": expression})
    result = shell_reply(kc, msg_id)["content"]["user_expressions"]["v"]
    assert result["status"] == "ok", result
    return ast.literal_eval(result["data"]["text/plain"])


def test_marked_cells_run_only_at_finalize_in_one_child(kc: BlockingKernelClient) -> None:
    kernel_pid = value(kc, "__import__('os').getpid()")
    assert "marked, not run" in stdout(ok(kc, "%%enable_multicellmode"))

    first = ok(kc, "import os\nside_effect = 1\nprint('first', os.getpid())")
    assert stdout(first) == "marked (1)\n"
    assert peek(kc, "'side_effect' in globals()") is False
    second = ok(kc, "%%execute_with_scorep\nside_effect += 1\nprint('second', os.getpid())")
    assert stdout(second) == "marked (2)\n"
    assert "adds nothing" in stderr(second)
    third = ok(kc, "%env MARKED_ENV=yes\nprint('third', os.getpid(), os.environ['MARKED_ENV'])")
    assert stdout(third) == "marked (3)\n"
    assert peek(kc, "'side_effect' in globals()") is False

    lines = stdout(ok(kc, "%%finalize_multicellmode")).splitlines()
    expected = [
        "--- cell 1 of 3 ---",
        "first ",
        "--- cell 2 of 3 ---",
        "second ",
        "--- cell 3 of 3 ---",
        "env: MARKED_ENV=yes",
        "third ",
    ]
    assert len(lines) > len(expected), lines
    assert all(line.startswith(start) for line, start in zip(lines, expected, strict=False)), lines
    pids = {int(line.split()[1]) for line in lines if line.startswith(("first", "second", "third"))}
    assert len(pids) == 1 and kernel_pid not in pids
    assert lines[6].endswith(" yes")
    assert value(kc, "side_effect") == 2
    assert stdout(ok(kc, "print('not marked')")) == "not marked\n"


def test_abort_drops_the_marks(kc: BlockingKernelClient) -> None:
    ok(kc, "%%enable_multicellmode")
    ok(kc, "aborted_flag = 1")
    ok(kc, "aborted_flag += 1")
    assert "2 marked cells dropped" in stdout(ok(kc, "%%abort_multicellmode"))
    assert value(kc, "'aborted_flag' in globals()") is False


def test_a_failing_block_shows_the_error_clears_the_marks_and_keeps_the_state(
    kc: BlockingKernelClient,
) -> None:
    ok(kc, "kept = 'before'")
    ok(kc, "%%enable_multicellmode")
    ok(kc, "kept = 'changed'\nbrand_new = 1")
    ok(kc, "raise ValueError('boom in the block')")
    reply, msgs = run(kc, "%%finalize_multicellmode", timeout=60)
    assert reply["content"]["status"] == "error"
    assert reply["content"]["ename"] == "ValueError"
    assert reply["content"]["evalue"] == "boom in the block"
    assert "marked cells are dropped" in stderr(msgs)
    assert value(kc, "[kept, 'brand_new' in globals()]") == ["before", False]
    assert "Multi-cell mode is off" in failed(kc, "%%finalize_multicellmode")["evalue"]


def test_misuse_is_a_clear_error_and_the_kernel_works_after(kc: BlockingKernelClient) -> None:
    error = failed(kc, "%%finalize_multicellmode")
    assert error["ename"] == "MagicError" and "%%enable_multicellmode first" in error["evalue"]
    assert "nothing to abort" in failed(kc, "%%abort_multicellmode")["evalue"]
    assert "stands alone" in failed(kc, "%%enable_multicellmode\nx = 1")["evalue"]
    ok(kc, "%%enable_multicellmode")
    assert "already on" in failed(kc, "%%enable_multicellmode")["evalue"]
    assert "No cell is marked" in failed(kc, "%%finalize_multicellmode")["evalue"]
    syntax = failed(kc, "broken = (")
    assert syntax["ename"] == "SyntaxError" and "not plain Python" in syntax["evalue"]
    assert failed(kc, "%%bash\necho it is not python")["ename"] == "SyntaxError"
    assert "0 marked cells dropped" in stdout(ok(kc, "%%abort_multicellmode"))
    assert value(kc, "6 * 7") == 42


def test_the_proxy_magics_run_as_usual_while_marking(kc: BlockingKernelClient) -> None:
    ok(kc, "%%enable_multicellmode")
    try:
        assert "MARSHALLER=dill" in stdout(ok(kc, "%%marshalling_settings"))
        assert "%%finalize_multicellmode" in stdout(ok(kc, "%%jumper_help"))
        assert "Multi-cell mode is on" in failed(kc, "%%start_writefile")["evalue"]
        assert stdout(ok(kc, "print('marked, not printed')")) == "marked (1)\n"
        # an empty cell has nothing to mark: the kernel answers it
        assert stdout(ok(kc, "   \n")) == ""
    finally:
        ok(kc, "%%abort_multicellmode")


def test_the_monitor_records_the_block_as_one_cell(kc: BlockingKernelClient) -> None:
    ok(kc, "%%perfdata_to_variable perf_before")
    ok(kc, "%%enable_multicellmode")
    ok(kc, "import time\ntime.sleep(0.5)")
    ok(kc, "slept = True")
    ok(kc, "%%finalize_multicellmode")
    ok(kc, "%%perfdata_to_variable perf_after")
    assert value(kc, "[len(perf_after) - len(perf_before), perf_after[-1]['code']]") == [
        1,
        "%%finalize_multicellmode",
    ]
    assert value(kc, "perf_after[-1]['duration']") >= 0.5


def test_each_marked_cell_is_a_region_named_after_its_count(kc: BlockingKernelClient) -> None:
    ok(kc, "%%enable_multicellmode")
    counts = []
    for code in ("def step(n):\n    return n + 1", "x_block = step(1)", "x_block = step(x_block)"):
        reply, _ = run(kc, code)
        assert reply["content"]["status"] == "ok"
        counts.append(reply["content"]["execution_count"])
    finalized = ok(kc, "%%finalize_multicellmode")
    regions = profile_regions(experiment_of(finalized))
    cells = [f"__main__:cell [{n}]" for n in counts]
    assert set(regions) == {"python3.11", *cells, "__main__:step"}
    assert all(regions[cell][0] == 1 for cell in cells)
    assert regions["__main__:step"][0] == 2
    paths = call_paths(experiment_of(finalized))
    assert ("python3.11", cells[1], "__main__:step") in paths
    assert ("python3.11", cells[2], "__main__:step") in paths
    assert value(kc, "x_block") == 3


def test_binding_settings_made_while_marking_reach_the_block(
    kc: BlockingKernelClient, tmp_path: Path
) -> None:
    ok(kc, "%%enable_multicellmode")
    ok(kc, "%%scorep_python_binding_arguments --instrumenter-type=profile")
    ok(kc, f"%%scorep_env\nSCOREP_EXPERIMENT_DIRECTORY={tmp_path / 'block'}")
    try:
        ok(kc, "import scorep.instrumenter as si\nkind = type(si.get_instrumenter()).__name__")
        finalized = ok(kc, "%%finalize_multicellmode")
        assert experiment_of(finalized) == tmp_path / "block"
        assert (tmp_path / "block" / "profile.cubex").is_file()
        assert value(kc, "kind") == "ScorepProfile"
    finally:
        ok(kc, "%%scorep_python_binding_arguments")
        ok(kc, "%%scorep_env\nSCOREP_EXPERIMENT_DIRECTORY=")
