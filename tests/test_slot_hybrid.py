"""Hybrid decoding of the slot order head (``eval.slot_decode``): the fused probabilities'
detected set in the slot head's order (models/seqfake.py, docs/seqfake.md)."""
from __future__ import annotations

import math

import pytest
import torch

from models.seqfake import (SLOT_DECODES, decode_slots, hybrid_assign_sequence,
                            hybrid_position_sequence, slot_sequence)


def _slot_logits(rows: list[list[float]]) -> torch.Tensor:
    """Slot logits (1, S, L + 1) whose softmax is the given rows of probabilities."""
    return torch.log(torch.tensor([rows], dtype=torch.float32))


# 3 components, 3 slots; columns: end, c1, c2, c3.
# Expected slot E[s | c] = sum_s s p_s(c) / sum_s p_s(c):
#   c1: (1*.1 + 2*.2 + 3*.1) / .4 = 2.0;  c2: (1*.1 + 2*.1 + 3*.1) / .3 = 2.0;
#   c3: (1*.7 + 2*.1 + 3*.1) / .9 = 1.33  -> c3 first; c1, c2 tie at 2.0, the higher fused
#   probability (c1) first: 3, 1, 2.  Best assignment: c3 -> slot 1 (.7), then c1 -> 2, c2 -> 3
#   (log .2 + log .1 > log .1 + log .1): 3, 1, 2.  The slot argmaxes read 3, end: 3.
SLOTS_3 = [[0.1, 0.1, 0.1, 0.7],
           [0.6, 0.2, 0.1, 0.1],
           [0.7, 0.1, 0.1, 0.1]]
FUSED_3 = torch.tensor([[3.0, 2.0, 1.0]])  # all detected, fused order 1, 2, 3


@pytest.mark.parametrize("fn", [hybrid_position_sequence, hybrid_assign_sequence])
def test_hand_worked_order(fn) -> None:
    seq = fn(FUSED_3, _slot_logits(SLOTS_3), 0.5)
    assert seq.tolist() == [[3, 1, 2]]
    assert slot_sequence(_slot_logits(SLOTS_3)).tolist() == [[3, 0, 0]]


def test_position_and_assignment_differ_where_hand_worked() -> None:
    """c1, c2 detected (c3 not). c1's slot mass .4, .05, .5 -> E = (.4 + .1 + 1.5) / .95
    = 2.11; c2's .02, .5, .2 -> E = (.02 + 1 + .6) / .72 = 2.25: by position 1, 2. Distinct
    slots: c1 -> 3, c2 -> 2 scores .5 * .5 = .25, above c1 -> 1, c2 -> 2 (.4 * .5 = .2) and
    every other pair: by assignment 2, 1."""
    rows = [[0.53, 0.4, 0.02, 0.05],
            [0.4, 0.05, 0.5, 0.05],
            [0.25, 0.5, 0.2, 0.05]]
    fused = torch.tensor([[2.0, 2.5, -3.0]])
    assert hybrid_position_sequence(fused, _slot_logits(rows), 0.5).tolist() == [[1, 2, 0]]
    assert hybrid_assign_sequence(fused, _slot_logits(rows), 0.5).tolist() == [[2, 1, 0]]


@pytest.mark.parametrize("how", SLOT_DECODES[1:])
def test_no_detection_is_empty(how: str) -> None:
    out = {"logits": torch.full((2, 3), -4.0), "slot_logits": _slot_logits(SLOTS_3).repeat(2, 1, 1)}
    assert decode_slots(out, how, 0.5).tolist() == [[0, 0, 0], [0, 0, 0]]


@pytest.mark.parametrize("how", SLOT_DECODES[1:])
def test_detection_with_tiny_slot_mass_still_appears(how: str) -> None:
    """c2 is detected by the fused probabilities although every slot gives it ~1e-6."""
    rows = [[0.5, 0.5 - 1e-6, 1e-6, 0.0 + 1e-9],
            [0.9, 0.1 - 1e-6, 1e-6, 1e-9],
            [0.99, 0.01 - 1e-6, 1e-6, 1e-9]]
    fused = torch.tensor([[-3.0, 1.0, -3.0]])
    assert decode_slots({"logits": fused, "slot_logits": _slot_logits(rows)}, how,
                        0.5).tolist() == [[2, 0, 0]]


def test_threshold_is_strict_and_sets_the_detected_set() -> None:
    """sigmoid(0) = 0.5 is not > 0.5; the set is the fused one, not the slots' (c3 only)."""
    fused = torch.tensor([[0.0, 1.0, 1.0]])
    seq = hybrid_position_sequence(fused, _slot_logits(SLOTS_3), 0.5)
    assert seq.tolist() == [[3, 2, 0]]
    assert hybrid_position_sequence(fused, _slot_logits(SLOTS_3),
                                    1 / (1 + math.exp(-0.5))).tolist() == [[3, 2, 0]]


def test_more_slots_than_components_pads_and_batches() -> None:
    rows = [[0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.9, 0.05, 0.05], [0.9, 0.05, 0.05]]
    sl = _slot_logits(rows).repeat(2, 1, 1)
    fused = torch.tensor([[2.0, 2.0], [2.0, -2.0]])
    for how in SLOT_DECODES[1:]:
        assert decode_slots({"logits": fused, "slot_logits": sl}, how, 0.5).tolist() == \
            [[1, 2, 0, 0], [1, 0, 0, 0]]


