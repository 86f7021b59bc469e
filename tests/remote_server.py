"""Local servers for the remote-read tests (127.0.0.1 only): an HTTP file server with Range support
that counts requests and bytes and can misbehave on demand, a fake Hugging Face Hub API on top of
it, and a moto S3 server. Nothing here is imported by ckptscan."""

from __future__ import annotations

import json
import os
import posixpath
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass
class Log:
    requests: list[tuple[str, str]] = field(default_factory=list)  # (path, Range header)
    bytes_sent: int = 0

    def clear(self) -> None:
        self.requests.clear()
        self.bytes_sent = 0


@dataclass
class Behaviour:
    """How the server misbehaves: per path prefix (relative to the served folder)."""

    ignore_range: set[str] = field(default_factory=set)  # answer 200 with the whole file
    drop_after: dict[str, int] = field(default_factory=dict)  # send this many body bytes, then hang up
    lie_length: set[str] = field(default_factory=set)  # Content-Length 100 more than sent
    slow: dict[str, float] = field(default_factory=dict)  # sleep this long before answering

    def match(self, rule: set[str] | dict[str, object], path: str) -> str | None:
        return next((p for p in rule if path.startswith(p)), None)


class FileServer:
    """Serves ``root`` at ``http://127.0.0.1:PORT/``; ``hub`` adds a fake Hub API for repositories
    laid out as ``root/org/name/<files>``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.log = Log()
        self.behaviour = Behaviour()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                server.handle(self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FileServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # -- requests --------------------------------------------------------------------------------

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        parsed = urllib.parse.urlsplit(h.path)
        path = urllib.parse.unquote(parsed.path).lstrip("/")
        self.log.requests.append((path, h.headers.get("Range", "")))
        slow = self.behaviour.match(self.behaviour.slow, path)
        if slow is not None:
            time.sleep(self.behaviour.slow[slow])
        if path.startswith("api/models/"):
            return self.hub_api(h, path[len("api/models/") :])
        if "/resolve/" in path:  # org/name/resolve/<rev>/<file>
            repo, rest = path.split("/resolve/", 1)
            path = posixpath.join(repo, rest.split("/", 1)[1])
        file = (self.root / path).resolve()
        if not str(file).startswith(str(self.root.resolve())) or not file.is_file():
            return self.send(h, 404, b"not found")
        size = file.stat().st_size
        wanted = h.headers.get("Range")
        if wanted and self.behaviour.match(self.behaviour.ignore_range, path) is None:
            first, last = wanted.removeprefix("bytes=").split("-")
            start, end = int(first), min(int(last) + 1, size)
            if start >= size:
                return self.send(h, 416, b"")
            headers = {"Content-Range": f"bytes {start}-{end - 1}/{size}", "ETag": f'"{int(file.stat().st_mtime_ns)}"'}
            return self.send_file(h, 206, file, path, start, end, headers)
        return self.send_file(h, 200, file, path, 0, size, {})

    def send(self, h: BaseHTTPRequestHandler, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        h.send_response(status)
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        self.log.bytes_sent += len(body)  # counted before sending: the client may look at once
        h.wfile.write(body)

    def send_file(
        self,
        h: BaseHTTPRequestHandler,
        status: int,
        file: Path,
        path: str,
        start: int,
        end: int,
        headers: dict[str, str],
    ) -> None:
        length = end - start
        drop = self.behaviour.match(self.behaviour.drop_after, path)
        lie = self.behaviour.match(self.behaviour.lie_length, path) is not None
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(length + 100 if lie else length))
        h.end_headers()
        with file.open("rb") as f:
            f.seek(start)
            remaining = length if drop is None else min(length, self.behaviour.drop_after[drop])
            try:
                while remaining:
                    chunk = f.read(min(remaining, 1 << 20))
                    if not chunk:
                        break
                    self.log.bytes_sent += len(chunk)
                    h.wfile.write(chunk)
                    remaining -= len(chunk)
            except (BrokenPipeError, ConnectionResetError):
                pass
        if drop is not None or lie:
            h.close_connection = True
            h.wfile.flush()
            with suppress(OSError):
                h.connection.shutdown(2)

    def hub_api(self, h: BaseHTTPRequestHandler, rest: str) -> None:
        repo, _, _revision = rest.partition("/revision/")
        folder = self.root / repo
        if not folder.is_dir():
            return self.send(h, 404, b'{"error": "Repository not found"}')
        siblings = [
            {"rfilename": p.relative_to(folder).as_posix(), "size": p.stat().st_size, "blobId": f"{p.stat().st_size:x}"}
            for p in sorted(folder.rglob("*"))
            if p.is_file()
        ]
        body = json.dumps({"id": repo, "sha": "0" * 40, "siblings": siblings}).encode()
        self.send(h, 200, body, {"Content-Type": "application/json"})


@contextmanager
def file_server(root: Path) -> Iterator[FileServer]:
    with FileServer(root) as server:
        yield server


@contextmanager
def moto_s3(bucket: str, root: Path, prefix: str) -> Iterator[dict[str, str]]:
    """A moto S3 server on 127.0.0.1 with ``root``'s files uploaded under ``s3://bucket/prefix/``;
    yields the environment that points s3fs at it."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ENDPOINT_URL_S3": endpoint,
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        import boto3

        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        s3.create_bucket(Bucket=bucket)
        for file in sorted(root.rglob("*")):
            if file.is_file():
                s3.upload_file(str(file), bucket, f"{prefix}/{file.relative_to(root).as_posix()}")
        yield env
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
