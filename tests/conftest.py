"""Shared pytest fixtures.

``require_ngspice``: skip a test when ngspice is not installed -- but fail it when the
environment variable ``CI`` is ``"true"``, where the ngspice reference tests are mandatory.
Use it as ``pytestmark = pytest.mark.usefixtures("require_ngspice")`` or as a fixture argument.
Tests marked ``@pytest.mark.ngspice`` get it automatically.
"""
import os
import shutil

import pytest


def ngspice_missing_action():
    """None if ngspice is available, else ``pytest.fail`` (CI) or ``pytest.skip``."""
    if shutil.which("ngspice"):
        return None
    return pytest.fail if os.environ.get("CI", "").lower() == "true" else pytest.skip


@pytest.fixture
def require_ngspice():
    action = ngspice_missing_action()
    if action is pytest.fail:
        pytest.fail("ngspice not installed, and it is mandatory in CI (CI=true)")
    elif action is pytest.skip:
        pytest.skip("ngspice not installed")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("ngspice") and "require_ngspice" not in item.fixturenames:
            item.fixturenames.insert(0, "require_ngspice")
