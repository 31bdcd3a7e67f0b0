"""Keep one copy of each script a page loads.

The same inline scripts reach every page twice (sphinx-thebe's ``const
THEBE_JS_URL = ...`` and sphinx-togglebutton's selector), once with the file name
None and once with "", so Sphinx does not see them as equal: the second ``const``
is a SyntaxError in every reader's console, which tests/book_browser.py caught.
Just before a page is written, drop the repeated copies.
"""

from __future__ import annotations

from typing import Any


def _drop_repeated_scripts(app: Any, pagename: str, templatename: str,
                           context: dict[str, Any], doctree: Any) -> None:
    seen, unique = set(), []
    for script in context.get("script_files", []):
        attributes = getattr(script, "attributes", {})
        filename = getattr(script, "filename", script) or ""  # inline: None or ""
        key = (str(filename), tuple(sorted((k, str(v)) for k, v in attributes.items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def setup(app: Any) -> dict[str, bool]:
    app.connect("html-page-context", _drop_repeated_scripts, priority=999)  # the last
    return {"parallel_read_safe": True, "parallel_write_safe": True}
