"""The console's rendering helpers: filters, fragments, and where `next` may lead."""

from __future__ import annotations

import pytest

from snapshots.ui import render


@pytest.mark.parametrize(
    ("amount", "currency", "shown"),
    [
        pytest.param(1250, "usd", "$12.50", id="usd"),
        pytest.param(1200, "jpy", "¥1,200", id="zero-decimal"),
        pytest.param(1000, "kwd", "KWD1.000", id="three-decimals"),
        pytest.param(5, None, "5", id="no-currency"),
        pytest.param(None, "usd", "", id="none"),
    ],
)
def test_money(amount: int | None, currency: str | None, shown: str) -> None:
    assert render.money(amount, currency) == shown


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (5, "5 s"),
        (125, "2 min"),
        (3600, "1 h"),
        (3725, "1 h 2 min"),
        (90000, "1 d 1 h"),
        (None, ""),
    ],
)
def test_duration(seconds: float | None, shown: str) -> None:
    assert render.duration(seconds) == shown


def test_when_is_a_time_element_in_utc() -> None:
    assert str(render.when(0)) == (
        '<time datetime="1970-01-01T00:00:00Z" title="1970-01-01 00:00:00 UTC">1970-01-01 00:00 UTC</time>'
    )
    assert str(render.when(None, "<never>")) == "<span>&lt;never&gt;</span>"


@pytest.mark.parametrize(
    ("target", "kept"),
    [
        ("/keys?x=1", "/keys?x=1"),
        ("//evil.example", "/"),
        ("https://evil.example", "/"),
        ("/\\\\evil.example", "/"),
        ("", "/"),
        (None, "/"),
    ],
)
def test_next_stays_in_the_console(target: str | None, kept: str) -> None:
    assert render.safe_next(target) == kept


def test_a_fragment_is_the_block_alone_and_escaped() -> None:
    context = {"title": "<b>x</b>", "message": "{{7*7}}", "link": None}
    whole = render.html(
        "error.html", context | {"me": None, "csrf": "", "path": "/", "notice": "", "session": None}
    )
    block = render.html("error.html", context, block="message")
    assert block.strip().startswith('<article class="problem">')
    assert "<html" not in block and "<html" in whole
    assert "&lt;b&gt;x&lt;/b&gt;" in block and "{{7*7}}" in block


def test_an_undefined_name_is_an_error() -> None:
    import jinja2

    with pytest.raises(jinja2.UndefinedError):
        render.html("error.html", {"title": "x"}, block="message")


def _event(**given: object) -> object:
    from snapshots import inbox

    fields: dict[str, object] = {
        "id": 7,
        "connection_id": "conn_1",
        "event_id": "evt_1",
        "event_type": "customer.created",
        "event_created": 0,
        "api_version": None,
        "livemode": False,
        "source": "webhook",
        "status": "done",
        "attempts": 1,
        "last_error": None,
        "flows": None,
        "records": None,
        "received_at": 0.0,
        "processed_at": None,
    }
    return inbox.Event.model_validate(fields | given)


def test_event_rows_are_the_templates_html_with_every_text_escaped() -> None:
    from snapshots.ui.routes import events as screen

    hostile = "<img src=x onerror=alert(1)> {{7*7}} & 'q' \"qq\""
    rows = screen._rows(
        [
            _event(),
            _event(
                id=8,
                event_id=hostile,
                event_type=hostile,
                status=hostile,
                source=hostile,
                attempts=3,
                last_error=hostile + " " + "x" * 200,
            ),
        ]
    )
    time = '<time datetime="1970-01-01T00:00:00Z" title="1970-01-01 00:00:00 UTC">1970-01-01 00:00 UTC</time>'
    shown = "&lt;img src=x onerror=alert(1)&gt; {{7*7}} &amp; &#39;q&#39; &#34;qq&#34;"
    assert str(rows) == (
        "    <tr>\n"
        '      <td><a href="/events/7">7</a></td>\n'
        '      <td><a href="/events/7">customer.created</a><br><small>evt_1</small></td>\n'
        '      <td><span class="status status-done">done</span></td>\n'
        f"      <td>{time}</td>\n"
        "      <td>webhook</td>\n"
        "      <td></td>\n"
        "    </tr>\n"
        "    <tr>\n"
        '      <td><a href="/events/8">8</a></td>\n'
        f'      <td><a href="/events/8">{shown}</a><br><small>{shown}</small></td>\n'
        f'      <td><span class="status status-{shown}">{shown}</span>'
        " <small>(3 tries)</small></td>\n"
        f"      <td>{time}</td>\n"
        f"      <td>{shown}</td>\n"
        f"      <td><small>{shown}...</small></td>\n"
        "    </tr>\n"
    )


def test_a_dicts_keys_and_methods_in_templates_mean_what_jinja_says() -> None:
    import jinja2

    template = render.environment().from_string(
        "{{ d.name }}|{{ d.items() | list | length }}|{{ d.get('items') }}|{{ o.real }}"
    )
    assert template.render(d={"name": "n", "items": "kept"}, o=3) == "n|2|kept|3"
    with pytest.raises(jinja2.UndefinedError):
        render.environment().from_string("{{ d.missing }}").render(d={})
    with pytest.raises(jinja2.UndefinedError):
        render.environment().from_string("{{ o.missing }}").render(o=3)
