"""SAA / SAA+ pipeline (Segment Any Anomaly with multimodal prompts; method in ``detector``).

``boxes`` (GroundingDINO box rules, eq. 1), ``regions`` (SAM mask crops, property, saliency and
confidence prompts, eq. 4 and 8-9) and ``saliency`` (eq. 5-7) are pure functions; ``detector``
holds the :class:`SaaDetector`; ``experts`` the SAA+ expert tables for MVTec-AD and VisA as data
(``inspector profile experts`` writes their product profiles).
"""

from inspector.detect.saa.detector import SaaAnalysis, SaaDetector

__all__ = ["SaaAnalysis", "SaaDetector"]
