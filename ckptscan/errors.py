"""The one error hierarchy of ckptscan.

Readers translate low-level failures (``struct.error``, ``UnicodeDecodeError``, ``OSError``,
a library's own exceptions) into one of these exactly once, at their boundary, with
``raise ... from e``. Everything above the readers (analysis, reports, the CLI, audits) only
ever sees a :class:`CkptscanError`, whose ``str()`` is the one-line message users read:

    model.safetensors: safetensors: tensor 'w' data_offsets [0, 99] run past the data section (at header)
"""

from __future__ import annotations


class CkptscanError(Exception):
    """Base of every error ckptscan raises on purpose.

    ``code`` is a stable, machine-readable identifier (it appears in the JSON ``error.code``);
    ``where`` says where in the file the problem sits (an offset, a key, a tensor name).
    """

    code = "error"

    def __init__(
        self,
        what: str,
        *,
        path: str | None = None,
        format: str | None = None,
        where: str | None = None,
    ) -> None:
        super().__init__(what)
        self.what = what
        self.path = path
        self.format = format
        self.where = where

    def located(self, *, path: str | None = None, format: str | None = None) -> CkptscanError:
        """Fill in the file and format when an outer layer knows them and this error does not."""
        if self.path is None and path is not None:
            self.path = path
        if self.format is None and format is not None:
            self.format = format
        return self

    def __str__(self) -> str:
        parts = [p for p in (self.path, self.format) if p]
        line = ": ".join([*parts, self.what])
        if self.where:
            line += f" (at {self.where})"
        return line


class UnrecognizedFormat(CkptscanError):
    """The content matches none of the registered formats."""

    code = "unrecognized-format"


class MalformedFile(CkptscanError):
    """The file claims to be a format but breaks its rules."""

    code = "malformed"


class TruncatedFile(MalformedFile):
    """A declared size, count or offset reaches past the end of the file."""

    code = "truncated"


class LimitExceeded(MalformedFile):
    """A declared size or count is beyond what ckptscan accepts before allocating."""

    code = "limit-exceeded"


class UnsupportedFeature(CkptscanError):
    """A valid file that uses something ckptscan does not read yet."""

    code = "unsupported"


class UnsafePath(CkptscanError):
    """A file names a path outside the model's folder (absolute, ``..``, or a link out)."""

    code = "unsafe-path"


class MissingFile(CkptscanError):
    """A file the model needs (a shard, external data) is not there."""

    code = "missing-file"


class MissingDependency(CkptscanError):
    """Reading this format needs an optional package that is not installed."""

    code = "missing-dependency"


class ReadFailure(CkptscanError):
    """The operating system refused a read (permissions, I/O error, a directory)."""

    code = "io-error"


class RemoteFailure(ReadFailure):
    """A remote read failed: the server refused, dropped the connection, ignored a Range request,
    sent a different number of bytes than it said, or did not answer in time."""

    code = "remote-error"


class NeedsDownload(CkptscanError):
    """Reading this remote file would fetch most of it (or ask too many requests); refused
    unless the user allows it with ``--download``."""

    code = "needs-download"


class UsageError(CkptscanError):
    """The caller asked for something that cannot be done (bad option values)."""

    code = "usage"
