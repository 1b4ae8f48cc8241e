"""The parallel slot order head (model.order_head=slots; docs/seqfake.md, "Parallel order
head"): its per-slot cross-entropy and its decoding on hand-worked cases, its target order,
its export and how the variant is named."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from export.methods.seqfake.views import SlotsOnnx
from methods.seqfake import SLOTS_IO, variant_of
from models.seqfake import SeqFakeNet, slot_sequence
from training.losses.seqfake import slot_loss, total_loss

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _ce(logits: list[float], target: int) -> float:
    """Cross-entropy of one slot, written out: log(sum exp) - logit[target]."""
    return math.log(sum(math.exp(v) for v in logits)) - logits[target]


def test_slot_loss_hand_worked():
    # 2 slots, 3 classes (0 = end, components 1 and 2); target sequence "2 then end"
    logits = [[[1.0, 2.0, 0.0], [0.0, 0.0, 3.0]]]
    # slot 1: log(e + e^2 + 1) - 0 = 2.4076; slot 2: log(1 + 1 + e^3) - 0 = 3.0949
    expected = (_ce(logits[0][0], 2) + _ce(logits[0][1], 0)) / 2
    assert expected == pytest.approx((2.40760596 + 3.09492362) / 2, abs=1e-6)
    got = slot_loss(torch.tensor(logits), torch.tensor([[2, 0]]))
    assert got.shape == (1,)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_slot_loss_per_sample_and_ordered():
    # two samples with the same logits, targets in opposite orders: each slot is scored
    # against its own step, so the order changes the loss
    logits = torch.tensor([[[0.0, 4.0, 0.0], [0.0, 0.0, 4.0]]] * 2)
    got = slot_loss(logits, torch.tensor([[1, 2], [2, 1]]))
    right = _ce([0.0, 4.0, 0.0], 1)        # both slots predict their step's component
    wrong = _ce([0.0, 4.0, 0.0], 2)        # both slots predict the other step's
    assert got.tolist() == pytest.approx([right, wrong], rel=1e-6)
    assert got[0] < got[1]


def test_total_loss_adds_the_slot_term_on_the_label_order():
    torch.manual_seed(0)
    b, num = 2, 5
    out = {k: torch.randn(b, num) for k in ("logits", "logits_patch", "logits_cls")}
    out["u"] = torch.sort(torch.rand(b, 6), dim=1).values
    out["slot_logits"] = torch.randn(b, 5, num + 1)
    seq = torch.tensor([[4, 2, 0, 0, 0], [1, 3, 5, 0, 0]])
    ks = torch.tensor([1, 3])
    without = total_loss({k: v for k, v in out.items() if k != "slot_logits"}, seq, ks)[0]
    total, logs = total_loss(out, seq, ks, weights={"slots": 0.5})
    expected = slot_loss(out["slot_logits"], seq).mean()
    assert logs["loss_slots"] == pytest.approx(float(expected), rel=1e-6)
    assert float(total - without) == pytest.approx(0.5 * float(expected), rel=1e-5)
    # the targets are the sequence in manipulation order, step s at slot s
    assert logs["loss_slots"] != pytest.approx(float(slot_loss(out["slot_logits"],
                                                               seq.flip(1)).mean()))
    off = total_loss(out, seq, ks, weights={"slots": 0.0})[1]
    assert "loss_slots" not in off


@pytest.mark.parametrize("tokens, expected", [
    ([2, 0, 1, 3, 0], [2, 0, 0, 0, 0]),     # end in the middle: what follows is dropped
    ([0, 0, 0, 0, 0], [0, 0, 0, 0, 0]),     # all end: a real face
    ([0, 4, 1, 2, 3], [0, 0, 0, 0, 0]),     # end first: nothing after it counts
    ([3, 1, 5, 2, 4], [3, 1, 5, 2, 4]),     # no end: every slot is a step
    ([1, 1, 2, 0, 0], [1, 1, 2, 0, 0]),     # a repeated component is kept as predicted
])
def test_slot_sequence_hand_worked(tokens, expected):
    logits = torch.full((1, 5, 6), -1.0)
    for s, t in enumerate(tokens):
        logits[0, s, t] = 2.0
    assert slot_sequence(logits).tolist() == [expected]


def _tiny(order_head: str = "slots", slot_memory: str = "encoded") -> SeqFakeNet:
    torch.manual_seed(0)
    return SeqFakeNet("resnet18", num_classes=5, dim=16, heads=2, img_size=32,
                      out_indices=(2, 3), order_head=order_head,
                      slot_memory=slot_memory).eval()


@pytest.mark.parametrize("memory", ["encoded", "encoded_raw"])
def test_model_outputs_and_rank_default(memory):
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = _tiny(slot_memory=memory)(x)
        plain = _tiny("rank", memory)(x)
    assert out["slot_logits"].shape == (2, 5, 6) and out["sequence"].dtype == torch.long
    assert torch.equal(out["sequence"], slot_sequence(out["slot_logits"]))
    assert "slot_logits" not in plain and "sequence" not in plain
    with pytest.raises(ValueError, match="order_head"):
        SeqFakeNet("resnet18", order_head="ranked")
    with pytest.raises(ValueError, match="slot_memory"):
        SeqFakeNet("resnet18", order_head="slots", slot_memory="raw")


def test_variant_and_decoder_name():
    from app.services.face import decoder_kind

    assert variant_of({"arch": "seqfake", "task": "components", "order_head": "slots"}) == "slots"
    assert variant_of({"arch": "seqfake", "task": "components", "order_head": "rank"}) == "thesis"
    assert variant_of({"arch": "seqfakeformer", "order_head": "autoregressive"}) == "seqfakeformer"
    assert decoder_kind({"order_head": "slots"}, True) == "slots"
    assert decoder_kind({"order_head": "rank"}, False) == "probability-ranked"
    assert decoder_kind({}, True) == "autoregressive"


def test_onnx_export_agrees_with_torch(tmp_path):
    from export.onnx_export import export_module, ort_session

    view = SlotsOnnx(_tiny())
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 32, 32, generator=g)
    path = tmp_path / "slots.onnx"
    export_module(view, (x,), path, SLOTS_IO.inputs, SLOTS_IO.outputs, SLOTS_IO.dynamic_axes,
                  dynamo_first=False)
    sess = ort_session(path)
    for batch in (torch.randn(3, 3, 32, 32, generator=g), x[:1]):
        got = dict(zip(SLOTS_IO.outputs, sess.run(None, {"image": batch.numpy()})))
        with torch.no_grad():
            ref = dict(zip(SLOTS_IO.outputs, view(batch)))
        assert got["sequence"].dtype == np.int64
        np.testing.assert_array_equal(got["sequence"], ref["sequence"].numpy())
        np.testing.assert_allclose(got["step_probs"], ref["step_probs"].numpy(), atol=1e-5)
        np.testing.assert_allclose(got["probs"], ref["probs"].numpy(), atol=1e-5)


def test_trains_and_records_the_order_head(tmp_path):
    """A slots run on a tiny Seq-DeepFake fixture: its checkpoint says which order head it
    has, and its metrics are the slot sequences' (the ranking's beside them)."""
    from tests.test_seqfake_data import write_fixture
    from tests.test_seqfake_method import FAST
    from training.__main__ import main

    root = write_fixture(tmp_path / "seqdf")
    assert main(["seqfake", "--data", str(root), "--artifacts", str(tmp_path),
                 "--set", "model.order_head=slots", *FAST]) == 0
    ck = torch.load(tmp_path / "runs" / "seqfake" / "checkpoint.pt", weights_only=True)
    assert ck["extra"]["order_head"] == "slots" and variant_of(ck["extra"]) == "slots"
    assert ck["model_spec"]["kwargs"]["order_head"] == "slots"
    assert {"fixed_acc", "adaptive_acc", "rank_fixed_acc", "rank_adaptive_acc"} <= set(ck["metrics"])
