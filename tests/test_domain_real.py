"""The domain check's generic part (runtime/domain.py, export/domain.py): real photographs
that the model's own features pass are flagged, the model's own images are not, the two
thresholds are calibrated together, and the sidecar keeps both parts.

The real photographs here are committed (``tests/data/real_photos``, derived by
``python -m tests.data.make_real_photos`` from photographs that ship in packages:
scikit-image's astronaut, coffee and camera, matplotlib's Grace Hopper; public domain), and
the astronaut's face as the face tab crops it."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from runtime import domain

REAL = Path(__file__).parent / "data" / "real_photos"


def _gaussian(dim: int, threshold: float) -> domain.Gaussian:
    return domain.Gaussian(np.zeros((1, dim)), np.eye(dim), threshold)


def test_an_input_is_in_domain_only_when_both_parts_pass():
    dm = domain.DomainModel(np.zeros((1, 2)), np.eye(2), 4.0, _gaussian(3, 9.0))
    x = np.array([[1.0, 1.0], [1.0, 1.0], [3.0, 0.0]])            # own scores 2, 2, 9
    g = np.array([[1.0, 0, 0], [4.0, 0, 0], [0.0, 0, 0]])          # generic 1, 16, 0
    got = domain.check(dm, x, "t", g)
    assert [d["in_domain"] for d in got] == [True, False, False]
    assert got[1]["generic_score"] == 16.0 and got[1]["generic_threshold"] == 9.0
    assert got[1]["score"] == 2.0 and got[1]["threshold"] == 4.0   # the answer's fields stay
    np.testing.assert_allclose(domain.scores(dm, x, g), [0.5, 16 / 9, 9 / 4])
    plain = domain.check(dm, x, "t")                                # no generic features given
    assert [d["in_domain"] for d in plain] == [True, True, False]
    assert "generic_score" not in plain[0]


def test_joint_thresholds_let_the_percentile_of_held_out_images_pass_both():
    rng = np.random.default_rng(0)
    x, g = rng.normal(size=(2000, 4)), rng.normal(size=(2000, 3))
    own = domain.calibrate(np.zeros((1, 4)), np.eye(4), x[:1000], 99.0)
    gen = domain.calibrate(np.zeros((1, 3)), np.eye(3), g[:1000], 99.0)
    alone = np.mean(domain.scores(domain.DomainModel(own.means, own.precision, own.threshold,
                                                     gen), x[:1000], g[:1000]) > 1)
    assert alone > 0.015                                 # two checks at p99 each flag ~2 %
    dm = domain.joint(own, gen, x[:1000], g[:1000], 99.0)
    assert dm.threshold > own.threshold and dm.generic.threshold > gen.threshold
    assert np.mean(domain.scores(dm, x[:1000], g[:1000]) > 1) == pytest.approx(0.01, abs=0.002)
    assert np.mean(domain.scores(dm, x[1000:], g[1000:]) > 1) < 0.02     # unseen images


def test_the_sidecar_keeps_the_generic_part(tmp_path):
    from runtime.manifest import sha256_file

    dm = domain.DomainModel(np.ones((2, 3)), np.eye(3), 5.0, _gaussian(4, 7.0))
    side = tmp_path / "m.domain.npz"
    np.savez(side, **dm.arrays())
    back = domain.load(side, sha256_file(side))
    assert back.threshold == 5.0 and back.generic.threshold == 7.0
    np.testing.assert_array_equal(back.generic.means, np.zeros((1, 4)))
    old = domain.DomainModel(np.ones((2, 3)), np.eye(3), 5.0)       # a check without one
    np.savez(side, **old.arrays())
    assert domain.load(side, sha256_file(side)).generic is None


def test_statistics_tell_a_drawn_image_from_a_photograph():
    """Flat colour areas (rendered) against the texture of a photograph (scikit-image's
    coffee): the fraction of flat pixels and the fine-detail energy differ."""
    from skimage import data

    drawn = np.zeros((1, 3, 64, 64))
    drawn[:, 0, 16:48, 16:48] = 0.8
    photo = data.coffee()[::6, ::9][:64, :64].transpose(2, 0, 1)[None] / 255.0
    s_drawn, s_photo = domain.image_statistics(drawn), domain.image_statistics(photo)
    assert s_drawn.shape == (1, 11)
    assert s_drawn[0, 4] > 0.8 > s_photo[0, 4]          # flat fraction
    assert s_photo[0, 7] > 0.05 and s_drawn[0, 7] > 0   # colour saturation


def _astronaut_face() -> np.ndarray:
    """The astronaut's face as the face tab crops it (MTCNN's box and eyes, fixed here)."""
    from skimage import data

    from app.faces import Face, align_crop

    face = Face(box=(181.05, 62.16, 267.75, 172.05), score=1.0,
                landmarks=np.array([[205.0, 101.7], [246.8, 103.7], [224.7, 129.0],
                                    [201.7, 139.2], [245.3, 141.9]]))
    return align_crop(data.astronaut(), face, 256)


def _verdicts(model, image: np.ndarray) -> tuple[bool, bool]:
    """(the model's own features alone, the served check) for one image."""
    x = model.prepare([image])
    out = model.run({"image": x})
    dm = domain.load(*model.sidecar(domain.SUFFIX))
    own = domain.check(dm, domain.features(out, model.entry["domain"]["features"]))[0]
    return own["in_domain"], model.domain_check(out, x)[0]["in_domain"]


def _fixture(prefix: str) -> list[tuple[str, np.ndarray]]:
    """The committed real photographs (``tests/data/real_photos``, written by
    ``python -m tests.data.make_real_photos``): ``photo_*`` whole photographs, ``face_*``
    aligned face crops as the face tab sends them."""
    from PIL import Image

    out = []
    for path in sorted(REAL.glob(f"{prefix}_*.png")):
        with Image.open(path) as im:
            out.append((path.name, np.asarray(im.convert("RGB"))))
    return out


def test_the_committed_real_photographs_are_flagged_by_the_classifier_check(smoke_artifacts):
    """The smoke Fashion-MNIST classifier's check fitted as the export fits it (thresholds
    from its validation images; fewer images here to stay fast): every committed photograph
    and face crop is flagged by the check, though the classifier's own features alone pass
    them; its example images stay in domain."""
    from PIL import Image

    from export.domain import fit_for_model, model_features, settings, validation_images
    from runtime.engine import Engine
    from training.methods import plugin_for_run

    model = Engine(smoke_artifacts).get("abcnorm")
    e = model.entry
    plugin = plugin_for_run(e["method"], e["training"]["config"], smoke_artifacts)
    images, labels = plugin.domain_images("train")
    names, generic = e["domain"]["features"], ("statistics", None)
    cfg = {**settings(), "max_images": 1000}
    dm, rec = fit_for_model(model, images, labels, names, cfg, generic,
                            validation_images(plugin))
    assert rec["threshold_from"] == "validation images" and rec["n_held_out"] == 1000

    def verdicts(image: np.ndarray) -> tuple[bool, bool]:
        x, g = model_features(model, [image], names, 8, generic)
        return domain.check(dm, x)[0]["in_domain"], domain.check(dm, x, "", g)[0]["in_domain"]

    photos = _fixture("photo") + _fixture("face")
    assert len(photos) == 6
    for name, photo in photos:
        assert verdicts(photo) == (True, False), name
    for path in sorted((smoke_artifacts / "examples" / "fashion").glob("*.png"))[:4]:
        with Image.open(path) as im:
            assert verdicts(np.asarray(im.convert("RGB")))[1] is True, path.name


@pytest.mark.slow
def test_real_photographs_the_own_features_pass_are_flagged(smoke_artifacts, tmp_path):
    """A copy of the smoke build, its checks refitted: the committed photographs reach the
    Fashion-MNIST classifier and the committed face crops the face model, all "in domain" by
    the models' own features, all flagged by the served check; the models' example images
    stay in domain. The smoke face model is fitted on 38 faces: its generic part (64-d)
    keeps 7 principal directions (``min_per_dim``)."""
    from PIL import Image

    from export.domain import refit
    from runtime.engine import Engine

    art = tmp_path / "art"
    shutil.copytree(smoke_artifacts, art)
    assert refit(art, ["abcnorm", "seqfake"]) == ["seqfake", "abcnorm"]
    engine = Engine(art)
    classifier, face = engine.get("abcnorm"), engine.get("seqfake")
    assert classifier.entry["domain"]["generic"]["kind"] == "statistics"
    assert face.entry["domain"]["generic"] == {**face.entry["domain"]["generic"],
                                               "kind": "face_net", "components": 7}
    for name, photo in _fixture("photo"):
        assert _verdicts(classifier, photo) == (True, False), name
    for name, crop in _fixture("face") + [("astronaut", _astronaut_face())]:
        assert _verdicts(face, crop) == (True, False), name
    for model, folder in ((classifier, "fashion"), (face, "faces")):
        for path in sorted((art / "examples" / folder).glob("*.png"))[:4]:
            with Image.open(path) as im:
                assert _verdicts(model, np.asarray(im.convert("RGB")))[1] is True, path.name


def test_the_generic_part_follows_the_method_and_is_off_for_the_users_own_data():
    from export.domain import generic_kind, settings

    cfg = settings()
    assert generic_kind(cfg, "seqfake") == "face_net"
    assert generic_kind(cfg, "abcnorm") == generic_kind(cfg, "qmil") == "statistics"
    assert generic_kind(cfg, "abcnorm", user_data=True) == "none"
    dm = domain.DomainModel(np.zeros((1, 2)), np.eye(2), 4.0)      # exported without one
    assert domain.check(dm, np.ones((1, 2)), "t", np.ones((1, 3)))[0]["in_domain"] is True
