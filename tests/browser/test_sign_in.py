"""Signing in, in chromium: the first-admin link `serve` printed, the keyboard, a phone's
width, the viewer's narrower console, signing out, and axe on each page."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from tests.browser.conftest import ADMIN, PASSWORD, VIEWER, Console, axe, fits, sign_in


def test_the_printed_set_up_link_makes_an_admin_who_lands_signed_in(
    page: Page, console: Console
) -> None:
    page.goto(console.setup_link)
    expect(page.get_by_role("heading", name="Set up your account")).to_be_visible()
    axe(page)
    page.get_by_label("Email").fill("first@example.com")
    page.get_by_label("Password (at least 10 characters)").fill("a long first password")
    page.get_by_label("Password again").fill("a long first password")
    page.get_by_role("button", name="Save and sign in").click()
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    expect(page.get_by_role("link", name="first@example.com")).to_be_visible()
    axe(page)
    # The link worked once.
    page.goto(console.setup_link)
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    expect(page.get_by_text("unknown, used or expired")).to_be_visible()


def test_sign_in_with_the_keyboard_on_a_phone(phone: Page) -> None:
    phone.goto("/account")
    expect(phone).to_have_url(re.compile(r"/sign-in\?next=%2Faccount$"))
    axe(phone)
    fits(phone)
    expect(phone.get_by_label("Email")).to_be_focused()
    phone.keyboard.type(ADMIN)
    phone.keyboard.press("Tab")
    expect(phone.get_by_label("Password")).to_be_focused()
    phone.keyboard.type(PASSWORD)
    phone.keyboard.press("Enter")
    expect(phone.get_by_role("heading", name="Your account")).to_be_visible()
    fits(phone)
    axe(phone)
    # Times are shown in the browser's zone, the exact UTC time on hover.
    since = phone.locator("time").first
    expect(since).to_have_attribute("title", re.compile(r"UTC$"))
    expect(since).not_to_have_text(re.compile("UTC"))


def test_a_wrong_password_is_announced(page: Page) -> None:
    page.goto("/sign-in")
    page.get_by_label("Email").fill(ADMIN)
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text("wrong email or password")
    expect(page.get_by_label("Email")).to_have_value(ADMIN)
    axe(page)


def test_a_viewer_is_offered_no_admin_screen_and_signs_out(page: Page) -> None:
    sign_in(page, VIEWER)
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    screens = page.get_by_role("navigation", name="Screens")
    expect(screens.get_by_role("link", name="Audit")).to_be_visible()
    expect(screens.get_by_role("link", name="Users")).to_have_count(0)
    page.goto("/users")
    expect(page.get_by_role("heading", name="Not allowed")).to_be_visible()
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.get_by_role("status")).to_have_text("You are signed out.")
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/sign-in"))


def test_focus_is_visible_and_the_skip_link_works(page: Page) -> None:
    sign_in(page)
    page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="Skip to content")
    expect(skip).to_be_focused()
    outline = skip.evaluate("el => getComputedStyle(el).outlineStyle")
    assert outline != "none"
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"#main$"))
