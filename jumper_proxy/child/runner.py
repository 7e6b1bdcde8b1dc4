"""The script a Score-P child runs: ``python -m scorep <binding args> runner.py JOB.json``.

It loads the notebook's state into a fresh ``__main__`` namespace, runs the cell's code there
(instrumented), and writes the changed state and a result file back. Everything but the cell's
code runs inside ``scorep.instrumenter.disable()``, and the cell's code is executed from this
script's top level, so the measurement holds the user's code only.

Self-contained: it runs in the upstream kernel's environment, which may not have jumper_proxy.
The handover logic comes from a private copy of the package written next to this file (the job
names it). The result file (written atomically, also when the cell fails) is the child's answer;
the exit code is 0 on success and 1 when the cell or the handover failed.
"""

import sys

try:
    from scorep.instrumenter import disable as _disable
except ImportError:  # run without the bindings (by hand, for a look at the handover)
    from contextlib import nullcontext as _disable


class _Run:
    """One cell's run: the job, the namespace, and the answer once there is one."""

    def __init__(self, job_path):
        import json
        import os
        import types

        with open(job_path, encoding="utf-8") as f:
            self.job = json.load(f)
        self.runner_dir = os.path.dirname(os.path.abspath(job_path))
        self.cell_file = self.job["cell_file"]
        self.module = types.ModuleType("__main__")
        self.namespace = self.module.__dict__
        self.result = None
        self.code = None
        self.timings = {}

    def load(self):
        """Install the namespace as ``__main__``, load the kernel's state into it, compile."""
        import importlib
        import time

        sys.modules["__main__"] = self.module
        try:
            started = time.perf_counter()
            sys.path.insert(0, self.runner_dir)
            self.handover = importlib.import_module(self.job["package"] + ".handover")
            self.loaded = self.handover.child_load(
                self.namespace, self.job["input"], self.runner_dir, _warn
            )
            self.timings["child_load"] = time.perf_counter() - started
        except BaseException as exc:  # also KeyboardInterrupt: the proxy must get an answer
            self.result = _error(exc, None, "loading the notebook's state")
            return
        try:
            with open(self.cell_file, encoding="utf-8") as f:
                self.code = compile(f.read(), self.cell_file, "exec")
        except BaseException as exc:
            self.result = _error(exc, self.cell_file, None)

    def failed(self, exc):
        self.result = _error(exc, self.cell_file, None)

    def finish(self):
        """Save the cell's state (after a successful cell) and write the result; exit code."""
        import time

        if self.result is None:
            try:
                started = time.perf_counter()
                manifest = self.handover.child_dump(
                    self.namespace, self.loaded, self.job["output"], _warn
                )
                self.timings["child_dump"] = time.perf_counter() - started
                self.result = {
                    "status": "ok",
                    "manifest": manifest,
                    "timings": self.timings,
                    "warnings": _warnings,
                }
            except BaseException as exc:
                self.result = _error(exc, None, "saving the cell's state")
        _write_result(self.job["result_file"], self.result)
        return 0 if self.result["status"] == "ok" else 1


_warnings = []


def _warn(line):
    """A warning line: on stderr now (in order with the cell's output), in the result too."""
    _warnings.append(line)
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def _error(exc, cell_file, doing):
    """The error part of the result: the traceback from the cell's first frame on (the runner's
    own frames are not the user's business), or the whole one for a handover failure."""
    import traceback

    tb = exc.__traceback__
    if cell_file is not None:
        while tb is not None and tb.tb_frame.f_code.co_filename != cell_file:
            tb = tb.tb_next
    lines = traceback.format_exception(type(exc), exc, tb)
    evalue = str(exc)
    if doing is not None:
        evalue = f"while {doing}: {evalue}" if evalue else f"while {doing}"
    return {
        "status": "error",
        "ename": type(exc).__name__,
        "evalue": evalue,
        "traceback": [line.rstrip("\n") for line in lines],
        "handover": doing is not None,
    }


def _write_result(path, result):
    import json
    import os

    partial = path + ".partial"
    with open(partial, "w", encoding="utf-8") as f:
        json.dump(result, f)
    os.replace(partial, path)


if __name__ == "__main__":
    with _disable():
        _run = _Run(sys.argv[1])
        _run.load()
    if _run.code is not None:
        try:
            exec(_run.code, _run.namespace)
        except BaseException as _exc:
            _run.failed(_exc)
            del _exc
    with _disable():
        sys.exit(_run.finish())
