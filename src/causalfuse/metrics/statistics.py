"""Statistical metrics: SD, RMSE, PSNR (VIFB definitions), CC and SCD.

Every function takes one channel on the 0-255 scale. Zero denominators give
what MATLAB gives (inf or NaN), never an exception.
"""

from __future__ import annotations

import numpy as np

from ._registry import register_metric

__all__ = ["standard_deviation", "rmse", "psnr", "correlation_coefficient", "scd", "corr2"]


def _f64(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


@register_metric(
    "SD",
    higher_is_better=True,
    reference="Y.-J. Rao, In-fibre Bragg grating sensors, Measurement Science and Technology 8(4):355-375, 1997, "
    "doi:10.1088/0957-0233/8/4/002",
    colour="fused_only",
    vifb_name="Variance",
)
def standard_deviation(fused: np.ndarray, ir: np.ndarray | None = None, vi: np.ndarray | None = None) -> float:
    """Population standard deviation of the fused image (VIFB calls it ``Variance``)."""
    f = _f64(fused)
    d = f - f.mean()
    return float(np.sqrt(np.einsum("ij,ij->", d, d) / f.size))


def _vifb_mse(a: np.ndarray, b: np.ndarray) -> float:
    """VIFB's ``mse``: sqrt(sum (a - b)^2) / (m n). Not a mean squared error; kept as defined."""
    d = _f64(a) - _f64(b)
    return float(np.sqrt(np.einsum("ij,ij->", d, d)) / d.size)


_JAGALINGAM = (
    "P. Jagalingam, A. V. Hegde, A review of quality metrics for fused image, Aquatic Procedia 4:133-142, 2015, "
    "doi:10.1016/j.aqpro.2015.02.019"
)


@register_metric("RMSE", higher_is_better=False, reference=_JAGALINGAM, vifb_name="Rmse")
def rmse(fused: np.ndarray, ir: np.ndarray, vi: np.ndarray) -> float:
    """VIFB's RMSE: (d(VI, F) + d(IR, F)) / 2 with d = sqrt(sum (a - b)^2) / (m n).

    This is the quantity VIFB reports under that name (the square root is
    taken before dividing by the pixel count), not a textbook RMSE.
    """
    return (_vifb_mse(vi, fused) + _vifb_mse(ir, fused)) / 2.0


@register_metric("PSNR", higher_is_better=True, reference=_JAGALINGAM, vifb_name="Psnr")
def psnr(fused: np.ndarray, ir: np.ndarray, vi: np.ndarray) -> float:
    """VIFB's PSNR: 20 log10(255 / sqrt(d)) with d = (d(VI, F) + d(IR, F)) / 2 as in :func:`rmse`.

    inf when both sources equal the fused image.
    """
    d = (_vifb_mse(vi, fused) + _vifb_mse(ir, fused)) / 2.0
    with np.errstate(divide="ignore"):
        return float(20.0 * np.log10(255.0 / np.sqrt(np.float64(d))))


def corr2(a: np.ndarray, b: np.ndarray) -> float:
    """MATLAB ``corr2``: Pearson correlation of two images (NaN when one is constant)."""
    a = _f64(a)
    b = _f64(b)
    da = a - a.mean()
    db = b - b.mean()
    num = np.einsum("ij,ij->", da, db)
    den = np.sqrt(np.einsum("ij,ij->", da, da) * np.einsum("ij,ij->", db, db))
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.float64(num) / np.float64(den))


@register_metric(
    "CC",
    higher_is_better=True,
    reference="J. Ma, Y. Ma, C. Li, Infrared and visible image fusion methods and applications: a survey, "
    "Information Fusion 45:153-178, 2019, doi:10.1016/j.inffus.2018.02.004",
)
def correlation_coefficient(fused: np.ndarray, ir: np.ndarray, vi: np.ndarray) -> float:
    """Correlation coefficient (r(VI, F) + r(IR, F)) / 2 with r the Pearson correlation (``corr2``).

    NaN when the fused image or a source is constant: ``corr2``'s 0 / 0, as
    in the original (exact for 8-bit data, whose mean is exact).
    """
    return (corr2(vi, fused) + corr2(ir, fused)) / 2.0


@register_metric(
    "SCD",
    higher_is_better=True,
    reference="V. Aslantas, E. Bendes, A new image quality metric for image fusion: the sum of the correlations of "
    "differences, AEU - International Journal of Electronics and Communications 69(12):1890-1896, 2015, "
    "doi:10.1016/j.aeue.2015.09.004",
)
def scd(fused: np.ndarray, ir: np.ndarray, vi: np.ndarray) -> float:
    """Sum of the correlations of differences: corr2(F - IR, VI) + corr2(F - VI, IR).

    NaN, as the original's ``corr2`` 0 / 0, when a source is constant or the
    fused image is a source plus a constant (F - IR or F - VI constant, e.g.
    F equal to a source); a constant fused image alone gives a finite value.
    """
    f = _f64(fused)
    a = _f64(vi)
    b = _f64(ir)
    return corr2(f - b, a) + corr2(f - a, b)
