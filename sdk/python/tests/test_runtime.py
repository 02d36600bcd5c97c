"""What the SDK does around the messages: cancellation, concurrency, heartbeats and health,
progress and gauges, logging, the end of input, and the two ways to write a plugin."""

from __future__ import annotations

import collections
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import unittest
from typing import Any, Callable, Dict, List, Optional

import ballast_plugin
from ballast_plugin import Cancelled, CallContext, Health, Plugin

from .support import PATIENCE_S, Host, b64, unb64

#: How long a test gives a broken SDK to show itself (a call that should not run, running).
#: A correct SDK makes the test wait this long; it never decides the outcome by itself.
WINDOW_S = 0.2


class Cancel(unittest.TestCase):
    def test_a_cancelled_call_stops_at_its_next_send_and_is_not_answered(self) -> None:
        started = threading.Event()
        outcome: List[str] = []
        plugin = Plugin()

        @plugin.call
        def search(request: bytes, ctx: CallContext) -> bytes:
            ctx.send(b"first result\n")
            started.set()
            outcome.append("cancelled" if ctx.wait_cancelled(PATIENCE_S) else "not cancelled")
            try:
                ctx.send(b"second result\n")
            except Cancelled:
                outcome.append("send raised Cancelled")
                raise
            return b"summary"

        host = Host(plugin)
        host.init()
        host.call(1, b"q", deadline_ms=60000)
        self.assertTrue(started.wait(PATIENCE_S))
        host.send({"type": "cancel", "id": 1})
        # A drain answers once no call is in flight: whatever call 1 sent is before it.
        self.assertEqual(host.request("drain", 2, deadline_ms=10000)["type"], "response")
        self.assertEqual(outcome, ["cancelled", "send raised Cancelled"])
        self.assertEqual(
            [(m["type"], unb64(m["data"])) for m in host.of(1)],
            [("chunk", b"first result\n")],
            "nothing after the cancel, not even an error",
        )
        host.close()

    def test_a_call_that_ignores_its_cancel_is_not_answered_either(self) -> None:
        started = threading.Event()
        plugin = Plugin()

        @plugin.call
        def stubborn(request: bytes, ctx: CallContext) -> bytes:
            started.set()
            ctx.wait_cancelled(PATIENCE_S)
            if request == b"raise":
                raise RuntimeError("after the cancel")
            return b"an answer nobody waits for"

        host = Host(plugin)
        host.init()
        for n, request in ((1, b"return"), (2, b"raise")):
            started.clear()
            host.call(n, request)
            self.assertTrue(started.wait(PATIENCE_S))
            host.send({"type": "cancel", "id": n})
        host.request("drain", 3, deadline_ms=10000)
        self.assertEqual(host.of(1) + host.of(2), [])
        host.close()

    def test_a_chunk_sent_after_the_answer_is_dropped(self) -> None:
        contexts: List[CallContext] = []
        plugin = Plugin()

        @plugin.call
        def quick(request: bytes, ctx: CallContext) -> bytes:
            contexts.append(ctx)
            return b"answer"

        host = Host(plugin)
        host.init()
        host.call(1, b"")
        host.answer(1)
        with self.assertRaisesRegex(Cancelled, "the call was answered already"):
            contexts[0].send(b"late")
        host.request("checkpoint", 2)
        self.assertEqual(host.of(1), [{"type": "response", "id": 1, "data": b64(b"answer")}])
        host.close()

    def test_a_call_cancelled_while_it_waits_for_a_thread_never_runs(self) -> None:
        started = threading.Event()
        release = threading.Event()
        ran: List[bytes] = []
        plugin = Plugin()  # not thread-safe: one call at a time

        @plugin.call
        def one_at_a_time(request: bytes, ctx: CallContext) -> bytes:
            ran.append(request)
            started.set()
            release.wait(PATIENCE_S)
            return request

        host = Host(plugin)
        host.init()
        host.call(1, b"first")
        self.assertTrue(started.wait(PATIENCE_S))
        host.call(2, b"queued")
        host.send({"type": "cancel", "id": 2})
        host.send({"type": "cancel", "id": 99})  # unknown: nothing to cancel, nothing said
        # The reading thread answers a bad request itself: once it has, the cancels were read.
        host.send({"type": "call", "id": 3, "data": "***"})
        self.assertEqual(host.answer(3)["type"], "error")
        release.set()
        self.assertEqual(host.answer(1)["type"], "response")
        host.request("drain", 4, deadline_ms=10000)
        self.assertEqual(ran, [b"first"])
        self.assertEqual(host.of(2) + host.of(99), [])
        host.close()


