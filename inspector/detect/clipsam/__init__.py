"""CLIP→SAM cascade (pipeline ``clipsam``): co-feature point prompts (PPG) + cascaded prompts (CPS).

Paper: "CLIP-SAM cascaded prompts" (``shared/papers/clip-sam_cascaded-prompts.txt``, sec. 3.1–3.2).

analyse (expensive, per image)
    1. CLIP anomaly map A (H×W, [0, 1]) and image score s from the profile's map provider
       (``clipsam.map_provider``: FADE language map or APRIL-GAN adapters).
    2. One SAM image embedding.
    3. PPG (:mod:`inspector.detect.ppg`): extreme region S_a = A ≥ t·max A; one prompt set per
       connected component: top-k spaced positives, k lowest-similarity spaced negatives in its
       ring (SAM encoder features of the same embedding).
    4. CPS: three decoder passes, every component batched into one decode call per pass
       (point sets padded with label −1): points (eq. 9) → points + best pass-1 low-res logits
       (eq. 10) → points + box of the best pass-2 mask + its logits (eq. 11–12). An empty pass-2
       mask has no box: that set gets its extreme-region component's box instead.
    5. SAM evidence map E(x) = max_r σ(ℓ_r(x)) · c_r, where ℓ_r are the final full-resolution mask
       logits of set r and c_r = mean of A inside its final mask (its component when the mask is
       empty): a SAM mask spilling over normal surface earns a low c_r.

finish (cheap, thresholds only)
    gate g = 1 when s ≥ ``decision.image_threshold`` (or ``clipsam.gate_with_image_score`` is
    off), else 0 — the extreme-region rule always finds *something*, even on a good part;
    F(x) = ε · A(x) + (1 − ε) · g · E(x), ε = ``clipsam.outside_weight``.
    Outside every mask F ≈ ε·A, so normal pixels keep the CLIP ranking (AUROC / AP need a
    continuous map); inside a mask F approaches c_r. F is in [0, 1]. Regions (when g = 1): one
    per prompt set's final mask, sets whose masks overlap merged into one, scored by max F (at
    most ``max_regions``, whatever SAM's masks look like). Image score = s.

Changing a cascade-shaping number (threshold, point counts, kernel, stages …) in ``finish``
re-runs PPG + CPS on the cached embedding (decoder only), so the live preview stays fast.

Modules: ``points`` (PPG on one image: prompt sets, padding), ``cascade`` (CPS: the decoder
passes), ``fusion`` (SAM evidence, mask merging, the fused map) and ``detector``
(:class:`ClipSamDetector`: analyse / finish, the cached embedding).
"""

from inspector.detect.clipsam.detector import ClipSamAnalysis, ClipSamDetector

__all__ = ["ClipSamAnalysis", "ClipSamDetector"]
