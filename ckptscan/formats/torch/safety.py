"""Which globals in a pickle are dangerous, and how much.

A pickle can call any importable callable while it is loaded. This table covers at least what the
common scanners flag (picklescan's unsafe globals, modelscan's severity lists, fickling's unsafe
imports), written from their documented behaviour, organised by what the callable can do:

* CRITICAL: runs code or commands (``os.system``, ``subprocess.*``, ``builtins.eval``/``exec``/
  ``compile``/``__import__``, ``runpy``, ``pty``, ``ctypes``, nested unpicklers such as
  ``pickle.loads`` or ``torch.load``, code objects, debuggers and profilers that take code strings).
* HIGH: reaches outside the process or lets a pickle compose arbitrary calls (``builtins.getattr``/
  ``open``, ``shutil``, ``socket``, ``webbrowser``, HTTP clients, ``importlib``, ``operator.attrgetter``,
  ``functools.partial``, file and archive modules).

Peers' lists, which this table must cover (tests/test_pickle_security.py checks it against the
installed scanners when they are present):

* picklescan 1.0.5 ``_unsafe_globals``: builtins, ``os``/``posix``/``nt``, ``subprocess``, ``runpy``,
  ``pty``, ``ctypes``, ``pickle``, ``pdb``/``bdb``, ``cProfile``/``profile``/``timeit``/``trace``,
  ``pydoc``, ``pip``/``ensurepip``/``venv``, network modules, ``operator`` getters,
  ``functools.partial``, ``cloudpickle`` function builders, ``types.CodeType``, ``numpy.f2py``,
  ``numpy.testing._private.utils``, ``idlelib``/``lib2to3``/``doctest`` code runners,
  ``pkgutil.resolve_name``, ``test``, ``uuid``, ``_osx_support``/``_aix_support``/``_pyrepl`` and
  the torch internals that run code or nested pickles (``torch._inductor.codecache``,
  ``torch.utils.collect_env``, ``torch.utils.bottleneck``, ``torch.jit.unsupported_tensor_ops``...).
* modelscan 0.8 ``unsafe_globals`` (CRITICAL/HIGH): a subset of the above plus ``aiohttp.client``,
  ``requests.api``, ``httplib``.
* ModelAudit 0.2 ``SUSPICIOUS_GLOBALS``/``DANGEROUS_BUILTINS``: adds ``base64``/``codecs`` decoders
  (payload staging), ``concurrent.futures`` executors, ``zipimport``, ``compileall``/``py_compile``,
  ``faulthandler`` crashers, ``resource.setrlimit``, ``copyreg`` extension edits, ``filecmp``,
  ``pexpect``, ``select``/``selectors``/``syslog``/``_signal``/``_sqlite3``, ``ntpath``/``posixpath``,
  ``nntplib``.

Beyond all three, the principled rule: any global outside the tensor allowlist is at least
MEDIUM (``unknown-global``), since loading the file imports it.

A name matches when its top-level module is listed, when a listed prefix of ``module.name``
matches (``torch.load``), or when any dotted part of the name is a listed module: protocol 4
resolves dotted names attribute by attribute, so ``numpy.testing._private.utils`` + ``os.system``
is ``os.system``. Inside the module path, parts that are unmistakably stdlib modules (``os``,
``subprocess``, ``pickle``...) match too; common words (``code``, ``profile``) only match at the
top. Python 2 spellings (``__builtin__``, ``__builtins__``) are the same as ``builtins``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ckptscan.inventory import Finding, Severity

_CRITICAL, _HIGH = Severity.CRITICAL, Severity.HIGH

# modules whose every member is dangerous; a dotted part equal to one of these matches too
_DANGEROUS_MODULES: dict[str, Severity] = {
    "os": _CRITICAL, "posix": _CRITICAL, "nt": _CRITICAL, "subprocess": _CRITICAL,
    "_posixsubprocess": _CRITICAL, "pty": _CRITICAL, "runpy": _CRITICAL, "commands": _CRITICAL,
    "popen2": _CRITICAL, "ctypes": _CRITICAL, "_ctypes": _CRITICAL, "code": _CRITICAL, "codeop": _CRITICAL,
    "cProfile": _CRITICAL, "profile": _CRITICAL, "pdb": _CRITICAL, "bdb": _CRITICAL, "trace": _CRITICAL,
    "timeit": _CRITICAL, "multiprocessing": _CRITICAL, "_winapi": _CRITICAL, "pydoc": _CRITICAL,
    "sys": _CRITICAL, "importlib": _CRITICAL, "imp": _CRITICAL, "marshal": _CRITICAL, "_thread": _CRITICAL,
    "threading": _HIGH, "asyncio": _CRITICAL, "platform": _HIGH, "signal": _HIGH,
    "pickle": _CRITICAL, "_pickle": _CRITICAL, "cPickle": _CRITICAL, "dill": _CRITICAL,
    "cloudpickle": _CRITICAL, "joblib": _CRITICAL, "shelve": _CRITICAL, "jsonpickle": _CRITICAL,
    "pip": _CRITICAL, "ensurepip": _CRITICAL, "venv": _CRITICAL, "distutils": _CRITICAL,
    "setuptools": _CRITICAL, "sysconfig": _HIGH,
    "shutil": _HIGH, "socket": _HIGH, "_socket": _HIGH, "ssl": _HIGH, "webbrowser": _HIGH,
    "http": _HIGH, "httplib": _HIGH, "urllib": _HIGH, "urllib2": _HIGH, "requests": _HIGH,
    "aiohttp": _HIGH, "httpx": _HIGH, "ftplib": _HIGH, "smtplib": _HIGH, "telnetlib": _HIGH,
    "poplib": _HIGH, "imaplib": _HIGH, "xmlrpc": _HIGH, "socketserver": _HIGH, "tempfile": _HIGH,
    "glob": _HIGH, "zipfile": _HIGH, "tarfile": _HIGH, "fileinput": _HIGH, "io": _HIGH, "_io": _HIGH,
    "pathlib": _HIGH, "linecache": _HIGH, "mmap": _HIGH, "sqlite3": _HIGH, "dbm": _HIGH,
    "logging": _HIGH, "operator": _HIGH, "_operator": _HIGH, "functools": _HIGH, "_functools": _HIGH,
    "types": _CRITICAL, "inspect": _HIGH, "gc": _HIGH, "weakref": _HIGH, "atexit": _HIGH,
    # picklescan
    "test": _CRITICAL, "uuid": _HIGH, "_osx_support": _CRITICAL, "_aix_support": _CRITICAL,
    "_pyrepl": _CRITICAL, "idlelib": _CRITICAL, "lib2to3": _HIGH, "doctest": _CRITICAL,
    # ModelAudit
    "zipimport": _CRITICAL, "compileall": _CRITICAL, "py_compile": _CRITICAL, "pexpect": _CRITICAL,
    "nntplib": _HIGH, "filecmp": _HIGH, "select": _HIGH, "selectors": _HIGH, "syslog": _HIGH,
    "_signal": _HIGH, "_sqlite3": _HIGH, "ntpath": _HIGH, "posixpath": _HIGH, "faulthandler": _HIGH,
    "resource": _HIGH, "base64": _HIGH, "binascii": _HIGH, "codecs": _HIGH, "concurrent": _HIGH,
    "pkgutil": _CRITICAL, "zlib": _HIGH, "bz2": _HIGH, "lzma": _HIGH,
}  # fmt: skip

# builtins (any spelling) by name: what a pickle can reach without importing anything
_DANGEROUS_BUILTINS: dict[str, Severity] = {
    "eval": _CRITICAL, "exec": _CRITICAL, "execfile": _CRITICAL, "compile": _CRITICAL,
    "__import__": _CRITICAL, "breakpoint": _CRITICAL, "apply": _CRITICAL, "input": _CRITICAL,
    "reload": _CRITICAL, "getattr": _HIGH, "setattr": _HIGH, "delattr": _HIGH, "open": _HIGH,
    "file": _HIGH, "globals": _HIGH, "locals": _HIGH, "vars": _HIGH, "memoryview": _HIGH,
    "raw_input": _CRITICAL, "help": _HIGH, "exit": _HIGH, "quit": _HIGH, "print": _HIGH, "super": _HIGH, "type": _HIGH,
    "classmethod": _HIGH, "staticmethod": _HIGH, "property": _HIGH, "dir": _HIGH, "map": _HIGH,
    "filter": _HIGH, "__loader__": _CRITICAL, "__spec__": _HIGH, "__build_class__": _CRITICAL,
}  # fmt: skip
_BUILTIN_MODULES = frozenset({"builtins", "__builtin__", "__builtins__"})

# individual members of otherwise ordinary packages
_DANGEROUS_NAMES: dict[str, Severity] = {
    "torch.load": _CRITICAL, "torch.serialization.load": _CRITICAL, "torch.jit.load": _CRITICAL,
    "torch.hub.load": _CRITICAL, "torch.hub.load_state_dict_from_url": _CRITICAL,
    "torch.hub.download_url_to_file": _HIGH, "torch.storage._load_from_bytes": _CRITICAL,
    "torch.package.PackageImporter": _CRITICAL, "torch.utils.cpp_extension.load": _CRITICAL,
    "torch.utils.cpp_extension.load_inline": _CRITICAL, "torch.ops.load_library": _CRITICAL,
    "torch.classes.load_library": _CRITICAL, "torch._C._jit_pass_lower_all_tuples": _HIGH,
    "torch.fx.graph_module._deserialize_graph_module": _CRITICAL, "torch.compile": _HIGH,
    "numpy.load": _CRITICAL, "numpy.loadtxt": _HIGH, "numpy.fromfile": _HIGH, "numpy.save": _HIGH,
    "numpy.testing._private.utils.runstring": _CRITICAL, "numpy.f2py": _CRITICAL,
    "numpy.distutils": _CRITICAL, "numpy.lib.npyio.load": _CRITICAL,
    "pandas.read_pickle": _CRITICAL, "pandas.io.pickle.read_pickle": _CRITICAL,
    "keras.models.load_model": _CRITICAL, "tensorflow.io.read_file": _HIGH, "tensorflow.io.write_file": _HIGH,
    "IPython": _CRITICAL, "jinja2": _HIGH, "yaml.load": _CRITICAL, "yaml.unsafe_load": _CRITICAL,
    "copyreg._extension_registry": Severity.MEDIUM, "collections.defaultdict": Severity.MEDIUM,
    "torch._dynamo": _CRITICAL, "torch._inductor": _CRITICAL, "torch.distributed.rpc": _HIGH,
    "builtins.object.__reduce__": _HIGH,
    # picklescan: torch and numpy members that run code or load nested pickles
    "numpy.testing._private.utils": _CRITICAL, "torch._inductor.codecache": _CRITICAL,
    "torch.fx.experimental.symbolic_shapes": _CRITICAL, "torch.jit.unsupported_tensor_ops": _CRITICAL,
    "torch.utils._config_module": _CRITICAL, "torch.utils.bottleneck": _CRITICAL,
    "torch.utils.collect_env": _CRITICAL, "torch.utils.data.datapipes.utils.decoder": _CRITICAL,
    "torch._dynamo.guards": _CRITICAL, "copyreg.add_extension": _HIGH, "copyreg.remove_extension": _HIGH,
    "numpy.ctypeslib": _CRITICAL, "joblib.load": _CRITICAL, "tensorflow.keras.models.load_model": _CRITICAL,
}  # fmt: skip


def classify(module: str, name: str) -> Severity | None:
    """How dangerous ``module.name`` is, or None when nothing in the tables matches it."""
    module_parts = [p for p in module.split(".") if p]
    name_parts = [p for p in name.split(".") if p]
    parts = module_parts + name_parts
    worst: Severity | None = None

    def consider(severity: Severity | None) -> None:
        nonlocal worst
        if severity is not None and (worst is None or severity.rank > worst.rank):
            worst = severity

    for i, part in enumerate(parts):
        # a package's own submodule may share a common word (mypkg.code); a real import never
        # yields a stdlib module there, so only the top module and the attribute path count fully
        # the last part is an attribute of what precedes it (``torch.profiler.profile`` is a class)
        if i == 0 or len(module_parts) <= i < len(parts) - 1:
            consider(_DANGEROUS_MODULES.get(part))
        elif part in _UNAMBIGUOUS_MODULES:
            consider(_DANGEROUS_MODULES[part])
        if part in _BUILTIN_MODULES and i + 1 < len(parts):
            following = parts[i + 1]
            consider(_DANGEROUS_BUILTINS.get(following, _HIGH if following.startswith("__") else None))
        consider(_DANGEROUS_NAMES.get(".".join(parts[: i + 1])))
    if not module_parts and name_parts:
        consider(_DANGEROUS_BUILTINS.get(name_parts[0]))
    return worst


_UNAMBIGUOUS_MODULES = frozenset(
    {"os", "posix", "nt", "subprocess", "_posixsubprocess", "pty", "runpy", "ctypes", "importlib", "marshal",
     "pickle", "_pickle", "cPickle", "dill", "shutil", "socket", "webbrowser", "commands", "popen2"}
)  # fmt: skip

# Data classes of libraries whose own loader reads them safely (their module is otherwise listed):
# joblib writes numpy arrays as NumpyArrayWrapper records followed by the raw bytes.
SAFE_DATA_CLASSES = frozenset(
    {"joblib.numpy_pickle.NumpyArrayWrapper", "joblib.numpy_pickle_compat.NDArrayWrapper",
     "joblib.numpy_pickle_compat.ZNDArrayWrapper"}
)  # fmt: skip


def findings_for(uses: Iterable[tuple[str, Any]], *, kind: str = "pickle") -> list[Finding]:
    """One finding per distinct global outside the tensor allowlist, worst first.

    ``uses`` are (pickle label, :class:`~.unpickler.GlobalUse`) pairs. A global in the tables is
    ``unsafe-global`` at its severity; any other is ``unknown-global`` MEDIUM (loading the file
    imports it), INFO for TorchScript's own ``__torch__`` types, and LOW for allowlisted data
    classes of known libraries.
    """
    from ckptscan.formats.torch.rebuild import is_allowlisted

    findings: list[Finding] = []
    seen: set[str] = set()
    for label, use in uses:
        qualname = f"{use.module}.{use.name}"
        if qualname in seen or is_allowlisted(use.module, use.name):
            continue
        seen.add(qualname)
        where = f"{label} byte {use.first_offset}"
        shown = qualname.encode("unicode_escape").decode("ascii")
        severity = classify(use.module, use.name)
        if getattr(use, "vetted", None) is True:
            findings.append(
                Finding("unknown-global", Severity.MEDIUM, f"{kind} calls {shown} to load tensors saved as nested "
                        "torch checkpoints; each was scanned and names only storage classes (loading still runs "
                        "torch.load on them)", where, subject=shown)
            )  # fmt: skip
        elif qualname in SAFE_DATA_CLASSES:
            findings.append(
                Finding("unknown-global", Severity.LOW, f"{kind} names {shown}, a data record its library's "
                        "loader reads without running code", where, subject=shown)
            )  # fmt: skip
        elif severity is not None:
            findings.append(
                Finding("unsafe-global", severity, f"{kind} imports {shown}, which {describe(severity)}", where,
                        subject=shown)
            )  # fmt: skip
        else:
            torchscript = use.module.startswith("__torch__")
            findings.append(
                Finding(
                    "unknown-global",
                    Severity.INFO if torchscript else Severity.MEDIUM,
                    f"{kind} names {shown}, a TorchScript type" if torchscript else
                    f"{kind} imports {shown}, which loading would run (outside the tensor allowlist; "
                    "torch.load with weights_only=False would import it)",
                    where,
                    subject=shown,
                )
            )  # fmt: skip
    findings.sort(key=lambda f: -f.severity.rank)
    return findings


def describe(severity: Severity) -> str:
    if severity is Severity.CRITICAL:
        return "can run arbitrary code or commands when the file is loaded"
    if severity is Severity.HIGH:
        return "can reach files, the network or arbitrary attributes when the file is loaded"
    return "names something a plain checkpoint has no use for"
