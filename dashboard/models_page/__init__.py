"""The Models page's features, one module each, rendered in order by ``views/models.py``:
:mod:`versions` (the versions side by side, their cards), :mod:`route` (fallback, rollback,
activate, restrict), :mod:`retraining` (launch, jobs, archive), :mod:`experiments` (A/B challenger
and shadow, compared with the active version), :mod:`threshold` (the operating threshold's
trade-off and changes). :mod:`view` holds what they share: the page's :class:`view.ModelsView` and
the confirmed, reasoned, audited :func:`view.action_form`. Modules define functions only (Streamlit
reruns the page script, not its imports)."""
