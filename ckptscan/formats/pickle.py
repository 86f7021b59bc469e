"""Plain pickle files, whatever they are called (.pkl, .pickle, .joblib, a raw pickle named .pt/.bin).

Recognised by opcode structure, not by extension: the first bytes must decode as a run of valid
pickle opcodes that starts the way a pickler starts (PROTO, FRAME, MARK, an empty container, a
global...). Registered last (after ONNX too), so that a PyTorch zip/legacy file, a .npy (whose
magic ``\\x93NUMPY`` is also a valid opcode) or a Keras file is never taken for a plain pickle.

A file may hold several pickles back to back (``pickle.dump`` called repeatedly; the pre-1.6
torch layout): each is read in turn until the bytes left do not start a pickle; what remains is
reported as trailing data. joblib files are pickles whose numpy arrays follow their
``NumpyArrayWrapper`` records in the stream; the restricted unpickler steps over them (``unpickler.py``).

Every pickle is streamed through the restricted unpickler (bounded memory, nothing imported or
called). Tensors and numpy arrays found in it are inventoried (numpy arrays of joblib files with
their file offsets); every global outside the tensor allowlist is a finding.
"""

from __future__ import annotations

import re

from ckptscan.errors import CkptscanError, MalformedFile
from ckptscan.formats.torch.containers import Loaded, PickleRead, StorageData, keep_globals
from ckptscan.formats.torch.unpickler import _OPCODES, SourceStream, Unpickler
from ckptscan.inventory import Finding, Inventory, Region, RegionKind, Severity
from ckptscan.source import Head, Source

MAX_PICKLES = 1000  # back-to-back pickles read from one file

# opcodes a pickler may start with: PROTO, FRAME, MARK, empty containers, values, globals
_FIRST = frozenset(b"\x80\x95(}])NIJKLMFGSTUVXBC\x8c\x8d\x8e\x8f\x88\x89\x8a\x8bci")
_IDENTIFIER = re.compile(rb"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_<>][A-Za-z0-9_<>]*)*$")


def looks_like_pickle(data: bytes, size: int | None = None) -> bool:
    """Whether ``data`` (the first bytes of a file or member of ``size`` bytes) is a pickle stream.

    The opcodes are decoded until STOP or the end of ``data``; every one must be known, with its
    argument in range, and a GLOBAL/INST must name a dotted identifier. At least two opcodes.
    """
    if len(data) < 2 or data[0] not in _FIRST:
        return False
    if data[0] == 0x80 and data[1] > 5:
        return False
    pos, count = 0, 0
    end = len(data)
    # joblib writes raw array bytes inside the stream, right after a wrapper's BUILD
    joblib = b"NumpyArrayWrapper" in data
    while pos < end:
        op = _OPCODES.get(data[pos])
        if op is None:
            return joblib and count >= 8
        name, arg = op
        pos += 1
        count += 1
        if name == "STOP":
            return count >= 2
        try:
            if name in ("GLOBAL", "INST"):
                for _ in range(2):
                    nl = data.find(b"\n", pos)
                    if nl < 0:
                        return pos > 64 and count >= 2  # the head ended inside a long name
                    if not _IDENTIFIER.match(data[pos:nl]):
                        return False
                    pos = nl + 1
            elif arg == -1:
                nl = data.find(b"\n", pos)
                if nl < 0:
                    break
                pos = nl + 1
            elif arg == -2:
                pos += 1 + data[pos]
            elif arg in (-3, -4):
                length = int.from_bytes(data[pos : pos + 4], "little", signed=arg == -3)
                if length < 0 or (size is not None and length > size):
                    return False
                pos += 4 + length
            elif arg == -5:
                length = int.from_bytes(data[pos : pos + 8], "little")
                if size is not None and length > size:
                    return False
                pos += 8 + length
            elif name == "PROTO":
                if data[pos] > 5:
                    return False
                pos += 1
            else:
                pos += arg
        except IndexError:
            break
    return count >= 3


def sniff(head: Head) -> bool:
    return looks_like_pickle(head.data, head.size)


def read(source: Source) -> Inventory:
    from ckptscan.formats.torch.assemble import assemble

    loaded = Loaded("pickle")
    try:
        _read_pickles(source, loaded)
    except CkptscanError as e:
        raise keep_globals(e, loaded) from None
    if any(_has_joblib(p) for p in loaded.pickles):
        loaded.format = "joblib"
    inventory = assemble(source, loaded)
    return _with_arrays(inventory, source)


