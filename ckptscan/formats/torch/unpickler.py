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
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

from ckptscan.errors import LimitExceeded, MalformedFile, TruncatedFile
from ckptscan.formats.torch import rebuild
from ckptscan.formats.torch.objects import Global, Opaque, PickleSet, TensorRef, TorchValue

MAX_PICKLE_BYTES = 1 << 30  # a pickle longer than this is refused before it is read
MAX_MEMO_ENTRIES = 10_000_000
MAX_MARK_DEPTH = 100_000
MAX_LONG_BYTES = 1 << 12  # LONG1/LONG4 payloads; real checkpoints use a few bytes
MAX_TEXT_INT_DIGITS = 4000  # protocol 0 INT/LONG lines (CPython refuses more than 4300 digits)
MAX_KEY_DEPTH = 16  # nesting of tuples used as dictionary keys
HIGHEST_PROTOCOL = 5

_unpack_int32 = struct.Struct("<i").unpack_from
_unpack_uint32 = struct.Struct("<I").unpack_from
_unpack_uint16 = struct.Struct("<H").unpack_from
_unpack_uint64 = struct.Struct("<Q").unpack_from
_unpack_double = struct.Struct(">d").unpack_from

PersistentLoad = Callable[[Any], Any]


@dataclass(slots=True)
class GlobalUse:
    """A global named in the pickle: how often, and where first (byte offset in the pickle)."""

    module: str
    name: str
    first_offset: int
    count: int = 1

    @property
    def qualname(self) -> str:
        return f"{self.module}.{self.name}"


class _Mark:
    __slots__ = ()


