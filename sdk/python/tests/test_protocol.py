"""The protocol's messages: hello, calls and their answers, lifecycle requests, bad input."""

from __future__ import annotations

import json
import threading
import unittest
from typing import Any, Dict, List, Optional

import ballast_plugin
from ballast_plugin import CallContext, Plugin, PluginError

from .support import FakeClock, Host, b64, unb64


def echo_plugin(**settings: Any) -> Plugin:
    plugin = Plugin(**settings)

    @plugin.call
    def echo(request: bytes, ctx: CallContext) -> bytes:
        return request

    return plugin


class Hello(unittest.TestCase):
    def test_hello_echoes_the_name_it_is_given_and_names_the_protocol(self) -> None:
        host = Host(echo_plugin(version="2.1.0"))
        hello = host.init(name="notes")
        self.assertEqual(
            hello, {"type": "hello", "name": "notes", "version": "2.1.0", "protocol": 1}
        )
        self.assertEqual(host.seen[0], hello, "hello is the first line")
        host.close()

    def test_a_declared_name_is_sent_as_declared_and_no_version_is_left_out(self) -> None:
        host = Host(echo_plugin(name="fixed"))
        self.assertEqual(
            host.init(name="other"), {"type": "hello", "name": "fixed", "protocol": 1}
        )
        host.close()

    def test_init_sets_level_and_config_before_start(self) -> None:
        seen: List[Any] = []

        class Started(Plugin):
            def on_start(self) -> None:
                seen.append((self.name, self.level, self.config))

        host = Host(Started())
        host.init(name="s", level=2, config={"heartbeat_s": 3600, "root": "/x"})
        self.assertEqual(seen, [("s", 2, {"heartbeat_s": 3600, "root": "/x"})])
        host.close()

    def test_hello_is_the_first_line_whatever_the_start_sends(self) -> None:
        class Busy(Plugin):
            def on_restore(self, checkpoint: bytes) -> None:
                self.log("restoring %r" % checkpoint)

            def on_start(self) -> None:
                self.log("starting")
                scan = threading.Thread(target=lambda: self.progress(0, "scanning"))
                scan.start()
                scan.join()

        host = Host(Busy())
        host.init(checkpoint=b"state")
        host.until(lambda m: m["type"] == "progress")
        self.assertEqual(
            [(m["type"], m.get("message")) for m in host.seen],
            [
                ("hello", None),
                ("log", "restoring b'state'"),
                ("log", "starting"),
                ("progress", None),
            ],
        )
        host.close()

    def test_a_failed_start_raises_from_run_and_says_no_hello(self) -> None:
        plugin = Plugin()

        @plugin.start
        def start() -> None:
            plugin.log("connecting")
            raise RuntimeError("no database")

        host = Host(plugin)
        host.send({"type": "init", "name": "x", "level": 0, "config": {}})
        rest = host.close()
        self.assertEqual(rest, [{"type": "log", "level": "info", "message": "connecting"}])
        self.assertIsInstance(host.raised, RuntimeError)
        self.assertEqual(str(host.raised), "no database")

    def test_requests_before_init_are_refused_and_a_second_init_is_ignored(self) -> None:
        host = Host(echo_plugin())
        host.send({"type": "cancel", "id": 1})
        self.assertEqual(
            host.request("checkpoint", 2),
            {
                "type": "error",
                "id": 2,
                "message": "the plugin has not been initialized: init comes first",
            },
        )
        host.init()
        host.send({"type": "init", "name": "again", "level": 1, "config": {}})
        host.call(3, b"still here")
        self.assertEqual(unb64(host.answer(3)["data"]), b"still here")
        self.assertIn(
            "init was sent twice; the second is ignored", [m["message"] for m in host.logs()]
        )
        host.close()


