"""A restricted pickle interpreter that turns a pickle into inert data, never running it.

Every opcode of protocols 0 to 5 is interpreted (see ``pickletools`` for their definitions), with
the memo, marks, FRAME, persistent ids and out-of-band buffers. What differs from the standard
unpickler is what GLOBAL, STACK_GLOBAL, INST, EXT and the call opcodes (REDUCE, NEWOBJ, NEWOBJ_EX,
OBJ, INST, BUILD) do: a global becomes a :class:`~.objects.Global` record (nothing is imported)
and a call is handed to :func:`~.rebuild.call`, which builds values for the few pure torch, numpy
and standard-library callables it knows and an :class:`~.objects.Opaque` record for anything else.
Nothing named in the file is ever imported or called.

Limits are checked before anything is allocated: every length against the bytes that remain, the
memo size, the mark depth, the digits of text integers and the bytes of long integers. Dictionary
keys and set members must be simple hashable values (strings, numbers, shallow tuples, records), so
that a hostile key cannot make hashing recurse without bound.
"""

from __future__ import annotations

import codecs
import contextlib
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol

from ckptscan.errors import CkptscanError, LimitExceeded, MalformedFile, TruncatedFile
from ckptscan.formats.torch import rebuild
from ckptscan.formats.torch.objects import (
    Global,
    NumpyArray,
    Opaque,
    PickleSet,
    SkippedBytes,
    SkippedText,
    StorageRef,
    TensorRef,
    TorchValue,
)
from ckptscan.inventory import Finding, Severity

MAX_PICKLE_BYTES = 1 << 30  # a pickle longer than this is refused before it is read
MAX_MEMO_ENTRIES = 10_000_000
MAX_MARK_DEPTH = 100_000
MAX_LONG_BYTES = 1 << 12  # LONG1/LONG4 payloads; real checkpoints use a few bytes
MAX_TEXT_INT_DIGITS = 4000  # protocol 0 INT/LONG lines (CPython refuses more than 4300 digits)
MAX_KEY_DEPTH = 16  # nesting of tuples used as dictionary keys
HIGHEST_PROTOCOL = 5
# Streamed pickles (a deflated data.pkl, a raw pickle file) are read in chunks, so memory follows
# what the pickle builds, not its size: one bytes/str payload above MAX_INLINE_PAYLOAD, or past
# MAX_RETAINED_PAYLOAD in all, is skipped in the stream and kept as its length only.
STREAM_CHUNK = 1 << 16
MAX_INLINE_PAYLOAD = 4 << 20
MAX_RETAINED_PAYLOAD = 32 << 20
MAX_LINE = 16 << 20  # a protocol 0 text opcode (a STRING, a GLOBAL name)
# Past this many opcodes, values are no longer built (they would cost memory without bound): the
# rest of the stream is only scanned for globals, and the pickle is reported as over the limit.
MAX_BUILD_OPCODES = 2_000_000
# Past this many opcodes in all, scanning stops too (time, not memory, is then the limit): the
# unscanned rest could import anything, so the pickle is a HIGH ``pickle-not-scanned`` finding.
MAX_SCAN_OPCODES = 50_000_000
MAX_NESTED_DEPTH = 4  # pickles inside bytes constants handed to pickle.loads, scanned recursively
PAYLOAD_HEAD = 1 << 16  # bytes kept of a skipped payload (the pickles of a nested torch storage)

_unpack_int32 = struct.Struct("<i").unpack_from
_unpack_uint32 = struct.Struct("<I").unpack_from
_unpack_uint16 = struct.Struct("<H").unpack_from
_unpack_uint64 = struct.Struct("<Q").unpack_from
_unpack_double = struct.Struct(">d").unpack_from

PersistentLoad = Callable[[Any], Any]


class ByteStream(Protocol):
    """What a streamed pickle is read from: ``read(n)`` returns up to ``n`` bytes, b"" at the end."""

    def read(self, n: int, /) -> bytes: ...


class ChunkStream:
    """A :class:`ByteStream` over an iterator of byte pieces (an inflater's output)."""

    def __init__(self, pieces: Iterator[bytes]) -> None:
        self._pieces = pieces
        self._pending = b""

    def read(self, n: int, /) -> bytes:
        while not self._pending:
            piece = next(self._pieces, None)
            if piece is None:
                return b""
            self._pending = piece
        out, self._pending = self._pending[:n], self._pending[n:]
        return out


class SourceStream:
    """A :class:`ByteStream` over ``[start, end)`` of a :class:`~ckptscan.source.Source`."""

    def __init__(self, source: Any, start: int, end: int, what: str = "pickle") -> None:
        self._source, self._position, self._end, self._what = source, start, end, what

    def read(self, n: int, /) -> bytes:
        n = min(n, self._end - self._position)
        if n <= 0:
            return b""
        data: bytes = self._source.read_up_to(self._position, n)
        self._position += len(data)
        return data


class _Rest:
    """The rest of an unpickler's input as a stream: its buffer, then its stream."""

    def __init__(self, outer: Unpickler) -> None:
        self.pending = outer.data[outer.pos :]
        self._stream = outer.stream
        outer.base += outer.pos  # the inner unpickler counts from here
        outer._op_index -= outer.pos
        outer.data, outer.pos = b"", 0

    def read(self, n: int, /) -> bytes:
        if self.pending:
            out, self.pending = self.pending[:n], self.pending[n:]
            return out
        return self._stream.read(n) if self._stream is not None else b""


