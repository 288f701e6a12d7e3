import numpy as np
import pytest

from core.pixels import decode_frame
from core.segment import body_mask, ct_tissues, dice, iou, otsu_classes, register_segmenter, segmenter_for


def test_dice_and_iou_known_values():
    a = np.zeros((10, 10), bool)
    b = np.zeros((10, 10), bool)
    a[:, :5] = True  # 50 pixels
    b[:, 2:7] = True  # 50 pixels, 30 shared
    assert dice(a, a) == 1.0 and iou(a, a) == 1.0
    assert dice(a, b) == pytest.approx(2 * 30 / 100) and iou(a, b) == pytest.approx(30 / 70)
    assert dice(a, ~a) == 0.0
    empty = np.zeros((4, 4), bool)
    assert dice(empty, empty) == 1.0 and iou(empty, empty) == 1.0


def test_ct_tissues_use_hounsfield_units(load):
    ds = load("693_UNCR")
    masks = ct_tissues(decode_frame(ds, 0), ds)
    assert set(masks) == {"air", "fat", "soft tissue", "bone"}
    assert all(m.any() for m in masks.values())
    stacked = np.stack(list(masks.values())).sum(axis=0)
    assert stacked.max() == 1  # bands do not overlap
    # the skull is bone: the brightest pixels are in the bone mask
    frame = decode_frame(ds, 0)
    assert masks["bone"][frame == frame.max()].all()


def test_otsu_classes_and_body_on_real_images(load):
    mr = decode_frame(load("MR2_UNCR"), 0)
    masks = otsu_classes(mr)
    assert {"body", "class 1", "class 2", "class 3"} <= set(masks)
    assert 0.05 < masks["body"].mean() < 0.95
    us = decode_frame(load("US1_UNCR"), 0)
    assert set(body_mask(us)) == {"body"}


def test_registry_by_modality_and_plugins():
    assert segmenter_for("CT", 1) is ct_tissues and segmenter_for("US", 3) is body_mask
    assert segmenter_for("XX", 1) is otsu_classes

    def custom(frame, ds):
        return {"all": np.ones(frame.shape, bool)}

    register_segmenter("PT", custom)
    assert segmenter_for("PT", 1) is custom
