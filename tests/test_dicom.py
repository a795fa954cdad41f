"""``read_image``/``check_image``: pydicom's own test files and hand-made DICOM/PNG files."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file, get_testdata_files
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from benchmark.data.dicom import ImageError, check_image, read_image
from benchmark.errors import UserError


def pydicom_file(name: str) -> str:
    """A file shipped with pydicom; files that would need a download are skipped."""
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name} is not shipped with pydicom here (needs pydicom-data / network)")
    return path


def assert_valid(img: np.ndarray) -> None:
    assert img.dtype == np.float32 and img.ndim == 2 and img.size > 0
    assert np.isfinite(img).all() and img.min() >= 0.0 and img.max() <= 1.0


# Files that must decode: vendors, encodings, bit depths, colour models, multi-frame.
DECODABLE = [
    "CT_small.dcm", "MR_small.dcm", "rtdose.dcm", "rtdose_1frame.dcm", "693_J2KI.dcm",
    "J2K_pixelrep_mismatch.dcm", "JPEG2000.dcm", "JPGExtended.dcm", "JPEGLSNearLossless_08.dcm",
    "JPEGLSNearLossless_16.dcm", "MR_small_RLE.dcm", "MR_small_jp2klossless.dcm",
    "MR_small_jpeg_ls_lossless.dcm", "MR_small_bigendian.dcm", "MR_small_implicit.dcm",
    "MR_small_padded.dcm", "image_dfl.dcm", "liver_1frame.dcm", "examples_palette.dcm",
    "examples_ybr_color.dcm", "examples_jpeg2k.dcm", "SC_rgb_jpeg_dcmtk.dcm", "SC_rgb_rle_16bit.dcm",
    "SC_rgb_rle_32bit_2frame.dcm", "SC_ybr_full_422_uncompressed.dcm", "GDCMJ2K_TextGBR.dcm",
    "SC_rgb_small_odd.dcm", "6154",
]


@pytest.mark.parametrize("name", DECODABLE)
def test_pydicom_test_files_decode_to_one_finite_grey_image_in_unit_range(name):
    path = pydicom_file(name)
    check_image(path)
    assert_valid(read_image(path))


def test_every_pydicom_test_file_either_reads_or_raises_a_user_error():
    """No test file may crash the reader with anything but a clear ImageError."""
    n_ok = 0
    for path in get_testdata_files():
        try:
            assert_valid(read_image(path))
            n_ok += 1
        except ImageError as exc:
            assert "\n" not in str(exc)
    assert n_ok >= 50


TWINS = [  # (reference, same pixels in another encoding)
    ("MR_small.dcm", "MR_small_jpeg_ls_lossless.dcm"),
    ("MR_small.dcm", "MR_small_jp2klossless.dcm"),
    ("MR_small.dcm", "MR_small_RLE.dcm"),
    ("MR_small.dcm", "MR_small_bigendian.dcm"),
    ("MR_small.dcm", "MR_small_implicit.dcm"),
    ("rtdose.dcm", "rtdose_rle.dcm"),
    ("rtdose.dcm", "rtdose_expb.dcm"),
    ("liver_1frame.dcm", "liver_expb_1frame.dcm"),
    ("SC_rgb_rle.dcm", "SC_rgb_gdcm_KY.dcm"),
    ("SC_rgb_small_odd.dcm", "SC_rgb_small_odd_big_endian.dcm"),
]


@pytest.mark.parametrize("reference,twin", TWINS)
def test_lossless_compressed_files_decode_exactly_like_their_uncompressed_twin(reference, twin):
    np.testing.assert_array_equal(read_image(pydicom_file(reference)), read_image(pydicom_file(twin)))


@pytest.mark.parametrize("reference,twin", [("SC_rgb_dcmtk_+eb+cr.dcm", "SC_rgb_jpeg_dcmtk.dcm"),
                                            ("SC_rgb_dcmtk_+eb+cr.dcm", "SC_ybr_full_422_uncompressed.dcm")])
def test_lossy_or_subsampled_colour_twins_stay_close(reference, twin):
    assert np.abs(read_image(pydicom_file(reference)) - read_image(pydicom_file(twin))).max() < 0.05


@pytest.mark.parametrize("multi,single", [("rtdose.dcm", "rtdose_1frame.dcm"),
                                          ("SC_rgb_rle_2frame.dcm", "SC_rgb_rle.dcm")])
def test_multi_frame_files_give_their_first_frame(multi, single):
    assert pydicom.dcmread(pydicom_file(multi), stop_before_pixels=True).NumberOfFrames > 1
    np.testing.assert_array_equal(read_image(pydicom_file(multi)), read_image(pydicom_file(single)))


def test_windowed_pixels_match_pydicoms_modality_and_voi_pipeline():
    """CT_small/MR_small-style pipeline: our [0, 1] output is pydicom's VOI output rescaled."""
    ds = pydicom.dcmread(pydicom_file("MR_small.dcm"))
    ref = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds)
    lo, hi = -(2 ** (ds.BitsStored - 1)), 2 ** (ds.BitsStored - 1) - 1  # signed output range of apply_windowing
    np.testing.assert_allclose(read_image(pydicom_file("MR_small.dcm")), (ref - lo) / (hi - lo), atol=1e-6)


