"""A Hugging Face Hub on 127.0.0.1 for tests: the endpoints huggingface_hub 2.x calls to create a repository,
upload a folder and download files, answered from memory by a stdlib ``http.server`` in a thread.

- ``POST /api/repos/create`` (``create_repo``): 409 if the repository exists;
- ``POST /api/validate-yaml`` (``upload_folder`` checks README.md's metadata): 400 if it is not YAML;
- ``POST /api/models/<repo>/preupload/<revision>``: every file ``"regular"`` (base64 inside the commit), so
  neither LFS nor Xet (hf_xet is installed) is asked for;
- ``POST /api/models/<repo>/commit/<revision>``: ndjson ``header`` / ``file`` / ``deletedFile`` lines;
- ``HEAD`` / ``GET /<repo>/resolve/<revision>/<path>`` (``hf_hub_download``): ``X-Repo-Commit``, ``ETag``,
  ``Content-Length``; 404 with ``X-Error-Code`` ``RepoNotFound`` / ``EntryNotFound`` as the Hub answers.

Write requests must carry ``Authorization: Bearer <token>``; every request is logged in ``requests``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

import yaml

__all__ = ["FakeHub", "point_huggingface_hub_at"]

_REPO_API = re.compile(r"^/api/models/([^/]+/[^/]+)/(preupload|commit)/([^/]+)$")
_RESOLVE = re.compile(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")


class FakeHub:
    """``with FakeHub(token) as hub:`` serves ``hub.url`` until the block ends (or :meth:`stop`).

    :param token: the token write requests must carry.
    :ivar repos: ``repo_id -> {path: bytes}`` at the head of ``main``.
    :ivar commits: ``repo_id -> [(commit oid, summary)]``, oldest first.
    :ivar requests: ``(method, path)`` of every request, in order.
    """

    def __init__(self, token: str):
        self.token = token
        self.repos: dict[str, dict[str, bytes]] = {}
        self.commits: dict[str, list[tuple[str, str]]] = {}
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FakeHub:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def add_repo(self, repo: str, files: dict[str, bytes], summary: str = "Initial commit") -> None:
        """Create ``repo`` holding ``files`` in one commit, as if pushed by someone else."""
        with self.lock:
            self.repos[repo] = dict(files)
            self.commits[repo] = [(hashlib.sha1(repo.encode()).hexdigest(), summary)]

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()


def point_huggingface_hub_at(hub: FakeHub, hf_home, monkeypatch) -> None:
    """Make huggingface_hub talk to ``hub`` with its token and a cache under ``hf_home`` for one test.

    Sets the environment (``HF_HOME``, ``HF_HUB_CACHE``, ``HF_ENDPOINT``, ``HF_TOKEN``, no telemetry) for
    subprocesses and patches ``huggingface_hub.constants``, which reads those variables once, at import.
    """
    from huggingface_hub import constants

    cache = str(hf_home / "hub")
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.setenv("HF_HUB_CACHE", cache)
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_TOKEN", hub.token)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setattr(constants, "ENDPOINT", hub.url)
    monkeypatch.setattr(
        constants, "HUGGINGFACE_CO_URL_TEMPLATE", hub.url + "/{repo_id}/resolve/{revision}/{filename}"
    )
    monkeypatch.setattr(constants, "HF_HUB_CACHE", cache)


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
            pass

        def _reply(
            self, status: int, body: bytes | dict = b"", headers: dict[str, str] | None = None
        ) -> None:
            if isinstance(body, dict):
                body = json.dumps(body).encode()
                headers = {"Content-Type": "application/json", **(headers or {})}
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _not_found(self, code: str, headers: dict[str, str] | None = None) -> None:
            self._reply(
                404, {"error": code}, {"X-Error-Code": code, "X-Error-Message": code, **(headers or {})}
            )

        def _read_body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length", 0)))

        def _path(self) -> str:
            hub.requests.append((self.command, urlsplit(self.path).path))
            return unquote(urlsplit(self.path).path)

        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            path, body = self._path(), self._read_body()
            if self.headers.get("Authorization") != f"Bearer {hub.token}":
                return self._reply(
                    401,
                    {"error": "Invalid credentials in Authorization header"},
                    {"X-Error-Message": "Invalid credentials in Authorization header"},
                )
            if path == "/api/validate-yaml":
                content = json.loads(body)["content"]
                try:
                    yaml.safe_load(content.split("---")[1])
                except (IndexError, yaml.YAMLError) as error:
                    return self._reply(400, {"errors": [{"message": str(error)}], "warnings": []})
                return self._reply(200, {"errors": [], "warnings": []})
            if path == "/api/repos/create":
                payload = json.loads(body)
                repo = f"{payload['organization']}/{payload['name']}"
                with hub.lock:
                    if repo in hub.repos:
                        return self._reply(
                            409, {"error": "You already created this model repo", "url": f"{hub.url}/{repo}"}
                        )
                    hub.repos[repo], hub.commits[repo] = {}, []
                return self._reply(200, {"url": f"{hub.url}/{repo}", "name": repo})
            match = _REPO_API.match(path)
            if match is None:
                return self._reply(404, {"error": f"FakeHub does not answer POST {path}"})
            repo, verb, _revision = match.groups()
            if repo not in hub.repos:
                return self._not_found("RepoNotFound")
            if verb == "preupload":
                files = json.loads(body)["files"]
                return self._reply(
                    200,
                    {
                        "files": [
                            {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None}
                            for f in files
                        ]
                    },
                )
            lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
            with hub.lock:
                files = dict(hub.repos[repo])
                for line in lines[1:]:
                    if line["key"] == "file":
                        files[line["value"]["path"]] = base64.b64decode(line["value"]["content"])
                    elif line["key"] == "deletedFile":
                        files.pop(line["value"]["path"], None)
                    else:
                        return self._reply(
                            400, {"error": f"FakeHub takes regular files only, got {line['key']}"}
                        )
                oid = hashlib.sha1(repr((len(hub.commits[repo]), sorted(files.items()))).encode()).hexdigest()
                hub.repos[repo] = files
                hub.commits[repo].append((oid, lines[0]["value"]["summary"]))
            return self._reply(200, {"commitUrl": f"{hub.url}/{repo}/commit/{oid}", "commitOid": oid})

        def do_HEAD(self) -> None:  # noqa: N802
            match = _RESOLVE.match(self._path())
            if match is None:
                return self._reply(404, {"error": "not found"})
            repo, _revision, filename = match.groups()
            with hub.lock:
                if repo not in hub.repos or not hub.commits[repo]:
                    return self._not_found("RepoNotFound")
                commit = hub.commits[repo][-1][0]
                content = hub.repos[repo].get(filename)
            if content is None:
                return self._not_found("EntryNotFound", {"X-Repo-Commit": commit})
            etag = hashlib.sha256(content).hexdigest()
            self._reply(
                200,
                content,
                {"X-Repo-Commit": commit, "ETag": f'"{etag}"', "Content-Type": "application/octet-stream"},
            )

        do_GET = do_HEAD  # noqa: N815

    return Handler
