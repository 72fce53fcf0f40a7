"""Provider file names turned into local names: no traversal, no device names, bounded, stable."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.security.filenames import MAX_BYTES, safe_filename


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("ifta-detail-123-0.csv", "ifta-detail-123-0.csv"),
        ("../../etc/cron.d/evil", "evil"),
        ("/etc/passwd", "passwd"),
        ("C:\\Windows\\System32\\drivers.csv", "drivers.csv"),
        ("..\\..\\boot.ini", "boot.ini"),
        ("a\x00b\x01c\x7f.csv", "abc.csv"),
        ("line\nbreak\r.csv", "linebreak.csv"),
        ("\u202egnp.exe", "gnp.exe"),  # right-to-left override
        (".bashrc", "bashrc"),
        ("...hidden.csv", "hidden.csv"),
        ("report.csv. . .", "report.csv"),
        ("  padded.csv  ", "padded.csv"),
        ('what?<>:"|*.csv', "what_______.csv"),
        ("CON", "_CON"),
        ("con.csv", "_con.csv"),
        ("NUL.tar.gz", "_NUL.tar"),
        ("AUX.2026.11.csv", "_AUX.2026.11.csv"),  # reserved whatever follows the first dot
        ("output-001.csv.gz", "output-001.csv"),
        ("a.csv.gz. ", "a.csv"),
        ("COM1.txt", "_COM1.txt"),
        ("lpt9", "_lpt9"),
        ("CON .csv", "_CON .csv"),
        ("COM\u00b9.log", "_COM\u00b9.log"),
        ("console.csv", "console.csv"),
        ("e\u0301te\u0301.csv", "\u00e9t\u00e9.csv"),  # NFC
    ],
)
def test_examples(name: str, expected: str) -> None:
    assert safe_filename(name, fallback="file-0001") == expected


@pytest.mark.parametrize("name", ["", ".", "..", "...", "/", "a/", "\\", "\x00\x01", " . ", "dir/..", "\u200b"])
def test_nothing_left_gives_the_fallback(name: str) -> None:
    assert safe_filename(name, fallback="job-0-0003") == "job-0-0003"


def test_the_fallback_is_made_safe_too() -> None:
    assert safe_filename("..", fallback="../x") == "x"
    with pytest.raises(ValueError):
        safe_filename("..", fallback="..")


def test_long_names_are_cut_to_the_byte_limit_keeping_the_extension() -> None:
    out = safe_filename("x" * 400 + ".csv", fallback="f")
    assert out.endswith(".csv") and len(out.encode()) == MAX_BYTES
    wide = safe_filename("\u00e9" * 200 + ".csv", fallback="f")  # 2 bytes per character
    assert wide.endswith(".csv") and len(wide.encode()) <= MAX_BYTES
    assert wide.encode().decode() == wide  # never a split character
    no_ext = safe_filename("y" * 300, fallback="f")
    assert no_ext == "y" * MAX_BYTES


@settings(max_examples=1000, deadline=None)
@given(name=st.text(), fallback=st.text(alphabet="abc-_0123456789", min_size=1, max_size=20))
def test_property_safe_bounded_and_idempotent(name: str, fallback: str) -> None:
    out = safe_filename(name, fallback=fallback)
    assert out and out not in (".", "..")
    assert "/" not in out and "\\" not in out and "\x00" not in out
    assert not out.startswith(".")
    assert len(out.encode("utf-8")) <= MAX_BYTES
    assert safe_filename(out, fallback=fallback) == out


@settings(max_examples=300, deadline=None)
@given(parts=st.lists(st.sampled_from(["..", ".", "", "a", "CON", "x.csv", "\x00", " "]), max_size=6))
def test_property_path_like_names_never_escape(parts: list[str]) -> None:
    for separator in ("/", "\\"):
        out = safe_filename(separator.join(parts), fallback="fallback")
        assert "/" not in out and "\\" not in out and not out.startswith(".")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("x" * 200 + ".tar.bz2", "x" * (MAX_BYTES - 4) + ".bz2"),  # only the last extension is kept
        ("x" * 200 + "." + "e" * 16, "x" * (MAX_BYTES - 17) + "." + "e" * 16),  # 16 bytes is still an extension
        ("x" * 200 + "." + "e" * 17, ("x" * 200 + "." + "e" * 17)[:MAX_BYTES]),  # 17 is not
        ("x" * 145 + "....." + "y" * 50 + ".csv", "x" * 145 + ".csv"),  # no dots left where the stem was cut
        ("x" * 149 + " " + "y" * 50, "x" * 149),
        ("a" + "\u00e9" * 100, "a" + "\u00e9" * 74),  # the cut falls inside a character: that character goes
    ],
)
def test_long_names_are_cut_at_the_right_place(name: str, expected: str) -> None:
    assert safe_filename(name, fallback="f") == expected


def test_a_deep_path_keeps_only_its_last_component() -> None:
    assert safe_filename("/".join(f"d{i}" for i in range(20)) + "/report.csv", fallback="f") == "report.csv"


@pytest.mark.parametrize("name", ["CONX.csv", "CON\u00a0.csv", "CON1.csv", "LPT10", "AUXILIARY.txt"])
def test_names_that_only_resemble_device_names_are_kept(name: str) -> None:
    assert safe_filename(name, fallback="f") == name


def test_an_unusable_fallback_is_named_in_the_error() -> None:
    with pytest.raises(ValueError, match=r"fallback file name '\.\./\.\.' is not usable either"):
        safe_filename("", fallback="../..")
