"""The SeqFakeFormer importer: ``python -m export.published seqfakeformer FILE.pt --task ...``.

The authors (github.com/rshaojimmy/SeqDeepFake, "Pretrained Models") publish, per task, a
folder with ``best_model_fixed.pt`` (``best_state_dict_fixed``, ``best_val_acc_fixed``) and
``best_model_adaptive.pt`` (``best_state_dict_adaptive``, ``best_val_acc_adaptive``); a
training snapshot holds ``state_dict``. The architecture (backbone, widths, layer counts,
heads) is read from the state dict's shapes and then every key and shape is checked against
:class:`models.seqfakeformer_published.PublishedSeqFakeFormer`; the task is the user's word
(both tasks share every shape).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Mapping

from export.published import (Importer, ImportedRun, PublishedFileError, check_state_dict,
                              load_published, pick_state)

TASKS = {  # --task: the authors' dataset name, the face alignment its images had, README's numbers
    "components": {"dataset": "facial_components", "alignment": "celebahq",
                   "images": "Seq-FaceComp: CelebAMask-HQ faces (CelebA-HQ aligned, 256 px) "
                             "edited step by step with StyleMapGAN",
                   "fixed_acc": 72.65, "adaptive_acc": 55.30},
    "attributes": {"dataset": "facial_attributes", "alignment": "ffhq",
                   "images": "Seq-FaceAttr: FFHQ faces (FFHQ aligned, 256 px) edited step by "
                             "step with Talk-To-Edit",
                   "fixed_acc": 68.86, "adaptive_acc": 49.63},
}
STATE_KEYS = {"fixed": "best_state_dict_fixed", "adaptive": "best_state_dict_adaptive"}
MEAN = STD = (0.5, 0.5, 0.5)   # their transforms.Normalize((0.5,) * 3, (0.5,) * 3)
IMG_SIZE = 256                 # their configs' imgsize
SMOOTH, LN_EPS = 4.0, 1e-12    # their configs' smooth and layer_norm_eps (not in the shapes)
SOURCE = ("Shao, Wu and Liu, 'Detecting and Recovering Sequential DeepFake Manipulation', "
          "ECCV 2022; weights from github.com/rshaojimmy/SeqDeepFake (README, 'Pretrained "
          "Models'); no license file in that repository: research use, cite the paper")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The kind's options."""
    p.add_argument("--task", required=True, choices=sorted(TASKS),
                   help="what the weights were trained on: components (pretrained-r50-c, "
                        "Seq-FaceComp) or attributes (pretrained-r50-a, Seq-FaceAttr)")
    p.add_argument("--state", choices=sorted(STATE_KEYS),
                   help="which state dict to read: fixed (best_state_dict_fixed) or adaptive "
                        "(best_state_dict_adaptive); default: the one the file holds, else "
                        "its training snapshot (state_dict)")
    p.add_argument("--img-size", type=int, default=IMG_SIZE,
                   help=f"the input side the weights were trained at (their imgsize, "
                        f"{IMG_SIZE})")


def _count(state: Mapping[str, Any], prefix: str) -> int:
    """How many numbered children ``prefix.<i>.`` the state dict has."""
    idx = {int(k[len(prefix) + 1:].split(".")[0]) for k in state if k.startswith(prefix + ".")
           and k[len(prefix) + 1:].split(".")[0].isdigit()}
    return max(idx) + 1 if idx else 0


def architecture(state: Mapping[str, Any], path: Path, img_size: int) -> dict[str, Any]:
    """The model's keyword arguments, read from the state dict's shapes.

    Raises:
        PublishedFileError: a key the reading needs is missing (named).
    """
    body = "backbone.0.body"
    need = ("input_proj.weight", "transformer.decoder.layers.0.point2.weight",
            "transformer.encoder.layers.0.linear1.weight", "mlp.layers.2.weight",
            "transformer.embeddings.position_embeddings.weight", f"{body}.layer3.0.conv1.weight")
    for k in need:
        if k not in state or not hasattr(state[k], "shape"):
            raise PublishedFileError(f"{path}: key {k!r} is missing; this is not a "
                                     f"SeqFakeFormer state dict")
    bottleneck = f"{body}.layer1.0.conv3.weight" in state
    layer3 = _count(state, f"{body}.layer3")
    if bottleneck:
        backbone = "resnet101" if layer3 > 6 else "resnet50"
    else:
        backbone = "resnet34" if layer3 > 2 else "resnet18"
    return {"backbone": backbone,
            "frozen_bn": f"{body}.bn1.num_batches_tracked" not in state,
            "hidden_dim": int(state["input_proj.weight"].shape[0]),
            "nheads": int(state["transformer.decoder.layers.0.point2.weight"].shape[0]) // 2,
            "dim_feedforward": int(state["transformer.encoder.layers.0.linear1.weight"].shape[0]),
            "enc_layers": _count(state, "transformer.encoder.layers"),
            "dec_layers": _count(state, "transformer.decoder.layers"),
            "smooth": SMOOTH, "vocab_size": int(state["mlp.layers.2.weight"].shape[0]),
            "max_position_embeddings": int(
                state["transformer.embeddings.position_embeddings.weight"].shape[0]),
            "layer_norm_eps": LN_EPS, "img_size": int(img_size)}


