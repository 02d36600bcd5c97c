"""ballast_plugin: write ballast process plugins in Python, on the standard library alone.

A process plugin is a program that ballast starts and talks to over its stdin and stdout with
the JSON-lines control protocol (one JSON object per line). This module speaks that protocol,
so that a plugin is a few methods:

    import ballast_plugin

    class Echo(ballast_plugin.Plugin):
        version = "1.0.0"

        def on_call(self, request, ctx):
            return request

    if __name__ == "__main__":
        ballast_plugin.run(Echo)

or, with decorators:

    plugin = ballast_plugin.Plugin("echo", version="1.0.0")

    @plugin.call
    def echo(request, ctx):
        return request

    if __name__ == "__main__":
        plugin.run()

What the module does for the plugin:

* answers ``init`` with ``hello`` once the plugin has started (restoring the checkpoint the
  host handed over first);
* runs each ``call`` off the reading thread, on a pool of threads when the plugin says it is
  thread-safe and one at a time otherwise, so that a ``cancel`` is read while a call runs; a
  call's answer can be streamed in ``chunk`` messages through its :class:`CallContext`;
* answers every request exactly once, with an ``error`` naming the exception when a handler
  raises, and nothing at all for a call the host cancelled (the host no longer waits for it);
* runs ``set_level``, ``drain`` and ``checkpoint`` in order on a thread of their own; a drain
  waits for the calls in flight and refuses new ones, and a plugin that is not thread-safe
  never has a lifecycle handler run beside a call;
* sends heartbeats from a background thread, and the plugin's health when it changes;
* bridges :mod:`logging` to the host's ``log`` messages, and sends ``print`` output to stderr
  (which ballast logs too) instead of the protocol's stdout;
* ignores message types and fields it does not know, survives malformed lines, and returns
  from :meth:`Plugin.run` when its input ends (the host's way to say "exit") or, run as a
  process, when it gets SIGTERM.

The protocol itself is described in the ballast-process crate's documentation.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import logging
import math
import os
import queue
import select
import signal
import sys
import threading
import time
from typing import (
    IO,
    Any,
    Callable,
    Dict,
    Iterator,
    List,
    Optional,
    Tuple,
    Type,
    TypeVar,
    Union,
)

__all__ = [
    "Answer",
    "CallContext",
    "Cancelled",
    "Clock",
    "Health",
    "HostLogHandler",
    "Plugin",
    "PluginError",
    "DEFAULT_HEARTBEAT_S",
    "LIFECYCLE_WAIT_S",
    "MAX_LINE_BYTES",
    "PROTOCOL_VERSION",
    "STOP_GRACE_S",
    "run",
]

__version__ = "0.1.0"

#: The protocol version this module speaks (sent in ``hello``).
PROTOCOL_VERSION = 1

#: The longest line either side may send, newline excluded.
MAX_LINE_BYTES = 8 << 20

#: Seconds between heartbeats unless the plugin or its config (``heartbeat_s``) says otherwise.
#: ballast raises ``stalled`` after its stall threshold (30 s unless configured) without a line.
DEFAULT_HEARTBEAT_S = 5.0

#: How long ``set_level`` and ``checkpoint`` of a plugin that is not thread-safe wait for the
#: call running to end.
LIFECYCLE_WAIT_S = 30.0

#: How long the end of input waits for the calls in flight, cancelled, to end before ``on_stop``.
STOP_GRACE_S = 1.0

#: What a call handler may return: the answer (or its last part, after streamed chunks) as
#: bytes, or text (sent as UTF-8), or None for no data.
Answer = Union[bytes, bytearray, memoryview, str, None]

#: A monotonic clock in seconds (``time.monotonic`` unless a test injects another).
Clock = Callable[[], float]

_Message = Dict[str, Any]

_LOG_LEVELS = ("error", "warn", "info", "debug", "trace")


class Cancelled(Exception):
    """The call was cancelled by the host (its caller went away or its deadline passed).

    :meth:`CallContext.send` raises it once the call is cancelled; let it propagate (or return)
    to stop the call. Nothing is sent for a cancelled call, whatever its handler does next.
    """

    def __init__(self, message: str = "the call was cancelled") -> None:
        super().__init__(message)


class PluginError(Exception):
    """An error whose message goes to the host as it is.

    Raise it from any handler for a failure the caller should read (other exceptions are
    reported as ``TypeName: message``).
    """


class Health:
    """A plugin's health as it reports it: ``ok``, ``degraded`` or ``unhealthy`` (ballast marks
    an unhealthy plugin failed), with an optional message saying why."""

    OK = "ok"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"

    __slots__ = ("status", "message")

    def __init__(self, status: str, message: Optional[str] = None) -> None:
        if status not in (Health.OK, Health.DEGRADED, Health.UNHEALTHY):
            raise ValueError(
                "health status must be 'ok', 'degraded' or 'unhealthy', not %r" % (status,)
            )
        self.status = status
        self.message = message

    @classmethod
    def ok(cls, message: Optional[str] = None) -> Health:
        """Working."""
        return cls(Health.OK, message)

    @classmethod
    def degraded(cls, message: str) -> Health:
        """Working, with reduced service (ballast shows it and changes nothing)."""
        return cls(Health.DEGRADED, message)

    @classmethod
    def unhealthy(cls, message: str) -> Health:
        """Not working: ballast marks the plugin failed."""
        return cls(Health.UNHEALTHY, message)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Health):
            return NotImplemented
        return (self.status, self.message) == (other.status, other.message)

    def __hash__(self) -> int:
        return hash((self.status, self.message))

    def __repr__(self) -> str:
        return "Health(%r, %r)" % (self.status, self.message)


def _as_bytes(data: Answer, what: str) -> bytes:
    """The bytes of an answer or chunk; TypeError naming `what` for anything else."""
    if data is None:
        return b""
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    raise TypeError(
        "%s must be bytes, str or None, not %s" % (what, type(data).__name__)
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _describe(error: BaseException) -> str:
    """An exception as the host reads it: a PluginError's message, else `Type: message`."""
    if isinstance(error, PluginError):
        return str(error) or type(error).__name__
    text = str(error)
    return "%s: %s" % (type(error).__name__, text) if text else type(error).__name__


