"""Every pickle, everywhere: plain pickles of any name, pickles inside containers, findings that
survive errors, bounded memory on bombs, SARIF and the pre-commit hook.

Payloads are BUILT here (pickle.dumps or by hand); nothing here loads them. Each scan is checked
against a marker file the payload would create.
"""

from __future__ import annotations

import base64
import io
import json
import os
import pickle
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import ckptscan
from ckptscan.formats import pickle as pickle_format
from ckptscan.formats.torch import unpickler as unpickler_module
from ckptscan.formats.torch.safety import classify
from ckptscan.inventory import Severity
from tests.helpers import run_cli
from tests.test_torch_security import payloads, zip_checkpoint

ROOT = Path(__file__).resolve().parent.parent
RAW_NAMES = ("model.pkl", "model.pt", "model.pth", "pytorch_model.bin", "last.ckpt", "model.joblib", "x.pickle", "data")


def _unsafe(result: ckptscan.ScanResult) -> list[ckptscan.Finding]:
    found = list(result.inventory.findings) if result.inventory is not None else []
    if result.error is not None:
        found += result.error.findings
    return [f for f in found if f.severity.rank >= Severity.HIGH.rank]


@pytest.mark.parametrize("name", RAW_NAMES)
def test_raw_pickles_of_any_name_are_scanned(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "PWNED"
    for kind, payload in payloads(marker).items():
        folder = tmp_path / kind
        folder.mkdir()
        path = folder / name
        path.write_bytes(payload)
        result = ckptscan.scan(path)
        assert not marker.exists(), f"{name}/{kind} executed"
        assert _unsafe(result), f"{name}/{kind}: {result.error}"
    assert not marker.exists()


def test_audit_fails_on_one_raw_pickle(tmp_path: Path) -> None:
    for name in ("weights.bin", "model.joblib", "thing.dat", "notes.txt", "readme.md", "noext", "config.json"):
        folder = tmp_path / name.replace(".", "_")
        folder.mkdir()
        (folder / name).write_bytes(payloads(tmp_path / "PWNED")["reduce-protocol-2"])
        run = run_cli("audit", folder, "--fail-on", "unsafe", "--json")
        assert run.code == 3, run.err
        assert "unsafe-global" in run.out
    assert not (tmp_path / "PWNED").exists()


def test_audit_of_a_missing_path_is_an_error(tmp_path: Path) -> None:
    run = run_cli("audit", tmp_path / "nope")
    assert run.code == 1
    assert "no such file" in run.err


def test_sniff_does_not_steal_other_formats() -> None:
    assert not pickle_format.looks_like_pickle(b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', ")
    assert not pickle_format.looks_like_pickle(b"PK\x03\x04\x14\x00\x00\x00")
    assert not pickle_format.looks_like_pickle(b"class Foo:\n    pass\n")
    assert not pickle_format.looks_like_pickle(b'{"a": 1}')
    assert not pickle_format.looks_like_pickle(b"\x08\x07\x12\x07pytorch")  # ONNX
    for protocol in range(6):
        assert pickle_format.looks_like_pickle(pickle.dumps({"a": [1, 2]}, protocol=protocol))


def test_several_pickles_and_trailing_bytes(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    path = tmp_path / "stream.pkl"
    path.write_bytes(pickle.dumps({"epoch": 3}) + payloads(marker)["reduce-protocol-4"] + b"\x00garbage")
    result = ckptscan.scan(path)
    assert result.inventory is not None
    codes = {f.code for f in result.inventory.findings}
    assert {"unsafe-global", "pickle-trailing-data", "pickle-several-streams"} <= codes
    assert result.inventory.metadata["top_level"] == {"epoch": "int"}
    assert not marker.exists()


def test_plain_pickle_of_arrays_gets_its_inventory(tmp_path: Path) -> None:
    np = pytest.importorskip("numpy")
    path = tmp_path / "state.pkl"
    path.write_bytes(pickle.dumps({"epoch": 1, "weights": np.arange(6, dtype=np.float32).reshape(2, 3)}))
    result = ckptscan.scan(path)
    assert result.inventory is not None and result.inventory.format == "pickle", result.error
    assert result.inventory.metadata["top_level"]["epoch"] == "int"
    (array,) = result.inventory.metadata["numpy_arrays"]
    assert array["shape"] == [2, 3] and array["data_bytes"] == 24
    assert not _unsafe(result)


def test_joblib_arrays_are_tensors(tmp_path: Path) -> None:
    joblib = pytest.importorskip("joblib")
    np = pytest.importorskip("numpy")
    path = tmp_path / "model.joblib"
    arrays = {"w": np.arange(12, dtype=np.float32).reshape(3, 4), "f": np.asfortranarray(np.ones((2, 3)))}
    joblib.dump({**arrays, "names": ["a", "b"]}, path)
    result = ckptscan.scan(path)
    assert result.inventory is not None, result.error
    assert result.inventory.format == "joblib"
    tensors = {t.name: t for t in result.inventory.tensors}
    raw = path.read_bytes()
    for name, array in arrays.items():
        t = tensors[name]
        assert t.shape == array.shape and t.nbytes == array.nbytes
        assert t.offset is not None
        assert raw[t.offset : t.offset + t.nbytes] == array.tobytes(order="F" if name == "f" else "C")
    assert not _unsafe(result)


def test_truncated_pickle_keeps_its_findings(tmp_path: Path) -> None:
    data = payloads(tmp_path / "PWNED")["reduce-protocol-4"]
    path = tmp_path / "cut.pkl"
    path.write_bytes(data[:-3])
    result = ckptscan.scan(path)
    assert result.error is not None
    assert any(f.code == "unsafe-global" for f in result.error.findings)
    run = run_cli(path, "--fail-on", "unsafe", "--json")
    assert run.code != 0
    assert run.json()["results"][0]["findings"][0]["code"] == "unsafe-global"
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((ROOT / "ckptscan" / "schema" / "ckptscan.schema.json").read_text())
    jsonschema.validate(run.json(), schema, cls=jsonschema.Draft202012Validator)
    audit = run_cli("audit", tmp_path, "--json", "--fail-on", "unsafe")
    assert audit.code == 1
    assert audit.json()["audit"]["findings"]["by_severity"] == {"critical": 1}


def test_failure_after_reduce_in_a_zip_keeps_findings(tmp_path: Path) -> None:
    bad = payloads(tmp_path / "PWNED")["reduce-protocol-2"][:-1] + b"\xff"  # unknown opcode after REDUCE
    path = zip_checkpoint(tmp_path / "model.pt", bad)
    result = ckptscan.scan(path)
    assert result.error is not None
    assert any(f.severity is Severity.CRITICAL for f in result.error.findings)


def test_nested_loads_payload_is_scanned(tmp_path: Path) -> None:
    inner = payloads(tmp_path / "PWNED")["reduce-protocol-2"]
    for arg in (inner, base64.b64encode(inner)):
        outer = b"\x80\x02cpickle\nloads\n" if arg is inner else b"\x80\x02cpickle\nloads\ncbase64\nb64decode\n"
        arg_op = b"C" + bytes([len(arg)]) + arg if len(arg) < 256 else b"B" + len(arg).to_bytes(4, "little") + arg
        outer += arg_op + b"\x85R" + (b"\x85R." if arg is not inner else b".")
        path = tmp_path / "nested.pkl"
        path.write_bytes(outer)
        result = ckptscan.scan(path)
        assert result.inventory is not None, result.error
        subjects = {f.subject for f in result.inventory.findings}
        assert ("pickle.loads" in subjects and "posix.system" in subjects) or "os.system" in subjects


def test_every_zip_member_that_is_a_pickle(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    evil = payloads(marker)["reduce-protocol-2"]
    path = zip_checkpoint(
        tmp_path / "model.pt",
        pickle.dumps({}, protocol=2),
        extra={"extra.pkl": evil, "notes.txt": evil, "code/__torch__/m.debug_pkl": evil},
    )
    result = ckptscan.scan(path)
    assert result.inventory is not None, result.error
    where = {f.where.split(" byte")[0] for f in result.inventory.findings if f.code == "unsafe-global"}
    assert where == {"archive/extra.pkl"} or len(result.inventory.metadata["pickle"]["pickles"]) >= 4
    labels = set(result.inventory.metadata["pickle"]["pickles"])
    assert {"archive/extra.pkl", "archive/notes.txt", "archive/code/__torch__/m.debug_pkl"} <= labels
    assert not marker.exists()


def test_zip_member_names_that_escape(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({}, protocol=2))
        for name in ("../evil.sh", "/etc/x", "C:/x", "a\\..\\b", "line\nbreak"):
            archive.writestr(name, b"x")
    result = ckptscan.scan(path)
    assert result.inventory is not None, result.error
    names = [f for f in result.inventory.findings if f.code == "zip-unsafe-name"]
    assert len(names) == 5
    assert all("\n" not in f.message for f in names)


def test_tar_sys_info_is_scanned(tmp_path: Path) -> None:
    evil = payloads(tmp_path / "PWNED")["reduce-protocol-2"]
    path = tmp_path / "legacy.tar"
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, blob in (
            ("sys_info", evil),
            ("pickle", pickle.dumps({}, protocol=2)),
            ("tensors", pickle.dumps(0, protocol=2)),
            ("storages", pickle.dumps(0, protocol=2) + pickle.dumps([], protocol=2)),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    result = ckptscan.scan(path)
    assert result.inventory is not None, result.error
    assert any(f.code == "unsafe-global" and f.where.startswith("sys_info") for f in result.inventory.findings)


def test_scan_only_past_the_build_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(unpickler_module, "MAX_BUILD_OPCODES", 50)
    value = [list(range(100)), payloads(tmp_path / "PWNED")["reduce-protocol-4"]]
    data = pickle.dumps(value, protocol=4)
    # the payload is a bytes constant here; add a real dangerous global after the budget
    tail = b"\x8c\x02os\x8c\x06system\x93\x8c\x04true\x85R."
    path = tmp_path / "big.pkl"
    path.write_bytes(data[:-1] + b"0" + tail)
    result = ckptscan.scan(path)
    assert result.error is not None and result.error.code == "limit-exceeded"
    assert any(f.subject == "os.system" for f in result.error.findings)


def test_large_payloads_are_skipped_not_held(tmp_path: Path) -> None:
    data = pickle.dumps({"blob": b"\x00" * (unpickler_module.MAX_INLINE_PAYLOAD + 1), "n": 1}, protocol=4)
    stream = unpickler_module.ChunkStream(iter([data[i : i + 4096] for i in range(0, len(data), 4096)]))
    u = unpickler_module.Unpickler(stream=stream)
    value = u.load()
    assert isinstance(value["blob"], unpickler_module.SkippedBytes)
    assert len(value["blob"]) == unpickler_module.MAX_INLINE_PAYLOAD + 1
    assert value["n"] == 1 and u.skipped_payloads == 1


# VmHWM is this process's own peak (ru_maxrss would carry the forking parent's peak across exec)
_RSS_SCRIPT = """
import sys, time
sys.path.insert(0, sys.argv[2])
import ckptscan
t = time.perf_counter()
r = ckptscan.scan(sys.argv[1])
elapsed = time.perf_counter() - t
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(r.error.code if r.error else "ok", elapsed, hwm)
"""


def test_deflated_pickle_bomb_is_streamed(tmp_path: Path) -> None:
    """A 128 MiB data.pkl deflated into a small zip: streamed, never inflated whole (< 100 MB RSS)."""
    size = 128 << 20
    body = b"\x80\x04}\x94\x8c\x04blob\x94\x8e" + size.to_bytes(8, "little")
    path = tmp_path / "bomb.pt"
    with (
        zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive,
        archive.open("archive/data.pkl", "w", force_zip64=True) as out,
    ):
        out.write(body)
        chunk = b"\x00" * (1 << 20)
        for _ in range(size >> 20):
            out.write(chunk)
        out.write(b"s.")
    assert path.stat().st_size < (1 << 20)
    if not Path("/proc/self/status").exists():
        pytest.skip("needs /proc to measure peak memory")
    run = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, str(path), str(ROOT)], capture_output=True, text=True)
    status, _elapsed, rss_kib = run.stdout.split()
    assert status == "ok", run.stderr
    assert int(rss_kib) < 100 * 1024


def test_peer_lists_are_covered() -> None:
    """Every global picklescan, modelscan and ModelAudit flag is flagged here too (when installed)."""
    python = os.environ.get("CKPTSCAN_PEERS_PYTHON", "/work/venv-sec/bin/python")
    if not Path(python).exists():
        pytest.skip("peer scanners not installed")
    script = ROOT / "tools" / "peer_globals.py"
    run = subprocess.run([python, str(script)], capture_output=True, text=True)
    if run.returncode != 0:
        pytest.skip(f"peer scanners not importable: {run.stderr[-200:]}")
    missing = []
    for source, module, name in json.loads(run.stdout):
        probe = "system" if name == "*" else name
        severity = classify(module, probe)
        if severity is None or severity.rank < Severity.HIGH.rank:
            missing.append((source, module, name))
    assert not missing


def test_sarif_validates(tmp_path: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    (tmp_path / "evil.pkl").write_bytes(payloads(tmp_path / "PWNED")["reduce-protocol-2"])
    (tmp_path / "cut.pkl").write_bytes(payloads(tmp_path / "PWNED")["reduce-protocol-4"][:-2])
    schema = json.loads((ROOT / "tests" / "data" / "sarif-schema-2.1.0.json").read_text())
    for args in ((tmp_path / "evil.pkl", tmp_path / "cut.pkl"), ("audit", tmp_path)):
        run = run_cli(*args, "--format", "sarif")
        doc = json.loads(run.out)
        jsonschema.Draft4Validator(schema).validate(doc)
        results = doc["runs"][0]["results"]
        rules = {r["ruleId"] for r in results}
        assert {"unsafe-global", "read-error"} <= rules
        assert all(r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] for r in results)
        assert any(r["level"] == "error" for r in results)


def test_pre_commit_hook_entry(tmp_path: Path) -> None:
    hooks = (ROOT / ".pre-commit-hooks.yaml").read_text()
    entry = next(line.split("entry:", 1)[1].split() for line in hooks.splitlines() if "entry:" in line)
    assert entry[0] == "ckptscan"
    evil = tmp_path / "evil.pt"
    evil.write_bytes(payloads(tmp_path / "PWNED")["reduce-protocol-2"])
    assert run_cli(*entry[1:], evil).code == 3
    good = tmp_path / "good.pkl"
    good.write_bytes(pickle.dumps({"a": 1}))
    assert run_cli(*entry[1:], good).code == 0


def test_pre_commit_try_repo(tmp_path: Path) -> None:
    """The hook from a fresh clone, as a user would get it (skipped without pre-commit or git)."""
    pre_commit = shutil.which("pre-commit") or str(Path(sys.executable).parent / "pre-commit")
    if not Path(pre_commit).exists() or shutil.which("git") is None:
        pytest.skip("pre-commit or git not installed")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    if not (clone / ".pre-commit-hooks.yaml").exists():
        pytest.skip("the hook file is not committed yet")
    project = tmp_path / "project"
    project.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    (project / "evil.pt").write_bytes(payloads(tmp_path / "PWNED")["reduce-protocol-2"])
    subprocess.run(["git", "add", "evil.pt"], cwd=project, check=True)
    # offline CI: pip gives up at once instead of retrying, and the test skips
    env = {**os.environ, "PRE_COMMIT_HOME": str(tmp_path / "cache"), "PIP_DEFAULT_TIMEOUT": "5", "PIP_RETRIES": "0"}
    run = subprocess.run(
        [pre_commit, "try-repo", str(clone), "ckptscan", "--all-files"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if run.returncode not in (0, 1) or "An unexpected error" in run.stdout:
        pytest.skip(f"pre-commit could not build the hook environment: {run.stdout[-300:]}")
    assert run.returncode == 1
    assert "unsafe-global" in run.stdout
    assert not (tmp_path / "PWNED").exists()


def test_safetensors_rejects_foreign_dtypes_as_unknown(tmp_path: Path) -> None:
    import struct

    header = json.dumps({"w": {"dtype": "F128", "shape": [2], "data_offsets": [0, 32]}}).encode()
    path = tmp_path / "f128.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + bytes(32))
    inventory = ckptscan.read_inventory(path)
    assert not inventory.tensors[0].dtype.known
    assert any("F128" in w and "not a safetensors dtype" in w for w in inventory.warnings)
    doc = run_cli(path, "--json").json()["results"][0]
    assert all(t["saving_bytes"] == 0 for t in doc["reduction"]["targets"])


def test_gguf_empty_key_warns(tmp_path: Path) -> None:
    import struct

    def text(s: bytes) -> bytes:
        return struct.pack("<Q", len(s)) + s

    body = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + text(b"") + struct.pack("<I", 4) + struct.pack("<I", 7)
    path = tmp_path / "empty.gguf"
    path.write_bytes(body)
    inventory = ckptscan.read_inventory(path)
    assert any("empty string" in w for w in inventory.warnings)


def test_onnx_without_graph_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "nograph.onnx"
    path.write_bytes(b"\x08\x07\x12\x07pytorch")  # ir_version 7, producer_name; no graph
    result = ckptscan.scan(path)
    assert result.error is not None and "no graph" in result.error.message


class _Reduce:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def test_numpy_object_arrays_are_scanned(tmp_path: Path) -> None:
    np = pytest.importorskip("numpy")
    marker = tmp_path / "PWNED"
    array = np.array([_Reduce(marker), 1], dtype=object)
    np.save(tmp_path / "o.npy", array, allow_pickle=True)
    np.savez(tmp_path / "o.npz", a=array)
    np.savez_compressed(tmp_path / "oc.npz", a=array)
    for name in ("o.npy", "o.npz", "oc.npz"):
        result = ckptscan.scan(tmp_path / name)
        assert result.inventory is not None, result.error
        assert any(f.code == "unsafe-global" and f.severity is Severity.CRITICAL for f in result.inventory.findings)
    assert not marker.exists()


def test_hdf5_attribute_pickles_are_scanned(tmp_path: Path) -> None:
    h5py = pytest.importorskip("h5py")
    np = pytest.importorskip("numpy")
    marker = tmp_path / "PWNED"
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f["x"] = np.zeros(3)
        f.attrs["blob"] = np.void(pickle.dumps(_Reduce(marker)))
        f.attrs["text"] = pickle.dumps(_Reduce(marker), protocol=0)
    result = ckptscan.scan(tmp_path / "a.h5")
    assert result.inventory is not None, result.error
    where = {f.where.split(" byte")[0] for f in result.inventory.findings if f.code == "unsafe-global"}
    assert where == {"attribute 'blob'", "attribute 'text'"}
    assert not marker.exists()


def test_keras_config_callables_are_named() -> None:
    from ckptscan.formats.keras import config_findings

    config = {
        "class_name": "Sequential",
        "config": {
            "layers": [
                {"class_name": "system", "module": "os", "config": {}},
                {"class_name": "Lambda", "config": {"name": "l", "function": {"module": "os", "config": "system"}}},
            ]
        },
    }
    found = config_findings(config, "config.json")
    subjects = {f.subject: f.severity for f in found}
    assert subjects["os.system"] is Severity.CRITICAL
    assert any("os.system" in f.message for f in found)


def test_plainly_pickled_tensors_are_inventoried(tmp_path: Path) -> None:
    """pickle.dump(state_dict): each storage is a nested legacy torch checkpoint (_load_from_bytes)."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    state = {"w": torch.randn(2, 3), "b": torch.arange(4), "big": torch.ones(1200, 1024)}
    state["view"] = state["big"][3:5]
    for protocol in (2, 4, 5):
        path = tmp_path / f"sd{protocol}.pkl"
        path.write_bytes(pickle.dumps(state, protocol=protocol))
        inventory = ckptscan.read_inventory(path)
        raw = path.read_bytes()
        tensors = {t.name: t for t in inventory.tensors}
        assert set(tensors) == set(state)
        for name, value in state.items():
            t = tensors[name]
            assert t.shape == tuple(value.shape) and t.nbytes == value.numel() * value.element_size()
            if protocol > 2:  # protocols 0-2 spell bytes as latin-1 text: not addressable
                assert raw[t.offset : t.offset + t.nbytes] == value.contiguous().numpy().tobytes()
        (finding,) = inventory.findings
        assert finding.severity is Severity.MEDIUM and finding.subject == "torch.storage._load_from_bytes"
        covered = sum(r.nbytes for r in inventory.regions) + sum(s.nbytes for s in inventory.storages)
        assert covered == path.stat().st_size or protocol == 2


def test_nested_storage_with_a_payload_is_critical(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    inner = payloads(marker)["reduce-protocol-2"]
    outer = b"\x80\x04\x8c\rtorch.storage\x8c\x10_load_from_bytes\x93C" + bytes([len(inner)]) + inner + b"\x85R."
    path = tmp_path / "evil.pkl"
    path.write_bytes(outer)
    result = ckptscan.scan(path)
    assert result.inventory is not None, result.error
    severities = {f.subject: f.severity for f in result.inventory.findings}
    assert severities["torch.storage._load_from_bytes"] is Severity.CRITICAL
    assert severities["posix.system"] is Severity.CRITICAL or severities.get("os.system") is Severity.CRITICAL
    assert not marker.exists()


def test_pickle_too_long_to_scan_is_unsafe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(unpickler_module, "MAX_BUILD_OPCODES", 10)
    monkeypatch.setattr(unpickler_module, "MAX_SCAN_OPCODES", 100)
    path = tmp_path / "long.pkl"
    path.write_bytes(b"\x80\x04]" + b"K\x01a" * 200 + b".")
    result = ckptscan.scan(path)
    assert result.error is not None and result.error.code == "limit-exceeded"
    assert [f.code for f in result.error.findings] == ["pickle-not-scanned"]
    assert run_cli(path, "--fail-on", "unsafe").code != 0


def test_npz_and_tar_member_names_that_escape(tmp_path: Path) -> None:
    np = pytest.importorskip("numpy")
    buffer = io.BytesIO()
    np.save(buffer, np.zeros(3))
    path = tmp_path / "evil.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("a.npy", buffer.getvalue())
        archive.writestr("../b.npy", buffer.getvalue())
    result = ckptscan.scan(path)
    assert result.inventory is not None, result.error
    assert [f.code for f in result.inventory.findings] == ["zip-unsafe-name"]
