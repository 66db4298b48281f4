"""Registering infrared images to visible ones (two cameras side by side).

:func:`estimate_transform` finds the transform that maps the visible pixel grid
onto the infrared image (translation, similarity, affine or projective), by
mutual information with SimpleITK and OpenCV; :func:`warp_to_visible` resamples
the infrared image onto the visible grid; :class:`Transform` is saved and loaded
as a small JSON file, so a rig calibrated once is applied to every later pair;
:func:`fit_once` makes one transform from several pairs; :func:`check_image`
draws a checkerboard of the registered pair.

Needs the ``register`` extra: ``pip install "causalfuse[register]"``.
"""

from .estimate import MIN_MI, MIN_OVERLAP, SNAP, RegistrationError, SearchRange, estimate_transform, mutual_information_bits
from .pairs import Registered, check_image, fit_once, register_arrays
from .transform import MODELS, Transform, coverage_mask, largest_covered_box, nominal_matrix, warp_to_visible

__all__ = [
    "MIN_MI",
    "MIN_OVERLAP",
    "MODELS",
    "SNAP",
    "Registered",
    "RegistrationError",
    "SearchRange",
    "Transform",
    "check_image",
    "coverage_mask",
    "estimate_transform",
    "fit_once",
    "largest_covered_box",
    "mutual_information_bits",
    "nominal_matrix",
    "register_arrays",
    "warp_to_visible",
]
