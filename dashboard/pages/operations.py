"""Operations."""

import components

components.page_setup("Operations", filters=True)
