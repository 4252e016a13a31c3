"""A model call with retries: 429, 5xx and connection failures are tried again after a growing
pause (the endpoint's Retry-After, if longer, within the cap); then, or at once for any other
error (a redirect among them: client.py follows none), the loop ends with the endpoint's own
message."""

from __future__ import annotations

from dataclasses import dataclass

from orch.loop.client import redirected
from orch.loop.model import EndpointError, Model, Request, Turn, Unreachable, Unusable, quoted
from orch.loop.outcome import failed
from orch.loop.watch import Watch
from orch.secret.mask import Mask


@dataclass(frozen=True)
class Backoff:
    attempts: int = 4  # tries in all
    first: float = 1.0  # seconds before the second try; each pause doubles
    cap: float = 30.0  # the longest pause, an endpoint's Retry-After included

    def pause(self, attempt: int, asked: float | None) -> float:
        """Seconds to wait after the `attempt`-th try failed."""
        wait = self.first * 2.0 ** (attempt - 1)
        return min(self.cap, max(wait, asked or 0.0))


def retryable(status: int) -> bool:
    return status == 429 or status >= 500


def call(
    model: Model, request: Request, backoff: Backoff, watch: Watch, key_secret: str | None, mask: Mask
) -> tuple[Turn, int]:
    """The turn and how many tries it took; Stopped with a reason when there is none. What the
    endpoint said is quoted masked with `mask` (the run's secrets and API key), then cut."""
    attempt = 0
    while True:
        attempt += 1
        watch.check()
        try:
            return watch.wait(lambda: model.complete(request)), attempt
        except EndpointError as exc:
            if exc.status in (401, 403):
                raise failed(_refused_key(exc.status, quoted(exc.message, mask), key_secret)) from None
            if 300 <= exc.status < 400:  # a redirect, not followed: said so, and where it pointed
                # A URL: a value in it is masked percent-encoded too (Mask.url)
                where = quoted(exc.message, mask.url) if exc.message else None
                raise failed(redirected(exc.status, where)) from None
            if not retryable(exc.status):
                raise failed(
                    f"the model endpoint refused the request ({exc.status}): {quoted(exc.message, mask)}"
                ) from None
            if attempt >= backoff.attempts:
                raise failed(
                    f"the model endpoint answered {exc.status} {attempt} times: {quoted(exc.message, mask)}"
                ) from None
            asked = exc.retry_after
        except Unusable as exc:
            raise failed(f"the model endpoint's answer is not usable: {exc.said(mask)}") from None
        except Unreachable as exc:
            if attempt >= backoff.attempts:
                cause = quoted(exc.cause, mask)  # it may quote the answer's bytes that broke HTTP
                raise failed(
                    f"could not reach the model endpoint {model.base_url} ({cause}, {attempt} tries); "
                    "check loop.base_url and that the server there is up"
                ) from None
            asked = None
        watch.sleep(backoff.pause(attempt, asked))


def _refused_key(status: int, message: str, key_secret: str | None) -> str:
    said = f"the model endpoint refused the API key ({status}: {message})"
    if key_secret is None:
        return f"{said}; the loop names no api_key_secret: add one to orch.yaml"
    check = f"check the workspace secret {key_secret} (loop.api_key_secret)"
    return f"{said}; {check}: `orch secret set {key_secret}`"
