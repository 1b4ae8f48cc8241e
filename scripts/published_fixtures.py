"""Reference outputs of the authors' SeqFakeFormer code, for tests/test_published_seqfakeformer.py.

``python -m scripts.published_fixtures --authors-repo PATH`` (PATH: a clone of
github.com/rshaojimmy/SeqDeepFake, or its bare git directory) copies the authors' model files
out of that repository (``git show HEAD:<file>``) into a temporary folder, drops
``pretrained=is_main_process(), `` from models/backbone.py (the one change their code needs
to build offline on a CPU), and runs their classes there in a separate Python process,
outside this project: seeded random weights (:func:`seeded_state`, in their key layout),
fixed inputs (:func:`case_image`), and the greedy loop of their test.py
(``evalute_transformer``: caption [SOS, PAD, ...], mask, argmax of step i, stop at EOS, PAD
read as 0), on the CPU at batch 1.

It writes ``tests/data/published/seqfakeformer.json``: the seed recipe, the key layout
(names and shapes), each case's input recipe, and the authors' step logits and sequences.
No weights are stored: the tests rebuild them from the recipe.

The cases: a reduced configuration (ResNet-18, 128 px, 64-wide transformer) that the fast
tests import and export, and the published ResNet-50 configuration (their r50.json, 256 px)
for the slow test. Per configuration, an offset added to the last layer's bias of EOS
(part of the recipe) and the inputs are searched with this project's re-implementation so
that the cases include a sequence that EOS ends midway, one that EOS ends at the first step
(all "no edit") and one that runs all 5 steps; the authors' code then gives each case's
outputs (and says how its loop ended).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path
from typing import Any

import torch

FIXTURE_PATH = (Path(__file__).resolve().parent.parent / "tests" / "data" / "published"
                / "seqfakeformer.json")
AUTHOR_FILES = ("models/__init__.py", "models/SeqFakeFormer.py", "models/transformer_SECA.py",
                "models/attention_layer.py", "models/backbone.py", "models/position_encoding.py",
                "models/configuration.py", "tools/__init__.py", "tools/utils.py",
                "configs/r50.json", "configs/r34.json")
PRETRAINED_FIX = ("pretrained=is_main_process(), ", "")  # models/backbone.py, both calls
RECIPE = ("per key, torch.Generator seeded with seed + crc32(key): num_batches_tracked 0; "
          "backbone running_mean 0.1 N(0,1), running_var 1 + 0.5 U(0,1), 1-d backbone weight "
          "0.2 + 0.4 U(0,1); other 1-d weight 1 + 0.1 N(0,1); 1-d bias 0.02 N(0,1); any other "
          "tensor N(0,1) / sqrt(fan_in); then the bias offsets of the case added to "
          "mlp.layers.2.bias")

# the reduced configuration (their r34.json with these changes) and the published one
CONFIGS: dict[str, dict[str, Any]] = {
    "small": {"base": "configs/r34.json", "backbone": {"network": "resnet18"},
              "transformer": {"hidden_dim": 64, "dim_feedforward": 128},
              "dataset": {"imgsize": 128}},
    "r50": {"base": "configs/r50.json"},
}


def seeded_state(shapes: dict[str, list[int]], seed: int,
                 bias_offsets: dict[str, float] | None = None) -> dict[str, torch.Tensor]:
    """The state dict of the recipe (:data:`RECIPE`), in the authors' key layout."""
    out: dict[str, torch.Tensor] = {}
    for key, shape in shapes.items():
        g = torch.Generator().manual_seed(seed + zlib.crc32(key.encode()))
        leaf = key.rsplit(".", 1)[-1]
        if leaf == "num_batches_tracked":
            out[key] = torch.zeros(shape, dtype=torch.long)
        elif key.startswith("backbone.") and leaf == "running_mean":
            out[key] = 0.1 * torch.randn(shape, generator=g)
        elif key.startswith("backbone.") and leaf == "running_var":
            out[key] = 1 + 0.5 * torch.rand(shape, generator=g)
        elif len(shape) == 1 and leaf == "weight" and key.startswith("backbone."):
            out[key] = 0.2 + 0.4 * torch.rand(shape, generator=g)
        elif len(shape) == 1 and leaf == "weight":
            out[key] = 1 + 0.1 * torch.randn(shape, generator=g)
        elif len(shape) == 1:
            out[key] = 0.02 * torch.randn(shape, generator=g)
        else:
            fan_in = 1
            for s in shape[1:]:
                fan_in *= int(s)
            out[key] = torch.randn(shape, generator=g) / fan_in ** 0.5
    for token, value in (bias_offsets or {}).items():
        out["mlp.layers.2.bias"][int(token)] += float(value)
    return out