class Concurrency(unittest.TestCase):
    def test_a_thread_safe_plugin_runs_calls_at_once(self) -> None:
        together = threading.Barrier(4, timeout=PATIENCE_S)
        plugin = Plugin(thread_safe=True, max_concurrent_calls=4)

        @plugin.call
        def meet(request: bytes, ctx: CallContext) -> str:
            together.wait()  # BrokenBarrierError unless all four run at once
            return "met"

        host = Host(plugin)
        host.init()
        for n in range(1, 5):
            host.call(n, b"")
        for n in range(1, 5):
            self.assertEqual(host.answer(n)["type"], "response", host.seen)
        host.close()

    def test_a_plugin_that_is_not_thread_safe_gets_one_call_at_a_time(self) -> None:
        second = threading.Event()
        overlapped: List[bool] = []
        plugin = Plugin()

        @plugin.call
        def serial(request: bytes, ctx: CallContext) -> bytes:
            if request == b"1":
                overlapped.append(second.wait(WINDOW_S))
            else:
                second.set()
            return request

        host = Host(plugin)
        host.init()
        host.call(1, b"1")
        host.call(2, b"2")
        host.answer(1)
        host.answer(2)
        self.assertEqual(overlapped, [False], "call 2 started while call 1 ran")
        host.close()

    def test_lifecycle_requests_of_a_plugin_not_thread_safe_wait_for_the_call(self) -> None:
        started = threading.Event()
        levelled = threading.Event()
        during_call: List[bool] = []
        plugin = Plugin()

        @plugin.call
        def long_call(request: bytes, ctx: CallContext) -> bytes:
            started.set()
            during_call.append(levelled.wait(WINDOW_S))
            return b""

        @plugin.set_level
        def set_level(level: int) -> None:
            levelled.set()

        host = Host(plugin)
        host.init()
        host.call(1, b"")
        self.assertTrue(started.wait(PATIENCE_S))
        host.send({"type": "set_level", "id": 2, "level": 1})
        host.answer(2)
        self.assertEqual(during_call, [False], "set_level ran while a call was running")
        self.assertLess(
            host.seen.index(host.of(1)[-1]), host.seen.index(host.of(2)[-1]), host.seen
        )
        host.close()

    def test_a_thread_safe_plugin_answers_lifecycle_requests_beside_its_calls(self) -> None:
        started = threading.Event()
        release = threading.Event()
        plugin = Plugin(thread_safe=True)

        @plugin.call
        def long_call(request: bytes, ctx: CallContext) -> bytes:
            started.set()
            release.wait(PATIENCE_S)
            return b"done"

        @plugin.checkpoint
        def checkpoint() -> bytes:
            return b"state"

        host = Host(plugin)
        host.init()
        host.call(1, b"")
        self.assertTrue(started.wait(PATIENCE_S))
        self.assertEqual(unb64(host.request("checkpoint", 2)["data"]), b"state")
        self.assertEqual(host.request("set_level", 3, level=1)["type"], "response")
        self.assertEqual(host.of(1), [], "the call is still running")
        release.set()
        self.assertEqual(unb64(host.answer(1)["data"]), b"done")
        host.close()

    def test_every_request_is_answered_exactly_once(self) -> None:
        plugin = Plugin(thread_safe=True, max_concurrent_calls=3)

        @plugin.call
        def mixed(request: bytes, ctx: CallContext) -> Any:
            n = int(request)
            if n % 4 == 0:
                raise ValueError(n)
            if n % 4 == 1:
                ctx.send(b"a")
                ctx.send(b"b")
            if n % 4 == 2:
                return None
            return request

        @plugin.set_level
        def set_level(level: int) -> None:
            if level == 3:
                raise ValueError("no level 3")

        host = Host(plugin)
        host.init()
        requests = 0
        for n in range(1, 41):
            requests += 1
            if n % 10 == 0:
                host.send({"type": "set_level", "id": n, "level": n % 4})
            elif n % 7 == 0:
                host.send({"type": "checkpoint", "id": n})
            else:
                host.call(n, str(n).encode())
        host.send({"type": "drain", "id": 41, "deadline_ms": 10000})
        host.answer(41)
        host.close()
        answers = collections.Counter(
            m["id"] for m in host.seen if m["type"] in ("response", "error")
        )
        self.assertEqual(answers, collections.Counter(range(1, 42)))


