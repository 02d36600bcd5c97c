#!/usr/bin/env python3
"""indexer: a ballast process plugin that lets the assistant search the user's notes.

It indexes the text files under `notes_dir` (Markdown and plain text by default, or the
`extensions` given) and answers searches. It is written on the `ballast_plugin` SDK
(sdk/python in the ballast repository; installed beside this script), which speaks ballast's
JSON-lines control protocol, and needs nothing beyond the Python standard library:

* start: continues from the checkpoint its previous instance left, then builds its index in
  the background, reporting progress (phases `scanning` and `indexing` with a percent) and, once
  built, the gauges `documents` and `terms`.
* set_level: 0 = full index (words and word pairs, whole files); 1 = keywords only (the first
  4 KiB of each file, single words): a fraction of the memory. The index is rebuilt in place
  while searches go on with the old one.
* drain: stops indexing (the SDK has waited for the searches in flight).
* checkpoint: hands over its counters and recent queries, which the next instance continues.
* call: the request is a query (text, or JSON {"query": ..., "limit": N}). The answer is JSON
  lines, streamed: one chunk per result as it is found, best first ({"file", "score",
  "first_line", "line": the first line of the file with a word of the query}), then a last part
  that is a summary line ({"plugin", "level", "query", "found", "documents", "complete",
  "queries", "stopped"}). A caller that does not stream gets the lines joined.
* cancel: stops that call's search at once; nothing more is sent for it.
* deadline: a search stops when its deadline passes, and its summary says "stopped":
  "deadline" (it is null when the search ran to the end).

Searches run at once on the SDK's call threads (the plugin is thread-safe: a search reads an
index that is swapped whole, and the counters are under a lock). Heartbeats come from the SDK,
every `heartbeat_s` seconds of the config (5 by default), and its log lines go to ballast
through the logging module.
"""

import json
import logging
import os
import re
import threading
import time

import ballast_plugin
from ballast_plugin import CallContext, PluginError

WORD = re.compile(r"[a-z0-9]{2,}")
log = logging.getLogger("indexer")


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


class Indexer(ballast_plugin.Plugin):
    version = "1.1.0"
    thread_safe = True

    def __init__(self):
        super().__init__()
        self.index = Index(0)
        self.complete = False
        self.queries = 0
        self.recent = []
        self.counters = threading.Lock()
        self.stop_building = threading.Event()
        self.builder = None

    # Lifecycle: the SDK runs these one at a time.

    def on_restore(self, checkpoint):
        state = json.loads(checkpoint)
        self.queries = int(state.get("queries", 0))
        self.recent = [str(query) for query in state.get("recent", [])][-20:]
        log.info("continuing from a checkpoint: %d queries answered before", self.queries)

    def on_start(self):
        self.rebuild(self.level)

    def on_set_level(self, level):
        self.rebuild(level)

    def on_drain(self, timeout):
        self.stop_indexing(timeout)

    def on_stop(self):
        self.stop_indexing(0)

    def on_checkpoint(self):
        with self.counters:
            state = {"queries": self.queries, "recent": self.recent[-20:]}
        return json.dumps(state).encode()

    # The index, built off the lifecycle's thread and swapped in whole.

    def rebuild(self, level):
        self.stop_indexing(None)
        self.stop_building = threading.Event()
        self.complete = False
        self.builder = threading.Thread(
            target=self.build, args=(level, self.stop_building), name="indexer-build", daemon=True
        )
        self.builder.start()

    def stop_indexing(self, timeout):
        self.stop_building.set()
        if self.builder is not None:
            self.builder.join(timeout)

    def files(self):
        root = os.path.expanduser(self.config.get("notes_dir", "~/notes"))
        if not os.path.isdir(root):
            log.warning("notes_dir %s is not a directory: nothing to index", root)
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

    def build(self, level, stop):
        started = time.monotonic()
        self.progress(0, "scanning")
        files = self.files()
        index = Index(level)
        for n, path in enumerate(files, 1):
            if stop.is_set():
                return
            try:
                with open(path, encoding="utf-8", errors="replace") as handle:
                    index.add(path, handle.read(1 << 20))
            except OSError as error:
                log.warning("cannot read %s: %s", path, error)
            if n % 50 == 0 or n == len(files):
                self.progress(round(100.0 * n / len(files), 1), "indexing")
        self.index = index
        self.complete = True
        if not files:
            self.progress(100, "indexing")
        self.gauge("documents", index.documents)
        self.gauge("terms", len(index.postings))
        log.info(
            "indexed %d files at level %d in %.2fs (%d terms)",
            index.documents,
            level,
            time.monotonic() - started,
            len(index.postings),
        )

    # Searches.

    def on_call(self, request, ctx: CallContext):
        """Streams a chunk per result; the summary is the last part. Once the host cancels the
        call, `ctx.send` raises and the search ends with nothing more sent."""
        text = request.decode("utf-8", errors="replace").strip()
        limit = 5
        if text.startswith("{"):
            query = json.loads(text)
            text, limit = str(query.get("query", "")), int(query.get("limit", 5))
        if not text:
            raise PluginError('empty query: send text, or {"query": "..."}')
        with self.counters:
            self.queries += 1
            self.recent = (self.recent + [text])[-20:]
            queries = self.queries
        index = self.index
        words = WORD.findall(text.lower())
        found = 0
        stopped = "deadline" if ctx.expired() else None
        for path, score in index.rank(words, max(1, min(limit, 50))):
            if stopped:
                break
            result = {
                "file": path,
                "score": score,
                "first_line": index.first_lines.get(path, ""),
                "line": index.matching_line(path, words),
            }
            # A result found after the deadline is not sent, nor one found after a cancel:
            # `send` raises Cancelled then.
            if ctx.expired():
                stopped = "deadline"
                break
            ctx.send(json.dumps(result) + "\n")
            found += 1
        summary = {
            "plugin": self.name,
            "level": self.level,
            "query": text,
            "found": found,
            "documents": index.documents,
            "complete": self.complete,
            "queries": queries,
            "stopped": stopped,
        }
        return json.dumps(summary) + "\n"


if __name__ == "__main__":
    ballast_plugin.run(Indexer)
