"""Fixtures: small real student bundles (tests/export/students.py)."""

from __future__ import annotations

import pytest

from tests.export.students import student_bundle


@pytest.fixture(scope="session")
def window_bundle(tmp_path_factory):
    return student_bundle(tmp_path_factory.mktemp("exp") / "window", "window")


@pytest.fixture(scope="session")
def streaming_bundle(tmp_path_factory):
    return student_bundle(tmp_path_factory.mktemp("exp") / "streaming", "streaming")


@pytest.fixture(scope="session")
def shift_bundle(tmp_path_factory):
    """A streaming bundle in the older state layout (shift_v0), as written before the ring."""
    return student_bundle(tmp_path_factory.mktemp("exp") / "shift", "streaming", layout="shift_v0")
