"""The script a Score-P child runs: ``python -m scorep --noinstrumenter <binding args> runner.py
-`` with the job (JSON) on its stdin, which the proxy writes once the kernel has exported its
state: the child starts meanwhile (``runner.py JOB.json`` reads the job from a file).

It loads the notebook's state into a fresh ``__main__`` namespace, runs the cells' code there,
and writes the changed state and a result file back. The bindings start with the Python
instrumenter off (``--noinstrumenter``): it is switched on around each cell's code only, so the
measurement holds the user's code and nothing of the loading, saving and wrapping. Each cell's
code object is named after the cell (``cell [7]``), so the cell is one region (``__main__:cell
[7]``) with the user's functions inside. When the user asked for no Python instrumentation
(``--noinstrumenter`` or ``--nopython`` in the binding arguments), each cell is a user region
(``user:cell [7]``) and only what the user instruments shows.

Self-contained: it runs in the upstream kernel's environment, which may not have jumper_proxy.
The handover logic comes from a private copy of the package written next to this file (the job
names it). The result file (written atomically, also when a cell fails) is the child's answer;
the exit code is 0 on success and 1 when a cell or the handover failed.
"""

import sys

try:
    import scorep.instrumenter as _instrumenter
    from scorep.instrumenter import disable as _disable
except ImportError:  # run without the bindings (by hand, for a look at the handover)
    from contextlib import nullcontext as _disable

    _instrumenter = None


class _Run:
    """One run: the job, the namespace, the compiled cells, and the answer once there is one."""

    def __init__(self, job_path):
        import json
        import os
        import types

        if job_path == "-":
            self.job = json.loads(sys.stdin.buffer.read() or b"null")
        else:
            with open(job_path, encoding="utf-8") as f:
                self.job = json.load(f)
        if not isinstance(self.job, dict):
            sys.exit(1)  # the proxy gave up on this cell before it sent the job
        self.runner_dir = os.path.dirname(os.path.abspath(__file__))
        self.instrument = self.job.get("instrument", True) and _instrumenter is not None
        self.module = types.ModuleType("__main__")
        self.namespace = self.module.__dict__
        self.result = None
        self.cells = []
        self.timings = {}

    def load(self):
        """Install the namespace as ``__main__``, load the kernel's state into it, compile."""
        import importlib
        import time

        _restore_tmpdir(self.job.get("tmpdir"))
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
        for cell in self.job["cells"]:
            try:
                with open(cell["file"], encoding="utf-8") as f:
                    code = compile(f.read(), cell["file"], "exec")
            except BaseException as exc:
                self.result = _error(exc, cell["file"], None)
                self.cells = []
                return
            self.cells.append((_named(code, cell["region"]), cell))

    def failed(self, exc, cell_file):
        self.result = _error(exc, cell_file, None)

    def finish(self):
        """Save the cells' state (after successful cells) and write the result; exit code."""
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


def _named(code, region):
    """``code`` as a code object called ``region``: its frame is the cell's region."""
    names = {"co_name": region}
    if hasattr(code, "co_qualname"):
        names["co_qualname"] = region
    return code.replace(**names)


def _restore_tmpdir(value):
    """The bindings built their files in the proxy's directory; the cell gets the user's
    ``TMPDIR`` back."""
    import os

    if value is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = value
    if "tempfile" in sys.modules:
        sys.modules["tempfile"].tempdir = None


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


# Nothing below runs in a function of this script: with the instrumenter on, the only frames
# Score-P sees are the cells' own.
if __name__ == "__main__":
    with _disable():
        _run = _Run(sys.argv[1])
        _run.load()
    for _code, _cell in _run.cells:
        if _cell.get("header"):
            print(_cell["header"], flush=True)
        try:
            if _run.instrument:
                _instrumenter.register()
                try:
                    exec(_code, _run.namespace)
                finally:
                    _instrumenter.unregister()
            elif _instrumenter is not None:
                _instrumenter.get_instrumenter().region_begin(
                    "user", _cell["region"], _cell["file"], 1
                )
                try:
                    exec(_code, _run.namespace)
                finally:
                    _instrumenter.get_instrumenter().region_end("user", _cell["region"])
            else:
                exec(_code, _run.namespace)
        except BaseException as _exc:
            _run.failed(_exc, _cell["file"])
            del _exc
            break
    with _disable():
        sys.exit(_run.finish())
