"""Performance."""

import components

components.page_setup("Performance", filters=True)
