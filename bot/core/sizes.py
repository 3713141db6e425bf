"""Memory sizes as people write them: `24GiB`, `8GB`, `7.5 GiB`, `512MiB`, or plain bytes."""

from __future__ import annotations

import re

UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_bytes(text: str) -> int:
    """`24GiB` -> 25769803776; ValueError naming the accepted forms otherwise."""
    found = _SIZE.match(text)
    unit = found.group(2).lower() if found else ""
    if not found or unit not in UNITS:
        raise ValueError(f"not a memory size: {text!r} (write it like 24GiB, 8GB or 512MiB)")
    return int(float(found.group(1)) * UNITS[unit])


def gib(n: float) -> str:
    """Bytes as GiB with one decimal: `7.2 GiB`."""
    return f"{n / 2**30:.1f} GiB"
