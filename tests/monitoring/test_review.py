"""The review queue (uncertain first, diversified), the review cases query, label entry and import."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from skinlesion.errors import DataError, PermissionDeniedError
from skinlesion.monitoring.review import (RankingWeights, ground_truth_labels, image_hashes,
                                          import_ground_truth, record_label, review_queue,
                                          uncertainty, version_references)
from skinlesion.schema import CLASSES
from skinlesion.store import PredictionRecord, Store

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
STATS = dict(width=600.0, height=450.0, brightness=0.5, contrast=0.2, saturation=0.3, mean_r=0.6,
             mean_g=0.5, mean_b=0.4, sharpness=0.1)


def sha(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def record(p_mel: float, *, image: str, ts: datetime = T0, spread: float = 0.0,
           threshold: float = 0.5, **kw) -> PredictionRecord:
    """An answer with p(MEL) = ``p_mel``; ``spread`` of the benign mass goes evenly to the other
    benign classes (the rest to NV), so a high spread means a high entropy."""
    probs = dict.fromkeys(CLASSES, 0.0)
    probs["MEL"] = p_mel
    benign = ["NV", "BKL", "DF", "VASC"]
    for c in benign[1:]:
        probs[c] = (1 - p_mel) * spread / 3
    probs["NV"] = (1 - p_mel) * (1 - spread)
    return answer(probs, image=image, ts=ts, threshold=threshold, **kw)


def answer(probs: dict[str, float], *, image: str, ts: datetime = T0, threshold: float = 0.5,
           **kw) -> PredictionRecord:
    """An answer with class probabilities ``probs`` (missing classes 0); ``kw`` overrides the
    metadata, the image statistics or the model version."""
    probs = dict.fromkeys(CLASSES, 0.0) | probs
    p_mal = sum(probs[c] for c in ("MEL", "BCC", "AK", "SCC"))
    return PredictionRecord(**({"model_version": "v1"} | STATS | kw), source="api",
                            image_sha256=sha(image), ts=ts, probabilities=probs,
                            p_malignant=p_mal, predicted_class=max(probs, key=probs.get),
                            decision="refer" if p_mal >= threshold else "no referral",
                            threshold=threshold, latency_ms=10.0, device="cpu")


def frame(records: list[PredictionRecord]) -> pd.DataFrame:
    return pd.DataFrame([r.to_row() for r in records])


def test_uncertain_and_near_threshold_cases_rank_above_confident_ones():
    cases = frame([record(0.02, image="confident benign"), record(0.97, image="confident mel"),
                   record(0.48, image="near threshold"), record(0.2, image="spread", spread=0.9)])
    scores = uncertainty(cases)
    assert scores["uncertainty"].between(0, 1).all()
    assert scores.loc[2, "threshold_distance"] < 0.1 and scores.loc[0, "threshold_distance"] > 0.9
    assert scores.loc[3, "entropy"] > scores.loc[0, "entropy"]
    queue = review_queue(cases, k=4)
    order = [q for q in queue["image_sha256"]]
    assert order.index(sha("near threshold")) < order.index(sha("confident benign"))
    assert order.index(sha("spread")) < order.index(sha("confident mel"))
    assert queue["why"].str.contains("threshold").all()


def test_the_weights_decide_between_the_signals():
    cases = frame([record(0.5, image="on threshold"), record(0.05, image="spread", spread=1.0)])
    by_entropy = review_queue(cases, k=1, weights=RankingWeights(entropy=1, margin=0, threshold=0,
                                                                 ood=0))
    by_threshold = review_queue(cases, k=1, weights=RankingWeights(entropy=0, margin=0,
                                                                   threshold=1, ood=0))
    assert by_entropy["image_sha256"].iloc[0] == sha("spread")
    assert by_threshold["image_sha256"].iloc[0] == sha("on threshold")


def test_a_low_margin_case_ranks_above_a_confident_one_of_higher_entropy():
    # both benign and far from the threshold; "torn" splits between two classes (margin 0), while
    # "confident" is spread thinly (higher entropy) but its top class leads by 0.6
    cases = frame([answer({"NV": 0.7, "BKL": 0.1, "DF": 0.1, "VASC": 0.1}, image="confident"),
                   answer({"NV": 0.5, "BKL": 0.5}, image="torn")])
    scores = uncertainty(cases)
    assert scores.loc[1, "margin"] == pytest.approx(0.0) and scores.loc[0, "margin"] == pytest.approx(0.6)
    assert scores.loc[0, "entropy"] > scores.loc[1, "entropy"]
    assert scores.loc[0, "threshold_distance"] == scores.loc[1, "threshold_distance"]
    assert list(review_queue(cases, k=2)["image_sha256"]) == [sha("torn"), sha("confident")]
    assert "top two classes 0.00 apart" in review_queue(cases, k=1)["why"].iloc[0]
    entropy_only = RankingWeights(entropy=1, margin=0, threshold=0, ood=0)
    assert review_queue(cases, k=1, weights=entropy_only)["image_sha256"].iloc[0] == sha("confident")


REFERENCE = {"brightness": {"median": 0.5, "mad": 0.03, "p01": 0.42},
             "sharpness": {"median": 0.1, "mad": 0.01, "p01": 0.08}}


def test_an_image_unlike_the_training_images_ranks_up():
    cases = frame([answer({"MEL": 0.3, "NV": 0.7}, image="typical"),
                   answer({"MEL": 0.1, "NV": 0.9}, image="overexposed", brightness=0.9),
                   answer({"MEL": 0.1, "NV": 0.9}, image="very sharp", sharpness=5.0),
                   answer({"MEL": 0.1, "NV": 0.9}, image="no reference", brightness=0.9,
                          model_version="v2")])
    scores = uncertainty(cases, references={"v1": REFERENCE})
    # brightness 13 robust SDs out: past the Predictor's bound; sharpness is not an OOD statistic
    assert list(scores["ood"]) == pytest.approx([0.0, 1.0, 0.0, 0.0])
    assert list(uncertainty(cases)["ood"]) == [0.0] * 4
    with_ood = review_queue(cases, k=4, references={"v1": REFERENCE})
    assert with_ood["image_sha256"].iloc[0] == sha("overexposed")
    assert "unlike the training images" in with_ood["why"].iloc[0]
    assert review_queue(cases, k=1)["image_sha256"].iloc[0] == sha("typical")


def test_version_references_come_from_the_model_cards(tmp_path):
    from skinlesion import registry
    from tests.standins import BrightnessClassifier, save_standin

    save_standin(tmp_path, "no-reference")
    manifest = registry.read_manifest(tmp_path, "no-reference")
    reference = pd.DataFrame({"brightness": np.linspace(0.4, 0.6, 50), "sharpness": 0.1})
    card = registry.save_version(tmp_path, BrightnessClassifier(), threshold=0.5,
                                 data=registry.data_info(manifest, name="toy"), manifest=manifest,
                                 version_id="with-reference", reference=reference)
    refs = version_references(tmp_path)
    assert refs == {"with-reference": card.image_stats_reference}
    assert refs["with-reference"]["brightness"]["median"] == pytest.approx(0.5)


def test_a_burst_of_near_identical_uncertain_cases_does_not_fill_the_queue():
    rng = np.random.default_rng(0)
    # one lesion photographed eight times: same patient and site, nearly the same image and answer
    burst = [answer({"MEL": (mel := 0.48 + 0.01 * rng.random()), "NV": 0.3, "BKL": 0.7 - mel},
                    image=f"burst {i}", ts=T0 + timedelta(hours=i), age_approx=60, sex="male",
                    anatom_site_general="posterior torso",
                    **{"brightness": 0.5 + 0.001 * rng.random(), "contrast": 0.2})
             for i in range(8)]
    sites = ["head/neck", "lower extremity", "upper extremity", "anterior torso", "palms/soles"]
    others = [answer({"MEL": p, "NV": 1 - p}, image=f"other {i}", ts=T0 + timedelta(hours=i),
                     age_approx=25 + 10 * i, sex="female", anatom_site_general=sites[i],
                     brightness=0.35 + 0.06 * i, contrast=0.1 + 0.04 * i)
              for i, p in enumerate([0.3, 0.25, 0.35, 0.2, 0.32])]
    cases = frame(burst + others)
    scores = uncertainty(cases)
    assert scores["uncertainty"].iloc[:8].min() > scores["uncertainty"].iloc[8:].max()
    bursts = {sha(f"burst {i}") for i in range(8)}
    queue = review_queue(cases, k=5, max_per_hour=None)
    assert len(set(queue["image_sha256"]) & bursts) == 1
    assert queue["image_sha256"].iloc[0] in bursts  # the most uncertain still leads
    assert queue["redundancy"].iloc[0] == 0 and (queue["redundancy"].iloc[1:] < 0.5).all()
    # without the diversity term the burst takes every place
    assert set(review_queue(cases, k=5, max_per_hour=None, diversity=0.0)["image_sha256"]) <= bursts


def test_one_image_appears_once():
    cases = frame([record(0.5, image="same", ts=T0 + timedelta(hours=i)) for i in range(4)]
                  + [record(0.3, image="other", ts=T0)])
    queue = review_queue(cases, k=3)
    assert sorted(queue["image_sha256"]) == sorted([sha("same"), sha("other")])


def test_a_burst_does_not_fill_the_queue_while_other_hours_have_cases():
    burst = [record(0.5, image=f"burst {i}", ts=T0 + timedelta(minutes=i)) for i in range(10)]
    others = [record(0.35, image=f"day {i}", ts=T0 + timedelta(hours=2 + i)) for i in range(3)]
    queue = review_queue(frame(burst + others), k=5, max_per_hour=2, diversity=0.0)
    names = set(queue["image_sha256"])
    assert len(queue) == 5
    assert len(names & {sha(f"burst {i}") for i in range(10)}) == 2
    assert {sha(f"day {i}") for i in range(3)} <= names
    # with nothing else to choose, the burst still fills the queue
    assert len(review_queue(frame(burst), k=5, max_per_hour=2, diversity=0.0)) == 5


def test_bad_arguments_are_named():
    with pytest.raises(DataError, match="weights"):
        RankingWeights(entropy=-1)
    with pytest.raises(DataError, match="weights"):
        RankingWeights(entropy=0, margin=0, threshold=0, ood=0)
    with pytest.raises(DataError, match="diversity"):
        review_queue(frame([record(0.5, image="a")]), diversity=1.5)
    with pytest.raises(DataError, match="p_MEL"):
        uncertainty(pd.DataFrame({"p_malignant": [0.5], "threshold": [0.5]}))


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "db.duckdb")


def test_review_cases_orders_by_risk_and_filters_labels(store):
    rows = [record(0.1, image="low"), record(0.9, image="high"), record(0.6, image="mid"),
            record(0.95, image="shadow", model_role="shadow", returned=False)]
    store.log_predictions(rows)
    record_label(store, request_id=rows[2].request_id, diagnosis="BCC", actor="dr_k", role="clinician")
    everything = store.review_cases()
    assert everything["image_sha256"].tolist() == [sha("high"), sha("mid"), sha("low")]
    assert everything.set_index("request_id").at[rows[2].request_id, "diagnosis"] == "BCC"
    unlabelled = store.review_cases(labelled=False)
    assert set(unlabelled["request_id"]) == {rows[0].request_id, rows[1].request_id}
    assert store.review_cases(labelled=True)["labelled_by"].tolist() == ["dr_k"]
    assert store.review_cases(order="newest", limit=1).shape[0] == 1
    with pytest.raises(DataError, match="order"):
        store.review_cases(order="random")


def test_record_label_needs_a_clinician_and_a_known_case(store):
    row = record(0.4, image="x")
    store.log_predictions([row])
    label = record_label(store, request_id=row.request_id, diagnosis="MEL", actor="dr_k",
                         role="clinician", note="dermoscopy review")
    labelled = store.labelled_predictions()
    assert labelled["diagnosis"].tolist() == ["MEL"]
    assert labelled["labelled_by"].tolist() == ["dr_k"] and labelled["label_source"].tolist() == ["review"]
    audit = store.query_audit(action="label")
    assert audit["details"].iloc[0] == {"diagnosis": "MEL", "label_id": label.id}
    with pytest.raises(PermissionDeniedError):
        record_label(store, request_id=row.request_id, diagnosis="NV", actor="v", role="viewer")
    with pytest.raises(DataError, match="no logged answer"):
        record_label(store, request_id="6f0c1a4e-8d8a-4e55-9d8e-2b1f7d1d0c11", diagnosis="NV",
                     actor="dr_k", role="clinician")
    assert len(store.labelled_predictions()) == 1


def _ground_truth(path: Path, rows: dict[str, str]) -> Path:
    lines = ["image," + ",".join(CLASSES)]
    for name, diagnosis in rows.items():
        lines.append(name + "," + ",".join("1" if c == diagnosis else "0" for c in CLASSES))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_ground_truth_is_joined_by_image_content(store, tmp_path):
    uploads = {"ISIC_1.jpg": b"image one", "ISIC_2.png": b"image two"}
    hashes = image_hashes(uploads)
    assert hashes["ISIC_1"] == hashlib.sha256(b"image one").hexdigest()
    seen = record(0.3, image="unused")
    store.log_predictions([seen.model_copy(update={"image_sha256": hashes["ISIC_1"]})])
    csv = _ground_truth(tmp_path / "truth.csv", {"ISIC_1": "MEL", "ISIC_2": "NV", "ISIC_3": "BCC",
                                                 sha("by hash"): "DF"})
    found, matched = import_ground_truth(store, csv, hashes=hashes, actor="lab", role="clinician",
                                         source="histopathology")
    assert found.unmatched == ["ISIC_3"]
    assert {(lab.image_sha256, lab.diagnosis) for lab in found.labels} == {
        (hashes["ISIC_1"], "MEL"), (hashes["ISIC_2"], "NV"), (sha("by hash"), "DF")}
    assert matched == 1
    assert store.labelled_predictions()["diagnosis"].tolist() == ["MEL"]
    assert store.query_audit(action="import_labels")["details"].iloc[0]["unmatched"] == 1
    with pytest.raises(PermissionDeniedError):
        import_ground_truth(store, csv, hashes=hashes, actor="v", role="viewer")


def test_ground_truth_labels_without_hashes_are_all_unmatched():
    found = ground_truth_labels(["ISIC_1", "ISIC_2"], np.array([0, 1]), {}, source="import",
                                labelled_by="lab")
    assert found.labels == [] and found.unmatched == ["ISIC_1", "ISIC_2"]