class HeartbeatsAndHealth(unittest.TestCase):
    def test_heartbeats_come_at_the_interval_of_the_config(self) -> None:
        host = Host(Plugin())
        host.init(config={"heartbeat_s": 0.01})
        heartbeats = [m for m in host.until(lambda m: m["type"] == "heartbeat")]
        self.assertEqual(heartbeats[-1], {"type": "heartbeat"})
        host.close()

    def test_the_plugin_sets_the_interval_when_the_config_does_not(self) -> None:
        host = Host(Plugin(heartbeat_interval=0.01))
        host.init(config={})
        host.until(lambda m: m["type"] == "heartbeat")
        host.close()

    def test_a_bad_interval_is_replaced_by_the_default_with_a_warning(self) -> None:
        host = Host(Plugin())
        host.init(config={"heartbeat_s": "often"})
        self.assertEqual(
            host.until(lambda m: m["type"] == "log")[-1],
            {
                "type": "log",
                "level": "warn",
                "message": "heartbeat_s must be a positive number of seconds, not 'often': "
                "using 5.0",
            },
        )
        host.close()

    def test_health_is_sent_when_it_changes(self) -> None:
        state: Dict[str, Any] = {"health": Health.ok()}
        plugin = Plugin()

        @plugin.health
        def health() -> Optional[Health]:
            value = state["health"]
            if isinstance(value, Exception):
                raise value
            return value  # type: ignore[no-any-return]

        host = Host(plugin)
        host.init(config={"heartbeat_s": 0.005})
        self.assertEqual(
            host.until(lambda m: m["type"] == "health")[-1], {"type": "health", "status": "ok"}
        )
        # Unchanged: three more heartbeats, no health.
        for _ in range(3):
            got = host.until(lambda m: m["type"] == "heartbeat")
            self.assertEqual([m for m in got if m["type"] == "health"], [])
        state["health"] = Health.degraded("index is stale")
        self.assertEqual(
            host.until(lambda m: m["type"] == "health")[-1],
            {"type": "health", "status": "degraded", "message": "index is stale"},
        )
        state["health"] = OSError("disk gone")
        self.assertEqual(
            host.until(lambda m: m["type"] == "health")[-1],
            {
                "type": "health",
                "status": "unhealthy",
                "message": "the health check failed: OSError: disk gone",
            },
        )
        host.close()

    def test_health_can_be_reported_at_once(self) -> None:
        plugin = Plugin()

        @plugin.call
        def report(request: bytes, ctx: CallContext) -> None:
            plugin.report_health("unhealthy", "lost the connection")
            plugin.report_health(Health.ok())

        host = Host(plugin)
        host.init()
        host.call(1, b"")
        host.answer(1)
        self.assertEqual(
            [m for m in host.seen if m["type"] == "health"],
            [
                {"type": "health", "status": "unhealthy", "message": "lost the connection"},
                {"type": "health", "status": "ok"},
            ],
        )
        with self.assertRaises(ValueError):
            Health("fine")
        host.close()


