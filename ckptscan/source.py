"""Bounded, read-only access to a checkpoint file and to the files beside it.

Every read names its offset and length and is checked against the file size first, so a reader can
never be talked into reading past the end or allocating what a header merely claims. Files that a
model refers to (shards, external data) are opened through :meth:`Source.open_related`, which
refuses any path that leaves the model's folder: absolute paths, ``..`` climbs, and links out.
"""

from __future__ import annotations

import mmap
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from ckptscan.errors import CkptscanError, MissingFile, ReadFailure, TruncatedFile, UnsafePath

HEAD_BYTES = 4096


class Source:
    """One open file of a model. ``name`` is its path relative to ``root`` (the model's folder)."""

    def __init__(self, path: str | os.PathLike[str], *, root: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path)
        self.root = Path(root) if root is not None else self.path.parent
        try:
            self.name = self.path.relative_to(self.root).as_posix()
        except ValueError:
            self.name = self.path.name
        try:
            # O_NONBLOCK: opening a FIFO for reading would otherwise wait forever for a writer
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_BINARY", 0))
        except FileNotFoundError as e:
            raise MissingFile("no such file", path=str(self.path)) from e
        except OSError as e:
            raise ReadFailure(f"cannot open: {e.strerror or e}", path=str(self.path)) from e
        self._fd = fd
        try:
            st = os.fstat(fd)
        except OSError as e:
            os.close(fd)
            raise ReadFailure(f"cannot stat: {e.strerror or e}", path=str(self.path)) from e
        if not _is_regular(st.st_mode):
            os.close(fd)
            raise ReadFailure("not a regular file", path=str(self.path))
        self.size = st.st_size
        self._head: Head | None = None

    # -- reading ---------------------------------------------------------------------------------

    def read_at(self, offset: int, length: int, what: str = "data") -> bytes:
        """Exactly ``length`` bytes at ``offset``, or TruncatedFile if the file is shorter."""
        if offset < 0 or length < 0 or offset + length > self.size:
            raise TruncatedFile(
                f"{what} needs bytes {offset}..{offset + length} but the file has {self.size}",
                path=str(self.path),
                where=f"offset {offset}",
            )
        chunks = []
        remaining = length
        position = offset
        while remaining:
            try:
                chunk = os.pread(self._fd, min(remaining, 1 << 30), position)
            except OSError as e:
                raise ReadFailure(f"read failed: {e.strerror or e}", path=str(self.path)) from e
            if not chunk:
                raise TruncatedFile(
                    f"{what}: file ended at {position} while reading (it shrank during the scan?)",
                    path=str(self.path),
                )
            chunks.append(chunk)
            remaining -= len(chunk)
            position += len(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def read_up_to(self, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes at ``offset`` (fewer at the end of the file)."""
        length = max(0, min(length, self.size - offset))
        return self.read_at(offset, length) if length else b""

    def head(self) -> Head:
        if self._head is None:
            self._head = Head(self.read_up_to(0, HEAD_BYTES), self)
        return self._head

    def fileno(self) -> int:
        return self._fd

    # Remote sources (ckptscan.remote.RemoteSource) override these three, so that readers which
    # want a memory map or a file object for a library work on both without knowing which it is.
    is_remote = False

    @contextmanager
    def mapped(self) -> Iterator[Any]:
        """The whole file as a read-only buffer (``len``, slicing, ``struct.unpack_from``): a memory
        map here; a remote source gives an object that fetches what is sliced."""
        with mmap.mmap(self.fileno(), 0, access=mmap.ACCESS_READ) as view:
            yield view

    def prefetch(self, ranges: list[tuple[int, int]]) -> None:
        """A hint: these ``(offset, length)`` reads are coming. Local files need none."""

    def opener(self) -> Path | IO[bytes]:
        """What to hand a library that opens files itself (zipfile, h5py): the path here."""
        return self.path

    # -- related files -----------------------------------------------------------------------------

    def resolve(self, relative: str) -> Path:
        """The path of a file the model names, guaranteed to lie inside the model's folder."""
        return resolve_inside(self.root, relative, referrer=str(self.path))

    def open_related(self, relative: str) -> Source:
        path = self.resolve(relative)
        if not path.exists():
            raise MissingFile(f"names {relative!r}, which is not there", path=str(self.path))
        return Source(path, root=self.root)

    # -- lifetime --------------------------------------------------------------------------------

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> Source:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Source({str(self.path)!r}, size={self.size})"


class Head:
    """What a format's ``sniff`` gets: the first bytes of a file, plus cheap deeper looks."""

    def __init__(self, data: bytes, source: Source) -> None:
        self.data = data
        self.source = source
        self._zip_names: tuple[str, ...] | None = None

    @property
    def name(self) -> str:
        return self.source.path.name

    @property
    def size(self) -> int:
        return self.source.size

    def startswith(self, prefix: bytes) -> bool:
        return self.data.startswith(prefix)

    def zip_names(self) -> tuple[str, ...]:
        """Entry names of a zip archive (from its central directory), or () if it is not one."""
        if self._zip_names is None:
            names: tuple[str, ...] = ()
            if self.data.startswith(b"PK\x03\x04"):
                from ckptscan.formats import _zip  # the one zip parser (bounded, checked), not stdlib zipfile

                try:
                    names = _zip.entry_names(self.source)
                except CkptscanError:
                    names = ()
            self._zip_names = names
        return self._zip_names


MAX_NAME_BYTES = 255  # one path component (NAME_MAX on Linux, macOS and Windows)
MAX_PATH_BYTES = 4096  # PATH_MAX on Linux


def resolve_inside(root: Path, relative: str, *, referrer: str) -> Path:
    """Join ``relative`` to ``root``, refusing anything that would land outside ``root``."""
    if not relative or "\x00" in relative:
        raise UnsafePath(f"names an empty or invalid path {relative!r}", path=referrer)
    pure = relative.replace("\\", "/")
    if len(relative) > MAX_PATH_BYTES or any(len(os.fsencode(part)) > MAX_NAME_BYTES for part in pure.split("/")):
        # no file system holds such a name, and asking the OS about it raises ENAMETOOLONG
        raise UnsafePath(f"names a path too long for any file system ({relative[:40]!r}...); refused", path=referrer)
    if pure.startswith("/") or (len(pure) > 1 and pure[1] == ":") or os.path.isabs(relative):
        raise UnsafePath(f"names an absolute path {relative!r}; refused", path=referrer)
    candidate = root / relative
    real_root = os.path.realpath(root)
    real = os.path.realpath(candidate)
    if real != real_root and not real.startswith(real_root.rstrip(os.sep) + os.sep):
        how = "a path that climbs" if ".." in pure.split("/") else "a link that points"
        raise UnsafePath(f"names {relative!r}, {how} out of the model's folder; refused", path=referrer)
    return candidate


def _is_regular(mode: int) -> bool:
    return stat.S_ISREG(mode)