def _level_name(levelno: int) -> str:
    """The protocol's name for a :mod:`logging` level."""
    if levelno >= logging.ERROR:
        return "error"
    if levelno >= logging.WARNING:
        return "warn"
    if levelno >= logging.INFO:
        return "info"
    if levelno >= logging.DEBUG:
        return "debug"
    return "trace"


class _Output:
    """The protocol's output stream: whole lines, one writer at a time, flushed each. From
    :meth:`hold` until ``hello`` is written, what else is sent (logs of the start, progress of
    a thread it started) is held, so that ``hello`` is the first line, and written right after
    it."""

    def __init__(self, stream: IO[Any]) -> None:
        self._stream = stream
        self._text = isinstance(stream, io.TextIOBase)
        self._lock = threading.Lock()
        self._held: Optional[List[str]] = None
        self.closed = False

    def hold(self) -> None:
        with self._lock:
            self._held = []

    def send(self, message: _Message) -> bool:
        """Writes `message` as one line (or holds it until hello); False once the stream is
        closed or broken."""
        line = json.dumps(message, separators=(",", ":"), allow_nan=False) + "\n"
        with self._lock:
            if self.closed:
                return False
            if self._held is not None:
                if message["type"] != "hello":
                    self._held.append(line)
                    return True
                self._held.insert(0, line)
                return self._release()
            return self._write(line)

    def release(self) -> None:
        """Writes what was held (when the start failed, without a hello)."""
        with self._lock:
            if self._held is not None and not self.closed:
                self._release()

    def _release(self) -> bool:
        lines, self._held = self._held or [], None
        return all(self._write(line) for line in lines)

    def _write(self, line: str) -> bool:
        try:
            if self._text:
                self._stream.write(line)
            else:
                self._stream.write(line.encode("ascii"))
            self._stream.flush()
        except (OSError, ValueError):
            # The host has gone (a broken pipe) or the stream was closed: the reading side
            # sees the end of input and the plugin exits.
            self.closed = True
            return False
        return True

    def close(self) -> None:
        self.release()
        with self._lock:
            self.closed = True


class _Gate:
    """Keeps a plugin's calls and lifecycle handlers apart: calls hold it shared, lifecycle
    requests exclusively; a waiting lifecycle request holds back new calls so that a stream of
    calls cannot starve it."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._shared = 0
        self._exclusive = False
        self._waiting = 0

    def acquire_shared(self) -> None:
        with self._cond:
            self._cond.wait_for(lambda: not self._exclusive and self._waiting == 0)
            self._shared += 1

    def release_shared(self) -> None:
        with self._cond:
            self._shared -= 1
            if self._shared == 0:
                self._cond.notify_all()

    def acquire_exclusive(self, timeout: Optional[float]) -> bool:
        with self._cond:
            self._waiting += 1
            try:
                got = self._cond.wait_for(
                    lambda: not self._exclusive and self._shared == 0, timeout
                )
                if got:
                    self._exclusive = True
                return got
            finally:
                self._waiting -= 1
                self._cond.notify_all()

    def release_exclusive(self) -> None:
        with self._cond:
            self._exclusive = False
            self._cond.notify_all()


class CallContext:
    """What a call handler gets besides its request: where the answer's chunks go as they are
    ready, whether the host cancelled the call, and how long is left until its deadline.

    It belongs to one call; the handler may hand it to other threads of its own.
    """

    def __init__(
        self,
        call_id: int,
        deadline_at: Optional[float],
        clock: Clock,
        emit: Callable[[_Message], bool],
    ) -> None:
        self._id = call_id
        self._deadline_at = deadline_at
        self._clock = clock
        self._emit = emit
        self._cancelled = threading.Event()
        self._answered = False

    @property
    def id(self) -> int:
        """The call's id in the protocol."""
        return self._id

    def send(self, chunk: Answer) -> None:
        """Sends the next part of the answer to the host now (text is sent as UTF-8; an empty
        chunk sends nothing). The caller gets the parts in order, before the call ends.

        Raises :class:`Cancelled` once the call is cancelled: the chunk is dropped; stop and let
        the exception propagate. (A thread that sends after the call was answered gets it too.)
        """
        if self._cancelled.is_set():
            raise Cancelled()
        if self._answered:
            raise Cancelled("the call was answered already")
        data = _as_bytes(chunk, "a chunk")
        if data:
            self._emit({"type": "chunk", "id": self._id, "data": _b64(data)})

    def is_cancelled(self) -> bool:
        """Whether the host cancelled the call: look at it between pieces of long work."""
        return self._cancelled.is_set()

    def wait_cancelled(self, timeout: Optional[float] = None) -> bool:
        """Waits until the call is cancelled or `timeout` seconds have passed (forever when
        None); whether it was cancelled. A cancellable sleep."""
        return self._cancelled.wait(timeout)

    def deadline(self) -> Optional[float]:
        """Seconds left until the call's deadline (0.0 once it has passed), or None when the call
        has none. The host cancels the call when it passes; a handler can look at it to answer
        with what it has before then."""
        if self._deadline_at is None:
            return None
        return max(0.0, self._deadline_at - self._clock())

    def expired(self) -> bool:
        """Whether the call's deadline has passed (False when it has none)."""
        return self._deadline_at is not None and self._clock() >= self._deadline_at

    def _cancel(self) -> None:
        self._cancelled.set()


