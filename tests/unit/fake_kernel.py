"""A FAKE upstream kernel for the Score-P cell tests: a separate Python process without IPython.

It keeps a user namespace as ``sys.modules['__main__'].__dict__`` (as IPython does), seeded with
IPython's bookkeeping names (``In``, ``Out``, ``_i1``, ``get_ipython``, its ``open``, ...) and
listing them in ``get_ipython().user_ns_hidden``, and answers two
requests over its stdin/stdout: run code (visibly, for a test's setup, or hidden, as the proxy's
``run_hidden`` does: each expression comes back as ``ast.literal_eval(repr(value))``, an error as
:class:`HiddenExecutionError`). The test runs it with a ``jumper_proxy`` that cannot be imported
first on ``PYTHONPATH``: whatever the proxy ships must be self-contained.
"""

from __future__ import annotations

import ast
import asyncio
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: seeded into the namespace like IPython's own names; none of them may travel
IPYTHON_NAMES = {
    "In": ["", "x = 1"],
    "Out": {},
    "_oh": {},
    "_ih": ["", "x = 1"],
    "_dh": ["/"],
    "_": "",
    "__": "",
    "___": "",
    "_i": "x = 1",
    "_ii": "",
    "_iii": "",
    "_i1": "x = 1",
    "_1": 1,
}


class FakeKernel:
    """The test's side: start the process, run code in it, stop it."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.pid = proc.pid

    @classmethod
    async def start(cls, cwd: Path, env: Mapping[str, str]) -> FakeKernel:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=str(cwd),
            env=dict(env),
            limit=1 << 26,
        )
        return cls(proc)

    async def _request(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(request).encode() + b"\n")
        await self.proc.stdin.drain()
        line = await self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the fake kernel died")
        reply: dict[str, Any] = json.loads(line)
        if reply["status"] != "ok":
            from jumper_proxy.errors import HiddenExecutionError  # not in the kernel process

            raise HiddenExecutionError(reply["ename"], reply["evalue"], reply["traceback"])
        return reply

    async def run_hidden(self, code: str, expressions: dict[str, str]) -> dict[str, Any]:
        reply = await self._request({"code": code, "expressions": expressions})
        return {name: ast.literal_eval(text) for name, text in reply["values"].items()}

    async def run(self, code: str) -> None:
        """Run a "visible" cell (for a test's setup); raises if it raises."""
        await self._request({"code": code, "expressions": {}})

    async def eval(self, expression: str) -> Any:
        """The value of ``expression`` in the user's namespace, as a literal."""
        return (await self.run_hidden("", {"value": expression}))["value"]

    async def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        await self.proc.wait()


def _serve() -> None:
    """The fake kernel process: one JSON request per line on stdin, one reply per line."""
    import traceback
    import types

    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # the user's prints go to stderr, not into the replies
    main = types.ModuleType("__main__")
    sys.modules["__main__"] = main
    namespace = main.__dict__
    namespace.update(IPYTHON_NAMES)

    def _modified_open(*args: Any, **kwargs: Any) -> Any:  # IPython wraps open() like this
        return open(*args, **kwargs)

    shell = types.SimpleNamespace(user_ns_hidden={})
    namespace.update(get_ipython=lambda: shell, exit=sys.exit, quit=sys.exit, open=_modified_open)
    shell.user_ns_hidden.update(namespace)
    for line in sys.stdin:
        request = json.loads(line)
        try:
            exec(compile(request["code"], "<cell>", "exec"), namespace)
            values = {
                name: repr(eval(expression, namespace))
                for name, expression in request["expressions"].items()
            }
            reply: dict[str, Any] = {"status": "ok", "values": values}
        except Exception as exc:
            reply = {
                "status": "error",
                "ename": type(exc).__name__,
                "evalue": str(exc),
                "traceback": traceback.format_exception(type(exc), exc, exc.__traceback__),
            }
        replies.write(json.dumps(reply) + "\n")
        replies.flush()


if __name__ == "__main__":
    _serve()
