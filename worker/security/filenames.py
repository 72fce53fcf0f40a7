"""Provider file names become local file names only through :func:`safe_filename`.

A file name in a provider response is untrusted: ``../../etc/cron.d/x``, ``C:\\evil``, ``CON.csv``,
names with NUL or control characters, or 10 KB of text must all become one harmless name inside
the output directory, the same on Linux, macOS and Windows.
"""

from __future__ import annotations

import re
import unicodedata

MAX_BYTES = 150
"""UTF-8 bytes; leaves room for suffixes such as ``.quarantine.jsonl`` under the usual 255."""
_MAX_EXTENSION_BYTES = 16
_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"}
    | {f"{device}{n}" for device in ("COM", "LPT") for n in (*"0123456789", "\u00b9", "\u00b2", "\u00b3")}
)
"""Windows device names; reserved with any extension (``nul.txt``) and trailing spaces (``CON .csv``)."""
_WINDOWS_UNSAFE = re.compile(r'[<>:"|?*]')
_DROPPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
"""Control, format (bidi overrides, zero-width), lone surrogates, line/paragraph separators."""
_EDGES = re.compile(r"^[\s.]+|[\s.]+$")


def safe_filename(name: str, *, fallback: str) -> str:
    """The last path component of ``name`` made safe; ``fallback`` (made safe too) if nothing is left.

    A ``.gz`` suffix is dropped: gzip files are decompressed while they download, so the output
    holds the parsed rows, never gzip. Idempotent:
    ``safe_filename(safe_filename(x, fallback=f), fallback=f)`` is the same name.
    """
    cleaned = _clean(name)
    if cleaned:
        return cleaned
    cleaned = _clean(fallback)
    if not cleaned:
        raise ValueError(f"fallback file name {fallback!r} is not usable either")
    return cleaned


def _drop_compression(name: str) -> str:
    while name.lower().endswith(".gz"):
        name = name[: -len(".gz")]
    return name


def _clean(name: str) -> str:
    # Every step only removes or replaces characters (or adds the one "_" of a device name), so
    # repeating converges quickly; repeating until nothing changes is what makes it idempotent.
    for _ in range(8):
        cleaned = _clean_once(name)
        if cleaned == name:
            return cleaned
        name = cleaned
    raise AssertionError(f"file name cleaning did not converge for {name!r}")  # pragma: no cover


def _clean_once(name: str) -> str:
    name = "".join(ch for ch in name if unicodedata.category(ch) not in _DROPPED_CATEGORIES)
    name = unicodedata.normalize("NFC", name)
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = _WINDOWS_UNSAFE.sub("_", name)
    name = _drop_compression(_EDGES.sub("", name))
    name = _truncate(name)
    if name.split(".", 1)[0].rstrip(" ").upper() in _RESERVED:
        name = "_" + name
    return name


def _truncate(name: str) -> str:
    """Cut to ``MAX_BYTES`` of UTF-8, keeping a short extension and never splitting a character."""
    encoded = name.encode("utf-8")
    if len(encoded) <= MAX_BYTES:
        return name
    stem, dot, extension = name.rpartition(".")
    if not dot or not stem or len(extension.encode("utf-8")) > _MAX_EXTENSION_BYTES:
        stem, extension = name, ""
    suffix = f".{extension}" if extension else ""
    budget = MAX_BYTES - len(suffix.encode("utf-8"))
    stem = stem.encode("utf-8")[:budget].decode("utf-8", "ignore")
    return _EDGES.sub("", stem) + suffix
