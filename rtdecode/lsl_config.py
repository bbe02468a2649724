"""liblsl's config for this process: its INFO lines off, unless the user configured liblsl.

    quiet_liblsl()                # before anything imports pylsl (rtdecode.cli's main does it)
    quiet_liblsl(link_only=True)  # demo and bench: also LSL discovery on this machine's link only
"""

from __future__ import annotations

import os
from pathlib import Path

# liblsl levels: -3 fatal only, -2 errors too (0 would print INFO lines). rtdecode says every
# stream event itself (lost, back, gaps, clock resets), so by default liblsl prints only fatal
# errors: its "ERR| Stream transmission broke off" at every normal end of a stream reads as a
# failure; with -v (verbose) its errors are shown as well.
_LSL_QUIET = "[log]\nlevel = -3\n"
_LSL_ERRORS = "[log]\nlevel = -2\n"
_LSL_LINK = "\n[multicast]\nResolveScope = link\n"  # demo and bench: discovery on this machine's link


def quiet_liblsl(link_only: bool = False, verbose: bool = False) -> str | None:
    """Turn liblsl's log lines off for this process and its children (all but fatal ones; with
    `verbose`, its errors too are kept), unless the user configured liblsl (LSLAPICFG,
    ./lsl_api.cfg, ~/lsl_api/lsl_api.cfg, /etc/lsl_api/lsl_api.cfg: the files liblsl itself
    reads). Must run before pylsl loads liblsl; returns the file set."""
    if "LSLAPICFG" in os.environ:
        return None
    user_files = ("lsl_api.cfg", os.path.expanduser("~/lsl_api/lsl_api.cfg"), "/etc/lsl_api/lsl_api.cfg")
    if any(os.path.isfile(f) and os.access(f, os.R_OK) for f in user_files):
        return None
    content = (_LSL_ERRORS if verbose else _LSL_QUIET) + (_LSL_LINK if link_only else "")
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rtdecode"
    path = base / (("lsl_api_link" if link_only else "lsl_api") + ("_errors" if verbose else "") + ".cfg")
    try:
        if not (path.is_file() and path.read_text() == content):
            from ._fs import atomic_file

            with atomic_file(path, "w") as f:
                f.write(content)
    except OSError:  # no writable cache folder: keep liblsl's default log
        return None
    os.environ["LSLAPICFG"] = str(path)
    return str(path)