class Reports(unittest.TestCase):
    def test_progress_and_gauges(self) -> None:
        plugin = Plugin()

        @plugin.call
        def work(request: bytes, ctx: CallContext) -> None:
            plugin.progress(0, "scanning")
            plugin.progress(40.5, "indexing")
            plugin.progress(100)
            plugin.progress()
            plugin.gauge("documents", 120)
            plugin.gauge("ratio", 0.25)
            out_of_range: List[Callable[[], bool]] = [
                lambda: plugin.progress(140, "x"),
                lambda: plugin.progress(-1),
                lambda: plugin.gauge("x", float("nan")),
                lambda: plugin.gauge("x", float("inf")),
            ]
            for bad in out_of_range:
                try:
                    bad()
                except ValueError:
                    plugin.log("refused")
            not_numbers: List[Callable[[], bool]] = [
                lambda: plugin.progress("10"),  # type: ignore[arg-type]
                lambda: plugin.gauge("x", "1"),  # type: ignore[arg-type]
            ]
            for wrong in not_numbers:
                try:
                    wrong()
                except TypeError:
                    plugin.log("wrong type", "debug")

        host = Host(plugin)
        host.init()
        host.call(1, b"")
        host.answer(1)
        self.assertEqual(
            [m for m in host.seen if m["type"] in ("progress", "gauge", "log")],
            [
                {"type": "progress", "percent": 0, "phase": "scanning"},
                {"type": "progress", "percent": 40.5, "phase": "indexing"},
                {"type": "progress", "percent": 100},
                {"type": "progress"},
                {"type": "gauge", "name": "documents", "value": 120},
                {"type": "gauge", "name": "ratio", "value": 0.25},
            ]
            + [{"type": "log", "level": "info", "message": "refused"}] * 4
            + [{"type": "log", "level": "debug", "message": "wrong type"}] * 2,
        )
        host.close()

    def test_reports_need_a_running_plugin_and_stop_when_the_host_has_gone(self) -> None:
        plugin = Plugin()
        with self.assertRaisesRegex(RuntimeError, "not running"):
            plugin.gauge("x", 1)
        host = Host(plugin)
        host.init()
        host.close()
        self.assertFalse(plugin.progress(50, "late"))
        self.assertFalse(plugin.log("late"))

    def test_log_levels(self) -> None:
        plugin = Plugin()
        host = Host(plugin)
        host.init()
        for level in ("error", "warn", "warning", "info", "debug", "trace"):
            plugin.log("at " + level, level)
        with self.assertRaisesRegex(ValueError, "log level must be one of"):
            plugin.log("x", "loud")
        host.close()
        self.assertEqual(
            [(m["level"], m["message"]) for m in host.seen if m["type"] == "log"],
            [
                ("error", "at error"),
                ("warn", "at warn"),
                ("warn", "at warning"),
                ("info", "at info"),
                ("debug", "at debug"),
                ("trace", "at trace"),
            ],
        )


