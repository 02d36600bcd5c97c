#!/usr/bin/env python3
"""indexer: a ballast process plugin that lets the assistant search the user's notes.

It indexes the text files under `notes_dir` (Markdown and plain text by default) and answers
searches. It speaks ballast's JSON-lines control protocol on stdin/stdout (see the ballast-process
crate docs) and needs nothing beyond the Python standard library:

* init / hello: reads its config, level and checkpoint, then says hello.
* heartbeat: every `heartbeat_s` seconds from a thread.
* progress: phases `scanning` and `indexing` with a percent while it (re)builds the index.
* set_level: 0 = full index (words and word pairs, whole files); 1 = keywords only (the first
  4 KiB of each file, single words): a fraction of the memory. The index is rebuilt in place.
* drain: stops indexing and answers once nothing is running.
* checkpoint: hands over its counters and recent queries, which the next instance continues.
* call: the request is a query (text, or JSON {"query": ..., "limit": N}); the answer is JSON.

Anything it wants logged goes in `log` messages; stdout carries only protocol lines.
"""

import base64
import json
import os
import re
import sys
import threading
import time

WORD = re.compile(r"[a-z0-9]{2,}")
OUT = threading.Lock()


def send(message):
    line = json.dumps(message, separators=(",", ":"))
    with OUT:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def log(message, level="info"):
    send({"type": "log", "level": level, "message": message})


class Index:
    """An inverted index: term -> {file: count}."""

    def __init__(self, level):
        self.level = level
        self.postings = {}
        self.first_lines = {}
        self.documents = 0

    def add(self, path, text):
        if self.level >= 1:
            text = text[:4096]
        words = WORD.findall(text.lower())
        terms = list(words)
        if self.level == 0:
            terms += [a + " " + b for a, b in zip(words, words[1:])]
        for term in terms:
            files = self.postings.setdefault(term, {})
            files[path] = files.get(path, 0) + 1
        first = text.strip().splitlines()[0] if text.strip() else ""
        self.first_lines[path] = first[:120]
        self.documents += 1

    def search(self, query, limit):
        words = WORD.findall(query.lower())
        terms = list(words)
        if self.level == 0:
            terms += [a + " " + b for a, b in zip(words, words[1:])]
        scores = {}
        for term in terms:
            weight = 2 if " " in term else 1
            for path, count in self.postings.get(term, {}).items():
                scores[path] = scores.get(path, 0) + weight * count
        best = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]
        return [{"file": p, "score": s, "first_line": self.first_lines.get(p, "")} for p, s in best]


