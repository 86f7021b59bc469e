"""Print, as JSON, the dangerous globals picklescan, modelscan and ModelAudit flag: [[scanner, module, name]].

Run with the Python that has the peers installed (the ``security-bench`` extra); used by
tests/test_pickle_security.py to check that ckptscan's table covers theirs, and by
tools/bench_security.py. Reads their published tables; copies none of their code.
"""

import json
import sys


def main() -> None:
    from modelaudit.detectors import suspicious_symbols as modelaudit_symbols
    from modelscan.settings import DEFAULT_SETTINGS
    from picklescan import scanner as picklescan_scanner

    out: list[list[str]] = []

    def add(source: str, module: str, names: object) -> None:
        if isinstance(names, str):
            out.append([source, module, names])
        else:
            for name in names:  # type: ignore[attr-defined]
                out.append([source, module, name])

    for module, names in picklescan_scanner._unsafe_globals.items():
        add("picklescan", module, names)
    for table in DEFAULT_SETTINGS["unsafe_globals"].values():
        for module, names in table.items():
            add("modelscan", module, names)
    for module, names in modelaudit_symbols.SUSPICIOUS_GLOBALS.items():
        add("modelaudit", module, names)
    for name in modelaudit_symbols.DANGEROUS_BUILTINS:
        add("modelaudit", "builtins", name)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
