"""rtdecode.recording: the project's .npz recording format."""

from __future__ import annotations

import numpy as np
import pytest

from rtdecode.recording import Recording, RecordingError


def make(n=500, ch=3, behavior=True) -> Recording:
    rng = np.random.default_rng(0)
    kw = {}
    if behavior:
        kw = dict(behavior=rng.normal(size=(n // 10, 2)), behavior_names=["vx", "vy"], behavior_rate=100.0)
    return Recording(rng.normal(size=(n, ch)), 1000.0, [f"c{i}" for i in range(ch)], meta={"subject": "m1"}, **kw)


@pytest.mark.parametrize("behavior", [True, False])
def test_round_trip(tmp_path, behavior):
    rec = make(behavior=behavior)
    path = tmp_path / "sub" / "rec.npz"
    rec.save(path)
    back = Recording.load(path)
    assert back.data.dtype == np.float32 and back.data.flags.c_contiguous
    np.testing.assert_array_equal(back.data, rec.data)
    assert back.sampling_rate == 1000.0 and back.channel_names == ["c0", "c1", "c2"]
    assert back.meta == {"subject": "m1"}
    if behavior:
        np.testing.assert_array_equal(back.behavior, rec.behavior)
        assert back.behavior_names == ["vx", "vy"] and back.behavior_rate == 100.0
    else:
        assert back.behavior is None and back.behavior_names is None
    assert [p.name for p in path.parent.iterdir()] == ["rec.npz"], "temporary file left behind"


def test_truncated_file_gives_clear_error(tmp_path):
    path = tmp_path / "rec.npz"
    make().save(path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(RecordingError, match=r"rec\.npz: not a readable rtdecode recording"):
        Recording.load(path)


def test_foreign_or_newer_or_missing_file(tmp_path):
    other = tmp_path / "other.npz"
    np.savez(other, x=np.zeros(3))
    with pytest.raises(RecordingError, match="field 'format'"):
        Recording.load(other)
    newer = tmp_path / "newer.npz"
    np.savez(newer, format=np.array("rtdecode-recording"), version=np.array(99), data=np.zeros((2, 2)),
             sampling_rate=np.array(1.0))
    with pytest.raises(RecordingError, match="version' is 99.*upgrade"):
        Recording.load(newer)
    with pytest.raises(RecordingError, match="no such recording"):
        Recording.load(tmp_path / "absent.npz")


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(data=np.zeros(10), sampling_rate=1.0), "n_samples, n_channels"),
        (dict(data=np.zeros((10, 2)), sampling_rate=0.0), "sampling_rate"),
        (dict(data=np.zeros((10, 2)), sampling_rate=1.0, channel_names=["a"]), "1 channel_names for 2"),
        (dict(data=np.zeros((10, 2)), sampling_rate=1.0, behavior=np.zeros((2, 1))), "behavior_rate"),
    ],
)
def test_invalid_values_are_refused(kw, match):
    with pytest.raises(RecordingError, match=match):
        Recording(**kw)
