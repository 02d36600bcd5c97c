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

    def test_the_rendered_plugin_greets_streams_levels_and_checkpoints(self) -> None:
        module = load(self.script)
        host = Host(module.Greeter(), install_logging=True)
        self.assertEqual(
            host.init(name="weather", config={"greeting": "hi"}),
            {"type": "hello", "name": "weather", "version": "0.1.0", "protocol": 1},
        )
        host.call(1, b"ada")
        self.assertEqual(unb64(host.answer(1)["data"]), b"hi, ada! (call 1, level 0)")
        host.call(2, b"count:3")
        host.answer(2)
        self.assertEqual(
            [(m["type"], unb64(m["data"])) for m in host.of(2)],
            [("chunk", b"1\n"), ("chunk", b"2\n"), ("chunk", b"3\n"), ("response", b"done\n")],
        )
        for n in range(3, 23):
            host.call(n, b"caller %d" % n)
            host.answer(n)
        self.assertEqual(host.request("set_level", 23, level=1)["type"], "response")
        host.call(24, b"recent")
        recent = unb64(host.answer(24)["data"]).decode().splitlines()
        self.assertEqual(recent, ["caller %d" % n for n in range(7, 23)], "16 at level 1")
        self.assertEqual(
            host.request("set_level", 25, level=2)["message"], "there are levels 0 to 1, not 2"
        )
        host.call(26, b"count:x")
        self.assertEqual(host.answer(26)["message"], "count:N takes N from 0 to 100000")
        host.call(27, b"\xff")
        self.assertEqual(host.answer(27)["message"], "the request is not UTF-8")
        # A long count, cancelled after its first line: nothing more comes for it.
        host.call(28, b"count:100000")
        host.until(lambda m: m.get("id") == 28)
        host.send({"type": "cancel", "id": 28})
        self.assertEqual(host.request("drain", 29, deadline_ms=10000)["type"], "response")
        self.assertFalse([m for m in host.of(28) if m["type"] != "chunk"], "not answered")
        self.assertLess(len(host.of(28)), 100000)
        checkpoint = unb64(host.request("checkpoint", 30)["data"])
        self.assertEqual(checkpoint, b"calls=21")
        host.close()
        logs = [m["message"] for m in host.logs()]
        self.assertIn("created at level 0, 0 calls served before", logs)
        self.assertIn("now at level 1", logs)

        host = Host(module.Greeter(), install_logging=True)
        host.init(name="weather", level=1, config={}, checkpoint=checkpoint)
        host.call(1, b"eve")
        self.assertEqual(unb64(host.answer(1)["data"]), b"hello, eve! (call 22, level 1)")
        host.close()
        self.assertIn(
            "created at level 1, 21 calls served before", [m["message"] for m in host.logs()]
        )

    def test_a_bad_config_fails_the_start_and_a_foreign_checkpoint_is_ignored(self) -> None:
        module = load(self.script)
        host = Host(module.Greeter())
        host.send({"type": "init", "name": "weather", "level": 0, "config": {"greting": "hi"}})
        host.close()
        self.assertEqual(
            str(host.raised), "unknown config key `greting`; the only key is `greeting`"
        )
        host = Host(module.Greeter())
        host.init(config={}, checkpoint=b"v2:{}")
        host.call(1, b"ada")
        self.assertEqual(unb64(host.answer(1)["data"]), b"hello, ada! (call 1, level 0)")
        host.close()
        self.assertTrue(
            any(m["message"].startswith("ignoring the checkpoint:") for m in host.logs())
        )

    def test_the_readme_test_passes(self) -> None:
        with open(os.path.join(self.dir.name, "README.md"), encoding="utf-8") as readme:
            snippet = readme.read().split("```python\n")[1].split("```")[0]
        with open(os.path.join(self.dir.name, "test_plugin.py"), "w", encoding="utf-8") as f:
            f.write(snippet)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        done = subprocess.run(
            [sys.executable, "-m", "unittest", "-v"],
            cwd=self.dir.name,
            env=env,
            capture_output=True,
            timeout=PATIENCE_S * 3,
        )
        self.assertEqual(done.returncode, 0, done.stderr.decode())
        self.assertIn(b"Ran 1 test", done.stderr)

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
                {"type": "call", "id": 1, "data": b64(b"world")},
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
        self.assertEqual(unb64(seen[-1]["data"]), b"hello, world! (call 1, level 0)")


if __name__ == "__main__":
    unittest.main()
