"""The project's own recording format: one .npz file (numpy arrays only, no pickle).

Keys: ``format`` ("rtdecode-recording"), ``version`` (int), ``data`` (n_samples, n_channels)
float32, ``sampling_rate`` (scalar), optional ``channel_names`` (str array),
``behavior`` (n_bins, n_outputs) float32, ``behavior_names``, ``behavior_rate``, and
``meta`` (a JSON string). Used by `rtdecode replay` and by the tests.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FORMAT = "rtdecode-recording"
VERSION = 1


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
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **arrays)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path) -> "Recording":
        path = Path(path)
        if not path.is_file():
            raise RecordingError(f"{path}: no such recording file")
        try:
            with open(path, "rb") as f:  # our handle: np.load leaks its own on a corrupt zip
                z = np.load(f, allow_pickle=False)
                if not isinstance(z, np.lib.npyio.NpzFile):
                    raise ValueError("a single .npy array, not an .npz archive")
                with z:
                    arrays = {k: z[k] for k in z.files}
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
            raise RecordingError(
                f"{path}: not a readable rtdecode recording (.npz): {type(e).__name__}: {e}. "
                f"Re-create it (Recording.save) or check that the copy is complete."
            ) from None
        fmt = str(arrays.get("format", ""))
        if fmt != FORMAT:
            raise RecordingError(f"{path}: field 'format' is {fmt!r}, expected {FORMAT!r}: not an rtdecode recording")
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
