"""Whether an answer is a finding: no confident verdict without a basis.

A model's answer counts as a finding only when the model's domain check
(:mod:`runtime.domain`) measured the input in domain. Otherwise the answer's headline says
why there is no reliable verdict, its finding field (``verdict`` of a face, ``label`` of
the classifier, ``answer`` of a bag query, ``vote_label`` of a retrieval batch row) reads
:data:`UNRELIABLE`, and the model's own output stays in ``raw_<field>``, marked as such:

- ``in_domain``: the check measured the input in domain; the answer is the finding.
- ``out_of_domain``: the check measured it out of domain; headline
  ``no reliable verdict: this face is unlike the data this model was trained on``.
- ``no_domain_check``: the model was exported without a check (no ``domain`` in its
  manifest entry), so nothing measured whether the input is like its training data; the
  answer is not a finding either (headline ``no domain check for this model: ...``).

Pure Python (the case report uses it too).
"""
from __future__ import annotations

from typing import Any, Mapping

IN_DOMAIN = "in_domain"
OUT_OF_DOMAIN = "out_of_domain"
NO_DOMAIN_CHECK = "no_domain_check"
UNRELIABLE = "unreliable"  # the finding field of an answer that is no finding
# the batch rows' columns that hold a row's finding (the model's own value: raw_<column>)
FINDING_COLUMNS = ("verdict", "class", "vote_label")
RAW_MARK = "the model's raw output (unreliable, not a finding)"


def reliability(domain: Mapping[str, Any] | None) -> str:
    """:data:`IN_DOMAIN`, :data:`OUT_OF_DOMAIN` or :data:`NO_DOMAIN_CHECK` for an answer's
    domain check (its ``domain`` field; None or no ``in_domain``: the model has none)."""
    if not isinstance(domain, Mapping) or "in_domain" not in domain:
        return NO_DOMAIN_CHECK
    return IN_DOMAIN if domain["in_domain"] else OUT_OF_DOMAIN


def unreliable_headline(state: str, subject: str = "this image") -> str:
    """The headline of an answer that is no finding; ``subject``: what was asked about
    ("this face", "this image", "this bag")."""
    if state == OUT_OF_DOMAIN:
        return f"no reliable verdict: {subject} is unlike the data this model was trained on"
    return (f"no domain check for this model: nothing measured whether {subject} is like "
            f"the data it was trained on, so its answer is not a finding")


def mark(report: dict[str, Any], field: str | None, subject: str, finding: str
         ) -> dict[str, Any]:
    """``report`` with its reliability: ``headline``, ``reliable`` and ``reliability``
    first, ``field`` set to :data:`UNRELIABLE` unless the input was measured in domain, and
    the model's own value of ``field`` in ``raw_<field>`` right after it.

    Args:
        report: the answer, with its ``domain`` check (None: the model has none).
        field: the answer's finding field ("verdict", "label", "answer"); None: the answer
            has none (retrieval's neighbours), only the headline and reliability are set.
        subject: what was asked about, for the headline ("this face", "this image").
        finding: the headline of the answer when it is a finding ("MANIPULATED (...)").
    """
    state = reliability(report.get("domain"))
    ok = state == IN_DOMAIN
    out: dict[str, Any] = {"headline": finding if ok else unreliable_headline(state, subject),
                           "reliable": ok, "reliability": state}
    for key, value in report.items():
        out[key] = value if key != field or ok else UNRELIABLE
        if key == field:
            out[f"raw_{field}"] = value
    return out


def face_finding(verdict: str, fake_probability: float) -> str:
    """A face answer's finding as its headline: ``MANIPULATED (fake probability 0.873)``."""
    return f"{verdict.upper()} (fake probability {fake_probability:.3f})"
