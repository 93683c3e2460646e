"""Fuzzing the editor's File > Open with damaged and hostile files (see tests/fuzz): every case,
in a forked child under a memory limit and a timeout, must open or be refused with one clear
message, and a refused file must leave the open document (with its unsaved edit) untouched.
The fast suite runs a fixed sample; ``-m slow`` a bigger one; the large campaign is
``python -m tests.fuzz.campaign --targets editor-open``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings

import presets
from tests.fuzz import mutate
from tests.fuzz.harness import Harness

_SETTINGS = dict(deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
TARGET = ("editor-open",)


@pytest.fixture(scope="module")
def harness() -> Iterator[Harness]:
    with Harness(warm=[str(presets.path("two_layer_net"))]) as h:
        yield h


def _check(harness: Harness, case: tuple[str, str, list[str], int]) -> None:
    target, seed, mutations, salt = case
    data, suffix = mutate.make(seed, mutations, salt)
    outcome = harness.outcome(target, data, suffix)
    assert outcome.acceptable, f"{target} {seed} {mutations} salt={salt}: {outcome}"


@settings(max_examples=15, **_SETTINGS)
@given(case=mutate.cases(TARGET))
def test_damaged_and_hostile_files_open_or_are_refused_leaving_the_document(harness, case) -> None:
    _check(harness, case)


@pytest.mark.slow
@settings(max_examples=200, **_SETTINGS)
@given(case=mutate.cases(TARGET))
def test_damaged_and_hostile_files_in_the_editor_many_more(harness, case) -> None:
    _check(harness, case)


def test_the_editor_target_says_what_it_must(harness, tmp_path) -> None:
    """It can fail: a good file opens, a bad one is refused with the loader's one line."""
    ok = harness.outcome("editor-open", presets.path("linear_regression").read_bytes(), ".json")
    assert ok.kind == "ok" and ok.code == 0, ok
    bad = harness.outcome("editor-open", b'{"format": "backprop-studio.graph", "version": 1, "nodes": [', ".json")
    assert bad.kind == "error" and "Cannot open file" in bad.message and "incomplete" in bad.message, bad
