"""The Flows and Test screens on SQLite and PostgreSQL: the list with its counts, the editor's
preview (each row's value, the output, problems at their row), saving as a new version with the
actor `ui:<email>`, versions with diffs and rollback, the YAML tab, the viewer refused every
write, values from Stripe escaped, and a test event's trace linking to its record."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from snapshots import audit, flowfile, preview, revisions, samples
from snapshots.store import tables
from snapshots.store.db import Database
from tests.conftest import WEBHOOK_SECRET
from tests.integration.console.conftest import ADMIN, Browser
from tests.integration.helpers import Cli, Stripe, customer

HTMX = {"HX-Request": "true"}
XSS = "<img src=x onerror=alert(1)>"


def _value(pattern: str, page: str) -> str:
    found = re.search(pattern, page)
    assert found is not None, pattern
    return html.unescape(found.group(1))


def editor_form(page: str) -> dict[str, Any]:
    """The editor's fields as the page shows them: what a browser would send."""
    targets = [html.unescape(t) for t in re.findall(r'name="target" value="([^"]*)"', page)]
    expressions = [html.unescape(e) for e in re.findall(r'name="expression" value="([^"]*)"', page)]
    rows = [(t, e) for t, e in zip(targets, expressions, strict=True) if t]
    action = page.split('id="flow-action"')[1]
    return {
        "original": _value(r'name="original" value="([^"]*)"', page),
        "name": _value(r'name="name" value="([^"]*)"', page),
        "trigger": [html.unescape(t) for t in re.findall(r'name="trigger" value="([^"]+)"', page)],
        "action": _value(r'<option value="([^"]+)" selected>', action),
        "target": [t for t, _ in rows],
        "expression": [e for _, e in rows],
        "options": _value(r'name="options"[^>]*>([^<]*)</textarea>', page),
        "sample": "",
    }


def post_form(browser: Browser, path: str, form: dict[str, Any], **headers: str) -> Any:
    fields = {"csrf_token": browser.csrf, **form}
    return browser.client.post(
        path,
        data=fields,
        headers={"Origin": "http://testserver", "Sec-Fetch-Site": "same-origin", **headers},
    )


def test_the_list_shows_each_flow_with_its_counts(browser: Browser, stripe: Stripe) -> None:
    stripe.send(samples.sample_event("customer.created", obj=customer(1), event_id="evt_1"))
    stripe.drain()
    page = browser.get("/flows")
    assert page.status_code == 200
    for flow in flowfile.load().flows:
        assert f'href="/flows/edit/{flow.name}"' in page.text
    row = page.text.split('href="/flows/edit/contacts"')[1].split("</tr>")[0]
    assert re.findall(r"<td>(\d+)</td>", row) == ["1", "1", "0"]  # matched, done, failed


def test_the_editor_previews_each_row_and_the_record(browser: Browser) -> None:
    page = browser.get("/flows/edit/contacts")
    assert page.status_code == 200
    assert "Nothing on this screen writes records" in page.text
    assert 'data-path="address.city"' in page.text  # the sample's tree
    assert 'list="event-types"' in page.text and "A customer was created." in page.text
    form = editor_form(page.text)
    form["target"] = [*form["target"], "custom.city"]
    form["expression"] = [*form["expression"], "address.city"]
    shown = post_form(browser, "/flows/preview", form, **HTMX)
    assert shown.status_code == 200, shown.text
    index = len(form["target"]) - 1
    assert f'id="row-{index}-value"' in shown.text and 'hx-swap-oob="true"' in shown.text
    assert "Would create a new contact" in shown.text
    assert "<code>custom.city</code>" in shown.text


def test_saving_makes_a_new_version_as_the_user(browser: Browser, db: Database) -> None:
    form = editor_form(browser.get("/flows/edit/contacts").text)
    form["target"] = [*form["target"], "custom.city"]
    form["expression"] = [*form["expression"], "address.city"]
    form["comment"] = "map the city"
    saved = post_form(browser, "/flows/save", form)
    assert saved.status_code == 303, saved.text
    assert saved.headers["location"] == "/flows/edit/contacts"
    with db.read() as tx:
        revision = revisions.get_revision(tx)
        actor = tx.execute(
            sa.select(tables.audit_entries.c.actor).where(
                tables.audit_entries.c.action == "flows.imported"
            )
        ).scalar_one()
    assert revision.version == 1 and revision.comment == "map the city"
    assert actor == f"ui:{ADMIN}"
    contacts = next(
        f for f in flowfile.parse(revision.text or "", "v1").flows if f.name == "contacts"
    )
    assert ("custom.city", "address.city") in [(t, e.source) for t, e in contacts.fields]
    assert len(flowfile.parse(revision.text or "", "v1").flows) == len(flowfile.load().flows)


