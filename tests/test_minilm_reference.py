"""runtime/minilm.py against sentence-transformers' own output on the same shipped model.

tests/data/minilm/reference.json holds the tokens and sentence vectors that the reference
implementation (sentence-transformers + Hugging Face tokenizers, run outside the project by
tests/data/minilm/make_reference.py) gives for words and phrases chosen to exercise the
tokenizer: accents, capitals, punctuation, digits and WordPiece splits.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from runtime import minilm

REFERENCE = json.loads((Path(__file__).parent / "data" / "minilm" / "reference.json").read_text())


@pytest.fixture(scope="module")
def vectors() -> minilm.MiniLMVectors:
    try:
        minilm.default_root()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    return minilm.MiniLMVectors()


def test_tokens_match_the_reference_tokenizer(vectors: minilm.MiniLMVectors) -> None:
    for query, expected in zip(REFERENCE["queries"], REFERENCE["tokens"]):
        assert vectors.tokens(query) == expected, query


def test_vectors_match_sentence_transformers(vectors: minilm.MiniLMVectors) -> None:
    got = vectors.lookup_many(REFERENCE["queries"])
    ref = np.asarray(REFERENCE["vectors"], dtype=np.float64)
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, atol=2e-6)
    # a near miss would still be close in cosine: every query must be nearest its own reference
    cos = (got / np.linalg.norm(got, axis=1, keepdims=True)) @ ref.T
    assert (cos.argmax(1) == np.arange(len(ref))).all()
