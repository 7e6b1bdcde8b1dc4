"""FAKE ``python -m scorep [options] script [args]`` (see the package docstring).

Options are the arguments before the first one that does not start with ``-`` (or after
``--``); they are recorded, not interpreted, except ``--noinstrumenter``/``--nopython`` which
start the program with the fake instrumentation off. The program runs as ``__main__`` with
``sys.argv`` set to ``[script, *args]`` and ``sys.path[0]`` to the script's directory.
"""

import json
import os
import runpy
import sys
import time

from scorep import instrumenter


def _split(argv):
    for index, arg in enumerate(argv):
        if arg == "--":
            return argv[:index], argv[index + 1 :]
        if not arg.startswith("-"):
            return argv[:index], argv[index:]
    return argv, []


def _experiment_dir():
    configured = os.environ.get("SCOREP_EXPERIMENT_DIRECTORY")
    if configured:
        os.makedirs(configured, exist_ok=True)
        return os.path.abspath(configured)
    stamp = time.strftime("%Y%m%d_%H%M")
    while True:
        path = os.path.abspath(f"scorep-{stamp}_{time.time_ns() % 10**9:09d}")
        try:
            os.mkdir(path)
        except FileExistsError:
            continue
        return path


def _write_json(path, data):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)


def main():
    options, program = _split(sys.argv[1:])
    if not program:
        sys.stderr.write("scorep: Did not find a script to run\n")
        sys.exit(1)
    experiment = _experiment_dir()
    _write_json(
        os.path.join(experiment, "fake_scorep.json"),
        {
            "options": options,
            "program": program,
            "cwd": os.getcwd(),
            "pid": os.getpid(),
            "scorep_env": {k: v for k, v in os.environ.items() if k.startswith("SCOREP_")},
            "ld_preload_set": "LD_PRELOAD" in os.environ,
            "unbuffered": os.environ.get("PYTHONUNBUFFERED"),
        },
    )
    # like the real bindings after their re-exec
    os.environ["SCOREP_PYTHON_BINDINGS_INITIALISED"] = "true"
    sys.argv = list(program)
    sys.path[0] = os.path.dirname(os.path.abspath(program[0]))
    if "--noinstrumenter" not in options and "--nopython" not in options:
        instrumenter.register()
    try:
        runpy.run_path(program[0], run_name="__main__")
    finally:
        instrumenter.unregister()
        _write_json(os.path.join(experiment, "fake_scorep_regions.json"), instrumenter.regions())


if __name__ == "__main__":
    main()