def test_a_bad_row_is_refused_at_its_row_and_nothing_changes(
    browser: Browser, db: Database
) -> None:
    form = editor_form(browser.get("/flows/edit/contacts").text)
    form["target"] = [*form["target"], "colour"]
    form["expression"] = [*form["expression"], "name"]
    index = len(form["target"]) - 1
    refused = post_form(browser, "/flows/save", form)
    assert refused.status_code == 400
    value = refused.text.split(f'id="row-{index}-value"')[1].split("</output>")[0]
    assert "upsert_contact has no target" in value
    bad = form | {"expression": [*form["expression"][:-1], "name.["]}
    shown = post_form(browser, "/flows/preview", bad, **HTMX)
    value = shown.text.split(f'id="row-{index}-value"')[1].split("</output>")[0]
    assert "bad expression" in value or "has no target" in value
    with db.read() as tx:
        assert revisions.current_version(tx) == 0


def test_a_viewer_previews_but_cannot_save_or_roll_back(viewer: Browser, db: Database) -> None:
    page = viewer.get("/flows/edit/contacts")
    assert "Check and save" not in page.text
    form = editor_form(page.text)
    assert post_form(viewer, "/flows/preview", form, **HTMX).status_code == 200
    assert post_form(viewer, "/flows/save", form).status_code == 403
    assert post_form(viewer, "/flows/yaml", {"text": flowfile.default_text()}).status_code == 403
    assert post_form(viewer, "/flows/versions/0/rollback", {}).status_code == 403
    assert viewer.post("/test", {"type": "customer.created", "connection": "x"}).status_code == 403
    with db.read() as tx:
        assert revisions.current_version(tx) == 0


def test_versions_diff_and_roll_back(browser: Browser, db: Database) -> None:
    text = flowfile.default_text().replace("name: name", "name: upper(name)", 1)
    revisions.import_text(db, text, where="test", actor="test")
    page = browser.get("/flows/versions?old=0&new=1")
    assert page.status_code == 200
    assert "+      name: upper(name)" in page.text
    rolled = browser.post("/flows/versions/0/rollback")
    assert rolled.status_code == 303
    with db.read() as tx:
        assert revisions.get_revision(tx).comment == "rollback to version 0"


def test_the_yaml_tab_checks_and_saves(browser: Browser, db: Database) -> None:
    page = browser.get("/flows/yaml")
    assert "flows:" in page.text
    bad = "flows:\n  - name: x\n    trigger: customer.created\n    action: upsert_kontakt\n"
    checked = post_form(browser, "/flows/yaml/check", {"text": bad}, **HTMX)
    assert checked.status_code == 200
    assert "line 4" in checked.text and "unknown action" in checked.text
    refused = browser.post("/flows/yaml", {"text": bad, "comment": "x"})
    assert refused.status_code == 400
    good = bad.replace("upsert_kontakt", "upsert_contact").replace(
        "action: upsert_contact", "action: upsert_contact\n    fields: {email: email}"
    )
    saved = browser.post("/flows/yaml", {"text": good, "comment": "one flow"})
    assert saved.status_code == 303, saved.text
    with db.read() as tx:
        assert revisions.get_revision(tx).text == good


def test_values_from_stripe_and_users_are_escaped(browser: Browser, stripe: Stripe) -> None:
    text = flowfile.default_text().replace(
        "  - name: contacts\n", f"  - name: contacts\n    description: '{XSS}'\n", 1
    )
    revisions.import_text(stripe.db, text, where="test", actor="test")
    stripe.send(
        samples.sample_event("customer.created", obj=customer(9, name=XSS), event_id="evt_x")
    )
    listed = browser.get("/flows")
    assert XSS not in listed.text and "&lt;img src=x onerror=alert(1)&gt;" in listed.text
    with stripe.db.read() as tx:
        item = tx.execute(sa.select(tables.inbox_items.c.id)).scalar_one()
    page = browser.get(f"/flows/edit/contacts?sample=item:{item}")
    assert page.status_code == 200
    assert XSS not in page.text
    assert "&lt;img src=x onerror=alert(1)&gt;" in page.text or "\\u003cimg" in page.text


