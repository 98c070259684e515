"""The articles' conclusions as data (conf/claims/<study>.yaml), each judged from confidence intervals.

A claim compares *terms*; d = test acc(left) - test acc(right) per pair, with its interval [low, high] at the
selection's confidence (95%, or the Bonferroni level of a study that looks at its claims several times):

    kind      claim                    supported            contradicted          (margin m; default)
    greater   left > right by > m      low > m              high < m              (0)
    less      left < right by > m      high < -m            low > -m              (0)
    approx    |left - right| <= m      -m < low, high < m   low > m or high < -m  (the file's margin)
    at_least  left >= right - m        low > -m             high < -m             (the file's margin)
    order     tiers[0] > tiers[1] > ...: `relation` (greater or at_least) between adjacent tiers

Everything else is inconclusive. A claim is supported when every pair is, contradicted when any pair is.
`approx` without `right` compares every pair within `left`.

A term is a scientific value's name ("allconv5"), a group name from `groups:`, a mapping
`{key: value, ...}` selecting every value that matches its scientific keys and pinning its nuisance keys
(`{sched: fixed, optim.lr: 0.001}` is fixed at LR 0.001, not at the LR chosen on val), or
`{best_of: [terms]}`: the one of them with the best val mean (a tuned choice, e.g. "a tuned SGD").
"""

from dataclasses import dataclass, field

import numpy as np

from ablate.analysis.selection import Arm, Selection
from ablate.analysis.stats import CONFIDENCE, Interval, diff_ci
from ablate.analysis.study import fmt, same
from ablate.errors import ConfigError

KINDS = ("greater", "less", "approx", "at_least", "order")
RELATIONS = ("greater", "at_least")
SUPPORTED, CONTRADICTED, INCONCLUSIVE = "supported", "contradicted", "inconclusive"
# Groups may name groups; deeper than this is a cycle.
MAX_NESTING = 10


@dataclass(frozen=True)
class Claim:
    id: str
    text: str
    kind: str
    left: tuple = ()
    right: tuple = ()
    tiers: tuple = ()
    relation: str = "greater"
    margin: float | None = None  # None: the kind's default
    source: str = ""  # where the articles saw it (GHIM-10K, Places20)


@dataclass(frozen=True)
class Missing:
    """A term that names nothing measured; its comparisons are inconclusive."""

    label: str
    reason: str


@dataclass(frozen=True)
class Comparison:
    left: str
    right: str
    kind: str
    diff: Interval | None  # None when a side has no results
    verdict: str
    note: str = ""
    # The two sides (Arm or Missing): adaptive seeds go to the arms of the comparisons still open.
    arms: tuple = field(default=(), compare=False, repr=False)


@dataclass(frozen=True)
class Verdict:
    claim: Claim
    verdict: str
    margin: float
    comparisons: tuple[Comparison, ...]


def parse_claims(raw_claims, where: str) -> list[Claim]:
    """Validate the claims of one file; a bad entry is one line naming it and the fix."""
    claims, ids = [], set()
    for i, raw in enumerate(raw_claims or ()):
        at = f"{where} claims[{i}]"
        if not isinstance(raw, dict):
            raise ConfigError(f"{at}={raw}: a claim is a mapping; write {{id, text, kind, left, right}}")
        kind = raw.get("kind")
        if kind not in KINDS:
            raise ConfigError(f"{at}.kind={kind}: unknown kind; use one of {', '.join(KINDS)}")
        claim_id = str(raw.get("id", f"claim{i}"))
        if claim_id in ids:
            raise ConfigError(f"{at}.id={claim_id}: used twice; give every claim its own id")
        ids.add(claim_id)
        margin = raw.get("margin")
        if margin is not None and (not isinstance(margin, (int, float)) or margin < 0):
            raise ConfigError(f"{at}.margin={margin}: not a non-negative number; write e.g. margin: 0.02 (2 points)")
        if kind == "order":
            tiers = raw.get("tiers") or ()
            if len(tiers) < 2 or not all(isinstance(t, list) and t for t in tiers):
                raise ConfigError(f"{at}.tiers={tiers}: an order needs two or more non-empty lists of terms")
            relation = raw.get("relation", "greater")
            if relation not in RELATIONS:
                raise ConfigError(f"{at}.relation={relation}: unknown; use one of {', '.join(RELATIONS)}")
        else:
            tiers, relation = (), "greater"
            if not raw.get("left"):
                raise ConfigError(f"{at}.left: missing; name the terms on the left of the comparison")
            if kind != "approx" and not raw.get("right"):
                raise ConfigError(f"{at}.right: missing; name the terms that {kind} compares the left with")
        claims.append(
            Claim(
                id=claim_id,
                text=str(raw.get("text", claim_id)),
                kind=kind,
                left=tuple(_as_list(raw.get("left"))),
                right=tuple(_as_list(raw.get("right"))),
                tiers=tuple(tuple(_as_list(t)) for t in tiers),
                relation=relation,
                margin=None if margin is None else float(margin),
                source=str(raw.get("source", "")),
            )
        )
    return claims