class HostLogHandler(logging.Handler):
    """A :mod:`logging` handler that sends records to the host as ``log`` messages, which
    ballast writes to the plugin's log file. :meth:`Plugin.run` installs one on the root logger
    unless told not to. Before the plugin runs, and after its host has gone, records go to
    stderr (which ballast logs too)."""

    def __init__(self, plugin: Plugin, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self._plugin = plugin

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record)
            if not self._plugin._emit_log(message, _level_name(record.levelno)):
                sys.stderr.write(message + "\n")
                sys.stderr.flush()
        except Exception:
            self.handleError(record)


_StartHandler = Callable[[], None]
_RestoreHandler = Callable[[bytes], None]
_CallHandler = Callable[[bytes, CallContext], Answer]
_LevelHandler = Callable[[int], None]
_DrainHandler = Callable[[float], None]
_CheckpointHandler = Callable[[], Answer]
_HealthHandler = Callable[[], Optional[Health]]
_StopHandler = Callable[[], None]

_S = TypeVar("_S", bound=_StartHandler)
_R = TypeVar("_R", bound=_RestoreHandler)
_C = TypeVar("_C", bound=_CallHandler)
_L = TypeVar("_L", bound=_LevelHandler)
_D = TypeVar("_D", bound=_DrainHandler)
_K = TypeVar("_K", bound=_CheckpointHandler)
_H = TypeVar("_H", bound=_HealthHandler)
_T = TypeVar("_T", bound=_StopHandler)

#: The decorators' names: a subclass overrides ``on_<name>`` instead.
_DECORATORS = ("start", "restore", "call", "set_level", "drain", "checkpoint", "health", "stop")

_F = TypeVar("_F", bound=Callable[..., Any])

_STOP = object()


class _FdReader:
    """Lines read from a file descriptor (the process's stdin) while watching the wakeup pipe
    that a SIGTERM writes to: :meth:`readline` returns None once the process got SIGTERM."""

    def __init__(self, fd: int, wakeup: int) -> None:
        self._fd = fd
        self._wakeup = wakeup
        self._buffer = bytearray()
        self._ended = False

    def readline(self, limit: int) -> Optional[bytes]:
        """The next line with its newline, at most `limit` bytes of it (an over-long line comes
        in pieces), the last bytes without one at the end of input, b"" after that; None once
        SIGTERM came."""
        while True:
            end = self._buffer.find(b"\n", 0, limit)
            if end >= 0 or len(self._buffer) >= limit or self._ended:
                size = end + 1 if end >= 0 else min(limit, len(self._buffer))
                line = bytes(self._buffer[:size])
                del self._buffer[:size]
                return line
            ready, _, _ = select.select([self._fd, self._wakeup], [], [])
            if self._wakeup in ready:
                try:
                    signals = os.read(self._wakeup, 512)
                except BlockingIOError:
                    signals = b""
                if signal.SIGTERM in signals:
                    return None
            if self._fd in ready:
                chunk = os.read(self._fd, 1 << 16)
                if chunk:
                    self._buffer += chunk
                else:
                    self._ended = True


class _Lifecycle:
    """A lifecycle request read from the host, for the lifecycle thread."""

    __slots__ = ("kind", "id", "level", "deadline_at")

    def __init__(
        self, kind: str, request: int, level: int = 0, deadline_at: float = 0.0
    ) -> None:
        self.kind = kind
        self.id = request
        self.level = level
        self.deadline_at = deadline_at


