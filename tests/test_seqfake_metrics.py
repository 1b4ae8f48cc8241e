"""Decoding and Seq-DeepFake metrics on hand-computed examples (thesis section 5.4)."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from runtime import sequence

from training.metrics.seqfake import (adaptive_accuracy, decode, exact_set_accuracy,
                                      expected_random_order_accuracy, fixed_accuracy,
                                      multilabel_accuracy, pad, roc_auc, sequence_metrics,
                                      unpad, video_auc)


def test_decode_threshold_and_order():
    probs = np.array([[0.1, 0.9, 0.2, 0.7, 0.6],   # -> eye, lip, hair
                      [0.1, 0.2, 0.3, 0.4, 0.5],   # nothing above 0.5 -> real
                      [0.8, 0.8, 0.0, 0.0, 0.0]])  # tie -> lower id first
    assert decode(probs, 0.5) == [[2, 4, 5], [], [1, 2]]
    assert decode(probs, 0.65) == [[2, 4], [], [1, 2]]


def test_one_decoder_shared_by_evaluation_and_app_without_torch():
    """The evaluation's ``decode`` is runtime.sequence's, and that module imports no torch."""
    import subprocess
    import sys

    assert decode is sequence.decode
    code = ("import sys, runtime.sequence, training.metrics.seqfake; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_decode_hand_worked_cases():
    """Inference (docs/seqfake.md, "Equations"): P_i above threshold, by decreasing P_i.
    "Above" is strict (P_i > threshold), as the evaluation has always decoded: a probability
    exactly at the threshold is not a manipulation."""
    # one sample: P = (0.5, 0.75, 0.25, 0.5000001, 0.9), threshold 0.5
    # above 0.5: index 1 (0.75), 3 (0.5000001), 4 (0.9); index 0 is exactly 0.5 -> out
    # by decreasing P: 4 (0.9), 1 (0.75), 3 (0.5000001) -> 0-based [4, 1, 3], ids [5, 2, 4]
    p = np.array([0.5, 0.75, 0.25, 0.5000001, 0.9])
    assert sequence.decode_sequence(p, 0.5) == [4, 1, 3]
    assert decode(p[None], 0.5) == [[5, 2, 4]]
    # every probability exactly at the threshold -> real
    assert sequence.decode_sequence(np.full(5, 0.25), 0.25) == []
    assert decode(np.full((1, 5), 0.5), 0.5) == [[]]
    # exactly at a non-dyadic threshold (the same float64) is also out
    assert sequence.decode_sequence(np.array([0.3, 0.65, 0.7]), 0.65) == [2]
    # float32 input (what ONNX returns) at a float32 threshold value
    assert sequence.decode_sequence(np.array([0.5, 0.6, 0.4], np.float32), 0.5) == [1]
    # ordering by decreasing probability, not by index, whatever the input order
    assert sequence.decode_sequence(np.array([0.6, 0.7, 0.8, 0.9, 0.95]), 0.5) == [4, 3, 2, 1, 0]
    assert sequence.decode_sequence(np.array([0.95, 0.9, 0.8, 0.7, 0.6]), 0.5) == [0, 1, 2, 3, 4]
    # ties keep component order (lower id first), also inside a longer sequence
    assert sequence.decode_sequence(np.array([0.7, 0.9, 0.7, 0.1, 0.7]), 0.5) == [1, 0, 2, 4]
    assert decode(np.array([[0.7, 0.9, 0.7, 0.1, 0.7]]), 0.5) == [[2, 1, 3, 5]]
    # nothing above threshold -> real ([]), at any threshold
    assert decode(np.array([[0.1, 0.2, 0.3, 0.4, 0.45]]), 0.5) == [[]]
    assert decode(np.array([[0.1, 0.2, 0.3, 0.4, 0.45]]), 0.4) == [[5]]
    # a (1-D) list works for the single-sample decoder
    assert sequence.decode_sequence([0.2, 0.8], 0.5) == [1]


def test_decode_batch_slots_and_padding():
    probs = np.array([[0.1, 0.9, 0.2, 0.7, 0.6],      # ids 2, 4, 5
                      [0.5, 0.5, 0.5, 0.5, 0.5],      # all exactly at 0.5 -> real
                      [0.6, 0.7, 0.8, 0.9, 0.95]])    # all five, reversed order
    got = sequence.decode_batch(probs, 0.5)
    assert got.dtype == np.int64 and got.shape == (3, 5)
    assert got.tolist() == [[2, 4, 5, 0, 0], [0, 0, 0, 0, 0], [5, 4, 3, 2, 1]]
    # fewer slots: keep the most probable components, in order
    assert sequence.decode_batch(probs, 0.5, slots=2).tolist() == [[2, 4], [0, 0], [5, 4]]
    # L = 6 > 5 slots: six above threshold, the least probable (id 1, 0.55) is cut
    six = np.array([[0.55, 0.6, 0.7, 0.8, 0.9, 0.95]])
    assert sequence.decode_batch(six, 0.5).tolist() == [[6, 5, 4, 3, 2]]
    assert decode(six, 0.5) == [[6, 5, 4, 3, 2, 1]]
    # padded output round-trips through the label helpers
    assert [unpad(r) for r in got.tolist()] == decode(probs, 0.5)
    assert [pad(s) for s in decode(probs, 0.5)] == got.tolist()


def test_pad_unpad():
    assert pad([1, 2]) == [1, 2, 0, 0, 0]
    assert unpad([1, 2, 0, 0, 0]) == [1, 2]
    assert unpad([0, 0, 0, 0, 0]) == []


def test_fixed_and_adaptive_hand_examples():
    targets = [[], [], [1, 2], [3, 1, 4], [5]]
    preds = [[], [2], [1, 2], [3, 4], [5, 1, 2]]
    # fixed: per slot over 5 slots
    # s0: [0]*5 vs [0]*5 -> 5;  s1: [2,0,0,0,0] vs 0s -> 4;  s2: exact -> 5
    # s3: [3,4,0,0,0] vs [3,1,4,0,0] -> slot0 ok, slot1 no, slot2 no, 0,0 ok -> 3
    # s4: [5,1,2,0,0] vs [5,0,0,0,0] -> slot0, slot3, slot4 -> 3
    assert fixed_accuracy(preds, targets) == pytest.approx((5 + 4 + 5 + 3 + 3) / 25)
    # adaptive: real->real counts 1/1; s1: max(0,1)=1, 0 correct; s2: 2/2; s3: max(3,2)=3,
    # 1 correct; s4: max(1,3)=3, 1 correct -> (1+0+2+1+1)/(1+1+2+3+3)
    assert adaptive_accuracy(preds, targets) == pytest.approx(5 / 10)


def test_adaptive_all_real_predicted_real_is_one():
    assert adaptive_accuracy([[], []], [[], []]) == 1.0
    assert fixed_accuracy([[], []], [[], []]) == 1.0
    assert adaptive_accuracy([[1]], [[]]) == 0.0


def test_accepts_padded_labels():
    assert fixed_accuracy([[1, 2, 0, 0, 0]], [[1, 2]]) == 1.0
    assert adaptive_accuracy([[1, 2]], [[1, 2, 0, 0, 0]]) == 1.0


def test_mismatched_lengths_raise():
    with pytest.raises(ValueError):
        fixed_accuracy([[1]], [[1], [2]])


def test_multilabel_and_exact_set():
    targets, preds = [[1, 2], [], [3]], [[2, 1], [4], [3, 5]]
    # s0: all 5 right; s1: label 4 wrong -> 4; s2: 5 wrong -> 4
    assert multilabel_accuracy(preds, targets) == pytest.approx(13 / 15)
    assert exact_set_accuracy(preds, targets) == pytest.approx(1 / 3)


def test_random_order_expectation_matches_enumeration():
    targets = [[], [1, 2], [3, 1, 4], [5], [2, 3]]
    preds = [[], [2, 1], [4, 3, 1], [5, 1, 2], []]
    fx_sum, ad_sum = 0.0, 0.0
    perms = [list(itertools.permutations(p)) for p in preds]
    combos = list(itertools.product(*perms))
    for combo in combos:
        fx_sum += fixed_accuracy([list(c) for c in combo], targets)
        ad_sum += adaptive_accuracy([list(c) for c in combo], targets)
    fx, ad = expected_random_order_accuracy(preds, targets)
    assert fx == pytest.approx(fx_sum / len(combos))
    # adaptive's denominator does not depend on the order, so its expectation is exact too
    assert ad == pytest.approx(ad_sum / len(combos))


def test_roc_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    s = rng.integers(0, 5, 50).astype(float)
    y = rng.integers(0, 2, 50)
    assert roc_auc(s, y) == pytest.approx(roc_auc_score(y, s))
    assert np.isnan(roc_auc([0.1, 0.2], [1, 1]))


def test_video_auc_averages_frames():
    scores = [0.9, 0.1, 0.2, 0.3, 0.8, 0.7]
    labels = [1, 1, 0, 0, 1, 0]
    vids = ["a", "a", "b", "b", "c", "d"]
    # per video: a=0.5 (1), b=0.25 (0), c=0.8 (1), d=0.7 (0) -> pairs (a>b), (a<d), (c>b), (c>d)
    assert video_auc(scores, labels, vids) == pytest.approx(3 / 4)
    with pytest.raises(ValueError):
        video_auc([0.1, 0.2], [0, 1], ["x", "x"])


def test_sequence_metrics_perfect_prediction():
    targets = [[2, 4], [], [1, 3, 5, 2, 4]]
    probs = np.array([[0.1, 0.9, 0.1, 0.8, 0.1], [0.1] * 5, [0.9, 0.6, 0.8, 0.55, 0.7]])
    m = sequence_metrics(probs, targets)
    assert m["fixed_acc"] == m["adaptive_acc"] == m["multilabel_acc"] == m["exact_set_acc"] == 1.0
    assert m["random_order_adaptive_acc"] < 1.0
    assert m["auc_max_prob"] == 1.0