def judge(claim: Claim, selection: Selection) -> Verdict:
    """Expand the claim's terms into arms, compare every pair it states, and combine the pairs' verdicts."""
    margin = claim.margin
    if margin is None:
        # Equivalence needs a declared margin; a difference in direction needs none.
        kind = claim.relation if claim.kind == "order" else claim.kind
        margin = selection.study.margin if kind in ("approx", "at_least") else 0.0

    def expand(terms):
        return [arm for term in terms for arm in expand_term(term, selection)]

    if claim.kind == "order":
        tiers = [expand(tier) for tier in claim.tiers]
        pairs = [(a, b, claim.relation) for upper, lower in zip(tiers, tiers[1:]) for a in upper for b in lower]
    elif claim.kind == "approx" and not claim.right:
        left = expand(claim.left)
        pairs = [(a, b, "approx") for i, a in enumerate(left) for b in left[i + 1 :]]
    else:
        pairs = [(a, b, claim.kind) for a in expand(claim.left) for b in expand(claim.right)]
    comparisons = tuple(compare(a, b, kind, margin, selection.method, selection.confidence) for a, b, kind in pairs)
    return Verdict(
        claim=claim, verdict=combine([c.verdict for c in comparisons]), margin=margin, comparisons=comparisons
    )


def compare(a, b, kind: str, margin: float, method: str, confidence: float = CONFIDENCE) -> Comparison:
    if isinstance(a, Missing) or isinstance(b, Missing):
        missing = a if isinstance(a, Missing) else b
        return Comparison(a.label, b.label, kind, None, INCONCLUSIVE, f"{missing.label}: {missing.reason}", (a, b))
    if a is b:
        return Comparison(a.label, b.label, kind, None, INCONCLUSIVE, "the same arm on both sides", (a, b))
    diff = diff_ci(a.claim_accs, b.claim_accs, method, confidence)
    untrained = [arm for arm in (a, b) if arm.at_chance]
    if untrained:
        # Two nets that both guess are "equal", and one that guesses is "worse": neither says anything about the claim.
        why = (
            "a seed left it and fell back (an unstable setting)"
            if all(arm.collapsed for arm in untrained)
            else "the budget did not train " + ("them" if len(untrained) > 1 else "it")
        )
        return Comparison(
            a.label,
            b.label,
            kind,
            diff,
            INCONCLUSIVE,
            f"{' and '.join(arm.label for arm in untrained)} at chance: {why}",
            (a, b),
        )
    note = "" if diff.bounded else "fewer than two seeds on a side: no interval"
    return Comparison(a.label, b.label, kind, diff, pair_verdict(kind, diff, margin), note, (a, b))


# Each pairwise kind's rule as two facts: where its boundaries lie (an interval of left - right that holds one is
# inconclusive) and which side of them supports the claim. pair_verdict judges an interval by them and
# stats.resolve_chance asks how likely an interval is to clear them, so the two cannot disagree.
RULES = {
    "greater": (lambda m: (m,), lambda d, m: d > m),
    "less": (lambda m: (-m,), lambda d, m: d < -m),
    "approx": (lambda m: (-m, m), lambda d, m: -m < d < m),
    "at_least": (lambda m: (-m,), lambda d, m: d > -m),
}


def _rule(kind: str):
    if kind not in RULES:
        raise ValueError(f"no pairwise rule for kind {kind!r}")
    return RULES[kind]


def pair_verdict(kind: str, diff: Interval, margin: float) -> str:
    """The table in this module's docstring, for one interval of left - right."""
    edges, supports = _rule(kind)
    low, high = diff.low, diff.high
    if not low <= high or any(low <= edge <= high for edge in edges(margin)):
        return INCONCLUSIVE  # a NaN bound is no interval at all
    # Clear of every boundary, the whole interval lies on one side: its low end says which.
    return SUPPORTED if supports(low, margin) else CONTRADICTED


