"""Whole Score-P cells, fast: a FAKE kernel process (no IPython, no jumper_proxy importable) and
the FAKE ``scorep`` bindings of ``tests/fake_scorep``; state round trips, failures leave the
kernel as it was, output streams, interrupts and crashes stop the child, and nothing is left in
/dev/shm or in temporary dirs. The same paths with real Score-P are in ``tests/e2e``."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from fake_kernel import FakeKernel

from jumper_proxy.child import (
    CellCode,
    HandoverSettings,
    InitCache,
    ScorepCellResult,
    run_scorep_cell,
    transport,
)
from jumper_proxy.errors import (
    ChildFailed,
    ChildInterrupted,
    HandoverError,
    HiddenExecutionError,
    ScorepNotFound,
)

T = TypeVar("T")
FAKE_SCOREP = Path(__file__).resolve().parent.parent / "fake_scorep"
COMBINATIONS = [
    pytest.param(HandoverSettings(marshaller, mode), id=f"{marshaller}-{mode}")
    for marshaller in ("dill", "cloudpickle")
    for mode in ("memory", "disk")
]

NOTEBOOK = """
import numpy as np
import os.path as osp
N = 10
def f():
    return N * 2
class Foo:
    class Inner:
        pass
    def __init__(self):
        self.v = 1
obj = Foo()
data = {"list": [1, 2, 3]}
arr = np.arange(300_000)
gone = "delete me"
"""

#: the kernel's state, as literals, to compare before and after a cell
STATE = (
    "[sorted(k for k in globals() if not k.startswith('__')), N, f(), obj.v, data, "
    "int(arr.sum()), isinstance(obj, Foo), osp.__name__, np.__name__, In, _i1]"
)


@dataclass
class Scene:
    """A fake kernel in ``work`` and everything a test needs to run Score-P cells in it."""

    work: Path
    env: dict[str, str]
    proxy_tmp: Path
    persist: Path
    prefixes: list[str]
    chunks: list[tuple[float, str, str]] = field(default_factory=list)
    _kernel: FakeKernel | None = None

    @property
    def kernel(self) -> FakeKernel:
        assert self._kernel is not None, "only inside play()"
        return self._kernel

    def play(self, work: Awaitable[T]) -> T:
        """Run ``work`` with the notebook's kernel started (and stopped after) in one loop."""

        async def main() -> T:
            self._kernel = await FakeKernel.start(self.work, self.env)
            try:
                await self.kernel.run(NOTEBOOK)
                return await work
            finally:
                await self.kernel.close()

        return asyncio.run(main())

    def output(self, name: str) -> str:
        return "".join(text for _, stream, text in self.chunks if stream == name)

    def on_output(self, name: str, text: str) -> None:
        self.chunks.append((time.monotonic(), name, text))

    async def cell(
        self,
        code: str | list[CellCode],
        settings: HandoverSettings | None = None,
        interrupt: asyncio.Event | None = None,
        run_hidden: Callable[[str, dict[str, str]], Awaitable[dict[str, Any]]] | None = None,
        **kwargs: Any,
    ) -> ScorepCellResult:
        return await run_scorep_cell(
            textwrap.dedent(code) if isinstance(code, str) else code,
            settings or HandoverSettings(),
            run_hidden or self.kernel.run_hidden,
            self.on_output,
            interrupt or asyncio.Event(),
            **kwargs,
        )

    def leftovers(self) -> list[str]:
        """Segments of this test's cells, and anything in the proxy's or disk mode's temp dirs
        but the proxy's own Score-P directory (kept for its life), which must be empty."""
        shm = [n for n in os.listdir(transport.SHM_DIR) if n.startswith(tuple(self.prefixes))]
        own = f"jumper-scorep-{os.getpid()}-"
        kept = [p for p in self.proxy_tmp.iterdir() if p.name.startswith(own)]
        inside = [p for root in kept for p in root.iterdir()]
        others = [p for p in self.proxy_tmp.iterdir() if p not in kept]
        return shm + [str(p) for p in (*others, *inside, *self.persist.iterdir())]


