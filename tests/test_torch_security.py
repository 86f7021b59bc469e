"""Hostile PyTorch files: payloads never run, dangerous globals are reported, bad input is one error.

Payload pickles are BUILT here (with pickle.dumps or by hand); nothing here loads them.
"""

from __future__ import annotations

import io
import os
import pickle
import random
import struct
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

import ckptscan
from ckptscan.errors import CkptscanError, LimitExceeded, MalformedFile
from ckptscan.formats.torch.containers import LEGACY_MAGIC
from ckptscan.formats.torch.safety import classify
from ckptscan.formats.torch.unpickler import Unpickler
from ckptscan.inventory import Severity
from tests.conftest import TESTDATA
from tests.helpers import assert_only_one_line_errors

FIXTURES = TESTDATA / "torch"


class _Command:
    """Pickles as a call to os.system (module ``posix`` on Linux): the classic payload."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (self.command,))


def _q(text: str) -> bytes:
    return repr(text).encode()


def payloads(marker: Path) -> dict[str, bytes]:
    """One payload per call opcode family and protocol; each would create ``marker`` if loaded."""
    command = f"touch {marker}"
    found = {f"reduce-protocol-{p}": pickle.dumps(_Command(command), protocol=p) for p in range(6)}
    found["inst"] = b"(S" + _q(command) + b"\nios\nsystem\n."
    found["obj"] = b"(cos\nsystem\nS" + _q(command) + b"\no."
    found["newobj"] = b"\x80\x02cos\nsystem\nS" + _q(command) + b"\n\x85\x81."
    found["newobj-ex"] = (
        b"\x80\x04\x8c\x02os\x8c\x06system\x93\x8c" + bytes([len(command)]) + command.encode() + b"\x85}\x92."
    )
    # BUILD gadget: give an object a __setstate__ of os.system, then BUILD it with the command
    found["build"] = b"\x80\x02c__main__\nGadget\n)\x81}S'__setstate__'\ncos\nsystem\nsbS" + _q(command) + b"\nb."
    found["stack-global-dotted"] = (
        b"\x80\x04\x8c\x08builtins\x8c\x04eval\x93\x8c" + bytes([len(command) + 9]) + f"print({command!r})".encode()[
            : len(command) + 9
        ] + b"\x85R."
    )  # fmt: skip
    found["torch-wrapped"] = pickle.dumps(
        {"state_dict": {}, "pytorch-lightning_version": "2.0", "callbacks": _Command(command)}, protocol=2
    )
    return found


def zip_checkpoint(path: Path, data_pkl: bytes, *, extra: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", data_pkl)
        archive.writestr("archive/version", "3\n")
        for name, content in (extra or {}).items():
            archive.writestr(f"archive/{name}", content)
    return path


def legacy_checkpoint(path: Path, main: bytes) -> Path:
    parts = [pickle.dumps(LEGACY_MAGIC, protocol=2), pickle.dumps(1001, protocol=2), pickle.dumps({}, protocol=2)]
    path.write_bytes(b"".join([*parts, main, pickle.dumps([], protocol=2)]))
    return path


def tar_checkpoint(path: Path, main: bytes) -> Path:
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, blob in (
            ("pickle", main),
            ("tensors", pickle.dumps(0, protocol=2)),
            ("storages", pickle.dumps(0, protocol=2) + pickle.dumps([], protocol=2)),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return path


CONTAINERS: dict[str, Callable[[Path, bytes], Path]] = {
    "zip-data.pkl": lambda d, p: zip_checkpoint(d / "model.pt", p),
    "bin": lambda d, p: zip_checkpoint(d / "pytorch_model.bin", p),
    "ckpt": lambda d, p: zip_checkpoint(d / "last.ckpt", p),
    "torchscript-constants.pkl": lambda d, p: zip_checkpoint(
        d / "scripted.pt", pickle.dumps({}, protocol=2), extra={"constants.pkl": p, "code/__torch__.py": b"x = 1\n"}
    ),
    "legacy": lambda d, p: legacy_checkpoint(d / "legacy.pt", p),
    "legacy-tar": lambda d, p: tar_checkpoint(d / "legacy.tar", p),
}


@pytest.mark.parametrize("container", sorted(CONTAINERS))
def test_payloads_never_run_and_are_reported(container: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "PWNED"
    for kind, payload in payloads(marker).items():
        folder = tmp_path / kind
        folder.mkdir()
        path = CONTAINERS[container](folder, payload)
        result = ckptscan.scan(path)
        assert not marker.exists(), f"{container}/{kind} executed"
        assert result.inventory is not None, f"{container}/{kind}: {result.error}"
        unsafe = [f for f in result.inventory.findings if f.code == "unsafe-global"]
        assert unsafe, f"{container}/{kind}: no unsafe-global finding"
        assert unsafe[0].severity is Severity.CRITICAL
        assert any(name in unsafe[0].message for name in ("os.system", "posix.system", "builtins.eval")), kind
        assert "os.system" in str(result.inventory.metadata["pickle"]["globals"]) or "eval" in str(
            result.inventory.metadata["pickle"]["globals"]
        ) or "posix.system" in str(result.inventory.metadata["pickle"]["globals"])  # fmt: skip
    assert not marker.exists()


@pytest.mark.parametrize(
    ("module", "name", "severity"),
    [
        ("os", "system", Severity.CRITICAL),
        ("posix", "system", Severity.CRITICAL),
        ("nt", "system", Severity.CRITICAL),
        ("subprocess", "Popen", Severity.CRITICAL),
        ("subprocess", "check_output", Severity.CRITICAL),
        ("builtins", "eval", Severity.CRITICAL),
        ("__builtin__", "exec", Severity.CRITICAL),
        ("__builtins__", "compile", Severity.CRITICAL),
        ("builtins", "__import__", Severity.CRITICAL),
        ("runpy", "run_path", Severity.CRITICAL),
        ("pty", "spawn", Severity.CRITICAL),
        ("pickle", "loads", Severity.CRITICAL),
        ("_pickle", "loads", Severity.CRITICAL),
        ("marshal", "loads", Severity.CRITICAL),
        ("torch", "load", Severity.CRITICAL),
        ("torch.serialization", "load", Severity.CRITICAL),
        ("numpy.testing._private.utils", "runstring", Severity.CRITICAL),
        ("numpy.testing._private.utils", "os.system", Severity.CRITICAL),
        ("ctypes", "CDLL", Severity.CRITICAL),
        ("builtins", "getattr", Severity.HIGH),
        ("builtins", "open", Severity.HIGH),
        ("shutil", "rmtree", Severity.HIGH),
        ("socket", "create_connection", Severity.HIGH),
        ("webbrowser", "open", Severity.HIGH),
        ("importlib", "import_module", Severity.CRITICAL),
        ("operator", "attrgetter", Severity.HIGH),
        ("functools", "partial", Severity.HIGH),
        ("requests.api", "get", Severity.HIGH),
    ],
)
def test_dangerous_globals_table(module: str, name: str, severity: Severity) -> None:
    assert classify(module, name) is severity


@pytest.mark.parametrize(
    ("module", "name"),
    [("collections", "OrderedDict"), ("argparse", "Namespace"), ("torch.profiler", "profile"),
     ("chemprop.nn.agg", "MeanAggregation"), ("torch.nn.modules.linear", "Identity"), ("mypkg.code", "Model")],
)  # fmt: skip
def test_ordinary_globals_are_not_dangerous(module: str, name: str) -> None:
    assert classify(module, name) is None


def test_every_opcode_protocol_round_trip() -> None:
    """Plain values of every protocol come out as the same inert data."""
    value = {
        "ints": [0, 1, -1, 255, 65535, 2**31, -(2**63), 2**100],
        "floats": [0.5, -1e300],
        "text": ["", "é", "x" * 300],
        "bytes": [b"", b"\x00\xff" * 200],
        "tuples": [(), (1,), (1, 2), (1, 2, 3), (1, 2, 3, 4)],
        "bools": [True, False, None],
        "nested": {"a": {"b": [1, {"c": 2}]}},
        ("tuple", 1): "key",
    }
    for protocol in range(6):
        data = pickle.dumps(value, protocol=protocol)
        assert Unpickler(data).load() == value, protocol
        shared = [value["nested"]] * 2
        out = Unpickler(pickle.dumps(shared, protocol=protocol)).load()
        assert out[0] is out[1]


def _expect_error(data: bytes, error: type[CkptscanError] = CkptscanError) -> CkptscanError:
    with pytest.raises(error) as caught:
        Unpickler(data).load()
    assert "\n" not in str(caught.value)
    return caught.value


def test_limits_are_checked_before_allocating() -> None:
    _expect_error(b"\x80\x04\x8d" + struct.pack("<Q", 1 << 60) + b".", CkptscanError)  # BINUNICODE8 of 2**60
    _expect_error(b"\x80\x02\x8b" + struct.pack("<i", 1 << 20) + b"\x00" * 16, LimitExceeded)  # 1 MiB LONG4
    _expect_error(b"(" * 200_000 + b".", LimitExceeded)
    _expect_error(b"I" + b"9" * 5000 + b"\n.", LimitExceeded)
    _expect_error(b"\x80\x02" + b")" + b"\x85" * 100 + b"}" + b"(" + b")" * 0 + b"\x86u.", CkptscanError)
    _expect_error(b"\x80\x09.", MalformedFile)  # protocol 9
    _expect_error(b"\x80\x02h\x05.", MalformedFile)  # memo entry never stored
    _expect_error(b"\x80\x02\xff.", MalformedFile)  # unknown opcode
    _expect_error(b"\x80\x02]", CkptscanError)  # no STOP


def test_deeply_nested_dict_key_is_refused() -> None:
    key = b")" + b"\x85" * 50  # a tuple nested 50 deep
    _expect_error(b"\x80\x02}" + key + b"K\x01s.", MalformedFile)


def test_billion_laughs_is_walked_once(tmp_path: Path) -> None:
    # issue 13: shared containers are walked again only within a budget linear in the pickle,
    # so a memo bomb ends at once with a warning (it used to end with limit-exceeded after 100k visits)
    data = b"\x80\x02]q\x00"
    for _ in range(60):
        data += b"(h\x00h\x00lq\x00"
    data += b"."
    result = ckptscan.scan(zip_checkpoint(tmp_path / "laughs.pt", data))
    assert result.error is None and result.inventory is not None
    assert any("memo bomb" in w for w in result.inventory.warnings)


def test_zip_bomb_declaration_is_refused(tmp_path: Path) -> None:
    path = zip_checkpoint(tmp_path / "bomb.pt", pickle.dumps({}, protocol=2))
    data = bytearray(path.read_bytes())
    central = data.rfind(b"PK\x01\x02archive/data.pkl"[:4])
    first = data.find(b"PK\x01\x02")
    struct.pack_into("<H", data, first + 10, 8)  # claim deflate
    struct.pack_into("<I", data, first + 24, 1 << 31)  # 2 GiB uncompressed from a few bytes
    path.write_bytes(bytes(data))
    assert central >= 0
    result = ckptscan.scan(path)
    assert result.error is not None and "zip bomb" in result.error.message


def test_deflated_storages_are_located_not_inflated(tmp_path: Path) -> None:
    source = FIXTURES / "tied.bin"
    target = tmp_path / "deflated.bin"
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as copy:
        for info in original.infolist():
            copy.writestr(info.filename, original.read(info))
    plain = ckptscan.read_inventory(source)
    packed = ckptscan.read_inventory(target)
    assert [(t.name, t.shape, t.nbytes) for t in packed.tensors] == [(t.name, t.shape, t.nbytes) for t in plain.tensors]
    assert all(t.offset is None and t.encoding.startswith("zip-deflated") for t in packed.tensors)
    assert all(t.attrs["zip_entry"].startswith("tied/data/") for t in packed.tensors)
    assert sum(s.nbytes for s in packed.storages) == sum(s.nbytes for s in plain.storages)


def test_storage_larger_than_its_entry_is_an_error(tmp_path: Path) -> None:
    with zipfile.ZipFile(FIXTURES / "dtypes.pt") as original:
        entries = {i.filename: original.read(i) for i in original.infolist()}
    entries["dtypes/data/0"] = entries["dtypes/data/0"][:-4]
    path = tmp_path / "short.pt"
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in entries.items():
            archive.writestr(name, content)
    result = ckptscan.scan(path)
    assert result.error is not None and result.error.code == "truncated"


def _mutations(data: bytes, seed: int, count: int) -> list[bytes]:
    rng = random.Random(seed)
    found = []
    for _ in range(count):
        if rng.random() < 0.3:
            found.append(data[: rng.randrange(len(data))])
        else:
            mutated = bytearray(data)
            for _ in range(rng.randint(1, 4)):
                mutated[rng.randrange(len(mutated))] ^= 1 << rng.randrange(8)
            found.append(bytes(mutated))
    return found


@pytest.mark.parametrize("name", ["tied.bin", "legacy.pt", "legacy.tar", "torchscript.pt", "lightning.ckpt"])
def test_fuzzed_fixtures_give_one_line_errors(name: str, tmp_path: Path) -> None:
    data = (FIXTURES / name).read_bytes()
    assert_only_one_line_errors(tmp_path / name, _mutations(data, seed=len(name), count=60), ckptscan.read_inventory)


def test_truncated_legacy_is_one_error(tmp_path: Path) -> None:
    data = (FIXTURES / "legacy.pt").read_bytes()
    path = tmp_path / "cut.pt"
    path.write_bytes(data[:-10])
    result = ckptscan.scan(path)
    assert result.error is not None and result.error.code == "truncated"
