"""SAA anomaly region generator, box side (paper eq. 1): GroundingDINO queries to scored boxes.

Pure functions on one caption row's outputs (token probabilities Q×T and boxes Q×4). A row holds
one or more prompt *entries*, each a token span; a query box belongs to the entry whose tokens it
matches best, and its score is that entry's highest token probability (the reference code's "max
token score", taken within the entry so that joined captions keep their entries apart). The
special tokens [CLS]/[SEP] name nothing and are not counted.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from inspector.models.grounding import join_wordpieces

_SPECIAL = {"[CLS]", "[SEP]", "[PAD]", ".", "?"}


@dataclass
class BoxCandidates:
    """Boxes found on one image: (x0, y0, x1, y1) image pixels, score, prompt entry and phrase."""

    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    entries: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    phrases: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.scores)

    def take(self, idx: Sequence[int] | np.ndarray) -> BoxCandidates:
        idx = np.asarray(idx, dtype=np.int64)
        return BoxCandidates(self.boxes[idx], self.scores[idx], self.entries[idx], [self.phrases[i] for i in idx])

    @staticmethod
    def concat(parts: Iterable[BoxCandidates]) -> BoxCandidates:
        parts = [p for p in parts if len(p)]
        if not parts:
            return BoxCandidates()
        return BoxCandidates(
            np.concatenate([p.boxes for p in parts]).astype(np.float32),
            np.concatenate([p.scores for p in parts]).astype(np.float32),
            np.concatenate([p.entries for p in parts]).astype(np.int64),
            [ph for p in parts for ph in p.phrases],
        )

    def top(self, n: int) -> BoxCandidates:
        """The ``n`` highest-scoring boxes (stable order among equal scores)."""
        if len(self) <= n:
            return self
        return self.take(np.argsort(-self.scores, kind="stable")[:n])


def cxcywh_to_xyxy(boxes: np.ndarray, image_hw: tuple[int, int]) -> np.ndarray:
    """Normalised (cx, cy, w, h) to (x0, y0, x1, y1) image pixels, clipped to the image."""
    h, w = image_hw
    b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    xyxy = np.stack([b[:, 0] - b[:, 2] / 2, b[:, 1] - b[:, 3] / 2, b[:, 0] + b[:, 2] / 2, b[:, 1] + b[:, 3] / 2], 1)
    xyxy *= np.array([w, h, w, h], dtype=np.float32)
    return np.clip(xyxy, 0, np.array([w, h, w, h], dtype=np.float32))


def entry_scores(logits: np.ndarray, spans: Sequence[tuple[int, int]]) -> np.ndarray:
    """Q×E: each query's highest token probability within each entry's token span."""
    logits = np.asarray(logits, dtype=np.float32)
    return np.stack([logits[:, s:e].max(axis=1) for s, e in spans], axis=1)


def decode_phrase(tokens: Sequence[str], probs: np.ndarray, span: tuple[int, int], text_threshold: float) -> str:
    """Words of an entry whose token probability exceeds ``text_threshold`` (reference: phrase decoding)."""
    s, e = span
    phrases: list[list[str]] = [[]]
    for i in range(s, e):
        if tokens[i] == ".":
            phrases.append([])
        elif probs[i] > text_threshold and tokens[i] not in _SPECIAL:
            phrases[-1].append(tokens[i])
    return ". ".join(join_wordpieces(p) for p in phrases if p)


def names_any(phrase: str, words: Iterable[str]) -> bool:
    """True when ``phrase`` contains one of ``words`` as whole words (case-insensitive)."""
    padded = f" {' '.join(phrase.lower().split())} "
    return any(f" {' '.join(w.lower().split())} " in padded for w in words if w.strip())


def select_boxes(
    logits: np.ndarray,
    boxes: np.ndarray,
    tokens: Sequence[str],
    spans: Sequence[tuple[int, int]],
    entry_ids: Sequence[int],
    image_hw: tuple[int, int],
    box_threshold: float,
    text_threshold: float,
    max_area: float = 1.0,
    filter_words: Sequence[str] = (),
    keep_entries: Collection[int] | None = None,
) -> BoxCandidates:
    """Boxes of one caption row that pass the reference code's box rules.

    ``logits`` Q×T token probabilities, ``boxes`` Q×4 normalised (cx, cy, w, h). A query is kept
    when its best entry's score exceeds ``box_threshold``, its normalised box area is below
    ``max_area``, and its decoded phrase (tokens above ``text_threshold``) names none of
    ``filter_words`` (a box naming the object is the object, not a defect). With
    ``keep_entries``, only queries whose best entry id is among them are considered (a row that
    holds both defect entries and the object name is read once per kind).
    """
    logits = np.asarray(logits, dtype=np.float32)
    boxes = np.asarray(boxes, dtype=np.float32)
    if logits.shape[0] == 0 or not spans:
        return BoxCandidates()
    per_entry = entry_scores(logits, spans)
    best = per_entry.argmax(axis=1)
    score = per_entry[np.arange(len(best)), best]
    area = boxes[:, 2] * boxes[:, 3]
    ok = (score > box_threshold) & (area < max_area)
    if keep_entries is not None:
        ids = np.asarray(entry_ids, dtype=np.int64)
        ok &= np.isin(ids[best], np.asarray(list(keep_entries), dtype=np.int64))
    keep = np.flatnonzero(ok)
    out_idx, phrases = [], []
    for q in keep:
        phrase = decode_phrase(tokens, logits[q], spans[best[q]], text_threshold)
        if filter_words and names_any(phrase, filter_words):
            continue
        out_idx.append(q)
        phrases.append(phrase)
    if not out_idx:
        return BoxCandidates()
    idx = np.asarray(out_idx, dtype=np.int64)
    return BoxCandidates(
        boxes=cxcywh_to_xyxy(boxes[idx], image_hw),
        scores=score[idx].astype(np.float32),
        entries=np.asarray([entry_ids[best[q]] for q in idx], dtype=np.int64),
        phrases=phrases,
    )
