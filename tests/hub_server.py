"""A model hub on 127.0.0.1 for tests: the endpoints huggingface_hub's ``hf_hub_download`` calls.

``HEAD`` and ``GET /{org}/{name}/resolve/{revision}/{file}`` answer with the headers the client
needs (``X-Repo-Commit``, ``ETag``: the SHA-256 for weights as the hub gives for large files,
``Content-Length``); a missing file is 404 with ``X-Error-Code: EntryNotFound``, a missing model
404 with ``RepoNotFound``. Every request is recorded, so a test can tell a cache hit (no request)
from a download::

    with HubServer() as hub:
        hub.add("timm/test_resnet.r160_in1k", {"model.safetensors": data, "config.json": cfg})
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        ...
        hub.gets("model.safetensors")      # how many times the file was sent
"""

from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class HubServer:
    def __init__(self) -> None:
        self.repos: dict[str, dict[str, bytes]] = {}
        self.requests: list[tuple[str, str]] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:   # quiet
                pass

            def _answer(self, body: bool) -> None:
                hub.requests.append((self.command, self.path))
                parts = self.path.split("?")[0].strip("/").split("/")
                if len(parts) < 5 or parts[2] != "resolve":
                    return self._missing("RepoNotFound")
                repo, filename = "/".join(parts[:2]), "/".join(parts[4:])
                if repo not in hub.repos:
                    return self._missing("RepoNotFound")
                if filename not in hub.repos[repo]:
                    return self._missing("EntryNotFound")
                data = hub.repos[repo][filename]
                etag = (hashlib.sha256(data).hexdigest() if filename.endswith(".safetensors")
                        else hashlib.sha1(data).hexdigest())
                self.send_response(200)
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("ETag", f'"{etag}"')
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def _missing(self, code: str) -> None:
                self.send_response(404)
                self.send_header("X-Error-Code", code)
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_HEAD(self) -> None:  # noqa: N802 - http.server's name
                self._answer(body=False)

            def do_GET(self) -> None:  # noqa: N802
                self._answer(body=True)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def add(self, repo: str, files: dict[str, bytes]) -> None:
        self.repos[repo] = dict(files)

    def gets(self, filename: str) -> int:
        """How many GET requests asked for ``filename``."""
        return sum(1 for method, path in self.requests if method == "GET" and path.endswith("/" + filename))

    def __enter__(self) -> "HubServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
