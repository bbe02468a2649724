"""Sessions to and from NWB files (pynwb), with a small mapping for other layouts.

    write_session(session, "s00.nwb")
    s = read_session("s00.nwb")                                   # default layout
    s = read_session("theirs.nwb", NWBMapping(lfp="acquisition/ElectricalSeries",
                                              outputs={"x": "hand_pos[0]", "y": "hand_pos[1]", "grip": "force"}))

Layout written (and found by the defaults):
    processing/ecephys/LFP/lfp                        ElectricalSeries, microvolts (conversion 1e-6)
    units                                             Units table (spike times)
    processing/behavior/Position/position             SpatialSeries (x, y), unit "cm"
    processing/behavior/BehavioralTimeSeries/<name>   SpatialSeries velocity (vx, vy, "cm/s"), TimeSeries others
    processing/simulation/latents                     TimeSeries (simulator only)
    scratch/rtdecode                                  JSON: behaviour names and order, meta

Other layouts (`NWBMapping`, the `[data.nwb]` table of a distill config; `NWBConfig` adds
per-file overrides): every object can be named by its path or, when that is unique in the
file, by its bare name. `outputs` maps decoder outputs to series columns
(``x = "hand_position[0]"``); with `derive_velocity`, outputs x, y (z) that have no vx, vy
(vz) get one: the backward difference on the bin grid, v[i] = (p[i] - p[i-1]) / bin_width,
v[0] = 0 (causal: bin i uses no later position), unit "<position unit>/s". When something is
not found, `NWBMappingError` lists everything the file contains.

Reading: the LFP is not loaded; `session.lfp` is a `LazyArray` over the HDF5 dataset (shape,
slicing, np.asarray), so `rtdecode.dsp.compute_features` streams it block by block. Values
are returned in microvolts: data x conversion x channel_conversion[channel] + offset (NWB's
volts), x 1e6. An LFP with `timestamps` is binned on its own stamps (`_bin_edges`; a clock up
to 1000 ppm off the nominal rate is followed) and refused where they pause. Spikes are binned
to `bin_width` on the LFP's time base; behaviour is read at bin centres (sliced when already
sampled there, else linear interpolation), with each series' `unit` (`session.behavior_units`)
and its conversion and offset; NaN behaviour is interpolated in time with a warning
(`_fill_behavior`); SpatialSeries of a Position container get a derived velocity too.
"""

from __future__ import annotations


import datetime as _dt
import fnmatch
import json
import logging
import re
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from rtdecode.config import ConfigError

from .session import Session, SessionError

log = logging.getLogger(__name__)

META_NAME = "rtdecode"


class NWBMappingError(ValueError):
    """The mapping does not fit the file; the message lists what the file contains."""


class NWBReadError(ValueError):
    """The file cannot be read as NWB at all (truncated, damaged, not NWB): no mapping helps."""


# what h5py / hdmf / pynwb raise on a file whose bytes are damaged (a truncated or interrupted copy)
_DAMAGED = (OSError, KeyError, RuntimeError, TypeError, AttributeError, ValueError, IndexError)
# raised on purpose by the readers: passed through as they are
_OWN = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError, SessionError)


def _readable(func):
    """`func(path, ...)` reads an NWB file: a damaged file raises NWBReadError naming it and the
    fix, not a traceback from h5py; a file pynwb reads only with broken links (damaged
    mid-way) and that the mapping then does not fit says so too."""
    import functools
    import warnings

    @functools.wraps(func)
    def wrapper(path, *args, **kwargs):
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            try:
                out = func(path, *args, **kwargs)
            except (NWBReadError, *_OWN):
                raise
            except NWBMappingError as e:
                broken = [str(w.message) for w in seen if type(w.message).__name__ == "BrokenLinkWarning"]
                if not broken:
                    raise
                raise NWBReadError(f"{path}: the file has {len(broken)} broken link(s) ({broken[0][:120]}), so it is "
                                   f"probably damaged (an interrupted copy or export); what could be read: {e}") from None
            except _DAMAGED as e:
                if isinstance(e, ConfigError):  # a mapping table that does not parse
                    raise
                raise NWBReadError(f"{path}: not a readable NWB file ({type(e).__name__}: {str(e)[:200]}); it may be "
                                   "truncated or damaged (an interrupted copy or export): copy or export it again") from None
        for w in seen:  # the others as they would have been shown; a broken link in the log
            if type(w.message).__name__ == "BrokenLinkWarning":
                log.warning("%s: %s", path, w.message)
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        return out

    return wrapper


@dataclass(frozen=True)
class NWBMapping:
    """Which NWB object is which. Paths look like 'acquisition/ElectricalSeries',
    'processing/ecephys/LFP/lfp', 'processing/behavior/Position/position'; a bare name
    ('ElectricalSeries', 'hand_position') names the one object of that name in the file."""

    lfp: str = ""  # "": the only ElectricalSeries in processing/<ecephys_module>, else in processing, else in acquisition
    ecephys_module: str = "ecephys"
    units: str = "units"  # the Units table (path or name)
    unit_ids: str = ""  # "": the table's ids; else a column of it holding each unit's id (e.g. "cluster_id")
    unit_filter: dict = field(default_factory=dict)  # keep units whose column value is listed: {quality = ["good"]}
    behavior: tuple[str, ...] = ()  # (): every TimeSeries/SpatialSeries under processing/<behavior_module>
    behavior_module: str = "behavior"
    outputs: dict = field(default_factory=dict)  # output name -> series (path or name), "[k]": its column k
    derive_velocity: bool = True  # outputs x, y (z) without vx, vy (vz): add the backward difference
    latents: str = "processing/simulation/latents"  # optional; read when present
    bin_width: float = 0.0  # s; 0: the file's rtdecode metadata, else 0.01

    def __post_init__(self):
        if self.outputs and self.behavior:
            raise NWBMappingError("set either behavior (series paths, names from the file) or outputs (names -> series), "
                                  "not both")  # fmt: skip
        for k, v in self.outputs.items():
            if not isinstance(v, str) or not _COL.match(v):
                raise NWBMappingError(f"outputs.{k} = {v!r}: expected a series path or name, optionally with a "
                                      "column, like \"hand_position[0]\"")  # fmt: skip
        for k, v in self.unit_filter.items():
            if not isinstance(v, list) or not v or not all(isinstance(x, (str, int)) for x in v):
                raise NWBMappingError(f"unit_filter.{k} = {v!r}: expected a non-empty list of the values to keep, "
                                      "like [\"good\"]")  # fmt: skip
        if not self.bin_width >= 0:
            raise NWBMappingError(f"bin_width must be >= 0 (0: from the file, else 0.01 s), got {self.bin_width}")

    @classmethod
    def from_dict(cls, d: dict, where: str = "[data.nwb]") -> "NWBMapping":
        from rtdecode.config import from_dict

        return from_dict(cls, d, where=where)