@pytest.fixture
def scene(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Scene:
    shadow = tmp_path / "shadow" / "jumper_proxy"  # jumper_proxy is not in the kernel's env
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('no jumper_proxy here')\n")
    work, proxy_tmp, persist = tmp_path / "work", tmp_path / "proxy-tmp", tmp_path / "persist"
    for path in (work, proxy_tmp, persist):
        path.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(proxy_tmp))
    prefixes: list[str] = []
    new_prefix = transport.new_shm_prefix

    def recorded_prefix(owner: int) -> str:
        prefixes.append(new_prefix(owner))
        return prefixes[-1]

    monkeypatch.setattr(transport, "new_shm_prefix", recorded_prefix)
    env = dict(os.environ)
    env.update(
        PATH=f"{FAKE_SCOREP / 'bin'}{os.pathsep}{env.get('PATH', os.defpath)}",
        PYTHONPATH=f"{shadow.parent}{os.pathsep}{FAKE_SCOREP}",
        SCOREP_KERNEL_PERSISTENCE_DIR=str(persist),
        LD_PRELOAD="",
        SCOREP_PYTHON_BINDINGS_INITIALISED="true",
    )
    return Scene(work, env, proxy_tmp, persist, prefixes)


@pytest.mark.parametrize("settings", COMBINATIONS)
def test_state_round_trip(scene: Scene, settings: HandoverSettings) -> None:
    async def main() -> tuple[ScorepCellResult, Any]:
        assert await scene.kernel.eval("'jumper_proxy' in __import__('sys').modules") is False
        result = await scene.cell(
            """
            # the child has the notebook's state, without IPython's names
            assert not {"In", "_i1", "_1", "open", "get_ipython"} & set(globals())
            assert isinstance(obj, Foo) and osp.join("a", "b") == "a/b" and arr[2] == 2
            N = 20                      # functions see the live namespace
            print(f())
            obj.v = 2                   # a changed instance of the kernel's class
            new = Foo()                 # a new one
            inner = Foo.Inner()
            data["list"].append(4)
            arr[0] = 100
            del gone
            import json as js
            def g(x):
                return x + N
            class Bar(Foo):
                pass
            bar = Bar()
            """,
            settings,
        )
        checks = await scene.kernel.eval(
            "[N, f(), obj.v, isinstance(obj, Foo), isinstance(new, Foo), "
            "isinstance(inner, Foo.Inner), data, int(arr[0]), 'gone' in globals(), "
            "js.__name__, g(1), isinstance(bar, Bar) and isinstance(bar, Foo), In, _i1]"
        )
        return result, checks

    result, checks = scene.play(main())
    assert scene.output("stdout").startswith("40\n")
    assert checks == [
        20, 40, 2, True, True, True, {"list": [1, 2, 3, 4]}, 100, False,
        "json", 21, True, ["", "x = 1"], "x = 1",
    ]  # fmt: skip
    assert result.deleted == ["gone"]
    assert set(result.updated) == {
        "N",
        "obj",
        "new",
        "inner",
        "data",
        "arr",
        "js",
        "g",
        "Bar",
        "bar",
    }
    assert scene.leftovers() == []


@pytest.mark.parametrize("settings", COMBINATIONS)
def test_failing_cell_leaves_the_kernel_untouched(scene: Scene, settings: HandoverSettings) -> None:
    async def main() -> tuple[Any, Any, ChildFailed]:
        before = await scene.kernel.eval(STATE)
        with pytest.raises(ChildFailed) as failure:
            await scene.cell(
                """
                N = 99
                obj.v = 5
                del gone
                data["list"].clear()
                def broken():
                    return 1 / 0
                broken()
                """,
                settings,
            )
        return before, await scene.kernel.eval(STATE), failure.value

    before, after, error = scene.play(main())
    assert after == before
    assert error.ename == "ZeroDivisionError" and error.evalue == "division by zero"
    text = "\n".join(error.traceback)
    assert "return 1 / 0" in text and "broken()" in text  # the user's lines
    assert "runner.py" not in text and "handover" not in text  # not the runner's
    assert error.experiment_dir is not None and error.experiment_dir.parent == scene.work
    assert scene.leftovers() == []


def test_syntax_error_is_reported_as_such(scene: Scene) -> None:
    with pytest.raises(ChildFailed) as failure:
        scene.play(scene.cell("x = (1,\n"))
    assert failure.value.ename == "SyntaxError"
    assert scene.leftovers() == []