class Indexer:
    def __init__(self):
        self.config = {}
        self.level = 0
        self.index = Index(0)
        self.complete = False
        self.queries = 0
        self.recent = []
        self.stop = threading.Event()
        self.builder = None

    def restore(self, checkpoint):
        if not checkpoint:
            return
        try:
            state = json.loads(base64.b64decode(checkpoint))
            self.queries = int(state.get("queries", 0))
            self.recent = list(state.get("recent", []))[-20:]
            log("continuing from a checkpoint: %d queries answered before" % self.queries)
        except (ValueError, TypeError) as error:
            log("ignoring an unreadable checkpoint: %s" % error, "warn")

    def checkpoint(self):
        state = {"queries": self.queries, "recent": self.recent[-20:]}
        return base64.b64encode(json.dumps(state).encode()).decode()

    def files(self):
        root = os.path.expanduser(self.config.get("notes_dir", "~/notes"))
        if not os.path.isdir(root):
            log("notes_dir %s is not a directory: nothing to index" % root, "warn")
            return []
        extensions = tuple(self.config.get("extensions", [".md", ".txt"]))
        skip = {".git", "target", "node_modules", "__pycache__"}
        found = []
        for directory, subdirs, names in os.walk(root):
            subdirs[:] = sorted(d for d in subdirs if d not in skip and not d.startswith("."))
            for name in sorted(names):
                if name.endswith(extensions):
                    found.append(os.path.join(directory, name))
        return found

    def rebuild(self):
        """Builds a new index at the current level off the main thread, then swaps it in."""
        if self.builder is not None:
            self.stop.set()
            self.builder.join()
        self.stop = threading.Event()
        self.complete = False
        self.builder = threading.Thread(target=self.build, args=(self.level, self.stop), daemon=True)
        self.builder.start()

    def build(self, level, stop):
        started = time.monotonic()
        send({"type": "progress", "phase": "scanning", "percent": 0})
        files = self.files()
        index = Index(level)
        for n, path in enumerate(files, 1):
            if stop.is_set():
                return
            try:
                with open(path, encoding="utf-8", errors="replace") as handle:
                    index.add(path, handle.read(1 << 20))
            except OSError as error:
                log("cannot read %s: %s" % (path, error), "warn")
            if n % 50 == 0 or n == len(files):
                send({"type": "progress", "phase": "indexing", "percent": round(100.0 * n / len(files), 1)})
        self.index = index
        self.complete = True
        if not files:
            send({"type": "progress", "phase": "indexing", "percent": 100})
        send({"type": "gauge", "name": "documents", "value": index.documents})
        send({"type": "gauge", "name": "terms", "value": len(index.postings)})
        log("indexed %d files at level %d in %.2fs (%d terms)"
            % (index.documents, level, time.monotonic() - started, len(index.postings)))

    def call(self, data):
        text = data.decode("utf-8", errors="replace").strip()
        limit = 5
        if text.startswith("{"):
            request = json.loads(text)
            text, limit = str(request.get("query", "")), int(request.get("limit", 5))
        if not text:
            raise ValueError("empty query: send text, or {\"query\": \"...\"}")
        self.queries += 1
        self.recent = (self.recent + [text])[-20:]
        answer = {
            "plugin": "indexer",
            "level": self.level,
            "query": text,
            "results": self.index.search(text, max(1, min(limit, 50))),
            "documents": self.index.documents,
            "complete": self.complete,
            "queries": self.queries,
        }
        return json.dumps(answer).encode()


def heartbeat(every):
    while True:
        time.sleep(every)
        send({"type": "heartbeat"})


def main():
    indexer = Indexer()
    started = False
    for line in sys.stdin:
        try:
            message = json.loads(line)
        except ValueError:
            log("ignoring a line that is not JSON", "warn")
            continue
        kind = message.get("type")
        request = message.get("id")
        try:
            if kind == "init":
                indexer.config = message.get("config") or {}
                indexer.level = int(message.get("level", 0))
                indexer.restore(message.get("checkpoint"))
                send({"type": "hello", "name": message.get("name", "indexer"), "version": "1.0.0", "protocol": 1})
                if not started:
                    started = True
                    every = float(indexer.config.get("heartbeat_s", 5))
                    threading.Thread(target=heartbeat, args=(every,), daemon=True).start()
                indexer.rebuild()
            elif kind == "call":
                answer = indexer.call(base64.b64decode(message["data"]))
                send({"type": "response", "id": request, "data": base64.b64encode(answer).decode()})
            elif kind == "set_level":
                indexer.level = int(message["level"])
                indexer.rebuild()
                send({"type": "response", "id": request})
            elif kind == "drain":
                indexer.stop.set()
                if indexer.builder is not None:
                    indexer.builder.join(timeout=message.get("deadline_ms", 5000) / 1000.0)
                send({"type": "response", "id": request})
            elif kind == "checkpoint":
                send({"type": "response", "id": request, "data": indexer.checkpoint()})
            elif request is not None:
                send({"type": "error", "id": request, "message": "unknown request type %r" % kind})
        except Exception as error:  # an error answers the request; it never ends the plugin
            if request is not None:
                send({"type": "error", "id": request, "message": "%s: %s" % (type(error).__name__, error)})
            else:
                log("%s failed: %s" % (kind, error), "error")
    # End of stdin: the host asks us to exit.
    indexer.stop.set()


if __name__ == "__main__":
    main()
