"""liblsl's config for this process: its INFO lines off, unless the user configured liblsl.

    quiet_liblsl()                # before anything imports pylsl (rtdecode.cli's main does it)
    quiet_liblsl(link_only=True)  # demo and bench: also LSL discovery on this machine's link only
"""

from __future__ import annotations

import os
from pathlib import Path

_LSL_QUIET = "[log]\nlevel = -2\n"  # liblsl levels: -2 errors only (0 would print INFO lines)
_LSL_LINK = "\n[multicast]\nResolveScope = link\n"  # demo and bench: discovery on this machine's link


def quiet_liblsl(link_only: bool = False) -> str | None:
    """Turn liblsl's INFO lines off for this process and its children, unless the user
    configured liblsl (LSLAPICFG, ./lsl_api.cfg, ~/lsl_api/lsl_api.cfg, /etc/lsl_api/lsl_api.cfg:
    the files liblsl itself reads). Must run before pylsl loads liblsl; returns the file set."""
    if "LSLAPICFG" in os.environ:
        return None
    user_files = ("lsl_api.cfg", os.path.expanduser("~/lsl_api/lsl_api.cfg"), "/etc/lsl_api/lsl_api.cfg")
    if any(os.path.isfile(f) and os.access(f, os.R_OK) for f in user_files):
        return None
    content = _LSL_QUIET + (_LSL_LINK if link_only else "")
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rtdecode"
    path = base / ("lsl_api_link.cfg" if link_only else "lsl_api.cfg")
    try:
        if not (path.is_file() and path.read_text() == content):
            from ._fs import atomic_file

            with atomic_file(path, "w") as f:
                f.write(content)
    except OSError:  # no writable cache folder: keep liblsl's default log
        return None
    os.environ["LSLAPICFG"] = str(path)
    return str(path)