_COL = re.compile(r"^\s*([^\[\]]*[^\s\[\]])\s*(?:\[\s*(\d+)\s*\])?\s*$")  # "path/or/name[3]"


def file_matches(pattern: str, path: str | Path) -> bool:
    """A per-file key matches a file given as `path` when it equals it, names the same file,
    or matches the path or its file name as a glob (fnmatch: *, ?, [...])."""
    p = str(path)
    if pattern == p or fnmatch.fnmatchcase(p, pattern) or fnmatch.fnmatchcase(Path(p).name, pattern):
        return True
    try:
        return Path(pattern).resolve() == Path(p).resolve()
    except OSError:
        return False


@dataclass(frozen=True)
class NWBConfig(NWBMapping):
    """The `[data.nwb]` table: an `NWBMapping` for every file, and `files`: per-file
    overrides, `[data.nwb.files."day3.nwb"]` or `[data.nwb.files."*-rig2-*.nwb"]`, whose keys
    (those of NWBMapping) replace the table's for the files they match (`file_matches`; every
    matching entry applies, in the order written, a later one winning)."""

    files: dict = field(default_factory=dict)

    def __post_init__(self):
        super().__post_init__()
        for pattern, over in self.files.items():
            if not isinstance(over, dict):
                raise ConfigError(f'files."{pattern}": expected a table of NWBMapping keys, got {type(over).__name__}')
            _merge({f.name: getattr(self, f.name) for f in fields(NWBMapping)}, over, pattern)  # refused now, not at the file

    def for_file(self, path: str | Path) -> NWBMapping:
        """The mapping for one file: the table, then every override that matches it."""
        d = {f.name: getattr(self, f.name) for f in fields(NWBMapping)}
        for pattern, over in self.files.items():
            if file_matches(pattern, path):
                d.update(over)
        return NWBMapping.from_dict(d, where=f"[data.nwb] for {path}")

    @classmethod
    def from_dict(cls, d: dict, where: str = "[data.nwb]") -> "NWBConfig":
        from rtdecode.config import from_dict

        return from_dict(cls, d, where=where)

    def unmatched(self, paths) -> list[str]:
        """Override keys that match none of `paths` (a typo, or a file no longer listed)."""
        return [p for p in self.files if not any(file_matches(p, q) for q in paths)]


def _merge(base: dict, over: dict, pattern: str) -> NWBMapping:
    from rtdecode.config import from_dict

    from_dict(NWBMapping, over, where=f'files."{pattern}"')  # its own keys and types, named as written
    return from_dict(NWBMapping, {**base, **over}, where=f'files."{pattern}" (with the table)')


# ------------------------------------------------------------------------------------------
# lazy LFP


class LazyArray:
    """Rows [0, n_rows) of a 2-D HDF5 dataset, opened on first access, read as float32 x
    `scale` (x `gain[c]` per column when given) + `offset`: NWB's conversion,
    channel_conversion and offset, to microvolts."""

    def __init__(self, path: str | Path, dataset: str, n_rows: int, n_cols: int, scale: float = 1.0,
                 gain: np.ndarray | None = None, offset: float = 0.0):  # fmt: skip
        self.path, self.dataset, self.scale = str(path), dataset, float(scale)
        self.gain = None if gain is None else np.asarray(gain, np.float32).reshape(-1)
        self.offset = float(offset)
        self.shape = (int(n_rows), int(n_cols))
        self.dtype = np.dtype(np.float32)
        self.ndim = 2
        self._file = None

    def _ds(self):
        if self._file is None:
            import h5py

            self._file = h5py.File(self.path, "r")
        return self._file[self.dataset]

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key):
        rows, cols = key if isinstance(key, tuple) else (key, slice(None))
        if isinstance(rows, slice):
            rows = slice(*rows.indices(self.shape[0]))  # never past n_rows (the whole-bin crop)
        elif isinstance(rows, (int, np.integer)):
            rows = int(rows) + (self.shape[0] if rows < 0 else 0)
            if not 0 <= rows < self.shape[0]:
                raise IndexError(f"row {rows} is outside 0..{self.shape[0] - 1} of {self!r}")
        else:
            raise TypeError(f"{self!r} takes an int or a slice of rows; load it first (np.asarray) for other indexing")
        x = np.asarray(self._ds()[rows], dtype=np.float32)
        if x.ndim == 1 and isinstance(rows, slice):  # a 1-D (single-channel) dataset: rows x 1
            x = x.reshape(-1, self.shape[1])
        _to_microvolts(x, self.scale, self.gain, self.offset)
        return x[..., cols]

    def __array__(self, dtype=None, copy=None):
        x = self[:]
        return x if dtype is None else x.astype(dtype)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __repr__(self) -> str:
        return f"LazyArray({self.path}:{self.dataset}, shape={self.shape}, scale={self.scale:g})"


def _to_microvolts(x: np.ndarray, scale: float, gain: np.ndarray | None, offset: float) -> None:
    """In place: x * scale (* gain per column) + offset (float32 (rows, channels) or (channels,))."""
    if scale != 1.0:
        x *= np.float32(scale)
    if gain is not None:
        x *= gain
    if offset != 0.0:
        x += np.float32(offset)


# ------------------------------------------------------------------------------------------
# writing


def _series_groups(names: list[str]) -> list[tuple[str, str, list[int]]]:
    """(series name, kind, columns): x/y -> position, vx/vy -> velocity, others one each."""
    out, used = [], set()
    for sname, cols in (("position", ("x", "y")), ("velocity", ("vx", "vy"))):
        if all(c in names for c in cols):
            idx = [names.index(c) for c in cols]
            out.append((sname, "spatial", idx))
            used.update(idx)
    out += [(n, "time", [i]) for i, n in enumerate(names) if i not in used]
    return out


