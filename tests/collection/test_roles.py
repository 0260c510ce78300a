"""collection.roles and the demo users command."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import AnonymousUser, Group, User
from django.core.management import CommandError, call_command

from collection.roles import CURATOR, VOLUNTEER, ensure_role_groups, is_curator, is_volunteer

pytestmark = pytest.mark.django_db


class TestRoles:
    def test_groups_are_created_once_and_curators_may_change_items(self):
        ensure_role_groups()
        ensure_role_groups()
        assert Group.objects.filter(name__in=[VOLUNTEER, CURATOR]).count() == 2
        assert Group.objects.get(name=CURATOR).permissions.filter(codename="change_item").exists()

    def test_role_checks(self, volunteer, curator, admin_user):
        assert is_volunteer(volunteer) and not is_curator(volunteer)
        assert is_curator(curator) and is_volunteer(curator)
        assert is_curator(admin_user)
        assert not is_volunteer(AnonymousUser()) and not is_curator(AnonymousUser())


class TestCreateDemoUsers:
    def test_it_creates_the_personas_in_development(self, settings, capsys):
        settings.ENVIRONMENT = "development"
        call_command("create_demo_users")
        call_command("create_demo_users")  # idempotent
        assert User.objects.count() == 4
        # Two volunteers, so the demo can reach the consensus of two agreeing reviews.
        volunteers = [user for user in User.objects.all() if is_volunteer(user) and not is_curator(user)]
        assert len(volunteers) == settings.OBVERSE_REVIEW_CONSENSUS == 2
        assert is_curator(User.objects.get(username="curator"))
        assert User.objects.get(username="admin").is_superuser
        assert User.objects.get(username="volunteer").check_password("obverse-volunteer")
        assert "obverse-curator" in capsys.readouterr().out

    def test_it_refuses_outside_development(self, settings):
        settings.ENVIRONMENT = "production"
        with pytest.raises(CommandError):
            call_command("create_demo_users")
        assert User.objects.count() == 0
