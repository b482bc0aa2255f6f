"""read_image on rasters, synthetic DICOM and bad inputs: typed errors, never a raw traceback."""

from __future__ import annotations

import io
import struct

import numpy as np
import pydicom
import pytest
import tifffile
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid

import calcimeasure
from calcimeasure import errors


def write_dicom(path, pixels: np.ndarray, **attrs):
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.Modality = "DX"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    for key, value in attrs.items():
        setattr(ds, key, value)
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return ds


@pytest.fixture
def ramp():
    return (np.arange(64 * 48).reshape(64, 48) % 4000).astype(np.uint16)


def test_dicom_monochrome2_and_meta(tmp_path, ramp):
    p = tmp_path / "a.dcm"
    write_dicom(
        p, ramp, ImagerPixelSpacing=[0.15, 0.15], EstimatedRadiographicMagnificationFactor=1.1,
        PatientID="12345", PatientName="Doe^Jane", PatientSex="F", PatientBirthDate="20000101",
        StudyDate="20240615", BodyPartExamined="HAND", ImageLaterality="L", ViewPosition="PA",
        WindowCenter=2048, WindowWidth=4096, BurnedInAnnotation="NO",
    )
    rg = calcimeasure.read_image(p)
    np.testing.assert_array_equal(rg.pixels, ramp.astype(np.float32))
    assert rg.spacing_mm == pytest.approx((0.15 / 1.1, 0.15 / 1.1))
    assert rg.spacing_source.value == "imager_spacing_magnification_corrected"
    m = rg.meta
    assert m.modality == "DX" and m.body_part == "HAND" and m.laterality == "L" and m.view_position == "PA"
    assert m.patient_sex == "F" and m.patient_age_years == pytest.approx(24.45, abs=0.01)
    assert m.study_date.isoformat() == "2024-06-15"
    assert m.window_center == (2048.0,) and m.burned_in_annotation is False
    assert m.patient_id is None and m.patient_key.startswith("P")
    d = m.to_dict()
    assert "Doe" not in repr(d) and "12345" not in repr(d)
    assert d["study_date"] == "2024-06-15"


def test_patient_age_attribute_wins(tmp_path, ramp):
    p = tmp_path / "a.dcm"
    write_dicom(p, ramp, PatientAge="009Y", PatientBirthDate="19000101", StudyDate="20240101")
    assert calcimeasure.read_image(p).meta.patient_age_years == 9


def test_dicom_monochrome1_is_inverted(tmp_path, ramp):
    p = tmp_path / "m1.dcm"
    write_dicom(p, ramp, PhotometricInterpretation="MONOCHROME1", PresentationLUTShape="INVERSE")
    rg = calcimeasure.read_image(p)
    np.testing.assert_array_equal(rg.pixels, 4095 - ramp.astype(np.float32))
    assert rg.meta.inverted


def test_monochrome2_with_inverse_presentation_lut_is_inverted(tmp_path, ramp):
    p = tmp_path / "m2i.dcm"
    write_dicom(p, ramp, PresentationLUTShape="INVERSE")
    np.testing.assert_array_equal(calcimeasure.read_image(p).pixels, 4095 - ramp.astype(np.float32))


def test_polarity_override(tmp_path, ramp):
    p = tmp_path / "m2.dcm"
    write_dicom(p, ramp)
    rg = calcimeasure.read_image(p, polarity="dense_low")
    np.testing.assert_array_equal(rg.pixels, 4095 - ramp.astype(np.float32))
    with pytest.raises(errors.ParameterError, match="polarity"):
        calcimeasure.read_image(p, polarity="up")


def test_rescale_is_applied(tmp_path, ramp):
    p = tmp_path / "r.dcm"
    write_dicom(p, ramp, RescaleSlope=2, RescaleIntercept=-100)
    np.testing.assert_allclose(calcimeasure.read_image(p).pixels, ramp * 2.0 - 100)


def test_user_spacing_overrides_file(tmp_path, ramp):
    p = tmp_path / "s.dcm"
    write_dicom(p, ramp, PixelSpacing=[0.2, 0.2])
    rg = calcimeasure.read_image(p, spacing_mm=(0.1, 0.12))
    assert rg.spacing_mm == (0.1, 0.12) and rg.spacing_source.value == "user"


