"""Duplicate detection: exact (identical pixels) and perceptual (pHash, mirror- and crop-aware) groups around
a keeper chosen by quality, for photos and, after ``crop``, for the aligned face crops.

Modules, pure maths first:

- :mod:`~facecurate.dedup.hashing` — fingerprints of decoded pixels (pHash of the frame, its mirror and four crop
  windows as matrix products; pixel sha256; quality cues)
- :mod:`~facecurate.dedup.decode`  — reduced grayscale JPEG decodes (OpenCV, 1/2-1/8 scale) and full-decode digests
- :mod:`~facecurate.dedup.search`  — exact sub-quadratic Hamming search (multi-index hashing in numpy)
- :mod:`~facecurate.dedup.verify`  — aligned thumbnail correlation that confirms hash candidates
- :mod:`~facecurate.dedup.groups`  — candidate edges, keeper order, grouping around keepers (no chaining)
- :mod:`~facecurate.dedup.core`    — the pipeline from fingerprints to groups, without I/O
- :mod:`~facecurate.dedup.stage`   — the stage: catalog cache, batches, diffs, photos then faces
"""

from facecurate.dedup.stage import DedupOptions, DedupSummary, GroupView, LevelSummary, run_dedup

__all__ = ["DedupOptions", "DedupSummary", "GroupView", "LevelSummary", "run_dedup"]
