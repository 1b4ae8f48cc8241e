"""The SBI importer: ``python -m export.published sbi FILE.tar [--ff raw|c23] [--name NAME]``.

Shiohara and Yamasaki (CVPR 2022, github.com/mapooon/SelfBlendedImages, README "Pretrained
model") publish two EfficientNet-B4 checkpoints trained on self-blended images made from
FaceForensics++ real videos: ``FFraw.tar`` (raw) and ``FFc23.tar`` (c23). Each is a
``torch.save`` dict whose ``model`` entry is the state dict of their ``Detector``
(``net.`` + efficientnet_pytorch's EfficientNet-B4 keys, 2 classes); every key and shape is
checked against :class:`models.sbi.SBIDetector`. The run serves fakeness
``softmax(logits)[:, 1]`` of SBI's own crop (:mod:`runtime.align_sbi`) at 380 px, pixels
/ 255 (no mean or std), as the authors' inference scripts do.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from export.published import (Importer, ImportedRun, PublishedFileError, check_state_dict,
                              load_published, pick_state)

IMG_SIZE = 380   # their configs' image_size (efficientnet-b4's resolution)
STATE_KEY = "model"
ALIGNMENT = "sbi"  # runtime.align_sbi: the box + 1/8 margins, resized to 380 x 380
THRESHOLD = 0.5    # fakeness above it reads "manipulated" (their scripts print the score only)
# the cross-dataset video-level AUCs of their README ("Test"), per training set
REPORTED = {
    "raw": {"auc_cdf": 93.82, "auc_dfd": 97.87, "auc_dfdc": 73.01, "auc_dfdcp": 85.70,
            "auc_ffiw": 84.52},
    "c23": {"auc_cdf": 92.87, "auc_dfd": 98.16, "auc_dfdc": 71.96, "auc_dfdcp": 85.51,
            "auc_ffiw": 83.22},
}
SOURCE = ("Shiohara and Yamasaki, 'Detecting Deepfakes with Self-Blended Images', CVPR 2022; "
          "weights from github.com/mapooon/SelfBlendedImages (README, 'Pretrained model'); "
          "its LICENSE: academic or non-profit noncommercial research use only, commercial "
          "use needs a license agreement with the authors")
WHAT = ("a binary face-swap / blending detector: one fakeness score per face, no edit "
        "sequence and no component order")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The kind's options."""
    p.add_argument("--ff", choices=sorted(REPORTED),
                   help="which FaceForensics++ quality the weights were trained on: raw "
                        "(FFraw.tar) or c23 (FFc23.tar); default: read from the file name")


def ff_quality(path: Path, given: str | None) -> str:
    """``raw`` or ``c23``: ``given``, else read from the file's name.

    Raises:
        PublishedFileError: neither given nor in the name.
    """
    if given:
        return given
    name = path.name.lower()
    found = [q for q in REPORTED if q in name]
    if len(found) != 1:
        raise PublishedFileError(f"{path.name}: say which weights these are with --ff raw "
                                 f"(FFraw.tar) or --ff c23 (FFc23.tar)")
    return found[0]


def read(path: Path, args: argparse.Namespace) -> ImportedRun:
    """The run of a published SBI file (see the module docstring)."""
    from models.registry import create_model
    from training.config import resolve_config

    quality = ff_quality(path, getattr(args, "ff", None))
    obj = load_published(path)
    state = pick_state(obj, path, STATE_KEY)
    model = create_model("sbi_efficientnet_b4", num_classes=2, image_size=IMG_SIZE)
    check_state_dict(model, state, path)
    model.load_state_dict(state, strict=True)
    config = resolve_config("seqfake", overrides=["data.task=binary",
                                                  f"data.img_size={IMG_SIZE}"])
    trained_on = (f"FaceForensics++ {quality} real videos turned into self-blended images "
                  f"(SBI); real faces, not this project's generated faces")
    extra = {
        "preprocess": {"size": [IMG_SIZE, IMG_SIZE], "channels": 3, "mean": [0.0, 0.0, 0.0],
                       "std": [1.0, 1.0, 1.0], "alignment": ALIGNMENT},
        "labels": ["fake"], "task": "binary", "arch": "sbi", "answer": "fakeness",
        "threshold": THRESHOLD, "detects": WHAT,
        "data": f"the authors' training set: {trained_on}",
    }
    reported = {**REPORTED[quality], "unit": "percent (video-level AUC)",
                "split": "cross-dataset test sets: Celeb-DF-v2, DeepFakeDetection, DFDC, "
                         "DFDC preview, FFIW-10K",
                "source": "github.com/mapooon/SelfBlendedImages README, 'Test' (their "
                          "published weights)"}
    epoch = obj.get("epoch")
    return ImportedRun(
        method="seqfake",
        model_spec={"name": "sbi_efficientnet_b4",
                    "kwargs": {"num_classes": 2, "image_size": IMG_SIZE}},
        state_dict=model.state_dict(), config=config, extra=extra,
        trained_on=f"FaceForensics++ {quality} (self-blended images)", reported=reported,
        source=SOURCE, default_name=f"sbi_ff{quality}",
        details={"state_key": STATE_KEY, "ff": quality, "detects": WHAT,
                 "epoch": int(epoch) if isinstance(epoch, int) else None})


IMPORTER = Importer(
    kind="sbi",
    help="SBI (Shiohara & Yamasaki, CVPR 2022): the authors' FFraw.tar or FFc23.tar "
         "(EfficientNet-B4 face-swap detector)",
    file_help="the authors' checkpoint (FFraw.tar / FFc23.tar)",
    add_arguments=add_arguments, read=read)
