"""The Examples sections of the docstrings are executed (they are documentation and must stay true)."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "pasa_theory",
    "pasa_theory.formats",
    "pasa_theory.shifting",
    "pasa_theory.roots",
    "pasa_theory.selection",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
    assert result.attempted > 0