def write_session(session: Session, path: str | Path) -> Path:
    """Write one session to an NWB file (atomically: a temporary file, then a rename)."""
    from hdmf.common import ElementIdentifiers, VectorData, VectorIndex
    from pynwb import NWBHDF5IO, NWBFile, TimeSeries
    from pynwb.behavior import BehavioralTimeSeries, Position, SpatialSeries
    from pynwb.ecephys import LFP, ElectricalSeries
    from pynwb.file import Subject
    from pynwb.misc import Units

    s = session
    path = Path(path)
    idx = int(s.meta.get("session_index", 0)) if isinstance(s.meta.get("session_index", 0), int) else 0
    start = _dt.datetime(2024, 1, 1, tzinfo=_dt.timezone.utc) + _dt.timedelta(days=idx)
    nwb = NWBFile(session_description=f"rtdecode session {s.session_id}", identifier=f"rtdecode-{s.session_id}-{s.meta.get('seed', 0)}",
                  session_start_time=start, session_id=str(s.session_id), subject=Subject(subject_id=str(s.subject)))  # fmt: skip
    dev = nwb.create_device(name="array", description="multi-electrode array")
    grp = nwb.create_electrode_group(name="array", description="all channels", location="motor cortex", device=dev)
    ids = np.asarray(s.channel_ids)
    for c in ids:
        nwb.add_electrode(group=grp, location="motor cortex", id=int(c))
    region = nwb.create_electrode_table_region(list(range(len(ids))), "LFP channels, in column order")
    lfp = np.ascontiguousarray(np.asarray(s.lfp, dtype=np.float32))
    es = ElectricalSeries(name="lfp", data=lfp, electrodes=region, starting_time=float(s.t0), rate=float(s.lfp_rate),
                          conversion=1e-6, filtering="raw (broadband below Nyquist)", description="LFP in microvolts")  # fmt: skip
    lfp_container = LFP(name="LFP")
    nwb.create_processing_module("ecephys", "extracellular electrophysiology").add(lfp_container)
    lfp_container.add_electrical_series(es)  # after the container has a parent: the region and table share an ancestor
    # units: spike times spread evenly inside each bin, so binning gives the counts back
    counts = np.asarray(s.spikes)
    per = counts.T.reshape(-1).astype(np.int64)  # unit-major
    n_bins = counts.shape[0]
    total = np.repeat(np.arange(per.size), per)
    k = np.arange(total.size) - np.repeat(np.cumsum(per) - per, per)
    times = s.t0 + ((total % n_bins) + (k + 0.5) / per[total]) * s.bin_width
    st = VectorData(name="spike_times", description="spike times (s)", data=times)
    ix = VectorIndex(name="spike_times_index", data=np.cumsum(counts.sum(0)).astype(np.int64), target=st)
    nwb.units = Units(name="units", id=ElementIdentifiers(name="id", data=np.asarray(s.unit_ids, np.int64)),
                      columns=[st, ix], description="sorted units")  # fmt: skip (arrays, not add_unit: 50x faster)
    beh = nwb.create_processing_module("behavior", "behaviour at bin centres")
    pos, bts = Position(name="Position"), BehavioralTimeSeries(name="BehavioralTimeSeries")
    order, names = [], list(s.behavior_names)
    units = list(getattr(s, "behavior_units", None) or [])
    b = np.asarray(s.behavior, np.float32)
    common = dict(starting_time=float(s.t0 + s.bin_width / 2), rate=1.0 / s.bin_width)
    for sname, kind, cols in _series_groups(names):
        data = b[:, cols] if len(cols) > 1 else b[:, cols[0]]
        unit = (units[cols[0]] if units else "") or "a.u."  # NWB needs a unit; "a.u." where the session has none
        if kind == "spatial":
            ser = SpatialSeries(name=sname, data=data, reference_frame="workspace centre", unit=unit,
                                description=f"columns: {', '.join(names[c] for c in cols)}", **common)  # fmt: skip
        else:
            ser = TimeSeries(name=sname, data=data, unit=unit, description=f"column(s) {', '.join(names[c] for c in cols)}", **common)
        if sname == "position":
            pos.add_spatial_series(ser)
        else:
            bts.add_timeseries(ser)
        order.append((f"processing/behavior/{'Position' if sname == 'position' else 'BehavioralTimeSeries'}/{sname}",
                      [names[c] for c in cols]))  # fmt: skip
    if pos.spatial_series:
        beh.add(pos)
    if bts.time_series:
        beh.add(bts)
    if s.latents is not None:
        sim = nwb.create_processing_module("simulation", "true latent state (simulator only)")
        sim.add(TimeSeries(name="latents", data=np.asarray(s.latents, np.float32), unit="a.u.", **common))
    meta = {"format": "rtdecode-session", "version": 1, "bin_width": float(s.bin_width),
            "behavior": [{"path": p, "names": n} for p, n in order], "meta": s.meta}  # fmt: skip
    nwb.add_scratch(json.dumps(meta), name=META_NAME, description="rtdecode: behaviour column names and order, session meta")
    path.parent.mkdir(parents=True, exist_ok=True)
    from rtdecode._fs import atomic_path

    with atomic_path(path, suffix=".tmp.nwb") as tmp:  # the umask's permissions, unlike mkstemp's 0600
        with NWBHDF5IO(str(tmp), "w") as io:
            io.write(nwb)
    return path


# ------------------------------------------------------------------------------------------
# reading


def inventory(nwb) -> dict:
    """path -> object for every data interface, table and time series in the file."""
    from pynwb.core import NWBDataInterface
    from pynwb.base import TimeSeries

    out: dict = {}

    def walk(prefix, obj):
        out[prefix] = obj
        for c in getattr(obj, "children", []):
            if isinstance(c, (TimeSeries, NWBDataInterface)):
                walk(f"{prefix}/{c.name}", c)

    for name, obj in nwb.acquisition.items():
        walk(f"acquisition/{name}", obj)
    for mname, mod in nwb.processing.items():
        for name, obj in mod.data_interfaces.items():
            walk(f"processing/{mname}/{name}", obj)
    if nwb.units is not None:
        out["units"] = nwb.units
    return out


def _describe(inv: dict) -> str:
    from hdmf.common import DynamicTable
    from pynwb.base import TimeSeries

    lines = []
    for p, o in inv.items():
        t = type(o).__name__
        if isinstance(o, TimeSeries):
            shape = tuple(o.data.shape)
            rate = f"{o.rate:g} Hz" if o.rate is not None else "timestamps"
            unit = f", unit {o.unit!r}" if getattr(o, "unit", None) else ""
            lines.append(f"  {p} ({t}, shape {shape}, {rate}{unit})")
        elif isinstance(o, DynamicTable):
            what = "units" if t == "Units" else "rows"
            lines.append(f"  {p} ({t}, {len(o.id)} {what}) columns: {', '.join(o.colnames) or '(none)'}")
        else:
            lines.append(f"  {p} ({t})")
    return "\n".join(lines) if lines else "  (no acquisition, processing or units)"


def _fail(path, what: str, inv: dict, fix: str):
    raise NWBMappingError(f"{path}: {what}. The file contains:\n{_describe(inv)}\n{fix}")