class Plugin:
    """A ballast process plugin. Subclass it and override the ``on_*`` methods, or make one and
    register functions with its decorators (``@plugin.call``, ``@plugin.set_level``, ...);
    then call :meth:`run`.

    Settings, as class attributes or arguments of the constructor:

    * ``name``: the name sent in ``hello`` (ballast checks that it matches the configured one);
      None answers with the name ballast gives in ``init``.
    * ``version``: shown on the plugin's status page.
    * ``thread_safe``: whether calls may run at once, on up to ``max_concurrent_calls`` threads.
      When False (the default) calls run one at a time.
    * ``heartbeat_interval``: seconds between heartbeats; the plugin's config key
      ``heartbeat_s`` overrides it.

    While it runs, ``self.name``, ``self.level`` and ``self.config`` (the plugin's ``config``
    table from the ballast config) say where it stands.

    Which thread runs what: ``on_restore`` and ``on_start`` run on the thread that called
    :meth:`run`, before ``hello``; calls on the call threads; ``on_set_level``, ``on_drain`` and
    ``on_checkpoint`` one at a time, in the order they came, on the lifecycle thread;
    ``on_health`` on the heartbeat thread, at any time (keep it quick); ``on_stop`` at the end.
    A plugin that is not thread-safe never has two of its handlers running at once (health
    aside): a lifecycle request waits for the call running (at most ``LIFECYCLE_WAIT_S``) and
    holds back the next. A thread-safe plugin's lifecycle handlers run beside its calls, so
    that, say, a checkpoint is answered while a long search runs; its own locks keep its state
    consistent. ``on_drain`` always runs once no call is in flight.
    """

    name: Optional[str] = None
    version: Optional[str] = None
    thread_safe: bool = False
    max_concurrent_calls: int = 8
    heartbeat_interval: float = DEFAULT_HEARTBEAT_S

    level: int
    config: Dict[str, Any]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in _DECORATORS:
            if name in cls.__dict__:
                raise TypeError(
                    "%s defines `%s`, which is the decorator of that name: override `on_%s`"
                    % (cls.__name__, name, name)
                )

    def __init__(
        self,
        name: Optional[str] = None,
        *,
        version: Optional[str] = None,
        thread_safe: Optional[bool] = None,
        max_concurrent_calls: Optional[int] = None,
        heartbeat_interval: Optional[float] = None,
    ) -> None:
        if name is not None:
            self.name = name
        if version is not None:
            self.version = version
        if thread_safe is not None:
            self.thread_safe = thread_safe
        if max_concurrent_calls is not None:
            self.max_concurrent_calls = max_concurrent_calls
        if heartbeat_interval is not None:
            self.heartbeat_interval = heartbeat_interval
        self.level = 0
        self.config = {}
        self._handlers: Dict[str, Callable[..., Any]] = {}
        self._output: Optional[_Output] = None

    # The methods a subclass overrides. Each one's default runs the function registered with
    # the decorator of the same name, if any.

    def on_start(self) -> None:
        """Starts the plugin (threads, connections) before it says hello; ``self.level`` and
        ``self.config`` are set. If it raises, :meth:`run` raises it and the process exits
        without saying hello, which ballast reports as a failed start."""
        handler = self._handler("start")
        if handler is not None:
            handler()

    def on_restore(self, checkpoint: bytes) -> None:
        """Takes up the checkpoint a previous instance left (what its :meth:`on_checkpoint`
        returned). Called before :meth:`on_start`, only when ballast hands one over. If it
        raises, the checkpoint is ignored with a warning in the log and the plugin starts."""
        handler = self._handler("restore")
        if handler is not None:
            handler(checkpoint)

    def on_call(self, request: bytes, ctx: CallContext) -> Answer:
        """Answers one call: return the answer (or its last part after chunks sent with
        ``ctx.send``). Raise to fail the call: the caller gets the exception's message."""
        handler = self._handler("call")
        if handler is None:
            raise PluginError("this plugin takes no calls")
        answer: Answer = handler(request, ctx)
        return answer

    def on_set_level(self, level: int) -> None:
        """Moves to `level` (0 is full; higher levels are cheaper). ``self.level`` becomes
        `level` once this returns; raise to refuse it."""
        handler = self._handler("set_level")
        if handler is not None:
            handler(level)

    def on_drain(self, timeout: float) -> None:
        """Takes no new work and finishes background work within `timeout` seconds. No call is
        running (the SDK waited for them) and no new call is taken after a drain."""
        handler = self._handler("drain")
        if handler is not None:
            handler(timeout)

    def on_checkpoint(self) -> Answer:
        """The state to hand to the next instance (its :meth:`on_restore`), or None."""
        handler = self._handler("checkpoint")
        if handler is None:
            return None
        data: Answer = handler()
        return data

    def on_health(self) -> Optional[Health]:
        """The plugin's health, asked at every heartbeat and sent when it changes; None reports
        nothing. An exception reports the plugin unhealthy."""
        handler = self._handler("health")
        if handler is None:
            return None
        health: Optional[Health] = handler()
        return health

    def on_stop(self) -> None:
        """Stops the plugin's own threads and connections when its input ends (ballast stops
        it); calls still running were cancelled."""
        handler = self._handler("stop")
        if handler is not None:
            handler()

    # The decorators: each registers the function that the `on_*` method of its name runs.

    def start(self, handler: _S) -> _S:
        """Decorator: ``@plugin.start`` registers ``f()``, run as :meth:`on_start`."""
        return self._register("start", handler)

    def restore(self, handler: _R) -> _R:
        """Decorator: ``@plugin.restore`` registers ``f(checkpoint: bytes)``, run as
        :meth:`on_restore`."""
        return self._register("restore", handler)

    def call(self, handler: _C) -> _C:
        """Decorator: ``@plugin.call`` registers ``f(request: bytes, ctx: CallContext)``, run as
        :meth:`on_call`."""
        return self._register("call", handler)

    def set_level(self, handler: _L) -> _L:
        """Decorator: ``@plugin.set_level`` registers ``f(level: int)``, run as
        :meth:`on_set_level`."""
        return self._register("set_level", handler)

    def drain(self, handler: _D) -> _D:
        """Decorator: ``@plugin.drain`` registers ``f(timeout: float)``, run as
        :meth:`on_drain`."""
        return self._register("drain", handler)

    def checkpoint(self, handler: _K) -> _K:
        """Decorator: ``@plugin.checkpoint`` registers ``f() -> bytes | str | None``, run as
        :meth:`on_checkpoint`."""
        return self._register("checkpoint", handler)

    def health(self, handler: _H) -> _H:
        """Decorator: ``@plugin.health`` registers ``f() -> Health | None``, run as
        :meth:`on_health`."""
        return self._register("health", handler)

    def stop(self, handler: _T) -> _T:
        """Decorator: ``@plugin.stop`` registers ``f()``, run as :meth:`on_stop`."""
        return self._register("stop", handler)

    def _register(self, name: str, handler: _F) -> _F:
        if not callable(handler):
            raise TypeError("@plugin.%s decorates a function, not %r" % (name, handler))
        self._handlers_dict()[name] = handler
        return handler

    def _handler(self, name: str) -> Optional[Callable[..., Any]]:
        return self._handlers_dict().get(name)

    def _handlers_dict(self) -> Dict[str, Callable[..., Any]]:
        # A subclass whose __init__ forgot super().__init__() still works.
        handlers: Optional[Dict[str, Callable[..., Any]]] = self.__dict__.get("_handlers")
        if handlers is None:
            handlers = {}
            self.__dict__["_handlers"] = handlers
        return handlers

    # What the plugin sends to the host at any time, from any thread.

    def progress(self, percent: Optional[float] = None, phase: Optional[str] = None) -> bool:
        """Reports how far a long task has got. ballast raises ``stuck`` when the same phase and
        percent last for its stuck threshold; a percent of 100, or no phase, ends the tracking.
        Whether the message was written (False once the host has gone)."""
        message: _Message = {"type": "progress"}
        if percent is not None:
            if not isinstance(percent, (int, float)) or isinstance(percent, bool):
                raise TypeError("percent must be a number, not %s" % type(percent).__name__)
            if not 0 <= percent <= 100:
                raise ValueError("percent must be 0 to 100, not %r" % (percent,))
            message["percent"] = percent
        if phase is not None:
            message["phase"] = str(phase)
        return self._send(message)

    def gauge(self, name: str, value: float) -> bool:
        """Sets the gauge `name` shown on the plugin's status page (the latest value wins).
        Whether the message was written."""
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise TypeError("a gauge's value must be a number, not %s" % type(value).__name__)
        if not math.isfinite(value):
            raise ValueError("a gauge's value must be finite, not %r" % (value,))
        return self._send({"type": "gauge", "name": str(name), "value": value})

    def log(self, message: str, level: str = "info") -> bool:
        """Writes `message` to the plugin's log at `level` (error, warn, info, debug or trace).
        Records of :mod:`logging` arrive the same way. Whether the message was written."""
        if level == "warning":
            level = "warn"
        if level not in _LOG_LEVELS:
            raise ValueError(
                "log level must be one of %s, not %r" % (", ".join(_LOG_LEVELS), level)
            )
        return self._send({"type": "log", "level": level, "message": str(message)})

    def report_health(self, status: Union[Health, str], message: Optional[str] = None) -> bool:
        """Sends the plugin's health now (``ok``, ``degraded`` or ``unhealthy``, or a
        :class:`Health`); an unhealthy plugin is marked failed. Whether the message was
        written."""
        health = status if isinstance(status, Health) else Health(status, message)
        with self._state_lock():
            self.__dict__["_last_health"] = health
        return self._send(self._health_message(health))

    def _send(self, message: _Message) -> bool:
        output: Optional[_Output] = self.__dict__.get("_output")
        if output is None:
            raise RuntimeError("the plugin is not running: call run() first")
        return output.send(message)

    def _emit_log(self, message: str, level: str) -> bool:
        output: Optional[_Output] = self.__dict__.get("_output")
        if output is None:
            return False
        return output.send({"type": "log", "level": level, "message": message})

    def _state_lock(self) -> threading.Lock:
        lock: Optional[threading.Lock] = self.__dict__.get("_lock")
        if lock is None:
            lock = self.__dict__.setdefault("_lock", threading.Lock())
        assert lock is not None
        return lock

    @staticmethod
    def _health_message(health: Health) -> _Message:
        message: _Message = {"type": "health", "status": health.status}
        if health.message is not None:
            message["message"] = health.message
        return message

    # Running.

    def run(
        self,
        input: Optional[IO[Any]] = None,
        output: Optional[IO[Any]] = None,
        *,
        clock: Optional[Clock] = None,
        install_logging: bool = True,
    ) -> None:
        """Speaks the protocol on `input` and `output` (stdin and stdout when None) until
        `input` ends, then returns.

        With the process's own stdout, ``sys.stdout`` is pointed at stderr while it runs, so
        that ``print`` cannot break the protocol (ballast logs stderr). With the process's own
        stdin, on the main thread, SIGTERM (which ballast sends right after closing stdin when it
        stops the plugin) ends the input too, so that the plugin stops as at the end of its
        input and exits with status 0; after it returns, SIGTERM is ignored, as the process is
        about to exit. With `install_logging` a :class:`HostLogHandler` on the
        root logger sends :mod:`logging` records to the host (and the root logger's level
        becomes INFO if nothing configured it). `clock` replaces ``time.monotonic`` for
        deadlines (for tests).
        """
        stdin_fd: Optional[int] = None
        if input is None:
            input = sys.stdin.buffer
            if threading.current_thread() is threading.main_thread():
                try:
                    stdin_fd = sys.stdin.fileno()
                except (AttributeError, OSError, ValueError):
                    stdin_fd = None
        redirected = None
        if output is None:
            output = sys.stdout.buffer
            redirected = sys.stdout
            sys.stdout = sys.stderr
        handler: Optional[HostLogHandler] = None
        root = logging.getLogger()
        root_level: Optional[int] = None
        if install_logging:
            handler = HostLogHandler(self)
            if not root.handlers and root.level == logging.WARNING:
                root_level = root.level
                root.setLevel(logging.INFO)
            root.addHandler(handler)
        session = _Session(self, input, _Output(output), clock or time.monotonic)
        wakeup: Optional[Tuple[int, int]] = None
        previous_wakeup = -1
        if stdin_fd is not None:
            # The self-pipe trick: whichever thread the kernel hands SIGTERM to, the signal
            # writes a byte to the pipe, and the reading loop waits on stdin and the pipe at
            # once, so it sees the signal however it falls.
            wakeup = os.pipe()
            for fd in wakeup:
                os.set_blocking(fd, False)
            signal.signal(signal.SIGTERM, session.terminate)
            previous_wakeup = signal.set_wakeup_fd(wakeup[1], warn_on_full_buffer=False)
            session.input = _FdReader(stdin_fd, wakeup[0])
        try:
            session.run()
        finally:
            if wakeup is not None:
                signal.set_wakeup_fd(previous_wakeup)
                # The process is about to exit: ballast's SIGTERM, sent right after it closed
                # stdin, must not turn that into a death by the signal.
                signal.signal(signal.SIGTERM, _ignore_signal)
                for fd in wakeup:
                    os.close(fd)
            if handler is not None:
                root.removeHandler(handler)
            if root_level is not None:
                root.setLevel(root_level)
            if redirected is not None:
                sys.stdout = redirected


