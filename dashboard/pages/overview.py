"""Overview."""

import components

components.page_setup("Overview", filters=True)
