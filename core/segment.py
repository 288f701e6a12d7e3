"""Classical, deterministic segmenters used to ask "does the task still give the same answer?".

A segmenter takes one frame (stored values) and its dataset and returns named
boolean masks.  The registry is keyed by modality; a clinic can register its
own model under a modality with :func:`register_segmenter`.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from pydicom.dataset import Dataset

__all__ = ["Segmenter", "register_segmenter", "segmenter_for", "ct_tissues", "otsu_classes", "body_mask", "dice", "iou"]

Segmenter = Callable[[np.ndarray, Dataset], dict[str, np.ndarray]]

# Hounsfield-unit bands (lower inclusive, upper exclusive).
CT_BANDS = {"air": (-np.inf, -400.0), "fat": (-150.0, -30.0), "soft tissue": (-30.0, 150.0), "bone": (300.0, np.inf)}


def _luminance(frame: np.ndarray) -> np.ndarray:
    return frame.astype(np.float64).mean(axis=-1) if frame.ndim == 3 else frame.astype(np.float64)


def body_mask(frame: np.ndarray, _ds: Dataset | None = None) -> dict[str, np.ndarray]:
    """Regions above an Otsu threshold, holes filled, specks under 1 % of the image dropped.

    Keeping every sizeable region (not only the largest) keeps the mask stable
    when two regions are about the same size.
    """
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    values = _luminance(frame)
    if values.max() == values.min():
        return {"body": np.zeros(values.shape, bool)}
    mask = ndimage.binary_fill_holes(values > threshold_otsu(values))
    labels, count = ndimage.label(mask)
    if count > 1:
        sizes = ndimage.sum(mask, labels, range(1, count + 1))
        keep = np.flatnonzero(sizes >= 0.01 * mask.size) + 1
        mask = np.isin(labels, keep)
    return {"body": mask}


def otsu_classes(frame: np.ndarray, ds: Dataset | None = None, classes: int = 3) -> dict[str, np.ndarray]:
    """Multi-Otsu classes (MR, radiographs) plus the body mask."""
    from skimage.filters import threshold_multiotsu

    values = _luminance(frame)
    masks = body_mask(frame, ds)
    if np.unique(values).size <= classes:
        return masks
    thresholds = threshold_multiotsu(values, classes=classes)
    regions = np.digitize(values, bins=thresholds)
    for k in range(classes):
        masks[f"class {k + 1}"] = regions == k
    return masks


def ct_tissues(frame: np.ndarray, ds: Dataset) -> dict[str, np.ndarray]:
    """Air, fat, soft tissue and bone by Hounsfield units (after Rescale Slope/Intercept)."""
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    hu = frame.astype(np.float64) * slope + intercept
    return {name: (hu >= lo) & (hu < hi) for name, (lo, hi) in CT_BANDS.items()}


_REGISTRY: dict[str, Segmenter] = {"CT": ct_tissues, "MR": otsu_classes, "CR": otsu_classes, "DX": otsu_classes,
                                   "MG": otsu_classes, "US": body_mask}


def register_segmenter(modality: str, segmenter: Segmenter) -> None:
    _REGISTRY[modality] = segmenter


def segmenter_for(modality: str, samples: int) -> Segmenter:
    """Colour images get the body mask whatever their modality."""
    if samples == 3:
        return body_mask
    return _REGISTRY.get(modality, otsu_classes)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = int(np.logical_or(a, b).sum())
    return 1.0 if union == 0 else int(np.logical_and(a, b).sum()) / union