class Calls(unittest.TestCase):
    def test_a_whole_answer_is_one_response_in_base64(self) -> None:
        host = Host(echo_plugin())
        host.init()
        every_byte = bytes(range(256))
        host.call(1, every_byte)
        answer = host.answer(1)
        self.assertEqual(answer["type"], "response")
        self.assertEqual(unb64(answer["data"]), every_byte)
        self.assertEqual(host.of(1), [answer], "no chunk for a whole answer")
        host.close()

    def test_text_is_sent_as_utf8_and_none_or_empty_as_no_data(self) -> None:
        plugin = Plugin()

        @plugin.call
        def answer(request: bytes, ctx: CallContext) -> Optional[str]:
            return {b"text": "caf\u00e9", b"none": None, b"empty": ""}[request]

        host = Host(plugin)
        host.init()
        host.call(1, b"text")
        self.assertEqual(unb64(host.answer(1)["data"]), "caf\u00e9".encode())
        host.call(2, b"none")
        self.assertEqual(host.answer(2), {"type": "response", "id": 2})
        host.call(3, b"empty")
        self.assertEqual(host.answer(3), {"type": "response", "id": 3})
        host.close()

    def test_a_streamed_answer_is_chunks_in_order_then_the_last_part(self) -> None:
        plugin = Plugin()

        @plugin.call
        def count(request: bytes, ctx: CallContext) -> bytes:
            for i in range(1, int(request) + 1):
                ctx.send("%d\n" % i)
            ctx.send(b"")  # sends nothing
            ctx.send(bytearray(b"\x00\xff"))
            return b"done\n"

        host = Host(plugin)
        host.init()
        host.call(7, b"3")
        host.answer(7)
        messages = host.of(7)
        self.assertEqual(
            [(m["type"], unb64(m["data"])) for m in messages],
            [
                ("chunk", b"1\n"),
                ("chunk", b"2\n"),
                ("chunk", b"3\n"),
                ("chunk", b"\x00\xff"),
                ("response", b"done\n"),
            ],
        )
        host.close()

    def test_an_exception_answers_the_call_with_its_name_and_message(self) -> None:
        plugin = Plugin()

        @plugin.call
        def fail(request: bytes, ctx: CallContext) -> Any:
            if request == b"value":
                raise ValueError("no such document")
            if request == b"plugin":
                raise PluginError("the index is being rebuilt")
            if request == b"bare":
                raise RuntimeError()
            if request == b"partial":
                ctx.send(b"part")
                raise KeyError("missing")
            if request == b"exit":
                raise SystemExit(3)
            return 42

        host = Host(plugin)
        host.init()
        cases = [
            (b"value", "ValueError: no such document"),
            (b"plugin", "the index is being rebuilt"),
            (b"bare", "RuntimeError"),
            (b"partial", "KeyError: 'missing'"),
            (b"exit", "SystemExit: 3"),
            (b"wrong", "TypeError: a call's answer must be bytes, str or None, not int"),
        ]
        for n, (request, message) in enumerate(cases, 1):
            host.call(n, request)
            self.assertEqual(host.answer(n), {"type": "error", "id": n, "message": message})
        self.assertEqual(
            [m["type"] for m in host.of(4)], ["chunk", "error"], "the parts sent stay sent"
        )
        # The plugin goes on.
        host.call(9, b"value")
        self.assertEqual(host.answer(9)["type"], "error")
        host.close()

    def test_a_plugin_without_a_call_handler_fails_calls(self) -> None:
        host = Host(Plugin())
        host.init()
        host.call(1, b"x")
        self.assertEqual(
            host.answer(1), {"type": "error", "id": 1, "message": "this plugin takes no calls"}
        )
        host.close()

    def test_the_deadline_is_what_was_left_when_the_call_was_read(self) -> None:
        clock = FakeClock()
        plugin = Plugin()

        @plugin.call
        def deadline(request: bytes, ctx: CallContext) -> str:
            if request == b"later":
                clock.advance(1.0)
            return json.dumps([ctx.deadline(), ctx.expired()])

        host = Host(plugin, clock=clock)
        host.init()
        host.call(1, b"now", deadline_ms=2500)
        self.assertEqual(json.loads(unb64(host.answer(1)["data"])), [2.5, False])
        host.call(2, b"later", deadline_ms=700)
        self.assertEqual(json.loads(unb64(host.answer(2)["data"])), [0.0, True])
        host.call(3, b"later", deadline_ms=1000)
        self.assertEqual(json.loads(unb64(host.answer(3)["data"])), [0.0, True])
        host.call(4, b"now")
        self.assertEqual(json.loads(unb64(host.answer(4)["data"])), [None, False])
        host.call(5, b"now", deadline_ms=0)
        self.assertEqual(json.loads(unb64(host.answer(5)["data"])), [0.0, True])
        host.close()