def _find(path, inv: dict, spec: str, key: str, kind, kind_name: str):
    """(path, object) named by `spec`: a path in the file, or the bare name of exactly one
    object of that kind. Fails listing the file's contents."""
    if spec in inv:
        if not isinstance(inv[spec], kind):
            _fail(path, f"mapping.{key} = {spec!r} is {_a(type(inv[spec]).__name__)}, not {_a(kind_name)}", inv,
                  f"Set mapping.{key} to {_a(kind_name)} listed above.")  # fmt: skip
        return spec, inv[spec]
    cands = [p for p, o in inv.items() if p.rsplit("/", 1)[-1] == spec and isinstance(o, kind)]
    if not cands:
        cands = [p for p, o in inv.items() if p.endswith("/" + spec.strip("/")) and isinstance(o, kind)]
    if len(cands) == 1:
        return cands[0], inv[cands[0]]
    if cands:
        _fail(path, f"mapping.{key} = {spec!r} could be any of {', '.join(cands)}", inv, f"Set mapping.{key} to one of these paths.")
    _fail(path, f"mapping.{key} = {spec!r} is not {_a(kind_name)} in this file", inv,
          f"Set mapping.{key} to one of the {kind_name} paths (or unique names) listed above.")  # fmt: skip


def _a(noun: str) -> str:
    """'a SpatialSeries', 'an ElectricalSeries'."""
    return ("an " if noun[:1].lower() in "aeiou" else "a ") + noun


def _pick_lfp(path, inv: dict, m: NWBMapping):
    from pynwb.ecephys import ElectricalSeries

    if m.lfp:
        return _find(path, inv, m.lfp, "lfp", ElectricalSeries, "ElectricalSeries")
    es = [p for p, o in inv.items() if isinstance(o, ElectricalSeries)]
    for tier in (f"processing/{m.ecephys_module}/", "processing/", "acquisition/"):
        cands = [p for p in es if p.startswith(tier)]
        if len(cands) == 1:
            return cands[0], inv[cands[0]]
        if len(cands) > 1:
            _fail(path, f"several ElectricalSeries could be the LFP ({', '.join(cands)})", inv,
                  "Set mapping.lfp to the one to use.")  # fmt: skip
    _fail(path, "no LFP: no ElectricalSeries in acquisition or in any processing module", inv,
          "rtdecode needs raw or LFP-band voltage as an ElectricalSeries; add one, or set mapping.lfp if it is elsewhere.")  # fmt: skip


@dataclass(frozen=True)
class LFPInfo:
    """Where the LFP is and how to read it (`lfp_info`)."""

    path: str  # its path in the file
    dataset: str  # its HDF5 dataset
    rate: float  # Hz
    t0: float  # s, its first sample
    n_samples: int
    n_channels: int
    scale: float  # to microvolts: the series' conversion x 1e6 (x its channel_conversion when uniform)
    channel_ids: np.ndarray  # electrode ids, in column order
    gain: np.ndarray | None = None  # per-channel channel_conversion, where it is not uniform
    offset: float = 0.0  # microvolts added after scaling (the series' offset x 1e6)


def lfp_info(path, inv: dict, m: NWBMapping, bin_width: float | None = None) -> tuple[LFPInfo, object]:
    """The mapping's ElectricalSeries and how to read it in microvolts. `bin_width` (default
    mapping.bin_width, else 0.01 s): an LFP stamped by a drifting clock gets the nominal rate
    with a whole number of samples in such a bin."""
    lfp_path, es = _pick_lfp(path, inv, m)
    if es.rate is not None:
        rate = float(es.rate)
    else:
        ts = es.timestamps
        rate = float(1.0 / np.median(np.diff(ts[: min(10000, len(ts))]))) if len(ts) > 1 else 0.0
        if rate > 0 and abs(rate - round(rate)) < 1e-6 * rate:  # stamps k / rate in float: the rate they mean
            rate = float(round(rate))
        bw = bin_width or m.bin_width or 0.01
        spb = rate * bw
        if round(spb) >= 1 and abs(spb - round(spb)) < 1e-3 * spb:
            # stamped by a clock that drifts from the amplifier's (up to 1000 ppm): the nominal rate
            # (whole samples per bin) for the chain and for replay; the bins follow the stamps (_bin_edges)
            rate = round(spb) / bw
    if not rate > 0:
        raise NWBMappingError(f"{path}: {lfp_path} has no sampling rate (rate missing, fewer than 2 timestamps)")
    t0 = float(es.starting_time or 0.0) if es.timestamps is None else float(es.timestamps[0])
    n_ch = es.data.shape[1] if es.data.ndim == 2 else 1
    if es.timestamps is not None:
        _check_continuous(path, lfp_path, es.timestamps, rate)
    # NWB: volts = data x conversion x channel_conversion[c] + offset
    scale, gain = float(es.conversion) * 1e6, None
    if es.channel_conversion is not None:
        cc = np.asarray(es.channel_conversion[:], np.float64).reshape(-1)
        if cc.size != n_ch or not np.all(np.isfinite(cc)) or not np.all(cc != 0):
            raise NWBMappingError(f"{path}: {lfp_path} has {cc.size} channel_conversion factors for {n_ch} channels"
                                  + ("" if cc.size != n_ch else " (some zero or not finite)")
                                  + "; write one finite, non-zero factor per channel (or none)")  # fmt: skip
        if np.allclose(cc, cc[0], rtol=1e-9, atol=0):
            scale *= float(cc[0])
        else:
            gain = cc
    scale = 1.0 if abs(scale - 1.0) < 1e-9 else scale
    offset = float(getattr(es, "offset", 0.0) or 0.0) * 1e6
    rows = np.asarray(es.electrodes.data[:], np.int64)
    table_ids = np.asarray(es.electrodes.table.id.data[:])
    channel_ids = table_ids[rows] if len(rows) == n_ch else np.arange(n_ch)
    return LFPInfo(lfp_path, es.data.name, rate, t0, int(es.data.shape[0]), n_ch, scale, channel_ids, gain, offset), es


