"""Weight-free reference pipeline ("variation"): what good looks like, learned from a few shots.

No pretrained network: a fixed multi-scale filter bank (per pyramid level: smoothed L*a*b*, signed and
absolute derivatives, |Laplacian|, chroma gradient; averaged over ``feature_stride`` cells and
concatenated with their 3×3 neighbourhood mean) turns each image into a grid of patch descriptors,
and each test patch is scored by its distance to the nearest reference patch. Two memories, chosen
per profile (``variation.memory``; ``auto`` decides from the references, see ``inspector.detect.colour.structure_share``):

* **local** (objects, assemblies) — a *variation model*: every image is registered to the first
  reference shot (rotation search with phase correlation on edge images, refined by ECC from the
  best angles); each patch is compared with the references' patches at the same place,
  ± ``search_radius`` patches, and the distance is divided by how much the references themselves
  vary at that place (``variation_model``: leave-one-out spread, smoothed). A missing or
  misplaced part is anomalous even if it looks normal elsewhere. What an aligned image does not
  show is filled in from the first reference and its seam is faded out (``border_margin``).
* **global** (textures) — a *patch memory* (PatchCore-style): every reference patch, thinned by a
  greedy coreset (``coreset_ratio``, at most ``max_memory`` patches), reduced to ``global_dims``
  principal directions; each test patch takes its nearest neighbour anywhere.

``scale_fusion``: ``joint`` (default) scores one descriptor of all pyramid levels; ``mean``/``max``
score each level on its own (own metric, memory and spread) and fuse the normalised maps.

Metric: descriptors are z-scored, then whitened by the covariance of leave-one-out
nearest-neighbour residuals (``whitening``): directions in which good parts differ among
themselves count little, directions in which they agree count much (Mahalanobis on residuals).
Brightness/contrast is matched to the references first (``photometric``).

Score scale (calibrated per profile from the references, never from a test set)
-------------------------------------------------------------------------------
``prepare`` scores every reference shot against the others (leave-one-out; nested for the
variation model) and takes the worst of these normal image scores, ``s_ref`` (the maximum of the
smoothed map). With ``T = calibration_margin × s_ref`` the map is ``raw / (2T)`` clipped to
[0, 1]: **0.5 means "``calibration_margin`` times the worst good reference"**, 0 means identical
to a reference and 1 means at least twice that. The image score is the maximum of the map, so the
profile's default ``decision.image_threshold`` of 0.5 is a sensible PASS/FAIL cut; regions are the
connected parts of the map at or above ``decision.region_threshold``.

Everything ``prepare`` computes is cached on disk (``Settings.cache_dir/variation``) keyed by the
reference images' sha256, the parameters that shape it and :data:`ALGORITHM_VERSION`;
``smoothing_sigma`` and ``calibration_margin`` only rescale and can be retuned without it.
Runs on the CPU (numpy/OpenCV); the work per 256² image is tens of milliseconds.

Modules: ``features`` (working image, photometry, the filter bank), ``memory`` (nearest-neighbour distances, residual
whitening, coreset), ``calibration`` (seam confidence, positional spread, the score scale) and
``detector`` (:class:`VariationDetector`: prepare / analyse / finish, the on-disk cache). Shared
with ``patchcore``: ``inspector.detect.registration`` (registration to the first reference) and
``inspector.detect.colour`` (L*a*b*, the structure share).
"""

from inspector.detect.variation.detector import VariationAnalysis, VariationDetector, VariationError, describe

__all__ = ["VariationAnalysis", "VariationDetector", "VariationError", "describe"]
