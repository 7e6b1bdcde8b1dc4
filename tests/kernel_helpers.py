"""Helpers for tests that talk to real kernels through jupyter_client."""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

import psutil
from jupyter_client.blocking import BlockingKernelClient
from jupyter_client.manager import KernelManager


def collect(kc: BlockingKernelClient, msg_id: str, timeout: float = 30) -> list[dict[str, Any]]:
    """IOPub messages whose parent is ``msg_id``, up to and including its idle status."""
    deadline = time.monotonic() + timeout
    out: list[dict[str, Any]] = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no idle for {msg_id}; got {[m['msg_type'] for m in out]}")
        msg = kc.get_iopub_msg(timeout=remaining)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        out.append(msg)
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return out


def shell_reply(kc: BlockingKernelClient, msg_id: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        msg = kc.get_shell_msg(timeout=max(0.01, deadline - time.monotonic()))
        if msg["parent_header"].get("msg_id") == msg_id:
            return msg


def run(
    kc: BlockingKernelClient, code: str, timeout: float = 30, **kw: Any
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Execute ``code``; its execute_reply and its IOPub messages."""
    msg_id = kc.execute(code, **kw)
    reply = shell_reply(kc, msg_id, timeout)
    return reply, collect(kc, msg_id, timeout)


def ok(kc: BlockingKernelClient, code: str, timeout: float = 60) -> list[dict[str, Any]]:
    """Execute ``code``, which must succeed; its IOPub messages."""
    reply, msgs = run(kc, code, timeout=timeout)
    assert reply["content"]["status"] == "ok", (reply["content"], [m["content"] for m in msgs])
    return msgs


def value(kc: BlockingKernelClient, expression: str) -> Any:
    """The value of ``expression`` in the kernel, through JSON."""
    return json.loads(stdout(ok(kc, f"import json as _json\nprint(_json.dumps({expression}))")))


def stdout(messages: list[dict[str, Any]]) -> str:
    return "".join(
        m["content"]["text"]
        for m in messages
        if m["msg_type"] == "stream" and m["content"]["name"] == "stdout"
    )


def proxy_process(km: KernelManager) -> psutil.Process:
    return psutil.Process(km.provisioner.process.pid)


def upstream_processes(km: KernelManager) -> list[psutil.Process]:
    return proxy_process(km).children(recursive=True)


def wait_gone(pids: list[int], timeout: float = 15) -> list[int]:
    """Wait until none of ``pids`` runs; the ones still alive at the deadline."""
    procs = []
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            procs.append(psutil.Process(pid))
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    return [p.pid for p in alive if p.status() != psutil.STATUS_ZOMBIE]