def _check_continuous(path, lfp_path: str, timestamps, rate: float, chunk: int = 1 << 20) -> None:
    """An LFP stamped sample by sample must be sampled without pauses: rtdecode bins it by
    sample count (as the runtime does a stream), so a pause would shift every later bin
    against the spikes and the behaviour. Refused with where the pause is (read in chunks)."""
    n = len(timestamps)
    for a in range(0, n, chunk):  # chunks overlap by one stamp: every difference is seen once
        t = np.asarray(timestamps[a : a + chunk + 1], np.float64)
        d = np.diff(t)
        bad = np.flatnonzero((d > 1.5 / rate) | (d <= 0) | ~np.isfinite(d))
        if bad.size:
            k, v = int(a + bad[0]), d[bad[0]]
            what = ("a stamp that is not a number" if not np.isfinite(v) else f"a pause of {v:.4g} s" if v > 0
                    else f"a step of {v:.4g} s (not increasing)")  # fmt: skip
            raise NWBMappingError(f"{path}: {lfp_path}'s timestamps have {what} after sample {k} (t = {t[bad[0]]:.6g} s) "
                                  f"at {rate:g} Hz; rtdecode reads an LFP sampled without pauses. Write each continuous "
                                  "segment as its own file (one session each), or point mapping.lfp at a continuous series")  # fmt: skip


@_readable
def read_lfp(path: str | Path, mapping: NWBMapping | dict | None = None, max_samples: int | None = None,
             max_seconds: float | None = None):  # fmt: skip
    """The mapping's LFP, loaded: (float32 (n, channels) microvolts, LFPInfo); only the first
    `max_samples` samples or `max_seconds` seconds when given. For `rtdecode replay`."""
    from pynwb import NWBHDF5IO

    path = Path(path)
    m = NWBMapping.from_dict(mapping) if isinstance(mapping, dict) else (mapping or NWBMapping())
    with NWBHDF5IO(str(path), "r") as io:
        nwb = io.read()
        info, es = lfp_info(path, inventory(nwb), m)
        n = info.n_samples if max_samples is None else min(int(max_samples), info.n_samples)
        if max_seconds is not None:
            n = min(n, int(np.ceil(max_seconds * info.rate)))
        x = np.asarray(es.data[:n], dtype=np.float32).reshape(n, info.n_channels)
    _to_microvolts(x, info.scale, info.gain, info.offset)
    return x, info


def _times(ts, n: int) -> np.ndarray:
    if ts.timestamps is not None:
        return np.asarray(ts.timestamps[:n], np.float64)
    return float(ts.starting_time or 0.0) + np.arange(n) / float(ts.rate)


def _at_bins(ts, t_bins: np.ndarray, bin_width: float, path=None, where: str | None = None) -> np.ndarray:
    """A series' values (n_bins, k) at bin centres `t_bins`, in its `unit` (NWB: data x
    conversion + offset): slices when already on the grid, else linear interpolation (with
    `path`: of a series whose stamps increase and cover the bins, `_check_series_times`)."""
    n = ts.data.shape[0]
    conv = float(getattr(ts, "conversion", 1.0) or 1.0)
    off = float(getattr(ts, "offset", 0.0) or 0.0)
    if ts.timestamps is None and abs(float(ts.rate) * bin_width - 1.0) < 1e-9:
        j0 = (t_bins[0] - float(ts.starting_time or 0.0)) * float(ts.rate)
        j1 = (t_bins[-1] - float(ts.starting_time or 0.0)) * float(ts.rate)  # the last centre on the grid too (drift)
        if abs(j0 - round(j0)) < 1e-6 and abs(j1 - j0 - (len(t_bins) - 1)) < 1e-6 and 0 <= round(j0) and round(j0) + len(t_bins) <= n:
            j0 = int(round(j0))
            x = np.asarray(ts.data[j0 : j0 + len(t_bins)], np.float32).reshape(len(t_bins), -1)
            return x if conv == 1.0 and off == 0.0 else (x.astype(np.float64) * conv + off).astype(np.float32)
    x = np.asarray(ts.data[:], np.float64).reshape(n, -1) * conv + off
    t = _times(ts, n)
    if path is not None:
        _check_series_times(path, where or ts.name, t, t_bins, bin_width)
    return np.stack([np.interp(t_bins, t, x[:, j]) for j in range(x.shape[1])], 1).astype(np.float32)


_MAX_UNCOVERED = 0.25  # behaviour that leaves more of the LFP's bins than this uncovered is refused


def _check_series_times(path, where: str, t: np.ndarray, t_bins: np.ndarray, bin_width: float) -> None:
    """A behaviour series interpolated onto the LFP's bins: its stamps must increase (repeated or
    backward stamps make spurious jumps, and a velocity derived from them spikes), and it must
    cover the bins (outside its span np.interp holds its first or last value: constant targets).
    Refused when more than _MAX_UNCOVERED of the bins are outside, said once when any are."""
    d = np.diff(t)
    bad = np.flatnonzero(~(d > 0))  # repeated, backwards, or not a number
    if bad.size:
        k = int(bad[0])
        raise NWBMappingError(
            f"{path}: {where}'s timestamps do not increase: {bad.size} of its {len(d)} steps are repeated or go "
            f"backwards (the first after sample {k}: t = {t[k]:.6g} -> {t[k + 1]:.6g} s). Interpolated onto the LFP's "
            "bins they would make spurious jumps in the behaviour (and in a velocity derived from it). Sort the "
            "samples by time and drop repeated stamps (e.g. np.unique on the timestamps) when writing the file")  # fmt: skip
    half = 0.5 * bin_width
    before = int(np.count_nonzero(t_bins < t[0] - half))
    after = int(np.count_nonzero(t_bins > t[-1] + half))
    out = before + after
    if not out:
        return
    frac = out / len(t_bins)
    span = (f"{where} covers t = {t[0]:.6g}..{t[-1]:.6g} s and the LFP's bins t = {t_bins[0]:.6g}..{t_bins[-1]:.6g} s: "
            f"{out} of {len(t_bins)} bins ({100 * frac:.1f} %; {before} before its first sample, {after} after its last) "
            "fall outside it and would get its first or last value, held")  # fmt: skip
    if frac > _MAX_UNCOVERED:
        raise NWBMappingError(
            f"{path}: {span}. The behaviour and the LFP look to be on different clocks or epochs: write both on the "
            "session's clock (NWB timestamps are seconds from session_start_time), or crop the LFP to the behaviour's span")  # fmt: skip
    log.warning("%s: %s; a decoder trains on those held values (crop the LFP to the behaviour's span to avoid it)", path, span)


def _names(p: str, ts) -> list[str]:
    from pynwb.behavior import SpatialSeries

    k = 1 if ts.data.ndim == 1 else ts.data.shape[1]
    if k == 1:
        return [ts.name]
    if isinstance(ts, SpatialSeries) and k <= 3:
        return [f"{ts.name}_{c}" for c in "xyz"[:k]]
    return [f"{ts.name}_{j}" for j in range(k)]


