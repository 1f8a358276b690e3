"""A local OpenAI-compatible server for tests, and the `fake_openai` fixture.

The provider is tested over real HTTP through the real SDK (never by patching it).
The server answers POST /v1/chat/completions, as JSON or as a server-sent event
stream, from a per-test script of behaviours, cut at the request's
`max_completion_tokens` as a real server cuts it; when the script is empty it answers
with valid content for the requested content type. It records every request and
the most requests it ever had in flight at once, and when clients closed their
connections before the answer ended.

Register as a plugin (`pytest_plugins = ["tests.support.fake_openai"]`), then:

    def test_something(fake_openai):
        fake_openai.script(error(429), ok(VALID_QUIZ))
        ...
        assert len(fake_openai.requests) == 2
"""

import json
import re
import select
import socket
import struct
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

FAKE_API_KEY = "sk-test-secret-4f9c2b7e1d8a6035"
TOKENS_PER_MESSAGE = 3
FAKE_MODEL = "fake-gpt-test"
CHUNK_CHARS = 40
# In an answer's text, replaced as each chunk is sent by its send time
# (time.time(), 17 characters: seconds with six decimals), so that a client can time
# each chunk's way to it (bench/live_content.py). Never split across two chunks.
SEND_TIME = "@@@send-time@@@@@"

VALID_TUTORIAL = (
    "# React Hooks: a first tutorial\n\n"
    "Hooks let function components hold state and run effects; this tutorial shows "
    "useState and useEffect with small examples.\n\n"
    "## Why hooks\n\n"
    "Before hooks, state lived in classes. Hooks keep related logic together.\n\n"
    "## useState\n\n"
    "```jsx\nconst [count, setCount] = useState(0);\n```\n\n"
    "## useEffect\n\n"
    "Effects run after render. Return a cleanup function to undo them.\n\n"
    "## Exercise\n\n"
    "Build a counter that saves its value to localStorage.\n"
)
LONG_TUTORIAL = VALID_TUTORIAL + "\n".join(
    f"Paragraph {n}: hooks compose, effects synchronise, state stays local." for n in range(120)
)


VALID_RESOURCES = {
    "items": [
        {
            "title": "React docs: Hooks",
            "url": "https://react.dev/reference/react/hooks",
            "type": "documentation",
            "description": "The reference for every built-in hook.",
            "estimated_minutes": 40,
        },
        {
            "title": "useEffect explained",
            "url": "https://react.dev/learn/synchronizing-with-effects",
            "type": "article",
            "description": "When and why effects run.",
            "estimated_minutes": 25,
        },
    ]
}
VALID_QUIZ = {
    "questions": [
        {
            "question_id": "q1",
            "type": "single_choice",
            "question": "Which hook holds local state?",
            "options": ["useState", "useEffect", "useMemo"],
            "correct_answers": [0],
            "explanation": "useState returns the value and its setter.",
            "difficulty": "easy",
        },
        {
            "question_id": "q2",
            "type": "true_false",
            "question": "Effects run before the first render.",
            "options": ["True", "False"],
            "correct_answers": [1],
            "explanation": "Effects run after the render is committed.",
            "difficulty": "medium",
        },
    ]
}


FAKE_TOKEN = re.compile(r"[\u4e00-\u9fff]|[^\W\u4e00-\u9fff]+|[^\w\s]")


def fake_token_count(text: str) -> int:
    """The fake's tokenizer: words, each punctuation mark, each CJK character (not
    the product's estimate, which it checks)."""
    return len(FAKE_TOKEN.findall(text))


def within_token_limit(text: str, finish_reason: str, body: dict[str, Any]) -> tuple[str, str]:
    """The answer as a server gives it under the request's `max_completion_tokens`:
    cut after that many tokens, with finish_reason "length"."""
    limit = body.get("max_completion_tokens")
    tokens = list(FAKE_TOKEN.finditer(text))
    if limit is None or len(tokens) <= limit:
        return text, finish_reason
    return (text[: tokens[limit - 1].end()] if limit else ""), "length"


