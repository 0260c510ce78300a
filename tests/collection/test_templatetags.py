"""collection.templatetags.collection_tags: the helpers pages use to word things."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from collection.templatetags.collection_tags import age


def test_age_says_under_a_minute_for_something_just_sent():
    assert age(timezone.now() - timedelta(seconds=20)) == "under a minute"


def test_age_counts_minutes_and_hours_once_there_are_some():
    assert age(timezone.now() - timedelta(minutes=5, seconds=3)) == "5\xa0minutes"
    assert age(timezone.now() - timedelta(hours=2, minutes=1)).startswith("2\xa0hours")


def test_age_of_nothing_is_empty():
    assert age(None) == ""
