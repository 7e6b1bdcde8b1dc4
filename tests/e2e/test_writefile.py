"""Write mode through the proxy with real kernels: recorded cells do not run, ``%%end_writefile``
writes a script and a bash script in the kernel's directory, and running that bash script under
real Score-P prints what the same cells print in the notebook and writes an experiment whose
profile holds what the instrumented cells called, and not what the wrapped cells called.
Misuse is a clear error after which the kernel works on.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import SCOREP_KERNEL, scorep_bin
from jupyter_client.blocking import BlockingKernelClient
from kernel_helpers import ok, run, stdout, value
from scorep_helpers import profile_regions, started

pytestmark = [pytest.mark.e2e, pytest.mark.real_scorep]


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BlockingKernelClient, Path]]:
    cwd = tmp_path_factory.mktemp("writefile-cwd")
    with started(SCOREP_KERNEL, cwd) as (_, kc):
        yield kc, cwd


@pytest.fixture
def kc(kernel: tuple[BlockingKernelClient, Path]) -> BlockingKernelClient:
    return kernel[0]


def failed(kc: BlockingKernelClient, code: str) -> dict[str, Any]:
    reply, _ = run(kc, code)
    assert reply["content"]["status"] == "error", reply["content"]
    content: dict[str, Any] = reply["content"]
    return content


SCOREP_ENV = (
    "%%scorep_env\nSCOREP_ENABLE_TRACING=false\nSCOREP_EXPERIMENT_DIRECTORY=script-experiment"
)
BINDING_ARGS = "%%scorep_python_binding_arguments\n--instrumenter-type=cProfile"
PLAIN = '''\
import math
%env GREETING=hello there
def plain_helper(n):
    return [round(math.sqrt(i), 3) for i in range(n)]
def measured_helper(values):
    return round(sum(values), 3)
text = """first line
    second line, indented
