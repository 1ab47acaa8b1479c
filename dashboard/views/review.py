"""Review & labels — for dermatologists: the triage list (riskiest answers first), the review queue
(the unlabelled cases most worth labelling: skinlesion.monitoring.review), label entry and the
import of ISIC-format ground truth. Labels feed the realised metrics and the next retraining."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd
import streamlit as st

import components
import queries
from skinlesion.display import MISSING
from skinlesion.errors import SkinLesionError
from skinlesion.monitoring.review import (RankingWeights, image_hashes, import_ground_truth,
                                          record_label, review_queue, version_references)
from skinlesion.schema import CLASS_NAMES, CLASSES

_FLASH = "review_flash"
CASE_COLUMNS = ["ts", "p_malignant", "threshold", "decision", "predicted_class", "diagnosis",
                "model_version", "source", "age_approx", "sex", "anatom_site_general", "request_id"]
TABLE_CONFIG = {
    "ts": st.column_config.DatetimeColumn("time (UTC)", format="YYYY-MM-DD HH:mm"),
    "p_malignant": st.column_config.ProgressColumn("probability of malignancy", min_value=0.0,
                                                   max_value=1.0, format="%.2f"),
    "threshold": st.column_config.NumberColumn("threshold", format="%.2f"),
    "decision": st.column_config.TextColumn("decision"),
    "predicted_class": st.column_config.TextColumn("most likely class"),
    "diagnosis": st.column_config.TextColumn("label", help="Latest ground truth, if any"),
    "model_version": st.column_config.TextColumn("model version"),
    "source": st.column_config.TextColumn("source"),
    "age_approx": st.column_config.TextColumn("age (years)"),
    "sex": st.column_config.TextColumn("sex"),
    "anatom_site_general": st.column_config.TextColumn("anatomical site"),
    "request_id": st.column_config.TextColumn("request id"),
    "uncertainty": st.column_config.ProgressColumn("uncertainty", min_value=0.0, max_value=1.0,
                                                   format="%.2f"),
    "entropy": st.column_config.NumberColumn("entropy", format="%.2f"),
    "margin": st.column_config.NumberColumn("margin", format="%.2f",
                                            help="Top class minus the runner-up (0 = a tie)"),
    "ood": st.column_config.NumberColumn("OOD", format="%.2f",
                                         help="How unlike the training images (1 = flagged)"),
}

def shown(cases: pd.DataFrame) -> pd.DataFrame:
    """The cases' table as people read it: no label yet and a missing age read "—"."""
    return cases.assign(diagnosis=cases["diagnosis"].fillna(MISSING), age_approx=[
        MISSING if pd.isna(age) else f"{age:.0f}" for age in cases["age_approx"]])


user, filters = components.page_setup(
    "Review & labels", action="label", filters=True,
    caption="Triage the riskiest answers, label the cases the model is least sure of, import "
            "histopathology results. Labels are stored with your name.")
if _FLASH in st.session_state:
    st.success(st.session_state.pop(_FLASH), icon=":material/task_alt:")

window = dict(model_version=filters.model_version)
triage = queries.review_cases(filters.start, filters.end, order="risk", limit=500, **window)
unlabelled = queries.review_cases(filters.start, filters.end, labelled=False, order="newest",
                                  limit=5000, **window)

tab_triage, tab_queue, tab_import = st.tabs(["Triage", "Review queue", "Import labels"])

with tab_triage:
    st.caption(f"Answers of the {filters.label}, riskiest first (probability of malignancy); the "
               "500 highest.")
    if triage.empty:
        st.info("No answers in this window.")
    else:
        st.dataframe(shown(triage[CASE_COLUMNS]), hide_index=True, width="stretch",
                     column_config=TABLE_CONFIG, key="review_triage")

with tab_queue:
    left, mid, right = st.columns(3)
    k = left.slider("Queue length", 5, 100, 20, step=5, key="review_k")
    per_hour = mid.slider("At most per hour", 1, 20, 5, key="review_per_hour",
                          help="So one busy hour cannot fill the queue")
    diversity = right.slider("Diversity", 0.0, 1.0, 0.8, key="review_diversity",
                             help="How much a case near-identical to one already queued (same "
                                  "patient data, image statistics and answer) is held back")
    with st.expander("Weights of the uncertainty signals"):
        columns = st.columns(4)
        weights = {name: col.slider(label, 0.0, 1.0, 1.0, key=f"review_weight_{name}")
                   for col, (name, label) in zip(columns, [
                       ("entropy", "Entropy"), ("margin", "Margin"),
                       ("threshold", "Near the threshold"), ("ood", "Unlike training images")],
                       strict=True)}
    problem = None
    try:
        queue = (review_queue(unlabelled, k=k, max_per_hour=per_hour, diversity=diversity,
                              weights=RankingWeights(**weights),
                              references=version_references(components.models_dir()))
                 if len(unlabelled) else unlabelled)
    except SkinLesionError as err:  # all weights at 0
        problem, queue = str(err), unlabelled.iloc[:0]
    st.caption("Unlabelled answers the model is least sure of: probability spread over classes "
               "(entropy), top two classes close (margin), p_malignant near the threshold, or an "
               "image unlike the version's training images (OOD). Near-identical cases are held "
               "back so one burst cannot fill the queue; one case per image.")
    if problem:
        st.error(problem)
    elif queue.empty:
        st.info("No unlabelled answers in this window.")
    else:
        st.dataframe(shown(queue[["uncertainty", "why", "entropy", "margin", "ood", *CASE_COLUMNS]]),
                     hide_index=True,
                     width="stretch", column_config=TABLE_CONFIG, key="review_queue_table")

