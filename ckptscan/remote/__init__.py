"""Models where they live: ``hf://org/model[@revision]``, ``https://...``, ``s3://...``, ``gs://...``.

A :class:`RemoteSource` is a :class:`~ckptscan.source.Source` whose bytes come from ranged reads
through a small read-ahead cache, so every reader works unchanged and fetches only what it reads
(a safetensors header, a GGUF header, a zip's central directory and pickle members). A
:class:`Session` holds one model's connection (a backend), its file listing and the transfer
counters that the report shows (bytes transferred vs model size, requests made).

Backends: ``http``/``https`` and the Hugging Face Hub (``hf://``) use the standard library only
(urllib): no extra needed. Everything else goes through fsspec (``pip install "ckptscan[remote]"``
plus the filesystem's own package: s3fs for ``s3://``, gcsfs for ``gs://``), imported lazily.
Credentials come from the standard places (``HF_TOKEN``, the AWS/GCS credential chains) and are
never printed: shown URLs carry no user info, query string or redirect target.
"""

from __future__ import annotations

import bisect
import io
import os
import posixpath
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import IO, Any, Protocol

from ckptscan.errors import MissingFile, NeedsDownload, TruncatedFile, UnsafePath
from ckptscan.source import HEAD_BYTES, Head, Source

_URL = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.\-]*)://")

READ_AHEAD = 64 << 10  # the least a miss fetches (a safetensors or GGUF header usually fits)
MAX_READ_AHEAD = 16 << 20
CACHE_BYTES = 64 << 20  # what one open file keeps of what it fetched
DEFAULT_BUDGET = 64 << 20  # per file: beyond this, a reader needs most of the file: ask for --download
DEFAULT_TIMEOUT_S = 30.0
PREFETCH_GAP = 16 << 10  # ranges closer than this are fetched as one (a few KB more, a request less)
PREFETCH_THREADS = 8


def is_remote(path: object) -> bool:
    """Whether ``path`` names a remote location (a URL other than ``file://``)."""
    if not isinstance(path, str):
        return False
    match = _URL.match(path)
    return match is not None and match.group(1).lower() != "file"


def shown(url: str) -> str:
    """A URL as it may be printed: no user info, query string or fragment."""
    import urllib.parse

    parts = urllib.parse.urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


@dataclass(frozen=True, slots=True)
class Options:
    download: bool = False  # --download: no per-file budget
    budget: int = DEFAULT_BUDGET
    timeout_s: float = DEFAULT_TIMEOUT_S


_options = Options(timeout_s=float(os.environ.get("CKPTSCAN_REMOTE_TIMEOUT", DEFAULT_TIMEOUT_S)))


def options() -> Options:
    return _options


def configure(**changes: Any) -> Options:
    """Set the remote options of this process (the CLI's ``--download``; workers get them too)."""
    global _options
    _options = replace(_options, **changes)
    return _options


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str  # the object's path in its backend's namespace (posix, no leading slash)
    size: int
    etag: str | None = None  # an ETag or another content version, when the backend gives one


_COUNTING = threading.Lock()


@dataclass(slots=True)
class Transfer:
    requests: int = 0
    bytes: int = 0

    def add(self, requests: int = 0, nbytes: int = 0) -> None:
        with _COUNTING:  # prefetches count from several threads
            self.requests += requests
            self.bytes += nbytes

    def as_dict(self) -> dict[str, int]:
        return {"requests": self.requests, "bytes": self.bytes}


class Backend(Protocol):
    scheme: str

    def url(self, key: str) -> str:
        """The key as a user reads it: no credentials, no query string, no signed redirect."""
        ...

    def info(self, key: str, transfer: Transfer) -> ObjectInfo:
        """Size (and ETag) of one object; MissingFile if there is none."""
        ...

    def read(self, key: str, start: int, end: int, transfer: Transfer) -> tuple[bytes, int | None]:
        """Exactly bytes ``[start, end)`` of an object (RemoteFailure otherwise), and the object's
        total size when the response said it (a ``Content-Range``)."""
        ...

    def listdir(self, key: str, transfer: Transfer) -> list[ObjectInfo] | None:
        """The files directly in a folder (None when the backend cannot list, e.g. plain HTTP)."""
        ...

    def walk(self, key: str, transfer: Transfer) -> list[ObjectInfo]:
        """Every file under a prefix (or the object itself), sorted by key."""
        ...

    def is_dir(self, key: str, transfer: Transfer) -> bool: ...