class Lifecycle(unittest.TestCase):
    def test_set_level_runs_the_handler_then_changes_the_level(self) -> None:
        levels: List[Any] = []

        class Levels(Plugin):
            def on_set_level(self, level: int) -> None:
                levels.append((self.level, level))
                if level > 2:
                    raise PluginError("there is no level %d" % level)

        plugin = Levels()
        host = Host(plugin)
        host.init(level=0)
        self.assertEqual(host.request("set_level", 1, level=2), {"type": "response", "id": 1})
        self.assertEqual(plugin.level, 2)
        self.assertEqual(
            host.request("set_level", 2, level=5),
            {"type": "error", "id": 2, "message": "there is no level 5"},
        )
        self.assertEqual(plugin.level, 2, "a refused level is not taken")
        self.assertEqual(levels, [(0, 2), (2, 5)])
        host.close()

    def test_checkpoint_answers_with_the_data_or_without(self) -> None:
        plugin = Plugin()
        state: Dict[str, Any] = {"checkpoint": None}

        @plugin.checkpoint
        def checkpoint() -> Any:
            return state["checkpoint"]

        host = Host(plugin)
        host.init()
        self.assertEqual(host.request("checkpoint", 1), {"type": "response", "id": 1})
        state["checkpoint"] = b"\x00state\xff"
        self.assertEqual(unb64(host.request("checkpoint", 2)["data"]), b"\x00state\xff")
        state["checkpoint"] = "text"
        self.assertEqual(unb64(host.request("checkpoint", 3)["data"]), b"text")
        state["checkpoint"] = 3.5
        self.assertEqual(
            host.request("checkpoint", 4)["message"],
            "TypeError: a checkpoint must be bytes, str or None, not float",
        )
        host.close()

    def test_a_checkpoint_carries_over_to_the_next_instance(self) -> None:
        class Counter(Plugin):
            def __init__(self) -> None:
                super().__init__(version="1")
                self.calls = 0
                self.restored: Optional[bytes] = None

            def on_restore(self, checkpoint: bytes) -> None:
                self.restored = checkpoint
                self.calls = json.loads(checkpoint)["calls"]

            def on_call(self, request: bytes, ctx: CallContext) -> str:
                self.calls += 1
                return str(self.calls)

            def on_checkpoint(self) -> bytes:
                return json.dumps({"calls": self.calls}).encode()

        first = Counter()
        host = Host(first)
        host.init()
        self.assertIsNone(first.restored, "no checkpoint, no restore")
        for n in (1, 2):
            host.call(n, b"")
            host.answer(n)
        data = unb64(host.request("checkpoint", 3)["data"])
        host.close()

        second = Counter()
        host = Host(second)
        host.init(checkpoint=data)
        self.assertEqual(second.restored, data)
        host.call(1, b"")
        self.assertEqual(unb64(host.answer(1)["data"]), b"3", "the count went on")
        host.close()

    def test_an_unreadable_checkpoint_is_ignored_with_a_warning(self) -> None:
        class Picky(Plugin):
            def on_restore(self, checkpoint: bytes) -> None:
                raise ValueError("unknown format %r" % checkpoint[:2])

        host = Host(Picky())
        self.assertEqual(host.init(checkpoint=b"v9...")["type"], "hello")
        host.close()
        self.assertIn(
            {
                "type": "log",
                "level": "warn",
                "message": "ignoring the checkpoint: ValueError: unknown format b'v9'",
            },
            host.seen,
        )

        host = Host(Picky())
        host.send({"type": "init", "name": "x", "level": 0, "config": {}, "checkpoint": "**"})
        host.until(lambda m: m["type"] == "hello")
        host.close()
        self.assertTrue(
            any(m["message"].startswith("ignoring the checkpoint: Error") for m in host.logs()),
            host.seen,
        )

    def test_drain_waits_for_the_calls_in_flight_then_refuses_new_ones(self) -> None:

        started = threading.Event()
        release = threading.Event()
        drained: List[float] = []
        plugin = Plugin(thread_safe=True)

        @plugin.call
        def slow(request: bytes, ctx: CallContext) -> bytes:
            started.set()
            release.wait(10)
            return b"finished"

        @plugin.drain
        def drain(timeout: float) -> None:
            drained.append(timeout)

        clock = FakeClock()
        host = Host(plugin, clock=clock)
        host.init()
        host.call(1, b"")
        self.assertTrue(started.wait(10))
        host.send({"type": "drain", "id": 2, "deadline_ms": 30000})
        host.call(3, b"")
        self.assertEqual(
            host.answer(3),
            {"type": "error", "id": 3, "message": "the plugin is draining: it takes no new calls"},
        )
        release.set()
        answers = [m for m in host.until(lambda m: m.get("id") == 2) if m.get("id") in (1, 2)]
        self.assertEqual(
            [(m["id"], m["type"]) for m in answers],
            [(1, "response"), (2, "response")],
            "the call ends before the drain answers",
        )
        self.assertEqual(drained, [30.0], "the drain gets the time left (the clock stood still)")
        host.close()

    def test_a_drain_whose_deadline_passes_with_a_call_running_fails(self) -> None:

        started = threading.Event()
        release = threading.Event()
        drained: List[float] = []
        plugin = Plugin()

        @plugin.call
        def stuck(request: bytes, ctx: CallContext) -> bytes:
            started.set()
            release.wait(10)
            return b""

        @plugin.drain
        def drain(timeout: float) -> None:
            drained.append(timeout)

        host = Host(plugin)
        host.init()
        host.call(1, b"")
        self.assertTrue(started.wait(10))
        self.assertEqual(
            host.request("drain", 2, deadline_ms=20),
            {"type": "error", "id": 2, "message": "1 call still running at the drain deadline"},
        )
        self.assertEqual(drained, [], "the plugin's drain runs only once no call runs")
        release.set()
        host.answer(1)
        host.close()

    def test_lifecycle_handler_errors_answer_their_request(self) -> None:
        class Broken(Plugin):
            def on_checkpoint(self) -> bytes:
                raise OSError("disk full")

            def on_drain(self, timeout: float) -> None:
                raise PluginError("cannot flush")

        host = Host(Broken())
        host.init()
        self.assertEqual(host.request("checkpoint", 1)["message"], "OSError: disk full")
        self.assertEqual(host.request("drain", 2, deadline_ms=1000)["message"], "cannot flush")
        host.close()


