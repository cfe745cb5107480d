"""The payload tree (`_json.html`): every key and string escaped and shown as it is, every JSON
type written as JSON writes it."""

from __future__ import annotations

from typing import Any

from snapshots.ui import render


def tree(value: Any) -> str:
    template = render.environment().from_string(
        '{% from "_json.html" import tree %}{{ tree(value) }}'
    )
    return " ".join(template.render(value=value).split())


def test_keys_and_strings_are_escaped_text() -> None:
    shown = tree({"<b>key</b>": "<img src=x onerror=alert(1)>", "t": "{{7*7}}", "q": "\"'&"})
    assert "<img" not in shown and "<b>" not in shown
    assert '<span class="key">&lt;b&gt;key&lt;/b&gt;</span>' in shown
    assert '"&lt;img src=x onerror=alert(1)&gt;"' in shown
    assert '"{{7*7}}"' in shown and "49" not in shown
    assert '"&#34;&#39;&amp;"' in shown


def test_every_json_type_is_written_as_json() -> None:
    shown = tree(
        {"n": 12, "f": 1.5, "yes": True, "no": False, "none": None, "l": [1, "a"], "e": {}}
    )
    for text in (
        "<code>12</code>",
        "<code>1.5</code>",
        "<code>true</code>",
        "<code>false</code>",
        '<code class="null">null</code>',
        '<code class="string">"a"</code>',
        "<code>{}</code>",
    ):
        assert text in shown, text
    assert '<ol class="json" start="0">' in shown


def test_nested_objects_fold_below_two_levels() -> None:
    shown = tree({"a": {"b": {"c": {"d": 1}}}})
    assert shown.count("<details open>") == 2 and shown.count("<details>") == 1
