"""Predict — for dermatologists: one dermoscopy image (uploaded, or a retained case from the review
queue) with age, sex and site, answered by the model the serving route names and logged (source
``dashboard``) through skinlesion.serving.ServingService; shows the class probabilities,
p_malignant against the threshold, the decision with its reason, image-quality warnings and where
the model looked (skinlesion.explain)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
import torch

import components
import queries
from skinlesion.data.images import load_image
from skinlesion.errors import ImageError, SkinLesionError
from skinlesion.explain import ExplanationUnavailable, explain
from skinlesion.monitoring.cockpit import is_synthetic
from skinlesion.monitoring.review import review_queue, version_references
from skinlesion.predict import quality_issues
from skinlesion.schema import CLASS_NAMES, CLASSES, MISSING, SEXES, SITES, Metadata
from skinlesion.serving import ServingService
from skinlesion.store import IMAGE_STAT_COLUMNS, PredictionRecord

_RESULT = "predict_result"
UPLOAD, QUEUE = "Upload an image", "A case from the review queue"
DECISION_STYLE = {"refer": st.error, "no referral": st.success, "uncertain": st.warning}


@st.cache_resource(show_spinner="Starting the prediction service…")
def _service(db_path: str, models_dir: str, device: str, retention_dir: str | None,
             route_ttl_s: float) -> ServingService:
    return ServingService(components.store(), Path(models_dir), device=device,
                          route_ttl_s=route_ttl_s,
                          retention_dir=Path(retention_dir) if retention_dir else None)


def service(device: str) -> ServingService:
    """The prediction service of this process for ``device`` (models stay loaded between runs)."""
    s = components.settings()
    return _service(s.store_url, str(s.models_dir), device,
                    str(s.retention_dir) if s.retention_dir else None, s.route_ttl_s)


def queue_cases() -> pd.DataFrame:
    """Unlabelled cases whose image was retained, most worth a second look first."""
    cases = queries.review_cases(labelled=False, order="newest", limit=2000)
    cases = cases[cases["image_path"].notna()]
    cases = cases[[Path(p).is_file() for p in cases["image_path"]]]
    return (review_queue(cases, k=30, references=version_references(components.models_dir()))
            if len(cases) else cases)


def probability_chart(record: PredictionRecord, malignant: list[str]) -> go.Figure:
    """The eight class probabilities as bars (malignant classes in red), top class first."""
    order = sorted(CLASSES, key=lambda c: -record.probabilities[c])
    fig = go.Figure(go.Bar(
        x=[record.probabilities[c] for c in order], y=[f"{CLASS_NAMES[c]} ({c})" for c in order],
        orientation="h", marker_color=["#c62828" if c in malignant else "#1f5f8b" for c in order],
        hovertemplate="%{y}: %{x:.1%}<extra></extra>"))
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(title="Class probabilities (red: malignant classes)",
                      xaxis=dict(title="Probability", range=[0, 1], tickformat=".0%"),
                      height=300, margin=dict(l=10, r=10, t=50, b=10))
    return fig


def malignancy_gauge(p_malignant: float, threshold: float) -> go.Figure:
    """The probability of malignancy as a bar on 0-100 % with the referral threshold as a line."""
    fig = go.Figure(go.Bar(x=[p_malignant], y=["malignancy"], orientation="h", width=0.5,
                           marker_color="#c62828" if p_malignant >= threshold else "#2e7d32",
                           hovertemplate="probability of malignancy %{x:.1%}<extra></extra>"))
    fig.add_vline(x=threshold, line_dash="dash", line_width=3, line_color="#1b2631",
                  annotation_text=f"referral threshold {threshold:.0%}")
    fig.update_layout(xaxis=dict(title="Probability of malignancy", range=[0, 1], tickformat=".0%"),
                      yaxis=dict(visible=False), height=150, margin=dict(l=10, r=10, t=30, b=10))
    return fig


user, _ = components.page_setup(
    "Predict", action="predict",
    caption="Ask the serving model about one dermoscopy image. Every answer is logged (source "
            "'dashboard') like the clinic's apps' answers. Decision support only: the "
            "dermatologist decides.")

# --- input ------------------------------------------------------------------------------------------

source = st.radio("Image", [UPLOAD, QUEUE], horizontal=True, key="predict_source")
image_bytes: bytes | None = None
case: pd.Series | None = None
if source == UPLOAD:
    upload = st.file_uploader("Dermoscopy image (JPEG or PNG)", type=["jpg", "jpeg", "png"],
                              key="predict_upload")
    image_bytes = upload.getvalue() if upload is not None else None
else:
    queue = queue_cases()
    if queue.empty:
        st.info("No retained images in the review queue. Images are kept only when retention is "
                "switched on (SKINLESION_RETAIN_IMAGES=true on the API server); upload one instead.")
    else:
        labels = {row.request_id: f"{row.ts:%Y-%m-%d %H:%M} UTC · malignancy {row.p_malignant:.0%} · "
                                  f"{row.decision} · {row.request_id[:8]}"
                  for row in queue.itertuples()}
        chosen = st.selectbox("Case (most uncertain first)", list(labels), format_func=labels.get,
                              key="predict_case")
        case = queue.set_index("request_id").loc[chosen]
        image_bytes = Path(case["image_path"]).read_bytes()

suffix = "" if case is None else f"_{case.name}"  # a queued case pre-fills its own metadata
col_age, col_sex, col_site, col_device = st.columns(4)
age_default = None if case is None or pd.isna(case["age_approx"]) else float(case["age_approx"])
age = col_age.number_input("Age (years; empty = unknown)", min_value=0.0, max_value=120.0,
                           value=age_default, step=5.0, format="%.0f", key=f"predict_age{suffix}")
sex = col_sex.selectbox("Sex", SEXES, index=SEXES.index(case["sex"] if case is not None else MISSING),
                        key=f"predict_sex{suffix}")
site = col_site.selectbox("Anatomical site", SITES,
                          index=SITES.index(case["anatom_site_general"] if case is not None
                                            else MISSING), key=f"predict_site{suffix}")
devices = ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
device = col_device.radio("Run on", devices, format_func={"cpu": "CPU", "cuda": "GPU"}.get,
                          horizontal=True, key="predict_device",
                          help="GPU is offered only when this server has one.")

if image_bytes is not None:
    try:  # the same checks as the API: an unusable file is named before anything is asked
        st.image(load_image(image_bytes, name="the uploaded file"), caption="Image to assess",
                 width=280)
    except ImageError as err:
        st.error(str(err))
        image_bytes = None
if st.button("Predict", type="primary", disabled=image_bytes is None, key="predict_run"):
    try:
        metadata = Metadata.from_raw(age, sex, site)
        record = service(device).predict(image_bytes, metadata, source="dashboard")
    except SkinLesionError as err:
        st.error(str(err))
    else:
        components.clear_caches()
        st.session_state[_RESULT] = {"record": record, "image": image_bytes, "metadata": metadata,
                                     "device": device}

# --- answer -----------------------------------------------------------------------------------------

result = st.session_state.get(_RESULT)
if result is None:
    st.stop()
record: PredictionRecord = result["record"]
predictor = service(result["device"]).predictor(record.model_version, record.model_role)
card = predictor.version.card

st.divider()
st.subheader("Answer")
DECISION_STYLE[record.decision](f"**{record.decision.upper()}** — {record.decision_reason}")
top = record.predicted_class
top_share = record.probabilities[top]
st.markdown(f"#### Diagnosis: {CLASS_NAMES[top]} ({top}) — {top_share:.0%}"
            + (" · malignant class" if top in card.malignant else ""))
likeliest = max(record.probabilities, key=record.probabilities.__getitem__)
if likeliest != top:
    st.caption(f"The most probable class is {CLASS_NAMES[likeliest]} "
               f"({record.probabilities[likeliest]:.0%}). This model names its diagnosis with each "
               "class's probability weighed against how common the class was in training (the "
               "card's balanced diagnosis rule), so a rarer class can be named.")
if top in card.malignant and record.p_malignant < record.threshold:
    st.warning(f"**The diagnosis is {CLASS_NAMES[top].lower()}, a malignant class**, although "
               f"the probability of malignancy ({record.p_malignant:.0%}) is below the referral "
               f"threshold ({record.threshold:.0%}). Look at this lesion yourself before deciding "
               "not to refer.", icon=":material/priority_high:")
if record.decision == "uncertain":
    st.warning(f"**Uncertain answer: {record.decision_reason}.** It goes to a dermatologist; do not "
               "rely on the class probabilities below.", icon=":material/help:")
issues = quality_issues({c: getattr(record, c) for c in IMAGE_STAT_COLUMNS}, predictor.policy,
                        getattr(card, "image_stats_reference", None))
if issues:
    st.warning("**Check the image:** " + "; ".join(issues) + ". The answer may not be reliable; "
               "retake the photo if you can.", icon=":material/image_not_supported:")
if is_synthetic(card):
    st.error(f"This answer comes from {record.model_version}, a demo model trained on synthetic "
             "data: it says nothing about a real lesion.", icon=":material/science:")
st.caption(f"Model {record.model_version} ({record.model_role}) on {record.device} · "
           f"{record.latency_ms:.0f} ms · request {record.request_id} · logged")

left, right = st.columns(2)
with left:
    st.markdown(f"**Probability of malignancy {record.p_malignant:.1%}** against the threshold "
                f"{record.threshold:.1%} ({', '.join(card.malignant)})")
    st.plotly_chart(malignancy_gauge(record.p_malignant, record.threshold), width="stretch",
                    key="predict_gauge")
    st.plotly_chart(probability_chart(record, list(card.malignant)), width="stretch",
                    key="predict_probabilities")
with right:
    st.markdown("**Where the model looked**")
    if "explanation" not in result:  # computed once per answer, kept across reruns
        try:
            result["explanation"] = explain(predictor.version.classifier,
                                            load_image(result["image"], name="uploaded image"),
                                            result["metadata"], target_class=record.predicted_class)
        except ExplanationUnavailable as err:
            result["explanation"] = str(err)
    explanation = result["explanation"]
    if isinstance(explanation, str):
        st.info(explanation)
    else:
        st.image(explanation.overlay, caption=explanation.caption, width="stretch")