class BadInput(unittest.TestCase):
    def test_malformed_lines_do_not_stop_the_plugin(self) -> None:
        host = Host(echo_plugin())
        host.init()
        for line in [
            b"not json",
            b"\xff\xfe{",
            b"[1, 2]",
            b'"text"',
            b'{"id": 3}',
            b'{"type": 5}',
            b"[" * 100000,
            b"",
            b"   ",
            b'{"type":"call","id":"6","data":""}',
            b'{"type":"call","id":-1,"data":""}',
            b'{"type":"call","id":1.5,"data":""}',
            b'{"type":"cancel"}',
        ]:
            host.send_raw(line + b"\n")
        # Requests whose id can be read are answered, with the reason.
        bad_requests = [
            (b'{"type":"call","id":4}', "bad call request: data must be a base64 string"),
            (b'{"type":"call","id":5,"data":"***"}', "bad call request: data is not base64"),
            (
                b'{"type":"call","id":7,"data":"","deadline_ms":-1}',
                "bad call request: deadline_ms must be a non-negative number, not -1",
            ),
            (
                b'{"type":"call","id":8,"data":"","deadline_ms":"soon"}',
                "bad call request: deadline_ms must be a non-negative number, not 'soon'",
            ),
            (
                b'{"type":"set_level","id":9,"level":"low"}',
                "bad set_level request: level must be an unsigned integer, not 'low'",
            ),
            (
                b'{"type":"drain","id":10}',
                "bad drain request: deadline_ms must be a non-negative number, not None",
            ),
        ]
        for line, _ in bad_requests:
            host.send_raw(line + b"\n")
        for line, message in bad_requests:
            request = json.loads(line)["id"]
            answer = host.answer(request)
            self.assertEqual(answer["type"], "error")
            self.assertTrue(answer["message"].startswith(message), answer)
        host.call(11, b"fine")
        self.assertEqual(unb64(host.answer(11)["data"]), b"fine")
        warnings = [m["message"] for m in host.logs() if m["level"] == "warn"]
        self.assertEqual(len(warnings), 11, warnings)
        for start in [
            "ignoring a line that is not JSON",
            "ignoring a line that is not a JSON object",
            "ignoring a message without a type",
            "ignoring a call whose id is not an unsigned integer: '6'",
            "ignoring a cancel whose id is not an unsigned integer: None",
        ]:
            self.assertTrue(any(w.startswith(start) for w in warnings), (start, warnings))
        host.close()

    def test_an_over_long_line_is_skipped(self) -> None:
        host = Host(echo_plugin())
        host.init()
        long_call = b'{"type":"call","id":1,"data":"' + b"A" * ballast_plugin.MAX_LINE_BYTES
        host.send_raw(long_call + b'"}\n')
        host.call(2, b"after")
        self.assertEqual(unb64(host.answer(2)["data"]), b"after")
        self.assertEqual(host.of(1), [], "an over-long line is no request")
        self.assertIn(
            "ignoring a line of %d bytes: the limit is %d"
            % (len(long_call) + 3, ballast_plugin.MAX_LINE_BYTES),
            [m["message"] for m in host.logs()],
        )
        host.close()

    def test_unknown_message_types_and_fields_are_ignored(self) -> None:
        host = Host(echo_plugin())
        host.init()
        host.send({"type": "reload", "id": 1})
        host.send({"type": "call", "id": 2, "data": b64(b"x"), "priority": "high"})
        self.assertEqual(host.answer(2), {"type": "response", "id": 2, "data": b64(b"x")})
        self.assertEqual(
            host.request("checkpoint", 3), {"type": "response", "id": 3}
        )
        self.assertEqual(host.of(1), [], "nothing answers an unknown message")
        self.assertEqual(host.logs(), [], "nor is it worth a warning")
        host.close()

    def test_a_line_without_a_newline_at_the_end_of_input_is_read(self) -> None:
        host = Host(echo_plugin())
        host.init()
        host.send_raw(b'{"type":"checkpoint","id":1}')
        rest = host.close()
        self.assertIn({"type": "response", "id": 1}, rest)


if __name__ == "__main__":
    unittest.main()