class Session:
    """One model's remote reads: a backend, a listing cache, and what was transferred."""

    def __init__(self, backend: Backend, opts: Options | None = None) -> None:
        self.backend = backend
        self.options = opts or options()
        self.transfer = Transfer()
        self._listings: dict[str, dict[str, ObjectInfo] | None] = {}
        self._infos: dict[str, ObjectInfo] = {}

    def folder(self, key: str) -> dict[str, ObjectInfo] | None:
        """The files of a folder by name (one listing request per folder), or None if unlistable."""
        if key not in self._listings:
            listed = self.backend.listdir(key, self.transfer)
            self._listings[key] = None if listed is None else {posixpath.basename(i.key): i for i in listed}
        return self._listings[key]

    def info(self, key: str) -> ObjectInfo:
        known = self._infos.get(key)
        if known is not None:
            return known
        listing = self.folder(posixpath.dirname(key))
        if listing is not None:
            found = listing.get(posixpath.basename(key))
            if found is None:
                raise MissingFile("no such file", path=self.backend.url(key))
        else:
            found = self.backend.info(key, self.transfer)
        self._infos[key] = found
        return found

    def exists(self, key: str) -> bool:
        listing = self.folder(posixpath.dirname(key))
        if listing is not None:
            return posixpath.basename(key) in listing
        try:
            self.info(key)
        except MissingFile:
            return False
        return True

    def open(self, key: str, root: str) -> RemoteSource:
        return RemoteSource(self, key, root)


class RemotePath:
    """The few ``pathlib`` operations readers use on ``Source.path`` / ``Source.root``, for a key."""

    def __init__(self, session: Session, key: str) -> None:
        self.session = session
        self.key = key.strip("/")

    @property
    def name(self) -> str:
        return posixpath.basename(self.key)

    @property
    def suffix(self) -> str:
        return posixpath.splitext(self.name)[1]

    @property
    def parent(self) -> RemotePath:
        return RemotePath(self.session, posixpath.dirname(self.key))

    def __truediv__(self, other: str) -> RemotePath:
        return RemotePath(self.session, posixpath.join(self.key, other))

    def as_posix(self) -> str:
        return self.key

    def is_file(self) -> bool:
        return self.session.exists(self.key)

    def exists(self) -> bool:
        return self.is_file()

    def is_dir(self) -> bool:
        return self.session.backend.is_dir(self.key, self.session.transfer)

    def __str__(self) -> str:
        return self.session.backend.url(self.key)

    def __repr__(self) -> str:
        return f"RemotePath({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RemotePath) and other.key == self.key and other.session is self.session

    def __hash__(self) -> int:
        return hash(self.key)


