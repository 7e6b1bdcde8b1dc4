"""The wire layer: splitting frames, the checks before the proxy acts on a message, the
signature history, and the builders of the proxy's own messages."""

from __future__ import annotations

import json
from typing import Any

import pytest
from jupyter_client.session import DELIM, Session

from jumper_proxy import wire
from jumper_proxy.errors import WireError

KEY = b"a-key"


def frames(session: Session, msg_type: str = "execute_request", **content: Any) -> list[bytes]:
    msg = session.msg(msg_type, content or {"code": "1"})
    return [bytes(f) for f in session.serialize(msg, ident=[b"client"])]


def resign(session: Session, parts: list[bytes]) -> list[bytes]:
    """``parts`` (routing, delimiter, signature, header, parent, metadata, content) signed again."""
    i = parts.index(DELIM)
    parts[i + 1] = session.sign(parts[i + 2 : i + 6])
    return parts


def test_split_keeps_every_frame_and_decodes_the_headers() -> None:
    session = Session(key=KEY)
    raw = [*frames(session), b"buffer"]
    msg = wire.split(raw)
    assert msg.idents == [b"client"]
    assert msg.msg_type == "execute_request"
    assert msg.to_wire() == raw  # forwarded as it came, signature and buffer included


@pytest.mark.parametrize(
    "raw",
    [
        [b"client", b"no delimiter"],
        [b"client", DELIM, b"sig", b"{}"],
        [DELIM, b"", b"[]", b"{}", b"{}", b"{}"],
    ],
)
def test_split_refuses_what_is_not_a_message(raw: list[bytes]) -> None:
    with pytest.raises(WireError):
        wire.split(raw)


def test_a_valid_message_passes_once_and_its_replay_is_refused() -> None:
    session = Session(key=KEY)
    verifier = wire.Verifier(session)
    raw = frames(session)
    verifier.check(wire.split(raw))
    with pytest.raises(WireError, match="replayed"):
        verifier.check(wire.split(raw))


def test_a_bad_signature_is_refused_and_not_remembered() -> None:
    session = Session(key=KEY)
    verifier = wire.Verifier(session)
    raw = frames(Session(key=b"another key"))
    with pytest.raises(WireError, match="invalid signature"):
        verifier.check(wire.split(raw))
    assert len(verifier.history) == 0


@pytest.mark.parametrize(
    ("part", "value", "why"),
    [
        (3, b"[" * 10_000 + b"]" * 10_000, "metadata"),  # RecursionError in json
        (3, b"\x00garbage", "metadata"),
        (4, b"[1, 2]", "content"),
    ],
)
def test_what_the_kernel_would_refuse_is_refused(part: int, value: bytes, why: str) -> None:
    session = Session(key=KEY)
    raw = frames(session)
    raw[raw.index(DELIM) + 1 + part] = value
    with pytest.raises(WireError, match=why):
        wire.Verifier(session).check(wire.split(resign(session, raw)))


def test_a_header_without_msg_id_is_refused() -> None:
    session = Session(key=KEY)
    raw = frames(session)
    i = raw.index(DELIM) + 2
    header = json.loads(raw[i])
    del header["msg_id"]
    raw[i] = json.dumps(header).encode()
    with pytest.raises(WireError, match="msg_id"):
        wire.Verifier(session).check(wire.split(resign(session, raw)))


def test_content_with_a_lone_surrogate_decodes_as_jupyter_client_does() -> None:
    text = json.dumps({"evalue": "bad \udcff"}, ensure_ascii=False)
    raw = text.encode("utf-8", "surrogateescape")  # not UTF-8
    assert wire.decode_json(raw, "content") == {"evalue": "bad \ufffd"}


def test_the_signature_history_is_bounded_oldest_first() -> None:
    history = wire.SignatureHistory(size=3)
    for n in range(5):
        history.add(bytes([n]))
    assert len(history) == 3
    assert bytes([0]) not in history and bytes([4]) in history


def test_set_content_signs_anew() -> None:
    session = Session(key=KEY)
    msg = wire.split(frames(session, "kernel_info_reply", status="ok"))
    msg.set_content({"status": "ok", "implementation": "jumper-proxy"}, session)
    again = wire.split(msg.to_wire())
    wire.Verifier(session).check(again)
    assert again.content()["implementation"] == "jumper-proxy"


def test_builders_make_the_protocol_shapes() -> None:
    assert wire.status("idle").content == {"execution_state": "idle"}
    ok = wire.execute_ok(4)
    assert (ok.msg_type, ok.content["execution_count"], ok.metadata) == (
        "execute_reply",
        4,
        {"status": "ok"},
    )
    err = wire.error_reply("execute_request", "E", "v", count=2)
    assert err.content["traceback"] == ["E: v"] and err.content["execution_count"] == 2
    assert wire.error_reply("inspect_request", "E", "v").msg_type == "inspect_reply"
    assert "execution_count" not in wire.error_reply("inspect_request", "E", "v").content
    assert wire.aborted("execute_request").content == {"status": "aborted"}
    shown = wire.display({"text/plain": "x"}, display_id="d", update=True)
    assert shown.msg_type == "update_display_data"
    assert shown.content["transient"] == {"display_id": "d"}
    session = Session(key=KEY)
    msg_id, raw = wire.serialize(session, ok, {"msg_id": "parent"}, [b"client"])
    parsed = wire.split(raw)
    assert parsed.msg_id == msg_id and parsed.parent_msg_id == "parent"
    wire.Verifier(session).check(parsed)
