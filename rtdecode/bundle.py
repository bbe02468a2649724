"""The decoder bundle: the one thing that crosses from offline to online.

A folder::

    manifest.json        schema version, input spec, signal chain, model I/O, outputs,
                         engines, provenance, sha256 of every other file
    model.onnx           the student and its decoder head
    engine-*.plan        optional TensorRT engines, one per GPU / TensorRT version

`load_bundle` validates everything before the runtime starts: a bundle that fails is
refused with a `BundleError` naming the file and the field and saying what to do.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._fs import make_temp_dir
from .dsp.spec import ChainSpec, ChainSpecError

FORMAT = "rtdecode-bundle"
SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
MODEL_KINDS = ("window", "streaming")
STATE_LAYOUTS = ("shift_v0", "ring_v1")  # ModelSpec.state_layout


INPUT_UNITS = ("uV", "µV", "microvolts")  # what input.unit may say: the chain is fit on microvolts


class BundleError(ValueError):
    """A bundle that cannot be used; says which file and field, and the remedy."""

    def __init__(self, path: Path | str, file: str, fieldname: str | None, problem: str, remedy: str = ""):
        self.path, self.file, self.field = Path(path), file, fieldname
        where = f"{Path(path) / file}" + (f" [{fieldname}]" if fieldname else "")
        msg = f"bundle {where}: {problem}"
        if remedy:
            msg += f". {remedy}"
        super().__init__(msg)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


@dataclass(frozen=True)
class StateSpec:
    """A recurrent state tensor of a streaming model: fed back from `output` to `input`.

    `inplace`: the graph reads `input` only to write one slot of it into `output` (a ring
    buffer, state layout "ring_v1"), so a backend may bind both to one buffer and update it
    in place; False (every bundle before the ring): the output is a new tensor, ping-pong."""

    input: str
    output: str
    shape: tuple[int, ...]
    inplace: bool = False

    def to_dict(self) -> dict:
        d = {"input": self.input, "output": self.output, "shape": list(self.shape)}
        return {**d, "inplace": True} if self.inplace else d


@dataclass(frozen=True)
class ModelSpec:
    """How to feed the ONNX graph.

    kind "window": input (1, window_bins, n_features) -> output (1, n_outputs), the
    decoded bin is the newest of the window.
    kind "streaming": input (1, 1, n_features) plus state tensors -> output (1, n_outputs)
    plus new states; the graph keeps `window_bins` of context in its state.
    `state_layout` (streaming): "shift_v0", caches of the W-1 previous bins shifted every
    step (bundles written before the ring; the default when the manifest has none), or
    "ring_v1", per-layer rings of W bins written one slot per step (offline.export).
    """

    file: str = "model.onnx"
    kind: str = "window"
    window_bins: int = 1
    input_name: str = "features"
    output_name: str = "behavior"
    state: tuple[StateSpec, ...] = ()
    opset: int | None = None
    state_layout: str = "shift_v0"

    def to_dict(self) -> dict:
        d = {
            "file": self.file,
            "kind": self.kind,
            "window_bins": self.window_bins,
            "input_name": self.input_name,
            "output_name": self.output_name,
            "state": [s.to_dict() for s in self.state],
            "opset": self.opset,
        }
        return {**d, "state_layout": self.state_layout} if self.state else d


@dataclass(frozen=True)
class EngineSpec:
    """A TensorRT engine stored in the bundle, with what it was built for."""

    file: str
    gpu_name: str
    compute_capability: str
    tensorrt_version: str
    precision: str = "fp32"
    parity: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "file": self.file,
            "gpu_name": self.gpu_name,
            "compute_capability": self.compute_capability,
            "tensorrt_version": self.tensorrt_version,
            "precision": self.precision,
            "parity": self.parity,
        }


@dataclass(frozen=True)
class Bundle:
    path: Path
    n_channels: int
    sampling_rate: float
    channel_names: tuple[str, ...] | None
    chain: ChainSpec
    model: ModelSpec
    output_names: tuple[str, ...]
    output_units: tuple[str, ...]
    engines: tuple[EngineSpec, ...]
    provenance: dict
    files: dict
    manifest: dict
    input_unit: str = "uV"  # the samples' unit the chain was fit on (bundles before it: microvolts)

    @property
    def model_path(self) -> Path:
        return self.path / self.model.file

    @property
    def n_features(self) -> int:
        return self.chain.n_features

    @property
    def n_outputs(self) -> int:
        return len(self.output_names)

    def describe(self) -> str:
        return (
            f"bundle {self.path}: {self.n_channels} ch @ {self.sampling_rate:g} Hz, "
            f"{self.chain.kind} chain, {self.chain.bin_width_s * 1e3:g} ms bins, {self.model.kind} model "
            f"({self.model.window_bins} bins), outputs {list(self.output_names)}"
        )


# ------------------------------------------------------------------------------------------
# writing


def write_bundle(
    path: str | Path,
    *,
    chain: ChainSpec,
    model_file: str | Path,
    model: ModelSpec,
    output_names: list[str],
    output_units: list[str] | None = None,
    channel_names: list[str] | None = None,
    provenance: dict | None = None,
    extra_files: dict[str, str | Path] | None = None,
    engines: list[EngineSpec] | None = None,
    overwrite: bool = False,
) -> Bundle:
    """Write a bundle folder atomically (built in a temporary folder, then renamed).

    `model_file` is copied in as `model.file`; a `<model>.data` external-data file next
    to it is copied too, so the dynamo ONNX exporter's output travels whole.
    `extra_files` maps names inside the bundle to files to copy (engines, reports).
    """
    path = Path(path)
    if not chain.normalized:
        raise BundleError(path, MANIFEST, "chain.norm_mean", "the chain has no normalisation statistics",
                          "fit them on training features (rtdecode.dsp.design.fit_normalization)")  # fmt: skip
    if path.exists() and not overwrite:
        raise BundleError(path, "", None, "already exists", "choose another path or pass overwrite=True")
    if output_units and len(output_units) != len(output_names):
        raise BundleError(path, MANIFEST, "outputs.units", f"has {len(output_units)} entries for {len(output_names)} outputs",
                          "give one unit per output ('' where unknown)")  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(path.parent, prefix=f".{path.name}.")  # the umask's permissions, unlike mkdtemp's 0700
    try:
        files: dict[str, str] = {}
        src = Path(model_file)
        shutil.copyfile(src, tmp / model.file)
        data = src.with_name(src.name + ".data")
        if data.exists():
            shutil.copyfile(data, tmp / (model.file + ".data"))
        for name, f in (extra_files or {}).items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, tmp / name)
        for p in sorted(tmp.rglob("*")):
            if p.is_file():
                files[p.relative_to(tmp).as_posix()] = sha256_file(p)
        manifest = {
            "format": FORMAT,
            "schema_version": SCHEMA_VERSION,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "input": {
                "n_channels": chain.n_channels,
                "sampling_rate": chain.fs,
                "channel_names": list(channel_names) if channel_names else None,
                "dtype": "float32",
                "unit": "uV",  # every training source is read in microvolts (NWB: the series' conversion applied)
            },
            "chain": chain.to_dict(),
            "model": model.to_dict(),
            "outputs": {
                "names": list(output_names),
                "units": list(output_units) if output_units else [""] * len(output_names),
            },
            "engines": [e.to_dict() for e in (engines or [])],
            "provenance": provenance or {},
            "files": files,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, default=_json_default))
        _parse(tmp, manifest)  # validate what we wrote before it becomes visible
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return load_bundle(path)


def update_manifest(path: str | Path, mutate, add_files: dict[str, str | Path] | None = None) -> Bundle:
    """Change a bundle in place: copy `add_files` in, let `mutate(manifest)` edit the
    manifest, rehash, validate and write the manifest atomically."""
    path = Path(path)
    load_bundle(path)  # refuse to touch a broken bundle
    manifest = json.loads((path / MANIFEST).read_text())
    for name, f in (add_files or {}).items():
        tmp = path / f".{name}.tmp"
        shutil.copyfile(f, tmp)
        os.replace(tmp, path / name)
        manifest["files"][name] = sha256_file(path / name)
    mutate(manifest)
    _parse(path, manifest)
    tmp = path / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=1, default=_json_default))
    os.replace(tmp, path / MANIFEST)
    return load_bundle(path)


def _json_default(o: Any):
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


# ------------------------------------------------------------------------------------------
# loading and validation


def load_bundle(path: str | Path, verify_hashes: bool = True) -> Bundle:
    """Read and validate a bundle; raise `BundleError` naming the file and field."""
    path = Path(path)
    if not path.is_dir():
        raise BundleError(path, "", None, "is not a folder" if path.exists() else "does not exist",
                          "pass the bundle folder written by `rtdecode distill` (it holds manifest.json)")  # fmt: skip
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise BundleError(path, MANIFEST, None, "is missing", "this folder is not a decoder bundle")
    try:
        manifest = json.loads(mpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleError(path, MANIFEST, None, f"is not valid JSON ({e})", "the file is corrupt: rebuild the bundle") from e
    bundle = _parse(path, manifest)
    if verify_hashes:
        for name, digest in manifest["files"].items():
            f = path / name
            if not f.is_file():
                raise BundleError(path, name, f"files.{name}", "is listed in the manifest but missing",
                                  "copy the whole bundle folder, or rebuild it")  # fmt: skip
            got = sha256_file(f)
            if got != digest:
                raise BundleError(path, name, f"files.{name}",
                                  f"sha256 mismatch (manifest {digest}, file {got}): the file is corrupt "
                                  "or was changed after the bundle was written",
                                  "copy the bundle again, or rebuild it")  # fmt: skip
    return bundle


def _req(path: Path, d: dict, key: str, where: str, typ, remedy: str = "rebuild the bundle") -> Any:
    if not isinstance(d, dict) or key not in d:
        raise BundleError(path, MANIFEST, f"{where}.{key}" if where else key, "is missing", remedy)
    v = d[key]
    if typ is not None and not isinstance(v, typ):
        tname = typ.__name__ if isinstance(typ, type) else "/".join(t.__name__ for t in typ)
        raise BundleError(path, MANIFEST, f"{where}.{key}" if where else key,
                          f"must be {tname}, got {type(v).__name__} ({v!r})", remedy)  # fmt: skip
    return v


def _parse(path: Path, m: dict) -> Bundle:
    if not isinstance(m, dict):
        raise BundleError(path, MANIFEST, None, "must hold a JSON object")
    fmt = m.get("format")
    if fmt != FORMAT:
        raise BundleError(path, MANIFEST, "format", f"is {fmt!r}, expected {FORMAT!r}", "this is not an rtdecode bundle")
    ver = _req(path, m, "schema_version", "", int)
    if ver > SCHEMA_VERSION:
        raise BundleError(path, MANIFEST, "schema_version",
                          f"is {ver}, this rtdecode reads up to {SCHEMA_VERSION}",
                          "upgrade rtdecode (pip install -U rtdecode) or rebuild the bundle with this version")  # fmt: skip
    if ver < 1:
        raise BundleError(path, MANIFEST, "schema_version", f"is {ver}, must be >= 1")
    inp = _req(path, m, "input", "", dict)
    n_ch = _req(path, inp, "n_channels", "input", int)
    if n_ch < 1:
        raise BundleError(path, MANIFEST, "input.n_channels", f"is {n_ch}, must be >= 1")
    fs = _req(path, inp, "sampling_rate", "input", (int, float))
    if not fs > 0:
        raise BundleError(path, MANIFEST, "input.sampling_rate", f"is {fs}, must be > 0 Hz")
    unit = inp.get("unit") or "uV"
    if unit not in INPUT_UNITS:
        raise BundleError(path, MANIFEST, "input.unit", f"is {unit!r}; the chain's statistics are in microvolts ('uV')",
                          "every rtdecode bundle is trained on microvolts: rebuild it, or for a stream in volts pass "
                          "--input-scale 1e6 to rtdecode run")  # fmt: skip
    names = inp.get("channel_names")
    if names is not None and (not isinstance(names, list) or len(names) != n_ch):
        raise BundleError(path, MANIFEST, "input.channel_names", f"must be null or a list of {n_ch} names")
    chain_d = _req(path, m, "chain", "", dict)
    try:
        chain = ChainSpec.from_dict(chain_d)
    except (ChainSpecError, TypeError, ValueError) as e:
        raise BundleError(path, MANIFEST, "chain", str(e)) from e
    if chain.n_channels != n_ch:
        raise BundleError(path, MANIFEST, "chain.n_channels", f"is {chain.n_channels}, input.n_channels is {n_ch}")
    if abs(chain.fs - fs) > 1e-9 * fs:
        raise BundleError(path, MANIFEST, "chain.fs", f"is {chain.fs}, input.sampling_rate is {fs}")
    if not chain.normalized:
        raise BundleError(path, MANIFEST, "chain.norm_mean", "is missing: the runtime needs training statistics")
    md = _req(path, m, "model", "", dict)
    kind = _req(path, md, "kind", "model", str)
    if kind not in MODEL_KINDS:
        raise BundleError(path, MANIFEST, "model.kind", f"is {kind!r}, must be one of {MODEL_KINDS}")
    wb = _req(path, md, "window_bins", "model", int)
    if wb < 1:
        raise BundleError(path, MANIFEST, "model.window_bins", f"is {wb}, must be >= 1")
    state = []
    for i, s in enumerate(md.get("state") or []):
        try:
            state.append(StateSpec(str(s["input"]), str(s["output"]), tuple(int(x) for x in s["shape"]),
                                   bool(s.get("inplace", False))))  # fmt: skip
        except (KeyError, TypeError, ValueError) as e:
            raise BundleError(path, MANIFEST, f"model.state[{i}]", f"is malformed ({e!r})") from e
    if kind == "streaming" and not state:
        raise BundleError(path, MANIFEST, "model.state", "a streaming model needs at least one state tensor")
    layout = md.get("state_layout", "shift_v0")
    if layout not in STATE_LAYOUTS:
        raise BundleError(path, MANIFEST, "model.state_layout", f"is {layout!r}, this rtdecode knows {STATE_LAYOUTS}",
                          "upgrade rtdecode (pip install -U rtdecode) or export the bundle again")  # fmt: skip
    model = ModelSpec(
        file=_req(path, md, "file", "model", str),
        kind=kind,
        window_bins=wb,
        input_name=_req(path, md, "input_name", "model", str),
        output_name=_req(path, md, "output_name", "model", str),
        state=tuple(state),
        opset=md.get("opset"),
        state_layout=layout,
    )
    outs = _req(path, m, "outputs", "", dict)
    onames = _req(path, outs, "names", "outputs", list)
    if not onames:
        raise BundleError(path, MANIFEST, "outputs.names", "is empty: the model decodes nothing")
    units = outs.get("units") or [""] * len(onames)
    if len(units) != len(onames):
        raise BundleError(path, MANIFEST, "outputs.units", f"has {len(units)} entries, outputs.names has {len(onames)}")
    files = _req(path, m, "files", "", dict)
    if model.file not in files:
        raise BundleError(path, model.file, f"files.{model.file}", "the model file is not listed in the manifest")
    engines = []
    for i, e in enumerate(m.get("engines") or []):
        try:
            engines.append(EngineSpec(**e))
        except TypeError as ex:
            raise BundleError(path, MANIFEST, f"engines[{i}]", f"is malformed ({ex})") from ex
        if engines[-1].file not in files:
            raise BundleError(path, engines[-1].file, f"engines[{i}].file", "is not listed in files")
    return Bundle(
        path=path,
        n_channels=n_ch,
        sampling_rate=float(fs),
        channel_names=tuple(names) if names else None,
        chain=chain,
        model=model,
        output_names=tuple(str(x) for x in onames),
        output_units=tuple(str(x) for x in units),
        engines=tuple(engines),
        provenance=dict(m.get("provenance") or {}),
        files=dict(files),
        manifest=m,
        input_unit=str(unit),
    )
