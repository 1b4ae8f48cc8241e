"""Generated faces, the Seq-DeepFake loader (on a fixture in that exact format), augmentations."""
from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from runtime.preprocess import PreprocessSpec, to_input
from training.data import faces_synth
from training.data.face_aug import FaceAugment, StrongAug, WeakAug, self_blend
from training.data.seqdeepfake import (CANONICAL_LANDMARKS, SeqDeepFakeDataset,
                                       SeqDeepFakeFormatError, load_split, parse_label,
                                       read_annotations, task_dir)

SPEC = PreprocessSpec(size=(32, 32), channels=3, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def write_fixture(root: Path, task_folder: str = "facial_components", n: int = 4) -> Path:
    """A tiny Seq-DeepFake folder: images/{split}/{seq}/x.jpg + annotations/{split}.csv."""
    labels = ["[0, 0, 0, 0, 0]", "[1, 2, 4, 0, 0]", "[3, 0, 0, 0, 0]", "[5, 4, 3, 2, 1]"]
    rng = np.random.default_rng(0)
    for split in ("train", "val", "test"):
        rows = []
        for i in range(n):
            lab = labels[i % len(labels)]
            rel = f"images/{split}/seq{i % len(labels)}/{i:06d}.jpg"
            path = root / task_folder / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(path)
            rows.append((rel, lab))
        ann = root / task_folder / "annotations" / f"{split}.csv"
        ann.parent.mkdir(parents=True, exist_ok=True)
        with open(ann, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["file_path", "label"])
            w.writerows(rows)
    return root


def test_parse_label():
    assert parse_label("[1, 2, 4, 0, 0]") == [1, 2, 4, 0, 0]
    assert parse_label("[0, 0, 0, 0, 0]") == [0] * 5
    for bad in ("[1, 2]", "[1, 0, 2, 0, 0]", "[1, 1, 0, 0, 0]", "[6, 0, 0, 0, 0]", "nose"):
        with pytest.raises(SeqDeepFakeFormatError):
            parse_label(bad)


def test_loader_reads_fixture_in_exact_format(tmp_path):
    root = write_fixture(tmp_path)
    rows = read_annotations(root, "components", "train")
    assert [r[1] for r in rows] == [[0] * 5, [1, 2, 4, 0, 0], [3, 0, 0, 0, 0], [5, 4, 3, 2, 1]]
    assert task_dir(root / "facial_components", "components") == root / "facial_components"
    split = load_split(root, "components", "test", SPEC)
    assert split.images.shape == (4, 32, 32, 3) and split.images.dtype == np.uint8
    np.testing.assert_allclose(split.landmarks[0], CANONICAL_LANDMARKS * 32 / 256, atol=1e-4)
    ds = SeqDeepFakeDataset(split, SPEC)
    x, y = ds[1]
    assert x.shape == (3, 32, 32) and y.tolist() == [1, 2, 4, 0, 0]
    # without augmentation the tensor is exactly the shared preprocessing's
    with Image.open(split.paths[1]) as im:
        ref = to_input(im, SPEC)[0]
    np.testing.assert_allclose(x.numpy(), ref, atol=1e-6)


def test_loader_attributes_and_errors(tmp_path):
    write_fixture(tmp_path, "facial_attributes")
    assert len(read_annotations(tmp_path, "attributes", "val")) == 4
    with pytest.raises(SeqDeepFakeFormatError):
        read_annotations(tmp_path, "components", "train")  # no facial_components folder
    bad = tmp_path / "facial_attributes" / "annotations" / "train.csv"
    bad.write_text("path,lab\nx.jpg,[0, 0, 0, 0, 0]\n")
    with pytest.raises(SeqDeepFakeFormatError, match="file_path,label"):
        read_annotations(tmp_path, "attributes", "train")
    bad.write_text("file_path,label\nmissing.jpg,\"[0, 0, 0, 0, 0]\"\n")
    with pytest.raises(SeqDeepFakeFormatError, match="not found"):
        read_annotations(tmp_path, "attributes", "train")


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(folder)).encode() + p.read_bytes())
    return h.hexdigest()


