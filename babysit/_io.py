"""Writing result files whole or not at all."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


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
