"""The one definition of an item's state in force.

No stage stores a state: crop writes detection and crop facts, dedup its ``dup_*`` fields, filter its measures,
reasons and ``filtered_at``, review appends to its log. The state follows from those facts, here, in Python
(:func:`state_of`) and in SQL (the ``item_state`` view every reader queries), and ``tests/test_state.py``
proves the two equal on randomised catalogs. Precedence: failed > no_face > duplicate > pending (not filtered
yet) > reject > keep, with a person's decision on top of all of them.
"""

from __future__ import annotations

from enum import Enum


class State(str, Enum):
    PENDING = "pending"
    KEEP = "keep"
    REJECT = "reject"
    DUPLICATE = "duplicate"
    NO_FACE = "no_face"
    FAILED = "failed"

    def __str__(self) -> str:
        return self.value


class Decision(str, Enum):
    """A person's decision in force for one face (``none``: never decided, or undone)."""

    NONE = "none"
    KEPT = "kept"
    REJECTED = "rejected"

    def __str__(self) -> str:
        return self.value


DECIDED = {Decision.KEPT: State.KEEP, Decision.REJECTED: State.REJECT}


def state_of(*, fetched: bool = True, crop_state: str | None = None, photo_duplicate: bool = False,
             face_duplicate: bool = False, filtered: bool = False, rejected_by_rules: bool = False,
             decision: Decision | str = Decision.NONE) -> State:
    """The state in force of one manifest row: a face, a photo without one, or a source that never arrived.

    ``photo_duplicate``: dedup marked the photo a copy (its faces leave with it, in whatever order crop and
    dedup ran); ``face_duplicate``: dedup grouped this aligned face under another one."""
    decided = DECIDED.get(Decision(decision))
    if decided is not None:
        return decided
    return rule_state(fetched=fetched, crop_state=crop_state, photo_duplicate=photo_duplicate,
                      face_duplicate=face_duplicate, filtered=filtered, rejected_by_rules=rejected_by_rules)


def rule_state(*, fetched: bool = True, crop_state: str | None = None, photo_duplicate: bool = False,
               face_duplicate: bool = False, filtered: bool = False, rejected_by_rules: bool = False) -> State:
    """What the stages say before any person spoke (the review log records it beside each decision)."""
    if not fetched or crop_state == "failed":
        return State.FAILED
    if crop_state == "no_face":
        return State.NO_FACE
    if photo_duplicate or face_duplicate:
        return State.DUPLICATE
    if crop_state is None or not filtered:
        return State.PENDING
    return State.REJECT if rejected_by_rules else State.KEEP


# The same rules over the catalog's rows: one row per face, and one per photo that has no face row (not cropped
# yet, no face, failed). face_index is -1 on photo rows; they never carry a decision. A face of a duplicate photo
# has dup_kind 'image' only as a pointer to the kept photo's face: its photo's dup_of decides. Written as two
# flat SELECTs joined by UNION ALL (no CTE): SQLite then pushes a reader's WHERE into each arm instead of first
# copying every row of the view into a temporary table.
_RULE_STATE = """
    CASE
        WHEN crop_state = 'failed' THEN 'failed'
        WHEN crop_state = 'no_face' THEN 'no_face'
        WHEN photo_dup_of IS NOT NULL OR (face_dup_kind IS NOT NULL AND face_dup_kind != 'image') THEN 'duplicate'
        WHEN crop_state IS NULL OR filtered_at IS NULL THEN 'pending'
        WHEN reasons != '[]' THEN 'reject'
        ELSE 'keep'
    END"""


def _arm(rows: str) -> str:
    """One arm of the view over ``rows`` (the facts under the names _RULE_STATE reads)."""
    return f"""
    SELECT face_id, image_id, face_index, {_RULE_STATE} AS rule_state, decision,
           CASE decision WHEN 'kept' THEN 'keep' WHEN 'rejected' THEN 'reject' ELSE {_RULE_STATE} END AS state,
           reasons, scores, det_score, label
    FROM ({rows})"""


_FACE_ROWS = """
    SELECT f.id AS face_id, f.image_id, f.face_index, i.crop_state, i.dup_of AS photo_dup_of,
           f.dup_kind AS face_dup_kind, f.filtered_at, f.reasons, f.scores, f.det_score, i.label,
           COALESCE((SELECT r.decision_after FROM review_log r WHERE r.image_id = f.image_id
                     AND r.face_index = f.face_index ORDER BY r.id DESC LIMIT 1), 'none') AS decision
    FROM faces f JOIN images i ON i.id = f.image_id"""
_PHOTO_ROWS = """
    SELECT NULL AS face_id, i.id AS image_id, -1 AS face_index, i.crop_state, i.dup_of AS photo_dup_of,
           NULL AS face_dup_kind, NULL AS filtered_at, '[]' AS reasons, '{}' AS scores, NULL AS det_score,
           i.label, 'none' AS decision
    FROM images i WHERE NOT EXISTS (SELECT 1 FROM faces f WHERE f.image_id = i.id)"""

# reasons, scores, det_score and label ride along: the facts readers filter and sort on, with no second join.
ITEM_STATE_VIEW = ("CREATE TEMP VIEW IF NOT EXISTS item_state AS" + _arm(_FACE_ROWS) + "\nUNION ALL" +
                   _arm(_PHOTO_ROWS))