%third line, in the string"""
values = plain_helper(5)
print("values", values)
print(text)
recorded_flag = 1
'''
SCOREP_CELL = """\
%%execute_with_scorep
import os
total = measured_helper(values)
print("total", total, os.environ["GREETING"])
"""
BLOCK = [
    "%%enable_multicellmode",
    "for i in range(2):\n    print('block', i, total > 0)",
    "%%execute_with_scorep\nprint('still in the block', len(values))",
    "%%finalize_multicellmode",
]
#: lines the proxy adds to a Score-P cell's output; a script run has no such lines
PROXY_NOTE = re.compile(r"^(Score-P experiment directory: |--- cell \d+ of \d+ ---$|Ran \d+ )")


def notebook_output(messages: list[dict[str, Any]]) -> str:
    return "".join(
        line for line in stdout(messages).splitlines(keepends=True) if not PROXY_NOTE.match(line)
    )


def test_the_script_prints_what_the_notebook_prints(
    kernel: tuple[BlockingKernelClient, Path], tmp_path: Path
) -> None:
    kc, cwd = kernel
    assert "out/prog.py" in stdout(ok(kc, "%%start_writefile out/prog"))
    assert "recorded for the run script" in stdout(ok(kc, SCOREP_ENV))
    assert "recorded for the run script" in stdout(ok(kc, BINDING_ARGS))
    assert stdout(ok(kc, PLAIN)) == "recorded (1)\n"
    assert stdout(ok(kc, SCOREP_CELL)) == "recorded (2), instrumented\n"
    for cell in BLOCK:
        ok(kc, cell)
    assert "%%end_writefile" in stdout(ok(kc, "%%jumper_help"))  # runs as usual, not recorded
    written = stdout(ok(kc, "%%end_writefile"))
    assert str(cwd / "out" / "prog.py") in written and str(cwd / "out" / "prog_run.sh") in written

    assert value(kc, "'recorded_flag' in globals() or 'total' in globals()") is False
    script = (cwd / "out" / "prog.py").read_text()
    runner = cwd / "out" / "prog_run.sh"
    assert not [
        line for line in script.splitlines() if line.lstrip().startswith(("%%", "%env", "!"))
    ]
    assert '%third line, in the string"""' in script.splitlines()
    assert runner.read_text().startswith("#!/usr/bin/env bash\n")
    assert runner.stat().st_mode & stat.S_IXUSR
    assert value(kc, "__import__('sys').executable") in runner.read_text()

    env = {**os.environ, "PATH": f"{scorep_bin()}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(
        ["bash", str(runner)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr

    in_notebook = notebook_output(ok(kc, PLAIN)) + notebook_output(ok(kc, SCOREP_CELL))
    for cell in BLOCK[:-1]:
        ok(kc, cell)
    in_notebook += notebook_output(ok(kc, BLOCK[-1]))
    assert "hello there" in in_notebook and "still in the block 5" in in_notebook
    assert done.stdout == in_notebook

    experiment = cwd / "out" / "script-experiment"
    assert not (experiment / "traces.otf2").exists()  # SCOREP_ENABLE_TRACING=false was exported
    regions = profile_regions(experiment)
    assert regions["__main__:measured_helper"][0] == 1  # called in an instrumented cell
    assert not [r for r in regions if r.endswith(":plain_helper")]  # only in a wrapped cell


def test_abort_drops_the_recording(kernel: tuple[BlockingKernelClient, Path]) -> None:
    kc, cwd = kernel
    ok(kc, "%%start_writefile")
    assert stdout(ok(kc, "aborted_flag = 1")) == "recorded (1)\n"
    assert "1 recorded cells dropped" in stdout(ok(kc, "%%abort_writefile"))
    assert value(kc, "'aborted_flag' in globals()") is False
    assert not (cwd / "jupyter_to_script.py").exists()
    assert stdout(ok(kc, "print('runs again')")) == "runs again\n"


def test_the_default_names(kernel: tuple[BlockingKernelClient, Path]) -> None:
    kc, cwd = kernel
    ok(kc, "%%start_writefile")
    ok(kc, "%matplotlib inline")
    ok(kc, "%%end_writefile")
    assert (
        "with scorep.instrumenter.disable():\n    pass\n"
        in (cwd / "jupyter_to_script.py").read_text()
    )
    assert (cwd / "jupyter_to_script_run.sh").is_file()


def test_misuse_is_a_clear_error_and_the_kernel_works_after(kc: BlockingKernelClient) -> None:
    error = failed(kc, "%%end_writefile")
    assert error["ename"] == "MagicError" and "%%start_writefile first" in error["evalue"]
    assert "Write mode is off" in failed(kc, "%%abort_writefile")["evalue"]
    assert "one file name" in failed(kc, "%%start_writefile a.py b.py")["evalue"]
    ok(kc, "%%start_writefile misuse.py")
    try:
        assert "already on" in failed(kc, "%%start_writefile")["evalue"]
        assert failed(kc, "broken = (")["ename"] == "SyntaxError"
        ok(kc, "%%enable_multicellmode")
        assert "already open" in failed(kc, "%%enable_multicellmode")["evalue"]
        assert "no cells" in failed(kc, "%%finalize_multicellmode")["evalue"]
        assert "block is open" in failed(kc, "%%end_writefile")["evalue"]
        assert "dropped (0 cells" in stdout(ok(kc, "%%abort_multicellmode"))
        assert "No multi-cell block" in failed(kc, "%%abort_multicellmode")["evalue"]
    finally:
        ok(kc, "%%abort_writefile")
    assert value(kc, "6 * 7") == 42


def test_write_mode_waits_for_multi_cell_mode(kc: BlockingKernelClient) -> None:
    ok(kc, "%%enable_multicellmode")
    assert "Multi-cell mode is on" in failed(kc, "%%start_writefile")["evalue"]
    ok(kc, "%%abort_multicellmode")
    ok(kc, "%%start_writefile")
    assert "recorded: the following cells" in stdout(ok(kc, "%%enable_multicellmode"))
    assert stdout(ok(kc, "x_in_block = 1")) == "recorded (1), instrumented\n"
    ok(kc, "%%abort_multicellmode")
    ok(kc, "%%abort_writefile")
    assert value(kc, "'x_in_block' in globals()") is False
