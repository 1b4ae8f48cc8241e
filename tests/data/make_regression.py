"""Write the stored outputs that ``tests/test_regression_outputs.py`` compares against.

One ``.npz`` per case under ``tests/data/regression/`` (open_clip's "regression tests on
stored outputs"): the case's fixed input, every output tensor of the eval-mode forward, and
a JSON ``meta`` entry (registered model name, kwargs, weight seed, versions, a checksum of
the weights). Every registered model has at least one case; some have a second case named
``<model>__<variant>`` for a code path the first does not take (binary mode, teacher
forcing, the thesis-literal qMIL head, timm's own stem).

Usage (from the repository root)::

    python -m tests.data.make_regression                  # write the missing files only
    python -m tests.data.make_regression --list           # case names
    python -m tests.data.make_regression --only toy_regressor --force   # overwrite one
    python -m tests.data.make_regression --force          # overwrite all

Without ``--force`` an existing file is never overwritten (naming one with ``--only`` is an
error, exit status 1). Overwrite only after you have established that the change of outputs
is intended (a deliberate change of a model, or a torch/timm upgrade that changed weight
init or kernels); then commit the new files with that change.

Weights: ``torch.manual_seed(WEIGHT_SEED)`` immediately before ``create_model``, eval mode.
Inputs: numpy ``default_rng(INPUT_SEED)``; float inputs are rounded to float16 and stored
as float16 (half the size, and exact: the model sees those float16 values cast to float32,
here and in the test).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np

OUT_DIR = Path(__file__).resolve().parent / "regression"
WEIGHT_SEED = 0
INPUT_SEED = 1234
# Integer outputs that are an argmax of a float output must not sit on a near-tie, or a
# harmless 1e-6 difference between machines would flip them (and, for greedy decoding,
# everything after). The generator refuses a case whose top-2 gap is below this.
MIN_ARGMAX_GAP = 1e-3


# --- inputs ---------------------------------------------------------------------------
def _f16(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float32).astype(np.float16)


def images(*shape: int) -> Callable[[np.random.Generator], dict[str, np.ndarray]]:
    """Standard-normal images (what normalised pictures look like), float16."""
    return lambda rng: {"x": _f16(rng.standard_normal(shape))}


def bags(b: int, k: int, word_dim: int | None, side: int = 28
         ) -> Callable[[np.random.Generator], dict[str, np.ndarray]]:
    """qMIL / gated-MIL bags: the second bag has one padding slot (zero image, mask False)."""

    def make(rng: np.random.Generator) -> dict[str, np.ndarray]:
        ims = rng.standard_normal((b, k, 1, side, side))
        mask = np.ones((b, k), dtype=bool)
        mask[1, -1] = False
        ims[~mask] = 0.0
        out = {"images": _f16(ims), "mask": mask}
        if word_dim:
            q = rng.standard_normal((b, word_dim))
            out["query"] = _f16(q / np.linalg.norm(q, axis=1, keepdims=True))
        return out

    return make


def face_and_sequence(b: int, side: int, num_classes: int, slots: int = 5
                      ) -> Callable[[np.random.Generator], dict[str, np.ndarray]]:
    """Images + a teacher-forcing decoder input [SOS, y_1 .. y_{S-1}] (SeqFakeFormer)."""

    def make(rng: np.random.Generator) -> dict[str, np.ndarray]:
        x = _f16(rng.standard_normal((b, 3, side, side)))
        seq = rng.integers(0, num_classes + 1, size=(b, slots - 1))
        tgt = np.concatenate([np.full((b, 1), num_classes + 1), seq], axis=1).astype(np.int64)
        return {"x": x, "tgt_in": tgt}

    return make


# --- cases ----------------------------------------------------------------------------
# kwargs: those the training methods pass (model_spec() with training/configs/*.yaml), made
# smaller where that keeps the test fast; comments say where they come from.
_SEQFAKE = {"num_classes": 5, "dim": 128, "heads": 4, "img_size": 64, "out_level": 0,
            "out_indices": [2, 3], "depth": 1, "pos_embed": True, "dropout": 0.0}  # seqfake.yaml
_FORMER = {"num_classes": 5, "dim": 128, "heads": 4, "img_size": 64, "out_level": 0,
           "out_indices": [2, 3], "enc_depth": 1, "dec_depth": 1}  # seqfake.yaml, arch seqfakeformer
_QMIL = {"encoder": "lenet", "feat_dim": 500, "embed_dim": 128, "attn_dim": 128,
         "temperature": 0.5, "classifier_hidden": 128, "classifier_query": "bilinear",
         "embed_norm": True, "attn_init": "scaled", "word_dim": 50}  # qmil.yaml, GloVe 50d
_LT = {"backbone": "resnet18", "num_classes": 10, "in_chans": 1, "stem": "cifar",
       "stem_stride": 2, "backbone_kwargs": {"output_stride": 16, "layers": [1, 1, 1, 1],
                                             "channels": [16, 32, 64, 128]}}  # abcnorm.yaml

CASES: list[dict[str, Any]] = [
    {"case": "toy_regressor", "model": "toy_regressor",
     "kwargs": {"in_dim": 8, "hidden": 16, "dropout": 0.1},  # toy.yaml (dropout: eval = off)
     "inputs": lambda rng: {"x": _f16(rng.standard_normal((4, 8)))}},
    # sequential deepfake (thesis ch. 5): 64 px faces, 8x8 tokens
    {"case": "seqfake_resnet18", "model": "seqfake_resnet18", "kwargs": _SEQFAKE,
     "inputs": images(2, 3, 64, 64)},
    {"case": "seqfake_resnet18__binary", "model": "seqfake_resnet18",
     "kwargs": {"num_classes": 1, "dim": 64, "heads": 2, "img_size": 64, "out_level": 1,
                "out_indices": [2, 3, 4], "depth": 2, "pos_embed": False, "dropout": 0.1},
     "inputs": images(2, 3, 64, 64)},  # binary task, full ResNet, stride-16 tokens, no pos
    {"case": "seqfake_resnet34", "model": "seqfake_resnet34", "kwargs": _SEQFAKE,
     "inputs": images(2, 3, 64, 64)},
    {"case": "seqfake_resnet50", "model": "seqfake_resnet50",
     "kwargs": {**_SEQFAKE, "dim": 64}, "inputs": images(2, 3, 64, 64)},
    {"case": "seqfakeformer_resnet18", "model": "seqfakeformer_resnet18", "kwargs": _FORMER,
     "inputs": images(2, 3, 64, 64), "argmax": {"sequence": "logits"}},  # greedy decoding
    {"case": "seqfakeformer_resnet18__teacher", "model": "seqfakeformer_resnet18",
     "kwargs": _FORMER, "inputs": face_and_sequence(2, 64, 5),
     "argmax": {"sequence": "logits"}},  # teacher forcing (the training forward)
    {"case": "seqfakeformer_resnet34", "model": "seqfakeformer_resnet34", "kwargs": _FORMER,
     "inputs": images(2, 3, 64, 64), "argmax": {"sequence": "logits"}},
    {"case": "seqfakeformer_resnet50", "model": "seqfakeformer_resnet50",
     "kwargs": {**_FORMER, "dim": 64}, "inputs": images(2, 3, 64, 64),
     "argmax": {"sequence": "logits"}},
    # a user's Seq-DeepFake folder: MobileNetV2 (ImageNet start; seeded init here)
    {"case": "seqfake_mobilenetv2_100", "model": "seqfake_mobilenetv2_100",
     "kwargs": {**_SEQFAKE, "dim": 64}, "inputs": images(2, 3, 64, 64)},
    {"case": "seqfakeformer_mobilenetv2_100", "model": "seqfakeformer_mobilenetv2_100",
     "kwargs": {**_FORMER, "dim": 64}, "inputs": images(2, 3, 64, 64),
     "argmax": {"sequence": "logits"}},
    # query-based MIL (thesis ch. 2): Fashion-MNIST bags of 4, one padded slot
    {"case": "qmil_lenet", "model": "qmil_lenet", "kwargs": _QMIL,
     "inputs": bags(2, 4, 50)},
    {"case": "qmil_lenet__thesis", "model": "qmil_lenet",
     "kwargs": {**_QMIL, "classifier_hidden": 0, "classifier_query": "none",
                "embed_norm": False, "attn_init": "torch"},
     "inputs": bags(2, 4, 50)},  # the thesis-literal head, PyTorch default init
    {"case": "qmil_timm", "model": "qmil_timm",
     "kwargs": {**_QMIL, "encoder": "resnet18", "feat_dim": 128},
     "inputs": bags(2, 4, 50)},
    {"case": "gated_mil_lenet", "model": "gated_mil_lenet",
     "kwargs": {"encoder": "lenet", "feat_dim": 500, "attn_dim": 128},  # qmil.yaml, gated
     "inputs": bags(2, 4, None)},
    # contrastive pre-training (thesis ch. 3): 28x28 grayscale
    {"case": "dcl_resnet18", "model": "dcl_resnet18",
     "kwargs": {"in_chans": 1, "stem": "timm", "proj_hidden": 512, "proj_dim": 128},  # dcl.yaml
     "inputs": images(2, 1, 28, 28)},
    {"case": "dcl_encoder", "model": "dcl_encoder",
     "kwargs": {"backbone": "resnet18", "in_chans": 1, "stem": "cifar_s2", "proj_hidden": 64,
                "proj_dim": 32},
     "inputs": images(2, 1, 28, 28)},
    {"case": "dcl_small_cnn", "model": "dcl_small_cnn",
     "kwargs": {"in_chans": 1, "width": 16, "proj_hidden": 256, "proj_dim": 128},  # dcl_sweep.yaml
     "inputs": images(4, 1, 28, 28)},
    # long-tailed classifier (ABC-Norm, thesis ch. 4); the export path returns the map too
    {"case": "lt_classifier", "model": "lt_classifier", "kwargs": _LT,
     "call": "forward_with_features", "output_names": ["logits", "features"],
     "inputs": images(4, 1, 28, 28)},
    {"case": "lt_classifier__imagenet", "model": "lt_classifier",
     "kwargs": {"backbone": "resnet18", "num_classes": 7, "in_chans": 3, "stem": "imagenet",
                "stem_stride": 1, "backbone_kwargs": {}},  # real_data-style, timm's stem
     "call": "forward_with_features", "output_names": ["logits", "features"],
     "inputs": images(2, 3, 64, 64)},
]
CASE_BY_NAME = {c["case"]: c for c in CASES}


# --- running a case (shared with the test) ---------------------------------------------
def build(model: str, kwargs: dict[str, Any]):
    """The case's network: fixed-seed weights, eval mode."""
    import torch

    from models.registry import create_model

    torch.manual_seed(WEIGHT_SEED)
    return create_model(model, **json.loads(json.dumps(kwargs))).eval()  # a fresh copy