@pytest.mark.parametrize("marshaller", ["dill", "cloudpickle"])
def test_unserializable_objects_are_named_once_and_kept(scene: Scene, marshaller: str) -> None:
    async def main() -> tuple[ScorepCellResult, Any]:
        await scene.kernel.run(
            "import threading\ngen = (i for i in range(3))\nlock = threading.Lock()"
        )
        result = await scene.cell(
            "assert 'gen' not in globals()\nlater = (i for i in range(2))\nx = 1",
            HandoverSettings(marshaller, "memory"),
        )
        return result, await scene.kernel.eval("[next(gen), x, 'later' in globals()]")

    result, kept = scene.play(main())
    assert kept == [0, 1, False]
    warnings = [line for line in scene.output("stderr").splitlines() if "Warning" in line]
    assert result.warnings == warnings
    skipped_in = "gen, lock" if marshaller == "cloudpickle" else "gen"  # dill can pickle locks
    assert len(warnings) == 2
    assert f"cannot serialize {skipped_in};" in warnings[0] and "Score-P cell" in warnings[0]
    assert "cannot serialize later;" in warnings[1] and "not carried back" in warnings[1]
    assert scene.leftovers() == []


def test_output_streams_before_the_child_ends(scene: Scene) -> None:
    scene.play(
        scene.cell("import time\nprint('early', flush=True)\ntime.sleep(0.8)\nprint('late')")
    )
    early = next(t for t, _, text in scene.chunks if "early" in text)
    late = next(t for t, _, text in scene.chunks if "1" in text)
    assert late - early > 0.6


@pytest.mark.parametrize("settings", COMBINATIONS[:2])
def test_interrupt_stops_the_child(scene: Scene, settings: HandoverSettings) -> None:
    interrupt = asyncio.Event()

    def on_output(name: str, text: str) -> None:
        scene.chunks.append((time.monotonic(), name, text))
        if "started" in text:
            interrupt.set()

    scene.on_output = on_output  # type: ignore[method-assign]

    async def main() -> tuple[Any, Any]:
        before = await scene.kernel.eval(STATE)
        with pytest.raises(ChildInterrupted) as stopped:
            await scene.cell(
                "N = 5\nimport time\nprint('started', flush=True)\ntime.sleep(60)",
                settings,
                interrupt,
            )
        assert "KeyboardInterrupt" in "\n".join(stopped.value.traceback)
        return before, await scene.kernel.eval(STATE)

    started = time.monotonic()
    before, after = scene.play(main())
    assert time.monotonic() - started < 10
    assert after == before
    assert scene.leftovers() == []


def test_interrupt_before_the_child_starts(scene: Scene) -> None:
    interrupt = asyncio.Event()
    interrupt.set()
    with pytest.raises(ChildInterrupted):
        scene.play(scene.cell("print('never')", interrupt=interrupt))
    assert "never" not in scene.output("stdout")
    assert scene.leftovers() == []


@pytest.mark.parametrize("settings", COMBINATIONS)
@pytest.mark.parametrize("sig", [signal.SIGSEGV, signal.SIGKILL])
def test_child_killed_by_a_signal(
    scene: Scene, settings: HandoverSettings, sig: signal.Signals
) -> None:
    async def main() -> tuple[Any, Any, ChildFailed]:
        before = await scene.kernel.eval(STATE)
        with pytest.raises(ChildFailed) as crash:
            await scene.cell(
                f"""
                import os, resource
                resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
                N = 7
                os.kill(os.getpid(), {int(sig)})
                """,
                settings,
            )
        return before, await scene.kernel.eval(STATE), crash.value

    before, after, crash = scene.play(main())
    assert after == before
    assert crash.returncode == -sig and f"killed by {sig.name}" in str(crash)
    assert scene.leftovers() == []


def test_child_killed_after_saving_is_not_imported(scene: Scene) -> None:
    """The child wrote its state (segments and result), then died: none of it is used."""

    async def main() -> tuple[Any, Any]:
        before = await scene.kernel.eval(STATE)
        with pytest.raises(ChildFailed, match="SIGKILL"):
            await scene.cell(
                "import atexit, os, signal\nN = 3\n"
                "atexit.register(os.kill, os.getpid(), signal.SIGKILL)"
            )
        return before, await scene.kernel.eval(STATE)

    before, after = scene.play(main())
    assert after == before
    assert scene.leftovers() == []


