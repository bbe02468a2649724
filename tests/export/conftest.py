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