def to_torch(inputs: dict[str, np.ndarray]) -> dict[str, Any]:
    """Stored arrays -> model arguments (float16 -> float32; bool and int64 unchanged)."""
    import torch

    return {k: torch.from_numpy(v.astype(np.float32) if v.dtype == np.float16 else v)
            for k, v in inputs.items()}


def run(net, inputs: dict[str, np.ndarray], call: str = "forward",
        output_names: list[str] | None = None) -> dict[str, np.ndarray]:
    """Outputs of ``net.<call>(**inputs)`` under no_grad, as named numpy arrays."""
    import torch

    with torch.no_grad():
        out = getattr(net, call)(**to_torch(inputs))
    if isinstance(out, dict):
        items = list(out.items())
    elif isinstance(out, (tuple, list)):
        if not output_names or len(output_names) != len(out):
            raise ValueError(f"{call} returned {len(out)} tensors; name them (output_names)")
        items = list(zip(output_names, out))
    else:
        items = [(output_names[0] if output_names else "output", out)]
    return {k: v.detach().cpu().numpy() for k, v in items}


def weight_checksum(net) -> tuple[int, float]:
    """(number of parameter and buffer elements, sum of their absolute values in float64)."""
    import torch

    n, s = 0, 0.0
    for t in net.state_dict().values():
        if torch.is_floating_point(t):
            n += t.numel()
            s += float(t.detach().double().abs().sum())
    return n, s