class Logging(unittest.TestCase):
    def test_logging_records_become_log_messages_while_the_plugin_runs(self) -> None:
        logger = logging.getLogger("ballast_plugin.tests.bridge")
        logger.setLevel(1)
        plugin = Plugin()

        @plugin.call
        def log_records(request: bytes, ctx: CallContext) -> None:
            logger.error("failed %d times", 3)
            logger.warning("careful")
            logger.info("indexed %s files", 12)
            logger.debug("details")
            logger.log(5, "fine details")
            try:
                raise KeyError("k")
            except KeyError:
                logger.exception("with a traceback")

        root = logging.getLogger()
        handlers = list(root.handlers)
        host = Host(plugin, install_logging=True)
        host.init()
        self.assertEqual(len(root.handlers), len(handlers) + 1)
        host.call(1, b"")
        host.answer(1)
        logs = [(m["level"], m["message"]) for m in host.logs()]
        self.assertEqual(
            logs[:5],
            [
                ("error", "failed 3 times"),
                ("warn", "careful"),
                ("info", "indexed 12 files"),
                ("debug", "details"),
                ("trace", "fine details"),
            ],
        )
        self.assertEqual(logs[5][0], "error")
        self.assertTrue(logs[5][1].startswith("with a traceback\nTraceback"), logs[5])
        self.assertIn("KeyError: 'k'", logs[5][1])
        host.close()
        self.assertEqual(root.handlers, handlers, "the handler is removed when run() returns")

    def test_the_handler_writes_to_stderr_when_the_plugin_does_not_run(self) -> None:
        plugin = Plugin()
        handler = ballast_plugin.HostLogHandler(plugin)
        record = logging.LogRecord("x", logging.INFO, __file__, 1, "early %s", ("bird",), None)
        import io

        captured = io.StringIO()
        stderr, sys.stderr = sys.stderr, captured
        try:
            handler.emit(record)
        finally:
            sys.stderr = stderr
        self.assertEqual(captured.getvalue(), "early bird\n")


class EndOfInput(unittest.TestCase):
    def test_run_returns_at_the_end_of_input_after_cancelling_calls_and_stopping(self) -> None:
        started = threading.Event()
        events: List[str] = []
        plugin = Plugin(thread_safe=True)

        @plugin.call
        def waits(request: bytes, ctx: CallContext) -> bytes:
            started.set()
            if request == b"forever":
                threading.Event().wait()  # ignores everything: run() must not wait for it
            events.append("cancelled" if ctx.wait_cancelled(PATIENCE_S) else "timed out")
            return b"too late"

        @plugin.stop
        def stop() -> None:
            events.append("stopped")

        host = Host(plugin)
        host.init()
        host.call(1, b"forever")
        self.assertTrue(started.wait(PATIENCE_S))
        started.clear()
        host.call(2, b"until cancelled")
        self.assertTrue(started.wait(PATIENCE_S))
        rest = host.close()
        self.assertIsNone(host.raised)
        self.assertEqual(events, ["cancelled", "stopped"])
        self.assertEqual([m for m in rest if m.get("id") in (1, 2)], [])

    def test_lifecycle_requests_read_before_the_end_are_answered(self) -> None:
        host = Host(Plugin())
        host.init()
        host.send_raw(
            b'{"type":"drain","id":1,"deadline_ms":1000}\n{"type":"checkpoint","id":2}\n'
        )
        rest = host.close()
        self.assertEqual(
            [m for m in rest if m["type"] == "response"],
            [{"type": "response", "id": 1}, {"type": "response", "id": 2}],
        )

    def test_run_returns_when_the_input_ends_before_init(self) -> None:
        host = Host(Plugin())
        self.assertEqual(host.close(), [])
        self.assertIsNone(host.raised)


class Styles(unittest.TestCase):
    def test_a_subclass_overrides_the_on_methods(self) -> None:
        class Upper(Plugin):
            name = "upper"
            version = "0.1"

            def on_call(self, request: bytes, ctx: CallContext) -> bytes:
                return request.upper()

        host = Host(Upper())
        self.assertEqual(host.init()["name"], "upper")
        host.call(1, b"abc")
        self.assertEqual(unb64(host.answer(1)["data"]), b"ABC")
        host.close()

    def test_a_subclass_that_overrides_a_decorator_is_refused(self) -> None:
        with self.assertRaisesRegex(TypeError, "Bad defines `call`.*override `on_call`"):

            class Bad(Plugin):
                def call(self, request: bytes, ctx: CallContext) -> bytes:  # type: ignore
                    return request

    def test_decorators_return_the_function_and_refuse_anything_else(self) -> None:
        plugin = Plugin("d")

        def handler(request: bytes, ctx: CallContext) -> bytes:
            return request

        self.assertIs(plugin.call(handler), handler)
        with self.assertRaisesRegex(TypeError, "@plugin.drain decorates a function"):
            plugin.drain(5)  # type: ignore

    def test_a_subclass_whose_init_forgets_super_still_runs(self) -> None:
        class Forgetful(Plugin):
            def __init__(self) -> None:
                self.answer = b"ok"

            def on_call(self, request: bytes, ctx: CallContext) -> bytes:
                return self.answer

        host = Host(Forgetful())
        host.init()
        host.call(1, b"")
        self.assertEqual(unb64(host.answer(1)["data"]), b"ok")
        host.close()


