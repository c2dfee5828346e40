"""SAA / SAA+: Segment Any Anomaly with multimodal prompts (Cao et al., 2023).

Flow per image (``profile.saa.variant`` = ``"saa+"``; ``"saa"`` is the vanilla baseline, steps 1, 3, 4, 7,
with the naive class-agnostic entries only):

1. **Language prompts** (sec. 3.1.1): the profile's class-agnostic entries ("defect on {object}") and
   class-specific entries (expert phrases, several joined by ". " in one entry) go to GroundingDINO,
   which returns boxes with token scores (eq. 1). Box rules of the reference code: best token score
   > ``box_threshold``, and the decoded phrase (tokens > ``text_threshold``) must not name the
   object (its name or ``saa.filter_word``).
2. **Object**: a GroundingDINO query with the object name (an entry of the joint caption, or its own
   caption); boxes with score > ``object_box_threshold`` and normalised area < 1/object_count. ObjectArea = the largest such box (as the reference code);
   the object region for the IoU property = the union of their SAM masks.
3. **SAM refiner** (eq. 2): one image embedding per image, shared by defect and object boxes; box
   prompts decoded in batches, single-mask output, masks at image resolution (kept as tight crops).
4. (analyse ends here, plus step 5's saliency map.)
5. **Property prompts** (eq. 4): drop regions whose mask area exceeds ``max_area_ratio`` x ObjectArea,
   and regions that do not lie on the object: with ``saa.location_rule = "inside"`` (default) the
   fraction of the region's mask inside the object region must be at least
   ``properties.min_iou_with_object`` (theta); ``"iou"`` reads theta literally as IoU with the
   object, which removes every small true defect (its IoU with a whole object is tiny). The
   reference code never implemented the rule; it is skipped when no object was found.
6. **Saliency prompts** (eq. 5-7): WRN50-2 self-similarity saliency (``saa.saliency``); each
   region's score is multiplied by exp(gain x its mean saliency), scaled by exp(-gain) (see
   :func:`inspector.detect.saa.regions.saliency_prompts`).
7. **Confidence prompts** (eq. 8-9): the K best re-scored regions are fused into
   A = sum s r / sum r (vanilla SAA fuses all its regions the same way). Image score = max A.

Scale of the map and the score. Without reference shots the map is the raw fused map: token
probabilities times saliency factors in [exp(-gain), 1], so A lies in [0, 1] and 0 means nothing
was found; a good part typically stays below GroundingDINO's usual confidences (0.2-0.4). With
reference shots (``profile.reference_shots``), ``prepare`` analyses them and the map is
calibrated per profile: A_cal = clip(A / (2 x margin x level), 0, 1), where level is the highest raw
image score over the references (floored at ``calibration_min_level``) and margin is
``calibration_margin`` - the strongest response on a good part then sits at 0.5 / margin, below
the default decision threshold 0.5. Every image is scored on its own (inductive); the reference
code's min-max normalisation over the whole test set is impossible on a live station.

Regions: the top-K candidates (after filters), each with the phrase that found it (``label``), its
score on the map's scale, its mask box, area and mask; only those reaching the profile's region
threshold are reported (weaker ones are in ``extras["candidates"]``).

Departures from the reference code (the paper is the specification):

* property rules apply to SAM regions (paper) rather than to boxes; the location rule is implemented
  (as "lies on the object", step 5);
* saliency uses the N *nearest* neighbours of eq. 5 (reference: 400 farthest, 0.5 (1 - cos));
* re-scoring uses exp(gain x mean s) with gain 1 (reference: 3) and fusion divides by sum r
  (reference: 1 + sum r); both are profile numbers (``rescore_gain``, ``fusion_denominator_offset``);
* one RGB image is given to all three models (the reference mixes BGR and RGB);
* no box surviving yields an all-zero map (the reference crashes), and a failed image cannot leave
  a stale SAM embedding behind (embeddings are values, not predictor state);
* GroundingDINO's image backbone runs once per image and its text side once per profile; with
  ``caption_mode = "joint"`` (default) all entries and the object name share one caption and one
  fusion pass (their BERT features stay apart through GroundingDINO's sub-sentence masks; each
  query box goes to the entry it matches best, so a box matching the object name best is an
  object box, not a defect), ``"separate"`` keeps the reference's one caption (and one fusion
  pass) per entry and for the object. The fusion transformer mixes image and text from its first
  layer, so it is the part that scales with the number of captions; on CPU it is 80-90 % of a
  GroundingDINO call at 800 px (``bench/saa.py``), so sharing the backbone alone saves little and
  the joint caption is what makes the language stage several times cheaper;
* object masks are decoded only when something uses them (IoU rule, multi-instance saliency);
* special tokens ([CLS], [SEP]) do not count towards a box's score.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from inspector.detect.base import Detection, Detector, Progress, Region, StageTimer
from inspector.detect.maps import normalise_map, resize_map
from inspector.detect.saa.boxes import BoxCandidates, select_boxes
from inspector.detect.saa.regions import (
    MaskCrop,
    area_filter,
    fuse_regions,
    inside_fraction,
    iou_with,
    location_filter,
    mean_inside,
    rescore,
    saliency_prompts,
    top_k,
    union_mask,
)
from inspector.detect.saa.saliency import instance_saliency, pixel_features, self_saliency
from inspector.imaging import array_sha256, read_image
from inspector.models.grounding import GroundingPrediction, GroundingText, normalise_caption

if TYPE_CHECKING:  # pragma: no cover
    from inspector.models.backbone import BackboneModel
    from inspector.models.grounding import GroundingModel
    from inspector.models.hub import ModelHub
    from inspector.models.sam import SamEmbedding, SamModel
    from inspector.profile import ProductProfile

log = logging.getLogger(__name__)

OBJECT_ENTRY = -1
"""Entry id of the object-name query."""


@dataclass
class SaaAnalysis:
    """The expensive, threshold-independent part of one image (cache it per image)."""

    image_hw: tuple[int, int]
    defects: BoxCandidates
    masks: list[MaskCrop | None]  # one per defect candidate (None: SAM returned an empty mask)
    objects: BoxCandidates
    saliency: np.ndarray | None = None  # float32 H×W, saa+ only
    object_masks: list[MaskCrop | None] | None = None  # decoded on first use
    embedding: SamEmbedding | None = field(default=None, repr=False)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def object_area(self) -> float:
        """ObjectArea in px²: the largest object box (the whole image when no object was found)."""
        if not len(self.objects):
            return float(self.image_hw[0] * self.image_hw[1])
        b = self.objects.boxes
        return float(((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])).max())


def prompt_entries(profile: ProductProfile) -> list[str]:
    """The profile's caption entries, ``{object}`` filled, no repeats.

    SAA+ reads the class-agnostic then the class-specific (expert) entries; the vanilla ``saa``
    baseline reads the naive class-agnostic entries only (paper eq. 3: SAA(I, T_n)).
    """
    out: list[str] = []
    seen: set[str] = set()
    templates = list(profile.prompts.class_agnostic)
    if profile.saa.variant == "saa+":
        templates += profile.prompts.class_specific
    for template in templates:
        entry = profile.fill(template).strip()
        key = normalise_caption(entry)
        if entry and key not in seen:
            seen.add(key)
            out.append(entry)
    return out


def pack_rows(token_counts: list[int], budget: int) -> list[list[int]]:
    """Greedy packing of entries (by token count) into rows of at most ``budget`` tokens, in order."""
    rows: list[list[int]] = []
    used = budget + 1
    for i, n in enumerate(token_counts):
        if n > budget:
            raise ValueError(f"prompt entry {i} has {n} tokens; GroundingDINO reads at most {budget} per caption")
        if used + n > budget:
            rows.append([])
            used = 0
        rows[-1].append(i)
        used += n
    return rows


class SaaDetector(Detector):
    """SAA / SAA+ on the model hub (GroundingDINO, SAM, a timm CNN for saliency)."""

    name = "saa"
    requires = ("grounding", "sam", "backbone")
    default_eval_size = 400  # SAA+'s published protocol (evaluation.md)
    #: saa.* numbers only :meth:`finish` reads (properties.top_k/max_area_ratio/min_iou are finish too)
    finish_params = (
        "saa.rescore_gain",
        "saa.fusion_denominator_offset",
        "saa.calibration_margin",
        "saa.calibration_min_level",
        "saa.location_rule",
    )

    def __init__(self) -> None:
        super().__init__()
        self.grounding: GroundingModel | None = None
        self.sam: SamModel | None = None
        self.backbone: BackboneModel | None = None
        self.entries: list[str] = []
        self.text: GroundingText | None = None
        self._text_key: tuple[Any, ...] | None = None
        self._references: list[SaaAnalysis] = []
        self._ref_cache: dict[tuple[Any, ...], SaaAnalysis] = {}
        self._calibration: tuple[tuple[Any, ...], float | None] | None = None

    # ================================================================== prepare
    def prepare(self, profile: ProductProfile, hub: ModelHub, progress: Progress | None = None) -> None:
        self.profile, self.hub = profile, hub
        p = profile.saa
        report = progress or (lambda f, m: None)
        report(0.0, "loading GroundingDINO")
        self.grounding = hub.get("grounding", profile.models.grounding)
        report(0.2, "loading SAM")
        self.sam = hub.get("sam", profile.models.sam)
        if p.variant == "saa+":
            report(0.3, "loading saliency backbone")
            self.backbone = hub.get("backbone", profile.models.backbone)
        report(0.4, "encoding prompts")
        self._prepare_text(profile)
        self._calibration = None
        self._references = []
        refs = profile.reference_paths() if profile.reference_shots and profile.folder is not None else []
        key = self._analysis_key()
        # reference analyses are kept per (analysis settings, image content); drop stale settings
        self._ref_cache = {k: v for k, v in self._ref_cache.items() if k[0] == key}
        for i, path in enumerate(refs):
            report(0.5 + 0.5 * i / len(refs), f"analysing reference {i + 1}/{len(refs)}")
            image = read_image(path)
            ck = (key, array_sha256(image))
            if ck not in self._ref_cache:
                analysis = self.analyse(image)
                if p.variant == "saa+" and len(analysis.defects):
                    self._object_masks(analysis)  # decode now so finish never needs the embedding
                analysis.embedding = None
                self._ref_cache[ck] = analysis
            self._references.append(self._ref_cache[ck])
        report(1.0, "ready")

    def _analysis_key(self) -> tuple[Any, ...]:
        prof = self.profile
        assert prof is not None
        p = prof.saa.model_dump(exclude=set(k.split(".", 1)[1] for k in self.finish_params))
        return (prof.models.grounding, prof.models.sam, prof.models.backbone, tuple(self.entries), prof.object,
                prof.properties.object_count, prof.properties.saliency_neighbors, tuple(sorted(p.items())))

    def _prepare_text(self, profile: ProductProfile) -> None:
        """Caption rows (joint: everything packed into as few captions as fit; separate: one each)."""
        assert self.grounding is not None
        p = profile.saa
        self.entries = prompt_entries(profile)
        if not self.entries:
            raise ValueError(f"profile {profile.name!r}: the SAA pipeline needs at least one language prompt "
                             "(prompts.class_agnostic or prompts.class_specific)")
        texts = list(self.entries)
        ids = list(range(len(texts)))
        if p.variant == "saa+":
            texts.append(profile.object)
            ids.append(OBJECT_ENTRY)
        tok = self.grounding.tokenizer
        if p.caption_mode == "joint":
            counts = [len(tok.tokenize(normalise_caption(t))) for t in texts]
            rows = pack_rows(counts, self.grounding.max_text_len - 2)
        else:
            rows = [[i] for i in range(len(texts))]
        groups = [[texts[i] for i in r] for r in rows]
        row_ids = [[ids[i] for i in r] for r in rows]
        key = (self.grounding.key, id(self.grounding), tuple(tuple(g) for g in groups), tuple(map(tuple, row_ids)))
        if key != self._text_key:
            self.text = self.grounding.encode_text(groups, row_ids)
            self._text_key = key

    # ================================================================== analyse
    def analyse(self, image: np.ndarray) -> SaaAnalysis:
        if self.profile is None or self.grounding is None or self.sam is None or self.text is None:
            raise RuntimeError("SaaDetector.analyse called before prepare()")
        prof, p = self.profile, self.profile.saa
        hw = (int(image.shape[0]), int(image.shape[1]))
        timer = StageTimer()
        pred = self._ground(image, timer)
        with timer("boxes"):
            defects, objects = self._boxes(pred.logits, pred.boxes, hw)
        analysis = SaaAnalysis(hw, defects, [], objects)
        multi = p.variant == "saa+" and prof.properties.object_count > 1
        if len(defects):
            with timer("sam_embed"):
                analysis.embedding = self.sam.embed(image)
            with timer("sam_decode"):
                analysis.masks = self._decode(analysis.embedding, defects.boxes)
            if multi:
                with timer("sam_decode"):
                    self._object_masks(analysis)
            if p.variant == "saa+":
                with timer("saliency"):
                    analysis.saliency = self._saliency(image, analysis)
        analysis.timings = dict(timer.timings)
        return analysis

    def _ground(self, image: np.ndarray, timer: StageTimer) -> GroundingPrediction:
        """GroundingDINO on every caption row: image side once, fusion batched over the rows."""
        assert self.grounding is not None and self.text is not None and self.profile is not None
        p = self.profile.saa
        with timer("grounding_image"):
            gimg = self.grounding.encode_image(image, p.grounding_short_side, p.grounding_max_size)
        with timer("grounding_fusion"):
            return self.grounding.predict(gimg, self.text, batch=p.caption_batch or None)

    def _boxes(self, logits: np.ndarray, boxes: np.ndarray, hw: tuple[int, int]) -> tuple[BoxCandidates, BoxCandidates]:
        """Defect and object candidates from every caption row (each query goes to its best entry)."""
        prof, text = self.profile, self.text
        assert prof is not None and text is not None
        p = prof.saa
        filter_words = [w for w in (p.filter_word, prof.object) if w and w.strip()]
        defect_ids = set(range(len(self.entries)))
        defects, objects = [], []
        for r in range(text.num_rows):
            t = len(text.tokens[r])
            args = (logits[r, :, :t], boxes[r], text.tokens[r], text.entry_spans[r], text.entry_ids[r], hw)
            if defect_ids & set(text.entry_ids[r]):
                defects.append(select_boxes(*args, p.box_threshold, p.text_threshold, 1.0, filter_words,
                                            keep_entries=defect_ids))
            if OBJECT_ENTRY in text.entry_ids[r]:
                objects.append(select_boxes(*args, p.object_box_threshold, p.text_threshold,
                                            1.0 / prof.properties.object_count, keep_entries={OBJECT_ENTRY}))
        return (BoxCandidates.concat(defects).top(p.max_regions), BoxCandidates.concat(objects).top(p.max_regions))

    def _decode(self, emb: SamEmbedding, boxes: np.ndarray, chunk: int = 16) -> list[MaskCrop | None]:
        assert self.sam is not None
        crops: list[MaskCrop | None] = []
        for start in range(0, len(boxes), chunk):
            out = self.sam.decode(emb, boxes=boxes[start : start + chunk], multimask=False, chunk=chunk)
            crops.extend(MaskCrop.from_mask(m[0]) for m in out.masks)
        return crops

    def _object_masks(self, analysis: SaaAnalysis) -> list[MaskCrop | None]:
        """Object masks, decoded once on first use from the analysis's own SAM embedding."""
        if analysis.object_masks is None:
            if not len(analysis.objects):
                analysis.object_masks = []
            elif analysis.embedding is None:
                raise RuntimeError("object masks needed but the image's SAM embedding was not kept")
            else:
                analysis.object_masks = self._decode(analysis.embedding, analysis.objects.boxes)
        return analysis.object_masks

    def _saliency(self, image: np.ndarray, analysis: SaaAnalysis) -> np.ndarray:
        """Eq. 5 saliency map at image resolution (multi-instance strategy when object_count > 1)."""
        assert self.profile is not None and self.backbone is not None
        prof, p = self.profile, self.profile.saa
        instances = [m for m in (analysis.object_masks or []) if m is not None]
        if prof.properties.object_count > 1 and len(instances) >= 2:
            feats = self.backbone.features(image, p.multi_instance_input_size)
            gh, gw = int(feats[0].shape[2]), int(feats[0].shape[3])
            grid = pixel_features(feats).T.reshape(-1, gh, gw)
            masks = torch.as_tensor(np.stack([_to_grid(m.full(analysis.image_hw), (gh, gw)) for m in instances]),
                                    device=grid.device)
            sal = instance_saliency(grid, masks)
        else:
            feats = self.backbone.features(image, p.saliency_input_size)
            gh, gw = int(feats[0].shape[2]), int(feats[0].shape[3])
            sal = self_saliency(pixel_features(feats), prof.properties.saliency_neighbors).view(gh, gw)
        return resize_map(sal.float().cpu().numpy(), analysis.image_hw)

    # ================================================================== finish
    def finish(self, analysis: SaaAnalysis, image: np.ndarray) -> Detection:
        if self.profile is None:
            raise RuntimeError("SaaDetector.finish called before prepare()")
        timer = StageTimer()
        with timer("fusion"):
            amap, scores, order = self._fused(analysis)
        with timer("calibration"):
            high = self._calibration_high()
            if high is not None:
                amap = normalise_map(amap, 0.0, high)
                scores = np.clip(scores / high, 0.0, 1.0)
        threshold = self.profile.decision.region_threshold
        regions, candidates = [], []
        for i in order:
            crop = analysis.masks[i]
            assert crop is not None
            region = Region(box=crop.box, score=float(scores[i]), label=analysis.defects.phrases[i] or
                            self._entry_text(int(analysis.defects.entries[i])), area_px=crop.area)
            candidates.append(region.to_json())
            if region.score >= threshold:
                region.mask = crop.full(analysis.image_hw)
                regions.append(region)
        timings = dict(analysis.timings)
        timings.update(timer.timings)
        extras: dict[str, Any] = {"candidates": candidates, "calibrated": high is not None}
        if analysis.saliency is not None:
            extras["saliency"] = analysis.saliency
        return Detection(amap, float(amap.max()) if amap.size else 0.0, regions, timings, extras)

    def _entry_text(self, entry: int) -> str:
        return self.profile.object if entry == OBJECT_ENTRY else self.entries[entry]  # type: ignore[union-attr]

    def _fused(self, analysis: SaaAnalysis) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Raw fused map (eq. 4-9), re-scored scores of every candidate, and the chosen indices."""
        prof = self.profile
        assert prof is not None
        p, props = prof.saa, prof.properties
        hw = analysis.image_hw
        n = len(analysis.defects)
        valid = np.array([m is not None for m in analysis.masks], dtype=bool) if n else np.zeros(0, bool)
        scores = analysis.defects.scores.astype(np.float32).copy()
        if not valid.any():
            return np.zeros(hw, np.float32), scores, np.zeros(0, np.int64)
        idx = np.flatnonzero(valid)
        crops = [analysis.masks[i] for i in idx]
        if p.variant == "saa+":
            keep = area_filter(np.array([c.area for c in crops]), analysis.object_area, props.max_area_ratio)
            if props.min_iou_with_object > 0 and len(analysis.objects):
                objs = [m for m in self._object_masks(analysis) if m is not None]
                if objs:
                    region = union_mask(objs, hw)
                    if p.location_rule == "inside":
                        where = [inside_fraction(c, region) for c in crops]
                    else:
                        area = int(region.sum())
                        where = [iou_with(c, region, area) for c in crops]
                    keep &= location_filter(np.array(where), props.min_iou_with_object)
            if analysis.saliency is not None:
                prompts = saliency_prompts(np.array([mean_inside(analysis.saliency, c) for c in crops]),
                                           p.rescore_gain)
                scores[idx] = rescore(scores[idx], prompts)
            idx = idx[keep]
            idx = idx[top_k(scores[idx], props.top_k)]
        else:
            idx = idx[np.argsort(-scores[idx], kind="stable")]
        amap = fuse_regions([analysis.masks[i] for i in idx], scores[idx], hw, p.fusion_denominator_offset)
        return amap, scores, idx

    def _calibration_high(self) -> float | None:
        """Map value that becomes 1.0 after calibration (None without reference shots)."""
        if not self._references:
            return None
        prof = self.profile
        assert prof is not None
        key = (self._analysis_key(), prof.properties.model_dump_json(), prof.saa.model_dump_json(),
               len(self._references))
        if self._calibration is None or self._calibration[0] != key:
            level = max(float(self._fused(a)[0].max()) for a in self._references)
            level = max(level, prof.saa.calibration_min_level)
            self._calibration = (key, 2.0 * prof.saa.calibration_margin * level)
        return self._calibration[1]


def _to_grid(mask: np.ndarray, grid_hw: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a bool mask to the feature grid."""
    import cv2

    return cv2.resize(mask.astype(np.uint8), (grid_hw[1], grid_hw[0]), interpolation=cv2.INTER_NEAREST).astype(bool)
