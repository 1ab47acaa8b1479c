"""Drift."""

import components

components.page_setup("Drift", filters=True)
