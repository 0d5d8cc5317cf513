"""The dtab playground (``/delegator``) on both admin servers draws the delegation tree."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import pytest
from selenium.webdriver.common.by import By

from .conftest import Stack, page_errors, screenshot, wait_for

pytestmark = pytest.mark.browser

#: An alternative whose first branch is negative (so the fallback, a union, is used).
EXTRA = "/svc/pick => /svc/nosuch | (3 * /svc/a & 1 * /svc/b);"


def _open(driver: Any, stack: Stack, side: str, **params: str) -> None:
    base = stack.linker.admin if side == "linker" else stack.namerd.admin
    scope = {"router": "outgoing"} if side == "linker" else {"namespace": "default"}
    driver.get(f"{base}/delegator?{urlencode({**params, **scope})}")


@pytest.mark.parametrize("side", ["namerd", "linker"])
def test_the_tree_shows_the_fallback_taken_and_the_union_weights(
    driver: Any, stack: Stack, side: str
) -> None:
    _open(driver, stack, side, path="/svc/pick", dtab=EXTRA)
    alt = wait_for(
        lambda: driver.find_element(By.CSS_SELECTOR, "#result ul.tree > li.k-alt"), "the alt"
    )
    branches = alt.find_elements(By.XPATH, "./ul/li")
    # /svc/nosuch: the fs namer has no such file, so the branch is negative and skipped.
    assert "skipped" in branches[0].get_attribute("class")
    assert "/svc/nosuch" in branches[0].text
    union = branches[1]
    assert set(union.get_attribute("class").split()) >= {"k-union", "chosen"}
    weights = [w.text for w in union.find_elements(By.XPATH, "./ul/li/span/span[@class='choice']")]
    assert weights == ["weight 3 (75%)", "weight 1 (25%)"]
    # Each union branch ends in a leaf with the backend's address and the dentry that matched.
    leaves = union.find_elements(By.CSS_SELECTOR, "li.k-leaf")
    assert [
        f"127.0.0.1:{stack.a.port}" in leaves[0].text,
        f"127.0.0.1:{stack.b.port}" in leaves[1].text,
    ] == [True, True]
    assert "/svc => /#/io.l5d.fs" in leaves[0].text
    assert page_errors(driver) == []
    if side == "linker":
        screenshot(driver, "playground.png")


@pytest.mark.parametrize("side", ["namerd", "linker"])
def test_a_parse_error_shows_the_caret(driver: Any, stack: Stack, side: str) -> None:
    _open(driver, stack, side, path="/svc/app", dtab="/svc/app => /svc/a |")
    shown = wait_for(
        lambda: driver.find_element(By.CSS_SELECTOR, "#result pre.caret").text, "the caret"
    )
    assert "HTTP 400" in shown
    assert "Invalid dtab" in shown
    assert shown.rstrip().endswith("^")