class FdReader(unittest.TestCase):
    """How a plugin run as a process reads its stdin: lines from the file descriptor, with
    SIGTERM seen through the wakeup pipe."""

    def setUp(self) -> None:
        self.data_r, self.data_w = os.pipe()
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        self.reader = ballast_plugin._FdReader(self.data_r, self.wake_r)

    def tearDown(self) -> None:
        for fd in (self.data_r, self.data_w, self.wake_r, self.wake_w):
            try:
                os.close(fd)
            except OSError:
                pass

    def test_lines_whatever_the_writes(self) -> None:
        os.write(self.data_w, b"one\ntw")
        self.assertEqual(self.reader.readline(100), b"one\n")
        os.write(self.data_w, b"o\nthree\nfour")
        self.assertEqual(self.reader.readline(100), b"two\n")
        self.assertEqual(self.reader.readline(100), b"three\n")
        os.close(self.data_w)
        self.assertEqual(self.reader.readline(100), b"four", "the last line needs no newline")
        self.assertEqual(self.reader.readline(100), b"")

    def test_an_over_long_line_comes_in_pieces_of_the_limit(self) -> None:
        os.write(self.data_w, b"0123456789abc\nok\n")
        self.assertEqual(self.reader.readline(5), b"01234")
        self.assertEqual(self.reader.readline(5), b"56789")
        self.assertEqual(self.reader.readline(5), b"abc\n")
        self.assertEqual(self.reader.readline(5), b"ok\n")

    def test_sigterm_in_the_wakeup_pipe_ends_the_reading(self) -> None:
        os.write(self.wake_w, bytes([signal.SIGINT]))
        os.write(self.data_w, b"line\n")
        self.assertEqual(self.reader.readline(100), b"line\n", "another signal changes nothing")
        os.write(self.wake_w, bytes([signal.SIGTERM]))
        self.assertIsNone(self.reader.readline(100))


class InMemory(unittest.TestCase):
    """run() on in-memory streams: all the input at once, the output read after it returns. A
    drain before the end waits for the calls, which the end of input would cancel."""

    HOST_SAYS = [
        {"type": "init", "name": "upper", "level": 0, "config": {}},
        {"type": "call", "id": 1, "data": b64(b"hi")},
        {"type": "drain", "id": 2, "deadline_ms": 10000},
    ]
    EXPECTED = [
        {"type": "hello", "name": "upper", "protocol": 1},
        {"type": "response", "id": 1, "data": b64(b"HI")},
        {"type": "response", "id": 2},
    ]

    class Upper(Plugin):
        def on_call(self, request: bytes, ctx: CallContext) -> bytes:
            return request.upper()

    def test_bytes(self) -> None:
        import io

        host_says = b"".join(json.dumps(m).encode() + b"\n" for m in self.HOST_SAYS)
        out = io.BytesIO()
        ballast_plugin.run(self.Upper, io.BytesIO(host_says), out, install_logging=False)
        self.assertEqual([json.loads(line) for line in out.getvalue().splitlines()], self.EXPECTED)

    def test_text(self) -> None:
        import io

        host_says = "".join(json.dumps(m) + "\n" for m in self.HOST_SAYS)
        out = io.StringIO()
        self.Upper().run(io.StringIO(host_says), out, install_logging=False)
        self.assertEqual([json.loads(line) for line in out.getvalue().splitlines()], self.EXPECTED)


