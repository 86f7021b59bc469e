"""Ranged reads over HTTP(S) with the standard library: no extra needed.

Every read is one ``GET`` with a ``Range`` header, and the answer is checked before its body is
trusted: a server that ignores the range (``200``) would send the whole file, so the connection is
closed at once and the read fails, asking for ``--download``; a ``Content-Range`` or body length
other than what was asked for, a connection dropped mid-body and a server slower than the time limit
are each one clear error. Redirects are followed (the Hub sends large files to a CDN) but a signed
redirect target is never shown, and credentials are never sent to another host.
"""

from __future__ import annotations

import http.client
import posixpath
import re
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from ckptscan.errors import MissingFile, RemoteFailure
from ckptscan.remote import READ_AHEAD, ObjectInfo, Options, Transfer

_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
_USER_AGENT = "ckptscan (header-only reads)"


class HttpClient:
    """GETs with a time limit, counting requests and bytes; headers for one host only."""

    def __init__(self, options: Options, headers: dict[str, str] | None = None) -> None:
        self.options = options
        self.headers = headers or {}
        self._final: dict[str, str] = {}  # url -> where it redirected (reused: one hop, not two)

    def get(
        self, url: str, shown: str, transfer: Transfer, *, start: int | None = None, end: int | None = None
    ) -> tuple[bytes, dict[str, str], int]:
        """The body (or ``[start, end)`` of it), the response headers and the status."""
        target = self._final.get(url, url)
        headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
        if _same_host(target, url):
            headers.update(self.headers)
        if start is not None and end is not None:
            headers["Range"] = f"bytes={start}-{end - 1}"
        request = urllib.request.Request(target, headers=headers)
        opener = urllib.request.build_opener(_Redirects(transfer, self.headers, url))
        transfer.add(requests=1)
        try:
            response = opener.open(request, timeout=self.options.timeout_s)
        except urllib.error.HTTPError as e:
            e.close()
            if e.code == 404:
                raise MissingFile("no such file (HTTP 404)", path=shown) from None
            if e.code in (401, 403):
                raise RemoteFailure(
                    f"access denied (HTTP {e.code}); for a gated or private Hub model set HF_TOKEN", path=shown
                ) from None
            if e.code == 416:
                raise RemoteFailure(f"the server refused the byte range {start}-{end} (HTTP 416)", path=shown) from None
            raise RemoteFailure(f"the server answered HTTP {e.code} {e.reason}", path=shown) from None
        except TimeoutError as e:
            raise RemoteFailure(f"no answer within {self.options.timeout_s:g} s", path=shown) from e
        except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as e:
            reason = getattr(e, "reason", e)
            raise RemoteFailure(f"cannot connect: {reason}", path=shown) from None
        with response:
            final = response.geturl()
            if final != target:
                self._final[url] = final
            status = response.status
            response_headers = {k.lower(): v for k, v in response.getheaders()}
            expected = None
            if start is not None and end is not None:
                if status != 206:
                    # 200: the server ignored Range and is sending the whole file; hang up now
                    length = response_headers.get("content-length", "an unknown number of")
                    raise RemoteFailure(
                        f"the server ignored the Range request (HTTP {status}, {length} bytes): reading the header "
                        "would download the whole file; rerun with --download, or use a server that supports "
                        "ranges",
                        path=shown,
                    )
                expected = _expected_length(response_headers, start, end, shown)
            body = _read_body(response, expected, shown, self.options.timeout_s)
        transfer.add(nbytes=len(body))
        return body, response_headers, status


def _expected_length(headers: dict[str, str], start: int, end: int, shown: str) -> int:
    """The body length a 206 promises: what was asked, or less only where the file ends."""
    found = content_range(headers)
    if found is None:
        raise RemoteFailure("the server sent a partial answer without a Content-Range", path=shown)
    first, stop, total = found
    if first != start or stop > end or (stop < end and stop != total):
        raise RemoteFailure(
            f"the server answered bytes {headers.get('content-range')} where {start}-{end - 1} were asked for",
            path=shown,
        )
    return stop - first


