"""Atomic writes that honour the user's umask.

`tempfile.mkstemp`/`mkdtemp` create 0600 files and 0700 folders whatever the umask, so
a bundle or recording renamed into place from one of them cannot be read by other
accounts on a shared acquisition PC. These helpers create the temporary file or folder
with `os.open(..., 0o666)` / `os.mkdir(..., 0o777)`, so the kernel applies the umask
exactly as for a plain `open(path, "w")`, and then rename it into place.

    with atomic_path(out / "rec.npz") as tmp:   # a path to write (by name), renamed on success
        np.savez(tmp, ...)
    with atomic_file(out / "x.bin") as f:        # an open binary file, renamed on success
        f.write(data)
    tmp = make_temp_dir(out.parent, prefix=".bundle.")  # a folder to fill, then os.replace it
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import IO, Iterator


def _temp_name(parent: Path, prefix: str, suffix: str) -> Path:
    return parent / f"{prefix}{secrets.token_hex(6)}{suffix}"


def make_temp_file(parent: str | Path, prefix: str = ".tmp.", suffix: str = ".tmp") -> Path:
    """Create a new empty file in `parent` (mode 0666 minus the umask) and return its path."""
    parent = Path(parent)
    for _ in range(100):
        p = _temp_name(parent, prefix, suffix)
        try:
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return p
    raise FileExistsError(f"could not create a temporary file in {parent}")  # pragma: no cover


def make_temp_dir(parent: str | Path, prefix: str = ".tmp.") -> Path:
    """Create a new empty folder in `parent` (mode 0777 minus the umask) and return its path."""
    parent = Path(parent)
    for _ in range(100):
        p = _temp_name(parent, prefix, "")
        try:
            os.mkdir(p, 0o777)
        except FileExistsError:
            continue
        return p
    raise FileExistsError(f"could not create a temporary folder in {parent}")  # pragma: no cover


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success it replaces `path`, on error it is removed.

    The file exists (empty, umask permissions) when the block starts: writers that open it
    by name with truncation keep those permissions."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_file(path.parent, prefix=f".{path.name}.", suffix=suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    """An open file that becomes `path` when the block ends without an error."""
    with atomic_path(path) as tmp:
        with open(tmp, mode) as f:
            yield f