def test_failed_import_leaves_the_kernel_untouched(scene: Scene) -> None:
    async def failing_import(code: str, expressions: dict[str, str]) -> dict[str, Any]:
        if "import" in _request(code)["action"]:
            raise HiddenExecutionError("MemoryError", "")
        return await scene.kernel.run_hidden(code, expressions)

    async def main() -> tuple[Any, Any]:
        before = await scene.kernel.eval(STATE)
        with pytest.raises(HandoverError, match="unchanged"):
            await scene.cell("N = 3", run_hidden=failing_import)
        return before, await scene.kernel.eval(STATE)

    before, after = scene.play(main())
    assert after == before
    assert scene.leftovers() == []  # the child's segments too


def _request(code: str) -> dict[str, Any]:
    """The handover request inside hidden code (to fail one kind in a test)."""
    import base64
    import re

    encoded = re.search(r"b64decode\('([^']+)'\)", code)
    assert encoded is not None
    program = base64.b64decode(encoded.group(1)).decode()
    return json.loads(re.findall(r"'(\{\"action\".*?\})'\)", program)[-1])  # type: ignore[no-any-return]


def test_binding_arguments_and_environment_reach_the_child(scene: Scene) -> None:
    args = ["--instrumenter-type=cProfile", "--mpp=none", "--noinstrumenter"]
    env = {"SCOREP_ENABLE_TRACING": "true", "SCOREP_EXPERIMENT_DIRECTORY": "my-exp"}
    result = scene.play(scene.cell("x = 1", binding_args=args, scorep_env=env))

    experiment = scene.work / "my-exp"
    assert result.experiment_dir == experiment
    assert f"Score-P experiment directory: {experiment}" in scene.output("stdout")
    record = json.loads((experiment / "fake_scorep.json").read_text())
    assert record["options"] == ["--noinstrumenter", *args]
    assert record["program"][0].endswith("runner.py") and len(record["program"]) == 2
    assert record["cwd"] == str(scene.work)
    assert record["scorep_env"]["SCOREP_ENABLE_TRACING"] == "true"
    assert record["scorep_env"]["SCOREP_KERNEL_PERSISTENCE_DIR"] == str(scene.persist)
    assert "SCOREP_PYTHON_BINDINGS_INITIALISED" not in record["scorep_env"]
    assert record["ld_preload_set"] is False and record["unbuffered"] == "1"


def test_only_the_cells_code_is_instrumented(scene: Scene) -> None:
    code = "def work():\n    return sum(range(10))\nwork()\nobj.v = 3"
    result = scene.play(scene.cell([CellCode(code, "cell [5]")]))
    assert result.experiment_dir is not None and result.experiment_dir.name.startswith("scorep-")
    regions = json.loads((result.experiment_dir / "fake_scorep_regions.json").read_text())
    assert "__main__:cell [5]" in regions and "__main__:work" in regions
    # nothing of the runner, the handover or the bindings' start
    assert [r for r in regions if r.startswith("__main__:")] == [
        "__main__:cell [5]",
        "__main__:work",
    ]
    assert not [r for r in regions if r.startswith("/") and not r.endswith(("cell [5]", ":work"))]


def test_without_python_instrumentation_each_cell_is_a_user_region(scene: Scene) -> None:
    cells = [CellCode("def a():\n    pass\na()", "cell [3]", "--- cell 1 of 2 ---")]
    cells.append(CellCode("print('second', 6 * 7)", "cell [4]", "--- cell 2 of 2 ---"))
    result = scene.play(scene.cell(cells, binding_args=["--noinstrumenter"]))
    assert result.experiment_dir is not None
    regions = json.loads((result.experiment_dir / "fake_scorep_regions.json").read_text())
    assert regions == ["user:cell [3]", "user:cell [4]"]
    assert scene.output("stdout").startswith(
        "--- cell 1 of 2 ---\n--- cell 2 of 2 ---\nsecond 42\n"
    )


def test_missing_scorep_says_how_to_install(scene: Scene, no_scorep_python: str) -> None:
    async def main() -> tuple[Any, Any]:
        before = await scene.kernel.eval(STATE)
        with pytest.raises(ScorepNotFound) as missing:
            await scene.cell(
                "x = 1", python=no_scorep_python, scorep_env={"PYTHONPATH": os.devnull}
            )
        assert "pip install scorep" in str(missing.value) and "\n" not in str(missing.value)
        return before, await scene.kernel.eval(STATE)

    before, after = scene.play(main())
    assert after == before
    assert scene.leftovers() == []


