"""The examples in the loss docstrings run and print what they show."""

from __future__ import annotations

import doctest
import importlib

import pytest
import torch


@pytest.mark.parametrize("module", ["residual_moment", "boundary", "region_wise", "hausdorff", "sdf"])
def test_docstring_examples_run(module):
    mod = importlib.import_module(f"rmseg.losses.{module}")
    result = doctest.testmod(mod, extraglobs={"torch": torch, **vars(mod)}, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
