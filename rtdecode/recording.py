"""The project's own recording format: one .npz file (numpy arrays only, no pickle).

Keys: ``format`` ("rtdecode-recording"), ``version`` (int), ``data`` (n_samples, n_channels)
float32, ``sampling_rate`` (scalar), optional ``channel_names`` (str array),
``behavior`` (n_bins, n_outputs) float32, ``behavior_names``, ``behavior_rate``, and
``meta`` (a JSON string). Used by `rtdecode replay` and by the tests.

`load_any(path)` also reads what `rtdecode replay` plays from other tools: the LFP
ElectricalSeries of an NWB file (chosen by an `offline.data.nwb.NWBMapping`, as for training:
needs pynwb) and one numeric stream of an XDF file (needs pyxdf); both in the `replay` extra.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._fs import atomic_file

FORMAT = "rtdecode-recording"
VERSION = 1
FORMATS = "rtdecode recordings (.npz), NWB files (.nwb) and XDF files (.xdf, .xdfz)"
_MAGIC = {"npz": (b"PK\x03\x04", b"PK\x05\x06"), "nwb": (b"\x89HDF\r\n\x1a\n",), "xdf": (b"XDF:",), "xdfz": (b"\x1f\x8b",)}


class RecordingError(ValueError):
    """A recording file or value that cannot be used; the message names the file and field."""


@dataclass(frozen=True)
class Recording:
    data: np.ndarray  # (n_samples, n_channels) float32
    sampling_rate: float
    channel_names: list[str] | None = None
    behavior: np.ndarray | None = None  # (n_bins, n_outputs) float32, optional ground truth
    behavior_names: list[str] | None = None
    behavior_rate: float | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        set_ = object.__setattr__
        data = np.asarray(self.data)
        if data.ndim != 2 or data.shape[0] < 1 or data.shape[1] < 1:
            raise RecordingError(f"data must be (n_samples, n_channels) with both >= 1, got shape {data.shape}")
        if not np.issubdtype(data.dtype, np.number):
            raise RecordingError(f"data must be numeric, got dtype {data.dtype}")
        set_(self, "data", np.ascontiguousarray(data, dtype=np.float32))
        rate = float(self.sampling_rate)
        if not np.isfinite(rate) or rate <= 0:
            raise RecordingError(f"sampling_rate must be a positive number, got {self.sampling_rate!r}")
        set_(self, "sampling_rate", rate)
        if self.channel_names is not None:
            names = [str(n) for n in self.channel_names]
            if len(names) != data.shape[1]:
                raise RecordingError(f"{len(names)} channel_names for {data.shape[1]} channels")
            set_(self, "channel_names", names)
        if self.behavior is not None:
            beh = np.asarray(self.behavior)
            if beh.ndim == 1:
                beh = beh[:, None]
            if beh.ndim != 2:
                raise RecordingError(f"behavior must be (n_bins, n_outputs), got shape {beh.shape}")
            set_(self, "behavior", np.ascontiguousarray(beh, dtype=np.float32))
            if self.behavior_rate is None or not float(self.behavior_rate) > 0:
                raise RecordingError(f"behavior given without a positive behavior_rate ({self.behavior_rate!r})")
            set_(self, "behavior_rate", float(self.behavior_rate))
            if self.behavior_names is not None:
                bn = [str(n) for n in self.behavior_names]
                if len(bn) != beh.shape[1]:
                    raise RecordingError(f"{len(bn)} behavior_names for {beh.shape[1]} outputs")
                set_(self, "behavior_names", bn)
        elif self.behavior_names is not None or self.behavior_rate is not None:
            raise RecordingError("behavior_names or behavior_rate given without behavior")
        try:
            json.dumps(self.meta)
        except (TypeError, ValueError) as e:
            raise RecordingError(f"meta must be JSON-serialisable: {e}") from None

    @property
    def n_samples(self) -> int:
        return self.data.shape[0]

    @property
    def n_channels(self) -> int:
        return self.data.shape[1]

    @property
    def duration_s(self) -> float:
        return self.n_samples / self.sampling_rate

    def save(self, path) -> None:
        """Write atomically (a temporary file, then a rename): no half-written file is ever read."""
        path = Path(path)
        arrays = {
            "format": np.array(FORMAT),
            "version": np.array(VERSION),
            "data": self.data,
            "sampling_rate": np.array(self.sampling_rate),
            "meta": np.array(json.dumps(self.meta)),
        }
        if self.channel_names is not None:
            arrays["channel_names"] = np.array(self.channel_names, dtype=str)
        if self.behavior is not None:
            arrays["behavior"] = self.behavior
            arrays["behavior_rate"] = np.array(self.behavior_rate)
            if self.behavior_names is not None:
                arrays["behavior_names"] = np.array(self.behavior_names, dtype=str)
        with atomic_file(path) as f:  # the umask's permissions, unlike mkstemp's 0600
            np.savez(f, **arrays)

    @classmethod
    def load(cls, path) -> "Recording":
        path = Path(path)
        if not path.is_file():
            raise RecordingError(f"{path}: no such recording file")
        _check_magic(path, "npz", "an .npz (zip) archive")  # np.load would try a pickle, and say so
        try:
            with open(path, "rb") as f:  # our handle: np.load leaks its own on a corrupt zip
                z = np.load(f, allow_pickle=False)
                if not isinstance(z, np.lib.npyio.NpzFile):
                    raise ValueError("a single .npy array, not an .npz archive")
                with z:
                    arrays = {k: z[k] for k in z.files}
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
            why = "it holds Python objects, which rtdecode never unpickles" if "pickle" in str(e) else f"{type(e).__name__}: {e}"
            raise RecordingError(
                f"{path}: not a readable rtdecode recording (.npz): {why}. "
                f"Re-create it (Recording.save) or check that the copy is complete."
            ) from None
        fmt = str(arrays.get("format", "")) if "format" in arrays and arrays["format"].dtype.kind in "US" else ""
        if fmt != FORMAT:
            raise RecordingError(f"{path}: field 'format' is {fmt!r}, expected {FORMAT!r}: an .npz, but not an rtdecode "
                                 f"recording (rtdecode replay reads {FORMATS})")  # fmt: skip
        version = int(arrays.get("version", -1))
        if version > VERSION:
            raise RecordingError(
                f"{path}: field 'version' is {version}, this rtdecode reads up to {VERSION}: upgrade rtdecode"
            )
        for key in ("data", "sampling_rate"):
            if key not in arrays:
                raise RecordingError(f"{path}: missing field '{key}'")
        try:
            meta = json.loads(str(arrays["meta"])) if "meta" in arrays else {}
            return cls(
                data=arrays["data"],
                sampling_rate=float(arrays["sampling_rate"]),
                channel_names=arrays["channel_names"].tolist() if "channel_names" in arrays else None,
                behavior=arrays.get("behavior"),
                behavior_names=arrays["behavior_names"].tolist() if "behavior_names" in arrays else None,
                behavior_rate=float(arrays["behavior_rate"]) if "behavior_rate" in arrays else None,
                meta=meta,
            )
        except RecordingError as e:
            raise RecordingError(f"{path}: {e}") from None
        except (ValueError, TypeError) as e:
            raise RecordingError(f"{path}: malformed field: {e}") from None


# ------------------------------------------------------------------------------------------
# other tools' files (rtdecode replay)


def _check_magic(path: Path, kind: str, what: str) -> None:
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as e:
        raise RecordingError(f"{path}: cannot be read ({e.strerror or e})") from None
    if not any(head.startswith(m) for m in _MAGIC[kind]):
        raise RecordingError(f"{path}: not {what} (it does not start like one); rtdecode replay reads {FORMATS}")


def _kind(path: Path) -> str | None:
    name = path.name.lower()
    for kind, ends in (("npz", (".npz",)), ("nwb", (".nwb",)), ("xdf", (".xdf",)), ("xdfz", (".xdfz", ".xdf.gz"))):
        if name.endswith(ends):
            return kind
    return None


def load_any(path, *, nwb_mapping=None, xdf_stream: str | None = None, max_seconds: float | None = None) -> Recording:
    """A file `rtdecode replay` can play, as a Recording, by its extension: .npz (this
    module's format), .nwb (the LFP ElectricalSeries `nwb_mapping` chooses, an
    `offline.data.nwb.NWBMapping`; in microvolts, channels named by electrode id as in
    training; at most `max_seconds`), .xdf/.xdfz (the numeric stream named or typed
    `xdf_stream`, else the only one with a sampling rate). Anything else: RecordingError."""
    path = Path(path)
    if path.is_dir():
        raise RecordingError(f"{path} is a folder; rtdecode replay plays one file: {FORMATS}")
    if not path.exists():
        raise RecordingError(f"{path}: no such file; rtdecode replay reads {FORMATS}")
    kind = _kind(path)
    if kind is None:
        raise RecordingError(f"{path}: unknown file type {path.suffix or '(no extension)'!r}; rtdecode replay reads {FORMATS}")
    if kind == "npz":
        return Recording.load(path)
    if kind == "nwb":
        return _load_nwb(path, nwb_mapping, max_seconds)
    return _load_xdf(path, kind, xdf_stream)


def _load_nwb(path: Path, mapping, max_seconds: float | None) -> Recording:
    _check_magic(path, "nwb", "an NWB (HDF5) file")
    try:
        import pynwb  # noqa: F401
    except ImportError:
        raise RecordingError(f"{path}: playing NWB files needs pynwb: pip install 'rtdecode[replay]'") from None
    from offline.data.nwb import NWBMappingError, NWBReadError, read_lfp

    try:
        data, info = read_lfp(path, mapping, max_seconds=max_seconds)  # only what will be played is loaded
    except NWBReadError as e:
        raise RecordingError(str(e)) from None
    except NWBMappingError as e:
        raise RecordingError(f"{e}\n(choose the series with --nwb-lfp PATH, or --mapping TOML)") from None
    except (OSError, KeyError, ValueError, TypeError, AttributeError) as e:
        raise RecordingError(f"{path}: not a readable NWB file ({type(e).__name__}: {e})") from None
    if data.shape[0] < 1:
        raise RecordingError(f"{path}: {info.path} holds no samples")
    meta = {"source": str(path), "format": "nwb", "series": info.path, "t0": info.t0, "unit": "uV"}
    return Recording(data, info.rate, channel_names=[str(c) for c in info.channel_ids], meta=meta)


def _xdf_field(info: dict, key: str, default=""):
    v = info.get(key)
    return v[0] if isinstance(v, list) and v else (default if v is None or v == [] else v)


def xdf_streams(path: Path, kind: str | None = None, *, synchronize_clocks: bool = False) -> list[dict]:
    """Every stream of an XDF file, as pyxdf reads it (raw stamps: no dejittering; with
    `synchronize_clocks`, the file's ClockOffset chunks applied, so that streams from
    several hosts share the recorder's clock). Errors: RecordingError."""
    kind = kind or _kind(path) or "xdf"
    _check_magic(path, kind, "an XDF file" if kind == "xdf" else "a gzip-compressed XDF file")
    try:
        import pyxdf
    except ImportError:
        raise RecordingError(f"{path}: reading XDF files needs pyxdf: pip install 'rtdecode[replay]' (or pip install pyxdf)") from None
    try:
        streams, _ = pyxdf.load_xdf(str(path), synchronize_clocks=synchronize_clocks, dejitter_timestamps=False)
    except Exception as e:  # pyxdf raises bare Exception/IOError/RuntimeError for malformed files
        raise RecordingError(f"{path}: not a readable XDF file ({type(e).__name__}: {e})") from None
    return streams


def xdf_describe(s: dict) -> str:
    """One stream, as a listing names it: name, type, channels, rate, format, samples."""
    i = s["info"]
    n = len(s["time_series"])
    return (f"{_xdf_field(i, 'name')!r} (type {_xdf_field(i, 'type')!r}, {_xdf_field(i, 'channel_count')} ch, "
            f"{float(_xdf_field(i, 'nominal_srate', 0) or 0):g} Hz, {_xdf_field(i, 'channel_format')}, {n} samples)")  # fmt: skip


def xdf_regular(s: dict) -> bool:
    """Numeric samples at a nominal rate (what can be replayed, or read as LFP)."""
    i = s["info"]
    return (_xdf_field(i, "channel_format") != "string" and float(_xdf_field(i, "nominal_srate", 0) or 0) > 0
            and len(s["time_series"]) > 0)  # fmt: skip


def xdf_select(path: Path, streams: list[dict], name: str, flag: str = "--xdf-stream") -> dict:
    """The one stream named or typed `name`; else RecordingError with the file's listing."""
    cands = [s for s in streams if name in (_xdf_field(s["info"], "name"), _xdf_field(s["info"], "type"))]
    if not cands:
        raise RecordingError(f"{path}: no stream named or typed {name!r}; the file has: "
                             f"{'; '.join(xdf_describe(s) for s in streams) or 'no streams'}")  # fmt: skip
    if len(cands) > 1:
        raise RecordingError(f"{path}: {len(cands)} streams are named or typed {name!r}: "
                             f"{'; '.join(xdf_describe(s) for s in cands)}; pass the name of one with {flag}")  # fmt: skip
    return cands[0]


def xdf_labels(s: dict) -> list[str] | None:
    """The stream's channel labels (desc/channels/channel/label), None unless every channel has one."""
    info = s["info"]
    desc = _xdf_field(info, "desc", None)
    try:
        chans = desc["channels"][0]["channel"] if isinstance(desc, dict) else None
        labels = [str(_xdf_field(c, "label")) for c in chans] if chans else None
    except (KeyError, IndexError, TypeError):
        labels = None
    n = int(float(_xdf_field(info, "channel_count", 0) or 0))
    if labels is not None and (len(labels) != n or not all(labels)):
        labels = None
    return labels


def _load_xdf(path: Path, kind: str, stream: str | None) -> Recording:
    streams = xdf_streams(path, kind)
    listing = "; ".join(xdf_describe(s) for s in streams) or "no streams"
    if stream:
        s = xdf_select(path, streams, stream)
        if not xdf_regular(s):
            raise RecordingError(f"{path}: stream {xdf_describe(s)} cannot be replayed: it needs numeric samples at a "
                                 "nominal rate (irregular and string streams are not played)")  # fmt: skip
    else:
        cands = [s for s in streams if xdf_regular(s)]
        if len(cands) != 1:
            what = "no stream with numeric samples at a nominal rate" if not cands else f"{len(cands)} streams could be played"
            raise RecordingError(f"{path}: {what}; the file has: {listing}. Choose one with --xdf-stream NAME")
        s = cands[0]
    info = s["info"]
    data = np.asarray(s["time_series"], dtype=np.float32)
    if data.ndim == 1:
        data = data[:, None]
    labels = xdf_labels(s)
    if labels is not None and len(labels) != data.shape[1]:
        labels = None
    meta = {"source": str(path), "format": "xdf", "stream": str(_xdf_field(info, "name")), "type": str(_xdf_field(info, "type"))}
    return Recording(data, float(_xdf_field(info, "nominal_srate")), channel_names=labels, meta=meta)


def nwb_mapping_for(path, toml: str | None = None, lfp: str | None = None):
    """The NWBMapping `rtdecode replay` uses for NWB file `path`: the [data.nwb] table of a
    distill config (or an [nwb] table) in `toml`, its per-file overrides applied, then `lfp`."""
    from dataclasses import replace

    from offline.data.nwb import NWBConfig, NWBMapping

    from .config import ConfigError, load_toml

    m = NWBMapping()
    if toml:
        d = load_toml(toml)
        table = d.get("data", {}).get("nwb") if isinstance(d.get("data"), dict) and "nwb" in d["data"] else d.get("nwb")
        if not isinstance(table, dict):
            raise ConfigError(f"{toml}: no [data.nwb] or [nwb] table (found: {sorted(d) or 'nothing'}); "
                              "put the keys of offline.data.nwb.NWBMapping there")  # fmt: skip
        m = NWBConfig.from_dict(table, where=f"{toml} [data.nwb]").for_file(path)
    return replace(m, lfp=lfp) if lfp else m


def load_for_replay(path, *, mapping: str | None = None, nwb_lfp: str | None = None, xdf_stream: str | None = None,
                    max_seconds: float | None = None) -> Recording:  # fmt: skip
    """`rtdecode replay FILE [--mapping TOML] [--nwb-lfp SERIES] [--xdf-stream NAME]`: the
    Recording `load_any` reads, with the NWB mapping `nwb_mapping_for` builds. A choice that
    does not fit the file's kind (--mapping for an XDF file, ...) is a ConfigError."""
    from .config import ConfigError

    name = str(path).lower()
    nwb = name.endswith(".nwb")
    if (mapping or nwb_lfp) and not nwb:
        raise ConfigError(f"--mapping and --nwb-lfp choose the series of an NWB file; {path} is not one (.nwb)")
    if xdf_stream and not name.endswith((".xdf", ".xdfz", ".xdf.gz")):
        raise ConfigError(f"--xdf-stream chooses a stream of an XDF file; {path} is not one (.xdf, .xdfz)")
    nwb_mapping = nwb_mapping_for(path, mapping, nwb_lfp) if nwb and (mapping or nwb_lfp) else None
    return load_any(path, nwb_mapping=nwb_mapping, xdf_stream=xdf_stream, max_seconds=max_seconds)
