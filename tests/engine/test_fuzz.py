"""Fuzzing the loader and the CLI (`info`, `run`) with damaged and hostile files.

Every case (a lesson, one to three mutations, see :mod:`tests.fuzz.mutate`) runs in a forked
child under a memory limit and a timeout (:mod:`tests.fuzz.harness`) and must end in a clear
one-line error or a successful load/run: never a traceback, a hang or a blow-up. The fast suite
runs a fixed sample; ``-m slow`` a bigger one; ``python -m tests.fuzz.campaign`` the large
campaign whose results the issue note quotes.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings

import presets
from tests.fuzz import mutate
from tests.fuzz.harness import Harness

_SETTINGS = dict(deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def harness() -> Iterator[Harness]:
    with Harness(warm=[str(presets.path("two_layer_net"))]) as h:
        yield h


def _check(harness: Harness, case: tuple[str, str, list[str], int]) -> None:
    target, seed, mutations, salt = case
    data, suffix = mutate.make(seed, mutations, salt)
    outcome = harness.outcome(target, data, suffix)
    assert outcome.acceptable, f"{target} {seed} {mutations} salt={salt}: {outcome}"


@settings(max_examples=60, **_SETTINGS)
@given(case=mutate.cases())
def test_damaged_and_hostile_files_get_a_clear_message_or_load(harness: Harness, case: tuple[str, str, list[str], int]) -> None:
    _check(harness, case)


@pytest.mark.slow
@settings(max_examples=600, **_SETTINGS)
@given(case=mutate.cases())
def test_damaged_and_hostile_files_many_more(harness: Harness, case: tuple[str, str, list[str], int]) -> None:
    _check(harness, case)


def test_the_harness_catches_what_it_must(harness: Harness) -> None:
    """The judge itself can fail: a traceback, a hang, a blow-up, a bug report, a long message."""
    from tests.fuzz.harness import classify

    assert classify(1, None, "", "Traceback (most recent call last):\n  ...\nKeyError: 'x'\n", 0.1, 90).kind == "crash"
    assert classify(None, "SIGALRM", "", "", 60, 90).kind == "hang"
    assert classify(2, None, "", "backprop-studio: error: ran out of memory\n", 1, 900).kind == "blowup"
    assert classify(3, None, "", "backprop-studio: error: ... This is a bug in Backprop Studio ...\n", 1, 90).kind == "crash"
    assert classify(2, None, "", "backprop-studio: error: " + "x" * 5000 + "\n", 1, 90).kind == "crash"
    assert classify(2, None, "", "backprop-studio: error: f.json: it is empty\n", 1, 90).kind == "error"
    assert harness.outcome("load", b"", ".json").kind == "error"
    assert harness.outcome("run", presets.path("linear_regression").read_bytes(), ".json").kind == "ok"
