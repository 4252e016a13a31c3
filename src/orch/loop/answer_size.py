"""A model endpoint's answer, bounded. Both providers' SDKs read an answer whole into memory, so
an endpoint that sent gigabytes would take the server's memory with it. The HTTP client they are
given here reads at most MAX_ANSWER bytes of an answer, counted as decoded (a compressed answer
counts at its full size), and refuses the rest: the run fails with a sentence that says so."""

from __future__ import annotations

from typing import Any

import httpx2

from orch.sizes import format_size

MAX_ANSWER = 16 * 1024**2  # far above any real answer: stdout keeps 1 MiB, a tool's arguments 64 KiB
# Headers about the wire's framing, which no longer hold for the answer read here whole.
_FRAMING = frozenset({b"content-encoding", b"content-length", b"transfer-encoding"})


class AnswerTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"the answer is larger than {format_size(limit)}, the most orch reads")


class Answer(httpx2.Response):
    """An answer read whole. Its JSON, parsed once by the SDK (`json()`), is kept (`parsed`): the
    SDKs' models of an answer change some of its values as they read them (model.usage_sent), so
    what the answer held is read here, without parsing it again."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.parsed: object = None

    def json(self, **kwargs: Any) -> Any:
        if kwargs:
            return super().json(**kwargs)
        if self.parsed is None:
            self.parsed = super().json()
        return self.parsed


class BoundedClient(httpx2.Client):
    """An httpx client that reads each answer at once, up to MAX_ANSWER bytes. orch asks the
    SDKs for no streamed answers, so reading at once changes nothing else."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.limit = MAX_ANSWER

    def send(self, request: httpx2.Request, **kwargs: Any) -> httpx2.Response:
        kwargs["stream"] = True
        response = super().send(request, **kwargs)
        body = bytearray()
        try:
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > self.limit:
                    raise AnswerTooLarge(self.limit)
        finally:
            response.close()
        return Answer(
            response.status_code,
            # As they came (bytes): a value that is not ASCII (a redirect's Location with an é,
            # found by a fixer) made an answer of str headers raise, and the run's reason blamed
            # the answer's shape.
            headers=[(k, v) for k, v in response.headers.raw if k.lower() not in _FRAMING],
            content=bytes(body),
            request=request,
            extensions={
                k: v for k, v in response.extensions.items() if k in ("http_version", "reason_phrase")
            },
        )
