"""One source for each vocabulary: the places that use concept kinds, steps and status groups read it.

Each test names what would drift apart if a list were written twice again.
"""

from __future__ import annotations

from collection.filtersets import FACET_KINDS, ConceptSlugFilter, ItemFilterSet
from collection.models import CANDIDATE_FILTER_KINDS, KEY_KINDS, ConceptKind
from identification.api.serializers import CandidateFiltersSerializer
from identification.forms import CandidateFilterForm
from identification.models import ProcessingStep, Submission, SubmissionStatus
from mlcore.dataset import METADATA_FIELDS
from mlcore.pipeline import STEPS
from review.services import DRAFT_FIELDS


class TestConceptKinds:
    def test_the_kinds_candidates_can_be_narrowed_by_are_what_the_form_and_the_api_accept(self):
        assert list(CandidateFilterForm().fields) == list(CANDIDATE_FILTER_KINDS)
        assert list(CandidateFiltersSerializer().fields) == list(CANDIDATE_FILTER_KINDS)
        assert "region" in CANDIDATE_FILTER_KINDS  # it was filterable in the search but not sendable

    def test_the_facets_are_the_concept_filters_the_filterset_declares(self):
        declared = [f.kind for f in ItemFilterSet.base_filters.values() if isinstance(f, ConceptSlugFilter)]
        assert list(FACET_KINDS) == declared and declared
        assert set(FACET_KINDS) <= set(ConceptKind.values)

    def test_the_key_kinds_are_what_mlcore_predicts_and_a_draft_describes(self):
        assert set(KEY_KINDS) == set(METADATA_FIELDS)
        assert set(KEY_KINDS) <= set(DRAFT_FIELDS) and set(CANDIDATE_FILTER_KINDS) >= set(KEY_KINDS)

    def test_every_kind_has_a_plural_for_headline_figures(self):
        plurals = {kind.value: kind.plural for kind in ConceptKind}
        assert plurals["authority"] == "Authorities" and plurals["object_type"] == "Object types"
        assert plurals["mint"] == "Mints" and plurals["category"] == "Categories"


class TestSteps:
    def test_the_status_page_knows_every_step_the_pipeline_reports_in_its_order(self):
        pipeline_steps = [step for step in ProcessingStep.values if step in STEPS]
        assert pipeline_steps == list(STEPS)


class TestStatusGroups:
    def test_each_status_is_in_exactly_the_groups_its_meaning_gives_it(self):
        def submission(status: str) -> Submission:
            return Submission(status=status)

        processing = {s for s in SubmissionStatus.values if not submission(s).is_finished_processing}
        narrowable = {s for s in SubmissionStatus.values if submission(s).can_narrow_candidates}
        open_ = {s for s in SubmissionStatus.values if submission(s).is_open}
        assert processing == {"received", "processing"}
        assert narrowable == set(SubmissionStatus.values) - processing - {"failed"}
        assert open_ == {"awaiting_review", "in_review", "needs_expert", "proposed"}
        assert open_ < narrowable
