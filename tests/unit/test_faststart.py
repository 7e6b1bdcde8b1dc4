"""The fast start of Score-P children (the bindings' init library prepared once per
configuration) and the clear lines made of what Score-P reports: the pure parts here, and the
preparation with the real bindings (``real_scorep`` tests)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import scorep_bin

from jumper_proxy.child import notes, workspace
from jumper_proxy.child.faststart import InitCache, Prepared, second_stage, split_binding_args
from jumper_proxy.child.launcher import probe_bindings


def test_binding_arguments_are_sorted_as_the_bindings_sort_them() -> None:
    args = split_binding_args(["--mpp=mpi", "--instrumenter-type=cProfile", "--thread=pthread"])
    assert args.config == ("--mpp=mpi", "--thread=pthread") and args.instrument and args.fast
    assert split_binding_args(["--noinstrumenter"]).instrument is False
    assert split_binding_args(["--nopython", "--mpp=none"]).config == ("--mpp=none",)
    for first_stage in (["--verbose"], ["-v"], ["--keep-files"], ["--io=posix"], ["--mpi"]):
        assert split_binding_args(first_stage).fast is False, first_stage
    assert split_binding_args(["script.py"]).fast is False


def test_the_second_stage_environment() -> None:
    prepared = Prepared("/sp/lib/libscorep_measurement.so libscorep_init_subsystem-3.11.so", "/c")
    env = second_stage(
        {"LD_LIBRARY_PATH": "/usr/lib", "SCOREP_PYTHON_BINDINGS_TEMP_DIR": "/t", "A": "b"},
        prepared,
    )
    assert env == {
        "A": "b",
        "LD_LIBRARY_PATH": "/c:/usr/lib",
        "LD_PRELOAD": prepared.preload,
        "SCOREP_LD_PRELOAD_BACKUP": "",
        "SCOREP_PYTHON_BINDINGS_INITIALISED": "true",
    }
    assert second_stage({}, prepared)["LD_LIBRARY_PATH"] == "/c"
    assert not prepared.usable()  # the library is not there


def test_score_p_warnings_are_folded_into_one_note() -> None:
    seen: list[tuple[str, str]] = []
    output = notes.ScorepOutput(lambda name, text: seen.append((name, text)))
    output("stdout", "[Score-P] printed by the user\n")
    output("stderr", "user line\n[Sco")
    output("stderr", "re-P] Trace buffer flush on rank 0.\n[Score-P] Increase SCOREP_TOTAL_")
    output("stderr", "MEMORY and try again.\n[Score-P] Trace buffer flush on rank 0.\npartial")
    output("stderr", "[Score-P] something else\n")
    output.close()
    shown = "".join(text for name, text in seen if name == "stderr")
    assert shown == "user line\npartial[Score-P] something else\n"
    assert seen[0] == ("stdout", "[Score-P] printed by the user\n")
    (note,) = output.notes({"SCOREP_TOTAL_MEMORY": "3M"})
    assert "flushed to disk 2 times" in note and "(now 3M)" in note


def test_a_held_start_of_line_is_passed_on_at_the_end() -> None:
    seen: list[str] = []
    output = notes.ScorepOutput(lambda name, text: seen.append(text))
    output("stderr", "[Score")
    assert seen == []
    output.close()
    assert seen == ["[Score"] and output.notes({}) == []


@pytest.mark.parametrize(
    ("stderr", "expected"),
    [
        ("Please increase SCOREP_TOTAL_MEMORY=499712 and try", "SCOREP_TOTAL_MEMORY=499712 bytes"),
        ('Experiment directory "/w/e" exists and overwriting is disabled.', "/w/e exists"),
        ("/usr/bin/ld: cannot find -lunwind: No such file", "apt-get install libunwind-dev"),
        ("/usr/bin/ld: cannot find -lcuda: No such", "the library cuda is missing"),
        ("The Score-P Subsystem Library at /t/x.so cannot be executed.", "at /t/x.so but cannot"),
        ("ValueError: given config ['--thread=x', '--user'] is not supported", "--thread=x"),
        ("No usable temporary directory found in ['/a', '/tmp']", "point TMPDIR"),
        (
            "Error: Inconsistent profile. Stop profiling: Exit event for other than current "
            "region occurred at location 0",
            "--thread=pthread",
        ),
        ("Traceback: something nobody knows\n", None),
    ],
)
def test_known_failures_are_explained(stderr: str, expected: str | None) -> None:
    output = notes.ScorepOutput(lambda name, text: None)
    output("stderr", stderr)
    explained = output.explain()
    if expected is None:
        assert explained is None
    else:
        assert explained is not None and expected in explained and "\n" not in explained


def test_an_existing_experiment_directory(tmp_path: Path) -> None:
    env = {"SCOREP_EXPERIMENT_DIRECTORY": "exp"}
    assert notes.refusal(tmp_path, env) is None and notes.experiments_before(tmp_path, env) is None
    (tmp_path / "exp").mkdir()
    assert notes.refusal(tmp_path, env) is None  # Score-P overwrites by default
    refused = notes.refusal(tmp_path, {**env, "SCOREP_OVERWRITE_EXPERIMENT_DIRECTORY": "FALSE"})
    assert refused is not None and str(tmp_path / "exp") in refused
    before = notes.experiments_before(tmp_path, env)
    (tmp_path / "exp-20261201_1200_1").mkdir()
    moved = notes.moved_experiment(tmp_path, env, before)
    assert moved is not None and str(tmp_path / "exp-20261201_1200_1") in moved


@pytest.fixture
def scorep_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return {**os.environ, "PATH": f"{scorep_bin()}{os.pathsep}{os.environ['PATH']}"}


@pytest.mark.real_scorep
def test_the_init_library_is_prepared_once_and_runs_a_second_stage(
    scorep_env: dict[str, str], tmp_path: Path
) -> None:
    cache = InitCache()
    program = tmp_path / "program.py"
    program.write_text("import os\nprint(os.environ.get('LD_PRELOAD', 'reset'))\n")

    async def main() -> tuple[dict[str, str] | None, dict[str, str] | None]:
        found = await probe_bindings(sys.executable, scorep_env, tmp_path)
        args = split_binding_args([])
        first = await cache.second_stage_env(
            found.key(), args, sys.executable, scorep_env, tmp_path
        )
        again = await cache.second_stage_env(
            found.key(), args, sys.executable, scorep_env, tmp_path
        )
        return first, again

    first, again = asyncio.run(main())
    assert first is not None and first == again, cache.failure
    lib_dir = Path(first["LD_LIBRARY_PATH"].split(":")[0])
    assert (
        lib_dir.is_relative_to(workspace.root())
        and "libscorep_init_subsystem" in first["LD_PRELOAD"]
    )
    done = subprocess.run(
        [sys.executable, "-m", "scorep", str(program)],
        env={**first, "SCOREP_EXPERIMENT_DIRECTORY": str(tmp_path / "exp")},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "reset\n"  # the second stage restored LD_PRELOAD for the program
    assert (tmp_path / "exp" / "profile.cubex").is_file() and lib_dir.is_dir()
    cache.clear()
    assert not lib_dir.exists()


@pytest.mark.real_scorep
def test_a_configuration_scorep_config_rejects_falls_back(
    scorep_env: dict[str, str], tmp_path: Path
) -> None:
    cache = InitCache()

    async def main() -> dict[str, str] | None:
        found = await probe_bindings(sys.executable, scorep_env, tmp_path)
        args = split_binding_args(["--thread=nonsense"])
        return await cache.second_stage_env(found.key(), args, sys.executable, scorep_env, tmp_path)

    assert asyncio.run(main()) is None
    assert cache.failure is not None and "--thread=nonsense" in cache.failure
