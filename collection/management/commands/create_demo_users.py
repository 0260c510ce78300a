"""Create the demo users (volunteer, curator, admin) for a development installation and print them."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import Group, User
from django.core.management.base import BaseCommand, CommandError

from collection.roles import ensure_role_groups

# Two volunteers: a proposal needs OBVERSE_REVIEW_CONSENSUS (2) agreeing reviews, and one volunteer
# cannot review a submission twice.
DEMO_USERS = (
    ("volunteer", "volunteer", "obverse-volunteer", False, False),
    ("volunteer2", "volunteer", "obverse-volunteer2", False, False),
    ("curator", "curator", "obverse-curator", True, False),
    ("admin", None, "obverse-admin", True, True),
)


class Command(BaseCommand):
    help = "Create demo users volunteer/volunteer2/curator/admin with known passwords (development only)."

    def handle(self, *args, **options):
        if getattr(settings, "ENVIRONMENT", "production") != "development":
            raise CommandError("Demo users with known passwords are only created when OBVERSE_ENV=development.")
        ensure_role_groups()
        self.stdout.write("Demo users (development only):")
        for username, group, password, is_staff, is_superuser in DEMO_USERS:
            user, created = User.objects.get_or_create(username=username)
            if created:
                user.set_password(password)
                user.is_staff, user.is_superuser = is_staff, is_superuser
                user.save()
            if group:
                user.groups.add(Group.objects.get(name=group))
            self.stdout.write(f"  {username:<10} password: {password}{'' if created else '  (existing user)'}")
