"""One model call in a shape of our own, whatever the wire format: the conversation so far, the
tools, and the turn that comes back (its text, its tool calls, its tokens). Each provider's
module (openai_chat.py, anthropic_messages.py) turns it into its SDK's request and back."""

from __future__ import annotations

import datetime
import email.utils
import json
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel

from orch.loop.answer_size import AnswerTooLarge
from orch.loop.client import Redirected, unlogged
from orch.secret.mask import Mask, shorten

_SAID = 500  # characters of an endpoint's message kept in a reason
WORD_SHOWN = 100  # characters of a word of the answer's own (a tool's type, name) kept in a reason
MAX_DEPTH = 100  # levels of nesting a tool call's arguments may have (deeper: not usable JSON)
MAX_TOKENS = 10**9  # the most tokens one call is counted as: more is no honest count
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as the model wrote it (sent back as it came)


@dataclass(frozen=True)
class Turn:
    """The model's answer: text, tool calls (none: the final answer), tokens."""

    text: str
    calls: tuple[ToolCall, ...] = ()
    input_tokens: int = 0
    output_tokens: int = 0


@dataclass(frozen=True)
class UserText:
    text: str


@dataclass(frozen=True)
class ToolResult:
    call: ToolCall
    output: str
    is_error: bool


@dataclass(frozen=True)
class Results:
    """The results of every tool call of the turn before, in its order."""

    results: tuple[ToolResult, ...]


Message = UserText | Turn | Results


@dataclass(frozen=True)
class ToolSpec:
    name: str
    description: str
    parameters: Mapping[str, Any]  # JSON Schema of the arguments object


@dataclass(frozen=True)
class Request:
    system: str
    messages: Sequence[Message]
    tools: Sequence[ToolSpec]
    max_output_tokens: int  # the Messages API needs one; Chat Completions is sent none
    timeout: float  # seconds for the HTTP call


