"""The notebook's namespace serialized into a transport store, and loaded back.

One copy of the logic serves both ends of a Score-P cell:

* the upstream kernel runs :func:`kernel_request` (``probe``, ``export``, ``import``) through
  hidden code that ships this module's source text, and reads the answer with
  :func:`take_result`;
* the Score-P child's runner imports a copy of this file and calls :func:`child_load` before the
  cell and :func:`child_dump` after it.

What travels: every name of the namespace except IPython's own (``In``, ``Out``, ``_i3``, ...,
and what IPython lists in ``user_ns_hidden``, such as its ``open``) and dunder names. Modules
travel as their import name (re-imported, alias kept). Everything else goes into one pickle
(protocol 5, dill or cloudpickle), so that objects shared between names stay shared; numpy arrays
and large ``bytes`` travel out-of-band, as separate buffers. Objects the marshaller cannot
serialize are left out and named in one warning line.

Three adjustments keep the notebook's semantics across the round trip:

* functions defined in the notebook keep the *live* namespace as their globals (not a copy), so
  a cell that rebinds ``N`` changes what ``f()`` sees, as in the kernel;
* notebook functions and classes that came from the kernel and were not rebound travel back as
  references to the kernel's objects: ``isinstance(obj, Foo)`` keeps working in the kernel, and
  attribute changes made to those classes inside the cell are not carried back;
* the kernel applies nothing until everything is loaded: a failed import leaves it untouched.

Only the standard library, the chosen marshaller and the sibling modules :mod:`.pickling` and
:mod:`.transport` are used: the upstream environment may not have jumper_proxy installed.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import re
import sys
import types
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any

from . import pickling, transport

_IPYTHON_NAMES = frozenset(
    [
        "In",
        "Out",
        "get_ipython",
        "exit",
        "quit",
        "_",
        "__",
        "___",
        "_i",
        "_ii",
        "_iii",
        "_oh",
        "_ih",
        "_dh",
        "_sh",
        "_exit_code",
    ]
)
_IPYTHON_NUMBERED = re.compile(r"_i?\d+")
_ATOMS = (type(None), bool, int, float, complex, str, bytes, range, type(Ellipsis))

#: the JSON answer of the last kernel request, taken by the proxy's expression
_RESULT: list[str] = []


def is_internal(name: str) -> bool:
    """True for names that never travel: IPython's bookkeeping and dunder names."""
    return (
        name in _IPYTHON_NAMES
        or (name.startswith("__") and name.endswith("__"))
        or _IPYTHON_NUMBERED.fullmatch(name) is not None
    )


# --- the kernel's side --------------------------------------------------------------------------


def kernel_request(namespace: dict[str, Any], request_json: str) -> None:
    """Run one request of the proxy in the kernel; its JSON answer waits in :func:`take_result`."""
    del _RESULT[:]
    request = json.loads(request_json)
    handlers: dict[str, Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]] = {
        "probe": _probe,
        "export": _export,
        "import": _import,
    }
    _RESULT.append(json.dumps(handlers[request["action"]](namespace, request)))


def take_result() -> str:
    """The answer of the last :func:`kernel_request` (once), as a JSON string."""
    return _RESULT.pop() if _RESULT else "null"


def _probe(namespace: dict[str, Any], request: dict[str, Any]) -> dict[str, Any]:
    return {
        "python": sys.executable,
        "cwd": os.getcwd(),
        "env": dict(os.environ),
        "marshallers": [m for m in pickling.MARSHALLERS if importlib.util.find_spec(m) is not None],
    }


def _export(namespace: dict[str, Any], request: dict[str, Any]) -> dict[str, Any]:
    hidden = _ipython_hidden(namespace)
    names = [
        name
        for name, value in list(namespace.items())
        if not is_internal(name) and not (name in hidden and hidden[name] is value)
    ]
    modules = {n: namespace[n].__name__ for n in names if _is_module(namespace[n])}
    values = {n: namespace[n] for n in names if n not in modules}
    store = transport.Store(request["mode"], request["where"])
    with pickling.as_main_module(namespace):
        data, skipped = pickling.dump(values, request["marshaller"], namespace, {}, store, "i")
    return {
        "data": data,
        "modules": modules,
        "skipped": skipped,
        "warnings": [skipped_warning(skipped, request["marshaller"], "in")] if skipped else [],
        "cwd": os.getcwd(),
        "sys_path": list(sys.path),
    }


def _ipython_hidden(namespace: dict[str, Any]) -> dict[str, Any]:
    """The names IPython put into the namespace itself (``open``, ``In``, ...), with the
    objects it put there: a user who rebinds one of them gets it carried."""
    get_ipython = namespace.get("get_ipython")
    try:
        hidden = getattr(get_ipython(), "user_ns_hidden", None) if callable(get_ipython) else None
    except Exception:  # not IPython's get_ipython after all
        return {}
    return hidden if isinstance(hidden, dict) else {}


def _import(namespace: dict[str, Any], request: dict[str, Any]) -> dict[str, Any]:
    manifest = request["manifest"]
    modules, warnings = import_modules(manifest["modules"])
    # segments are mapped; files are read (a long-lived mapping would pin a removed file)
    zero_copy = manifest["data"]["mode"] == transport.MEMORY
    values = pickling.load(manifest["data"], namespace, zero_copy=zero_copy)
    # Everything is loaded: from here on nothing can fail half-way.
    namespace.update(modules)
    namespace.update(values)
    deleted = [name for name in manifest["deleted"] if name in namespace]
    for name in deleted:
        del namespace[name]
    if manifest["sys_path"] != sys.path:
        sys.path[:] = manifest["sys_path"]
    if manifest["cwd"] != os.getcwd():
        try:
            os.chdir(manifest["cwd"])
        except OSError as exc:
            warnings.append(f"Warning: could not change to the cell's directory: {exc}")
    return {"updated": sorted([*modules, *values]), "deleted": deleted, "warnings": warnings}