def boundaries(kind: str, margin: float) -> tuple[float, ...]:
    """The thresholds of pair_verdict's rule for `kind`: an interval of left - right that holds none of them
    resolves the comparison (supported or contradicted), one that holds any leaves it inconclusive."""
    return _rule(kind)[0](margin)


def combine(verdicts) -> str:
    if not verdicts:
        return INCONCLUSIVE
    if CONTRADICTED in verdicts:
        return CONTRADICTED
    if all(v == SUPPORTED for v in verdicts):
        return SUPPORTED
    return INCONCLUSIVE


def expand_term(term, selection: Selection, nesting: int = 0) -> list:
    """A term as the arms it names (Missing where it names nothing measured)."""
    study = selection.study
    if nesting > MAX_NESTING:
        raise ConfigError(f"claims group {term}: groups nest too deep (a cycle?); make groups name values")
    if isinstance(term, str) and term in study.groups:
        return [arm for t in _as_list(study.groups[term]) for arm in expand_term(t, selection, nesting + 1)]
    if isinstance(term, dict) and set(term) == {"best_of"}:
        options = [a for t in _as_list(term["best_of"]) for a in expand_term(t, selection, nesting + 1)]
        measured = [a for a in options if isinstance(a, Arm) and np.isfinite(a.val.mean)]
        if not measured:
            return [Missing(describe(term), "none of its options has results")]
        return [max(measured, key=lambda a: a.val.mean)]
    if isinstance(term, dict):
        return _select(term, selection)
    named = [arm for arm in selection.arms if arm.label == str(term)]
    if named:
        return [_checked(arm, str(term)) for arm in named]
    if len(study.scientific) == 1:
        return _select({study.scientific[0]: term}, selection, name=fmt(term))
    return [Missing(str(term), "no scientific value or group of this name")]


def pinned_selectors(claims: list[Claim], groups: dict, nuisance) -> list[dict]:
    """The terms of `claims` that pin a nuisance value ({sched: fixed, optim.lr: 0.001}), groups expanded: the
    settings these claims compare whatever val would choose, which successive halving must therefore keep."""
    found: list[dict] = []

    def walk(term, nesting: int = 0) -> None:
        if nesting > MAX_NESTING:
            raise ConfigError(f"claims group {term}: groups nest too deep (a cycle?); make groups name values")
        if isinstance(term, str) and term in groups:
            for t in _as_list(groups[term]):
                walk(t, nesting + 1)
        elif isinstance(term, dict) and set(term) == {"best_of"}:
            for t in _as_list(term["best_of"]):
                walk(t, nesting + 1)
        elif isinstance(term, dict) and any(k in nuisance for k in term) and term not in found:
            found.append(dict(term))

    for claim in claims:
        for term in [*claim.left, *claim.right, *(t for tier in claim.tiers for t in tier)]:
            walk(term)
    return found


def describe(term) -> str:
    if isinstance(term, dict) and set(term) == {"best_of"}:
        return "best of (" + "; ".join(describe(t) for t in _as_list(term["best_of"])) + ")"
    if isinstance(term, dict):
        return ", ".join(f"{k}={fmt(v)}" for k, v in term.items())
    return fmt(term)


def _select(selector: dict, selection: Selection, name: str | None = None) -> list:
    study = selection.study
    name = name or describe(selector)
    unknown = [k for k in selector if k not in study.scientific and k not in study.nuisance]
    if unknown:
        return [Missing(name, f"{', '.join(unknown)} is not an axis of study {study.name}")]
    scientific = {k: v for k, v in selector.items() if k in study.scientific}
    pinned = {k: v for k, v in selector.items() if k in study.nuisance}
    matches = [arm for arm in selection.arms if all(same(arm.values[k], v) for k, v in scientific.items())]
    if not matches:
        return [Missing(name, "no runs of this value")]
    if pinned:
        matches = [
            selection.arm(arm.values, {**arm.setting, **_typed(pinned, arm.setting)}, pinned=True) for arm in matches
        ]
    return [_checked(arm, name) for arm in matches]


def _typed(pinned: dict, setting: dict) -> dict:
    """Pinned values from YAML, spelled as the table spells them (so 0.01 finds 0.01 and the label reads alike)."""
    return {k: (setting[k] if same(setting.get(k), v) else v) for k, v in pinned.items()}


def _checked(arm: Arm, name: str):
    if arm.seeds == 0:
        return Missing(arm.label if arm.label else name, "no completed runs")
    return arm


def _as_list(value) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]
