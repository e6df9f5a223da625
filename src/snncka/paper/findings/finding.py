"""What a finding is: the four verdicts, the thresholds each claim is judged against (derived from the claim's
wording and the paper's own numbers), the settings each claim is about, and the ``Finding`` record every
predicate returns and ``findings.json`` holds."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["FAILS", "HOLDS", "OUT_OF_SCOPE", "SHORT", "THRESHOLDS", "UNCERTAIN", "UNMEASURED",
           "VERDICTS", "Finding"]

VERDICTS = ("holds", "does not hold", "uncertain", "not measured")
HOLDS, FAILS, UNCERTAIN, UNMEASURED = VERDICTS

THRESHOLDS: dict[str, float] = {
    # Derived from each claim's wording and the paper's own numbers, never tuned on snncka's results; each
    # predicate holds on the paper's numbers wherever the paper prints them (``evaluate_paper``).
    #
    # Sec. 4.1, Fig. 2: "Most layers go above 0.5": a layer counts when its CKA exceeds 0.5, and "most" is a
    # strict majority (fraction > 0.5).
    "high_cka": 0.5,
    "high_fraction": 0.5,
    # Sec. 4.2, Table 2: with residuals "the gap is relatively small, with 1~2% accuracy degradation"; without,
    # it "significantly enlarges". The gap must grow by more than that whole small-gap band: the SNN's drop minus
    # the ANN's drop > 2 points, at EVERY depth. The paper's own smallest growth is 3.39 points (ResNet-20:
    # gap 1.43 -> 4.82), then 7.33 (38), 10.05 (74), 54.97 (56), so a 5-point margin would fail ResNet-20.
    "residual_margin": 2.0,
    # Sec. 4.2, Fig. 3: "EVERY time when the residual connection meets the main branch, the CKA similarity
    # restores": every block's output is above the mean of its own conv and LIF/ReLU layers (fraction 1).
    "restore_fraction": 1.0,
    # Sec. 4.3, Fig. 5: "we cannot find significant differences": the mean block-output CKA differs across T by
    # at most the finest CKA step the paper reads off its figures (0.05: "0.75" vs "0.95", App. A.3).
    "time_spread": 0.05,
    # Sec. 4.3, Fig. 6: stage 1 is "all-yellow ... extremely high similarity", above stage 2's ">0.8", which
    # "starts to produce differences": stage 1's mean CKA between different steps is at least 0.9 ...
    "static_min": 0.9,
    # ... and "the last stage ... demonstrates around 0.5": the paper's gap is ~0.5 (all-yellow ~1 vs ~0.5);
    # the last stage must be lower by at least half of it (0.25), i.e. nearer the reported gap than to none.
    "dynamic_gap": 0.25,
    # Sec. 4.3, Table 3: "the first stage can have much lower accuracy degradation (<1%), while the last stage
    # drop 2~4%": the last stage's drop exceeds the first's by at least the 1 point between those two bands, at
    # every T (the paper's smallest margin is 1.40 points, T=4: 0.86 vs 2.26). Not an absolute "<1%" on the
    # first stage: the paper's own T=16 row drops 1.07.
    "stage_margin": 1.0,
    # Sec. 4.5, Fig. 8, Fig. A.9: an eps counts where one model lost at least 1 point, the low end of what the
    # paper calls a small accuracy degradation ("1~2%", Sec. 4.2); below it the attack says nothing about which
    # model is more robust. Every eps the paper shows counts (its smallest drop is 1.90, SNN at eps 0.001); no
    # margin on the comparison itself: Fig. 8 at eps 0.001 has the SNN ahead by 1.17 points only.
    "min_drop": 1.0,
    # App. C, Fig. C.2: "all four permutations have a similar distribution of CKA values": the mean diagonal
    # CKA of the ANN-SNN pairings differs by at most the finest CKA step the paper states (0.05, as above).
    "seed_spread": 0.05,
}

# The settings each claim is about (Sec. 4.1 and Fig. 2 are CIFAR-10 ResNets): experiments whose results a claim
# must not judge. App. A.2 (CIFAR-100) calls its width results "somewhat irregular" (ResNet-20 x8 has the
# lowest similarity in its last blocks), so it neither supports nor contradicts "wider is more similar"; and
# "most layers above 0.5" is said of Fig. 2's CIFAR-10 ResNet-20 only.
OUT_OF_SCOPE: dict[str, tuple[str, ...]] = {
    "width-raises-similarity": ("appA2",),
    "similarity-high": ("appA2",),
}


# The claims in a few words, for figures and narrow tables.
SHORT: dict[str, str] = {
    "similarity-high": "Most layers similar (CKA > 0.5)",
    "depth-lowers-similarity": "Deeper: less similar",
    "width-raises-similarity": "Wider: more similar",
    "width-closes-accuracy-gap": "Wider: smaller accuracy gap",
    "blocks-restore-similarity": "Block outputs restore similarity",
    "residuals-matter-more-for-snn": "No residuals hurts SNN more",
    "time-steps-add-little": "More time steps: little change",
    "early-static-late-dynamic": "Stage 1 static, last stage dynamic",
    "first-stage-tolerates-one-step": "Stage 1 tolerates one step",
    "event-data-lowers-similarity": "Event data: less similar",
    "snn-more-robust": "SNN more robust to PGD",
    "snn-adversarial-features-closer": "SNN features move less under PGD",
    "seed-pairings-alike": "Seed pairings alike",
}


@dataclass(frozen=True)
class Finding:
    """One claim of the paper with its verdict on the results given and the numbers behind it.

    ``effect`` is the number the claim compares with ``threshold`` (``effect <side> threshold`` is the claim),
    ``interval`` its 95 % interval and ``basis`` what that interval is over (test images, seeds, or none:
    the interval is then the point); the verdict is holds / does not hold / uncertain (the interval straddles
    the threshold) / not measured. ``seeds_total`` seeds were measured, in ``seeds_holding`` of them the
    point effect is on the claim's side (0 and 0 for the paper's own numbers)."""

    id: str
    claim: str
    source: str
    verdict: str
    evidence: str
    numbers: dict[str, Any] = field(default_factory=dict)
    effect: float = math.nan
    interval: tuple[float, float] = (math.nan, math.nan)
    threshold: float = math.nan
    side: str = ""
    basis: str = ""
    seeds_holding: int = 0
    seeds_total: int = 0

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")

    @property
    def short(self) -> str:
        """The claim in a few words."""
        return SHORT.get(self.id, self.claim)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
