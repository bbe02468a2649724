"""Sessions to and from NWB files (pynwb), with a small mapping for other layouts.

    write_session(session, "s00.nwb")
    s = read_session("s00.nwb")                                   # default layout
    s = read_session("theirs.nwb", NWBMapping(lfp="processing/ecephys_lfp/LFP/lfp",
                                              behavior=("processing/beh/BehavioralTimeSeries/hand_vel",)))

Layout written (and found by the defaults):
    processing/ecephys/LFP/lfp                        ElectricalSeries, microvolts (conversion 1e-6)
    units                                             Units table (spike times)
    processing/behavior/Position/position             SpatialSeries (x, y)
    processing/behavior/BehavioralTimeSeries/<name>   SpatialSeries velocity (vx, vy), TimeSeries others
    processing/simulation/latents                     TimeSeries (simulator only)
    scratch/rtdecode                                  JSON: behaviour names and order, meta

Reading: the LFP is not loaded; `session.lfp` is a `LazyArray` over the HDF5 dataset (shape,
slicing, np.asarray), so `rtdecode.dsp.compute_features` streams it block by block. Values
are returned in microvolts (the series' conversion applied unless it already is 1e-6 V).
Spikes are binned to `bin_width` on the LFP's time base; behaviour is read at bin centres
(linear interpolation unless it is already sampled there).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .session import Session

META_NAME = "rtdecode"


class NWBMappingError(ValueError):
    """The mapping does not fit the file; the message lists what the file contains."""


@dataclass(frozen=True)
class NWBMapping:
    """Which NWB object is which. Paths look like 'acquisition/ElectricalSeries',
    'processing/ecephys/LFP/lfp', 'processing/behavior/Position/position'."""

    lfp: str = ""  # "": the only ElectricalSeries in processing/<ecephys_module>, else in processing, else in acquisition
    ecephys_module: str = "ecephys"
    units: str = "units"
    behavior: tuple[str, ...] = ()  # (): every TimeSeries/SpatialSeries under processing/<behavior_module>
    behavior_module: str = "behavior"
    latents: str = "processing/simulation/latents"  # optional; read when present
    bin_width: float = 0.0  # s; 0: the file's rtdecode metadata, else 0.01

    @classmethod
    def from_dict(cls, d: dict, where: str = "[data.nwb]") -> "NWBMapping":
        from rtdecode.config import from_dict

        return from_dict(cls, d, where=where)


# ------------------------------------------------------------------------------------------
# lazy LFP


class LazyArray:
    """Rows [0, n_rows) of a 2-D HDF5 dataset, opened on first access, scaled to float32."""

    def __init__(self, path: str | Path, dataset: str, n_rows: int, n_cols: int, scale: float = 1.0):
        self.path, self.dataset, self.scale = str(path), dataset, float(scale)
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
        if self.scale != 1.0:
            x *= np.float32(self.scale)
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
    b = np.asarray(s.behavior, np.float32)
    common = dict(starting_time=float(s.t0 + s.bin_width / 2), rate=1.0 / s.bin_width)
    for sname, kind, cols in _series_groups(names):
        data = b[:, cols] if len(cols) > 1 else b[:, cols[0]]
        if kind == "spatial":
            ser = SpatialSeries(name=sname, data=data, reference_frame="workspace centre", unit="cm" if sname == "position" else "cm/s",
                                description=f"columns: {', '.join(names[c] for c in cols)}", **common)  # fmt: skip
        else:
            ser = TimeSeries(name=sname, data=data, unit="a.u.", description=f"column {sname}", **common)
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
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp.nwb", dir=path.parent)
    os.close(fd)
    try:
        with NWBHDF5IO(tmp, "w") as io:
            io.write(nwb)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# ------------------------------------------------------------------------------------------
# reading


def inventory(nwb) -> dict:
    """path -> object for every data interface and time series in the file."""
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
    from pynwb.base import TimeSeries

    lines = []
    for p, o in inv.items():
        t = type(o).__name__
        if isinstance(o, TimeSeries):
            shape = tuple(o.data.shape)
            rate = f"{o.rate:g} Hz" if o.rate is not None else "timestamps"
            lines.append(f"  {p} ({t}, shape {shape}, {rate})")
        elif p == "units":
            lines.append(f"  {p} (Units, {len(o.id)} units)")
        else:
            lines.append(f"  {p} ({t})")
    return "\n".join(lines) if lines else "  (no acquisition, processing or units)"


def _fail(path, what: str, inv: dict, fix: str):
    raise NWBMappingError(f"{path}: {what}. The file contains:\n{_describe(inv)}\n{fix}")


def _pick_lfp(path, inv: dict, m: NWBMapping):
    from pynwb.ecephys import ElectricalSeries

    if m.lfp:
        if m.lfp not in inv or not isinstance(inv[m.lfp], ElectricalSeries):
            _fail(path, f"mapping.lfp = {m.lfp!r} is not an ElectricalSeries in this file", inv,
                  "Set mapping.lfp to one of the ElectricalSeries paths above.")  # fmt: skip
        return m.lfp, inv[m.lfp]
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


def _times(ts, n: int) -> np.ndarray:
    if ts.timestamps is not None:
        return np.asarray(ts.timestamps[:n], np.float64)
    return float(ts.starting_time or 0.0) + np.arange(n) / float(ts.rate)


def _at_bins(ts, t_bins: np.ndarray, bin_width: float) -> np.ndarray:
    """A series' values (n_bins, k) at bin centres `t_bins`: slices when already on the grid."""
    n = ts.data.shape[0]
    if ts.timestamps is None and abs(float(ts.rate) * bin_width - 1.0) < 1e-9:
        j0 = (t_bins[0] - float(ts.starting_time or 0.0)) * float(ts.rate)
        if abs(j0 - round(j0)) < 1e-6 and 0 <= round(j0) and round(j0) + len(t_bins) <= n:
            j0 = int(round(j0))
            x = np.asarray(ts.data[j0 : j0 + len(t_bins)], np.float32)
            return x.reshape(len(t_bins), -1)
    x = np.asarray(ts.data[:], np.float64).reshape(n, -1)
    t = _times(ts, n)
    return np.stack([np.interp(t_bins, t, x[:, j]) for j in range(x.shape[1])], 1).astype(np.float32)