# --- label entry ------------------------------------------------------------------------------------

st.subheader("Label a case")
candidates = pd.concat([queue, triage]).drop_duplicates("request_id") if len(triage) else triage
if candidates.empty:
    st.info("No case to label in this window.")
else:
    describe = {row.request_id: f"{row.ts:%d %b %H:%M} · P(malignant) {row.p_malignant:.2f} · "
                                f"{row.decision} · {row.request_id[:8]}"
                                + (f" · labelled {row.diagnosis}" if isinstance(row.diagnosis, str)
                                   else "")
                for row in candidates.itertuples()}
    case_id = st.selectbox("Case (review queue first, then triage)", list(describe),
                           format_func=describe.get, key="label_case")
    case = candidates.set_index("request_id").loc[case_id]
    image_col, form_col = st.columns([1, 2])
    with image_col:
        if isinstance(case["image_path"], str) and Path(case["image_path"]).is_file():
            st.image(case["image_path"], width="stretch")
        else:
            st.caption("Image not retained (retention is off); label from the clinical record.")
    with form_col:
        age = "age unknown" if pd.isna(case["age_approx"]) else f"{case['age_approx']:.0f} y"
        st.markdown(f"Model said **{CLASS_NAMES[case['predicted_class']]}** "
                    f"({case['predicted_class']}; probability of malignancy "
                    f"{case['p_malignant']:.0%}, {case['decision']}) · {age}, {case['sex']}, "
                    f"{case['anatom_site_general']}")
        why = case.get("why")
        if isinstance(why, str) and why:
            st.info(f"**Why this case is in the queue:** {why}", icon=":material/help:")
        with st.form("label_form"):
            diagnosis = st.selectbox("Diagnosis (your own reading; nothing is pre-selected)",
                                     CLASSES, index=None, placeholder="Choose the diagnosis",
                                     format_func=lambda c: f"{c} — {CLASS_NAMES[c]}",
                                     key="label_diagnosis")
            note = st.text_input("Note (optional, audited)", key="label_note")
            saved = st.form_submit_button("Save label", type="primary", key="label_save")
        if saved and diagnosis is None:
            st.error("Choose the diagnosis first: nothing is pre-selected, so a label is always "
                     "a person's choice.")
        elif saved:
            try:
                record_label(components.store(), request_id=case_id, diagnosis=diagnosis,
                             actor=user.name, role=user.role, note=note)
            except SkinLesionError as err:
                st.error(str(err))
            else:
                components.clear_caches()
                st.session_state[_FLASH] = (f"Label {diagnosis} stored for case {case_id[:8]} "
                                            f"by {user.name}.")
                st.rerun()

# --- import -----------------------------------------------------------------------------------------

with tab_import:
    st.markdown(
        "Upload ground truth in the ISIC challenge format (`image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC`, "
        "one-hot). The store never keeps image names, only each image's content hash, so a row "
        "is joined to the logged answers through its image: **upload the images the CSV names** "
        "with it (file name = the `image` id), or give the sha256 of the image in the `image` "
        "column. Rows whose image is missing are listed and not stored. For large imports use "
        "`skinlesion labels import TRUTH.csv --images DIR` on the server.")
    with st.form("import_form"):
        csv_file = st.file_uploader("Ground truth CSV", type=["csv"], key="import_csv")
        images = st.file_uploader("The images it names", type=["jpg", "jpeg", "png"],
                                  accept_multiple_files=True, key="import_images")
        source = st.selectbox("Source of the diagnoses", ["histopathology", "import", "consensus"],
                              key="import_source")
        imported = st.form_submit_button("Import", type="primary", key="import_run")
    if imported:
        if csv_file is None:
            st.error("Choose the ground-truth CSV first.")
        else:
            with tempfile.TemporaryDirectory() as folder:
                path = Path(folder) / Path(csv_file.name).name
                path.write_bytes(csv_file.getvalue())
                try:
                    found, matched = import_ground_truth(
                        components.store(), path, hashes=image_hashes(
                            {f.name: f.getvalue() for f in images or []}),
                        actor=user.name, role=user.role, source=source)
                except SkinLesionError as err:
                    st.error(str(err))
                else:
                    components.clear_caches()
                    st.success(f"Stored {len(found.labels)} labels; {matched} match logged answers.")
                    if found.unmatched:
                        st.warning(f"{len(found.unmatched)} rows not stored: their images were not "
                                   f"uploaded ({', '.join(found.unmatched[:10])}"
                                   f"{' …' if len(found.unmatched) > 10 else ''}).")
