"""What an image key may be, and how a file name made from one stays in its folder.

An image key (EGD-CXR's and REFLACX's MIMIC ``dicom_id``) comes from a dataset table and becomes a
file name (``heatmaps/<key>.png``, ``panel_<key>.png``) and text in figures. So a key is checked
where a reader reads it (``check_key``), and every output path built from a key or a file name goes
through ``safe_child``, so that neither ``../../x`` nor a symlink can write outside the folder.

The rule (``KEY_RULE``): 1 to 128 characters from ``A-Z a-z 0-9 . _ -``, starting with a letter or
a digit. MIMIC-CXR dicom_ids (five hex groups joined by ``-``) fit it; so do the synthetic twin's.
No ``/`` or ``\\`` (a path), no ``..`` start (a parent folder), no ``$`` (matplotlib mathtext), no
spaces or control characters (log lines).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

KEY_RULE = "1-128 letters, digits, '.', '_' or '-', starting with a letter or digit"
_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
UNSAFE_KEY = "unsafe_key"  # the exclusion reason readers count a refused key under
_SHOWN = 40  # characters of a refused value quoted in a message


class UnsafeName(ValueError):
    """A key or file name that cannot be used as given (the message quotes it, shortened)."""


def shown(value: object) -> str:
    """``value``'s repr cut to a few dozen characters: a refused key is input, of any length."""
    text = repr(value)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def is_safe_key(key: object) -> bool:
    """True when ``key`` follows ``KEY_RULE``."""
    return isinstance(key, str) and _KEY.fullmatch(key) is not None


def check_key(key: object) -> str:
    """``key`` when it follows ``KEY_RULE``.

    Raises:
        UnsafeName: naming the rule and the (shortened) key.
    """
    if not is_safe_key(key):
        raise UnsafeName(f"image key {shown(key)} is not {KEY_RULE}")
    return key  # type: ignore[return-value]


def safe_child(folder: str | Path, name: str) -> Path:
    """``folder / name`` for a plain file name that stays in ``folder`` once symlinks resolve.

    Args:
        folder: the output folder.
        name: one path component (e.g. ``f"{key}.png"``), never a path.

    Raises:
        UnsafeName: ``name`` is empty, ``.`` / ``..``, holds a path separator or NUL, or the path
            (through a symlink already there) would leave ``folder``.
    """
    seps = {os.sep, os.altsep or os.sep, "\0"}
    if not name or name in (".", "..") or any(s in name for s in seps):
        raise UnsafeName(f"{shown(name)} is not a plain file name (output folder {folder})")
    folder = Path(folder)
    path = folder / name
    if path.resolve().parent != folder.resolve():
        raise UnsafeName(f"{path} leads outside {folder} (a symlink)")
    return path