def _state_key(obj: Mapping[str, Any], state: str | None) -> str:
    """The key of the state dict to read (see ``--state``)."""
    if state:
        return STATE_KEYS[state]
    for key in (*STATE_KEYS.values(), "state_dict"):
        if key in obj:
            return key
    return STATE_KEYS["fixed"]  # absent: pick_state names the keys the file has


def read(path: Path, args: argparse.Namespace) -> ImportedRun:
    """The run of a published SeqFakeFormer file (see the module docstring)."""
    from models.registry import create_model
    from training.config import resolve_config
    from training.data.seqdeepfake import names_for

    if args.img_size < 32:
        raise PublishedFileError(f"--img-size {args.img_size} is too small; the published "
                                 f"weights take {IMG_SIZE} px")
    obj = load_published(path)
    key = _state_key(obj, args.state)
    state = pick_state(obj, path, key)
    kwargs = architecture(state, path, args.img_size)
    if kwargs["vocab_size"] != 8 or kwargs["max_position_embeddings"] != 6:
        raise PublishedFileError(f"{path}: vocabulary {kwargs['vocab_size']} and "
                                 f"{kwargs['max_position_embeddings']} positions, expected 8 "
                                 f"and 6 (SOS, 5 edits, EOS, PAD; SOS + 5 steps)")
    import torch

    with torch.device("meta"):  # shapes only: the file's tensors become the weights
        model = create_model("seqfakeformer_published", **kwargs)
    check_state_dict(model, state, path)
    model.load_state_dict(state, strict=True, assign=True)
    task = TASKS[args.task]
    val = obj.get(key.replace("state_dict", "val_acc"))
    config = resolve_config("seqfake", overrides=[
        f"data.task={args.task}", f"data.img_size={args.img_size}", "model.arch=seqfakeformer",
        f"model.backbone={kwargs['backbone'] if kwargs['backbone'] != 'resnet101' else 'resnet50'}",
        f"model.dim={kwargs['hidden_dim']}", f"model.heads={kwargs['nheads']}",
        f"model.depth={kwargs['enc_layers']}", f"model.dec_depth={kwargs['dec_layers']}"])
    extra = {
        "preprocess": {"size": [args.img_size, args.img_size], "channels": 3,
                       "mean": list(MEAN), "std": list(STD), "alignment": task["alignment"]},
        "labels": list(names_for(args.task)), "task": args.task, "arch": "published",
        "threshold": 0.5, "slots": 5,
        "data": f"the authors' {task['dataset']} training split ({task['images']}); "
                f"real-face edits, not this project's generated faces",
    }
    reported = {"fixed_acc": task["fixed_acc"], "adaptive_acc": task["adaptive_acc"],
                "unit": "percent", "split": f"Seq-DeepFake {task['dataset']} test",
                "source": "github.com/rshaojimmy/SeqDeepFake README, 'Benchmark Results' "
                          "(SeqFakeFormer, ResNet-50)"}
    if val is not None and hasattr(val, "__float__"):
        reported[key.replace("best_state_dict", "val_acc")] = round(100 * float(val), 4)
    return ImportedRun(
        method="seqfake",
        model_spec={"name": "seqfakeformer_published", "kwargs": kwargs},
        state_dict=model.state_dict(), config=config, extra=extra,
        trained_on=f"Seq-DeepFake {task['dataset']} ({task['images']})",
        reported=reported, source=SOURCE, default_name=f"seqfakeformer_{args.task}",
        details={"state_key": key, "architecture": kwargs})


IMPORTER = Importer(
    kind="seqfakeformer",
    help="SeqFakeFormer (Shao et al., ECCV 2022): the authors' best_model_fixed.pt or "
         "best_model_adaptive.pt",
    file_help="the authors' checkpoint (best_model_fixed.pt / best_model_adaptive.pt)",
    add_arguments=add_arguments, read=read)
