"""The proxy's own cell magics, one module per family: ``monitoring``, ``scorep``,
``multicell``, ``writefile``; ``registry`` puts them in one table.

A handler is ``async def handler(ctx: MagicContext, args: str, body: str) -> None``
(:mod:`jumper_proxy.api`). It never sends protocol messages itself: it writes outputs through
``ctx.out`` (stream text, display data) and raises :class:`~jumper_proxy.errors.MagicError` for
misuse. The scheduler wraps all of it in busy / ``execute_input`` / outputs / ``execute_reply``
/ idle.
"""
