"""The Python template of `ballast plugin new` (crates/ballast/templates/python/plugin.py),
rendered with a name as the command renders it, works on this SDK as generated."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import unittest
from types import ModuleType
from typing import Any, Dict, List

import ballast_plugin

from .support import PATIENCE_S, Host, b64, unb64

SDK = os.path.dirname(os.path.dirname(os.path.abspath(ballast_plugin.__file__)))
TEMPLATE = os.path.join(SDK, "..", "..", "crates", "ballast", "templates", "python")


def render(directory: str, name: str) -> str:
    """Writes the template as `ballast plugin new` does (the script, its README, the SDK
    beside them) into `directory`; the script's path."""
    for file in ("plugin.py", "README.md"):
        with open(os.path.join(TEMPLATE, file), encoding="utf-8") as source:
            text = source.read()
        with open(os.path.join(directory, file), "w", encoding="utf-8") as target:
            target.write(text.replace("{{name}}", name))
    shutil.copytree(
        os.path.dirname(ballast_plugin.__file__),
        os.path.join(directory, "ballast_plugin"),
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    script = os.path.join(directory, "plugin.py")
    os.chmod(script, 0o755)
    return script


def load(script: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location("rendered_template", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Template(unittest.TestCase):
    def setUp(self) -> None:
        self.dir = tempfile.TemporaryDirectory()
        self.script = render(self.dir.name, "weather")

    def tearDown(self) -> None:
        self.dir.cleanup()

    def test_no_placeholder_is_left(self) -> None:
        for file in ("plugin.py", "README.md"):
            with open(os.path.join(self.dir.name, file), encoding="utf-8") as rendered:
                text = rendered.read()
            self.assertNotIn("{{", text, file)
            self.assertIn("weather", text, file)

    def test_the_rendered_plugin_answers_streams_levels_and_checkpoints(self) -> None:
        module = load(self.script)
        plugin: Any = module.Integration()
        host = Host(plugin)
        self.assertEqual(
            host.init(name="weather"),
            {"type": "hello", "name": "weather", "version": "0.1.0", "protocol": 1},
        )
        host.call(1, b"ping")
        self.assertEqual(unb64(host.answer(1)["data"]), b"pong from weather (level 0, call 1)")
        host.call(2, b"count:3")
        summary = json.loads(unb64(host.answer(2)["data"]))
        self.assertEqual([unb64(m["data"]) for m in host.of(2)[:-1]], [b"1\n", b"2\n", b"3\n"])
        self.assertEqual(summary, {"plugin": "weather", "level": 0, "sent": 3, "stopped": None})
        host.call(3, b"count:5", deadline_ms=0)
        self.assertEqual(json.loads(unb64(host.answer(3)["data"]))["stopped"], "deadline")
        self.assertEqual(host.request("set_level", 4, level=1)["type"], "response")
        host.call(5, b"count:50")
        self.assertEqual(json.loads(unb64(host.answer(5)["data"]))["sent"], 10)
        self.assertEqual(
            host.request("set_level", 6, level=2)["message"], "there are levels 0 to 1, not 2"
        )
        host.call(7, b"hello")
        self.assertIn("unknown request 'hello'", host.answer(7)["message"])
        # A long count, cancelled after its first number: nothing more comes for it.
        host.call(8, b"count:1000:10000")
        host.until(lambda m: m.get("id") == 8)
        host.send({"type": "cancel", "id": 8})
        self.assertEqual(host.request("drain", 9, deadline_ms=10000)["type"], "response")
        self.assertEqual([unb64(m["data"]) for m in host.of(8)], [b"1\n"])
        checkpoint = unb64(host.request("checkpoint", 10)["data"])
        host.close()
        self.assertIn({"type": "gauge", "name": "calls", "value": 6}, host.seen)

        host = Host(module.Integration(), install_logging=True)
        host.init(name="weather", level=1, checkpoint=checkpoint)
        host.call(1, b"ping")
        self.assertEqual(unb64(host.answer(1)["data"]), b"pong from weather (level 1, call 7)")
        host.close()
        self.assertIn(
            "started at level 1; 6 calls answered before", [m["message"] for m in host.logs()]
        )

    def test_the_rendered_script_runs_on_the_sdk_beside_it(self) -> None:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        child = subprocess.Popen(
            [sys.executable, self.script],
            cwd="/",
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        assert child.stdin and child.stdout
        timer = threading.Timer(PATIENCE_S, child.kill)
        timer.start()
        try:
            lines = [
                {"type": "init", "name": "weather", "level": 0, "config": {}},
                {"type": "call", "id": 1, "data": b64(b"ping")},
            ]
            child.stdin.write(b"".join(json.dumps(m).encode() + b"\n" for m in lines))
            child.stdin.flush()
            seen: List[Dict[str, Any]] = []
            while not any(m.get("id") == 1 for m in seen):
                seen.append(json.loads(child.stdout.readline()))
            child.stdin.close()
            self.assertEqual(child.wait(), 0)
        finally:
            timer.cancel()
            child.stdout.close()
        self.assertEqual(seen[0]["type"], "hello")
        self.assertEqual(unb64(seen[-1]["data"]), b"pong from weather (level 0, call 1)")


if __name__ == "__main__":
    unittest.main()
