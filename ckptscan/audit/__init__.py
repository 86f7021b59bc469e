"""Batch audits: every checkpoint under some folders, read in parallel, totalled across models.

    from ckptscan.audit import Audit, AuditOptions
    audit = Audit(["/data/checkpoints"], AuditOptions(timeout_s=30))
    for event in audit.events():   # Discovered, ModelDone, FileSkipped, Tick
        ...
    summary = audit.summary()      # the JSON ``audit`` section

See docs/audit.md for the discovery rules, grouping, deduplication and time limits.
"""

from ckptscan.audit.run import Audit, AuditOptions, Discovered, Event, FileSkipped, ModelDone, Progress

__all__ = ["Audit", "AuditOptions", "Discovered", "Event", "FileSkipped", "ModelDone", "Progress"]
