"""DICOM inputs the sample packages do not have, made on the spot.

pydicom-data holds a handful of images; the defects found in review came from
kinds it lacks (10/12-bit in 16-bit words, odd sizes, MONOCHROME1, YBR,
Enhanced multi-frame, already-lossy, big endian).  :func:`make_dataset` builds
any of them with realistic content (smooth anatomy-like shapes plus noise, so
compression ratios behave as on real images), and :data:`KINDS` names the set
every codec, ingest and rendering test should run over.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    PYDICOM_IMPLEMENTATION_UID,
    generate_uid,
)

__all__ = ["KINDS", "make_dataset", "make_pixels", "write", "write_kind"]

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2.1"
MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
US_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.3.1"

# name -> keyword arguments of make_dataset
KINDS: dict[str, dict] = {
    "u8_odd": dict(rows=61, columns=47, bits_allocated=8, bits_stored=8, modality="OT"),
    "u10": dict(rows=96, columns=80, bits_stored=10, modality="MR"),
    "u12_odd": dict(rows=101, columns=77, bits_stored=12, modality="CR"),
    "u12_dirty": dict(rows=64, columns=70, bits_stored=12, dirty_high_bits=True, modality="CR"),
    "u16": dict(rows=90, columns=110, bits_stored=16, modality="MR"),
    "s12": dict(rows=83, columns=91, bits_stored=12, signed=True, modality="CT"),
    "s16": dict(rows=72, columns=64, bits_stored=16, signed=True, modality="CT"),
    "mono1": dict(rows=97, columns=89, bits_stored=12, photometric="MONOCHROME1", modality="CR"),
    "rgb": dict(rows=67, columns=93, bits_allocated=8, bits_stored=8, samples=3, photometric="RGB", modality="US"),
    "ybr_full": dict(rows=64, columns=81, bits_allocated=8, bits_stored=8, samples=3, photometric="YBR_FULL",
                     modality="US"),
    "multiframe": dict(rows=64, columns=64, bits_stored=12, frames=5, modality="MR"),
    "enhanced_ct": dict(rows=64, columns=66, bits_stored=12, signed=True, frames=3, enhanced=True, modality="CT"),
    "already_lossy": dict(rows=80, columns=72, bits_stored=12, modality="CR",
                          lossy_history=(("ISO_15444_1", 18.0),)),
    "big_endian": dict(rows=63, columns=65, bits_stored=12, big_endian=True, modality="MR"),
}


def make_pixels(rows: int, columns: int, *, frames: int = 1, samples: int = 1, bits_allocated: int = 16,
                bits_stored: int = 12, signed: bool = False, seed: int = 0) -> np.ndarray:
    """Values that use most of the Bits Stored range: discs and gradients over a body, plus noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:rows, 0:columns].astype(np.float64)
    cy, cx = (rows - 1) / 2, (columns - 1) / 2
    out = []
    for f in range(frames):
        body = ((y - cy) / (0.45 * rows)) ** 2 + ((x - cx) / (0.45 * columns)) ** 2 < 1
        image = 0.05 + 0.35 * body + 0.15 * (x / max(columns - 1, 1))
        for k in range(4):
            ry, rx = rng.uniform(0.2, 0.8) * rows, rng.uniform(0.2, 0.8) * columns
            radius = rng.uniform(0.05, 0.15) * min(rows, columns) + f
            image += rng.uniform(0.1, 0.45) * (((y - ry) ** 2 + (x - rx) ** 2) < radius ** 2)
        image += rng.normal(0, 0.01, image.shape)
        image = np.clip(image, 0, 1)
        if samples == 3:
            image = np.stack([image, np.roll(image, 3, axis=1), 1 - image], axis=-1)
        out.append(image)
    unit = np.stack(out) if frames > 1 else out[0]
    levels = (1 << bits_stored) - 1
    values = np.round(unit * levels).astype(np.int64)
    if signed:
        values -= 1 << (bits_stored - 1)
    dtype = np.dtype(f"{'i' if signed else 'u'}{bits_allocated // 8}")
    return values.astype(dtype)


