"""Query word vectors: normalisation, multi-word names, the OOV and empty-query paths."""
from __future__ import annotations

import numpy as np
import pytest

from runtime.words import (EmptyQueryError, UnknownWordError, get_word_vectors, normalize_text,
                          split_words)
from training.data.fashion_mnist import CLASS_NAMES


@pytest.fixture(scope="module")
def wv():
    return get_word_vectors()


def test_normalisation_is_consistent(wv):
    assert normalize_text("  Ankle   BOOT ") == "ankle boot"
    assert split_words("ankle_boot") == split_words("Ankle-Boot") == ["ankle", "boot"]
    np.testing.assert_array_equal(wv.lookup(" Sneaker "), wv.lookup("sneaker"))
    np.testing.assert_array_equal(wv.lookup("ankle boot"), wv.lookup("Ankle_Boot"))


def test_whole_token_first_then_average(wv):
    assert wv.tokens("T-Shirt") == ["t-shirt"]          # one GloVe token
    assert wv.tokens("t shirt") == ["t-shirt"]          # separators -> hyphen, whole token
    assert wv.tokens("ankle boot") == ["ankle", "boot"]
    raw = wv._emb[[wv._index["ankle"], wv._index["boot"]]].astype(np.float32).mean(0)
    np.testing.assert_allclose(wv.lookup("ankle boot"), raw / np.linalg.norm(raw), rtol=1e-6)


def test_every_class_name_has_a_unit_vector(wv):
    vecs = wv.lookup_many(CLASS_NAMES)
    assert vecs.shape == (10, 50) and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, rtol=1e-5)
    assert len({v.tobytes() for v in vecs}) == 10


def test_unknown_word_names_close_known_words(wv):
    with pytest.raises(UnknownWordError) as e:
        wv.lookup("snekaer")
    assert "sneaker" in e.value.suggestions and "sneaker" in str(e.value)
    with pytest.raises(UnknownWordError) as e:
        wv.lookup("ankle bootz")
    assert e.value.word == "bootz" and "boot" in e.value.suggestions


@pytest.mark.parametrize("q", ["", "   ", " - _ "])
def test_empty_query(wv, q):
    with pytest.raises(EmptyQueryError):
        wv.lookup(q)
