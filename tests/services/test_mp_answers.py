"""What the initiator reads of a participant's answer: at most peer_max_body_mb, and an error
answer as the peer's refusal."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from dataspace.services.mp_wire import FRAME_MEDIA_TYPE, MultipartyFailed, PeerRefused, post_capped

CAP = 1000


class _Chunks(httpx.SyncByteStream):
    def __init__(self, sizes: list[int]) -> None:
        self.sizes, self.sent = sizes, 0

    def __iter__(self) -> Iterator[bytes]:
        for size in self.sizes:
            self.sent += size
            yield b"x" * size


def _post(handler: httpx.MockTransport) -> bytes:
    with httpx.Client(base_url="https://grid.example", transport=handler) as client:
        return post_capped(client, "grid", "/peer/v1/mp/step", b"frame",
                           content_type=FRAME_MEDIA_TYPE, cap=CAP)


def test_an_answer_within_the_cap_is_read_whole() -> None:
    answer = _post(httpx.MockTransport(lambda r: httpx.Response(200, content=b"y" * CAP)))
    assert answer == b"y" * CAP


def test_an_endless_answer_is_cut_off_at_the_cap() -> None:
    """A participant could send the initiator gigabytes: it read every byte into memory."""
    stream = _Chunks([400] * 1000)  # 400 kB, no Content-Length
    with pytest.raises(MultipartyFailed, match="grid's answer passes 0 MiB") as info:
        _post(httpx.MockTransport(lambda r: httpx.Response(200, stream=stream)))
    assert stream.sent <= CAP + 400  # it stopped at the first chunk past the cap
    assert info.value.details["node"] == "grid" and info.value.details["cause"] == "oversized"


def test_an_answer_declaring_more_than_the_cap_is_not_read() -> None:
    stream = _Chunks([10])
    response = httpx.Response(200, stream=stream, headers={"content-length": str(CAP + 1)})
    with pytest.raises(MultipartyFailed, match="passes"):
        _post(httpx.MockTransport(lambda r: response))
    assert stream.sent == 0


@pytest.mark.parametrize(("status", "code"), [(403, "peer_refused"), (500, "multiparty_failed")])
def test_an_error_answer_is_the_peers_refusal(status: int, code: str) -> None:
    envelope = {"error": {"code": "policy_denied", "message": "the purpose is not allowed",
                          "hint": "ask for another purpose"}}
    body = json.dumps(envelope).encode()
    with pytest.raises(PeerRefused, match="grid refused: the purpose is not allowed") as info:
        _post(httpx.MockTransport(lambda r: httpx.Response(status, content=body)))
    assert info.value.code == code and info.value.details["peer_code"] == "policy_denied"
    assert info.value.hint == "ask for another purpose"


def test_an_error_answer_that_is_not_json_still_says_what_came() -> None:
    with pytest.raises(PeerRefused, match="grid refused") as info:
        _post(httpx.MockTransport(lambda r: httpx.Response(502, content=b"Bad Gateway")))
    assert info.value.http_status == 502