class RemoteSource(Source):
    """A remote file read by ranges, through a read-ahead cache; see the module docstring."""

    is_remote = True

    def __init__(self, session: Session, key: str, root: str) -> None:  # no super().__init__: no fd
        self.session = session
        self.key = key.strip("/")
        self.root_key = root.strip("/")
        self.path = RemotePath(session, self.key)  # type: ignore[assignment]
        self.root = RemotePath(session, self.root_key)  # type: ignore[assignment]
        self.name = posixpath.relpath(self.key, self.root_key) if self.root_key else self.key
        self._fd = -1
        self._head: Head | None = None
        self._starts: list[int] = []  # cached blocks, by start offset
        self._blocks: dict[int, bytes] = {}
        self._cached = 0
        self._last = (0, b"")  # the block the previous read hit: most reads hit it again
        self.fetched = 0  # bytes this file has transferred
        self.size = session.info(self.key).size
        # a backend that learned the size from a first ranged GET (HTTP) hands over what it read
        seed = getattr(session.backend, "prefetched", {}).pop(self.key, None)
        if seed:
            self.fetched += len(seed)
            self._remember(0, seed[: self.size])

    @property
    def etag(self) -> str | None:
        return self.session.info(self.key).etag

    # -- reading ---------------------------------------------------------------------------------

    def read_at(self, offset: int, length: int, what: str = "data") -> bytes:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise TruncatedFile(
                f"{what} needs bytes {offset}..{offset + length} but the file has {self.size}",
                path=str(self.path),
                where=f"offset {offset}",
            )
        start, block = self._last
        if start <= offset and offset + length <= start + len(block):
            return block[offset - start : offset - start + length]
        pieces = []
        position, end = offset, offset + length
        while position < end:
            i = bisect.bisect_right(self._starts, position) - 1
            if i >= 0:
                start = self._starts[i]
                block = self._blocks[start]
                if position < start + len(block):
                    take = min(end, start + len(block)) - position
                    pieces.append(block[position - start : position - start + take])
                    self._last = (start, block)
                    position += take
                    continue
            following = self._starts[i + 1] if i + 1 < len(self._starts) else self.size
            pieces.append(self._fetch(position, end, following))
            position += len(pieces[-1])
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def _fetch(self, position: int, end: int, following: int) -> bytes:
        """Fetch from ``position``: at least to ``end`` (or the next cached block), plus a read-ahead
        that grows with what was fetched (a fifth of it), so that walking a long header costs
        few requests and at most ~1.2x its bytes plus one block."""
        want = end - position
        ahead = min(MAX_READ_AHEAD, max(READ_AHEAD, self.fetched // 5))
        stop = min(self.size, following, position + (want if want >= ahead else ahead))
        stop = max(stop, min(end, following))
        budget = self.session.options.budget
        if not self.session.options.download and self.fetched + (stop - position) > budget:
            raise NeedsDownload(
                f"reading this file remotely needs more than {budget:,} of its {self.size:,} bytes (its metadata "
                "is not in one place: e.g. compressed members or a very large header); rerun with --download "
                "to allow it",
                path=str(self.path),
            )
        data, _total = self.session.backend.read(self.key, position, stop, self.session.transfer)
        self.fetched += len(data)
        self._remember(position, data)
        return data[: min(end, stop) - position]

    def prefetch(self, ranges: list[tuple[int, int]]) -> None:
        """Fetch many small ranges (a zip's local headers) together: neighbours closer than
        ``PREFETCH_GAP`` become one request, and the requests run concurrently."""
        spans: list[list[int]] = []
        for offset, length in sorted(ranges):
            start, end = max(0, offset), min(self.size, offset + length)
            if end <= start or self._cached_at(start, end):
                continue
            if spans and start - spans[-1][1] <= PREFETCH_GAP:
                spans[-1][1] = max(spans[-1][1], end)
            else:
                spans.append([start, end])
        if len(spans) < 2:
            return  # one miss is no better fetched now than when it is read
        total = sum(end - start for start, end in spans)
        if not self.session.options.download and self.fetched + total > self.session.options.budget:
            return  # the reads themselves will say so, one by one
        from concurrent.futures import ThreadPoolExecutor

        def fetch(span: list[int]) -> tuple[int, bytes]:
            return span[0], self.session.backend.read(self.key, span[0], span[1], self.session.transfer)[0]

        with ThreadPoolExecutor(max_workers=PREFETCH_THREADS) as pool:
            fetched = list(pool.map(fetch, spans))
        for start, data in fetched:
            self.fetched += len(data)
            self._remember(start, data)

    def _cached_at(self, start: int, end: int) -> bool:
        i = bisect.bisect_right(self._starts, start) - 1
        return i >= 0 and self._starts[i] + len(self._blocks[self._starts[i]]) >= end

    def _remember(self, start: int, data: bytes) -> None:
        while self._starts and self._cached + len(data) > CACHE_BYTES:
            oldest = min(self._starts, key=lambda s: s != self._last[0])  # anything but the last hit
            self._starts.remove(oldest)
            self._cached -= len(self._blocks.pop(oldest))
        bisect.insort(self._starts, start)
        self._blocks[start] = data
        self._cached += len(data)
        self._last = (start, data)

    def head(self) -> Head:
        if self._head is None:
            self._head = Head(self.read_up_to(0, HEAD_BYTES), self)
        return self._head

    def fileno(self) -> int:
        raise OSError("a remote file has no file descriptor")

    @contextmanager
    def mapped(self) -> Iterator[Any]:
        yield RemoteBuffer(self)

    def opener(self) -> IO[bytes]:
        from ckptscan.formats._zip import SourceWindow

        return io.BufferedReader(SourceWindow(self, 0, self.size), buffer_size=HEAD_BYTES)

    # -- related files -----------------------------------------------------------------------------

    def resolve(self, relative: str) -> RemotePath:  # type: ignore[override]
        return RemotePath(self.session, resolve_key(self.root_key, relative, referrer=str(self.path)))

    def open_related(self, relative: str) -> RemoteSource:
        key = resolve_key(self.root_key, relative, referrer=str(self.path))
        if not self.session.exists(key):
            raise MissingFile(f"names {relative!r}, which is not there", path=str(self.path))
        return RemoteSource(self.session, key, self.root_key)

    def close(self) -> None:
        self._blocks.clear()
        self._starts.clear()
        self._cached = 0
        self._last = (0, b"")

    def __repr__(self) -> str:
        return f"RemoteSource({str(self.path)!r}, size={self.size})"


class RemoteBuffer:
    """``len`` and slicing over a remote file, for readers that walk a memory map (GGUF)."""

    def __init__(self, source: RemoteSource) -> None:
        self.source = source

    def __len__(self) -> int:
        return self.source.size

    def __getitem__(self, index: int | slice) -> Any:
        size = self.source.size
        if isinstance(index, slice):
            start, stop, step = index.indices(size)
            if step != 1:
                raise ValueError("only contiguous slices")
            return self.source.read_at(start, max(0, stop - start)) if stop > start else b""
        if index < 0:
            index += size
        return self.source.read_at(index, 1)[0]


def resolve_key(root: str, relative: str, *, referrer: str) -> str:
    """Join ``relative`` to the model's folder key, refusing anything that leaves it."""
    if not relative or "\x00" in relative:
        raise UnsafePath(f"names an empty or invalid path {relative!r}", path=referrer)
    pure = relative.replace("\\", "/")
    if pure.startswith("/") or (len(pure) > 1 and pure[1] == ":") or _URL.match(pure):
        raise UnsafePath(f"names an absolute path {relative!r}; refused", path=referrer)
    joined = posixpath.normpath(posixpath.join(root, pure)) if root else posixpath.normpath(pure)
    if joined == ".." or joined.startswith("../") or (root and not (joined + "/").startswith(root.rstrip("/") + "/")):
        raise UnsafePath(f"names {relative!r}, a path that climbs out of the model's folder; refused", path=referrer)
    return joined


# -- opening what a user names -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Location:
    session: Session
    key: str  # a file or folder key in the backend
    shown: str  # what the user typed (credentials stripped)


def locate(url: str, opts: Options | None = None) -> Location:
    """The backend and key a URL names."""
    scheme = url.split("://", 1)[0].lower()
    backend: Backend
    if scheme in ("http", "https"):
        from ckptscan.remote.http import HttpBackend

        backend, key = HttpBackend.for_url(url, opts or options())
    elif scheme == "hf":
        from ckptscan.remote.hub import HubBackend

        backend, key = HubBackend.for_url(url, opts or options())
    else:
        from ckptscan.remote.fs import FsspecBackend

        backend, key = FsspecBackend.for_url(url)
    return Location(Session(backend, opts), key, backend.url(key))


@dataclass(frozen=True, slots=True)
class Found:
    """A file found under a remote root (for audits): its URL, size and version."""

    url: str
    key: str
    size: int
    etag: str | None = None


@dataclass(slots=True)
class Listing:
    files: list[Found] = field(default_factory=list)
    transfer: Transfer = field(default_factory=Transfer)


def list_tree(url: str) -> Listing:
    """Every file under a remote folder (or the file itself), sorted; runs where it is called
    (on a Dask worker, for a distributed audit)."""
    location = locate(url)
    session = location.session
    infos = session.backend.walk(location.key, session.transfer)
    files = [Found(session.backend.url(i.key), i.key, i.size, i.etag) for i in infos]
    return Listing(files, session.transfer)