def load(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(meta, inputs, outputs) of a stored case."""
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        inputs = {k[len("input."):]: z[k] for k in z.files if k.startswith("input.")}
        outputs = {k[len("output."):]: z[k] for k in z.files if k.startswith("output.")}
    return meta, inputs, outputs


def make_case(case: dict[str, Any]) -> tuple[dict[str, Any], dict[str, np.ndarray],
                                              dict[str, np.ndarray]]:
    """Build, run twice (forward must be deterministic), check argmax margins."""
    import timm
    import torch

    inputs = case["inputs"](np.random.default_rng(INPUT_SEED))
    net = build(case["model"], case["kwargs"])
    call, names = case.get("call", "forward"), case.get("output_names")
    outputs = run(net, inputs, call, names)
    again = run(net, inputs, call, names)
    for k in outputs:
        if not np.array_equal(outputs[k], again[k]):
            raise RuntimeError(f"{case['case']}: output {k!r} differs between two eval "
                               f"forwards (random numbers at forward time?)")
    for int_name, float_name in case.get("argmax", {}).items():
        top2 = np.sort(outputs[float_name], axis=-1)[..., -2:]
        gap = float((top2[..., 1] - top2[..., 0]).min())
        if gap < MIN_ARGMAX_GAP:
            raise RuntimeError(f"{case['case']}: {int_name} = argmax {float_name} has a near-tie "
                               f"(gap {gap:.2e}); change the input or the kwargs")
    n, s = weight_checksum(net)
    meta = {"case": case["case"], "model": case["model"], "kwargs": case["kwargs"],
            "weight_seed": WEIGHT_SEED, "input_seed": INPUT_SEED, "call": call,
            "output_names": names, "weights_numel": n, "weights_abs_sum": s,
            "torch": torch.__version__, "timm": timm.__version__, "numpy": np.__version__}
    return meta, inputs, outputs


def save(path: Path, meta: dict[str, Any], inputs: dict[str, np.ndarray],
         outputs: dict[str, np.ndarray]) -> None:
    arrays = {"meta": np.array(json.dumps(meta, sort_keys=True))}
    arrays.update({f"input.{k}": v for k, v in inputs.items()})
    arrays.update({f"output.{k}": v.astype(np.float32) if v.dtype == np.float64 else v
                   for k, v in outputs.items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.data.make_regression",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--force", action="store_true", help="overwrite existing files")
    p.add_argument("--only", nargs="+", metavar="CASE", help="these cases only")
    p.add_argument("--out", type=Path, default=OUT_DIR, help=f"folder (default {OUT_DIR})")
    p.add_argument("--list", action="store_true", help="print the case names and exit")
    args = p.parse_args(argv)
    if args.list:
        print("\n".join(CASE_BY_NAME))
        return 0
    unknown = [c for c in args.only or [] if c not in CASE_BY_NAME]
    if unknown:
        print(f"unknown case(s): {', '.join(unknown)}; see --list", file=sys.stderr)
        return 2
    names = args.only or list(CASE_BY_NAME)
    existing = [c for c in names if (args.out / f"{c}.npz").exists()]
    if existing and not args.force:
        if args.only:
            print(f"refusing to overwrite {', '.join(existing)} in {args.out} (use --force)",
                  file=sys.stderr)
            return 1
        print(f"kept {len(existing)} existing file(s) (use --force to overwrite)")
        names = [c for c in names if c not in existing]
    import torch

    torch.set_num_threads(1)  # tiny inputs; as the test runs
    for c in names:
        meta, inputs, outputs = make_case(CASE_BY_NAME[c])
        path = args.out / f"{c}.npz"
        save(path, meta, inputs, outputs)
        print(f"wrote {path} ({path.stat().st_size / 1024:.1f} KiB; "
              f"outputs {', '.join(f'{k} {v.shape}' for k, v in outputs.items())})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
