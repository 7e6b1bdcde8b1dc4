"""The code the proxy runs in the upstream kernel for a Score-P cell, and the runner's files.

The kernel-side code is built from the source text of :mod:`.transport`, :mod:`.pickling` and
:mod:`.handover`, installed in the kernel as a private package (named after a hash of that
text) and called there; the child gets the same text as files next to the runner. The upstream
environment needs neither jumper_proxy nor anything but the chosen marshaller.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Awaitable, Callable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from jumper_proxy.errors import HandoverError, HiddenExecutionError

#: ``await run_hidden(code, expressions)``: run ``code`` silently in the user's namespace and
#: return each expression's value as a literal; raises HiddenExecutionError when code raises
RunHidden = Callable[[str, dict[str, str]], Awaitable[dict[str, Any]]]

_HERE = Path(__file__).resolve().parent
#: the modules of the private package, in import order
_BUNDLE = ("transport", "pickling", "handover")

_BOOTSTRAP = """\
import linecache, sys, types

def _install(package, sources):
    if package + ".handover" in sys.modules:
        return
    root = types.ModuleType(package)
    root.__path__ = []
    root.__package__ = package
    sys.modules[package] = root
    try:
        for name, source in sources:
            full = package + "." + name
            filename = "<" + full + ">"
            linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
            module = types.ModuleType(full)
            module.__package__ = package
            module.__file__ = filename
            sys.modules[full] = module
            exec(compile(source, filename, "exec"), module.__dict__)
            setattr(root, name, module)
    except BaseException:
        for key in [package] + [package + "." + name for name, _ in sources]:
            sys.modules.pop(key, None)
        raise

_install({package!r}, {sources!r})
sys.modules[{package!r} + ".handover"].kernel_request(sys._getframe(1).f_globals, {request!r})
"""


@lru_cache(maxsize=1)
def bundle() -> tuple[str, list[tuple[str, str]]]:
    """The private package's name and its ``(module, source)`` pairs."""
    sources = [(name, (_HERE / f"{name}.py").read_text(encoding="utf-8")) for name in _BUNDLE]
    digest = hashlib.sha256("\0".join(text for _, text in sources).encode()).hexdigest()
    return f"_jumper_proxy_child_{digest[:12]}", sources


def kernel_code(request: Mapping[str, Any]) -> tuple[str, dict[str, str]]:
    """The hidden code and expressions that run one handover ``request`` in the kernel.

    The code is one line (base64) so that no IPython input transformation can touch it; it
    defines no names in the user's namespace. The expression ``result`` is the JSON answer.
    """
    package, sources = bundle()
    program = _BOOTSTRAP.format(package=package, sources=sources, request=json.dumps(request))
    encoded = base64.b64encode(program.encode()).decode("ascii")
    code = (
        "__import__('builtins').exec(__import__('builtins').compile("
        f"__import__('base64').b64decode('{encoded}'), '<jumper-proxy>', 'exec'), "
        "{'__name__': '_jumper_proxy_hidden'})"
    )
    expression = f"__import__('sys').modules[{package + '.handover'!r}].take_result()"
    return code, {"result": expression}


async def in_kernel(run_hidden: RunHidden, request: Mapping[str, Any], doing: str) -> Any:
    code, expressions = kernel_code(request)
    try:
        values = await run_hidden(code, expressions)
    except HiddenExecutionError as exc:
        hint = ""
        if "No space left on device" in exc.evalue:
            hint = (
                " (memory mode: /dev/shm is full, choose MODE=disk with %%marshalling_settings;"
                " disk mode: point SCOREP_KERNEL_PERSISTENCE_DIR at a larger file system)"
            )
        raise HandoverError(
            f"Failed while {doing}: {exc.ename}: {exc.evalue}{hint}. "
            "The kernel's state is unchanged."
        ) from exc
    return json.loads(values["result"])