class Unpickler:
    """Interprets one pickle of ``data`` starting at ``start``; ``load()`` returns its value.

    ``persistent_load`` receives each persistent id (already inert data) and returns what stands
    for it, e.g. a :class:`~.objects.StorageRef`. ``label`` names the pickle in error messages.
    """

    def __init__(
        self,
        data: bytes,
        *,
        persistent_load: PersistentLoad | None = None,
        start: int = 0,
        label: str = "pickle",
    ) -> None:
        self.data = data
        self.pos = start
        self.start = start
        self.label = label
        self.persistent_load = persistent_load
        self.stack: list[Any] = []
        self.metastack: list[list[Any]] = []
        self.memo: dict[int, Any] = {}
        self.protocol = 0
        self.globals: dict[str, GlobalUse] = {}
        self.opcodes = 0
        self._op_offset = start
        self._dispatch = self._build_dispatch()

    # -- driving -----------------------------------------------------------------------------------

    def load(self) -> Any:
        data, dispatch = self.data, self._dispatch
        size = len(data)
        try:
            while True:
                pos = self.pos
                if pos >= size:
                    raise TruncatedFile(
                        f"{self.label} ends without a STOP opcode", where=f"{self.label} byte {pos - self.start}"
                    )
                self._op_offset = pos
                self.pos = pos + 1
                self.opcodes += 1
                handler = dispatch[data[pos]]
                if handler is None:
                    self._fail(f"unknown pickle opcode 0x{data[pos]:02x}")
                if handler():
                    break
        except (RecursionError, MemoryError) as e:
            self._fail(f"cannot be interpreted within limits ({type(e).__name__})", limit=True)
        except (ValueError, TypeError, OverflowError, UnicodeDecodeError, IndexError, KeyError, struct.error) as e:
            self._fail(f"is malformed ({type(e).__name__}: {e})")
        if not self.stack:
            self._fail("STOP with an empty stack")
        return self.stack.pop()

    @property
    def end(self) -> int:
        """The offset just after the STOP opcode (after ``load``)."""
        return self.pos

    def _fail(self, what: str, *, limit: bool = False) -> NoReturn:
        error = LimitExceeded if limit else MalformedFile
        raise error(f"{self.label} {what}", where=f"{self.label} byte {self._op_offset - self.start}")

    # -- primitive reads ---------------------------------------------------------------------------

    def _take(self, n: int) -> bytes:
        pos = self.pos
        if n < 0 or pos + n > len(self.data):
            raise TruncatedFile(
                f"{self.label} opcode needs {n:,} bytes but only {len(self.data) - pos:,} remain",
                where=f"{self.label} byte {self._op_offset - self.start}",
            )
        self.pos = pos + n
        return self.data[pos : pos + n]

    def _byte(self) -> int:
        pos = self.pos
        if pos >= len(self.data):
            self._take(1)
        self.pos = pos + 1
        return self.data[pos]

    def _uint32(self) -> int:
        pos = self.pos
        self._take(4)
        value: int = _unpack_uint32(self.data, pos)[0]
        return value

    def _uint64(self) -> int:
        pos = self.pos
        self._take(8)
        value: int = _unpack_uint64(self.data, pos)[0]
        return value

    def _line(self) -> bytes:
        data, pos = self.data, self.pos
        end = data.find(b"\n", pos)
        if end < 0:
            raise TruncatedFile(
                f"{self.label} text opcode has no end of line",
                where=f"{self.label} byte {self._op_offset - self.start}",
            )
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
        if self.pos + length > len(self.data):
            raise TruncatedFile(
                f"{self.label} FRAME of {length:,} bytes runs past the end",
                where=f"{self.label} byte {self._op_offset - self.start}",
            )

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
        pos = self.pos
        self._take(4)
        self.stack.append(_unpack_int32(self.data, pos)[0])

    def op_binint1(self) -> None:
        self.stack.append(self._byte())

    def op_binint2(self) -> None:
        pos = self.pos
        self._take(2)
        self.stack.append(_unpack_uint16(self.data, pos)[0])

    def op_long1(self) -> None:
        self._push_long(self._byte())

    def op_long4(self) -> None:
        pos = self.pos
        self._take(4)
        length = _unpack_int32(self.data, pos)[0]
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
        pos = self.pos
        self._take(8)
        self.stack.append(_unpack_double(self.data, pos)[0])

    # -- strings and bytes -------------------------------------------------------------------------

    def op_string(self) -> None:
        line = self._line()
        if len(line) >= 2 and line[0] == line[-1] and line[:1] in (b"'", b'"'):
            raw = codecs.escape_decode(line[1:-1])[0]
        else:
            self._fail("STRING argument is not quoted")
        self.stack.append(_py2_string(raw))

    def op_binstring(self) -> None:
        pos = self.pos
        self._take(4)
        length = _unpack_int32(self.data, pos)[0]
        if length < 0:
            self._fail("BINSTRING has a negative length")
        self.stack.append(_py2_string(bytes(self._take(length))))

    def op_short_binstring(self) -> None:
        self.stack.append(_py2_string(bytes(self._take(self._byte()))))

    def op_unicode(self) -> None:
        self.stack.append(self._line().decode("raw-unicode-escape"))

    def op_binunicode(self) -> None:
        self.stack.append(str(self._take(self._uint32()), "utf-8", "surrogatepass"))

    def op_short_binunicode(self) -> None:
        self.stack.append(str(self._take(self._byte()), "utf-8", "surrogatepass"))

    def op_binunicode8(self) -> None:
        self.stack.append(str(self._take(self._uint64()), "utf-8", "surrogatepass"))

    def op_binbytes(self) -> None:
        self.stack.append(bytes(self._take(self._uint32())))

    def op_short_binbytes(self) -> None:
        self.stack.append(bytes(self._take(self._byte())))

    def op_binbytes8(self) -> None:
        self.stack.append(bytes(self._take(self._uint64())))

    def op_bytearray8(self) -> None:
        self.stack.append(bytearray(self._take(self._uint64())))

    def op_next_buffer(self) -> None:
        # out-of-band buffers are supplied by the caller of a real load; a file has none to give
        self.stack.append(Opaque("pickle.PickleBuffer", how="out-of-band"))

    def op_readonly_buffer(self) -> None:
        self._top()

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
            self.globals[qualname] = GlobalUse(module, name, self._op_offset - self.start)
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
        pos = self.pos
        self._take(2)
        self._extension(_unpack_uint16(self.data, pos)[0])

    def op_ext4(self) -> None:
        pos = self.pos
        self._take(4)
        self._extension(_unpack_int32(self.data, pos)[0])

    def _extension(self, code: int) -> None:
        # the copyreg extension registry of the loading process decides what this names
        self.stack.append(self._global("copyreg._extension_registry", str(code)))

    def op_reduce(self) -> None:
        args = self._pop()
        func = self._pop()
        if not isinstance(args, tuple):
            self._fail(f"REDUCE arguments are a {type(args).__name__}, not a tuple")
        self.stack.append(rebuild.call(func, args, None, "reduce"))

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
        rebuild.build(self._top(), state)

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