@dataclass
class Behaviour:
    """One scripted answer. `kind` is ok | error | malformed | events | hang | reset.

    ok: `content` (str, or a dict/list sent as JSON text) answered as JSON, or as an
    event stream when the request asked for one (`None` means the default valid
    content for the request). `refusal` answers with a refusal instead. A stream
    sends `CHUNK_CHARS` characters per chunk, `chunk_delay` apart, and after
    `hang_after_chunks` chunks stops sending (without ending the stream); its last
    chunk says `finish_reason` ("length": cut off at the length limit). After
    `cut_after_chunks` chunks the connection ends instead (no final chunk, no
    [DONE]): closed in order, or reset when `reset` is set. `before_finish` is
    called just before the final chunk (or the whole answer, when not streamed):
    the moment a generation is about to complete.
    error: `status` with `body` (JSON if dict) and `headers`.
    malformed: 200 with a body that is not JSON although it says it is (`body`, a
    str, replaces the default broken text).
    events: an event stream of `body`, a list of JSON values sent as they are, then
    [DONE] (chunks that are JSON but not completion chunks).
    hang: sends nothing for `delay` seconds (or until the server stops), then closes.
    reset: reads the request and resets the connection (TCP RST) without answering.
    Every behaviour first waits `delay` seconds (except hang, whose delay is the hang)."""

    kind: str = "ok"
    content: Any = None
    refusal: str | None = None
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    chunk_delay: float = 0.0
    hang_after_chunks: int | None = None
    cut_after_chunks: int | None = None
    reset: bool = False
    finish_reason: str = "stop"
    before_finish: Callable[[], None] | None = None
    usage: bool = True  # a stream that asks for usage gets it (False: a server that never does)
    usage_counts: dict | None = None  # the usage chunk's counts, in place of the true ones


def ok(content: Any = None, **options: Any) -> Behaviour:
    return Behaviour(kind="ok", content=content, **options)


def refusal(text: str = "I can't help with that.") -> Behaviour:
    return Behaviour(kind="ok", refusal=text)


def error(status: int, body: Any = None, headers: dict[str, str] | None = None) -> Behaviour:
    """An error answer; retryable statuses carry `retry-after-ms` so the SDK's own
    retries wait milliseconds, not seconds."""
    if body is None:
        body = {"error": {"message": f"fake error {status}", "type": "fake", "code": None}}
    if headers is None:
        headers = {"retry-after-ms": "5"} if status == 429 or status >= 500 else {}
    return Behaviour(kind="error", status=status, body=body, headers=headers)


def malformed(body: str | None = None) -> Behaviour:
    return Behaviour(kind="malformed", body=body)


def events(*data: Any) -> Behaviour:
    return Behaviour(kind="events", body=list(data))


def reset() -> Behaviour:
    """The connection is reset before any answer (a proxy or server crash)."""
    return Behaviour(kind="reset")


def cut(after_chunks: int = 3, *, reset: bool = False) -> Behaviour:
    """A streamed answer whose connection ends halfway: no final chunk, no [DONE]."""
    return Behaviour(kind="ok", cut_after_chunks=after_chunks, reset=reset)


def hang(seconds: float = 30.0) -> Behaviour:
    return Behaviour(kind="hang", delay=seconds)


@dataclass
class RecordedRequest:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]

    @property
    def streaming(self) -> bool:
        return bool(self.body.get("stream"))

    @property
    def content_kind(self) -> str:
        return content_kind(self.body)


def content_kind(body: dict[str, Any]) -> str:
    """tutorial | resources | quiz, from the structured-output schema asked for."""
    response_format = body.get("response_format") or {}
    schema = (response_format.get("json_schema") or {}).get("schema") or {}
    properties = schema.get("properties") or {}
    if "questions" in properties:
        return "quiz"
    if "items" in properties:
        return "resources"
    return "tutorial"


def default_content(body: dict[str, Any]) -> str:
    kind = content_kind(body)
    if kind == "quiz":
        return json.dumps(VALID_QUIZ)
    if kind == "resources":
        return json.dumps(VALID_RESOURCES)
    return VALID_TUTORIAL


