"""Forms of the "Identify a specimen" pages (input shape only; rules live in the services)."""

from __future__ import annotations

from django import forms

from collection.models import CANDIDATE_FILTER_KINDS
from identification.models import DeclaredSide

SIDE_CHOICES = [
    (DeclaredSide.UNKNOWN, "Not sure"),
    (DeclaredSide.OBVERSE, "Obverse"),
    (DeclaredSide.REVERSE, "Reverse"),
]


class SubmissionForm(forms.Form):
    photo_1 = forms.FileField(label="Photo", required=True)
    side_1 = forms.ChoiceField(label="Side", choices=SIDE_CHOICES, required=False)
    photo_2 = forms.FileField(label="Second photo (other side, optional)", required=False)
    side_2 = forms.ChoiceField(label="Side", choices=SIDE_CHOICES, required=False)
    notes = forms.CharField(label="Notes (optional)", widget=forms.Textarea(attrs={"rows": 3}), required=False)
    requester_name = forms.CharField(label="Your name", max_length=200, required=False)
    requester_email = forms.EmailField(label="Your email", required=False)

    def files_and_sides(self) -> tuple[list, list[str]]:
        files, sides = [], []
        for n in (1, 2):
            upload = self.cleaned_data.get(f"photo_{n}")
            if upload:
                files.append(upload)
                sides.append(self.cleaned_data.get(f"side_{n}") or DeclaredSide.UNKNOWN)
        return files, sides


class CandidateFilterForm(forms.Form):
    """Narrow candidates by metadata: a concept slug for each kind they can be narrowed by (blank: any)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for kind in CANDIDATE_FILTER_KINDS:
            self.fields[kind] = forms.CharField(required=False)


class ObjectChoiceForm(forms.Form):
    """Which object found in which photo is the coin (indices into ``SubmissionImage.detections``)."""

    position = forms.IntegerField(min_value=0)
    index = forms.IntegerField(min_value=0)