class _Session:
    """One run of a plugin: the reading loop and the threads it starts."""

    def __init__(self, plugin: Plugin, input: IO[Any], output: _Output, clock: Clock) -> None:
        self.plugin = plugin
        self.input: Union[IO[Any], _FdReader] = input
        self.output = output
        self.clock = clock
        # Only a plugin that is not thread-safe has its handlers kept apart.
        self.gate = None if plugin.thread_safe else _Gate()
        self.calls: Dict[int, CallContext] = {}
        self.calls_changed = threading.Condition()
        self.draining = False
        self.started = False
        self.stopping = threading.Event()
        self.terminated = False
        self.call_queue: queue.Queue[Any] = queue.Queue()
        self.lifecycle_queue: queue.Queue[Any] = queue.Queue()
        self.threads: List[threading.Thread] = []

    def send(self, message: _Message) -> bool:
        return self.output.send(message)

    def warn(self, message: str) -> None:
        self.send({"type": "log", "level": "warn", "message": message})

    def error(self, request: int, message: str) -> None:
        self.send({"type": "error", "id": request, "message": message})

    # The reading loop.

    def run(self) -> None:
        plugin = self.plugin
        plugin.__dict__["_output"] = self.output
        plugin.__dict__["_last_health"] = None
        try:
            for line in self.lines():
                message = self.parse(line)
                if message is not None:
                    self.dispatch(message)
        finally:
            self.finish()

    def terminate(self, signum: int, frame: Any) -> None:
        """The SIGTERM handler: the input ends before the next line is read (the reading loop
        also sees the signal in the wakeup pipe when it is waiting)."""
        self.terminated = True

    def read(self) -> bytes:
        """At most one line of input (more than the limit when it is over-long); empty at its
        end, when it cannot be read, or once the process was told to terminate."""
        if self.terminated:
            return b""
        try:
            line = self.input.readline(MAX_LINE_BYTES + 1)
        except (OSError, ValueError):
            return b""
        if line is None:  # SIGTERM, from an _FdReader
            self.terminated = True
            return b""
        if isinstance(line, str):
            return line.encode("utf-8", errors="surrogateescape")
        return bytes(line)

    def lines(self) -> Iterator[bytes]:
        """The input's lines, without their newline; an over-long one is skipped with a
        warning."""
        while True:
            line = self.read()
            if not line:
                return
            if not line.endswith(b"\n") and len(line) > MAX_LINE_BYTES:
                length = len(line)
                while not line.endswith(b"\n"):
                    line = self.read()
                    if not line:
                        break
                    length += len(line)
                self.warn(
                    "ignoring a line of %d bytes: the limit is %d" % (length, MAX_LINE_BYTES)
                )
                continue
            yield line.rstrip(b"\r\n")

    def parse(self, line: bytes) -> Optional[_Message]:
        if not line.strip():
            return None
        try:
            message = json.loads(line)
        except (ValueError, RecursionError) as error:
            self.warn("ignoring a line that is not JSON (%s): %s" % (error, _head(line)))
            return None
        if not isinstance(message, dict):
            self.warn("ignoring a line that is not a JSON object: %s" % _head(line))
            return None
        kind = message.get("type")
        if not isinstance(kind, str):
            self.warn("ignoring a message without a type: %s" % _head(line))
            return None
        return message

    def dispatch(self, message: _Message) -> None:
        kind = message["type"]
        if kind == "init":
            if self.started:
                self.warn("init was sent twice; the second is ignored")
            else:
                self.init(message)
            return
        if kind not in ("call", "cancel", "set_level", "drain", "checkpoint"):
            return  # A newer host's message: ignored, as the protocol asks.
        request = _u64(message.get("id"))
        if request is None:
            self.warn(
                "ignoring a %s whose id is not an unsigned integer: %r" % (kind, message.get("id"))
            )
            return
        if kind == "cancel":
            self.cancel(request)
            return
        if not self.started:
            self.error(request, "the plugin has not been initialized: init comes first")
            return
        try:
            if kind == "call":
                self.accept_call(request, message)
            elif kind == "set_level":
                level = _u64(message.get("level"))
                if level is None or level >= 1 << 32:
                    raise ValueError(
                        "level must be an unsigned integer, not %r" % (message.get("level"),)
                    )
                self.lifecycle_queue.put(_Lifecycle("set_level", request, level=level))
            elif kind == "drain":
                deadline_ms = _duration(message.get("deadline_ms"))
                if deadline_ms is None:
                    raise ValueError(
                        "deadline_ms must be a non-negative number, not %r"
                        % (message.get("deadline_ms"),)
                    )
                # Calls read after the drain are refused, whenever the drain itself runs.
                self.draining = True
                deadline_at = self.clock() + deadline_ms / 1000.0
                self.lifecycle_queue.put(_Lifecycle("drain", request, deadline_at=deadline_at))
            else:
                self.lifecycle_queue.put(_Lifecycle("checkpoint", request))
        except ValueError as error:
            self.error(request, "bad %s request: %s" % (kind, error))

    # Start.

    def init(self, message: _Message) -> None:
        plugin = self.plugin
        self.output.hold()
        given = message.get("name")
        if plugin.name is None and isinstance(given, str):
            plugin.name = given
        plugin.level = _u64(message.get("level", 0)) or 0
        config = message.get("config")
        plugin.config = config if isinstance(config, dict) else {}
        checkpoint = message.get("checkpoint")
        if checkpoint is not None:
            try:
                if not isinstance(checkpoint, str):
                    raise ValueError("it is not a base64 string")
                data = base64.b64decode(checkpoint, validate=True)
                plugin.on_restore(data)
            except Exception as error:
                self.warn("ignoring the checkpoint: %s" % _describe(error))
        plugin.on_start()
        hello: _Message = {
            "type": "hello",
            "name": plugin.name if plugin.name is not None else "",
            "protocol": PROTOCOL_VERSION,
        }
        if plugin.version is not None:
            hello["version"] = plugin.version
        self.send(hello)
        self.started = True
        self.start_threads()

    def heartbeat_interval(self) -> float:
        given = self.plugin.config.get("heartbeat_s", self.plugin.heartbeat_interval)
        every = _duration(given)
        if every is None or every <= 0:
            self.warn(
                "heartbeat_s must be a positive number of seconds, not %r: using %s"
                % (given, DEFAULT_HEARTBEAT_S)
            )
            return DEFAULT_HEARTBEAT_S
        return every

    def start_threads(self) -> None:
        workers = max(1, int(self.plugin.max_concurrent_calls)) if self.plugin.thread_safe else 1
        for n in range(workers):
            self.spawn("ballast-call-%d" % n, self.call_worker)
        self.spawn("ballast-lifecycle", self.lifecycle_worker)
        every = self.heartbeat_interval()
        self.spawn("ballast-heartbeat", lambda: self.heartbeats(every))

    def spawn(self, name: str, target: Callable[[], None]) -> None:
        # Daemon threads: a handler that never returns cannot keep the process alive.
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self.threads.append(thread)

    # Calls.

    def accept_call(self, request: int, message: _Message) -> None:
        data = message.get("data")
        if not isinstance(data, str):
            raise ValueError("data must be a base64 string")
        try:
            payload = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError) as error:
            raise ValueError("data is not base64: %s" % error) from None
        deadline_ms = _duration(message.get("deadline_ms"))
        if deadline_ms is None and message.get("deadline_ms") is not None:
            raise ValueError(
                "deadline_ms must be a non-negative number, not %r" % (message.get("deadline_ms"),)
            )
        if self.draining:
            self.error(request, "the plugin is draining: it takes no new calls")
            return
        deadline_at = None if deadline_ms is None else self.clock() + deadline_ms / 1000.0
        ctx = CallContext(request, deadline_at, self.clock, self.send)
        with self.calls_changed:
            if request in self.calls:
                self.warn("ignoring a call with the id %d of a call still running" % request)
                return
            self.calls[request] = ctx
        self.call_queue.put((ctx, payload))

    def cancel(self, request: int) -> None:
        # A call already answered (or never sent) has nothing to cancel; nothing answers this.
        with self.calls_changed:
            ctx = self.calls.get(request)
        if ctx is not None:
            ctx._cancel()

    def call_worker(self) -> None:
        while True:
            item = self.call_queue.get()
            if item is _STOP:
                return
            ctx, payload = item
            try:
                self.serve(ctx, payload)
            finally:
                with self.calls_changed:
                    self.calls.pop(ctx.id, None)
                    self.calls_changed.notify_all()

    def serve(self, ctx: CallContext, payload: bytes) -> None:
        """Runs one call and sends its one answer, or nothing once it is cancelled."""
        if ctx.is_cancelled():
            return  # Cancelled while it waited for a thread: it never starts.
        answer: Optional[_Message]
        if self.gate is not None:
            self.gate.acquire_shared()
        try:
            result = self.plugin.on_call(payload, ctx)
            data = _as_bytes(result, "a call's answer")
            answer = {"type": "response", "id": ctx.id}
            if data:
                answer["data"] = _b64(data)
        except BaseException as error:  # An error answers the call; it never ends the plugin.
            answer = {"type": "error", "id": ctx.id, "message": _describe(error)}
        finally:
            if self.gate is not None:
                self.gate.release_shared()
        ctx._answered = True
        if not ctx.is_cancelled():
            self.send(answer)

    # Lifecycle requests.

    def lifecycle_worker(self) -> None:
        while True:
            item = self.lifecycle_queue.get()
            if item is _STOP:
                return
            try:
                data = self.lifecycle(item)
                answer: _Message = {"type": "response", "id": item.id}
                if data:
                    answer["data"] = _b64(data)
            except BaseException as error:
                answer = {"type": "error", "id": item.id, "message": _describe(error)}
            self.send(answer)

    def lifecycle(self, request: _Lifecycle) -> bytes:
        """Runs a lifecycle request; the data of its answer."""
        plugin = self.plugin
        if request.kind == "drain":
            left = self.wait_for_calls(request.deadline_at - self.clock())
            if left:
                raise PluginError(
                    "%d call%s still running at the drain deadline"
                    % (left, "" if left == 1 else "s")
                )
            timeout = max(0.0, request.deadline_at - self.clock())
            self.exclusive(timeout, lambda: plugin.on_drain(timeout))
            return b""
        if request.kind == "set_level":
            level = request.level

            def change() -> None:
                plugin.on_set_level(level)
                plugin.level = level

            self.exclusive(LIFECYCLE_WAIT_S, change)
            return b""
        box: List[bytes] = []
        self.exclusive(
            LIFECYCLE_WAIT_S,
            lambda: box.append(_as_bytes(plugin.on_checkpoint(), "a checkpoint")),
        )
        return box[0]

    def exclusive(self, timeout: float, action: Callable[[], None]) -> None:
        """Runs `action`: for a plugin that is not thread-safe once no call runs, waiting at
        most `timeout` seconds for the one running; beside the calls for one that is."""
        if self.gate is None:
            action()
            return
        if not self.gate.acquire_exclusive(timeout):
            raise PluginError("calls still running after %gs" % timeout)
        try:
            action()
        finally:
            self.gate.release_exclusive()

    def wait_for_calls(self, timeout: float) -> int:
        """Waits until no call is in flight, at most `timeout` seconds; how many are left."""
        end = time.monotonic() + max(0.0, timeout)
        with self.calls_changed:
            while self.calls:
                left = end - time.monotonic()
                if left <= 0:
                    break
                self.calls_changed.wait(left)
            return len(self.calls)

    # Heartbeats and health.

    def heartbeats(self, every: float) -> None:
        while not self.stopping.wait(every):
            if not self.beat():
                return

    def beat(self) -> bool:
        """One heartbeat, and the health if it changed; False once the host has gone."""
        if not self.send({"type": "heartbeat"}):
            return False
        try:
            health = self.plugin.on_health()
        except Exception as error:
            health = Health.unhealthy("the health check failed: %s" % _describe(error))
        if health is None:
            return True
        if not isinstance(health, Health):
            health = Health.unhealthy(
                "on_health must return a Health or None, not %s" % type(health).__name__
            )
        with self.plugin._state_lock():
            changed = self.plugin.__dict__.get("_last_health") != health
            self.plugin.__dict__["_last_health"] = health
        if changed:
            return self.send(Plugin._health_message(health))
        return True

    # The end of input.

    def finish(self) -> None:
        """The host closed the input: answer the lifecycle requests already read, cancel the
        calls, give them a moment, stop the plugin."""
        if not self.started:
            self.output.close()
            return
        self.lifecycle_queue.put(_STOP)
        for thread in self.threads:
            if thread.name == "ballast-lifecycle":
                thread.join()
        with self.calls_changed:
            running = list(self.calls.values())
        for ctx in running:
            ctx._cancel()
        self.wait_for_calls(STOP_GRACE_S)
        self.stopping.set()
        for _ in self.threads:
            self.call_queue.put(_STOP)
        try:
            self.plugin.on_stop()
        except Exception as error:
            self.send(
                {"type": "log", "level": "error", "message": "stop failed: %s" % _describe(error)}
            )
        self.output.close()


def _ignore_signal(signum: int, frame: Any) -> None:
    """A signal handler that does nothing."""


def _u64(value: Any) -> Optional[int]:
    """`value` if it is an unsigned 64-bit integer (a request's id, a level), else None."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 64:
        return value
    return None


def _duration(value: Any) -> Optional[float]:
    """`value` if it is a finite non-negative number (a duration), else None."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if math.isfinite(value) and value >= 0:
            return float(value)
    return None


def _head(line: bytes) -> str:
    """The start of a bad line, for a log message."""
    text = line[:120].decode("utf-8", errors="replace")
    return text + ("..." if len(line) > 120 else "")


def run(
    plugin: Union[Plugin, Type[Plugin]],
    input: Optional[IO[Any]] = None,
    output: Optional[IO[Any]] = None,
    *,
    clock: Optional[Clock] = None,
    install_logging: bool = True,
) -> None:
    """Runs `plugin` (an instance, or a subclass of :class:`Plugin` to make one of) until its
    input ends: see :meth:`Plugin.run`."""
    instance = plugin() if isinstance(plugin, type) else plugin
    instance.run(input, output, clock=clock, install_logging=install_logging)