def test_monochrome1_is_inverted_so_that_higher_is_brighter(tmp_path, dicom_writer):
    ramp = np.tile(np.arange(0, 4096, 64, dtype=np.uint16), (8, 1))  # raw values increase to the right
    m2 = read_image(dicom_writer(tmp_path / "m2.dcm", ramp, bits_stored=12))
    m1 = read_image(dicom_writer(tmp_path / "m1.dcm", ramp, bits_stored=12, photometric="MONOCHROME1"))
    assert m2[0, -1] > m2[0, 0] and m1[0, -1] < m1[0, 0]
    np.testing.assert_allclose(m1, 1.0 - m2, atol=1e-6)


def test_monochrome1_file_from_pydicom_is_the_inverse_of_its_monochrome2_copy(tmp_path):
    ds = pydicom.dcmread(pydicom_file("6154"))
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.save_as(tmp_path / "m2.dcm")
    np.testing.assert_allclose(read_image(pydicom_file("6154")), 1.0 - read_image(tmp_path / "m2.dcm"), atol=1e-6)


def test_window_center_width_maps_the_window_to_zero_and_one(tmp_path, dicom_writer):
    px = np.array([[0, 1000, 1500, 2000, 4095]], dtype=np.uint16)
    img = read_image(dicom_writer(tmp_path / "w.dcm", px, bits_stored=12, window=(1500, 1001)))
    np.testing.assert_allclose(img[0], [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-3)


def test_rescale_slope_and_intercept_apply_before_the_window_for_signed_data(tmp_path, dicom_writer):
    px = np.array([[-1024, 0, 40, 80, 3000]], dtype=np.int16)
    # HU = 2 * stored - 1000; window 40 +- 40 HU covers stored values 500..540
    img = read_image(dicom_writer(tmp_path / "ct.dcm", (px + 1000) // 2, bits_stored=16,
                                  window=(40, 81), rescale=(2.0, -1000.0)))
    stored = (px + 1000) // 2
    hu = 2 * stored - 1000
    expected = np.clip((hu - 39.5) / 80 + 0.5, 0, 1)
    np.testing.assert_allclose(img[0], expected[0], atol=1e-3)


def test_sigmoid_voi_function_is_honoured(tmp_path, dicom_writer):
    px = np.array([[100, 200, 300]], dtype=np.uint16)
    img = read_image(dicom_writer(tmp_path / "s.dcm", px, bits_stored=12, window=(200, 100), VOILUTFunction="SIGMOID"))
    np.testing.assert_allclose(img[0], 1 / (1 + np.exp(-4 * (px[0].astype(float) - 200) / 100)), atol=1e-5)


def test_data_without_window_uses_a_min_max_or_percentile_window(tmp_path, dicom_writer):
    px = np.array([[100, 200, 300]], dtype=np.uint16)
    img = read_image(dicom_writer(tmp_path / "n.dcm", px, bits_stored=12))
    np.testing.assert_allclose(img[0], [0.0, 0.5, 1.0], atol=1e-6)


def test_eight_bit_unwindowed_data_is_scaled_by_its_bit_depth(tmp_path, dicom_writer):
    px = np.array([[0, 51, 255]], dtype=np.uint8)
    np.testing.assert_allclose(read_image(dicom_writer(tmp_path / "8.dcm", px))[0], [0.0, 0.2, 1.0], atol=1e-6)


def test_modality_lut_sequence_is_applied(tmp_path, dicom_writer):
    from pydicom.dataset import Dataset

    item = Dataset()
    item.LUTDescriptor = [4, 0, 16]
    item.add_new("LUTData", "US", [0, 3000, 1000, 2000])  # non-monotone: stored 1 is brightest
    item.ModalityLUTType = "US"
    px = np.array([[0, 1, 2, 3]], dtype=np.uint16)
    img = read_image(dicom_writer(tmp_path / "lut.dcm", px, bits_stored=2, ModalityLUTSequence=[item]))
    assert int(np.argmax(img[0])) == 1 and int(np.argmin(img[0])) == 0


def test_rgb_dicom_becomes_grey_by_luma(tmp_path, dicom_writer):
    rgb = np.zeros((2, 2, 3), dtype=np.uint8)
    rgb[0, 0] = [255, 0, 0]
    rgb[0, 1] = [0, 255, 0]
    rgb[1, 1] = [255, 255, 255]
    img = read_image(dicom_writer(tmp_path / "rgb.dcm", rgb, photometric="RGB"))
    np.testing.assert_allclose(img, [[0.299, 0.587], [0.0, 1.0]], atol=1e-3)


def test_png_8_and_16_bit_rgb_and_jpeg_are_read(tmp_path):
    ramp8 = np.tile(np.arange(0, 256, 17, dtype=np.uint8), (4, 1))
    Image.fromarray(ramp8).save(tmp_path / "a.png")
    np.testing.assert_allclose(read_image(tmp_path / "a.png"), ramp8 / 255.0, atol=1e-6)

    ramp16 = np.tile(np.arange(0, 4096, 256, dtype=np.uint16), (4, 1))  # 12-bit data in a 16-bit PNG
    Image.fromarray(ramp16).save(tmp_path / "b.png")
    img16 = read_image(tmp_path / "b.png")
    assert img16.min() == 0.0 and img16.max() == 1.0 and (np.diff(img16[0]) > 0).all()

    Image.fromarray(np.stack([ramp8] * 3, axis=-1)).save(tmp_path / "c.png")
    np.testing.assert_allclose(read_image(tmp_path / "c.png"), ramp8 / 255.0, atol=1 / 255)

    Image.fromarray(ramp16).save(tmp_path / "d.tif")
    np.testing.assert_allclose(read_image(tmp_path / "d.tif"), img16, atol=1e-6)

    Image.fromarray(np.full((16, 16), 128, dtype=np.uint8)).save(tmp_path / "e.jpg", quality=95)
    assert abs(float(read_image(tmp_path / "e.jpg").mean()) - 128 / 255) < 0.02


def test_truncated_dicom_is_a_user_error_in_header_check_and_decode(tmp_path):
    with pytest.raises(ImageError, match="truncated"):
        check_image(pydicom_file("MR_truncated.dcm"))
    with pytest.raises(ImageError, match="truncated"):
        read_image(pydicom_file("MR_truncated.dcm"))
    raw = open(pydicom_file("CT_small.dcm"), "rb").read()
    (tmp_path / "cut.dcm").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ImageError, match="truncated"):
        check_image(tmp_path / "cut.dcm")
    with pytest.raises(ImageError):
        read_image(tmp_path / "cut.dcm")