SCRIPT = r"""
import logging
import ballast_plugin

class Echo(ballast_plugin.Plugin):
    version = "1.0"

    def on_call(self, request, ctx):
        print("print goes to stderr")
        logging.getLogger("echo").info("called with %r", request)
        return request

ballast_plugin.run(Echo)
"""


class AsAProcess(unittest.TestCase):
    def test_a_script_speaks_on_stdin_and_stdout_and_exits_at_the_end_of_stdin(self) -> None:
        sdk = os.path.dirname(os.path.dirname(os.path.abspath(ballast_plugin.__file__)))
        env = dict(os.environ, PYTHONPATH=sdk)
        child = subprocess.Popen(
            [sys.executable, "-c", SCRIPT],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        assert child.stdin and child.stdout and child.stderr
        try:
            init = {"type": "init", "name": "echo", "level": 0, "config": {}}
            child.stdin.write(json.dumps(init).encode() + b"\n")
            child.stdin.flush()
            self.assertEqual(
                json.loads(child.stdout.readline()),
                {"type": "hello", "name": "echo", "version": "1.0", "protocol": 1},
            )
            child.stdin.write(
                json.dumps({"type": "call", "id": 1, "data": b64(b"hi")}).encode() + b"\n"
            )
            child.stdin.flush()
            lines: List[Dict[str, Any]] = []
            while True:
                message = json.loads(child.stdout.readline())
                lines.append(message)
                if message.get("id") == 1:
                    break
            child.stdin.close()
            child.wait(PATIENCE_S)
            out = child.stdout.read()
            err = child.stderr.read()
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
            child.stdout.close()
            child.stderr.close()
        self.assertEqual(lines[-1], {"type": "response", "id": 1, "data": b64(b"hi")})
        self.assertIn(
            {"type": "log", "level": "info", "message": "called with b'hi'"}, lines
        )
        self.assertEqual(out, b"", "nothing after the end of stdin")
        self.assertIn(b"print goes to stderr", err)
        self.assertEqual(child.returncode, 0)


    def test_sigterm_stops_the_plugin_as_the_end_of_stdin_does(self) -> None:
        sdk = os.path.dirname(os.path.dirname(os.path.abspath(ballast_plugin.__file__)))
        env = dict(os.environ, PYTHONPATH=sdk)
        child = subprocess.Popen(
            [sys.executable, "-c", SIGTERM_SCRIPT],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        assert child.stdin and child.stdout
        timer = threading.Timer(PATIENCE_S, child.kill)
        timer.start()
        try:
            for message in (
                {"type": "init", "name": "slow", "level": 0, "config": {}},
                {"type": "call", "id": 1, "data": b64(b"")},
            ):
                child.stdin.write(json.dumps(message).encode() + b"\n")
            child.stdin.flush()
            lines: List[Dict[str, Any]] = []
            while not lines or lines[-1]["type"] != "chunk":
                lines.append(json.loads(child.stdout.readline()))
            # Stdin stays open: the signal alone ends the plugin.
            child.send_signal(signal.SIGTERM)
            self.assertEqual(child.wait(), 0, "it exits with status 0, not by the signal")
            lines += [json.loads(line) for line in child.stdout.read().splitlines()]
        finally:
            timer.cancel()
            child.stdin.close()
            child.stdout.close()
        self.assertEqual(
            [m.get("message") for m in lines if m["type"] == "log"],
            ["call 1 cancelled", "stopped"],
        )
        self.assertEqual([m["type"] for m in lines if m.get("id") == 1], ["chunk"])


SIGTERM_SCRIPT = r"""
import ballast_plugin

class Slow(ballast_plugin.Plugin):
    def on_call(self, request, ctx):
        ctx.send(b"started")
        if ctx.wait_cancelled(30):
            self.log("call %d cancelled" % ctx.id)
        return b"late"

    def on_stop(self):
        self.log("stopped")

ballast_plugin.run(Slow)
"""


if __name__ == "__main__":
    unittest.main()