def case_image(seed: int, size: int) -> torch.Tensor:
    """A fixed input (1, 3, size, size) in [-1, 1] (what their Normalize(0.5, 0.5) gives):
    a smooth colour gradient plus uniform noise from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    ramp = torch.linspace(-0.8, 0.8, size)
    base = torch.stack([ramp[None, :].expand(size, size), ramp[:, None].expand(size, size),
                        -ramp[None, :].expand(size, size)])
    return (0.6 * base + 0.4 * (2 * torch.rand(3, size, size, generator=g) - 1))[None]


# Runs inside the temporary folder of the authors' files (their `models` and `tools`
# packages), reading a job from stdin and writing the results to stdout as JSON.
RUNNER = r'''
import json, sys, time, torch
from models import SeqFakeFormer
from models.configuration import Config
from scripts_fixture import seeded_state, case_image

job = json.load(sys.stdin)
cfg = Config(job["config_file"])
torch.manual_seed(0)
model = SeqFakeFormer.build_model(cfg).eval()
shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
if job.get("layout_only"):
    print(json.dumps({"shapes": shapes})); sys.exit(0)
results = []
for case in job["cases"]:
    model.load_state_dict(seeded_state(shapes, job["seed"], case["bias_offsets"]), strict=True)
    image = case_image(case["image_seed"], cfg.imgsize)
    t0 = time.perf_counter()
    with torch.no_grad():
        # test.py, evalute_transformer: create_caption_and_mask and the loop, .cuda() dropped
        caption = cfg.PAD_token_id * torch.ones((1, cfg.max_position_embeddings), dtype=torch.long)
        cap_mask = torch.ones((1, cfg.max_position_embeddings), dtype=torch.bool)
        caption[:, 0] = cfg.SOS_token_id
        cap_mask[:, 0] = False
        steps = []
        for i in range(cfg.max_position_embeddings - 1):
            predictions = model(image, caption, cap_mask)
            predictions = predictions[:, i, :]
            steps.append(predictions[0].tolist())
            predicted_id = torch.argmax(predictions, axis=-1)
            if predicted_id[0] == cfg.EOS_token_id:
                caption = caption[:, 1:]
                zero = torch.zeros_like(caption)
                caption = torch.where(caption == cfg.PAD_token_id, zero, caption)
                break
            caption[:, i + 1] = predicted_id[0]
            cap_mask[:, i + 1] = False
        if caption.shape[1] == 6:
            caption = caption[:, 1:]
    results.append({"step_logits": steps, "sequence": caption[0].tolist(),
                    "seconds": time.perf_counter() - t0})
print(json.dumps({"shapes": shapes, "results": results}))
'''


def authors_tree(repo: Path, dest: Path) -> Path:
    """The authors' files (:data:`AUTHOR_FILES`) from ``repo``'s HEAD written under
    ``dest``, with :data:`PRETRAINED_FIX` applied and this module beside them."""
    for rel in AUTHOR_FILES:
        text = subprocess.run(["git", "-C", str(repo), "show", f"HEAD:{rel}"], check=True,
                              capture_output=True, text=True).stdout
        if rel == "models/backbone.py":
            if PRETRAINED_FIX[0] not in text:
                raise SystemExit(f"error: {rel} of {repo} has no {PRETRAINED_FIX[0]!r}: not the "
                                 f"code this script was written for")
            text = text.replace(*PRETRAINED_FIX)
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        (dest / rel).write_text(text)
    (dest / "scripts_fixture.py").write_text(Path(__file__).read_text())
    return dest


def config_file(tree: Path, name: str) -> Path:
    """The authors' JSON config of :data:`CONFIGS` ``name``, written into ``tree``."""
    spec = CONFIGS[name]
    cfg = json.loads((tree / spec["base"]).read_text())
    for section, values in spec.items():
        if section != "base":
            cfg[section].update(values)
    path = tree / "configs" / f"fixture_{name}.json"
    path.write_text(json.dumps(cfg, indent=1))
    return path


