"""What calcimeasure must do with every file of the shared real-DICOM corpus.

One entry per file of ``../shared/real_dicom/MANIFEST.tsv``. ``outcome`` is
``"ok"`` or the name of the typed error. For readable files: the expected
spacing (row, col) in mm or None, its source, whether the stored values are
inverted, and two boxes (row0, row1, col0, col1 as fractions of the image) on a
structure that must be denser than the other (checked visually once, see
tests/test_corpus.py): ``dense`` (bone, metal, contrast, breast tissue) and
``lucent`` (lung, air, fat). ``also`` lists extra readings with other options.
"""

CHEST = {"dense": (0.30, 0.60, 0.47, 0.53), "lucent": (0.30, 0.60, 0.20, 0.33)}

EXPECTED: dict[str, dict] = {
    # --- broken or non-image files -------------------------------------------------
    "broken_cr_pelvis_header_only_no_pixeldata.dcm": {"outcome": "CorruptImageError", "match": "no pixel data"},
    "broken_dx_vet_elbow_header_only_no_pixeldata_voilut.dcm": {"outcome": "CorruptImageError", "match": "no pixel data"},
    "broken_meta_missing_transfer_syntax.dcm": {"outcome": "CorruptImageError", "match": "no valid image size"},
    "broken_mr_truncated_pixeldata.dcm": {
        "outcome": "UnsupportedImageError", "match": "not a projection radiograph",
        "also": [({"require_projection": False}, "CorruptImageError", "truncated")],
    },
    "broken_ot_rows_cols_46341_tiny_pixeldata.dcm": {"outcome": "UnsupportedImageError", "match": "megapixel limit"},
    "broken_ot_rows_cols_65535_tiny_pixeldata.dcm": {"outcome": "UnsupportedImageError", "match": "megapixel limit"},
    "broken_rtplan_truncated.dcm": {"outcome": "NotAnImageError", "match": "RT Plan"},
    "nonimage_rtstruct_no_meta.dcm": {"outcome": "NotAnImageError", "match": "RT Structure Set"},
    "nonimage_sr_comprehensive.dcm": {"outcome": "NotAnImageError", "match": "SR"},
    "nonradiograph_mr_small_big_endian.dcm": {
        "outcome": "UnsupportedImageError", "match": "MR image",
        "also": [({"require_projection": False}, "ok", None)],
    },
    "odd_mg_tomo_hologic_duplicate_meta_group.dcm": {
        "outcome": "UnsupportedImageError", "match": "CT image",
        # A tomosynthesis slice (not a projection). With the modality check off, the
        # transfer syntax contradicted by a duplicated group 0002 is repaired from
        # the codestream (JPEG Lossless), which decodes to the real breast image.
        "also": [({"require_projection": False}, "ok", None)],
    },
    "xa_coronary_96frames_jpeg_baseline8.dcm": {
        "outcome": "UnsupportedImageError", "match": "multi-frame",
        "also": [({"frame": 5}, "ok", None), ({"frame": 96}, "ParameterError", "frame")],
    },
    # --- readable radiographs -------------------------------------------------------
    "cr_chest_mono1_10bit_acrnema_no_meta_implicit.dcm": {
        "outcome": "ok", "spacing": None, "source": "unknown", "inverted": True, **CHEST,
        "warning": "no Transfer Syntax UID",
    },
    "cr_chest_mono1_10bit_part10_explicit_le.dcm": {
        "outcome": "ok", "spacing": None, "source": "unknown", "inverted": True, **CHEST,
    },
    "cr_chest_mono1_konica_jpeg_baseline8.dcm": {
        "outcome": "ok", "spacing": (0.175, 0.175), "source": "imager_spacing_detector", "inverted": True,
        "dense": (0.30, 0.60, 0.50, 0.56), "lucent": (0.30, 0.60, 0.22, 0.35),
    },
    "cr_cspine_mono1_16x16_downsized_rescale.dcm": {
        "outcome": "ok", "spacing": (0.1, 0.1), "source": "imager_spacing_detector", "inverted": True,
    },
    "cr_dental_panoramic_mono1_jpeg_lossless_modality_lut_seq.dcm": {
        "outcome": "ok", "spacing": (0.15, 0.15), "source": "imager_spacing_detector", "inverted": True,
        "dense": (0.50, 0.62, 0.42, 0.58), "lucent": (0.02, 0.08, 0.02, 0.08),
    },
    "dx_chest_nih_cxr14_sc_implicit_le_8bit.dcm": {
        "outcome": "ok", "spacing": None, "source": "unknown", "inverted": False, **CHEST,
    },
    "dx_chest_pa_j2k_lossless_16bit_imagerspacing.dcm": {
        # Mislabelled file: its content is dense-dark under MONOCHROME2 / IDENTITY.
        # The reader follows the tags; polarity="dense_low" corrects it.
        "outcome": "ok", "spacing": (0.4, 0.4), "source": "imager_spacing_detector", "inverted": False,
        "read_kwargs": {"polarity": "dense_low"}, **CHEST,
    },
    "dx_vet_thorax_lateral_mono1_8bit_small.dcm": {
        "outcome": "ok", "spacing": (1.2, 1.2012), "source": "imager_spacing_detector", "inverted": True,
    },
    "mg1_film_mammo_lmlo_j2k_lossy.dcm": {
        "outcome": "ok", "spacing": None, "source": "unknown", "inverted": False,
        "dense": (0.30, 0.50, 0.20, 0.40), "lucent": (0.50, 0.70, 0.82, 0.95),
    },
    "mg1_film_mammo_lmlo_jpeg_ext12_badSOS.dcm": {
        "outcome": "ok", "spacing": None, "source": "unknown", "inverted": False,
        "dense": (0.30, 0.50, 0.20, 0.40), "lucent": (0.50, 0.70, 0.82, 0.95),
        "warning": "Start-Of-Scan",
    },
    "mg_ffdm_rmlo_ge_jpeg_lossless_voilut_sigmoid.dcm": {
        "outcome": "ok", "spacing": (0.09409090909091, 0.09409090909091),
        "source": "imager_spacing_magnification_corrected", "inverted": False,
        "dense": (0.40, 0.60, 0.72, 0.85), "lucent": (0.40, 0.60, 0.05, 0.20),
    },
    "mg_stereo_biopsy_calc_cluster_jpeg_lossless_overlay_oob.dcm": {
        "outcome": "ok", "spacing": (0.085 / 1.0433386837881, 0.085 / 1.0433386837881),
        "source": "imager_spacing_magnification_corrected", "inverted": False,
    },
    "nonradiograph_sc_test_pattern_deflated.dcm": {
        "outcome": "ok", "spacing": None, "source": "unknown", "inverted": False,
    },
    "rf_shoulder_fluoro_8bit_modality_lut_seq.dcm": {
        "outcome": "ok", "spacing": None, "source": "unknown", "inverted": True,
        # Shoulder soft tissue and bone vs the air above the shoulder.
        "dense": (0.45, 0.60, 0.35, 0.55), "lucent": (0.06, 0.14, 0.25, 0.45),
    },
    "rg1_cr_chest_pa_mono1_15bit_j2k_lossy.dcm": {
        "outcome": "ok", "spacing": None, "source": "unknown", "inverted": True, **CHEST,
    },
    "rg1_cr_chest_pa_mono1_15bit_jpegls_nearlossless.dcm": {
        "outcome": "ok", "spacing": None, "source": "unknown", "inverted": True, **CHEST,
    },
    "xa1_cerebral_angio_sc_jpeg_lossless_sv1.dcm": {
        "outcome": "ok", "spacing": None, "source": "unknown", "inverted": True,
        "dense": (0.82, 0.92, 0.40, 0.60), "lucent": (0.20, 0.30, 0.40, 0.60),
    },
}

