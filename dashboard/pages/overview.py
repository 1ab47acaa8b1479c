"""Overview — is the model healthy, and if not, what do we do? Readable in five seconds: the overall
status with its playbook, one tile per metric, the open alerts and the model answering now."""

import pandas as pd
import streamlit as st

import components
import queries
from skinlesion.monitoring.cockpit import tiles
from skinlesion.monitoring.estimate import ASSUMPTIONS

_, filters = components.page_setup("Overview", filters=True)
health = components.window_health(filters)
report = health.report
status = report.status.value

# 1. the verdict and what to do
verdict = f"{components.STATUS_ICONS[status]} **{status.upper()} — {report.playbook.title}**"
{"red": st.error, "yellow": st.warning, "green": st.success}.get(status, st.info)(verdict)
st.caption(f"{filters.label}, {report.n_predictions:,} answers, {report.n_labelled:,} with a label"
           + (f" ({report.label_coverage:.0%})" if report.label_coverage is not None else "")
           + (f", model version {filters.model_version}" if filters.model_version else ""))

# 2. one tile per metric
per_row = 4
cards = tiles(health, components.policy())
for row in range(0, len(cards), per_row):
    for column, card in zip(st.columns(per_row), cards[row:row + per_row], strict=False):
        with column:
            components.tile(card)

# 3. playbook and alerts side by side
left, right = st.columns([3, 2])
with left:
    st.subheader(f"Playbook: {report.playbook.title}")
    st.markdown("\n".join(f"{i}. {action}" for i, action in enumerate(report.playbook.actions, 1)))
    if report.playbook.hints:
        st.markdown("**What the data says**")
        st.markdown("\n".join(f"- {hint}" for hint in report.playbook.hints))
with right:
    alerts = queries.open_alerts()
    st.subheader(f"Open alerts ({len(alerts)})")
    if not alerts:
        st.caption("No open alerts.")
    else:
        st.dataframe(pd.DataFrame([{"status": components.status_text(a.status), "metric": a.metric,
                                    "window": a.scope, "since": a.opened_at, "message": a.message}
                                   for a in reversed(alerts)]),
                     hide_index=True, width="stretch",
                     column_config={"since": st.column_config.DatetimeColumn(format="D MMM, HH:mm")})
        st.caption("Acknowledge and follow them up on the Alerts & audit page.")

with st.expander("How the estimated values are computed"):
    st.markdown(ASSUMPTIONS)
    if health.drift_skipped:
        st.caption(f"Data drift not computed: {health.drift_skipped}.")
    else:
        st.caption(f"Data drift against the reference answers of {health.reference_version}.")
