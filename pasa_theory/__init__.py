"""pasa_theory: exact theory of the PASA shifting scheme.

PASA (online pseudo-average shifting attention) shifts each block of attention scores by β times its
row mean with the matrix ``M = I − (β/n)·J`` and recovers the shift online. This package derives the
scheme symbolically, rounds the matrix exactly to any binary format, and solves the nonlinear equation
for the optimal β exactly (rational arithmetic) and at high precision (mpmath).

Modules (loaded on first use; ``import pasa_theory`` imports neither sympy, numpy nor torch), in layers
that import only downwards (docs/design.md §15; tests/test_architecture.py):

``formats``
    :class:`FloatFormat`, :func:`get_format`, exact rounding :func:`round_to_format` and its numpy
    twin :func:`round_array`.
``shifting``
    The rounded shifting matrix (:func:`shifting_entries`), κ (:func:`kappa`), both β equations and
    :func:`recovery_coefficient_at`, all at a given β.
``roots``
    :class:`FixedPoint`, :func:`fixed_point_from` (the reference iteration from a start),
    :func:`fixed_points` (every rounding cell), :func:`reference_iteration` (the float64 solver).
``selection``
    The criterion that picks *the* optimal β (:func:`select_beta`), and the entry points with
    β = None meaning "the selected optimum": :func:`optimal_beta`, :func:`recovery_coefficient`.
``schema``
    The precision schema (:class:`~pasa_theory.schema.PrecisionSpec`, presets, :data:`STAGES`) and the
    argument rules shared with ``pasa_npu``.
``policies``
    Where each harness method rounds, and to what; the shift constants a run uses.
``bounds``
    :func:`predict`: the four error products for a method on actual tensors (rigorous a-posteriori,
    probabilistic and a-priori bounds from ``rigorous`` — theorems, docs/bounds.md —, the RMSE
    estimate — a model, docs/error-model.md —, the hull cap), the overflow stage and the estimate's
    per-term breakdown; :func:`predict_a_priori`, :func:`overflow_envelope` and :func:`term_scales`
    from input statistics, :func:`derivations`.
``symbols``, ``scheme``
    sympy derivations, each verified symbolically (M, its inverse, the recovery identity, online
    global recovery, the rounded matrix, κ, both forms, the folded scale).
``cli``
    The ``pasa-alpha`` command (also ``pasa-beta`` and ``python -m pasa_theory``).

Any other module of the package (for example one added later) is loaded on attribute access as well:
``pasa_theory.<module>`` works without being listed here.

References of the form ``docs/<file>.md §N`` point to the numbered sections of the method documents
shipped in ``docs/``: the method and the β equations (``method.md``), the kernel's precision model
(``precision.md``), the rounding-error model (``error-model.md``) and the design decisions D1–D14
(``design.md``).

Quick start::

    >>> import pasa_theory as pt
    >>> fp = pt.optimal_beta("fp16", 128, start="31/32")      # the published β = 0.9689939
    >>> round(float(fp), 10), fp.c_repr
    (0.9689939059, Fraction(125, 4))
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

_SUBMODULES = (
    "formats",
    "shifting",
    "roots",
    "selection",
    "schema",
    "symbols",
    "scheme",
    "policies",
    "bounds",
    "cli",
)

_EXPORTS = {
    # formats
    "FloatFormat": "formats",
    "FORMATS": "formats",
    "ROUNDING_MODES": "formats",
    "get_format": "formats",
    "round_to_format": "formats",
    "round_array": "formats",
    "is_representable": "formats",
    "next_up": "formats",
    "next_down": "formats",
    "ulp": "formats",
    "quantum_array": "formats",
    "rounding_preimage": "formats",
    # shifting
    "FORMS": "shifting",
    "normalize_form": "shifting",
    "shifting_entries": "shifting",
    "rounded_ab": "shifting",
    "equation_rhs": "shifting",
    "fixed_point_map": "shifting",
    "kappa": "shifting",
    "recovery_coefficient": "selection",
    "recovery_coefficient_at": "shifting",
    # roots
    "FixedPoint": "roots",
    "Cell": "roots",
    "optimal_beta": "selection",
    "fixed_point_from": "roots",
    "fixed_points": "roots",
    "cell_of": "roots",
    "cell_count": "roots",
    "reference_iteration": "roots",
    "DEFAULT_STARTS": "roots",
    # selection
    "select_beta": "selection",
    # schema
    "PrecisionSpec": "schema",
    "PRESET_SPECS": "schema",
    "STAGES": "schema",
    "rank_fixed_points": "selection",
    "selection_window": "selection",
    # bounds (rounding-error model)
    "predict": "bounds",
    "predict_many": "bounds",
    "Prediction": "bounds",
    "predict_a_priori": "bounds",
    "overflow_envelope": "bounds",
    "term_scales": "bounds",
    "InputStats": "bounds",
    "derivations": "bounds",
}

__all__ = sorted(_EXPORTS) + list(_SUBMODULES)


def __getattr__(name: str) -> Any:  # a lazily loaded public name or submodule, whatever it is
    if name in _EXPORTS:
        module = importlib.import_module(f".{_EXPORTS[name]}", __name__)
        value = getattr(module, name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if not name.startswith("__") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