def test_rle_compressed_dicom(tmp_path, ramp):
    p = tmp_path / "rle.dcm"
    ds = write_dicom(p, ramp)
    ds.compress(RLELossless, ramp)
    ds.save_as(p)
    rg = calcimeasure.read_image(p)
    np.testing.assert_array_equal(rg.pixels, ramp)
    assert rg.meta.transfer_syntax_uid == RLELossless


def test_truncated_native_pixel_data(tmp_path, ramp):
    p = tmp_path / "t.dcm"
    write_dicom(p, ramp)
    data = p.read_bytes()
    p.write_bytes(data[:-1000])
    with pytest.raises(errors.CorruptImageError, match="truncated"):
        calcimeasure.read_image(p)


def test_blank_image(tmp_path):
    p = tmp_path / "blank.dcm"
    write_dicom(p, np.full((8, 8), 7, np.uint16))
    with pytest.raises(errors.CorruptImageError, match="blank"):
        calcimeasure.read_image(p)


def test_absurd_size_refused_before_decoding(tmp_path):
    p = tmp_path / "huge.dcm"
    ds = write_dicom(p, np.zeros((4, 4), np.uint16))
    ds.Rows = ds.Columns = 30000
    ds.save_as(p)
    with pytest.raises(errors.UnsupportedImageError, match="megapixel"):
        calcimeasure.read_image(p)


def test_colour_dicom_is_unsupported(tmp_path):
    p = tmp_path / "rgb.dcm"
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
    ds = write_dicom(p, np.zeros((16, 16), np.uint16))
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelData = rgb.tobytes()
    ds.save_as(p)
    with pytest.raises(errors.UnsupportedImageError, match="colour"):
        calcimeasure.read_image(p)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(errors.ImageNotFoundError, match="no such file"):
        calcimeasure.read_image(tmp_path / "nope.dcm")
    with pytest.raises(FileNotFoundError):  # also a FileNotFoundError
        calcimeasure.read_image(tmp_path / "nope.dcm")
    with pytest.raises(errors.ImageNotFoundError, match="folder"):
        calcimeasure.read_image(tmp_path)


@pytest.mark.parametrize(
    "content,match",
    [
        (b"", "empty"),
        (b"hello, this is a text file\n" * 10, "text file"),
        (b"%PDF-1.4\n" + b"\x00" * 200, "PDF"),
        (b"GIF89a" + b"\x00" * 200, "GIF"),
        (bytes(range(256)) * 4, "neither a DICOM"),
    ],
)
def test_not_an_image(tmp_path, content, match):
    p = tmp_path / "x.dcm"  # the extension lies: content decides
    p.write_bytes(content)
    with pytest.raises(errors.NotAnImageError, match=match):
        calcimeasure.read_image(p)


def test_dicom_preamble_with_garbage_is_corrupt(tmp_path):
    p = tmp_path / "garbage.dcm"
    p.write_bytes(b"\x00" * 128 + b"DICM" + bytes(range(256)) * 3)
    with pytest.raises(errors.CalcimeasureError):
        calcimeasure.read_image(p)


# --- rasters -----------------------------------------------------------------------


def test_png_16bit(tmp_path):
    arr = (np.arange(40 * 30).reshape(40, 30) * 50).astype(np.uint16)
    p = tmp_path / "film.png"
    Image.fromarray(arr).save(p)
    rg = calcimeasure.read_image(p)
    np.testing.assert_array_equal(rg.pixels, arr.astype(np.float32))
    assert rg.spacing_mm is None and rg.spacing_source.value == "unknown"
    assert rg.meta.file_format == "png" and rg.meta.value_range == (0.0, 65535.0)


def test_png_8bit_negative_and_user_spacing(tmp_path):
    arr = np.tile(np.arange(0, 250, 10, dtype=np.uint8), (10, 1))
    p = tmp_path / "neg.png"
    Image.fromarray(arr).save(p)
    rg = calcimeasure.read_image(p, polarity="dense_low", spacing_mm=0.1)
    np.testing.assert_array_equal(rg.pixels, 255 - arr.astype(np.float32))
    assert rg.spacing_mm == (0.1, 0.1) and rg.spacing_source.value == "user"


def test_rgb_jpeg_becomes_grey(tmp_path):
    grey = np.tile(np.linspace(0, 255, 64).astype(np.uint8), (32, 1))
    p = tmp_path / "scan.jpg"
    Image.fromarray(np.dstack([grey] * 3)).save(p, quality=95)
    rg = calcimeasure.read_image(p)
    assert rg.pixels.shape == (32, 64)
    assert np.abs(rg.pixels - grey).mean() < 3
    assert rg.meta.file_format == "jpeg"


