"""Provider file names become local file names only through :func:`safe_filename`."""

from __future__ import annotations

import re
import unicodedata

MAX_BYTES = 150
RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}
UNSAFE = re.compile(r'[\x00-\x1f\x7f<>:"|?*]')


def _truncate(name: str) -> str:
    """Cut to MAX_BYTES of UTF-8, keeping a short extension and never splitting a character."""
    if len(name.encode()) <= MAX_BYTES:
        return name
    stem, dot, ext = name.rpartition(".")
    if not dot or len(ext.encode()) > 16:
        stem, ext = name, ""
    budget = MAX_BYTES - (len(ext.encode()) + 1 if ext else 0)
    cut = stem.encode()[:budget].decode(errors="ignore").rstrip(" .")
    return f"{cut}.{ext}" if ext else cut


def safe_filename(name: str, *, fallback: str) -> str:
    """The last path component of ``name``, stripped of anything a filesystem could misread."""
    name = unicodedata.normalize("NFC", name).replace("\\", "/").rsplit("/", 1)[-1]
    name = UNSAFE.sub("_", name).strip().lstrip(".").rstrip(" .")
    name = _truncate(name)
    if name.split(".", 1)[0].upper() in RESERVED:
        name = f"_{name}"
    return name or fallback
