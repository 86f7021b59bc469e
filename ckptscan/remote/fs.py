"""Any filesystem fsspec knows (``s3://``, ``gs://``, ``az://``, ``memory://``...): the ``remote`` extra.

Each read is one ``cat_file(path, start, end)`` (a ranged GET on object stores); sizes and ETags
come from one listing per folder. Credentials are fsspec's and the filesystem's own (the AWS chain
for s3fs: environment, profile, instance role; Application Default Credentials for gcsfs); ckptscan
never sees or prints them. ``FSSPEC_S3_ENDPOINT_URL``-style settings and ``AWS_ENDPOINT_URL`` work
as they do for those libraries.
"""

from __future__ import annotations

import posixpath
from typing import Any

from ckptscan.errors import MissingDependency, MissingFile, RemoteFailure
from ckptscan.remote import ObjectInfo, Transfer

EXTRA = 'pip install "ckptscan[remote]"'
_PACKAGES = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs"}


def import_fsspec() -> Any:
    try:
        import fsspec
    except ImportError:
        raise MissingDependency(f"remote paths other than http(s):// and hf:// need fsspec ({EXTRA})") from None
    return fsspec


class FsspecBackend:
    def __init__(self, fs: Any, protocol: str) -> None:
        self.fs = fs
        self.scheme = protocol

    @classmethod
    def for_url(cls, url: str) -> tuple[FsspecBackend, str]:
        fsspec = import_fsspec()
        protocol = url.split("://", 1)[0].lower()
        try:
            fs, path = fsspec.core.url_to_fs(url)
        except ImportError:
            package = _PACKAGES.get(protocol, f"the fsspec implementation for {protocol}://")
            raise MissingDependency(f"{protocol}:// paths need {package} ({EXTRA})") from None
        except ValueError as e:
            raise RemoteFailure(f"fsspec does not know this location: {e}", path=url) from None
        return cls(fs, protocol), str(path).strip("/")

    def url(self, key: str) -> str:
        return f"{self.scheme}://{key}"

    def _call(self, key: str, transfer: Transfer, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        transfer.add(requests=1)
        try:
            return fn(*args, **kwargs)
        except FileNotFoundError:
            raise MissingFile("no such file", path=self.url(key)) from None
        except PermissionError as e:
            raise RemoteFailure(f"access denied while {what}: {e}", path=self.url(key)) from None
        except (OSError, ValueError, RuntimeError, TimeoutError) as e:
            raise RemoteFailure(f"{what} failed: {type(e).__name__}: {e}", path=self.url(key)) from None

    @staticmethod
    def _object(entry: dict[str, Any]) -> ObjectInfo:
        etag = entry.get("ETag") or entry.get("etag") or entry.get("md5Hash") or entry.get("mtime")
        return ObjectInfo(
            str(entry["name"]).strip("/"), int(entry.get("size") or 0), None if etag is None else str(etag)
        )

    def info(self, key: str, transfer: Transfer) -> ObjectInfo:
        entry = self._call(key, transfer, "looking it up", self.fs.info, key)
        if entry.get("type") == "directory":
            raise MissingFile("is a folder, not a file", path=self.url(key))
        return self._object(entry)

    def read(self, key: str, start: int, end: int, transfer: Transfer) -> tuple[bytes, int | None]:
        data = self._call(key, transfer, "reading", self.fs.cat_file, key, start=start, end=end)
        transfer.add(nbytes=len(data))
        if len(data) != end - start:
            raise RemoteFailure(f"asked for {end - start:,} bytes at {start:,}, got {len(data):,}", path=self.url(key))
        return bytes(data), None

    def listdir(self, key: str, transfer: Transfer) -> list[ObjectInfo] | None:
        try:
            entries = self._call(key, transfer, "listing", self.fs.ls, key, detail=True)
        except MissingFile:
            return []
        return [self._object(e) for e in entries if e.get("type") != "directory"]

    def walk(self, key: str, transfer: Transfer) -> list[ObjectInfo]:
        found = self._call(key, transfer, "listing", self.fs.find, key, detail=True)
        files = [self._object(e) for e in found.values() if e.get("type") != "directory"]
        return sorted(files, key=lambda i: i.key)

    def is_dir(self, key: str, transfer: Transfer) -> bool:
        if not key.strip("/") or "/" not in key.strip("/"):
            return True  # a bucket
        parent = self.listdir(posixpath.dirname(key), transfer) or []
        if any(i.key == key.strip("/") for i in parent):
            return False
        return bool(self._call(key, transfer, "looking it up", self.fs.isdir, key))
