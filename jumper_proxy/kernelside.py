"""Every piece of code the proxy runs inside an IPython kernel, as named functions.

Each function returns ``(code, expressions)`` for ``run_hidden``: the code runs silently in the
user's namespace, and each expression's value comes back as a Python literal. The code defines
no names in the user's namespace (it runs in a namespace of its own through ``exec``), so
nothing the proxy does shows up in ``dir()``. The Score-P handover's kernel-side code is built
from the handover package's source text in :mod:`jumper_proxy.child.session`.
"""

from __future__ import annotations

from collections.abc import Sequence

Snippet = tuple[str, dict[str, str]]


def _isolated(program: str, name: str) -> str:
    """``program`` run by ``exec`` in a fresh namespace, the user's untouched."""
    return f"__import__('builtins').exec({program!r}, {{'__name__': {name!r}}})"


def next_execution_count() -> Snippet:
    """Take the kernel's next execution count (as a magic cell does in IPython); the expression
    ``n`` is the count after the increment."""
    return "get_ipython().execution_count += 1", {"n": "get_ipython().execution_count"}


def environment(names: Sequence[str]) -> Snippet:
    """The current values of environment variables ``names`` (``None`` when unset)."""
    return "", {name: f"__import__('os').environ.get({name!r})" for name in names}


def working_directory() -> Snippet:
    """The kernel's working directory as ``cwd``."""
    return "", {"cwd": "__import__('os').getcwd()"}


def interpreter() -> Snippet:
    """The kernel's Python (``sys.executable``) as ``python``."""
    return "", {"python": "__import__('sys').executable"}


def compile_check(code: str) -> Snippet:
    """Compile ``code`` with the kernel's own Python (whose version decides what is valid); the
    expression raises the SyntaxError if it is not."""
    compile_ = "__import__('builtins').compile"
    expression = f"{compile_}({code!r}, '<cell>', 'exec', dont_inherit=True) and None"
    return "", {"compiled": expression}


_WRITE_FILES = """\
import os
for path, text, mode in {files!r}:
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    if mode is not None:
        os.chmod(path, mode)
"""


def write_files(files: Sequence[tuple[str, str, int | None]]) -> Snippet:
    """Write each ``(path, text, mode)`` relative to the kernel's working directory (folders
    made as needed, ``mode`` applied unless ``None``); ``paths`` are their absolute paths."""
    listed = [tuple(f) for f in files]
    code = _isolated(_WRITE_FILES.format(files=listed), "_jumper_write_files")
    where = f"[__import__('os').path.abspath(p) for p in {[f[0] for f in listed]!r}]"
    return code, {"paths": where}


_DEFINE_PERFDATA = """\
import json
records = json.loads({text!r})
try:
    import pandas
except ImportError:
    pandas = None
if pandas is not None:
    for record in records:
        record["samples"] = pandas.DataFrame(record["samples"])
get_ipython().user_ns[{name!r}] = records
"""


def define_perfdata(name: str, records_json: str) -> Snippet:
    """Define ``name`` in the user's namespace: the records of ``records_json`` (a JSON list),
    each record's ``samples`` a pandas DataFrame where pandas is importable."""
    program = _DEFINE_PERFDATA.format(text=records_json, name=name)
    return _isolated(program, "_jumper_perfdata"), {}


__all__ = [
    "Snippet",
    "compile_check",
    "define_perfdata",
    "environment",
    "interpreter",
    "next_execution_count",
    "working_directory",
    "write_files",
]