def _read_pickles(source: Source, loaded: Loaded) -> None:
    position = 0
    index = 0
    while position < source.size:
        if index and not looks_like_pickle(source.read_up_to(position, 256), source.size - position):
            trailing = source.size - position
            loaded.regions.append(Region(source.name, RegionKind.UNREFERENCED, position, trailing, "bytes after STOP"))
            loaded.findings.append(
                Finding(
                    "pickle-trailing-data",
                    Severity.LOW,
                    f"{trailing:,} bytes after the last pickle's STOP are not a pickle (ignored by pickle.load; "
                    "code shipped with the model could read them)",
                    f"offset {position}",
                )
            )
            break
        if index >= MAX_PICKLES:
            raise MalformedFile(f"holds more than {MAX_PICKLES} pickles back to back", where=f"offset {position}")
        label = "pickle" if index == 0 else f"pickle {index + 1}"
        unpickler = Unpickler(label=label, stream=SourceStream(source, position, source.size, label))
        read = PickleRead(label, None, unpickler, 0, tensors=index == 0)
        loaded.pickles.append(read)
        read.root = unpickler.load()
        read.nbytes = unpickler.end
        for ref, data_offset in unpickler.embedded_storages:
            # a tensor pickled plainly carries its storage as a nested legacy checkpoint
            located = data_offset is not None
            loaded.storages[f"{source.name}:{label}:{ref.key}"] = StorageData(
                ref,
                source.name,
                position + data_offset if data_offset is not None else None,
                ref.nbytes,
                "raw" if located else "pickle-latin1",
                {"torch_key": ref.key, "embedded": True},
            )
        loaded.regions.append(Region(source.name, RegionKind.PICKLE, position, unpickler.end, label))
        position += unpickler.end
        index += 1
    if index > 1:
        loaded.findings.append(
            Finding(
                "pickle-several-streams",
                Severity.INFO,
                f"the file holds {index} pickles back to back (pickle.load reads only the first; each was scanned)",
                "offset 0",
            )
        )


def _has_joblib(read: PickleRead) -> bool:
    return any(g.startswith("joblib.") for g in read.unpickler.globals)


def _with_arrays(inventory: Inventory, source: Source) -> Inventory:
    """joblib numpy arrays whose raw bytes are in the file become tensors (offset, dtype, shape)."""
    from dataclasses import replace

    from ckptscan.dtypes import lookup
    from ckptscan.inventory import Tensor

    arrays = inventory.metadata.get("numpy_arrays") or []
    tensors = list(inventory.tensors)
    regions = list(inventory.regions)
    for entry in arrays:
        if not isinstance(entry, dict) or "offset" not in entry:
            continue
        dtype = _numpy_dtype(entry["dtype"])
        elements = 1
        for dim in entry["shape"]:
            elements *= dim
        big = entry["dtype"].startswith(">")
        shape = tuple(entry["shape"])
        strides = None
        if entry.get("fortran_order") and len(shape) > 1:
            step, column_major = 1, []
            for dim in shape:
                column_major.append(step)
                step *= dim
            strides = tuple(column_major)
        tensors.append(
            Tensor(
                name=entry["name"] or "array",
                shape=shape,
                strides=strides,
                dtype=lookup(dtype) if dtype else lookup(f"numpy.{entry['dtype']}"),
                elements=elements,
                nbytes=entry["data_bytes"],
                file=source.name,
                offset=entry["offset"],
                native_dtype=f"numpy.{entry['dtype']}",
                encoding=("raw-big-endian" if big else "raw") + ("-strided" if strides else ""),
                attrs={"structure": "model"},
            )
        )
    spans = sorted(
        [(t.offset, t.offset + t.nbytes) for t in tensors[len(inventory.tensors) :] if t.offset is not None]
        + [(s.offset, s.offset + s.nbytes) for s in inventory.storages if s.offset is not None]
    )
    if not spans:
        return inventory
    # array and storage bytes were counted inside the pickle regions: cut them out
    cut: list[Region] = []
    for region in regions:
        if region.kind is not RegionKind.PICKLE:
            cut.append(region)
            continue
        start, stop = region.offset, region.offset + region.nbytes
        for a, b in spans:
            if a >= stop or b <= start:
                continue
            if a > start:
                cut.append(Region(region.file, region.kind, start, a - start, region.label))
            start = max(start, b)
        if stop > start:
            cut.append(Region(region.file, region.kind, start, stop - start, region.label))
    return replace(inventory, tensors=tuple(tensors), regions=tuple(cut))


_NUMPY_TO_CANONICAL = {
    "f8": "F64", "f4": "F32", "f2": "F16", "i8": "I64", "i4": "I32", "i2": "I16", "i1": "I8",
    "u8": "U64", "u4": "U32", "u2": "U16", "u1": "U8", "b1": "BOOL", "c8": "C64", "c16": "C128",
}  # fmt: skip


def _numpy_dtype(spec: str) -> str | None:
    return _NUMPY_TO_CANONICAL.get(spec.lstrip("<>|="))
