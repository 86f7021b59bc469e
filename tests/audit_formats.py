"""Hostile test-only formats for the audit's time limit and crash handling.

``install()`` registers two formats in ``ckptscan.registry.FORMATS``: files starting with ``HANG!``
make their reader sleep for ten minutes, files starting with ``CRASH!`` kill the process reading
them. Forked audit workers inherit the registration. Nothing in ``ckptscan/`` knows about them.
"""

from __future__ import annotations

import os
import signal
import time

from ckptscan import registry
from ckptscan.inventory import Inventory
from ckptscan.source import Head, Source

HANG = b"HANG!"
CRASH = b"CRASH!"


def sniff(head: Head) -> bool:
    return head.startswith(HANG) or head.startswith(CRASH)


def read(source: Source) -> Inventory:
    if source.head().startswith(CRASH):
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(600)
    raise AssertionError("the audit's time limit should have stopped this reader")


SPEC = registry.FormatSpec("test-hostile", __name__, (".hostile",), "test-only hostile format")


def install() -> tuple[registry.FormatSpec, ...]:
    """Register the format; returns the previous FORMATS for restoring."""
    previous = registry.FORMATS
    registry.FORMATS = (*previous, SPEC)
    return previous
