"""Writing result files whole or not at all, and JSON that any reader can parse."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write `data` to a temporary file beside `path`, then rename it over `path`: a crash
    never leaves half a file, and an existing one stays whole until the new one is complete.
    Creates the parent folder; the file gets the usual permissions (umask), not mkstemp's
    private 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def json_safe(value: Any) -> Any:
    """A copy of `value` that strict JSON (json.dumps(allow_nan=False)) accepts: non-finite
    floats become None, tuples lists, keys strings, tensors and NumPy values plain Python,
    anything else its str()."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "tolist"):  # torch.Tensor, numpy array or scalar
        return json_safe(value.tolist())
    return str(value)


def json_text(value: Any, indent: int | None = 2) -> str:
    """`value` as strict JSON text (see json_safe)."""
    return json.dumps(json_safe(value), indent=indent, allow_nan=False)


def write_json(path: str | os.PathLike, value: Any, indent: int | None = 2) -> Path:
    """Write `value` as strict JSON, atomically, with a final newline."""
    return write_atomic(path, json_text(value, indent) + "\n")


def write_jsonl(path: str | os.PathLike, records: Iterable[dict[str, Any]]) -> Path:
    """Write `records` as JSON Lines (one compact object a line), atomically. The records
    must be JSON-ready already (host numbers, non-finite floats as None): they are not
    copied through json_safe, so a long history costs one json.dumps per record; a NaN that
    slipped through is a ValueError, never a line a strict reader rejects."""
    return write_atomic(path, "".join(json.dumps(r, allow_nan=False) + "\n" for r in records))


# A probe this big takes a block on any file system, so a full disk fails it here (ENOSPC)
# rather than after the work is done.
_PROBE_BYTES = 4096


def ensure_writable_dir(path: str | os.PathLike, flag: str = "--out") -> Path:
    """Create the folder `path` if needed and prove that a file can be written there, before
    any work starts: a path under a regular file, a read-only or a full disk is a one-line
    UsageError naming `flag`, instead of a traceback once the results exist."""
    from babysit.errors import UsageError

    folder = Path(path).expanduser()
    blocker = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        where = "" if blocker == folder else f" is under {str(blocker)!r}, which"
        raise UsageError(
            f"{flag} {str(path)!r}{where} is a file, not a directory; give a directory"
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".babysit-probe.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(b"\0" * _PROBE_BYTES)
                f.flush()
                os.fsync(f.fileno())
        finally:
            Path(probe).unlink(missing_ok=True)
    except OSError as e:
        raise UsageError(
            f"{flag} {str(path)!r} is not writable ({e.strerror or e}): choose a folder you "
            f"can write to, on a disk with free space"
        ) from None
    return folder