# --- the child's side ---------------------------------------------------------------------------


class Loaded:
    """What the child loaded: each name's object (to tell what the cell changed), the
    ``sys.path`` entries the child had that the kernel has not (not reported back), and the
    blobs mapped zero-copy (reused for arrays that are still there)."""

    def __init__(
        self, values: dict[str, Any], extra_path: list[str], mapped: pickling.Mapped
    ) -> None:
        self.values = values
        self.extra_path = extra_path
        self.mapped = mapped


def child_load(
    namespace: dict[str, Any],
    manifest: dict[str, Any],
    runner_dir: str,
    warn: Callable[[str], None],
) -> Loaded:
    """Make ``namespace`` the kernel's: working directory, ``sys.path``, modules, values."""
    try:
        os.chdir(manifest["cwd"])
    except OSError as exc:
        warn(f"Warning: could not change to the kernel's directory: {exc}")
    kernel_path = manifest["sys_path"]
    extra = [p for p in sys.path if p not in kernel_path and p != runner_dir]
    sys.path[:] = [*kernel_path, *extra]
    modules, warnings = import_modules(manifest["modules"])
    for line in warnings:
        warn(line)
    mapped: pickling.Mapped = {}
    values = pickling.load(manifest["data"], namespace, zero_copy=True, mapped=mapped)
    namespace.update(modules)
    namespace.update(values)
    return Loaded({**modules, **values}, extra, mapped)


def child_dump(
    namespace: dict[str, Any], loaded: Loaded, request: dict[str, Any], warn: Callable[[str], None]
) -> dict[str, Any]:
    """Serialize what the cell created, changed or deleted into a new store; the manifest."""
    modules: dict[str, str] = {}
    values: dict[str, Any] = {}
    for name in [n for n in list(namespace) if not is_internal(n)]:
        value = namespace[name]
        if name in loaded.values and loaded.values[name] is value and _keeps_identity(value):
            continue
        if _is_module(value):
            modules[name] = value.__name__
        else:
            values[name] = value
    deleted = [name for name in loaded.values if name not in namespace]
    store = transport.Store(request["mode"], request["where"])
    with pickling.as_main_module(namespace):
        references = reference_paths(loaded.values)
        data, skipped = pickling.dump(
            values, request["marshaller"], namespace, references, store, "o", loaded.mapped
        )
    if skipped:
        warn(skipped_warning(skipped, request["marshaller"], "out"))
    return {
        "data": data,
        "modules": modules,
        "deleted": deleted,
        "skipped": skipped,
        "cwd": os.getcwd(),
        "sys_path": [p for p in sys.path if p not in loaded.extra_path],
    }


def reference_paths(values: dict[str, Any]) -> dict[int, tuple[str, ...]]:
    """Notebook functions and classes (also nested classes) by ``id``, each with the path under
    which the kernel holds the same object."""
    paths: dict[int, tuple[str, ...]] = {}

    def visit(obj: Any, path: tuple[str, ...]) -> None:
        paths[id(obj)] = path
        if isinstance(obj, type):
            for attr, member in list(vars(obj).items()):
                if isinstance(member, type) and member.__qualname__ == f"{obj.__qualname__}.{attr}":
                    visit(member, (*path, attr))

    for name, value in values.items():
        is_code = isinstance(value, (type, types.FunctionType))
        if is_code and getattr(value, "__module__", None) == "__main__":
            visit(value, (name,))
    return paths


def skipped_warning(names: list[str], marshaller: str, direction: str) -> str:
    """The one warning line naming the objects that could not travel."""
    listed = ", ".join(names)
    if direction == "in":
        return (
            f"Warning: {marshaller} cannot serialize {listed}; not available in the Score-P cell "
            "(unchanged in the kernel)."
        )
    return f"Warning: {marshaller} cannot serialize {listed}; not carried back to the kernel."


def import_modules(modules: dict[str, str]) -> tuple[dict[str, Any], list[str]]:
    """Import each module by name for its alias; the warning lines for those that failed."""
    imported: dict[str, Any] = {}
    failed: list[str] = []
    for alias, name in modules.items():
        try:
            imported[alias] = importlib.import_module(name)
        except Exception as exc:  # any error of a module's import code
            failed.append(f"{name} as {alias} ({type(exc).__name__}: {exc})")
    warnings = [f"Warning: could not re-import {', '.join(failed)}."] if failed else []
    return imported, warnings


def _is_module(value: Any) -> bool:
    return isinstance(value, types.ModuleType) and isinstance(getattr(value, "__name__", None), str)


def _keeps_identity(value: Any, depth: int = 0) -> bool:
    """True when an object the cell did not rebind cannot have changed (or changes to it are
    not carried back: modules, functions, classes)."""
    if isinstance(value, _ATOMS) or _is_module(value):
        return True
    if isinstance(value, (type, types.FunctionType, types.BuiltinFunctionType)):
        return True
    if type(value) in (tuple, frozenset) and depth < 3:
        return all(_keeps_identity(item, depth + 1) for item in value)
    return False