def test_non_image_files_are_user_errors(tmp_path):
    (tmp_path / "notes.png").write_text("not an image")
    for path in (tmp_path / "notes.png", pydicom_file("rtplan.dcm")):
        with pytest.raises(UserError):
            check_image(path)
        with pytest.raises(UserError):
            read_image(path)


def test_missing_decoder_names_the_package_to_install(monkeypatch):
    from pydicom.pixels.decoders.base import get_decoder
    from pydicom.uid import JPEGLSLossless

    decoder = get_decoder(JPEGLSLossless)
    monkeypatch.setattr(decoder, "_available", {})
    monkeypatch.setattr(decoder, "_unavailable", {"pylibjpeg": ("pylibjpeg>=2.0", "pylibjpeg-libjpeg>=2.1")})
    path = pydicom_file("MR_small_jpeg_ls_lossless.dcm")
    for fn in (check_image, read_image):
        with pytest.raises(ImageError, match=r"pip install pylibjpeg pylibjpeg-libjpeg") as info:
            fn(path)
        assert "\n" not in str(info.value)


def test_error_messages_never_name_the_file(tmp_path):
    bad = tmp_path / "Doe_John_19450101.dcm"
    bad.write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00")
    with pytest.raises(ImageError) as info:
        read_image(bad)
    assert "Doe" not in str(info.value) and "19450101" not in str(info.value)


def test_voi_lut_sequence_is_applied_and_scaled_by_the_lut_range(tmp_path, dicom_writer):
    from pydicom.dataset import Dataset

    item = Dataset()
    item.LUTDescriptor = [4, 0, 8]
    item.add_new("LUTData", "US", [10, 60, 110, 210])
    px = np.array([[0, 1, 2, 3]], dtype=np.uint16)
    img = read_image(dicom_writer(tmp_path / "voi.dcm", px, bits_stored=2, VOILUTSequence=[item]))
    np.testing.assert_allclose(img[0], [0.0, 0.25, 0.5, 1.0], atol=1e-6)
