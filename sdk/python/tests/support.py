"""A fake host for the tests: runs a plugin on a pipe pair in a thread, writes its input and
reads its output as decoded messages."""

from __future__ import annotations

import base64
import json
import os
import queue
import threading
from typing import Any, Callable, Dict, List, Optional

import ballast_plugin

Message = Dict[str, Any]

#: How long a test waits for a message before it fails (a bound on a hang, not a timing goal).
PATIENCE_S = 10.0


class FakeClock:
    """A monotonic clock that moves only when a test moves it."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


class Host:
    """Plays ballast's side of the protocol against `plugin`, over real pipes."""

    def __init__(
        self,
        plugin: ballast_plugin.Plugin,
        clock: Optional[ballast_plugin.Clock] = None,
        install_logging: bool = False,
    ) -> None:
        to_plugin_r, to_plugin_w = os.pipe()
        from_plugin_r, from_plugin_w = os.pipe()
        self._input = os.fdopen(to_plugin_w, "wb")
        self._output = os.fdopen(from_plugin_r, "rb")
        plugin_in = os.fdopen(to_plugin_r, "rb")
        plugin_out = os.fdopen(from_plugin_w, "wb")
        self.messages: "queue.Queue[Optional[Message]]" = queue.Queue()
        self.raised: Optional[BaseException] = None
        self.seen: List[Message] = []
        self.ended = False

        def serve() -> None:
            try:
                plugin.run(plugin_in, plugin_out, clock=clock, install_logging=install_logging)
            except BaseException as error:  # the test looks at it
                self.raised = error
            finally:
                plugin_out.close()
                plugin_in.close()

        def read() -> None:
            with self._output:
                for line in self._output:
                    self.messages.put(json.loads(line))
            self.messages.put(None)

        self.runner = threading.Thread(target=serve, daemon=True)
        self.reader = threading.Thread(target=read, daemon=True)
        self.runner.start()
        self.reader.start()

    def send(self, message: Message) -> None:
        self.send_raw(json.dumps(message).encode() + b"\n")

    def send_raw(self, data: bytes) -> None:
        self._input.write(data)
        self._input.flush()

    def next(self) -> Optional[Message]:
        """The next message; None once the plugin's output has ended."""
        if self.ended:
            return None
        try:
            message = self.messages.get(timeout=PATIENCE_S)
        except queue.Empty:
            raise AssertionError(
                "no message within %ss; seen so far: %r" % (PATIENCE_S, self.seen)
            ) from None
        if message is None:
            self.ended = True
        else:
            self.seen.append(message)
        return message

    def until(self, last: Callable[[Message], bool]) -> List[Message]:
        """Every message up to and including the first for which `last` holds."""
        got: List[Message] = []
        while True:
            message = self.next()
            if message is None:
                raise AssertionError("the output ended before the message wanted: %r" % got)
            got.append(message)
            if last(message):
                return got

    def answer(self, request: int) -> Message:
        """The response or error to request `request`, seen already or the next to come."""

        def answers(m: Message) -> bool:
            return m.get("id") == request and m["type"] in ("response", "error")

        for message in self.seen:
            if answers(message):
                return message
        return self.until(answers)[-1]

    def init(
        self,
        name: str = "test",
        level: int = 0,
        config: Optional[Message] = None,
        checkpoint: Optional[bytes] = None,
    ) -> Message:
        """Sends init and returns the hello."""
        message: Message = {
            "type": "init",
            "name": name,
            "level": level,
            "config": {"heartbeat_s": 3600} if config is None else config,
        }
        if checkpoint is not None:
            message["checkpoint"] = b64(checkpoint)
        self.send(message)
        return self.until(lambda m: m["type"] == "hello")[-1]

    def call(self, request: int, data: bytes, deadline_ms: Optional[float] = None) -> None:
        message: Message = {"type": "call", "id": request, "data": b64(data)}
        if deadline_ms is not None:
            message["deadline_ms"] = deadline_ms
        self.send(message)

    def request(self, kind: str, request: int, **fields: Any) -> Message:
        """Sends a request of type `kind` and returns its answer."""
        self.send(dict(type=kind, id=request, **fields))
        return self.answer(request)

    def close(self) -> List[Message]:
        """Ends the plugin's input; every message after, once the plugin has returned."""
        self._input.close()
        rest: List[Message] = []
        while True:
            message = self.next()
            if message is None:
                break
            rest.append(message)
        self.runner.join(PATIENCE_S)
        if self.runner.is_alive():
            raise AssertionError("run() did not return after the end of its input")
        return rest

    def of(self, request: int) -> List[Message]:
        """Every message seen for request `request`."""
        return [m for m in self.seen if m.get("id") == request]

    def logs(self) -> List[Message]:
        return [m for m in self.seen if m["type"] == "log"]
