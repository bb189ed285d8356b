"""On-disk cache of coefficient tables as plain ``.npy`` float64 arrays (never pickled).

The directory is ``$EQUITP_CACHE_DIR`` when set, else ``$XDG_CACHE_HOME/equitp``, else ``~/.cache/equitp``;
tables live under a versioned sub-folder so a change of format never reads stale files. Every failure to read or
write (read-only home, full disk, corrupt file) is silent: the caller recomputes in memory.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable, Optional, Tuple

import numpy as np

__all__: list = []

_FORMAT_VERSION = "so3-v1"


def cache_dir() -> Path:
    """The root cache directory (not created)."""
    root = os.environ.get("EQUITP_CACHE_DIR")
    if root:
        return Path(root).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "equitp"
    return Path.home() / ".cache" / "equitp"


def _table_path(kind: str, name: str) -> Path:
    return cache_dir() / _FORMAT_VERSION / kind / f"{name}.npy"


def load_table(kind: str, name: str, shape: Tuple[int, ...]) -> Optional[np.ndarray]:
    """Load a float64 table of the given shape, or return None if absent, unreadable or malformed."""
    try:
        path = _table_path(kind, name)
        if not path.is_file():
            return None
        arr = np.load(path, allow_pickle=False)
    except Exception:  # noqa: BLE001 - any failure means "not cached"
        return None
    if arr.dtype != np.float64 or arr.shape != tuple(shape) or not np.all(np.isfinite(arr)):
        return None
    return arr


def save_table(kind: str, name: str, arr: np.ndarray) -> None:
    """Write ``arr`` atomically (temporary file + rename); do nothing if the directory is not writable."""
    try:
        path = _table_path(kind, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{name}.", suffix=".npy.tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.save(f, np.ascontiguousarray(arr, dtype=np.float64), allow_pickle=False)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except Exception:  # noqa: BLE001 - caching is best effort
        return


def cached_table(kind: str, name: str, shape: Tuple[int, ...], compute: Callable[[], np.ndarray]) -> np.ndarray:
    """Return the table from disk if present, else compute it, try to store it, and return it."""
    arr = load_table(kind, name, shape)
    if arr is None:
        arr = np.ascontiguousarray(compute(), dtype=np.float64)
        if arr.shape != tuple(shape):  # pragma: no cover - internal consistency
            raise RuntimeError(f"internal error: table {kind}/{name} has shape {arr.shape}, expected {shape}")
        save_table(kind, name, arr)
    return arr
