"""The Review & labels page: triage by risk, the queue ranks uncertain cases first, label entry."""

from __future__ import annotations

from tests.dashboard.clinic import assert_clean, clinic, frame, page  # noqa: F401 (fixture)


def test_triage_lists_the_riskiest_first_and_the_queue_the_most_uncertain_first(clinic):
    at = page("review", "clinician")
    assert_clean(at)
    triage, queue = frame(at, 0), frame(at, 1)
    assert triage["p_malignant"].is_monotonic_decreasing
    assert set(triage["request_id"]) == {clinic["uncertain"], clinic["confident"]}
    assert queue["request_id"].tolist() == [clinic["uncertain"], clinic["confident"]]
    assert queue["uncertainty"].iloc[0] > queue["uncertainty"].iloc[1]


def test_a_clinician_labels_a_case(clinic):
    store = clinic["store"]
    at = page("review", "clinician", user="dr_kim")
    at.selectbox(key="label_case").select(clinic["confident"])
    at.selectbox(key="label_diagnosis").select("BKL")
    at.text_input(key="label_note").input("seborrhoeic keratosis on dermoscopy")
    at = at.button(key="label_save").click().run()
    assert_clean(at)
    labelled = store.labelled_predictions()
    assert labelled["request_id"].tolist() == [clinic["confident"]]
    assert labelled["diagnosis"].tolist() == ["BKL"]
    assert labelled["labelled_by"].tolist() == ["dr_kim"]
    assert labelled["label_source"].tolist() == ["review"]
    assert any("stored" in s.value for s in at.success)
    # a labelled case leaves the queue
    assert frame(at, 1)["request_id"].tolist() == [clinic["uncertain"]]


def test_a_viewer_cannot_open_the_review_page(clinic):
    at = page("review", "viewer")
    assert not at.exception
    assert any("clinician" in e.value for e in at.error)
    assert not at.dataframe


def test_the_queue_shows_its_signals_and_names_a_weighting_that_ranks_nothing(clinic):
    at = page("review", "clinician")
    assert {"margin", "ood"} <= set(frame(at, 1).columns)
    for name in ("entropy", "margin", "threshold", "ood"):
        at.slider(key=f"review_weight_{name}").set_value(0.0)
    at = at.run()
    assert any("at least one above 0" in e.value for e in at.error)
    assert len(at.dataframe) == 1  # the triage table only


def test_no_diagnosis_is_preselected_and_the_queue_says_why(clinic):
    at = page("review", "clinician")
    assert at.selectbox(key="label_diagnosis").value is None
    at.selectbox(key="label_case").select(clinic["uncertain"])
    at = at.button(key="label_save").click().run()
    assert any("Choose the diagnosis first" in e.value for e in at.error)
    assert clinic["store"].labelled_predictions().empty
    assert any(i.value.startswith("**Why this case is in the queue:**") for i in at.info)