def numpy_itemsize(spec: str) -> int | None:
    """Bytes per element of a numpy dtype string (``<f8``, ``|b1``, ``<U10``), None when unknown."""
    body = spec.lstrip("<>|=")
    kind, digits = body[:1], body[1:]
    if not digits.isdigit():
        return {"?": 1, "b": 1, "B": 1, "h": 2, "H": 2, "i": 4, "I": 4, "l": 8, "L": 8, "q": 8, "Q": 8, "e": 2,
                "f": 4, "d": 8, "g": 16, "F": 8, "D": 16}.get(body)  # fmt: skip
    size = int(digits)
    if kind == "U":
        return 4 * size
    if kind in "biufcSVMma":
        return size
    return None


@dataclass(slots=True)
class GlobalUse:
    """A global named in the pickle: how often, and where first (byte offset in the pickle)."""

    module: str
    name: str
    first_offset: int
    count: int = 1
    # True when every call of it was checked harmless (a nested torch storage whose pickles name
    # only storage classes); False once one call was not; None when never called
    vetted: bool | None = None

    @property
    def qualname(self) -> str:
        return f"{self.module}.{self.name}"


class _Mark:
    __slots__ = ()


class Unpickler:
    """Interprets one pickle of ``data`` starting at ``start``; ``load()`` returns its value.

    ``persistent_load`` receives each persistent id (already inert data) and returns what stands
    for it, e.g. a :class:`~.objects.StorageRef`. ``label`` names the pickle in error messages.
    With ``stream``, the pickle is read from it in chunks instead (``data`` is then ignored), so a
    pickle of any size costs bounded memory. ``globals`` records every global named, also when
    ``load`` fails: a :class:`CkptscanError` leaving ``load`` carries them as ``pickle_globals``.
    """

    def __init__(
        self,
        data: bytes = b"",
        *,
        persistent_load: PersistentLoad | None = None,
        start: int = 0,
        label: str = "pickle",
        stream: ByteStream | None = None,
        nested_depth: int = 0,
    ) -> None:
        self.data = b"" if stream is not None else data
        self.pos = 0 if stream is not None else start
        self.start = 0 if stream is not None else start
        self.base = 0  # offset of data[0] in the stream (grows as a streamed pickle is consumed)
        self.stream = stream
        self.label = label
        self.persistent_load = persistent_load
        self.stack: list[Any] = []
        self.metastack: list[list[Any]] = []
        self.memo: dict[int, Any] = {}
        self.protocol = 0
        self.globals: dict[str, GlobalUse] = {}
        self.nested: list[tuple[str, GlobalUse]] = []  # globals of pickles inside bytes constants
        self.opcodes = 0
        self.retained = 0
        self.skipped_payloads = 0
        self.payload_offsets: dict[int, int] = {}  # id(bytes payload) -> its offset
        # storages embedded by torch.storage._load_from_bytes (a plain pickle of tensors): (ref, data offset)
        self.embedded_storages: list[tuple[StorageRef, int | None]] = []
        self.nested_depth = nested_depth
        self._op_index = 0  # where the current opcode starts in ``data`` (kept in step when it is refilled)
        self._dispatch = self._build_dispatch()

    # -- driving -----------------------------------------------------------------------------------

    def load(self) -> Any:
        try:
            return self._load()
        except CkptscanError as e:
            # findings survive errors: what the pickle imported before it broke is still known
            e.pickle_globals = [*getattr(e, "pickle_globals", []), *self.all_globals()]  # type: ignore[attr-defined]
            raise

    def all_globals(self) -> list[tuple[str, GlobalUse]]:
        """Every global named, as (pickle label, use), this pickle's then nested pickles'."""
        return [(self.label, use) for use in self.globals.values()] + self.nested

    def _load(self) -> Any:
        dispatch = self._dispatch
        limit = MAX_BUILD_OPCODES - self.opcodes
        counted = 0
        try:
            while True:
                pos, data = self.pos, self.data
                if pos >= len(data):
                    if not self._fill(1):
                        self._op_index = self.pos
                        self._truncated("ends without a STOP opcode")
                    pos, data = self.pos, self.data
                self._op_index = pos
                self.pos = pos + 1
                counted += 1
                handler = dispatch[data[pos]]
                if handler is None:
                    self._fail(f"unknown pickle opcode 0x{data[pos]:02x}")
                if handler():
                    break
                if counted > limit:
                    self.opcodes += counted
                    counted = 0
                    self._scan_rest()
                    self._fail(
                        f"has more than {MAX_BUILD_OPCODES:,} opcodes; the rest was scanned for imports only",
                        limit=True,
                    )
        except (RecursionError, MemoryError) as e:
            self._fail(f"cannot be interpreted within limits ({type(e).__name__})", limit=True)
        except (ValueError, TypeError, OverflowError, UnicodeDecodeError, IndexError, KeyError, struct.error) as e:
            self._fail(f"is malformed ({type(e).__name__}: {e})")
        finally:
            self.opcodes += counted
        if not self.stack:
            self._fail("STOP with an empty stack")
        return self.stack.pop()

    @property
    def _op_offset(self) -> int:
        """The current opcode's offset from the pickle's start (for messages and findings)."""
        return self.base + self._op_index - self.start

    @property
    def end(self) -> int:
        """The offset just after the STOP opcode (after ``load``), in ``data`` or from the stream's start."""
        return self.base + self.pos

    def _fail(self, what: str, *, limit: bool = False) -> NoReturn:
        error = LimitExceeded if limit else MalformedFile
        raise error(f"{self.label} {what}", where=f"{self.label} byte {self._op_offset}")

    def _truncated(self, what: str) -> NoReturn:
        raise TruncatedFile(f"{self.label} {what}", where=f"{self.label} byte {self._op_offset}")

    # -- primitive reads ---------------------------------------------------------------------------

    def _fill(self, need: int) -> bool:
        """Make ``need`` bytes available at ``pos`` by reading on in the stream; False at its end."""
        if self.stream is None:
            return False
        rest = self.data[self.pos :]
        pieces = [rest]
        have = len(rest)
        while have < need:
            piece = self.stream.read(max(STREAM_CHUNK, need - have))
            if not piece:
                break
            pieces.append(piece)
            have += len(piece)
        self.base += self.pos
        self._op_index -= self.pos
        self.data = b"".join(pieces)
        self.pos = 0
        return have >= need

    def _take(self, n: int) -> bytes:
        pos = self.pos
        if n < 0 or pos + n > len(self.data):
            if n < 0 or not self._fill(n):
                self._truncated(f"opcode needs {n:,} bytes but fewer remain")
            pos = self.pos
        self.pos = pos + n
        return self.data[pos : pos + n]

    def _skip(self, n: int) -> None:
        """Consume ``n`` bytes without keeping them (a payload too large to hold)."""
        available = len(self.data) - self.pos
        if n <= available:
            self.pos += n
            return
        if self.stream is None:
            self._truncated(f"opcode needs {n:,} bytes but only {available:,} remain")
        n -= available
        self.base += len(self.data)
        self._op_index -= len(self.data)
        self.data, self.pos = b"", 0
        while n > 0:
            piece = self.stream.read(min(n, 1 << 20))
            if not piece:
                self._truncated("payload runs past the end")
            n -= len(piece)
            self.base += len(piece)
            self._op_index -= len(piece)

    def _payload(self, n: int) -> bytes | None:
        """A bytes/str payload of ``n`` bytes, or None when it is skipped as too large to keep."""
        if n > MAX_INLINE_PAYLOAD or self.retained + n > MAX_RETAINED_PAYLOAD:
            if self.stream is None and self.pos + n > len(self.data):
                self._truncated(f"opcode needs {n:,} bytes but only {len(self.data) - self.pos:,} remain")
            self._skip(n)
            self.skipped_payloads += 1
            return None
        self.retained += n
        return self._take(n)

    def _byte(self) -> int:
        pos = self.pos
        if pos >= len(self.data):
            return self._take(1)[0]
        self.pos = pos + 1
        return self.data[pos]

    def _uint32(self) -> int:
        value: int = _unpack_uint32(self._take(4))[0]
        return value

    def _uint64(self) -> int:
        value: int = _unpack_uint64(self._take(8))[0]
        return value

    def _line(self) -> bytes:
        searched = 0
        while True:
            data, pos = self.data, self.pos
            end = data.find(b"\n", pos + searched)
            if end >= 0:
                break
            searched = len(data) - pos
            if searched > MAX_LINE:
                self._fail(f"text opcode is longer than {MAX_LINE:,} bytes", limit=True)
            if not self._fill(searched + STREAM_CHUNK) and len(self.data) - self.pos <= searched:
                self._truncated("text opcode has no end of line")
        self.pos = end + 1
        return data[pos:end]

    def _pop_mark(self) -> list[Any]:
        if not self.metastack:
            self._fail("pops a MARK that was never pushed")
        items = self.stack
        self.stack = self.metastack.pop()
        return items

    def _pop(self) -> Any:
        if not self.stack:
            self._fail("pops an empty stack")
        return self.stack.pop()

    def _top(self) -> Any:
        if not self.stack:
            self._fail("reads an empty stack")
        return self.stack[-1]

    def _memo_put(self, index: int) -> None:
        if index not in self.memo and len(self.memo) >= MAX_MEMO_ENTRIES:
            self._fail(f"memo exceeds {MAX_MEMO_ENTRIES:,} entries", limit=True)
        self.memo[index] = self._top()

    def _memo_get(self, index: int) -> None:
        try:
            self.stack.append(self.memo[index])
        except KeyError:
            self._fail(f"reads memo entry {index}, which was never stored")

    def _key(self, value: Any) -> Any:
        """``value`` if it may be a dict key / set member without risk; else a malformed-file error."""
        if not _safe_key(value, 0):
            self._fail(f"uses an unhashable or deeply nested {type(value).__name__} as a dictionary key")
        return value

    # -- the dispatch table ------------------------------------------------------------------------

    def _build_dispatch(self) -> list[Callable[[], bool | None] | None]:
        table: list[Callable[[], bool | None] | None] = [None] * 256
        ops: dict[bytes, Callable[[], bool | None]] = {
            b"(": self.op_mark, b".": self.op_stop, b"0": self.op_pop, b"1": self.op_pop_mark, b"2": self.op_dup,
            b"F": self.op_float, b"I": self.op_int, b"J": self.op_binint, b"K": self.op_binint1,
            b"L": self.op_long, b"M": self.op_binint2, b"N": self.op_none, b"P": self.op_persid,
            b"Q": self.op_binpersid, b"R": self.op_reduce, b"S": self.op_string, b"T": self.op_binstring,
            b"U": self.op_short_binstring, b"V": self.op_unicode, b"X": self.op_binunicode,
            b"a": self.op_append, b"b": self.op_build, b"c": self.op_global, b"d": self.op_dict,
            b"}": self.op_empty_dict, b"e": self.op_appends, b"g": self.op_get, b"h": self.op_binget,
            b"i": self.op_inst, b"j": self.op_long_binget, b"l": self.op_list, b"]": self.op_empty_list,
            b"o": self.op_obj, b"p": self.op_put, b"q": self.op_binput, b"r": self.op_long_binput,
            b"s": self.op_setitem, b"t": self.op_tuple, b")": self.op_empty_tuple, b"u": self.op_setitems,
            b"G": self.op_binfloat,
            # protocol 2
            b"\x80": self.op_proto, b"\x81": self.op_newobj, b"\x82": self.op_ext1, b"\x83": self.op_ext2,
            b"\x84": self.op_ext4, b"\x85": self.op_tuple1, b"\x86": self.op_tuple2, b"\x87": self.op_tuple3,
            b"\x88": self.op_newtrue, b"\x89": self.op_newfalse, b"\x8a": self.op_long1, b"\x8b": self.op_long4,
            # protocol 3
            b"B": self.op_binbytes, b"C": self.op_short_binbytes,
            # protocol 4
            b"\x8c": self.op_short_binunicode, b"\x8d": self.op_binunicode8, b"\x8e": self.op_binbytes8,
            b"\x8f": self.op_empty_set, b"\x90": self.op_additems, b"\x91": self.op_frozenset,
            b"\x92": self.op_newobj_ex, b"\x93": self.op_stack_global, b"\x94": self.op_memoize,
            b"\x95": self.op_frame,
            # protocol 5
            b"\x96": self.op_bytearray8, b"\x97": self.op_next_buffer, b"\x98": self.op_readonly_buffer,
        }  # fmt: skip
        for code, handler in ops.items():
            table[code[0]] = handler
        return table

    # -- structure ---------------------------------------------------------------------------------

    def op_proto(self) -> None:
        protocol = self._byte()
        if protocol > HIGHEST_PROTOCOL:
            self._fail(f"declares protocol {protocol}; the highest is {HIGHEST_PROTOCOL}")
        self.protocol = protocol

    def op_frame(self) -> None:
        length = self._uint64()
        if self.stream is None and self.pos + length > len(self.data):
            self._truncated(f"FRAME of {length:,} bytes runs past the end")

    def op_stop(self) -> bool:
        return True

    def op_mark(self) -> None:
        if len(self.metastack) >= MAX_MARK_DEPTH:
            self._fail(f"nests MARKs deeper than {MAX_MARK_DEPTH:,}", limit=True)
        self.metastack.append(self.stack)
        self.stack = []

    def op_pop(self) -> None:
        if self.stack:
            self.stack.pop()
        else:
            self._pop_mark()

    def op_pop_mark(self) -> None:
        self._pop_mark()

    def op_dup(self) -> None:
        self.stack.append(self._top())

    # -- memo --------------------------------------------------------------------------------------

    def op_put(self) -> None:
        self._memo_put(self._text_int(self._line()))

    def op_binput(self) -> None:
        self._memo_put(self._byte())

    def op_long_binput(self) -> None:
        self._memo_put(self._uint32())

    def op_memoize(self) -> None:
        self._memo_put(len(self.memo))

    def op_get(self) -> None:
        self._memo_get(self._text_int(self._line()))

    def op_binget(self) -> None:
        self._memo_get(self._byte())

    def op_long_binget(self) -> None:
        self._memo_get(self._uint32())

    # -- scalars -----------------------------------------------------------------------------------

    def op_none(self) -> None:
        self.stack.append(None)

    def op_newtrue(self) -> None:
        self.stack.append(True)

    def op_newfalse(self) -> None:
        self.stack.append(False)

    def op_int(self) -> None:
        line = self._line()
        if line == b"00":
            self.stack.append(False)
        elif line == b"01":
            self.stack.append(True)
        else:
            self.stack.append(self._text_int(line))

    def op_long(self) -> None:
        line = self._line()
        self.stack.append(self._text_int(line[:-1] if line.endswith(b"L") else line))

    def _text_int(self, line: bytes) -> int:
        if len(line) > MAX_TEXT_INT_DIGITS:
            self._fail(f"has a text integer of {len(line):,} digits", limit=True)
        return int(line)

    def op_binint(self) -> None:
        self.stack.append(_unpack_int32(self._take(4))[0])

    def op_binint1(self) -> None:
        self.stack.append(self._byte())

    def op_binint2(self) -> None:
        self.stack.append(_unpack_uint16(self._take(2))[0])

    def op_long1(self) -> None:
        self._push_long(self._byte())

    def op_long4(self) -> None:
        length = _unpack_int32(self._take(4))[0]
        if length < 0:
            self._fail("LONG4 has a negative length")
        self._push_long(length)

    def _push_long(self, length: int) -> None:
        if length > MAX_LONG_BYTES:
            self._fail(f"has a {length:,}-byte integer", limit=True)
        self.stack.append(int.from_bytes(self._take(length), "little", signed=True))

    def op_float(self) -> None:
        self.stack.append(float(self._line()))

    def op_binfloat(self) -> None:
        self.stack.append(_unpack_double(self._take(8))[0])

    # -- strings and bytes -------------------------------------------------------------------------

    def op_string(self) -> None:
        line = self._line()
        if len(line) >= 2 and line[0] == line[-1] and line[:1] in (b"'", b'"'):
            raw = codecs.escape_decode(line[1:-1])[0]
        else:
            self._fail("STRING argument is not quoted")
        self.stack.append(_py2_string(raw))

    def op_binstring(self) -> None:
        length = _unpack_int32(self._take(4))[0]
        if length < 0:
            self._fail("BINSTRING has a negative length")
        self.stack.append(self._bytes_payload(length, text=True))

    def op_short_binstring(self) -> None:
        self.stack.append(_py2_string(bytes(self._take(self._byte()))))

    def op_unicode(self) -> None:
        self.stack.append(self._line().decode("raw-unicode-escape"))

    def op_binunicode(self) -> None:
        self.stack.append(self._text_payload(self._uint32()))

    def op_short_binunicode(self) -> None:
        self.stack.append(str(self._take(self._byte()), "utf-8", "surrogatepass"))

    def op_binunicode8(self) -> None:
        self.stack.append(self._text_payload(self._uint64()))

    def op_binbytes(self) -> None:
        self.stack.append(self._bytes_payload(self._uint32()))

    def op_short_binbytes(self) -> None:
        self.stack.append(self._bytes_payload(self._byte()))

    def op_binbytes8(self) -> None:
        self.stack.append(self._bytes_payload(self._uint64()))

    def op_bytearray8(self) -> None:
        payload = self._bytes_payload(self._uint64())
        self.stack.append(payload if isinstance(payload, SkippedBytes) else bytearray(payload))

    def op_next_buffer(self) -> None:
        # out-of-band buffers are supplied by the caller of a real load; a file has none to give
        self.stack.append(Opaque("pickle.PickleBuffer", how="out-of-band"))

    def op_readonly_buffer(self) -> None:
        self._top()

    def _bytes_payload(self, length: int, *, text: bool = False) -> Any:
        offset = self.base + self.pos - self.start
        if length > MAX_INLINE_PAYLOAD or self.retained + length > MAX_RETAINED_PAYLOAD:
            head = self._take(min(length, PAYLOAD_HEAD))
            self._skip(length - len(head))
            self.skipped_payloads += 1
            value: Any = SkippedBytes(length, head)
        else:
            self.retained += length
            value = self._take(length)
            if text:
                return _py2_string(value)
        self.payload_offsets[id(value)] = offset
        return value

    def _text_payload(self, length: int) -> str:
        if length > MAX_INLINE_PAYLOAD or self.retained + length > MAX_RETAINED_PAYLOAD:
            head = self._take(min(length, PAYLOAD_HEAD))
            self._skip(length - len(head))
            self.skipped_payloads += 1
            return SkippedText(length, head.decode("utf-8", "ignore"))
        self.retained += length
        return str(self._take(length), "utf-8", "surrogatepass")

    # -- containers --------------------------------------------------------------------------------

    def op_empty_list(self) -> None:
        self.stack.append([])

    def op_empty_tuple(self) -> None:
        self.stack.append(())

    def op_empty_dict(self) -> None:
        self.stack.append({})

    def op_empty_set(self) -> None:
        self.stack.append(PickleSet())

    def op_list(self) -> None:
        items = self._pop_mark()  # before touching self.stack, which the pop replaces
        self.stack.append(items)

    def op_tuple(self) -> None:
        items = self._pop_mark()
        self.stack.append(tuple(items))

    def op_tuple1(self) -> None:
        self.stack.append((self._pop(),))

    def op_tuple2(self) -> None:
        second = self._pop()
        self.stack.append((self._pop(), second))

    def op_tuple3(self) -> None:
        third = self._pop()
        second = self._pop()
        self.stack.append((self._pop(), second, third))

    def op_dict(self) -> None:
        items = self._pop_mark()
        if len(items) % 2:
            self._fail("DICT has an odd number of items")
        self.stack.append({self._key(items[i]): items[i + 1] for i in range(0, len(items), 2)})

    def op_frozenset(self) -> None:
        items = self._pop_mark()
        self.stack.append(PickleSet(items))

    def op_append(self) -> None:
        value = self._pop()
        self._extend(self._top(), [value])

    def op_appends(self) -> None:
        items = self._pop_mark()
        self._extend(self._top(), items)

    def op_additems(self) -> None:
        items = self._pop_mark()
        target = self._top()
        if not isinstance(target, PickleSet):
            self._fail(f"ADDITEMS on a {type(target).__name__}, not a set")
        target.extend(items)

    def _extend(self, target: Any, items: list[Any]) -> None:
        if isinstance(target, list):
            target.extend(items)
        elif isinstance(target, Opaque):
            target.items.extend(items)
        else:
            self._fail(f"appends to a {type(target).__name__}")

    def op_setitem(self) -> None:
        value = self._pop()
        key = self._pop()
        self._set_items(self._top(), [key, value])

    def op_setitems(self) -> None:
        items = self._pop_mark()
        if len(items) % 2:
            self._fail("SETITEMS has an odd number of items")
        self._set_items(self._top(), items)

    def _set_items(self, target: Any, items: list[Any]) -> None:
        if isinstance(target, dict):
            mapping = target
        elif isinstance(target, Opaque):
            mapping = target.entries
        else:
            self._fail(f"sets items on a {type(target).__name__}")
        for i in range(0, len(items), 2):
            mapping[self._key(items[i])] = items[i + 1]

    # -- globals and calls: recorded, never resolved -----------------------------------------------

    def _global(self, module: str, name: str) -> Any:
        qualname = f"{module}.{name}"
        use = self.globals.get(qualname)
        if use is None:
            self.globals[qualname] = GlobalUse(module, name, self._op_offset)
        else:
            use.count += 1
        return rebuild.intern_global(module, name)

    def op_global(self) -> None:
        module = self._line().decode("utf-8", "surrogateescape")
        name = self._line().decode("utf-8", "surrogateescape")
        self.stack.append(self._global(module, name))

    def op_stack_global(self) -> None:
        name = self._pop()
        module = self._pop()
        if not (isinstance(module, str) and isinstance(name, str)):
            self._fail("STACK_GLOBAL needs two strings")
        self.stack.append(self._global(module, name))

    def op_ext1(self) -> None:
        self._extension(self._byte())

    def op_ext2(self) -> None:
        self._extension(_unpack_uint16(self._take(2))[0])

    def op_ext4(self) -> None:
        self._extension(_unpack_int32(self._take(4))[0])

    def _extension(self, code: int) -> None:
        # the copyreg extension registry of the loading process decides what this names
        self.stack.append(self._global("copyreg._extension_registry", str(code)))

    def op_reduce(self) -> None:
        args = self._pop()
        func = self._pop()
        if not isinstance(args, tuple):
            self._fail(f"REDUCE arguments are a {type(args).__name__}, not a tuple")
        if isinstance(func, Global) and func.qualname in _STORAGE_LOADERS and args:
            storage = self._nested_storage(args[0], func.qualname)
            use = self.globals.get(func.qualname)
            if use is not None:
                use.vetted = storage is not None and use.vetted is not False
            if storage is not None:
                self.stack.append(storage)
                return
        if isinstance(func, Global) and func.qualname in NESTED_LOADERS and args:
            self._scan_nested(args[0], func.qualname)
        self.stack.append(rebuild.call(func, args, None, "reduce"))

    def _nested_storage(self, payload: Any, loader: str) -> StorageRef | None:
        """``torch.storage._load_from_bytes(b)``: how a tensor's storage pickles outside torch.save.

        ``b`` is a legacy torch checkpoint of the one storage (magic, protocol, sys info, the
        storage pickle, its key list, an 8-byte count, the raw bytes). Its pickles are read the
        same restricted way; when they name nothing but storage classes, the storage is returned
        (its bytes located in this file) and the call counts as vetted; otherwise None.
        """
        if not isinstance(payload, bytes):
            return None
        head = payload.head if isinstance(payload, SkippedBytes) else bytes(payload)
        offset = self.payload_offsets.get(id(payload))
        pids: list[Any] = []
        position = 0
        values = []
        uses: list[tuple[str, GlobalUse]] = []
        label = f"{self.label} > {loader} argument"
        try:
            for _ in range(5):
                inner = Unpickler(head, start=position, label=label, persistent_load=_collect(pids), nested_depth=9)
                try:
                    values.append(inner.load())
                finally:
                    uses.extend(inner.all_globals())
                position = inner.end
        except CkptscanError:
            self.nested.extend(uses)
            return None
        self.nested.extend(uses)
        if any(not rebuild.is_allowlisted(u.module, u.name) for _, u in uses):
            return None
        if values[0] != 0x1950A86A20F9469CFC6C or values[1] != 1001 or len(pids) != 1 or values[4] != [pids[0][2]]:
            return None
        pid = pids[0]
        dtype = rebuild.storage_dtype(pid[1]) if isinstance(pid, tuple) and len(pid) >= 5 else None
        numel = pid[4] if dtype is not None else None
        if dtype is None or not isinstance(numel, int) or isinstance(numel, bool) or numel < 0:
            return None
        if position + 8 > len(head) or int.from_bytes(head[position : position + 8], "little") != numel:
            return None
        ref = StorageRef(str(pid[2]), dtype, str(pid[3]), numel)
        if position + 8 + ref.nbytes > len(payload):
            return None
        # protocols 0-2 spell bytes as latin-1 text (_codecs.encode): not addressable in the file
        self.embedded_storages.append((ref, None if offset is None else offset + position + 8))
        return ref

    def _scan_nested(self, payload: Any, loader: str) -> None:
        """A pickle inside a bytes constant handed to ``pickle.loads`` and the like: its globals too."""
        if isinstance(payload, Opaque) and payload.callee in _DECODERS and payload.args:
            payload = _decode(payload.callee, payload.args[0])
        if isinstance(payload, SkippedText):
            payload = payload.head
        if isinstance(payload, str):
            payload = payload.encode("latin-1", "replace")
        if isinstance(payload, SkippedBytes):
            payload = payload.head  # a large payload: its first 64 KiB are scanned (a truncation error is expected)
        if not isinstance(payload, bytes | bytearray):
            return
        if self.nested_depth >= MAX_NESTED_DEPTH:
            return
        label = f"{self.label} > {loader} argument at byte {self._op_offset}"
        inner = Unpickler(bytes(payload), label=label, nested_depth=self.nested_depth + 1)
        with contextlib.suppress(CkptscanError):  # its globals up to the failure are recorded all the same
            inner.load()
        self.nested.extend(inner.all_globals())

    def _scan_rest(self) -> None:
        """Read the rest of the pickle for its globals only, keeping nothing but recent strings.

        Used past ``MAX_BUILD_OPCODES``. GLOBAL and INST name their global inline; STACK_GLOBAL takes
        the last two strings pushed (directly or from the memo), as picklescan and modelscan do.
        """
        self.stack, self.metastack, self.memo = [], [], {}
        strings: list[str] = []
        memo: dict[int, str] = {}
        while True:
            self._op_index = self.pos
            code = self._take(1)[0]
            op = _OPCODES.get(code)
            if op is None:
                self._fail(f"unknown pickle opcode 0x{code:02x}")
            name, arg = op
            value: Any = None
            if name in ("GLOBAL", "INST"):
                module = self._line().decode("utf-8", "surrogateescape")
                self._global(module, self._line().decode("utf-8", "surrogateescape"))
            elif name == "STACK_GLOBAL":
                if len(strings) >= 2:
                    self._global(strings[-2], strings[-1])
                else:
                    self._global("<unknown>", "<stack global>")
            elif arg == -1:
                value = self._line()
            elif arg == -2:
                value = self._bytes_payload(self._byte())
            elif arg in (-3, -4):
                value = self._bytes_payload(self._uint32())
            elif arg == -5:
                value = self._bytes_payload(self._uint64())
            elif arg > 0:
                value = self._take(arg)
            if name in _STRING_OPS and isinstance(value, bytes) and not isinstance(value, SkippedBytes):
                text = (value[1:-1] if name == "STRING" else value)[:256].decode("utf-8", "replace")
                strings = [*strings[-1:], text]
            elif name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE") and strings and len(memo) < 100_000:
                index = len(memo) if name == "MEMOIZE" else _memo_index(name, value)
                memo[index] = strings[-1]
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                recalled = memo.get(_memo_index(name, value))
                if recalled is not None:
                    strings = [*strings[-1:], recalled]
            elif name == "STOP":
                return
            self.opcodes += 1
            if self.opcodes > MAX_SCAN_OPCODES:
                error = LimitExceeded(
                    f"{self.label} has more than {MAX_SCAN_OPCODES:,} opcodes; not scanned past byte {self._op_offset}",
                    where=f"{self.label} byte {self._op_offset}",
                )
                error.findings = [  # type: ignore[attr-defined]
                    Finding(
                        "pickle-not-scanned",
                        Severity.HIGH,
                        f"{self.label} is too long to scan whole ({MAX_SCAN_OPCODES:,} opcodes); what follows byte "
                        f"{self._op_offset:,} could import anything: treat it as unsafe",
                        f"{self.label} byte {self._op_offset}",
                    )
                ]
                raise error

    def op_newobj(self) -> None:
        args = self._pop()
        cls = self._pop()
        if not isinstance(args, tuple):
            self._fail("NEWOBJ arguments are not a tuple")
        self.stack.append(rebuild.call(cls, args, None, "newobj"))

    def op_newobj_ex(self) -> None:
        kwargs = self._pop()
        args = self._pop()
        cls = self._pop()
        if not isinstance(args, tuple) or not isinstance(kwargs, dict):
            self._fail("NEWOBJ_EX needs an argument tuple and a keyword dict")
        self.stack.append(rebuild.call(cls, args, kwargs, "newobj"))

    def op_obj(self) -> None:
        items = self._pop_mark()
        if not items:
            self._fail("OBJ without a class")
        self.stack.append(rebuild.call(items[0], tuple(items[1:]), None, "obj"))

    def op_inst(self) -> None:
        module = self._line().decode("utf-8", "surrogateescape")
        name = self._line().decode("utf-8", "surrogateescape")
        cls = self._global(module, name)
        args = tuple(self._pop_mark())
        self.stack.append(rebuild.call(cls, args, None, "inst"))

    def op_build(self) -> None:
        state = self._pop()
        target = self._top()
        rebuild.build(target, state)
        if isinstance(target, Opaque) and target.callee in JOBLIB_WRAPPERS and isinstance(state, dict):
            self.stack[-1] = self._joblib_array(state)

    def _joblib_array(self, state: dict[Any, Any]) -> Any:
        """joblib writes each array's bytes right after its wrapper's BUILD; ``joblib.load`` reads them
        from the file there. Object arrays are a nested pickle in the same place, scanned like the rest."""
        dtype = state.get("dtype")
        spec = rebuild.dtype_spec(dtype)
        shape = state.get("shape")
        if not isinstance(shape, tuple) or not all(isinstance(d, int) and d >= 0 for d in shape):
            self._fail("joblib array record has no valid shape")
        count = 1
        for dim in shape:
            count *= dim
        if spec.lstrip("<>|=") in ("O", "O8"):
            rest = _Rest(self)
            inner = Unpickler(label=f"{self.label} joblib object array", stream=rest, nested_depth=1)
            try:
                inner.load()
            finally:
                self.nested.extend(inner.all_globals())
            self.base += inner.base + inner.pos
            self._op_index -= inner.base + inner.pos
            self.data, self.pos = inner.data[inner.pos :] + rest.pending, 0
            return Opaque("numpy.ndarray[object]", args=(shape,), how="joblib")
        itemsize = numpy_itemsize(spec)
        if itemsize is None:
            self._fail(f"joblib array has a dtype ckptscan cannot size ({spec!r})")
        if state.get("numpy_array_alignment_bytes") is not None:
            self._skip(self._byte())
        offset = self.base + self.pos - self.start
        self._skip(count * itemsize)
        return NumpyArray(shape, spec, state.get("order") == "F", count * itemsize, file_offset=offset)

    # -- persistent ids ----------------------------------------------------------------------------

    def op_persid(self) -> None:
        self._persistent(self._line().decode("ascii"))

    def op_binpersid(self) -> None:
        self._persistent(self._pop())

    def _persistent(self, pid: Any) -> None:
        if self.persistent_load is None:
            self.stack.append(Opaque("persistent_id", args=(pid,), how="persistent"))
        else:
            self.stack.append(self.persistent_load(pid))