def test_missing_scorep_config_is_the_module_load_case(scene: Scene) -> None:
    without = os.pathsep.join(
        p for p in scene.env["PATH"].split(os.pathsep) if not (Path(p) / "scorep-config").exists()
    )
    with pytest.raises(ScorepNotFound) as missing:
        scene.play(scene.cell("x = 1", scorep_env={"PATH": without}))
    message = str(missing.value)
    assert "scorep-config is not on the kernel's PATH" in message and "module load" in message
    assert "\n" not in message
    assert scene.leftovers() == []


def test_the_fake_bindings_start_as_the_bindings_start(scene: Scene) -> None:
    """The FAKE bindings cannot prepare an init library: the cell falls back to their start."""
    cache = InitCache()
    result = scene.play(scene.cell("x = 1", init_cache=cache))
    assert result.fast_start is False and cache.failure is not None
    assert "scorep.subsystem" in cache.failure
    assert scene.leftovers() == [] or all("init-" in p for p in scene.leftovers())
    cache.clear()
    assert scene.leftovers() == []


def test_working_directory_and_sys_path_follow_the_kernel(scene: Scene) -> None:
    (scene.work / "lib").mkdir()
    (scene.work / "lib" / "helper_mod.py").write_text("VALUE = 42\n")
    (scene.work / "sub").mkdir()

    async def main() -> Any:
        await scene.kernel.run("import sys\nsys.path.append('lib')\nimport helper_mod as hm")
        await scene.cell(
            """
            import os, sys
            assert hm.VALUE == 42 and os.getcwd().endswith("work")
            os.chdir("sub")
            sys.path.append("extra")
            """
        )
        return await scene.kernel.eval("[os.getcwd(), sys.path[-2:], hm.VALUE]")

    cwd, path, value = scene.play(main())
    assert cwd == str(scene.work / "sub") and path == ["lib", "extra"] and value == 42


def test_large_array_round_trip(scene: Scene) -> None:
    async def main() -> Any:
        await scene.kernel.run("big = np.ones(8 << 20)")  # 64 MiB
        result = await scene.cell("big[::2] = 2.0")
        assert "big" in result.updated
        return await scene.kernel.eval("[float(big.sum()), big.flags.owndata]")

    total, owndata = scene.play(main())
    assert total == 3 * (4 << 20)
    assert owndata is False  # zero-copy: the kernel maps the child's segment
    assert scene.leftovers() == []


def test_unwritable_persistence_dir_is_a_handover_error(scene: Scene) -> None:
    blocked = scene.work / "blocked"
    blocked.write_text("a file, not a directory")
    settings = HandoverSettings("dill", "disk", persistence_dir=str(blocked))
    with pytest.raises(HandoverError, match="Cannot prepare the Score-P cell"):
        scene.play(scene.cell("x = 1", settings))
    assert scene.leftovers() == []


def test_leftovers_of_a_dead_proxy_are_removed_and_others_kept(tmp_path: Path) -> None:
    from jumper_proxy.child.session import remove_stale_segments

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    shm, tmp = tmp_path / "shm", tmp_path / "tmp"
    shm.mkdir()
    tmp.mkdir()
    stale = shm / transport.new_shm_prefix(dead.pid)
    mine = shm / transport.new_shm_prefix(os.getpid())
    other = shm / "unrelated"
    for path in (stale, mine, other):
        path.write_bytes(b"x")
    stale_dirs = [tmp / f"jumper-scorep-{dead.pid}-ab12", tmp / f"jumper-handover-{dead.pid}-cd"]
    kept_dirs = [tmp / f"jumper-scorep-{os.getpid()}-ef34", tmp / "jumper-scorep-init-x"]
    for path in (*stale_dirs, *kept_dirs):
        (path / "cell-1").mkdir(parents=True)
    removed = remove_stale_segments(str(shm), str(tmp))
    assert sorted(removed) == sorted([stale.name, *(p.name for p in stale_dirs)])
    assert sorted(p.name for p in shm.iterdir()) == sorted([mine.name, other.name])
    assert sorted(tmp.iterdir()) == sorted(kept_dirs)