class FakeOpenAI:
    """The server, its script and its records. Thread-safe; one per test, or one
    per module that `forget`s between its tests."""

    def __init__(self, default: Behaviour | None = None) -> None:
        self.in_flight = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._start_over(default)

    def _start_over(self, default: Behaviour | None = None) -> None:
        """A new fake's script and records (answers in flight stay counted)."""
        self.requests: list[RecordedRequest] = []
        self.usage_reported: list[dict[str, int]] = []  # the usage chunks sent, in order
        self.default = default or Behaviour()  # the answer when the script is empty
        self.delay = 0.0  # added before every answer (concurrency tests)
        self.max_in_flight = self.in_flight
        # time.monotonic() of each connection the client closed mid-answer.
        self.closed_by_client: list[float] = []
        self._script: deque[Behaviour] = deque()

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def forget(self) -> None:
        """Back to a new fake's script and records, on the same address: for a fake
        that several tests share (one Celery stack of a module points at it)."""
        with self._lock:
            self._start_over()

    def script(self, *behaviours: Behaviour) -> None:
        """Queue answers for the next requests, in order; then the default applies."""
        with self._lock:
            self._script.extend(behaviours)

    @property
    def unused_script(self) -> int:
        with self._lock:
            return len(self._script)

    def start(self) -> "FakeOpenAI":
        fake = self

        class Handler(_Handler):
            server_fake = fake

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._server.block_on_close = False
        # stop() waits for serve_forever to look at its flag: at most 10 ms.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _next(self, request: RecordedRequest) -> Behaviour:
        with self._lock:
            self.requests.append(request)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            return self._script.popleft() if self._script else self.default

    def _done(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def _client_closed(self) -> None:
        with self._lock:
            self.closed_by_client.append(time.monotonic())

    def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            self._stopping.wait(seconds)


class _Server(ThreadingHTTPServer):
    request_queue_size = 1024  # hundreds of generations connect at once in benchmarks


class _Handler(BaseHTTPRequestHandler):
    server_fake: FakeOpenAI
    protocol_version = "HTTP/1.0"  # one request per connection; streams end on close

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the request log is `FakeOpenAI.requests`."""

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length)
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._send_json(404, {"error": {"message": f"no route {self.path}"}})
            return
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            self._send_json(400, {"error": {"message": "request body is not JSON"}})
            return
        fake = self.server_fake
        request = RecordedRequest(path=self.path, headers=dict(self.headers.items()), body=body)
        behaviour = fake._next(request)
        try:
            self._pause(fake.delay)
            self._answer(behaviour, body)
        except (BrokenPipeError, ConnectionResetError):
            fake._client_closed()  # the client gave up (timeout) or went away
        finally:
            fake._done()

    def _answer(self, behaviour: Behaviour, body: dict[str, Any]) -> None:
        if behaviour.kind == "hang":
            self._pause(behaviour.delay)
            return
        self._pause(behaviour.delay)
        if behaviour.kind == "reset":
            self._reset()
        elif behaviour.kind == "error":
            self._send_json(behaviour.status, behaviour.body, behaviour.headers)
        elif behaviour.kind == "events":
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.end_headers()
            for data in behaviour.body:
                self._event(data)
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
        elif behaviour.kind == "malformed":
            broken = behaviour.body or '{"id": "chatcmpl-broken", "choices": ['
            self._send_raw(200, broken.encode(), "application/json")
        elif body.get("stream"):
            self._stream(behaviour, body)
        else:
            if behaviour.before_finish is not None:
                behaviour.before_finish()
            self._send_json(200, self._completion(behaviour, body))

    def _text(self, behaviour: Behaviour, body: dict[str, Any]) -> str:
        if behaviour.content is None:
            return default_content(body)
        if isinstance(behaviour.content, str):
            return behaviour.content
        return json.dumps(behaviour.content)

    def _completion(self, behaviour: Behaviour, body: dict[str, Any]) -> dict[str, Any]:
        content, finish_reason = None, behaviour.finish_reason
        if not behaviour.refusal:
            content, finish_reason = within_token_limit(
                self._text(behaviour, body), finish_reason, body
            )
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": FAKE_MODEL,
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": content,
                        "refusal": behaviour.refusal,
                    },
                    "finish_reason": finish_reason,
                    "logprobs": None,
                }
            ],
            "usage": {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30},
        }

    def _stream(self, behaviour: Behaviour, body: dict[str, Any]) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.end_headers()
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        finish_reason = behaviour.finish_reason
        if behaviour.refusal:
            deltas = [{"role": "assistant", "refusal": behaviour.refusal}]
        else:
            text, finish_reason = within_token_limit(
                self._text(behaviour, body), finish_reason, body
            )
            pieces = [text[i : i + CHUNK_CHARS] for i in range(0, len(text), CHUNK_CHARS)]
            deltas = [{"role": "assistant", "content": ""}] + [{"content": p} for p in pieces]
        for index, delta in enumerate(deltas):
            if behaviour.hang_after_chunks is not None and index >= behaviour.hang_after_chunks:
                self._pause(60)
                return
            if behaviour.cut_after_chunks is not None and index >= behaviour.cut_after_chunks:
                if behaviour.reset:
                    self._reset()
                return  # HTTP/1.0 without content-length: the close ends the body
            if SEND_TIME in delta.get("content", ""):
                delta = {"content": delta["content"].replace(SEND_TIME, f"{time.time():17.6f}")}
            self._event(self._chunk(completion_id, delta, None))
            self._pause(behaviour.chunk_delay)
        if behaviour.before_finish is not None:
            behaviour.before_finish()
        self._event(self._chunk(completion_id, {}, finish_reason))
        if behaviour.usage and (body.get("stream_options") or {}).get("include_usage"):
            usage = self._usage_chunk(
                completion_id,
                body,
                "".join(delta.get("content") or delta.get("refusal") or "" for delta in deltas),
            )
            if behaviour.usage_counts is not None:
                usage["usage"] = behaviour.usage_counts
            self._event(usage)
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()

    def _usage_chunk(self, completion_id: str, body: dict[str, Any], answer: str) -> dict:
        """OpenAI's last chunk when a stream asks for usage: no choices, the counts."""
        prompt = sum(
            TOKENS_PER_MESSAGE + fake_token_count(str(m.get("content", "")))
            for m in body.get("messages", [])
        )
        completion = fake_token_count(answer)
        chunk = self._chunk(completion_id, {}, None)
        chunk["choices"] = []
        chunk["usage"] = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
        self.server_fake.usage_reported.append(chunk["usage"])
        return chunk

    def _chunk(self, completion_id: str, delta: dict, finish_reason: str | None) -> dict:
        return {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": FAKE_MODEL,
            "choices": [
                {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
            ],
        }

    def _pause(self, seconds: float) -> None:
        """Wait `seconds` (less if the server stops), noticing at once a client that
        closes the connection meanwhile: that raises ConnectionResetError, as the
        next write would."""
        fake = self.server_fake
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0 and not fake._stopping.is_set():
            readable, _, _ = select.select([self.connection], [], [], min(remaining, 0.05))
            if readable:
                if not self.connection.recv(1, socket.MSG_PEEK):
                    raise ConnectionResetError("the client closed the connection")
                fake._sleep(remaining)  # unexpected bytes: not a close
                return

    def _reset(self) -> None:
        """Close with SO_LINGER 0, so the peer sees a TCP RST, not an orderly end."""
        self.wfile.flush()
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()

    def _event(self, data: dict) -> None:
        self.wfile.write(b"data: " + json.dumps(data).encode() + b"\n\n")
        self.wfile.flush()

    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = payload if isinstance(payload, str) else json.dumps(payload)
        self._send_raw(status, data.encode(), "application/json", headers)

    def _send_raw(
        self, status: int, data: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()


@pytest.fixture
def fake_openai(settings):
    """A running fake, with the openai provider pointed at it and every bound small:
    1 s timeouts (stall too), one SDK retry, two backoff rounds of ~10 ms, two
    output attempts."""
    from generation.providers import reset_provider

    fake = FakeOpenAI().start()
    settings.GENERATION_PROVIDER = "openai"
    settings.OPENAI_BASE_URL = fake.base_url
    settings.OPENAI_API_KEY = FAKE_API_KEY
    settings.OPENAI_MODEL = "gpt-test"
    settings.OPENAI_TIMEOUT_SECONDS = 1.0
    settings.GENERATION_STALL_SECONDS = 1.0
    settings.OPENAI_MAX_RETRIES = 1
    settings.GENERATION_TRANSIENT_ATTEMPTS = 2
    settings.GENERATION_BACKOFF_SECONDS = 0.01
    settings.GENERATION_OUTPUT_ATTEMPTS = 2
    reset_provider()
    yield fake
    fake.stop()
    reset_provider()


def streaming_seconds(seconds: float, tutorial: str | None = None) -> Behaviour:
    """The default valid answers, a tutorial (`tutorial`, else VALID_TUTORIAL)
    streamed over about `seconds` (a real model's pace; the shorter JSON answers
    take less)."""
    chunks = 1 + -(-len(tutorial or VALID_TUTORIAL) // CHUNK_CHARS)
    return Behaviour(kind="ok", content=tutorial, chunk_delay=seconds / chunks)


def stamped_tutorial(chars: int) -> str:
    """A valid tutorial of about `chars` characters whose every chunk after the
    first two carries its send time (SEND_TIME), each placeholder inside one chunk."""
    header = "# Live content bench\n\nEvery line below says when the fake server sent it"
    header += "." * (-(len(header) + 2) % CHUNK_CHARS) + "\n\n"
    line = f"{SEND_TIME} sent, then some text.\n"
    assert len(line) == CHUNK_CHARS and len(header) % CHUNK_CHARS == 0
    return header + line * max(1, (chars - len(header)) // CHUNK_CHARS)


if __name__ == "__main__":
    # A standalone server for benchmarks: `python -m tests.support.fake_openai SECONDS
    # [CHARS]` streams every answer over SECONDS and prints its base URL; with CHARS,
    # tutorials are stamped_tutorial(CHARS).
    import sys

    tutorial = stamped_tutorial(int(sys.argv[2])) if len(sys.argv) > 2 else None
    fake = FakeOpenAI(default=streaming_seconds(float(sys.argv[1]), tutorial)).start()
    print(fake.base_url, flush=True)
    threading.Event().wait()
