#!/usr/bin/env python3
"""{{name}}: a ballast process plugin, written on the ballast_plugin SDK.

It answers two requests; replace them with what your integration does:

* `ping` answers `pong from {{name}} (level L, call N)`.
* `count:N` or `count:N:MS` streams the numbers 1 to N, one line each, MS milliseconds apart
  (none by default), then a summary line: a long answer that the caller gets as it goes. It
  stops at once when ballast cancels the call (`ctx.send` raises), and at the call's deadline,
  which its summary says.

Level 0 ("full") counts up to 1000, level 1 ("lite") up to 10. The plugin counts the calls it
answered and hands the count over in its checkpoint, so the instance ballast starts after a
shed or a restart goes on counting.

Run it under ballast with `kind = "process"` and `protocol = "json-lines"` (see README.md), or
by hand: `echo '{"type":"init","name":"{{name}}","level":0,"config":{}}' | ./plugin.py`.
"""

import json
import logging
import threading

import ballast_plugin
from ballast_plugin import CallContext, Health, PluginError

log = logging.getLogger("{{name}}")

#: The most numbers `count` streams at each level (0 is full; higher levels are cheaper).
COUNT_LIMIT = [1000, 10]


class Integration(ballast_plugin.Plugin):
    # The name comes from ballast's config; set `name = "{{name}}"` to have ballast check that
    # the config runs this script under that name.
    version = "0.1.0"
    # Calls run at once on several threads; the shared counter is under a lock.
    thread_safe = True

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()
        self.calls = 0

    def on_restore(self, checkpoint: bytes) -> None:
        """The checkpoint of the previous instance (what on_checkpoint returned)."""
        self.calls = int(json.loads(checkpoint)["calls"])

    def on_start(self) -> None:
        """Open connections, start threads: runs before ballast is told the plugin is up."""
        log.info("started at level %d; %d calls answered before", self.level, self.calls)

    def on_set_level(self, level: int) -> None:
        """Move to `level` in place (free memory going down, take it back going up)."""
        if level >= len(COUNT_LIMIT):
            raise PluginError("there are levels 0 to %d, not %d" % (len(COUNT_LIMIT) - 1, level))
        log.info("now at level %d", level)

    def on_call(self, request: bytes, ctx: CallContext) -> str:
        text = request.decode("utf-8", errors="replace").strip()
        with self.lock:
            self.calls += 1
            calls = self.calls
        self.gauge("calls", calls)
        if text == "ping":
            return "pong from %s (level %d, call %d)" % (self.name, self.level, calls)
        if text.startswith("count:"):
            return self.count(text, ctx)
        raise PluginError("unknown request %r: send `ping` or `count:N[:MS]`" % text[:80])

    def count(self, text: str, ctx: CallContext) -> str:
        try:
            parts = [int(part) for part in text.split(":")[1:]]
            n, pause_ms = parts[0], (parts[1] if len(parts) > 1 else 0)
        except (ValueError, IndexError):
            raise PluginError("count takes numbers: count:N or count:N:MS") from None
        n = max(0, min(n, COUNT_LIMIT[self.level]))
        sent = 0
        stopped = None
        for i in range(1, n + 1):
            if ctx.expired():
                stopped = "deadline"
                break
            ctx.send("%d\n" % i)  # raises Cancelled once ballast cancels the call
            sent += 1
            if pause_ms and i < n:
                ctx.wait_cancelled(pause_ms / 1000.0)  # a sleep that a cancel ends
        summary = {"plugin": self.name, "level": self.level, "sent": sent, "stopped": stopped}
        return json.dumps(summary) + "\n"

    def on_drain(self, timeout: float) -> None:
        """No call runs any more (the SDK waited for them): finish background work."""
        log.info("drained")

    def on_checkpoint(self) -> bytes:
        with self.lock:
            return json.dumps({"calls": self.calls}).encode()

    def on_health(self) -> Health:
        """Asked at every heartbeat; report `Health.degraded(...)` or `Health.unhealthy(...)`
        when something is wrong (an unhealthy plugin is marked failed)."""
        return Health.ok()

    def on_stop(self) -> None:
        """ballast closed stdin: close connections, stop threads."""
        log.info("stopping after %d calls", self.calls)


if __name__ == "__main__":
    ballast_plugin.run(Integration)
