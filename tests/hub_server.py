"""A model hub on loopback, in the Hugging Face hub's HTTP layout (and ModelScope's), for testing
downloads offline.

Hugging Face: ``/api/models/<repo>[/revision/<rev>]`` (the commit and file list),
``/api/models/<repo>/tree/<rev>`` and ``/<repo>/resolve/<rev>/<file>`` (the file, with the headers
huggingface_hub reads: ``X-Repo-Commit``, ``ETag``/``X-Linked-Etag``, ``Content-Length``).
ModelScope: ``/api/v1/models/<repo>/repo/files`` and ``/api/v1/models/<repo>/repo?FilePath=``.
Both serve byte ranges (for resuming). ``cut_once`` names files whose first download is cut off
half-way (the connection closes), as a flaky network would.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Repo:
    commit: str
    files: dict[str, bytes]
    branches: tuple[str, ...] = ("main", "master")


@dataclass
class HubState:
    repos: dict[str, Repo]
    cut_once: set[str] = field(default_factory=set)
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)  # method, path, Range


def _handler(state: HubState):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # keep the test output clean
            pass

        def _send(self, status: int, body: bytes, headers: dict[str, str], head: bool = False) -> None:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def _not_found(self, head: bool = False) -> None:  # noqa: FBT001
            self._send(
                404,
                b'{"error": "Repository not found"}',
                {"Content-Type": "application/json", "X-Error-Code": "RepoNotFound"},
                head,
            )

        def _repo(self, repo_id: str, revision: str) -> Repo | None:
            repo = state.repos.get(repo_id)
            if repo is None or revision not in (repo.commit, *repo.branches):
                return None
            return repo

        def _tree(self, repo_id: str, revision: str) -> None:
            repo = self._repo(repo_id, revision)
            if repo is None:
                return self._not_found()
            body = []
            for name in sorted(repo.files):
                data = repo.files[name]
                digest = hashlib.sha256(data).hexdigest()
                body.append(
                    {
                        "type": "file",
                        "path": name,
                        "size": len(data),
                        "oid": hashlib.sha1(data).hexdigest(),
                        "lfs": {"size": len(data), "oid": digest, "pointerSize": 134},
                    }
                )
            self._send(200, json.dumps(body).encode(), {"Content-Type": "application/json"})

        def _api(self, path: str) -> None:
            tree = re.fullmatch(r"/api/models/(.+?)/tree/([^/]+)", path)
            if tree:
                return self._tree(tree.group(1), tree.group(2))
            match = re.fullmatch(r"/api/models/(.+?)(?:/revision/([^/?]+))?", path)
            repo = self._repo(match.group(1), match.group(2) or "main") if match else None
            if repo is None:
                return self._not_found()
            body = {
                "id": match.group(1),
                "modelId": match.group(1),
                "sha": repo.commit,
                "private": False,
                "siblings": [{"rfilename": name} for name in sorted(repo.files)],
            }
            self._send(200, json.dumps(body).encode(), {"Content-Type": "application/json"})

        def _resolve(self, path: str, head: bool) -> None:
            match = re.fullmatch(r"/(.+?)/resolve/([^/]+)/(.+)", path)
            repo = self._repo(match.group(1), match.group(2)) if match else None
            if repo is None or match.group(3) not in repo.files:
                return self._send(404, b"Entry not found", {"X-Error-Code": "EntryNotFound"}, head)
            name, data = match.group(3), repo.files[match.group(3)]
            etag = '"' + hashlib.sha256(data).hexdigest() + '"'
            headers = {
                "X-Repo-Commit": repo.commit,
                "ETag": etag,
                "X-Linked-Etag": etag,
                "X-Linked-Size": str(len(data)),
                "Accept-Ranges": "bytes",
                "Content-Type": "application/octet-stream",
            }
            self._file(name, data, headers, head)

        def _modelscope(self, path: str, query: dict[str, str], head: bool) -> None:
            """ModelScope's layout: /api/v1/models/<repo>/repo/files (the list), /repo?FilePath= (a file)."""
            match = re.fullmatch(r"/api/v1/models/(.+?)/repo(/files)?", path)
            repo = self._repo(match.group(1), query.get("Revision", "master")) if match else None
            if repo is None:
                return self._not_found(head)
            if match.group(2):
                files = [
                    {
                        "Name": name.rsplit("/", 1)[-1],
                        "Path": name,
                        "Type": "blob",
                        "Size": len(data),
                        "Sha256": hashlib.sha256(data).hexdigest(),
                        "Revision": repo.commit,
                    }
                    for name, data in sorted(repo.files.items())
                ]
                body = {"Code": 200, "Success": True, "Data": {"Files": files}}
                return self._send(200, json.dumps(body).encode(), {"Content-Type": "application/json"}, head)
            name = query.get("FilePath", "")
            if name not in repo.files:
                return self._send(404, b"Entry not found", {}, head)
            self._file(name, repo.files[name], {"Content-Type": "application/octet-stream"}, head)

        def _file(self, name: str, data: bytes, headers: dict[str, str], head: bool) -> None:
            """A file's bytes from the requested range on; cut off half-way the first time when in cut_once."""
            headers = {**headers, "Accept-Ranges": "bytes"}
            start = 0
            ranged = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
            if ranged and not head:
                start = int(ranged.group(1))
                headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            if not head and name in state.cut_once:
                state.cut_once.discard(name)
                self.send_response(206 if start else 200)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                self.wfile.write(data[start : start + (len(data) - start) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            self._send(206 if start else 200, data[start:] if not head else data, headers, head)

        def _route(self, head: bool) -> None:
            from urllib.parse import parse_qsl

            path, _, query = self.path.partition("?")
            state.requests.append((self.command, path, self.headers.get("Range")))
            if path.startswith("/api/v1/models/"):
                self._modelscope(path, dict(parse_qsl(query)), head)
            elif path.startswith("/api/models/"):
                self._api(path)
            else:
                self._resolve(path, head)

        def do_GET(self):  # noqa: N802 (http.server's names)
            self._route(head=False)

        def do_HEAD(self):  # noqa: N802
            self._route(head=True)

    return Handler


class LocalHub:
    """``with LocalHub(repos) as hub:`` ... ``hub.url`` (http://127.0.0.1:<port>), ``hub.state.requests``."""

    def __init__(self, repos: dict[str, Repo], cut_once: set[str] | None = None):
        self.state = HubState(repos, set(cut_once or ()))
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.state))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> LocalHub:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