def run_authors(tree: Path, job: dict[str, Any]) -> dict[str, Any]:
    """:data:`RUNNER` on ``job`` in ``tree`` (a fresh Python process whose working folder is
    the authors' files, so their ``models`` package is the one imported)."""
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": os.environ.get(
        "OMP_NUM_THREADS", "2")}
    proc = subprocess.run([sys.executable, "-c", RUNNER], input=json.dumps(job), cwd=tree,
                          env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"error: the authors' code failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _kind(step_logits: list[list[float]]) -> str:
    """mid_eos | all_na | no_eos: how the authors' loop ended."""
    last = step_logits[-1]
    if max(range(len(last)), key=last.__getitem__) != 6:
        return "no_eos"
    return "all_na" if len(step_logits) == 1 else "mid_eos"


def search_cases(shapes: dict[str, list[int]], seed: int, size: int, image_seeds: list[int],
                 want: tuple[str, ...]) -> list[dict[str, Any]]:
    """(EOS bias offset, image) pairs whose greedy decoding ends each wanted way, found with
    this project's re-implementation (each image encoded once; only the decoder re-runs per
    offset). One offset that covers the most kinds is preferred, so that the cases share
    their weights; the authors' code then decides each case's kind and outputs."""
    from export.published.seqfakeformer import architecture
    from models.registry import create_model

    state = seeded_state(shapes, seed)
    model = create_model("seqfakeformer_published",
                         **architecture(state, Path("fixture.pt"), size)).eval()
    model.load_state_dict(state, strict=True)
    bias = model.mlp.layers[2].bias
    base = bias.detach().clone()
    offsets = (0.0, -1.0, -2.0, -3.0, -4.0, -6.0, 1.0, 2.0, 3.0)
    kinds: dict[float, dict[str, int]] = {o: {} for o in offsets}
    with torch.no_grad():
        for s in image_seeds:
            mem, pos, grid, ref_scale = model.encode(case_image(s, size))
            for o in offsets:
                bias.copy_(base)
                bias[6] += o
                tokens, steps = torch.zeros((1, 1), dtype=torch.long), []
                for _ in range(model.steps):
                    steps.append(model.step_logits(tokens, mem, pos, grid, ref_scale)[0].tolist())
                    pred = int(torch.tensor(steps[-1]).argmax())
                    if pred == 6:
                        break
                    tokens = torch.cat([tokens, torch.tensor([[pred]])], 1)
                kinds[o].setdefault(_kind(steps), s)
    best = max(offsets, key=lambda o: (sum(k in kinds[o] for k in want), -abs(o)))
    cases = []
    for k in want:
        o = best if k in kinds[best] else next((o for o in offsets if k in kinds[o]), None)
        if o is not None:
            cases.append({"image_seed": kinds[o][k], "bias_offsets": {"6": o}})
    print(f"[fixtures] search: offset {best} covers {sorted(kinds[best])}", flush=True)
    return cases


def authors_cases(tree: Path, cfg_path: Path, seed: int, cases: list[dict[str, Any]]
                  ) -> list[dict[str, Any]]:
    """The authors' outputs for ``cases``, each labelled with how their loop ended."""
    res = run_authors(tree, {"config_file": str(cfg_path), "seed": seed, "cases": cases})
    return [{"kind": _kind(r["step_logits"]), **c, **r} for c, r in zip(cases, res["results"])]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scripts.published_fixtures",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--authors-repo", required=True,
                   help="a clone (or the bare git directory) of github.com/rshaojimmy/SeqDeepFake")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--out", default=str(FIXTURE_PATH))
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        tree = authors_tree(Path(args.authors_repo), Path(tmp))
        head = subprocess.run(["git", "-C", args.authors_repo, "rev-parse", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
        out: dict[str, Any] = {"authors_commit": head, "recipe": RECIPE, "seed": args.seed,
                               "configs": {}}
        for name, want, seeds in (("small", ("mid_eos", "all_na", "no_eos"), list(range(1, 13))),
                                  ("r50", ("no_eos", "mid_eos"), [1, 2, 3])):
            cfg_path = config_file(tree, name)
            layout = run_authors(tree, {"config_file": str(cfg_path), "layout_only": True})
            size = json.loads(cfg_path.read_text())["dataset"]["imgsize"]
            cases = authors_cases(tree, cfg_path, args.seed,
                                  search_cases(layout["shapes"], args.seed, size, seeds, want))
            out["configs"][name] = {"authors_config": json.loads(cfg_path.read_text()),
                                    "shapes": layout["shapes"], "cases": cases}
            print(f"[fixtures] {name}: {len(layout['shapes'])} keys, cases "
                  f"{[(c['kind'], c['sequence']) for c in cases]}", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"[fixtures] wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
