"""Shared fixtures: the optional real-data folder and the repository root; :func:`tol`, the tolerance rule."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_root() -> Path | None:
    """Real data beside the checkout (``../shared/data``) or ``$RMSEG_SHARED_DATA``; None if absent."""
    env = os.environ.get("RMSEG_SHARED_DATA")
    root = Path(env) if env else REPO_ROOT.parent / "shared" / "data"
    return root if root.is_dir() else None


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of the real data; the test is skipped when it is absent."""
    root = shared_data_root()
    if root is None:
        pytest.skip("real data not found (../shared/data or RMSEG_SHARED_DATA)")
    return root


def tol(dtype: torch.dtype = torch.float32, n_terms: int = 1, *, ops: int = 8, summation: str = "any") -> float:
    """Relative tolerance between two computations of one value in ``dtype``: derived from what is compared,
    never tuned on a machine (a bound tried on one CPU once failed on another: 1.25e-5 against 1e-5).

    A floating-point result carries a relative rounding error of at most u = eps / 2 per operation
    (eps = ``torch.finfo(dtype).eps``). A sum of ``n_terms`` terms of one sign is within (n_terms - 1) u of
    the exact sum in *any* order of accumulation -- SIMD width, blocking, thread count, oneDNN or reference
    kernel, fused or separate, numpy or torch: what differs between machines -- and within
    ceil(log2 n_terms) u for a pairwise (cascade) sum, which is how torch reduces on the CPU
    (``summation="pairwise"``, for large sums whose accuracy is the point of the test). ``ops`` counts the
    elementwise operations on the way (exp and softmax, powers, products with weights, casts), u each.
    Two independent computations differ by at most the sum of both bounds:

        tol = 2 u (terms + ops) = eps * (terms + ops),   terms = n_terms - 1  or  ceil(log2 n_terms)

    For terms of mixed sign (gradients, differences) the bound is relative to the sum of |terms|: use
    ``tol(...) * scale`` as the atol. Under bf16 autocast, pass ``torch.bfloat16`` (eps 2^-7) with the
    number of bfloat16 roundings of an input as ``ops`` (sums stay float32 and add nothing visible).

    It still catches the bugs that matter: a wrong sign or a factor 2 is a relative error of O(1), and a
    pixel missed or counted twice changes a sum of n same-sign terms by about 1/n, above ``tol`` while
    eps * (n + ops) < 1/n -- up to n of about 2900 in float32 for ``"any"``, far beyond for ``"pairwise"``
    or float64.
    """
    eps = torch.finfo(dtype).eps
    if summation == "any":
        terms = max(n_terms - 1, 0)
    elif summation == "pairwise":
        terms = math.ceil(math.log2(n_terms)) if n_terms > 1 else 0
    else:
        raise ValueError(f"summation is 'any' or 'pairwise', not {summation!r}")
    return eps * (terms + ops)