JOBLIB_WRAPPERS = frozenset({"joblib.numpy_pickle.NumpyArrayWrapper"})

_STORAGE_LOADERS = frozenset({"torch.storage._load_from_bytes", "torch.serialization._load_from_bytes"})


def _collect(pids: list[Any]) -> Callable[[Any], Any]:
    def persistent(pid: Any) -> Any:
        pids.append(pid)
        return Opaque("persistent_id", args=(pid,), how="persistent")

    return persistent


# loaders that unpickle a bytes argument: the payload is itself a pickle to scan
NESTED_LOADERS = frozenset(
    {"pickle.loads", "_pickle.loads", "pickle._loads", "cPickle.loads", "dill.loads", "dill._dill.loads",
     "cloudpickle.loads", "joblib.numpy_pickle.loads", "numpy.loads", "torch.serialization._load_from_bytes",
     "torch.storage._load_from_bytes", "pandas.compat.pickle_compat.loads"}
)  # fmt: skip
_DECODERS = frozenset({"base64.b64decode", "base64.decodebytes", "base64.standard_b64decode", "binascii.a2b_base64",
                       "codecs.decode", "zlib.decompress", "bz2.decompress", "lzma.decompress"})  # fmt: skip
_STRING_OPS = frozenset({"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE",
                         "BINUNICODE8"})  # fmt: skip


