"""The examples in the engine's docstrings are run, so they stay true."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import processors

MODULES = sorted(m.name for m in pkgutil.iter_modules(processors.__path__, "processors."))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


def test_the_engine_has_an_example():
    finder = doctest.DocTestFinder()
    tests = finder.find(importlib.import_module("processors.engine").Engine)
    assert sum(len(t.examples) for t in tests) >= 5
