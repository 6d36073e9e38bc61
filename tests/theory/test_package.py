"""Package-level contract: lazy imports, import time, public names, signatures used by pasa_npu."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pasa_theory as pt

PROBE = """
import sys, time
t = time.perf_counter()
import pasa_theory
dt = time.perf_counter() - t
heavy = [m for m in ("torch", "sympy", "numpy", "mpmath") if m in sys.modules]
print(dt, ",".join(heavy))
"""


def _probe(code: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    return out.stdout.strip()


def test_import_is_fast_and_light():
    fields = _probe(PROBE).split(" ")
    dt, heavy = fields[0], (fields[1] if len(fields) > 1 else "")
    assert float(dt) < 0.5  # measured about 4 ms; the bound is generous for slow CI machines
    assert heavy == ""  # neither torch, sympy, numpy nor mpmath at import


def test_using_the_solver_never_imports_torch_or_sympy():
    code = (
        "import sys, pasa_theory as pt\n"
        "pt.optimal_beta('fp16', 128, start='31/32', scale='1/sqrt(128)')\n"
        "pt.recovery_coefficient(); pt.fixed_points('bf16', 128, interval=('0.9', '1'))\n"
        "print([m for m in ('torch', 'sympy') if m in sys.modules])"
    )
    assert _probe(code) == "[]"


def test_public_names_resolve_and_are_listed():
    for name in pt.__all__:
        assert getattr(pt, name) is not None
    assert set(pt.__all__) <= set(dir(pt))
    try:
        pt.does_not_exist  # noqa: B018
    except AttributeError as exc:
        assert "does_not_exist" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("expected AttributeError")


def test_contract_signatures():
    sig = inspect.signature(pt.optimal_beta)
    assert list(sig.parameters)[:2] == ["fmt", "n"]
    assert sig.parameters["fmt"].default == "fp16" and sig.parameters["n"].default == 128
    for kw, default in [("start", None), ("form", "paper"), ("scale", None), ("dps", 50)]:
        p = sig.parameters[kw]
        assert p.kind is p.KEYWORD_ONLY and p.default == default
    sig = inspect.signature(pt.fixed_points)
    assert sig.parameters["interval"].default == (0, 1) and sig.parameters["form"].default == "paper"
    sig = inspect.signature(pt.recovery_coefficient)
    assert [sig.parameters[k].default for k in ("fmt", "n", "beta")] == ["fp16", 128, None]
    assert sig.parameters["source"].default == "rounded_m" and sig.parameters["vector_format"].default is None
    sig = inspect.signature(pt.shifting_entries)
    assert sig.parameters["scale"].kind is inspect.Parameter.KEYWORD_ONLY
    sig = inspect.signature(pt.round_to_format)
    assert sig.parameters["mode"].default == "nearest_even"


def test_moved_names_still_import_from_their_old_modules_with_a_warning():
    """optimal_beta and recovery_coefficient (β = None: the selected optimum) live in the top layer,
    pasa_theory.selection; the old module paths keep working with a DeprecationWarning."""
    import warnings

    import pasa_theory.roots as roots
    import pasa_theory.selection as selection
    import pasa_theory.shifting as shifting

    for module, name in ((roots, "optimal_beta"), (shifting, "recovery_coefficient")):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            obj = getattr(module, name)
        assert obj is getattr(selection, name) is getattr(pt, name)
        assert any(issubclass(w.category, DeprecationWarning) and name in str(w.message) for w in caught)
    assert pt.recovery_coefficient() == pt.recovery_coefficient_at("fp16", 128, pt.optimal_beta().beta_exact)
    assert pt.fixed_point_from("fp16", 128, "31/32").beta_exact == pt.optimal_beta(start="31/32").beta_exact


def test_fixed_point_prints_short():
    fp = pt.optimal_beta("fp16", 128, start="31/32")
    assert str(fp) == fp.summary() and len(str(fp)) < 160
    assert (
        repr(fp) == "FixedPoint('fp16', n=128, form='paper', beta=0.9689939059, c_repr=125/4, kappa=-6.1e-5)"
    )
