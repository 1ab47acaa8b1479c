"""The versions side by side (metrics from their cards, roles in the route) and up to three model
cards compared."""

from __future__ import annotations

import pandas as pd
import streamlit as st

import components
from models_page.view import ModelsView
from skinlesion.display import MISSING, metric_name
from skinlesion.lifecycle import operations
from skinlesion.lifecycle.gate import gate_table
from skinlesion.monitoring.cockpit import is_synthetic
from skinlesion.registry import ModelCard


def versions_table(view: ModelsView) -> None:
    """Every version with its validation and test metrics (columns no version has are dropped)."""
    table = operations.versions_table(view.cards, view.route,
                                      components.store().archived_versions())
    metric_columns = [c for c in table.columns
                      if c.startswith(("val_", "test_")) and table[c].notna().any()]
    table = table.drop(columns=[c for c in table.columns
                                if c.startswith(("val_", "test_")) and c not in metric_columns])
    table = table.assign(parent=table["parent"].fillna(MISSING),
                         created=pd.to_datetime(table["created"], utc=True))
    st.dataframe(
        table, hide_index=True, width="stretch",
        column_config={
            "id": st.column_config.TextColumn("version", pinned=True),
            "created": components.TIME_COLUMN,
            "fingerprint": st.column_config.TextColumn("data fingerprint", help="sha256 of the "
                                                       "sorted (image content hash, label, split) "
                                                       "triples"),
            **{c: st.column_config.NumberColumn(
                f"{c.split('_', 1)[0]} {metric_name(c.split('_', 1)[1])}", format="%.3f")
               for c in metric_columns},
        })
    st.caption("Metrics on each version's own validation (val) and test split, from its model "
               "card; recall/specificity/precision at the version's threshold, positive class = "
               "malignant.")


def card_summary(card: ModelCard) -> None:
    """One model card in a bordered box: kind, provenance, data, metrics, gate, the full JSON."""
    with st.container(border=True):
        st.markdown(f"**{card.id}**  \n{card.kind} · {card.architecture}")
        if is_synthetic(card):
            st.error("Trained on synthetic data — a demo model, not for clinical use.",
                     icon=":material/science:")
        st.caption(f"created {card.created} · parent {card.parent or '—'} · threshold "
                   f"{card.threshold:.3f}" + (f" (target sensitivity {card.target_sensitivity:.0%})"
                                              if card.target_sensitivity else ""))
        st.markdown(f"Data **{card.data.name}**: {card.data.n_images:,} images, fingerprint "
                    f"`{card.data.fingerprint[:16]}…`")
        split_metrics = pd.DataFrame(card.metrics).reindex(operations.COMPARED_METRICS)
        if not split_metrics.empty:
            shown = split_metrics.dropna(how="all")
            st.dataframe(shown.set_axis([metric_name(m) for m in shown.index]), width="stretch")
        if card.notes:
            st.caption(card.notes)
        if (card.model_extra or {}).get("gate"):
            with st.expander(f"Gate: vs {card.model_extra['gate']['active']}"):
                st.dataframe(gate_table(card.model_extra["gate"]), hide_index=True,
                             width="stretch")
        with st.expander("Full model card"):
            st.json(card.model_dump(mode="json"), expanded=False)


def render(view: ModelsView) -> None:
    st.subheader("Versions")
    if not view.cards:
        st.info(f"No model versions in {view.models_dir} yet. Train one with `skinlesion train "
                "--data DIR` (or build the demo with `skinlesion demo`).")
        st.stop()
    versions_table(view)
    by_id = view.by_id
    chosen = st.multiselect("Compare model cards", list(reversed(by_id)),
                            default=[v for v in dict.fromkeys([view.route.active_version,
                                                               view.cards[-1].id])
                                     if v in by_id], max_selections=3, key="models_compare")
    for column, vid in zip(st.columns(max(len(chosen), 1)), chosen, strict=False):
        with column:
            card_summary(by_id[vid])
