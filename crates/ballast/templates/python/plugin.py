#!/usr/bin/env python3
"""The `{{name}}` plugin for ballast: greets whoever calls it, remembers recent callers, and
counts its calls across sheds. It is written on the `ballast_plugin` SDK (the package beside
this file), which speaks ballast's JSON-lines protocol on stdin and stdout.

What each part of the contract looks like here:

* Levels. Level 0 ("full") remembers the last 1024 callers, level 1 ("lite") the last 16. A
  process plugin declares its levels and the memory each needs in the ballast config
  (ballast.toml); ballast lowers the level under pressure before it sheds the plugin, and
  measures what the process holds.
* Calls run on several threads at once (`thread_safe = True`); the shared state is under a
  lock. `recent` answers the callers remembered; anything else is a name to greet.
* Streamed calls: `count:N` streams N lines, then `done`, and stops as soon as the call is
  cancelled (the caller went away, the deadline passed, or the plugin is being shed).
* Drain and checkpoint: before ballast sheds the plugin it drains it, then asks for a
  checkpoint, which the next instance gets in `on_restore`, so the call count survives.
* Errors: an exception in a method goes back to the caller as an error; the plugin goes on.
* Logging: the `logging` module's records go to the plugin's log in ballast (`print` goes there
  too, by stderr, never onto the protocol's stdout).
"""

import logging
import threading
from collections import deque
from typing import Deque

import ballast_plugin
from ballast_plugin import CallContext, PluginError

log = logging.getLogger("{{name}}")

#: How many recent callers each level remembers (level 0 first).
REMEMBERED = [1024, 16]

#: The longest caller name remembered, in characters.
LONGEST_NAME = 256

#: The most lines `count:N` streams.
MOST_LINES = 100000

#: The settings this plugin reads from its `config` table (`heartbeat_s` is the SDK's).
SETTINGS = {"greeting", "heartbeat_s"}


def check_level(level: int) -> None:
    """Refuses a level this plugin does not have (the config declares the same ones)."""
    if level >= len(REMEMBERED):
        raise PluginError("there are levels 0 to %d, not %d" % (len(REMEMBERED) - 1, level))


class Greeter(ballast_plugin.Plugin):
    """The `{{name}}` plugin. Its name is the one the ballast config gives it."""

    version = "0.1.0"
    thread_safe = True

    def __init__(self) -> None:
        super().__init__()
        self.greeting = "hello"
        self.calls = 0
        self.recent: Deque[str] = deque()
        self.lock = threading.Lock()

    def on_restore(self, checkpoint: bytes) -> None:
        # What on_checkpoint returned in the previous instance. If this raises (a checkpoint
        # of another version, say), the SDK logs a warning and the plugin starts afresh.
        text = checkpoint.decode("utf-8")
        if not text.startswith("calls="):
            raise ValueError("not a checkpoint of this plugin: %r" % text[:40])
        self.calls = int(text[len("calls="):])

    def on_start(self) -> None:
        # Read the config, open connections, start threads: a failure here (an exception) is
        # a failed start that ballast reports with this process's last output.
        unknown = sorted(set(self.config) - SETTINGS)
        if unknown:
            raise PluginError("unknown config key `%s`; the only key is `greeting`" % unknown[0])
        greeting = self.config.get("greeting", "hello")
        if not isinstance(greeting, str):
            raise PluginError("config key `greeting` must be a string, got %r" % (greeting,))
        check_level(self.level)
        self.greeting = greeting
        self.recent = deque(maxlen=REMEMBERED[self.level])
        log.info("created at level %d, %d calls served before", self.level, self.calls)

    def on_set_level(self, level: int) -> None:
        check_level(level)
        with self.lock:
            self.recent = deque(self.recent, maxlen=REMEMBERED[level])
        log.info("now at level %d", level)

    def on_call(self, request: bytes, ctx: CallContext) -> str:
        try:
            caller = request.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise PluginError("the request is not UTF-8") from None
        if caller.startswith("count:"):
            return self.count(caller[len("count:"):], ctx)
        with self.lock:
            if caller == "recent":
                return "\n".join(self.recent)
            self.recent.append(caller[:LONGEST_NAME])
            self.calls += 1
            n = self.calls
        return "%s, %s! (call %d, level %d)" % (self.greeting, caller, n, self.level)

    def count(self, text: str, ctx: CallContext) -> str:
        """Streams the lines 1 to N, each as soon as it is ready, then `done`."""
        try:
            n = int(text)
        except ValueError:
            n = -1
        if not 0 <= n <= MOST_LINES:
            raise PluginError("count:N takes N from 0 to %d" % MOST_LINES)
        for i in range(1, n + 1):
            # Raises Cancelled once the call is cancelled: the call stops here, and nothing
            # more is sent for it.
            ctx.send("%d\n" % i)
        return "done\n"

    def on_drain(self, timeout: float) -> None:
        # ballast sends no call from here on and the SDK has waited for the calls in flight.
        # Finish background work (flush, close) within `timeout` seconds; there is none here.
        log.info("draining within %d ms", timeout * 1000)

    def on_checkpoint(self) -> bytes:
        with self.lock:
            return ("calls=%d" % self.calls).encode()

    def on_stop(self) -> None:
        # ballast closed stdin: stop threads, close connections.
        log.info("stopping")


if __name__ == "__main__":
    ballast_plugin.run(Greeter)
