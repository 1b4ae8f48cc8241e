"""runtime/align.py: the published FFHQ and CelebA-HQ squares from 5 landmarks, worked by hand,
the crop's geometry, the registry and the manifest's choice."""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from runtime import align

# a level face: eyes at (100, 120) and (160, 120), nose (130, 150), mouth corners (110, 180)
# and (150, 180)
LEVEL = np.array([[100, 120], [160, 120], [130, 150], [110, 180], [150, 180]], float)


def test_ffhq_quad_of_a_level_face_worked_by_hand():
    # eye_avg (130, 120), mouth_avg (130, 180): e2e = (60, 0), e2m = (0, 60);
    # rot90(e2m) = (-60, 0), x = e2e - rot90(e2m) = (120, 0) -> unit (1, 0),
    # scale max(2.0 * 60, 1.8 * 60) = 120 -> x = (120, 0); y = rot90(x) = (0, 120);
    # c = eye_avg + 0.1 e2m = (130, 126)
    want = np.array([[10, 6], [10, 246], [250, 246], [250, 6]], float)
    np.testing.assert_allclose(align.ffhq_quad(LEVEL), want, atol=1e-9)


def test_celebahq_quad_is_ffhq_plus_half_a_pixel():
    # the CelebA-HQ script adds 0.5 to the eye and mouth midpoints (differences unchanged)
    want = np.array([[10.5, 6.5], [10.5, 246.5], [250.5, 246.5], [250.5, 6.5]])
    np.testing.assert_allclose(align.celebahq_quad(LEVEL), want, atol=1e-9)


def test_mouth_far_below_the_eyes_sets_the_scale_by_1_8():
    # eyes 20 px apart, mouth 100 px below: 1.8 * 100 = 180 > 2.0 * 20 = 40;
    # e2e = (20, 0), e2m = (0, 100): x = (20, 0) - (-100, 0) = (120, 0) -> (180, 0)
    lm = np.array([[90, 100], [110, 100], [100, 150], [95, 200], [105, 200]], float)
    q = align.ffhq_quad(lm)
    c = np.array([100, 100 + 0.1 * 100])
    np.testing.assert_allclose(q, [c + (-180, -180), c + (-180, 180), c + (180, 180),
                                   c + (180, -180)], atol=1e-9)


def test_a_tilted_face_gives_a_square_turned_with_the_eyes():
    # the level face turned by 30 degrees about (130, 150): the square turns with it
    t = math.radians(30)
    rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    centre = np.array([130.0, 150.0])
    turned = (LEVEL - centre) @ rot.T + centre
    want = (align.ffhq_quad(LEVEL) - centre) @ rot.T + centre
    np.testing.assert_allclose(align.ffhq_quad(turned), want, atol=1e-9)


def test_the_crop_puts_the_quad_corners_on_its_corners():
    # a picture whose pixel value encodes its coordinates: the crop's corner pixels are the
    # source pixels at the quad's corners (PIL QUAD convention: quad + 0.5 at the corner
    # edges, so corner pixel centres lie half a crop pixel inside)
    h = w = 300
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx % 256, yy % 256, (xx // 256) * 100 + (yy // 256) * 10], -1).astype(np.uint8)
    face = SimpleNamespace(box=(90, 100, 170, 200), landmarks=LEVEL)
    size = 240                                    # the quad is 240 px wide: 1 px per pixel
    crop = align.ffhq_crop(img, face, size)
    # crop pixel (u, v) centre -> continuous (u + .5, v + .5) -> source continuous
    # quad0 + 0.5 + (u + .5, v + .5) -> source pixel centre quad0 + (u + .5, v + .5)
    for u, v in ((0, 0), (239, 0), (0, 239), (239, 239), (120, 60)):
        sx, sy = 10 + u + 0.5, 6 + v + 0.5
        got = crop[v, u].astype(float)
        assert abs(got[0] - sx) <= 0.51 and abs(got[1] - sy) <= 0.51, (u, v, got, sx, sy)


def test_the_square_shrinks_to_the_crop_size_and_keeps_the_face_inside():
    img = np.zeros((300, 300, 3), np.uint8)
    img[115:125, 95:105] = 255                     # the left eye
    crop = align.celebahq_crop(img, SimpleNamespace(box=(0, 0, 1, 1), landmarks=LEVEL), 120)
    assert crop.shape == (120, 120, 3) and crop.dtype == np.uint8
    ys, xs = np.nonzero(crop[..., 0] > 128)
    # the eye's pixels 95..104 x 115..124 have their centre at continuous (100, 120); the
    # quad + 0.5 starts at (11, 7) and is 240 px wide for 120: crop continuous
    # ((100 - 11) / 2, (120 - 7) / 2) = (44.5, 56.5), pixel centre (44, 56)
    assert abs(xs.mean() - 44.0) < 0.3 and abs(ys.mean() - 56.0) < 0.3


def test_registry_and_manifest_choice():
    assert align.alignment_of({}) == "crop45" == align.DEFAULT
    assert align.alignment_of({"preprocess": {"size": [256, 256]}}) == "crop45"
    assert align.alignment_of({"preprocess": {"alignment": "ffhq"}}) == "ffhq"
    assert align.aligner("ffhq") is align.ffhq_crop
    assert align.aligner("celebahq") is align.celebahq_crop
    from app.services.face import crop_face

    assert align.aligner("crop45") is crop_face
    with pytest.raises(align.AlignmentError, match="unknown face alignment 'nope'"):
        align.aligner("nope")


def test_no_landmarks_is_refused_in_one_line():
    with pytest.raises(align.AlignmentError, match="needs the face's 5 landmarks"):
        align.ffhq_crop(np.zeros((10, 10, 3), np.uint8),
                        SimpleNamespace(box=(0, 0, 5, 5), landmarks=None))


def test_the_serving_module_imports_no_torch():
    import subprocess
    import sys

    code = "import sys, runtime.align; assert 'torch' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_a_model_trained_on_seq_deepfake_gets_its_alignment():
    from training.methods.seqfake import SeqFakeMethod

    def of(root, task):
        return SeqFakeMethod.alignment(SimpleNamespace(data_cfg={"root": root}, task=task))

    assert of("/data/Seq-DeepFake", "components") == "celebahq"
    assert of("/data/Seq-DeepFake", "binary") == "celebahq"
    assert of("/data/Seq-DeepFake", "attributes") == "ffhq"
    assert of(None, "components") == "crop45" and of(None, "attributes") == "crop45"


def test_the_case_report_names_the_alignment():
    from app.case_report import _face_card

    rep = {"model": "sff", "model_version": "v", "reliable": False, "verdict": "unreliable",
           "raw_verdict": "real", "headline": "h", "fake_probability": 0.1, "threshold": 0.5,
           "decoder": "autoregressive", "task": "components", "alignment": "celebahq",
           "sequence": [], "probabilities": {}}
    card = _face_card(SimpleNamespace(report=rep, where=None), [])
    assert ("face alignment", "celebahq") in card["summary"]
