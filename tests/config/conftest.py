"""Fixtures of the site-wide tests: the world every URL can be built from."""

from __future__ import annotations

import pytest

from tests.config.world import World, build_world


@pytest.fixture
def world(settings, tmp_path, volunteer, curator, admin_user) -> World:
    return build_world(settings, tmp_path, volunteer=volunteer, curator=curator, admin_user=admin_user)