_HIP = {"dense": (0.30, 0.42, 0.42, 0.55), "lucent": (0.82, 0.95, 0.25, 0.40)}
for _suffix in ("uncompressed_explicit_le", "rle", "jpeg_lossless_sv1", "jpegls_lossless", "j2k_lossless",
                "j2k_lossy", "jpegls_nearlossless", "jpeg_ext12_badSOS", "jpeg_ext12_fixedSOS"):
    EXPECTED[f"rg2_cr_hip_{_suffix}.dcm"] = {
        "outcome": "ok", "spacing": (0.2, 0.2), "source": "pixel_spacing_unknown_provenance",
        "inverted": False, **_HIP, **({"warning": "Start-Of-Scan"} if "badSOS" in _suffix else {}),
    }
_TIBIA = {"dense": (0.30, 0.60, 0.42, 0.52), "lucent": (0.30, 0.60, 0.64, 0.72)}
for _suffix in ("j2k_lossless", "j2k_lossy", "jpeg_ext12_badSOS", "jpegls_nearlossless", "rle"):
    EXPECTED[f"rg3_cr_tibia_mono1_{_suffix}.dcm"] = {
        "outcome": "ok", "spacing": None, "source": "unknown", "inverted": True, **_TIBIA,
        **({"warning": "Start-Of-Scan"} if "badSOS" in _suffix else {}),
    }

#: Groups of files holding the same image losslessly: decoded pixels must be identical.
LOSSLESS_TWINS = [
    ["rg2_cr_hip_uncompressed_explicit_le.dcm", "rg2_cr_hip_rle.dcm", "rg2_cr_hip_jpeg_lossless_sv1.dcm",
     "rg2_cr_hip_jpegls_lossless.dcm", "rg2_cr_hip_j2k_lossless.dcm"],
    ["rg3_cr_tibia_mono1_j2k_lossless.dcm", "rg3_cr_tibia_mono1_rle.dcm"],
    ["cr_chest_mono1_10bit_acrnema_no_meta_implicit.dcm", "cr_chest_mono1_10bit_part10_explicit_le.dcm"],
    # The invalid-SOS stream, repaired in memory, decodes to the stream fixed by pylibjpeg-data.
    ["rg2_cr_hip_jpeg_ext12_badSOS.dcm", "rg2_cr_hip_jpeg_ext12_fixedSOS.dcm"],
]

#: Lossy versions of a lossless reference: (reference, lossy, max mean absolute difference).
LOSSY_TWINS = [
    ("rg2_cr_hip_uncompressed_explicit_le.dcm", "rg2_cr_hip_j2k_lossy.dcm", 3.0),
    ("rg2_cr_hip_uncompressed_explicit_le.dcm", "rg2_cr_hip_jpegls_nearlossless.dcm", 3.0),
    ("rg2_cr_hip_uncompressed_explicit_le.dcm", "rg2_cr_hip_jpeg_ext12_badSOS.dcm", 5.0),
    ("rg3_cr_tibia_mono1_j2k_lossless.dcm", "rg3_cr_tibia_mono1_jpeg_ext12_badSOS.dcm", 5.0),
    ("rg3_cr_tibia_mono1_j2k_lossless.dcm", "rg3_cr_tibia_mono1_j2k_lossy.dcm", 5.0),
    ("mg1_film_mammo_lmlo_j2k_lossy.dcm", "mg1_film_mammo_lmlo_jpeg_ext12_badSOS.dcm", 20.0),
]
