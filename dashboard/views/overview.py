"""Overview — is the model healthy, and if not, what do we do? Readable in five seconds: the verdict
with what drives it (or the mitigation in place, since when and by whom), one tile per metric whose
headline is the realised value or, before labels arrive, the estimate with its band, the playbook,
the open alerts and the model answering now."""

import pandas as pd
import streamlit as st

import components
import queries
from skinlesion.display import in_words, metric_name
from skinlesion.monitoring.cockpit import tiles
from skinlesion.monitoring.estimate import ASSUMPTIONS
from skinlesion.monitoring.health import ERROR_RATE_METRIC
from skinlesion.monitoring.ood_share import OOD_METRIC
from skinlesion.monitoring.verdict import MITIGATED, reasons_sentence, verdict

_, filters = components.page_setup("Overview", filters=True)
components.auto_refresh()
health = components.window_health(filters)
report = health.report
policy = components.policy()
decided = verdict(report, components.current_model().route, queries.route_history(limit=100))

# 1. the verdict, what drives it, what to do
icon = "🛡️" if decided.status == MITIGATED else components.STATUS_ICONS.get(decided.status, "⚪")
text = f"{icon} **{decided.status.upper()} — {decided.title}**"
if decided.reasons:
    text += f"\n\n{reasons_sentence(decided.reasons)}"
{"red": st.error, "yellow": st.warning, "green": st.success}.get(decided.status, st.info)(text)
if decided.mitigation is not None and decided.status != MITIGATED:
    st.caption(f"Mitigation in place: {decided.mitigation.text}.")
st.caption(f"{filters.label}, {report.n_predictions:,} answers, {report.n_labelled:,} with a label"
           + (f" ({report.label_coverage:.0%})" if report.label_coverage is not None else "")
           + (f", model version {filters.model_version}" if filters.model_version else ""))

# 2. one tile per metric, then the service's own rates
per_row = 4
cards = tiles(health, policy)
for row in range(0, len(cards), per_row):
    for column, card in zip(st.columns(per_row), cards[row:row + per_row], strict=False):
        with column:
            components.tile(card, report.metrics.get(card.metric))
rates = st.columns(per_row)
with rates[0]:
    band = policy.thresholds.get("uncertain_share")
    components.metric_tile(
        metric_name("uncertain_share"), report.uncertain_share,
        "unknown" if band is None else components.status_of(report.uncertain_share, band),
        kind="percent", higher_is_better=False, badge_text=None if band else "no threshold",
        help=band.describe() if band else "Answers marked uncertain (poor image, unlike the "
                                          "training images, or not confident); no policy band.",
        note="answers a clinician must look at")
for column, metric in zip(rates[1:], (ERROR_RATE_METRIC, OOD_METRIC), strict=False):
    value = report.metrics.get(metric)
    if value is None:
        continue
    with column:
        band = policy.thresholds.get(metric)
        components.metric_tile(metric_name(metric), value.value, value.status.value,
                               kind="percent", change=value.change, higher_is_better=False,
                               note=value.note, help=band.describe() if band else None,
                               badge_text=None if value.status.value != "unknown" or band
                               else "no threshold")

# 3. playbook and alerts side by side
left, right = st.columns([3, 2])
with left:
    st.subheader(f"Playbook: {decided.title if decided.status != MITIGATED else 'next steps'}")
    st.markdown("\n".join(f"{i}. {action}" for i, action in enumerate(decided.actions, 1)))
    if report.playbook.hints:
        st.markdown("**What the data says**")
        st.markdown("\n".join(f"- {in_words(hint)}" for hint in report.playbook.hints))
with right:
    alerts = queries.open_alerts()
    st.subheader(f"Open alerts ({len(alerts)})")
    if not alerts:
        st.caption("No open alerts.")
    else:
        st.dataframe(pd.DataFrame([{"Status": components.status_text(a.status),
                                    "Metric": metric_name(a.metric), "Window": a.scope,
                                    "Since (UTC)": a.opened_at, "Message": in_words(a.message)}
                                   for a in reversed(alerts)]),
                     hide_index=True, width="stretch",
                     column_config={"Since (UTC)": components.TIME_COLUMN,
                                    "Message": st.column_config.TextColumn(width="large")})
        st.caption("Acknowledge, silence or assign them on the Alerts & audit page.")

with st.expander("How the estimated values are computed"):
    st.markdown(ASSUMPTIONS)
    if health.drift_skipped:
        st.caption(f"Data drift not computed: {health.drift_skipped}.")
    else:
        st.caption(f"Data drift against the reference answers of {health.reference_version}.")