def _names(p: str, ts) -> list[str]:
    from pynwb.behavior import SpatialSeries

    k = 1 if ts.data.ndim == 1 else ts.data.shape[1]
    if k == 1:
        return [ts.name]
    if isinstance(ts, SpatialSeries) and k <= 3:
        return [f"{ts.name}_{c}" for c in "xyz"[:k]]
    return [f"{ts.name}_{j}" for j in range(k)]


def _bin_units(units, t0: float, bin_width: float, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    ids = np.asarray(units.id.data[:])
    st = units["spike_times"]
    times = np.asarray(st.target.data[:], np.float64)
    ends = np.asarray(st.data[:], np.int64)
    counts_per = np.diff(np.concatenate([[0], ends]))
    unit = np.repeat(np.arange(len(ids)), counts_per)
    b = np.floor((times - t0) / bin_width).astype(np.int64)
    ok = (b >= 0) & (b < n_bins)
    flat = np.bincount(unit[ok] * n_bins + b[ok], minlength=len(ids) * n_bins)
    return np.ascontiguousarray(flat.reshape(len(ids), n_bins).T.astype(np.int32)), ids


def read_session(path: str | Path, mapping: NWBMapping | dict | None = None, lazy: bool = True) -> Session:
    """Read one session. With `lazy`, `session.lfp` stays on disk (a LazyArray)."""
    from pynwb import NWBHDF5IO
    from pynwb.base import TimeSeries
    from pynwb.misc import Units

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such NWB file")
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
        lfp_path, es = _pick_lfp(path, inv, m)
        rate = float(es.rate) if es.rate is not None else float(1.0 / np.median(np.diff(es.timestamps[: min(10000, len(es.timestamps))])))
        t0 = float(es.starting_time or 0.0) if es.timestamps is None else float(es.timestamps[0])
        spb = rate * bin_width
        if abs(spb - round(spb)) > 1e-6:
            raise NWBMappingError(f"{path}: {lfp_path} is sampled at {rate:g} Hz: bins of {bin_width} s are {spb:g} samples, "
                                  "not a whole number; choose mapping.bin_width so that rate x bin_width is whole")  # fmt: skip
        spb = int(round(spb))
        n_bins = es.data.shape[0] // spb
        n_ch = es.data.shape[1] if es.data.ndim == 2 else 1
        scale = float(es.conversion) * 1e6
        if es.channel_conversion is not None:
            cc = np.asarray(es.channel_conversion[:], np.float64)
            if not np.allclose(cc, cc[0]):
                raise NWBMappingError(f"{path}: {lfp_path} has per-channel conversion factors; rtdecode reads one scale per series")
            scale *= float(cc[0])
        scale = 1.0 if abs(scale - 1.0) < 1e-9 else scale
        rows = np.asarray(es.electrodes.data[:], np.int64)
        table_ids = np.asarray(es.electrodes.table.id.data[:])
        channel_ids = table_ids[rows] if len(rows) == n_ch else np.arange(n_ch)
        lfp = LazyArray(path, es.data.name, n_bins * spb, n_ch, scale)
        # spikes
        units = inv.get(m.units) if m.units else None
        if not isinstance(units, Units):
            _fail(path, f"no spikes: mapping.units = {m.units!r} is not a Units table here", inv,
                  "Add a Units table (spike times), or point mapping.units at it.")  # fmt: skip
        if "spike_times" not in units.colnames:
            _fail(path, f"{m.units} has no spike_times column (columns: {list(units.colnames)})", inv, "Sort spikes first.")
        spikes, unit_ids = _bin_units(units, t0, bin_width, n_bins)
        # behaviour
        t_bins = t0 + (np.arange(n_bins) + 0.5) * bin_width
        if m.behavior:
            paths = [(p, None) for p in m.behavior]
        elif meta_all.get("behavior") and all(b["path"] in inv for b in meta_all["behavior"]):
            paths = [(b["path"], b["names"]) for b in meta_all["behavior"]]
        else:
            pre = f"processing/{m.behavior_module}/"
            paths = [(p, None) for p, o in inv.items() if p.startswith(pre) and isinstance(o, TimeSeries)]
        if not paths:
            _fail(path, f"no behaviour: nothing under processing/{m.behavior_module} and mapping.behavior is empty", inv,
                  "Set mapping.behavior to the SpatialSeries/TimeSeries paths to decode (or mapping.behavior_module).")  # fmt: skip
        cols, names = [], []
        for p, nm in paths:
            ts = inv.get(p)
            if not isinstance(ts, TimeSeries):
                _fail(path, f"mapping.behavior names {p!r}, which is not a TimeSeries/SpatialSeries here", inv,
                      "Use paths of series listed above.")  # fmt: skip
            x = _at_bins(ts, t_bins, bin_width)
            cols.append(x)
            names += nm if nm is not None and len(nm) == x.shape[1] else _names(p, ts)
        behavior = np.concatenate(cols, 1)
        latents = None
        if m.latents and isinstance(inv.get(m.latents), TimeSeries):
            latents = _at_bins(inv[m.latents], t_bins, bin_width)
        session_id = str(nwb.session_id or path.stem)
        subject = str(nwb.subject.subject_id) if nwb.subject is not None and nwb.subject.subject_id else "unknown"
    meta = dict(meta_all.get("meta", {}))
    s = Session(session_id, subject, bin_width, spikes, unit_ids, lfp, rate, channel_ids, behavior, names, t0, latents, meta)
    if not lazy:
        s.lfp = np.asarray(lfp)
        lfp.close()
    return s