def test_generator_layout_reproducible_and_balanced(tmp_path):
    a = faces_synth.generate(tmp_path / "a", 12, 2, 6, seed=3, verbose=False, workers=1)
    b = faces_synth.generate(tmp_path / "b", 12, 2, 6, seed=3, verbose=False, workers=2)
    assert _digest(a) == _digest(b)  # the same files whatever the number of processes
    assert faces_synth.is_generated(tmp_path / "a", 12, 2, 6, 3)
    assert not faces_synth.is_generated(tmp_path / "a", 12, 2, 6, 4)
    rows = read_annotations(tmp_path / "a", "components", "train")
    lengths = sorted(sum(1 for v in lab if v) for _, lab in rows)
    assert lengths == sorted(list(range(6)) * 2)  # all lengths equally frequent
    for path, lab in rows:
        seq = [v for v in lab if v]
        assert path.parent.name == faces_synth.sequence_name(seq)
        with Image.open(path) as im:
            assert im.size == (256, 256) and im.format == "JPEG"
    header = (a / "annotations" / "train.csv").read_text().splitlines()[0]
    assert header == "file_path,label"
    # test faces are not training faces
    tr = {p.read_bytes() for p in (a / "images" / "train").rglob("*.jpg")}
    te = {p.read_bytes() for p in (a / "images" / "test").rglob("*.jpg")}
    assert not tr & te


def test_manipulation_changes_only_near_its_region():
    rng = np.random.default_rng(0)
    face = faces_synth.sample_face(rng)
    masks = faces_synth.component_masks(face)
    assert all(m.max() == 1.0 for m in masks.values())
    # designed overlaps: eyebrow/eye, nose/lip, hair/eyebrow (in most faces)
    for a, b in (("eyebrow", "eye"), ("nose", "lip"), ("hair", "eyebrow")):
        hits = 0
        for i in range(10):
            m = faces_synth.component_masks(faces_synth.sample_face(np.random.default_rng(i)))
            hits += int(((m[a] > 0.5) & (m[b] > 0.5)).any())
        assert hits >= 8, (a, b, hits)
    lm = faces_synth.landmarks(face)
    assert lm.shape == (5, 2) and lm[0, 0] < lm[1, 0]


def _band_energy_order(cfg: faces_synth.SynthConfig, n: int = 36, task: str = "components"
                       ) -> tuple[float, float]:
    """Order each sample's true components by median band-pass energy in their region at
    64 px (a hand-made reader of the order cue); returns (Adaptive-Acc, random order)."""
    import cv2

    from training.metrics.seqfake import adaptive_accuracy, expected_random_order_accuracy

    pool = faces_synth._load_bg_images("train")
    preds, targets = [], []
    for i in range(n):
        rng = np.random.default_rng([7, i])
        seq = faces_synth.sample_sequence(rng, 2 + i % 4)
        data, _, face = faces_synth.make_sample(rng, seq, pool, cfg, task)
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR).astype(np.float32)
        small = cv2.resize(img, (64, 64), interpolation=cv2.INTER_AREA)
        energy = ((small - cv2.GaussianBlur(small, (0, 0), 2.0)) ** 2).sum(-1)
        masks = faces_synth.region_masks(face, task)
        names = faces_synth.task_names(task)
        score = {}
        for c in seq:
            m = cv2.resize(masks[names[c - 1]], (64, 64),
                           interpolation=cv2.INTER_AREA) > 0.5
            score[c] = float(np.median(energy[m]))
        preds.append(sorted(seq, key=lambda c: -score[c]))
        targets.append(seq)
    return adaptive_accuracy(preds, targets), expected_random_order_accuracy(preds, targets)[1]


def test_generator_order_cue_earlier_edits_carry_more_fingerprint():
    """The order is readable from pixels at the model's 64 px, in the direction the thesis'
    decoder (decreasing probability) can express: earlier edits are more evident."""
    acc, rand = _band_energy_order(faces_synth.SynthConfig())
    assert acc > rand + 0.2, (acc, rand)
    # without the fingerprint the same reader is at chance level (the cue is the fingerprint)
    acc0, rand0 = _band_energy_order(faces_synth.SynthConfig(fingerprint=(0.0, 0.0)))
    assert acc0 < rand0 + 0.1, (acc0, rand0)