def _unit(ts) -> str:
    u = getattr(ts, "unit", None)
    return "" if u in (None, "unknown", "no unit") else str(u)


def _column(path, inv, units, col: str, key: str) -> np.ndarray:
    if col not in units.colnames:
        _fail(path, f"mapping.{key} names column {col!r}, which the units table has not (columns: {list(units.colnames)})",
              inv, f"Set mapping.{key} to one of its columns.")  # fmt: skip
    c = units[col]
    if c.__class__.__name__ == "VectorIndex":
        _fail(path, f"mapping.{key} names column {col!r}, which holds a list per unit", inv, "Use a column with one value per unit.")
    return np.asarray(c.data[:])


def _bin_units(units, t0: float, bin_width: float, n_bins: int, edges: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    ids = np.asarray(units.id.data[:])
    st = units["spike_times"]
    times = np.asarray(st.target.data[:], np.float64)
    ends = np.asarray(st.data[:], np.int64)
    counts_per = np.diff(np.concatenate([[0], ends]))
    unit = np.repeat(np.arange(len(ids)), counts_per)
    if edges is None:  # the LFP's bins on its nominal grid
        b = np.floor((times - t0) / bin_width).astype(np.int64)
    else:  # the bins' edges from the LFP's own timestamps (n_bins + 1)
        b = np.searchsorted(edges, times, side="right").astype(np.int64) - 1
    ok = (b >= 0) & (b < n_bins)
    flat = np.bincount(unit[ok] * n_bins + b[ok], minlength=len(ids) * n_bins)
    return np.ascontiguousarray(flat.reshape(len(ids), n_bins).T.astype(np.int32)), ids


def _plain(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def read_units(path, inv: dict, m: NWBMapping, t0: float, bin_width: float, n_bins: int,
               edges: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Spike counts (n_bins, n_units) and unit ids, after `unit_filter`, ids from `unit_ids`."""
    from pynwb.misc import Units

    if not m.units:
        _fail(path, "no spikes: mapping.units is empty", inv, "Point mapping.units at the Units table (spike times).")
    units = inv.get(m.units)
    if units is None or not isinstance(units, Units):
        cands = [p for p, o in inv.items() if isinstance(o, Units) and p.rsplit("/", 1)[-1] == m.units]
        if len(cands) != 1:
            _fail(path, f"no spikes: mapping.units = {m.units!r} is not a Units table here", inv,
                  "Add a Units table (spike times), or point mapping.units at it (a path or its name).")  # fmt: skip
        units = inv[cands[0]]
    if "spike_times" not in units.colnames:
        _fail(path, f"{m.units} has no spike_times column (columns: {list(units.colnames)})", inv, "Sort spikes first.")
    spikes, ids = _bin_units(units, t0, bin_width, n_bins, edges)
    if m.unit_ids:
        ids = _column(path, inv, units, m.unit_ids, "unit_ids")
        if len(set(map(_plain, ids))) != len(ids):
            _fail(path, f"mapping.unit_ids = {m.unit_ids!r}: its values repeat", inv, "Name a column with one distinct id per unit.")
    keep = np.ones(len(ids), bool)
    for col, allowed in m.unit_filter.items():
        vals = _column(path, inv, units, col, f"unit_filter.{col}")
        keep &= np.isin(np.array([_plain(v) for v in vals]), [str(a) for a in allowed])
    if not keep.any():
        _fail(path, f"mapping.unit_filter = {m.unit_filter} keeps no unit", inv, "Check the column's values.")
    if not keep.all():
        spikes, ids = np.ascontiguousarray(spikes[:, keep]), ids[keep]
    return spikes, ids


def _outputs(path, inv: dict, m: NWBMapping, t_bins: np.ndarray, bin_width: float):
    """Behaviour from `mapping.outputs`: (columns, names, units)."""
    from pynwb.base import TimeSeries

    cache: dict = {}
    cols, names, units = [], [], []
    for name, spec in m.outputs.items():
        g = _COL.match(spec)
        ref, col = g.group(1), g.group(2)
        p, ts = _find(path, inv, ref, f"outputs.{name}", TimeSeries, "TimeSeries/SpatialSeries")
        if p not in cache:
            cache[p] = _at_bins(ts, t_bins, bin_width, path, p)
        x = cache[p]
        if col is None and x.shape[1] > 1:
            _fail(path, f"mapping.outputs.{name} = {spec!r}: {p} has {x.shape[1]} columns", inv,
                  f"Pick one: \"{ref}[0]\" .. \"{ref}[{x.shape[1] - 1}]\".")  # fmt: skip
        j = 0 if col is None else int(col)
        if j >= x.shape[1]:
            _fail(path, f"mapping.outputs.{name} = {spec!r}: {p} has {x.shape[1]} column(s), 0..{x.shape[1] - 1}", inv,
                  "Use a column that exists.")  # fmt: skip
        cols.append(x[:, j : j + 1])
        names.append(str(name))
        units.append(_unit(ts))
    return cols, names, units


POSITIONS = ("x", "y", "z")


def _velocity_name(n: str) -> str:
    """x -> vx; a Position series' column hand_x -> hand_vx."""
    head, _, axis = n.rpartition("_")
    return f"v{n}" if not head else f"{head}_v{axis}"


def derive_velocity(behavior: np.ndarray, names: list[str], units: list[str], bin_width: float,
                    positions: list[str] | None = None):  # fmt: skip
    """Add a velocity for every position output that has none: outputs x, y, z (-> vx, vy, vz)
    and the columns of SpatialSeries in a Position container (`positions`, e.g. hand_x ->
    hand_vx; not when an output's name says velocity: the file has its own). The backward
    difference on the bin grid, v[i] = (p[i] - p[i-1]) / bin_width,
    v[0] = 0 (causal: bin i uses no later position; it is the mean velocity over the bin ending
    at bin i's centre). Inserted after the last position output; unit "<position unit>/s".
    Returns (behavior, names, units)."""
    if any(re.search(r"(^|[_\W])(vel|velocity|v[xyz])([_\W]|$)", n.lower()) or "velocity" in n.lower() for n in names):
        # the file has its own velocity: derive only for x, y, z
        positions = None
    pos = [n for n in names if n in POSITIONS or n in (positions or ())]
    todo = [n for n in pos if _velocity_name(n) not in names]
    if not todo:
        return behavior, names, units
    idx = [names.index(n) for n in todo]
    p = np.asarray(behavior[:, idx], np.float64)
    v = (np.diff(p, axis=0, prepend=p[:1]) / bin_width).astype(np.float32)
    at = max(names.index(n) for n in pos) + 1
    behavior = np.concatenate([behavior[:, :at], v, behavior[:, at:]], 1)
    names = names[:at] + [_velocity_name(n) for n in todo] + names[at:]
    vu = [f"{units[i]}/s" if units[i] else "" for i in idx]
    units = units[:at] + vu + units[at:]
    return np.ascontiguousarray(behavior, dtype=np.float32), names, units


def _toml_key(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else json.dumps(name)


def _behavior_hint(inv: dict, m: NWBMapping) -> str:
    """The fix when processing/<behavior_module> holds no series: the [data.nwb] keys that read
    the series of the other processing modules (the LFP's module and the latents left out)."""
    from pynwb.base import TimeSeries
    from pynwb.ecephys import ElectricalSeries

    mods: dict[str, list] = {}
    for p, o in inv.items():
        parts = p.split("/")
        if (parts[0] == "processing" and len(parts) > 2 and parts[1] != m.ecephys_module and p != m.latents
                and isinstance(o, TimeSeries) and not isinstance(o, ElectricalSeries)):  # fmt: skip
            mods.setdefault(parts[1], []).append((p, o))
    if not mods:
        return ("Set mapping.outputs (output name -> series, e.g. x = \"hand_position[0]\"), mapping.behavior "
                "(series paths) or mapping.behavior_module.")  # fmt: skip
    mod, series = next(iter(mods.items()))
    own, short = [], []  # (output name, series spec): named after the series; x, y / vx, vy for positions / velocities
    for p, ts in series:
        unique = sum(q.rsplit("/", 1)[-1] == ts.name and isinstance(o, TimeSeries) for q, o in inv.items()) == 1
        ref, names = (ts.name if unique else p), _names(p, ts)
        low = ts.name.lower()
        rank = 0 if "pos" in low else 1 if "vel" in low else 2
        for j, n in enumerate(names):
            spec = ref if len(names) == 1 else f"{ref}[{j}]"
            own.append((n, spec))
            short.append((rank, ("v" if rank else "") + "xyz"[j] if rank < 2 and 1 < len(names) <= 3 else n, spec))
    short.sort(key=lambda r: r[0])  # positions, velocities, the rest
    outputs = [(n, spec) for _, n, spec in short] if len({r[1] for r in short}) == len(short) else own
    others = "".join(f' (or "{x}")' for x in list(mods)[1:])
    table = "\n".join(f"    {_toml_key(n)} = {json.dumps(spec)}" for n, spec in outputs)
    return (f"Series that look like behaviour are in processing/{mod}: to read them, set in the distill config's "
            f"[data.nwb] table\n    behavior_module = \"{mod}\"{others}\n"
            f"(outputs named after the series: {', '.join(n for n, _ in own)}), or name the outputs yourself:\n"
            f"    [data.nwb.outputs]\n{table}")  # fmt: skip


@_readable
def describe_file(path: str | Path, mapping: NWBMapping | None = None, where: str = "the default mapping") -> tuple[str, bool]:
    """`rtdecode info FILE.nwb`: every object in the file, then what `mapping` (default: the
    default mapping) reads from it, or why it cannot and what to set. Returns (text, readable)."""
    from pynwb import NWBHDF5IO

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such NWB file")
    with NWBHDF5IO(str(path), "r") as io:
        inv = inventory(io.read())
        listing = _describe(inv)
        try:
            li = lfp_info(path, inv, mapping or NWBMapping())[0]
        except NWBMappingError:
            li = None
    lines = [f"{path} contains:", listing, ""]
    try:
        s = read_session(path, mapping)
    except NWBMappingError as e:
        text = str(e)
        problem = text.split(". The file contains:")[0].rstrip(".")
        fix = text.rsplit("\n", 1)[-1] if "\n" in text else ""  # a one-line message says its fix itself
        # a key to set (the message lists the file) or a fault of the data, whose message says its own fix
        hint = ["Set it in a distill config's [data.nwb] table (README, 'Data: NWB and the simulator')."] \
            if ". The file contains:" in text else []  # fmt: skip
        return "\n".join(lines + [f"{where} cannot read it: {problem}.", *([fix] if fix else []), *hint]), False
    n, c = s.lfp.shape
    if li is None or (li.scale == 1.0 and li.gain is None and li.offset == 0.0):
        unit = "microvolts as stored"
    else:
        unit = f"read in microvolts (x {li.scale:g}" + (" x channel_conversion" if li.gain is not None else "")
        unit += (f", {li.offset:+g} uV offset)" if li.offset else ")")
    lines += [
        f"{where} reads:",
        f"  LFP      {li.path if li else '?'}: {c} channels at {s.lfp_rate:g} Hz, {n / s.lfp_rate:.1f} s from t = {s.t0:g} s, {unit}",
        f"  spikes   {s.spikes.shape[1]} units, binned at {s.bin_width * 1e3:g} ms on the LFP's time base ({s.spikes.shape[0]} bins)",
        f"  behaviour {len(s.behavior_names)} outputs at the bin centres: "
        + ", ".join(f"{nm} [{u}]" if u else nm for nm, u in zip(s.behavior_names, s.behavior_units or [""] * len(s.behavior_names))),
        f"  session  {s.session_id}, subject {s.subject}",
    ]  # fmt: skip
    if s.meta.get("behavior_filled_bins"):
        lines.append("  (NaN or infinite behaviour, filled by linear interpolation in time: "
                     + ", ".join(f"{k} {v} bins" for k, v in s.meta["behavior_filled_bins"].items()) + ")")  # fmt: skip
    if hasattr(s.lfp, "close"):
        s.lfp.close()
    return "\n".join(lines), True


def _fill_behavior(path, behavior: np.ndarray, names: list[str]) -> tuple[np.ndarray, dict]:
    """Behaviour that is NaN or infinite at some bins (tracking dropouts): filled by linear
    interpolation in time between the nearest finite bins (held at the ends), with a warning
    per output saying how many bins and the longest run. An output with fewer than 2 finite
    bins is refused. Returns (behaviour, {output: filled bins})."""
    bad = ~np.isfinite(behavior)
    if not bad.any():
        return behavior, {}
    filled, k = {}, np.arange(len(behavior))
    for j in np.flatnonzero(bad.any(0)):
        b = bad[:, j]
        if (~b).sum() < 2:
            raise NWBMappingError(f"{path}: behaviour output {names[j]!r} is NaN or infinite at {b.sum()} of {len(b)} bins: "
                                  "nothing to decode; leave it out (mapping.outputs) or fix the series")  # fmt: skip
        behavior[b, j] = np.interp(k[b], k[~b], behavior[~b, j])
        edges = np.diff(np.concatenate([[0], b.astype(np.int8), [0]]))
        longest = int((np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)).max())
        filled[names[j]] = int(b.sum())
        logging.getLogger(__name__).warning(
            "%s: behaviour %r is NaN or infinite at %d of %d bins (%.1f%%, longest run %d bins): filled by linear "
            "interpolation in time", path, names[j], b.sum(), len(b), 100 * b.mean(), longest)  # fmt: skip
    return behavior, filled


def _bin_edges(es, n_bins: int, spb: int, bin_width: float) -> np.ndarray | None:
    """An LFP stamped sample by sample: its bins' edges (n_bins + 1) in the file's time, from its
    own stamps (the stamp of each bin's first sample), so that spikes and behaviour follow its
    clock where it drifts from the nominal rate. None for an LFP given by starting_time and rate."""
    if es.timestamps is None or n_bins == 0:
        return None
    n = len(es.timestamps)
    stop = min(n_bins * spb + 1, n)
    e = np.asarray(es.timestamps[0:stop:spb], np.float64)
    if e.size == n_bins:  # the last bin ends at the file's end: one period past its last stamp
        e = np.append(e, float(es.timestamps[n - 1]) + bin_width / spb)
    return e[: n_bins + 1]


@_readable
def read_session(path: str | Path, mapping: NWBMapping | dict | None = None, lazy: bool = True, spikes: bool = True,
                 fill_behavior: bool = True, behavior_optional: bool = False) -> Session:  # fmt: skip
    """Read one session. With `lazy`, `session.lfp` stays on disk (a LazyArray). `spikes=False`:
    no units are read (the session has 0 units; `rtdecode calibrate` needs only LFP and behaviour).
    `fill_behavior=False`: NaN/Inf behaviour (tracking dropouts) is kept, not interpolated.
    `behavior_optional`: a file with no behaviour gives a session with 0 outputs (label-free
    renormalisation reads only the LFP) instead of an error."""
    from pynwb import NWBHDF5IO
    from pynwb.base import TimeSeries
    from pynwb.behavior import SpatialSeries

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such NWB file")
    positions: list[str] = []  # outputs read from SpatialSeries of a Position container: velocity derived
    m = NWBMapping.from_dict(mapping) if isinstance(mapping, dict) else (mapping or NWBMapping())
    with NWBHDF5IO(str(path), "r") as io:
        nwb = io.read()
        inv = inventory(nwb)
        meta_all: dict = {}
        if META_NAME in nwb.scratch:
            try:
                meta_all = json.loads(str(nwb.get_scratch(META_NAME)))
            except (ValueError, TypeError):
                meta_all = {}
        bin_width = m.bin_width or float(meta_all.get("bin_width", 0.01))
        # LFP
        li, es = lfp_info(path, inv, m, bin_width)
        spb = li.rate * bin_width
        if abs(spb - round(spb)) > 1e-6 or round(spb) < 1:
            raise NWBMappingError(f"{path}: {li.path} is sampled at {li.rate:g} Hz: bins of {bin_width} s are {spb:g} samples, "
                                  "not a whole number; choose mapping.bin_width so that rate x bin_width is whole")  # fmt: skip
        spb = int(round(spb))
        n_bins = li.n_samples // spb
        lfp = LazyArray(path, li.dataset, n_bins * spb, li.n_channels, li.scale, li.gain, li.offset)
        t0 = li.t0
        edges = _bin_edges(es, n_bins, spb, bin_width)
        # spikes
        if spikes:
            counts, unit_ids = read_units(path, inv, m, t0, bin_width, n_bins, edges)
        else:
            counts, unit_ids = np.zeros((n_bins, 0), np.int64), np.zeros(0, np.int64)
        # behaviour
        t_bins = t0 + (np.arange(n_bins) + 0.5) * bin_width if edges is None else 0.5 * (edges[:-1] + edges[1:])
        if m.outputs:
            cols, names, units = _outputs(path, inv, m, t_bins, bin_width)
        else:
            if m.behavior:
                paths = [(p, None) for p in m.behavior]
            elif meta_all.get("behavior") and all(b["path"] in inv for b in meta_all["behavior"]):
                paths = [(b["path"], b["names"]) for b in meta_all["behavior"]]
            else:
                pre = f"processing/{m.behavior_module}/"
                paths = [(p, None) for p, o in inv.items() if p.startswith(pre) and isinstance(o, TimeSeries)]
            if not paths and behavior_optional:
                cols, names, units = [np.zeros((n_bins, 0), np.float32)], [], []
            elif not paths:
                _fail(path, f"no behaviour: nothing under processing/{m.behavior_module}, and mapping.outputs and "
                      "mapping.behavior are empty", inv, _behavior_hint(inv, m))  # fmt: skip
            else:
                cols, names, units = [], [], []
            for p, nm in paths:
                ts = inv.get(p)
                if not isinstance(ts, TimeSeries):
                    _fail(path, f"mapping.behavior names {p!r}, which is not a TimeSeries/SpatialSeries here", inv,
                          "Use paths of series listed above.")  # fmt: skip
                x = _at_bins(ts, t_bins, bin_width, path, p)
                cols.append(x)
                nms = nm if nm is not None and len(nm) == x.shape[1] else _names(p, ts)
                names += nms
                units += [_unit(ts)] * len(nms)
                if isinstance(ts, SpatialSeries) and type(ts.parent).__name__ == "Position" and x.shape[1] <= 3:
                    positions += nms
        behavior = np.ascontiguousarray(np.concatenate(cols, 1), dtype=np.float32)
        behavior, filled = _fill_behavior(path, behavior, names) if fill_behavior else (behavior, {})
        if m.derive_velocity:
            behavior, names, units = derive_velocity(behavior, names, units, bin_width, positions)
        latents = None
        if m.latents and isinstance(inv.get(m.latents), TimeSeries):
            latents = _at_bins(inv[m.latents], t_bins, bin_width)
        session_id = str(nwb.session_id or path.stem)
        subject = str(nwb.subject.subject_id) if nwb.subject is not None and nwb.subject.subject_id else "unknown"
    meta = dict(meta_all.get("meta", {}))
    if filled:
        meta["behavior_filled_bins"] = filled
    s = Session(session_id, subject, bin_width, counts, unit_ids, lfp, li.rate, li.channel_ids, behavior, names, t0, latents,
                meta, behavior_units=units)  # fmt: skip
    s.source_file = str(path)  # where it came from (not part of the session's data): messages that compare sessions name it
    if not lazy:
        s.lfp = np.asarray(lfp)
        lfp.close()
    return s
