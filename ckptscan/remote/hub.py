"""``hf://org/model[@revision][/path]``: a Hugging Face Hub repository, read file by file by range.

The repository's files (names, sizes, blob ids) come from one Hub API call
(``/api/models/{repo}/revision/{revision}?blobs=true``), pinned to the commit it answers with, and
each file is read through ``/{repo}/resolve/{commit}/{file}`` with ranged GETs (the Hub redirects
large files to its CDN; the signed target is never shown). ``HF_ENDPOINT`` points at another Hub
(a mirror, or a local fake one in the tests); ``HF_TOKEN`` (or ``HUGGING_FACE_HUB_TOKEN``) is sent
for gated and private repositories, to the Hub's host only. ``hf://datasets/org/name`` reads a
dataset repository.
"""

from __future__ import annotations

import json
import os
import posixpath
import urllib.parse

from ckptscan.errors import MissingFile, RemoteFailure, UsageError
from ckptscan.remote import ObjectInfo, Options, Transfer
from ckptscan.remote.http import HttpClient

DEFAULT_ENDPOINT = "https://huggingface.co"


class HubBackend:
    scheme = "hf"

    def __init__(self, repo_type: str, repo: str, revision: str | None, options: Options) -> None:
        self.repo_type = repo_type  # "models" or "datasets"
        self.repo = repo
        self.revision = revision
        self.endpoint = os.environ.get("HF_ENDPOINT", DEFAULT_ENDPOINT).rstrip("/")
        token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
        self.client = HttpClient(options, {"Authorization": f"Bearer {token}"} if token else {})
        self._files: dict[str, ObjectInfo] | None = None
        self._commit: str | None = None

    @classmethod
    def for_url(cls, url: str, options: Options) -> tuple[HubBackend, str]:
        rest = url.split("://", 1)[1].strip("/")
        parts = [p for p in rest.split("/") if p]
        repo_type = "models"
        if parts and parts[0] in ("datasets", "models"):
            repo_type = parts.pop(0)
        if len(parts) < 2:
            raise UsageError(f"{url}: a Hub path is hf://org/name[@revision][/file]")
        org, name = parts[0], parts[1]
        revision = None
        if "@" in name:
            name, revision = name.split("@", 1)
            revision = urllib.parse.unquote(revision) or None
        backend = cls(repo_type, f"{org}/{name}", revision, options)
        return backend, "/".join(parts[2:])

    def url(self, key: str) -> str:
        prefix = "datasets/" if self.repo_type == "datasets" else ""
        at = f"@{self.revision}" if self.revision else ""
        return f"hf://{prefix}{self.repo}{at}" + (f"/{key}" if key else "")

    # -- the repository listing ------------------------------------------------------------------

    def files(self, transfer: Transfer) -> dict[str, ObjectInfo]:
        if self._files is None:
            revision = urllib.parse.quote(self.revision or "main", safe="")
            api = f"{self.endpoint}/api/{self.repo_type}/{self.repo}/revision/{revision}?blobs=true"
            body, _headers, _status = self.client.get(api, self.url(""), transfer)
            try:
                info = json.loads(body)
                siblings = info["siblings"]
                self._commit = str(info.get("sha") or self.revision or "main")
                files = {}
                for s in siblings:
                    name = str(s["rfilename"])
                    lfs = s.get("lfs") or {}
                    size = s.get("size", lfs.get("size"))
                    if not isinstance(size, int):
                        raise TypeError(f"no size for {name}")
                    files[name] = ObjectInfo(name, size, lfs.get("sha256") or s.get("blobId"))
            except (ValueError, KeyError, TypeError, AttributeError) as e:
                raise RemoteFailure(f"the Hub API answered something unexpected ({e})", path=self.url("")) from None
            self._files = files
        return self._files

    def info(self, key: str, transfer: Transfer) -> ObjectInfo:
        found = self.files(transfer).get(key)
        if found is None:
            raise MissingFile("no such file in the repository", path=self.url(key))
        return found

    def read(self, key: str, start: int, end: int, transfer: Transfer) -> tuple[bytes, int | None]:
        self.files(transfer)
        prefix = "datasets/" if self.repo_type == "datasets" else ""
        commit = urllib.parse.quote(self._commit or "main", safe="")
        url = f"{self.endpoint}/{prefix}{self.repo}/resolve/{commit}/{urllib.parse.quote(key)}"
        body, _headers, _ = self.client.get(url, self.url(key), transfer, start=start, end=end)
        if len(body) != end - start:
            raise RemoteFailure(f"the file ended at {start + len(body):,}", path=self.url(key))
        return body, None

    def listdir(self, key: str, transfer: Transfer) -> list[ObjectInfo] | None:
        return [i for name, i in self.files(transfer).items() if posixpath.dirname(name) == key.strip("/")]

    def walk(self, key: str, transfer: Transfer) -> list[ObjectInfo]:
        files = self.files(transfer)
        key = key.strip("/")
        if key in files:
            return [files[key]]
        return [files[name] for name in sorted(files) if not key or name.startswith(key + "/")]

    def is_dir(self, key: str, transfer: Transfer) -> bool:
        key = key.strip("/")
        return not key or any(name.startswith(key + "/") for name in self.files(transfer))