class EndpointError(Exception):
    """The endpoint answered with an error status. `message`: its own words (`said`), or where
    a redirect pointed ("" for nowhere), as it gave them; `quoted` is what a reason shows of them."""

    def __init__(self, status: int, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.retry_after = status, message, retry_after


class Unreachable(Exception):
    """No answer: the connection failed or timed out."""

    def __init__(self, cause: str) -> None:
        super().__init__(cause)
        self.cause = cause


class Unusable(Exception):
    """The answer is not usable: not the provider's shape, larger than orch reads, or asking for
    what orch cannot do. `text` says why; where it quotes the answer's own words (`{}`), they are
    `words`, quoted as a reason shows them (`said`): masked, then within WORD_SHOWN characters."""

    def __init__(self, text: str, *words: str) -> None:
        super().__init__(text)
        self.text, self.words = text, words

    def said(self, mask: Mask) -> str:
        if not self.words:
            return self.text
        return self.text.format(*(quoted(word, mask, WORD_SHOWN, empty='""') for word in self.words))


class Model(Protocol):
    base_url: str

    def complete(self, request: Request) -> Turn:
        """One attempt (no retries): the turn, or EndpointError / Unreachable."""
        ...

    def close(self) -> None:
        """End the client: a call still in flight (one the loop stopped waiting for) fails at
        once and its connection is closed. The loop calls it when it ends."""
        ...


def said(body: object, text: str) -> str:
    """The endpoint's own message in an error answer: `error.message` (both providers' shape,
    and most compatible servers'), `message` or `detail`, else the answer's text; whole and
    unmasked: `quoted` makes it what a reason shows."""
    found: object = None
    if isinstance(body, dict):
        inner = body.get("error")
        if isinstance(inner, dict):
            found = inner.get("message")
        elif isinstance(inner, str):
            found = inner
        found = found or body.get("message") or body.get("detail")
    return str(found) if found else text


def quoted(text: str, mask: Callable[[str], str], limit: int = _SAID, empty: str = "no message") -> str:
    """What the endpoint said (`said`, a redirect's Location, what a failed connection's error
    quotes of its answer) as a reason quotes it: the run's secrets and API key masked (`mask`: a
    Mask, or its `url` for a URL), on one line, at most `limit` characters (`empty` when it is
    none). Masked before anything else: joining its spaces or cutting it would leave a value the
    masker no longer finds, most of it in clear."""
    return shorten(" ".join(usable(mask(text)).split()) or empty, limit)


def retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds the endpoint asks to wait (`retry-after-ms`, `retry-after` in seconds or as an
    HTTP date, RFC 9110: from `now`, the time.time() it is), if any. Unbounded: the pause that
    honours it is bounded (retry.Backoff)."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        try:
            seconds = float(headers[name]) * scale
        except KeyError:
            continue
        except ValueError:
            if name == "retry-after-ms" or (when := _http_date(headers[name])) is None:
                continue
            seconds = when - (time.time() if now is None else now)
        if seconds == seconds:  # not NaN
            return max(0.0, seconds)
    return None


def _http_date(text: str) -> float | None:
    """The time an HTTP date (`Wed, 21 Oct 2099 07:28:00 GMT`, or its obsolete forms) names, as
    time.time() counts; None when it is none."""
    try:
        when = email.utils.parsedate_to_datetime(text.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # `-0000`: the zone unknown, which HTTP dates never are but GMT
        when = when.replace(tzinfo=datetime.UTC)
    return when.timestamp()


def _cause(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """The first exception of `kind` in `exc`'s chain of causes, `exc` included."""
    found: BaseException | None = exc
    while found is not None and not isinstance(found, kind):
        found = found.__cause__
    return found


def cause_of(exc: BaseException) -> str:
    """The lowest cause of a connection error: refused, name not found, timed out."""
    while isinstance(exc.__cause__, BaseException):
        exc = exc.__cause__
    return str(exc).strip() or type(exc).__name__


@contextmanager
def sdk_errors(status_error: Any, connection_error: Any, shape: str) -> Iterator[None]:
    """A provider SDK's errors as ours: its error status (`status_error`: the SDK's
    APIStatusError) as EndpointError, no answer (`connection_error`) as Unreachable, and an
    answer that is not `shape` (the SDKs do not validate answers) or is larger than orch reads
    as Unusable. A redirect (client.py follows none) is EndpointError with its 3xx status, its
    message where it pointed. The SDK logs nothing of the call meanwhile (client.unlogged): its
    log would quote what the endpoint answered, unmasked."""
    try:
        with unlogged():
            yield
    except status_error as exc:
        message = said(exc.body, exc.response.text)
        raise EndpointError(exc.status_code, message, retry_after(exc.response.headers)) from None
    except connection_error as exc:  # what went wrong reading the answer is its cause
        too_large = _cause(exc, AnswerTooLarge)
        if too_large is not None:
            raise Unusable(str(too_large)) from None
        redirected = _cause(exc, Redirected)
        if isinstance(redirected, Redirected):
            raise EndpointError(redirected.status, redirected.location or "") from None
        raise Unreachable(cause_of(exc)) from None
    except Redirected as exc:  # the SDK let it through as it came (the OpenAI one does)
        raise EndpointError(exc.status, exc.location or "") from None
    except AnswerTooLarge as exc:
        raise Unusable(str(exc)) from None
    except (AttributeError, IndexError, KeyError, TypeError, ValueError, RecursionError):
        raise Unusable(f"the answer is not {shape}") from None


# What an endpoint answers is not trusted to be well-formed: the SDKs check no more than its
# shape. Text that could not be stored or masked (a lone surrogate), a count that would make the
# token limit meaningless (negative, not a number), arguments that would exhaust the stack are
# made usable here, where the answer enters the loop (docs/loop.md, "What the model answers").


class Shape:
    """Reads the fields of an answer in a provider's shape (`name`: "a chat completion"), each
    one checked. The SDKs check none, so an answer slightly off the shape (an id that is a
    number, a call without its name) failed as not the shape at all; each read here that finds
    what it does not want raises Unusable naming the field and what it held: `the answer is not
    a chat completion: choices[0].message.tool_calls[0].id is a number, not a string`."""

    def __init__(self, name: str) -> None:
        self.name = name

    def field(self, model: object, name: str) -> object:
        """`model`'s field `name` as the answer gave it; MISSING when it gave none."""
        given = getattr(model, "model_fields_set", None)
        return getattr(model, name, None) if given is None or name in given else MISSING

    def an_object(self, value: object, at: str) -> BaseModel:
        if not isinstance(value, BaseModel):
            raise self.off(at, value, "an object")
        return value

    def text(self, value: object, at: str, wanted: str = "a string") -> str | None:
        """A text field: a string, or None when it is null or missing."""
        if value is None or value is MISSING:
            return None
        if not isinstance(value, str):
            raise self.off(at, value, wanted)
        return value

    def array(self, value: object, at: str) -> list[object]:
        """An array field; none when it is null or missing."""
        if value is None or value is MISSING:
            return []
        if not isinstance(value, list):
            raise self.off(at, value, "an array")
        return value

    def off(self, at: str, value: object, wanted: str) -> Unusable:
        held = "missing" if value is MISSING else f"{_kind(value)}, not {wanted}"
        return Unusable(f"the answer is not {self.name}: {at} is {held}")


MISSING = object()  # a field the answer does not have


def _kind(value: object) -> str:
    """A JSON value's kind, as the answer held it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def usable(text: str) -> str:
    """`text` with each lone UTF-16 surrogate (JSON's `"\\ud800"`), which no UTF-8 text can
    hold, replaced by U+FFFD."""
    return _SURROGATE.sub("\ufffd", text)


def usage_sent(response: object) -> Mapping[str, object]:
    """The `usage` object of an answer (the SDK's HTTP response: answer_size.Answer) as the
    endpoint sent it; empty when it sent none, or no object. Read there, not from the SDK's
    model of the answer, which turns some counts into numbers (its `usage` may be missing, so it
    is checked laxly: `true` becomes 1, "12" becomes 12) where a count not a number counts 0."""
    sent = getattr(response, "parsed", None)
    usage = sent.get("usage") if isinstance(sent, dict) else None
    return usage if isinstance(usage, dict) else {}


def tokens(count: object) -> int:
    """A token count as the endpoint reported it, within 0 and MAX_TOKENS; 0 when it reported
    none (or not a number)."""
    if isinstance(count, bool) or not isinstance(count, int | float) or count != count:
        return 0
    return int(max(0, min(count, MAX_TOKENS)))


def json_value(text: str) -> object:
    """The JSON value `text` holds; ValueError when it is not JSON or nests deeper than
    MAX_DEPTH (which the events and the tools would otherwise walk into the stack's limit)."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    _check_depth(value, MAX_DEPTH)
    return value


def _check_depth(value: object, left: int) -> None:
    if isinstance(value, dict | list):
        if left == 0:
            raise ValueError("nested too deeply")
        for item in value.values() if isinstance(value, dict) else value:
            _check_depth(item, left - 1)


def tool_call(call_id: str, name: str, arguments: str) -> ToolCall:
    """A tool call as the model wrote it, made usable: its arguments' text as it came when it
    needed no repair, else their JSON again with every string (keys too) usable."""
    try:
        value = json_value(arguments)
    except ValueError:
        return ToolCall(usable(call_id), usable(name), usable(arguments))
    repaired = _usable_value(value)
    text = arguments if repaired == value else json.dumps(repaired, ensure_ascii=False)
    return ToolCall(usable(call_id), usable(name), text)


def _usable_value(value: object) -> object:
    if isinstance(value, str):
        return usable(value)
    if isinstance(value, dict):
        return {usable(str(k)): _usable_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_usable_value(v) for v in value]
    return value