def _read_body(response: Any, expected: int | None, shown: str, timeout_s: float) -> bytes:
    declared = response.headers.get("Content-Length")
    if expected is not None and declared is not None and declared.isdigit() and int(declared) != expected:
        raise RemoteFailure(
            f"the server's Content-Length ({int(declared):,}) is not the {expected:,} bytes asked for", path=shown
        )
    limit = expected if expected is not None else 64 << 20
    try:
        body = response.read(limit + 1)
    except http.client.IncompleteRead as e:
        raise RemoteFailure(
            f"the connection closed after {len(e.partial):,} of {expected or 0:,} bytes", path=shown
        ) from None
    except TimeoutError:
        raise RemoteFailure(f"the server stopped sending for {timeout_s:g} s", path=shown) from None
    except (OSError, http.client.HTTPException) as e:
        raise RemoteFailure(f"the connection failed while reading: {e}", path=shown) from None
    if expected is not None and len(body) != expected:
        raise RemoteFailure(
            f"the server sent {len(body):,} bytes where {expected:,} were asked for (connection dropped or a "
            "lying Content-Length)",
            path=shown,
        )
    if expected is None and len(body) > limit:
        raise RemoteFailure(f"the response is larger than {limit:,} bytes", path=shown)
    return bytes(body)


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Count each hop as a request; drop credentials when a redirect leaves the host."""

    def __init__(self, transfer: Transfer, secret_headers: dict[str, str], origin: str) -> None:
        self.transfer = transfer
        self.secret = {k.lower() for k in secret_headers}
        self.origin = origin

    def redirect_request(
        self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any, newurl: str
    ) -> urllib.request.Request | None:
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is None:
            return None
        self.transfer.add(requests=1)
        if not _same_host(newurl, self.origin):
            for name in list(new.headers):
                if name.lower() in self.secret:
                    del new.headers[name]
        return new


def _same_host(a: str, b: str) -> bool:
    return urllib.parse.urlsplit(a).netloc.lower() == urllib.parse.urlsplit(b).netloc.lower()


def content_range(headers: dict[str, str]) -> tuple[int, int, int | None] | None:
    match = _CONTENT_RANGE.match(headers.get("content-range", ""))
    if match is None:
        return None
    total = match.group(3)
    return int(match.group(1)), int(match.group(2)) + 1, None if total == "*" else int(total)


class HttpBackend:
    """``http(s)://host/path``: one file per URL; files beside it by relative URL; no listing."""

    scheme = "https"

    def __init__(self, base: str, options: Options, headers: dict[str, str] | None = None) -> None:
        self.base = base  # scheme://host[:port], no credentials
        self.client = HttpClient(options, headers)
        self.prefetched: dict[str, bytes] = {}  # key -> first block, read while learning the size
        self.query: dict[str, str] = {}  # key -> its query string (kept, never shown)

    @classmethod
    def for_url(cls, url: str, options: Options) -> tuple[HttpBackend, str]:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        netloc = f"[{host}]" if ":" in host else host
        if parts.port:
            netloc += f":{parts.port}"
        headers = {}
        if parts.username:  # user:password@host: basic auth, never shown
            import base64

            secret = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
            headers["Authorization"] = "Basic " + base64.b64encode(secret.encode()).decode()
        backend = cls(f"{parts.scheme.lower()}://{netloc}", options, headers)
        key = urllib.parse.unquote(parts.path).strip("/")
        if parts.query:
            backend.query[key] = parts.query
        return backend, key

    def url(self, key: str) -> str:
        return f"{self.base}/{urllib.parse.quote(key)}"

    def _request_url(self, key: str) -> str:
        query = self.query.get(key)
        return self.url(key) + (f"?{query}" if query else "")

    def info(self, key: str, transfer: Transfer) -> ObjectInfo:
        # no HEAD: the first block's GET says the size (Content-Range) and is kept for the reader,
        # so a safetensors header that fits in it costs one request in all
        body, headers, _status = self.client.get(
            self._request_url(key), self.url(key), transfer, start=0, end=READ_AHEAD
        )
        found = content_range(headers)
        if found is None or found[2] is None:
            raise RemoteFailure("the server sent no Content-Range total; cannot size the file", path=self.url(key))
        self.prefetched[key] = body
        return ObjectInfo(key, found[2], headers.get("etag"))

    def read(self, key: str, start: int, end: int, transfer: Transfer) -> tuple[bytes, int | None]:
        body, headers, _ = self.client.get(self._request_url(key), self.url(key), transfer, start=start, end=end)
        if len(body) != end - start:
            raise RemoteFailure(f"the file ended at {start + len(body):,} (it shrank?)", path=self.url(key))
        found = content_range(headers)
        return body, found[2] if found else None

    def listdir(self, key: str, transfer: Transfer) -> list[ObjectInfo] | None:
        return None

    def walk(self, key: str, transfer: Transfer) -> list[ObjectInfo]:
        # a URL is one file, and HTTP cannot list: nothing is fetched until a worker reads it (so
        # its size is unknown to the audit's discovery, and a failing server is that file's error)
        return [ObjectInfo(key, 0)]

    def is_dir(self, key: str, transfer: Transfer) -> bool:
        return False

    def parent(self, key: str) -> str:
        return posixpath.dirname(key)
