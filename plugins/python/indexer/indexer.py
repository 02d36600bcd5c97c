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
* drain: stops indexing and answers once nothing is running (or its deadline has passed).
* checkpoint: hands over its counters and recent queries, which the next instance continues.
* call: the request is a query (text, or JSON {"query": ..., "limit": N}). The answer is JSON
  lines, streamed: one `chunk` per result as it is found, best first ({"file", "score",
  "first_line", "line": the first line of the file with a word of the query}), then a
  `response` whose data is a summary line ({"plugin", "level", "query", "found", "documents",
  "complete", "queries", "stopped"}). A caller that does not stream gets the lines joined.
* cancel: stops that call's search at once; nothing more is sent for it.
* deadline_ms: a call stops searching when its deadline passes, and its summary says
  "stopped": "deadline" (it is null when the search ran to the end).

Calls run on threads of their own, so a `cancel` is read while a search runs.

Anything it wants logged goes in `log` messages; stdout carries only protocol lines.
"""

import base64
import concurrent.futures
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


class Call:
    """One call in flight: cancelled by the host's `cancel`, or stopped by its deadline."""

    def __init__(self, request, deadline_ms):
        self.id = request
        self.cancelled = threading.Event()
        self.deadline = None
        if deadline_ms is not None:
            self.deadline = time.monotonic() + max(0, float(deadline_ms)) / 1000.0

    def stopped(self):
        """Why the call must stop ("cancelled" or "deadline"), or None."""
        if self.cancelled.is_set():
            return "cancelled"
        if self.deadline is not None and time.monotonic() >= self.deadline:
            return "deadline"
        return None


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

    def rank(self, words, limit):
        """The best `limit` files for the query's words, as (file, score), best first."""
        terms = list(words)
        if self.level == 0:
            terms += [a + " " + b for a, b in zip(words, words[1:])]
        scores = {}
        for term in terms:
            weight = 2 if " " in term else 1
            for path, count in self.postings.get(term, {}).items():
                scores[path] = scores.get(path, 0) + weight * count
        return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]

    def matching_line(self, path, words):
        """The first line of `path` (within what the level indexes) with one of `words`."""
        try:
            with open(path, encoding="utf-8", errors="replace") as handle:
                text = handle.read(4096 if self.level >= 1 else 1 << 20)
        except OSError:
            return ""
        wanted = set(words)
        for line in text.splitlines():
            if wanted.intersection(WORD.findall(line.lower())):
                return line.strip()[:120]
        return ""


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
        self.counters = threading.Lock()

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

    def call(self, call, data):
        """Runs a search, streaming a chunk per result; the summary, or None once cancelled."""
        text = data.decode("utf-8", errors="replace").strip()
        limit = 5
        if text.startswith("{"):
            request = json.loads(text)
            text, limit = str(request.get("query", "")), int(request.get("limit", 5))
        if not text:
            raise ValueError("empty query: send text, or {\"query\": \"...\"}")
        with self.counters:
            self.queries += 1
            self.recent = (self.recent + [text])[-20:]
            queries = self.queries
        index = self.index
        words = WORD.findall(text.lower())
        found = 0
        stopped = call.stopped()
        for path, score in index.rank(words, max(1, min(limit, 50))):
            if stopped:
                break
            result = {
                "file": path,
                "score": score,
                "first_line": index.first_lines.get(path, ""),
                "line": index.matching_line(path, words),
            }
            # A result found after the call was stopped is not sent.
            stopped = call.stopped()
            if stopped:
                break
            line = json.dumps(result) + "\n"
            send({"type": "chunk", "id": call.id, "data": base64.b64encode(line.encode()).decode()})
            found += 1
        if stopped == "cancelled" or call.cancelled.is_set():
            return None
        summary = {
            "plugin": "indexer",
            "level": self.level,
            "query": text,
            "found": found,
            "documents": index.documents,
            "complete": self.complete,
            "queries": queries,
            "stopped": stopped,
        }
        return (json.dumps(summary) + "\n").encode()


class Calls:
    """The calls in flight, by id, each run on a pooled thread so that the reading thread stays
    free to read a `cancel` (a pool, because starting a thread per call costs more than a call)."""

    def __init__(self, indexer):
        self.indexer = indexer
        self.lock = threading.Lock()
        self.running = {}
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="call")

    def start(self, request, data, deadline_ms):
        call = Call(request, deadline_ms)
        with self.lock:
            self.running[request] = (call, self.pool.submit(self.serve, call, data))

    def serve(self, call, data):
        try:
            answer = self.indexer.call(call, data)
            if answer is not None:
                send({"type": "response", "id": call.id, "data": base64.b64encode(answer).decode()})
        except Exception as error:  # an error answers the call; it never ends the plugin
            if not call.cancelled.is_set():
                send({"type": "error", "id": call.id, "message": "%s: %s" % (type(error).__name__, error)})
        finally:
            with self.lock:
                self.running.pop(call.id, None)

    def cancel(self, request):
        with self.lock:
            entry = self.running.get(request)
        if entry is not None:
            entry[0].cancelled.set()

    def wait(self, seconds):
        """Waits at most `seconds` for the calls in flight to end."""
        end = time.monotonic() + seconds
        with self.lock:
            futures = [future for _, future in self.running.values()]
        concurrent.futures.wait(futures, timeout=max(0.0, end - time.monotonic()))


def heartbeat(every):
    while True:
        time.sleep(every)
        send({"type": "heartbeat"})


def main():
    indexer = Indexer()
    calls = Calls(indexer)
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
                send({"type": "hello", "name": message.get("name", "indexer"), "version": "1.1.0", "protocol": 1})
                if not started:
                    started = True
                    every = float(indexer.config.get("heartbeat_s", 5))
                    threading.Thread(target=heartbeat, args=(every,), daemon=True).start()
                indexer.rebuild()
            elif kind == "call":
                calls.start(request, base64.b64decode(message["data"]), message.get("deadline_ms"))
            elif kind == "cancel":
                # Nothing answers a cancel.
                calls.cancel(request)
                continue
            elif kind == "set_level":
                indexer.level = int(message["level"])
                indexer.rebuild()
                send({"type": "response", "id": request})
            elif kind == "drain":
                indexer.stop.set()
                deadline = time.monotonic() + message.get("deadline_ms", 5000) / 1000.0
                if indexer.builder is not None:
                    indexer.builder.join(timeout=deadline - time.monotonic())
                calls.wait(deadline - time.monotonic())
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
