"""Forms of the "Identify a specimen" pages (input shape only; rules live in the services).

The upload form checks nothing itself but the shape of its input: the service reports every reason
at once (missing photos, contact details, the publication choice), so the form shows them together.
"""

from __future__ import annotations

from django import forms

from collection.models import CANDIDATE_FILTER_KINDS, ImageLicence
from identification.models import DeclaredSide

SIDE_CHOICES = [
    (DeclaredSide.UNKNOWN, "Not sure"),
    (DeclaredSide.OBVERSE, "Obverse"),
    (DeclaredSide.REVERSE, "Reverse"),
]

# The two drop zones: which side each one is for.
PHOTO_ZONES = ((1, DeclaredSide.OBVERSE), (2, DeclaredSide.REVERSE))

LICENCE_CHOICES = [
    (ImageLicence.CC_BY.value, "Yes, under CC BY 4.0: anyone may reuse them, crediting you"),
    (ImageLicence.CC0.value, "Yes, under CC0: anyone may reuse them, no credit needed"),
    (ImageLicence.NONE.value, "No, do not publish my photos: only the identification is recorded"),
]


class SubmissionForm(forms.Form):
    photo_1 = forms.FileField(label="Obverse", required=False)
    photo_2 = forms.FileField(label="Reverse", required=False)
    sides_unsure = forms.BooleanField(label="I am not sure which side is which", required=False)
    # Older pages and scripts name each photo's side; the page itself says it with the drop zone.
    side_1 = forms.ChoiceField(choices=SIDE_CHOICES, required=False)
    side_2 = forms.ChoiceField(choices=SIDE_CHOICES, required=False)
    notes = forms.CharField(label="Notes", widget=forms.Textarea(attrs={"rows": 3}), required=False)
    requester_name = forms.CharField(label="Your name", max_length=200, required=False)
    requester_email = forms.CharField(
        label="Your email", max_length=254, required=False, widget=forms.EmailInput(attrs={"autocomplete": "email"})
    )
    photo_licence = forms.ChoiceField(
        label="May we publish your photos?", choices=LICENCE_CHOICES, required=False, widget=forms.RadioSelect
    )
    photo_credit = forms.CharField(label="Credit my photos as", max_length=200, required=False)
    idempotency_key = forms.UUIDField(required=False, widget=forms.HiddenInput)

    def files_and_sides(self) -> tuple[list, list[str]]:
        """The photos given, each with its side: the zone's, unless the sender is not sure (or said another)."""
        files, sides = [], []
        unsure = self.cleaned_data.get("sides_unsure")
        for n, zone_side in PHOTO_ZONES:
            upload = self.cleaned_data.get(f"photo_{n}")
            if upload:
                files.append(upload)
                said = self.cleaned_data.get(f"side_{n}")
                sides.append(said or (DeclaredSide.UNKNOWN if unsure else zone_side))
        return files, sides


class CandidateFilterForm(forms.Form):
    """Narrow candidates (``identification.search.NARROWING_FIELDS``): a concept slug for each kind
    (blank: any), a date range, and the letters of a legend the sender can read."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for kind in CANDIDATE_FILTER_KINDS:
            self.fields[kind] = forms.CharField(required=False)
        for end in ("date_from", "date_to"):
            self.fields[end] = forms.IntegerField(required=False, min_value=-3000, max_value=3000)
        self.fields["legend"] = forms.CharField(required=False, max_length=200)


class ObjectChoiceForm(forms.Form):
    """Which object found in which photo is the coin (indices into ``SubmissionImage.detections``)."""

    position = forms.IntegerField(min_value=0)
    index = forms.IntegerField(min_value=0)