def test_a_test_event_trace_links_to_its_record(browser: Browser, stripe: Stripe) -> None:
    page = browser.get("/test?type=customer.created")
    assert page.status_code == 200 and 'name="type" value="customer.created"' in page.text
    event = samples.sample_event("customer.created", obj=customer(3))
    stripe.send(event)
    pending = browser.get(f"/test/trace/{event['id']}", headers=HTMX)
    assert 'hx-trigger="every 1s"' in pending.text  # the worker has not run: it polls
    stripe.drain()
    done = browser.get(f"/test/trace/{event['id']}", headers=HTMX)
    assert "every 1s" not in done.text
    found = re.search(r'href="/records/contacts/(con_[A-Za-z0-9]+)"', done.text)
    assert found is not None, done.text
    with stripe.db.read() as tx:
        test = tx.execute(
            sa.select(tables.contacts.c.test).where(tables.contacts.c.id == found.group(1))
        ).scalar_one()
    assert test
    assert browser.get("/test/trace/evt_not_a_test").status_code == 404


def test_a_trace_shows_the_fields_of_the_version_that_applied_it(
    browser: Browser, stripe: Stripe
) -> None:
    """A version saved after the worker applied the event does not change what its trace says
    was written (the item records the version that applied it)."""
    event = samples.sample_event("customer.created", obj=customer(4))
    stripe.send(event)
    stripe.drain()  # by the prebuilt flows, version 0
    text = flowfile.default_text().replace("name: name", "name: upper(name)", 1)
    revisions.import_text(stripe.db, text, where="test", actor="test")
    done = browser.get(f"/test/trace/{event['id']}", headers=HTMX)
    assert '<code>name</code> = <code>"Customer 4"</code>' in done.text, done.text
    assert "CUSTOMER 4" not in done.text


def test_sending_a_test_event_is_audited(stripe: Stripe) -> None:
    """What the console's Send (and `send-test-event`) does: post through the real webhook
    endpoint, one audit entry naming who sent which event through which connection."""
    sender = samples.Sender(f"ui:{ADMIN}", stripe.connection.id)
    url = f"http://testserver/webhooks/stripe/{stripe.connection.id}"
    sent = [
        samples.send(
            stripe.db,
            secrets,
            flowfile.load(),
            url=url,
            event=samples.sample_event("customer.created", obj=customer(5)),
            client=stripe.client,
            sender=sender,
        )
        for secrets in ([WEBHOOK_SECRET], ["whsec_not_the_connections"])
    ]
    assert [t.http_status for t in sent] == [200, 400]
    with stripe.db.read() as tx:
        entries = audit.page(tx, action="event.test_sent").data
    assert [(e.actor, e.target, e.outcome, e.details) for e in reversed(entries)] == [
        (
            f"ui:{ADMIN}",
            trace.event_id,
            outcome,
            {
                "type": "customer.created",
                "connection_id": stripe.connection.id,
                "http_status": code,
            },
        )
        for trace, outcome, code in zip(sent, ["ok", "error"], [200, 400], strict=True)
    ]


def test_the_preview_endpoint_says_what_mappings_test_says(
    browser: Browser, run: Cli, tmp_path: Path
) -> None:
    form = editor_form(browser.get("/flows/edit/invoices").text)
    form["target"] = [*form["target"], "custom.due"]
    form["expression"] = [*form["expression"], "iso_datetime(created)"]
    form["sample"] = "type:invoice.created"
    shown = post_form(browser, "/flows/preview", form, **HTMX)
    assert shown.status_code == 200
    values = {}
    for index, target in enumerate(form["target"]):
        cell = shown.text.split(f'id="row-{index}-value"')[1].split("</output>")[0]
        found = re.search(r"= <code>(.*)</code>", cell, re.S)
        assert found is not None, cell
        values[target] = json.loads(html.unescape(found.group(1)))
    spec = {
        "name": form["name"],
        "trigger": form["trigger"],
        "action": form["action"],
        "fields": dict(zip(form["target"], form["expression"], strict=True)),
    }
    draft = preview.with_flow(flowfile.default_text(), spec, replaces="invoices")
    (tmp_path / "flows.yaml").write_text(draft)
    (tmp_path / "event.json").write_text(json.dumps(preview.sample_event("invoice.created")))
    said = run(
        "mappings",
        "test",
        "--event",
        str(tmp_path / "event.json"),
        "--flows",
        str(tmp_path / "flows.yaml"),
        "--flow",
        "invoices",
        "--json",
    ).json()
    (result,) = said["flows"]
    assert result["outcome"] == "would write"
    assert values == result["fields"]
