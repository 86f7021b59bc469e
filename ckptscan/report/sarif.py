"""SARIF 2.1.0 output (``--format sarif``) for code-scanning dashboards and CI annotations.

A pure renderer: it receives, per scanned file, its findings and its read error (if any) and
returns the SARIF log as a dict. One result per finding: ``ruleId`` is the finding's code
(``unsafe-global``, ``zip-unsafe-name``...), ``level`` follows the severity (critical/high:
error, medium: warning, low/info: note), the location is the file (a relative URI) plus, as a
logical location, where in the file (``archive/data.pkl byte 12``). A file that could not be read
is a result of rule ``read-error``. Each rule carries a ``security-severity`` property, which
GitHub code scanning uses to rank alerts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from ckptscan.inventory import Finding, Severity

SARIF_VERSION = "2.1.0"
SARIF_SCHEMA = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
INFORMATION_URI = "https://github.com/ckptscan/ckptscan"

_LEVEL = {
    Severity.CRITICAL: "error",
    Severity.HIGH: "error",
    Severity.MEDIUM: "warning",
    Severity.LOW: "note",
    Severity.INFO: "note",
}
_SECURITY_SEVERITY = {
    Severity.CRITICAL: "9.5",
    Severity.HIGH: "8.0",
    Severity.MEDIUM: "5.0",
    Severity.LOW: "2.0",
    Severity.INFO: "0.0",
}
_RULE_TEXT = {
    "unsafe-global": "A pickle imports a callable that can run code, reach files or the network when loaded",
    "unknown-global": "A pickle imports something outside the tensor allowlist, which loading would import",
    "zip-unsafe-name": "An archive member name escapes its folder or hides characters",
    "torchscript-code": "A TorchScript archive carries code that torch.jit.load would compile",
    "pickle-unreadable": "A pickle member could not be read whole",
    "pickle-trailing-data": "Bytes after a pickle's STOP opcode",
    "read-error": "The file could not be read (malformed, truncated or over a limit)",
}


@dataclass(frozen=True, slots=True)
class SarifFile:
    """One scanned file (or model) as the SARIF renderer sees it."""

    path: str
    findings: Sequence[Finding] = ()
    error_code: str = ""
    error_message: str = ""


def document(files: Iterable[SarifFile], *, version: str, base: str | None = None) -> dict[str, Any]:
    """The SARIF log of one run; ``base`` (a folder) makes the URIs relative to it."""
    rules: dict[str, dict[str, Any]] = {}
    results: list[dict[str, Any]] = []
    for item in files:
        uri = _uri(item.path, base)
        for finding in item.findings:
            _rule(rules, finding.code, finding.severity)
            results.append(
                _result(finding.code, finding.severity, finding.message, uri, finding.where, finding.subject)
            )
        if item.error_code:
            _rule(rules, "read-error", Severity.HIGH)
            message = f"[{item.error_code}] {item.error_message}"
            results.append(_result("read-error", Severity.HIGH, message, uri, "", ""))
    ordered = sorted(rules)
    index = {rule_id: i for i, rule_id in enumerate(ordered)}
    for result in results:
        result["ruleIndex"] = index[result["ruleId"]]
    return {
        "$schema": SARIF_SCHEMA,
        "version": SARIF_VERSION,
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "ckptscan",
                        "version": version,
                        "informationUri": INFORMATION_URI,
                        "rules": [rules[r] for r in ordered],
                    }
                },
                "results": results,
            }
        ],
    }


def _rule(rules: dict[str, dict[str, Any]], rule_id: str, severity: Severity) -> None:
    rule = rules.get(rule_id)
    if rule is None:
        rule = {
            "id": rule_id,
            "name": "".join(part.capitalize() for part in rule_id.split("-")),
            "shortDescription": {"text": _RULE_TEXT.get(rule_id, rule_id.replace("-", " "))},
            "defaultConfiguration": {"level": _LEVEL[severity]},
            "properties": {"security-severity": _SECURITY_SEVERITY[severity], "tags": ["security"]},
        }
        rules[rule_id] = rule
    elif float(rule["properties"]["security-severity"]) < float(_SECURITY_SEVERITY[severity]):
        # a rule's default is its worst use in this run
        rule["properties"]["security-severity"] = _SECURITY_SEVERITY[severity]
        rule["defaultConfiguration"]["level"] = _LEVEL[severity]


def _result(rule_id: str, severity: Severity, message: str, uri: str, where: str, subject: str) -> dict[str, Any]:
    location: dict[str, Any] = {"physicalLocation": {"artifactLocation": {"uri": uri}}}
    if where:
        location["logicalLocations"] = [{"fullyQualifiedName": where, "kind": "member"}]
    result: dict[str, Any] = {
        "ruleId": rule_id,
        "level": _LEVEL[severity],
        "message": {"text": message},
        "locations": [location],
        "properties": {"severity": severity.value},
    }
    if subject:
        result["properties"]["subject"] = subject
    return result


def _uri(path: str, base: str | None) -> str:
    """A relative URI with forward slashes (what code-scanning uploads expect); unsafe characters escaped."""
    from urllib.parse import quote

    pure = PurePath(path)
    if base is not None:
        with contextlib.suppress(ValueError):  # outside the base: kept as given
            pure = pure.relative_to(base)
    return quote(pure.as_posix(), safe="/._-~")
