"""Bag-query tab: does this bag of images hold what the query word names?"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

from runtime import calibration, domain
from runtime.engine import Engine
from app.inputs import InputError, clean_query, display_rgb, load_bag
from app.results import check
from app.services import reliability
from app.viz import attention_tile

METHOD = "qmil"  # the method whose models this service runs


@functools.lru_cache(maxsize=2)
def word_vectors(package: str | None = None):
    """The word vectors a model was trained with (its manifest's ``extra.word_vectors``, the
    package name; None: GloVe), loaded once."""
    from runtime.words import vectors

    return vectors(package)


def query_vector(word: str, package: str | None = None) -> np.ndarray:
    """The query's word vector (D,) from ``package``'s vectors (None: GloVe); unknown words
    raise InputError with suggestions."""
    from runtime.words import EmptyQueryError, UnknownWordError

    try:
        return np.asarray(word_vectors(package).lookup(word), dtype=np.float32)
    except (UnknownWordError, EmptyQueryError) as exc:
        raise InputError(str(exc)) from exc


@dataclass
class BagResult:
    report: dict[str, Any]
    tiles: list[tuple[np.ndarray, str]]  # instances ordered by attention, with captions


MODEL = "qmil"  # the served model (the method's first default run)
ZERO_SHOT_WARNING = (
    "Answers to words outside the training queries were close to chance when measured for "
    "the default model (reports/qmil_synonyms.md: synonyms of trained classes 0.57, held-out "
    "class names 0.52, unrelated words 0.49 bag accuracy); treat this answer as a guess.")


def _zero_shot_hint(q: np.ndarray, extra: dict) -> dict:
    """For a word that was not a training query: the closest training queries (cosine of the
    unit word vectors, q (D,)) and the measured reliability warning."""
    vectors = extra.get("query_vectors", {})
    seen = [c for c in extra.get("seen_classes", []) if c in vectors]
    sims = sorted(((float(np.dot(q, np.asarray(vectors[c], np.float32))), c) for c in seen),
                  reverse=True)
    return {"closest_training_queries": [{"query": c, "cosine": round(s, 3)} for s, c in sims[:3]],
            "warning": ZERO_SHOT_WARNING}


def query_bag(engine: Engine, sources: list[Any] | None, word: Any,
              images: list[np.ndarray] | None = None, model_name: str = MODEL) -> BagResult:
    """Ask whether a bag holds the class that ``word`` names.

    Args:
        sources: uploads (paths/bytes/arrays); or pass decoded RGB ``images`` directly
            (e.g. video frames).
        word: the query word, seen in training or not (zero-shot).
        model_name: a qMIL model of the manifest (default: the method's first default run).
    """
    word = clean_query(word)
    if images is None:
        images = load_bag(sources)
    elif not images:
        raise InputError("The bag is empty: upload at least one image (or a video).")
    model = engine.get(model_name or MODEL, METHOD)
    extra = model.entry.get("extra", {})
    max_bag = int(extra.get("max_bag_serving", 64))
    if len(images) > max_bag:
        raise InputError(f"The bag has {len(images)} images; the limit is {max_bag}.")
    q = query_vector(word, extra.get("word_vectors"))
    x = model.prepare(images)[None]                       # (1, K, C, H, W)
    mask = np.ones((1, len(images)), dtype=np.float32)
    out = model.run({"images": x, "mask": mask, "query": q[None]})
    probs, temperature = calibration.apply(model.entry, out, "prob")
    prob = float(probs[0])
    beta = out["beta"][0].astype(float)
    inst = model.domain_check(out, x)  # one answer per image of the bag, or None
    bag_dom = (domain.bag_check(inst, float(model.entry["domain"]["bag_min_in_domain"]))
               if inst else None)
    order = np.argsort(-beta, kind="stable")
    seen = [c.lower() for c in extra.get("seen_classes", [])]
    kind = "seen in training" if word in seen else "zero-shot (not a training query)"
    answer = "yes" if prob >= 0.5 else "no"
    report = reliability.mark({
        "model": model.name, "model_version": model.version, "provider": model.provider,
        "query": word, "query_kind": kind,
        **({} if word in seen else _zero_shot_hint(q, extra)),
        "answer": answer, "probability": round(prob, 4),
        "temperature": temperature,
        "bag_size": len(images),
        "domain": bag_dom,
        "attention": [{"instance": int(i) + 1, "beta": round(float(beta[i]), 4),
                       **({"in_domain": inst[i]["in_domain"], "domain_score": inst[i]["score"]}
                          if inst else {})} for i in order],
        "top_instance": int(order[0]) + 1,
    }, "answer", "this bag", f"{answer.upper()}: P(bag holds '{word}') = {round(prob, 4):.3f}")
    tiles = [(attention_tile(display_rgb(images[i]), beta[i], beta.max(), top=(r == 0)),
              f"#{i + 1}  beta={beta[i]:.3f}"
              + ("" if not inst or inst[i]["in_domain"] else "  (out of domain)"))
             for r, i in enumerate(order)]
    return BagResult(check("query", report), tiles)