def test_unknown_decode_is_refused() -> None:
    with pytest.raises(ValueError, match="slot decode"):
        decode_slots({"logits": FUSED_3, "slot_logits": _slot_logits(SLOTS_3)}, "argmax", 0.5)


def test_config_accepts_the_decodings_and_the_cache_key_keeps_slots_neutral() -> None:
    """eval.slot_decode is validated; at ``slots`` it leaves the run cache key as it was
    without the key, so the runs made before it stay cached."""
    from training.experiments import harness

    cfg = harness.resolve_config("seqfake", ["eval.slot_decode=hybrid_assign"])
    assert cfg["eval"]["slot_decode"] == "hybrid_assign"
    with pytest.raises(Exception):
        harness.resolve_config("seqfake", ["eval.slot_decode=argmax"])
    base = harness.resolve_config("seqfake", ["eval.slot_decode=slots"])
    without = {**base, "eval": {k: v for k, v in base["eval"].items() if k != "slot_decode"}}
    key = harness.config_key(base, method="seqfake", device="cpu")
    assert key == harness.config_key(without, method="seqfake", device="cpu")
    assert key != harness.config_key(cfg, method="seqfake", device="cpu")


def test_redecode_chooses_by_validation() -> None:
    from training.experiments.seqfake_order import choose_decode

    def run(seed: int, epochs: int, pos: float, assign: float, test_pos: float) -> dict:
        return {"model": "slots", "seed": seed, "epochs": epochs, "scores": {
            "val": {"hybrid_position": {"adaptive_acc": pos},
                    "hybrid_assign": {"adaptive_acc": assign}},
            "test": {"hybrid_position": {"adaptive_acc": test_pos},
                     "hybrid_assign": {"adaptive_acc": 0.0}}}}

    # validation prefers position at 9 epochs although test and 3 epochs say otherwise
    scores = [run(0, 9, 0.5, 0.4, 0.0), run(1, 9, 0.5, 0.45, 0.0), run(0, 3, 0.1, 0.9, 0.0)]
    assert choose_decode(scores) == "hybrid_position"


@pytest.mark.parametrize("how", ["hybrid_position",
                                 pytest.param("hybrid_assign", marks=pytest.mark.slow)])
def test_onnx_sequence_agrees_with_torch(tmp_path, how: str) -> None:
    """The exported slots variant's ``sequence`` with a hybrid decoding is the torch one."""
    import numpy as np

    from export.methods.seqfake.views import SlotsOnnx
    from export.onnx_export import export_module, ort_session
    from methods.seqfake import SLOTS_IO
    from models.seqfake import SeqFakeNet

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = SeqFakeNet("resnet18", num_classes=5, dim=16, heads=2, img_size=32,
                       out_indices=(2, 3), order_head="slots").eval()
    view = SlotsOnnx(model, how, 0.42)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 32, 32, generator=g)
    path = tmp_path / "slots.onnx"
    export_module(view, (x,), path, SLOTS_IO.inputs, SLOTS_IO.outputs, SLOTS_IO.dynamic_axes,
                  dynamo_first=False)
    sess = ort_session(path)
    for batch in (torch.randn(4, 3, 32, 32, generator=g), x[:1]):
        got = dict(zip(SLOTS_IO.outputs, sess.run(None, {"image": batch.numpy()})))
        with torch.no_grad():
            out = model(batch)
        # 0.42 splits this untrained model's fused probabilities (0.23-0.69): 3 detected
        ref = decode_slots(out, how, 0.42).numpy()
        assert (ref > 0).sum(1).min() >= 2
        np.testing.assert_array_equal(got["sequence"], ref)
    with pytest.raises(ValueError, match="threshold"):
        SlotsOnnx(model, how)


def test_method_reads_the_configured_decoding_and_records_it() -> None:
    """eval.slot_decode reaches the metrics' sequences (from the logits eval.decode_from
    names) and the checkpoint extra the export reads."""
    import numpy as np

    from training.experiments import harness
    from training.methods import build_method

    cfg = harness.resolve_config("seqfake", ["model.order_head=slots",
                                             "eval.slot_decode=hybrid_position",
                                             "eval.decode_from=patch"])
    method = build_method("seqfake", cfg)
    assert method.extra_state()["slot_decode"] == "hybrid_position"
    res = {"logits": np.full((1, 3), -5.0, np.float32),
           "logits_patch": FUSED_3.numpy(),
           "slot_logits": _slot_logits(SLOTS_3).numpy()}
    assert method.slot_sequences(res, "hybrid_position").tolist() == [[3, 1, 2]]
    assert method.slot_sequences(res, "slots").tolist() == [[3, 0, 0]]


def test_set_agreement_splits_faces_by_equal_sets() -> None:
    """Face 1: same set {1, 2}, slots order right (1.0), hybrid reversed (0.0); face 2:
    sets differ ({3} vs {3, 4}), target 3, 4: slots 1 of 2, hybrid 2 of 2."""
    import numpy as np

    from training.experiments.seqfake_order import set_agreement

    slots = np.array([[1, 2, 0], [3, 0, 0]])
    hybrid = np.array([[2, 1, 0], [3, 4, 0]])
    g = set_agreement(slots, hybrid, [[1, 2], [3, 4]])
    assert g == {"n_same": 1.0, "slots_same": 1.0, "hybrid_same": 0.0,
                 "n_diff": 1.0, "slots_diff": 0.5, "hybrid_diff": 1.0}