def test_tiff_16bit_with_resolution(tmp_path):
    arr = (np.arange(50 * 40).reshape(50, 40) * 20).astype(np.uint16)
    p = tmp_path / "scan.tif"
    tifffile.imwrite(p, arr, resolution=(254.0, 127.0), resolutionunit="INCH")
    rg = calcimeasure.read_image(p)
    np.testing.assert_array_equal(rg.pixels, arr)
    # XResolution 254 dpi (columns) -> 0.1 mm; YResolution 127 dpi (rows) -> 0.2 mm.
    assert rg.spacing_mm == pytest.approx((0.2, 0.1))
    assert rg.spacing_source.value == "tiff_resolution"


def test_tiff_default_72_dpi_is_ignored_with_warning(tmp_path):
    p = tmp_path / "screen.tif"
    tifffile.imwrite(p, np.arange(100, dtype=np.uint16).reshape(10, 10), resolution=(72.0, 72.0), resolutionunit="INCH")
    rg = calcimeasure.read_image(p)
    assert rg.spacing_mm is None
    assert any("software default" in w for w in rg.meta.warnings)


def test_multipage_tiff_needs_a_frame(tmp_path):
    p = tmp_path / "pages.tif"
    stack = np.stack([np.arange(100, dtype=np.uint16).reshape(10, 10) * (i + 1) for i in range(3)])
    with tifffile.TiffWriter(p) as tif:
        for page in stack:
            tif.write(page, photometric="minisblack")
    with pytest.raises(errors.UnsupportedImageError, match="3 images"):
        calcimeasure.read_image(p)
    np.testing.assert_array_equal(calcimeasure.read_image(p, frame=2).pixels, stack[2])


def test_truncated_png_is_corrupt(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (200, 200), dtype=np.uint8)).save(buf, "PNG")
    p = tmp_path / "cut.png"
    p.write_bytes(buf.getvalue()[:500])
    with pytest.raises(errors.CorruptImageError):
        calcimeasure.read_image(p)


def test_png_absurd_size_refused_from_header(tmp_path):
    # A PNG header declaring 100000 x 100000 pixels, with no image data behind it.
    ihdr = struct.pack(">2I5B", 100000, 100000, 8, 0, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + b"\x00\x00\x00\x00"
    p = tmp_path / "bomb.png"
    p.write_bytes(data)
    with pytest.raises(errors.UnsupportedImageError, match="megapixel"):
        calcimeasure.read_image(p)


def test_input_file_is_not_modified(tmp_path, ramp):
    p = tmp_path / "keep.dcm"
    write_dicom(p, ramp, PhotometricInterpretation="MONOCHROME1")
    before = p.read_bytes()
    stat = p.stat()
    calcimeasure.read_image(p)
    assert p.read_bytes() == before and p.stat().st_mtime_ns == stat.st_mtime_ns


def test_errors_pickle_roundtrip():
    import pickle

    err = errors.CorruptImageError("/x/y.dcm", "the pixel data is truncated")
    back = pickle.loads(pickle.dumps(err))
    assert isinstance(back, errors.CorruptImageError) and back.path == "/x/y.dcm" and str(back) == str(err)


def test_core_does_not_import_qt_or_napari():
    import subprocess
    import sys

    code = (
        "import sys, calcimeasure, calcimeasure.io.dicom_reader, calcimeasure.io.raster_reader;"
        "bad=[m for m in sys.modules if m.split('.')[0] in ('PyQt5','PyQt6','PySide2','PySide6','qtpy','napari','vispy')];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_missing_decoder_is_reported(tmp_path, ramp, monkeypatch):
    from calcimeasure.io import dicom_reader

    p = tmp_path / "rle.dcm"
    ds = write_dicom(p, ramp)
    ds.compress(RLELossless, ramp)
    ds.save_as(p)

    class NoDecoder:
        is_available = False
        missing_dependencies = ["pylibjpeg-rle - requires pylibjpeg>=2"]

    monkeypatch.setattr(dicom_reader, "get_decoder", lambda ts: NoDecoder())
    with pytest.raises(errors.MissingDecoderError, match="RLE Lossless.*pylibjpeg-rle"):
        calcimeasure.read_image(p)