def test_attributes_generator_layout_and_loader(tmp_path):
    """The attributes variant writes Seq-FaceAttr's layout and the loader reads it."""
    from training.data.faces_attrs import ATTRIBUTES

    root = faces_synth.generate(tmp_path, 12, 2, 6, seed=1, verbose=False, task="attributes")
    assert root.name == "facial_attributes" and (root / "DONE").is_file()
    assert faces_synth.is_generated(tmp_path, 12, 2, 6, 1, task="attributes")
    assert not faces_synth.is_generated(tmp_path, 12, 2, 6, 1)  # no components set there
    rows = read_annotations(tmp_path, "attributes", "train")
    assert len(rows) == 12
    for path, label in rows:
        seq = [c for c in label if c]
        assert Path(path).parent.name == faces_synth.sequence_name(seq, "attributes")
        assert all(n in ATTRIBUTES for n in Path(path).parent.name.split("-")) or not seq
    split = load_split(tmp_path, "attributes", "test", SPEC)
    assert split.images.shape[0] == 6 and split.labels.shape == (6, 5)


def test_attribute_edit_changes_only_near_its_region():
    """Setting one attribute changes the picture inside that attribute's region only."""
    from training.data import faces_attrs

    rng = np.random.default_rng(3)
    face = faces_synth.sample_face(rng, task="attributes")
    bg = np.full((256, 256, 3), 128.0, np.float32)
    before = faces_synth.render_face(face, bg)
    for name in faces_attrs.ATTRIBUTES:
        edited = dict(face)
        edited["attrs"] = {**face["attrs"], name: faces_attrs.sample_attribute(rng, name, face)}
        after = faces_synth.render_face(edited, bg)
        masks = faces_synth.region_masks(face, "attributes")
        region = np.maximum(masks[name], faces_synth.region_masks(edited, "attributes")[name]) > 0
        if name == "young":  # skin texture is global in the renderer; age lines are local
            continue
        diff = np.abs(after - before).sum(-1)
        assert diff[region].max() > 30, name                      # it is visible
        assert diff[~region].max() < 1.0, (name, float(diff[~region].max()))  # and local (blur tails < 1/255)


def test_weak_aug_shapes_and_range():
    np.random.seed(0)
    img = np.random.rand(3, 32, 32).astype(np.float32)
    out = WeakAug(**{**_aug("weak"), "blur_p": 1.0})(img)
    assert out.shape == img.shape and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 1


def test_strong_aug_labels_component_and_stays_local():
    np.random.seed(1)
    img = np.random.rand(3, 64, 64).astype(np.float32)
    lm = CANONICAL_LANDMARKS * 64 / 256
    out, lab = self_blend(img, lm, "lip")
    assert lab.tolist() == [4, 0, 0, 0, 0]
    diff = np.abs(out - img).sum(0)
    assert diff[:20].max() < 1e-6  # the top of the image (far from the mouth) is untouched
    assert diff.max() > 0.01
    # fakes are never re-labelled; p = 0 leaves reals alone
    fake = np.array([1, 0, 0, 0, 0])
    assert StrongAug(**{**_aug("strong"), "p": 1.0})(img, fake, lm)[1] is fake
    assert StrongAug(**{**_aug("strong"), "p": 0.0})(img, np.zeros(5, np.int64), lm)[1].tolist() == [0] * 5


def _aug(section: str) -> dict:
    """The YAML's augmentation values (the only place they are written), minus ``enabled``."""
    from training.config import resolve_config

    cfg = dict(resolve_config("seqfake")["aug"][section])
    cfg.pop("enabled")
    return {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()}


def test_face_augment_from_config():
    from training.config import resolve_config

    aug = FaceAugment.from_config(resolve_config("seqfake", overrides=[
        "aug.weak.enabled=false", "aug.strong.p=0.5"])["aug"], "binary")
    assert aug.weak is None and aug.strong.regions == ("face",) and aug.strong.p == 0.5
    assert FaceAugment.from_config(resolve_config("seqfake")["aug"], "attributes").strong is None
    np.random.seed(0)
    img, lab = aug(np.random.rand(3, 32, 32).astype(np.float32), np.zeros(5, np.int64),
                   CANONICAL_LANDMARKS * 32 / 256)
    assert img.shape == (3, 32, 32)
