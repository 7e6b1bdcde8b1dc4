"""The child command, its environment, its run (streaming, interrupt, cancel) and finding the
experiment directory, with plain Python children (no Score-P needed)."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from jumper_proxy.child.launcher import (
    ChildResult,
    build_child_command,
    build_child_env,
    find_experiment_dir,
    probe_bindings,
    run_child,
)
from jumper_proxy.errors import ChildError

ROOT = Path(__file__).resolve().parent.parent.parent
FAKE_SCOREP = ROOT / "tests" / "fake_scorep"


class Output:
    """Collects ``on_output`` chunks with the time each arrived."""

    def __init__(self) -> None:
        self.chunks: list[tuple[float, str, str]] = []

    def __call__(self, name: str, text: str) -> None:
        self.chunks.append((time.monotonic(), name, text))

    def text(self, name: str) -> str:
        return "".join(text for _, stream, text in self.chunks if stream == name)

    def first(self, needle: str) -> float:
        return next(t for t, _, text in self.chunks if needle in text)


def python_child(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


def run(
    cmd: list[str],
    cwd: Path,
    interrupt: asyncio.Event | None = None,
    **kwargs: float,
) -> tuple[ChildResult, Output]:
    output = Output()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    async def main() -> ChildResult:
        return await run_child(cmd, env, cwd, output, interrupt or asyncio.Event(), **kwargs)

    return asyncio.run(main()), output


def test_command_is_built_in_one_place() -> None:
    runner = Path("/tmp/x/runner.py")
    assert build_child_command("/env/bin/python", ["--mpp=none"], runner, script_args=["j"]) == [
        "/env/bin/python",
        "-m",
        "scorep",
        "--noinstrumenter",
        "--mpp=none",
        "/tmp/x/runner.py",
        "j",
    ]
    prefixed = build_child_command("py", [], runner, launcher_prefix=["mpirun", "-np", "4"])
    assert prefixed == [
        *("mpirun", "-np", "4", "py", "-m", "scorep", "--noinstrumenter", "/tmp/x/runner.py")
    ]


def test_environment_drops_preload_and_adds_scorep_settings() -> None:
    kernel = {
        "PATH": "/bin",
        "LD_PRELOAD": "libscorep.so",
        "SCOREP_PYTHON_BINDINGS_INITIALISED": "true",
        "SCOREP_PYTHON_BINDINGS_TEMP_DIR": "/tmp/scorep.abc",
        "SCOREP_LD_PRELOAD_BACKUP": "",
        "SCOREP_TOTAL_MEMORY": "1G",
    }
    env = build_child_env(kernel, {"SCOREP_ENABLE_TRACING": "true", "SCOREP_TOTAL_MEMORY": "2G"})
    assert env == {
        "PATH": "/bin",
        "SCOREP_ENABLE_TRACING": "true",
        "SCOREP_TOTAL_MEMORY": "2G",
        "PYTHONUNBUFFERED": "1",
    }
    assert "LD_PRELOAD" in kernel  # the kernel's mapping is left alone


def test_output_arrives_while_the_child_runs(tmp_path: Path) -> None:
    child = python_child(
        """
        import sys, time
        print("early", end="", flush=True)
        sys.stderr.write("warn\\n")
        time.sleep(0.8)
        print(" late")
        """
    )
    result, output = run(child, tmp_path)
    ended = time.monotonic()
    assert result.returncode == 0 and not result.interrupted
    assert output.text("stdout") == "early late\n" and output.text("stderr") == "warn\n"
    # the chunk without a newline came before the child's sleep ended
    assert ended - output.first("early") > 0.5


def test_interrupt_sends_sigint_to_the_group(tmp_path: Path) -> None:
    child = python_child(
        """
        import subprocess, sys, time
        grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        try:
            sys.stdout.write(f"{grandchild.pid}\\n")
            time.sleep(60)
        except KeyboardInterrupt:
            print("interrupted", flush=True)
            sys.exit(5)
        """
    )
    interrupt = asyncio.Event()
    output = Output()

    def on_output(name: str, text: str) -> None:
        output(name, text)
        if "\n" in output.text("stdout"):
            interrupt.set()

    async def main() -> ChildResult:
        return await run_child(child, dict(os.environ), tmp_path, on_output, interrupt)

    started = time.monotonic()
    result = asyncio.run(main())
    assert time.monotonic() - started < 10
    assert result.interrupted and result.returncode == 5
    assert "interrupted" in output.text("stdout")
    grandchild = int(output.text("stdout").split()[0])
    assert _gone(grandchild)  # it got the SIGINT too


def _gone(pid: int) -> bool:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize(
    ("ignored", "expected"),
    [(["SIGINT"], -signal.SIGTERM), (["SIGINT", "SIGTERM"], -signal.SIGKILL)],
)
def test_interrupt_escalates(tmp_path: Path, ignored: list[str], expected: int) -> None:
    child = python_child(
        f"""
        import signal, time
        for name in {ignored!r}:
            signal.signal(getattr(signal, name), signal.SIG_IGN)
        print("ready", flush=True)
        time.sleep(60)
        """
    )
    interrupt = asyncio.Event()

    def on_output(name: str, text: str) -> None:
        interrupt.set()

    async def main() -> ChildResult:
        return await run_child(
            child,
            dict(os.environ),
            tmp_path,
            on_output,
            interrupt,
            interrupt_grace=0.3,
            terminate_grace=0.3,
        )

    result = asyncio.run(main())
    assert result.interrupted and result.returncode == expected
    assert result.describe().endswith(f"killed by {signal.Signals(-expected).name}.")


def test_cancelling_kills_the_child(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    child = python_child(
        f"""
        import os, time
        open({str(pid_file)!r}, "w").write(str(os.getpid()))
        time.sleep(60)
        """
    )

    async def main() -> None:
        task = asyncio.ensure_future(
            run_child(child, dict(os.environ), tmp_path, Output(), asyncio.Event())
        )
        while not pid_file.exists() or not pid_file.read_text():
            await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert _gone(int(pid_file.read_text()))


def test_leftover_process_holding_the_output_is_killed(tmp_path: Path) -> None:
    child = python_child(
        """
        import subprocess, sys
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        print("bye", flush=True)
        """
    )
    started = time.monotonic()
    result, output = run(child, tmp_path)
    assert result.returncode == 0 and output.text("stdout") == "bye\n"
    assert time.monotonic() - started < 5


def test_started_pid_is_reported(tmp_path: Path) -> None:
    pids: list[int] = []

    async def main() -> ChildResult:
        return await run_child(
            python_child("import os; print(os.getpid())"),
            dict(os.environ),
            tmp_path,
            output,
            asyncio.Event(),
            on_started=pids.append,
        )

    output = Output()
    asyncio.run(main())
    assert pids == [int(output.text("stdout"))]


def test_missing_interpreter_is_a_child_error(tmp_path: Path) -> None:
    with pytest.raises(ChildError, match="Cannot start the Score-P child"):
        run([str(tmp_path / "no-python"), "-m", "scorep"], tmp_path)


def test_probe_finds_the_bindings_and_scorep_config(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if not (Path(p) / "scorep-config").exists()
    )
    fake_bin = FAKE_SCOREP / "bin"
    with_fake = {**env, "PYTHONPATH": str(FAKE_SCOREP), "PATH": f"{fake_bin}:{env['PATH']}"}
    (tmp_path / "scorep").mkdir()  # a stray directory must not count as the bindings
    found = asyncio.run(probe_bindings(sys.executable, with_fake, tmp_path))
    init = (FAKE_SCOREP / "scorep" / "__init__.py").resolve()
    assert found.bindings is not None and found.bindings.startswith(f"{init}:")
    assert found.scorep_config is not None
    assert found.scorep_config.startswith(str((fake_bin / "scorep-config").resolve()))
    assert found.python.startswith(os.path.realpath(sys.executable))
    missing = asyncio.run(probe_bindings(sys.executable, {**env, "PYTHONPATH": ""}, tmp_path))
    if importlib.util.find_spec("scorep") is None:  # this environment has no real bindings
        assert missing.bindings is None
    assert missing.scorep_config is None


def test_a_probe_that_does_not_answer_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jumper_proxy.child import launcher

    hung = tmp_path / "python"
    hung.write_text("#!/bin/sh\nexec sleep 60\n")
    hung.chmod(0o755)
    monkeypatch.setattr(launcher, "PROBE_TIMEOUT", 0.3)
    with pytest.raises(ChildError, match="did not say within 0 s"):
        asyncio.run(probe_bindings(str(hung), dict(os.environ), tmp_path))


def test_the_child_dies_with_the_process_that_started_it(tmp_path: Path) -> None:
    """SIGKILL of the starting process (the proxy) ends the child at once: no orphan."""
    pid_file = tmp_path / "pid"
    starter = python_child(
        f"""
        import asyncio, os, sys
        from pathlib import Path
        from jumper_proxy.child.launcher import run_child
        child = [sys.executable, "-c",
                 "import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); "
                 "time.sleep(60)"]
        asyncio.run(run_child(child, dict(os.environ), Path({str(tmp_path)!r}),
                              lambda name, text: None, asyncio.Event()))
        """
    )
    proc = subprocess.Popen(starter, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.monotonic() + 30
        while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
            time.sleep(0.02)
        child = int(pid_file.read_text())
        os.kill(child, 0)  # running
        proc.kill()
        proc.wait()
        assert _gone(child)
    finally:
        proc.kill()
        proc.wait()


def test_experiment_dir_from_the_environment(tmp_path: Path) -> None:
    (tmp_path / "exp").mkdir()
    env = {"SCOREP_EXPERIMENT_DIRECTORY": "exp"}
    assert find_experiment_dir(tmp_path, env, time.time()) == tmp_path / "exp"
    absolute = {"SCOREP_EXPERIMENT_DIRECTORY": str(tmp_path / "exp")}
    assert find_experiment_dir(Path("/"), absolute, time.time()) == tmp_path / "exp"
    assert find_experiment_dir(tmp_path, {"SCOREP_EXPERIMENT_DIRECTORY": "none"}, 0) is None


def test_experiment_dir_is_the_newest_of_this_run(tmp_path: Path) -> None:
    old = tmp_path / "scorep-20200101_0000_1"
    old.mkdir()
    os.utime(old, (1_000_000, 1_000_000))
    started_at = time.time() - 1
    assert find_experiment_dir(tmp_path, {}, started_at) is None  # never waits for one
    first = tmp_path / "scorep-20990101_0000_1"
    second = tmp_path / "scorep-20990101_0000_2"
    (tmp_path / "scorep-file").write_text("")
    for path, when in ((first, started_at + 0.2), (second, started_at + 0.5)):
        path.mkdir()
        os.utime(path, (when, when))
    assert find_experiment_dir(tmp_path, {}, started_at) == second
