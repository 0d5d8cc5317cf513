"""namerd's console (``/`` on its admin port): validate, dry-run, save, roll back, conflicts."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement

from .conftest import BASE_DTAB, Stack, page_errors, screenshot, wait_for

pytestmark = pytest.mark.browser


@pytest.fixture
def console(driver: Any, stack: Stack) -> Iterator[Any]:
    """The console open on namespace ``default``, which holds BASE_DTAB."""
    assert stack.put_dtab(BASE_DTAB).status_code == 204
    driver.get(f"{stack.namerd.admin}/#ns=default")
    wait_for(lambda: "/svc/app => /svc/a;" in _editor(driver).get_attribute("value"), "the dtab")
    wait_for(lambda: "valid" in _text(driver, "validation"), "the first dry run")
    yield driver
    assert page_errors(driver) == []


def _editor(driver: Any) -> WebElement:
    return driver.find_element(By.ID, "editor")


def _text(driver: Any, element_id: str) -> str:
    return str(driver.find_element(By.ID, element_id).text)


def _type(driver: Any, element_id: str, text: str) -> None:
    box = driver.find_element(By.ID, element_id)
    box.clear()
    box.send_keys(text)


def _backend(stack: Stack) -> str:
    return stack.get("app").headers.get("x-backend", "?")


def _stored(stack: Stack) -> str:
    url = f"{stack.namerd.api}/api/1/dtabs/default"
    return httpx.get(url, headers={"Accept": "application/dtab"}, timeout=5).text


def _diff_row(driver: Any, path: str) -> WebElement:
    for row in driver.find_elements(By.CSS_SELECTOR, "#diff tbody tr"):
        if row.find_element(By.CSS_SELECTOR, "td").text == path:
            return row
    raise LookupError(path)


def test_edit_validate_diff_save_and_roll_back(console: Any, stack: Stack) -> None:
    driver = console
    version = int(_text(driver, "heading").rsplit(" ", 1)[1])
    # A dtab that does not parse: the API's caret diagram, and nothing can be saved.
    _type(driver, "editor", "/svc => /#/io.l5d.fs;\n/svc/app => /svc/b |")
    caret = wait_for(
        lambda: driver.find_element(By.CSS_SELECTOR, "#validation pre.caret").text, "the caret"
    )
    assert caret.rstrip().endswith("^")
    assert not driver.find_element(By.ID, "save").is_enabled()

    # A good one: the dry run shows /svc/app moving from a to b, highlighted.
    _type(driver, "paths", "/svc/app")
    _type(driver, "editor", "/svc => /#/io.l5d.fs;\n/svc/app => /svc/b;")
    row = wait_for(lambda: _diff_row(driver, "/svc/app"), "the dry run of /svc/app")
    wait_for(lambda: "changed" in _diff_row(driver, "/svc/app").get_attribute("class"), "a diff")
    cells = [c.text for c in _diff_row(driver, "/svc/app").find_elements(By.TAG_NAME, "td")]
    assert cells[2:] == ["/#/io.l5d.fs/a", "/#/io.l5d.fs/b"]
    assert row is not None
    screenshot(driver, "namerd-console.png")
    assert _backend(stack) == "a"

    # Save (If-Match): stored, and the linker's traffic moves to b.
    driver.find_element(By.ID, "save").click()
    wait_for(lambda: f"saved as v{version + 1}" in _text(driver, "save-status"), "the save")
    stored = _stored(stack)
    assert stored == "/svc=>/#/io.l5d.fs;/svc/app=>/svc/b\n"
    wait_for(lambda: _backend(stack) == "b", "traffic on b")

    # History lists the write; rolling back to the version before writes it back.
    button = wait_for(
        lambda: driver.find_element(
            By.XPATH, f"//table[@id='history']//tr[@data-version='{version}']//button"
        ),
        "the rollback button",
    )
    assert button.text == f"Roll back to v{version}"
    button.click()
    wait_for(lambda: f"saved as v{version + 2}" in _text(driver, "save-status"), "the rollback")
    wait_for(lambda: _backend(stack) == "a", "traffic back on a")
    history = httpx.get(f"{stack.namerd.api}/api/1/dtabs/default/history?limit=1").json()
    assert history[0]["version"] == version + 2
    assert history[0]["op"] == "update"  # guarded by If-Match


def test_a_concurrent_edit_is_a_conflict_not_an_overwrite(console: Any, stack: Stack) -> None:
    driver = console
    _type(driver, "editor", "/svc => /#/io.l5d.fs;\n/svc/app => /svc/b;")
    wait_for(lambda: driver.find_element(By.ID, "save").is_enabled(), "a savable edit")
    # Someone else writes between this page's load and its save.
    theirs = "/svc => /#/io.l5d.fs; /svc/app => /svc/a; /svc/other => /svc/a;"
    assert stack.put_dtab(theirs).status_code == 204
    driver.find_element(By.ID, "save").click()
    panel = wait_for(
        lambda: (
            driver.find_element(By.ID, "conflict").is_displayed()
            and driver.find_element(By.ID, "conflict")
        ),
        "the conflict",
    )
    assert "Not saved" in panel.text
    assert "/svc/other => /svc/a;" in _text(driver, "theirs")
    assert "/svc/app => /svc/b;" in _text(driver, "mine")
    stored = _stored(stack)
    assert stored == "/svc=>/#/io.l5d.fs;/svc/app=>/svc/a;/svc/other=>/svc/a\n"
    # Starting again from the stored version loads it into the editor.
    driver.find_element(By.ID, "take-theirs").click()
    wait_for(lambda: "/svc/other" in _editor(driver).get_attribute("value"), "their text")
    assert not driver.find_element(By.ID, "conflict").is_displayed()