def _opcode_table() -> dict[int, tuple[str, int]]:
    import pickletools

    table = {}
    for op in pickletools.opcodes:
        arg = op.arg
        if arg is None:
            width = 0
        elif arg.n >= 0:
            width = arg.n
        else:
            width = arg.n  # UP_TO_NEWLINE -1, TAKEN_FROM_ARGUMENT1 -2, 4 -3, 4U -4, 8U -5
        if op.name in ("GLOBAL", "INST"):
            width = 0
        table[op.code.encode("latin-1")[0]] = (op.name, width)
    return table


_OPCODES = _opcode_table()


def _memo_index(name: str, value: Any) -> int:
    if not isinstance(value, bytes):
        return -1
    if name in ("PUT", "GET"):
        return int(value) if value.isdigit() else -1
    return int.from_bytes(value, "little")


def _decode(decoder: str, value: Any) -> bytes | None:
    """The pure decoding of a nested payload (base64, zlib...) with an output cap; None when it fails."""
    import base64
    import binascii
    import bz2
    import lzma
    import zlib

    if isinstance(value, str):
        value = value.encode("latin-1", "replace")
    if not isinstance(value, bytes) or isinstance(value, SkippedBytes):
        return None
    try:
        if decoder.startswith("base64") or decoder == "binascii.a2b_base64" or decoder == "codecs.decode":
            return base64.b64decode(value) if len(value) <= MAX_INLINE_PAYLOAD else None
        if decoder == "zlib.decompress":
            return zlib.decompressobj().decompress(value, MAX_INLINE_PAYLOAD)
        if decoder == "bz2.decompress":
            return bz2.BZ2Decompressor().decompress(value, MAX_INLINE_PAYLOAD)
        return lzma.LZMADecompressor().decompress(value, MAX_INLINE_PAYLOAD)
    except (ValueError, binascii.Error, zlib.error, OSError, EOFError, lzma.LZMAError):
        return None


def _py2_string(raw: bytes) -> str | bytes:
    """Protocol 0-2 ``str`` payloads: text when they are UTF-8 (as torch loads them), else bytes."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw


_SIMPLE_KEYS = (str, int, float, bytes, bool, type(None), Global, Opaque, TensorRef, TorchValue)


def _safe_key(value: Any, depth: int) -> bool:
    if isinstance(value, _SIMPLE_KEYS):
        return True
    if isinstance(value, tuple) and depth < MAX_KEY_DEPTH:
        return all(_safe_key(v, depth + 1) for v in value)
    return False