def make_dataset(*, rows: int = 64, columns: int = 64, bits_allocated: int = 16, bits_stored: int = 12,
                 signed: bool = False, photometric: str | None = None, samples: int = 1, frames: int = 1,
                 enhanced: bool = False, lossy_history: tuple[tuple[str, float], ...] = (),
                 big_endian: bool = False, dirty_high_bits: bool = False, modality: str = "OT",
                 study_uid: str | None = None, series_uid: str | None = None, seed: int = 0) -> Dataset:
    """A complete Part 10 dataset of one kind, uncompressed, with new UIDs."""
    photometric = photometric or ("RGB" if samples == 3 else "MONOCHROME2")
    pixels = make_pixels(rows, columns, frames=frames, samples=samples, bits_allocated=bits_allocated,
                         bits_stored=bits_stored, signed=signed, seed=seed)
    if photometric == "MONOCHROME1":
        pixels = (((1 << bits_stored) - 1) - pixels.astype(np.int64)).astype(pixels.dtype)
    if dirty_high_bits:
        noise = np.random.default_rng(seed + 1).integers(0, 1 << (bits_allocated - bits_stored), pixels.shape)
        pixels = (pixels.astype(np.uint32) | (noise.astype(np.uint32) << bits_stored)).astype(pixels.dtype)

    ds = Dataset()
    sop_class = (ENHANCED_CT_IMAGE if enhanced else
                 SECONDARY_CAPTURE if modality == "OT" else
                 US_MULTIFRAME if modality == "US" and frames > 1 else
                 MR_IMAGE if modality == "MR" else CT_IMAGE)
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.FrameOfReferenceUID = generate_uid()
    ds.PatientName = "Synthetic^Kind"
    ds.PatientID = "SYN-" + ds.SOPInstanceUID[-6:]
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20260101"
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
    ds.AccessionNumber = "SYN1"
    ds.StudyID = "1"
    ds.ReferringPhysicianName = ""
    ds.Modality = modality
    ds.Manufacturer = "RadPress tests"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel = samples
    ds.PhotometricInterpretation = photometric
    if samples == 3:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated = bits_allocated
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = int(signed)
    ds.PixelSpacing = [0.5, 0.5]
    if frames > 1 or enhanced:
        ds.NumberOfFrames = frames
    if modality == "CT" and samples == 1:
        ds.RescaleIntercept = 0 if signed else -1024
        ds.RescaleSlope = 1
        ds.RescaleType = "HU"
    if enhanced:
        _enhanced(ds, frames)
    if lossy_history:
        ds.LossyImageCompression = "01"
        ds.LossyImageCompressionMethod = [m for m, _ in lossy_history]
        ds.LossyImageCompressionRatio = [f"{r:g}" for _, r in lossy_history]
        ds.ImageType = ["DERIVED", "PRIMARY", "AXIAL"]

    data = pixels.astype(pixels.dtype.newbyteorder(">")) if big_endian and bits_allocated > 8 else pixels
    raw = data.tobytes()
    ds.PixelData = raw + (b"\0" if len(raw) % 2 else b"")
    ds["PixelData"].VR = "OB" if bits_allocated == 8 else "OW"

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRBigEndian if big_endian else ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    return ds


def _enhanced(ds: Dataset, frames: int) -> None:
    """The Enhanced CT functional groups whose Frame Type must follow Image Type."""
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", "NONE"]
    ds.ContentQualification = "PRODUCT"
    ds.PresentationLUTShape = "IDENTITY"
    ds.BurnedInAnnotation = "NO"
    ds.AcquisitionDateTime = "20260101120000"
    del ds.PixelSpacing
    ds.pop("RescaleIntercept", None), ds.pop("RescaleSlope", None), ds.pop("RescaleType", None)
    shared = Dataset()
    measures = Dataset()
    measures.PixelSpacing = [0.5, 0.5]
    measures.SliceThickness = 1.0
    shared.PixelMeasuresSequence = Sequence([measures])
    orientation = Dataset()
    orientation.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    shared.PlaneOrientationSequence = Sequence([orientation])
    transform = Dataset()
    transform.RescaleIntercept = 0
    transform.RescaleSlope = 1
    transform.RescaleType = "HU"
    shared.PixelValueTransformationSequence = Sequence([transform])
    voi = Dataset()
    voi.WindowCenter = 40
    voi.WindowWidth = 400
    shared.FrameVOILUTSequence = Sequence([voi])
    frame_type = Dataset()
    frame_type.FrameType = ["ORIGINAL", "PRIMARY", "AXIAL", "NONE"]
    frame_type.PixelPresentation = "MONOCHROME"
    frame_type.VolumetricProperties = "VOLUME"
    frame_type.VolumeBasedCalculationTechnique = "NONE"
    shared.CTImageFrameTypeSequence = Sequence([frame_type])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame = []
    for index in range(frames):
        item = Dataset()
        content = Dataset()
        content.FrameAcquisitionNumber = 1
        content.InStackPositionNumber = index + 1
        content.StackID = "1"
        content.DimensionIndexValues = [1, index + 1]
        item.FrameContentSequence = Sequence([content])
        position = Dataset()
        position.ImagePositionPatient = [0, 0, float(index)]
        item.PlanePositionSequence = Sequence([position])
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)


def write(ds: Dataset, path: str | Path) -> Path:
    """Save *ds* as a Part 10 file in the transfer syntax its file meta names."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    big = ds.file_meta.TransferSyntaxUID == ExplicitVRBigEndian
    ds.save_as(path, enforce_file_format=True, little_endian=not big, implicit_vr=False)
    return path


def write_kind(name: str, folder: str | Path, **overrides) -> Path:
    """One file of a named kind, e.g. ``write_kind("s12", tmp_path)``."""
    return write(make_dataset(**{**KINDS[name], **overrides}), Path(folder) / f"{name}.dcm")
