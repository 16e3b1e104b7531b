"""What ``status`` reports: counts per stage, per state in force, per reason and per label."""

from __future__ import annotations

from dataclasses import dataclass, field

from facecurate.catalog.dedup import DedupMixin


@dataclass(frozen=True)
class DedupCounts:
    hashed: int                                   # photos with a fingerprint
    image_groups: int
    image_duplicates: int
    image_by_kind: dict[str, int]
    image_by_transform: dict[str, int]
    face_duplicates: int
    face_by_kind: dict[str, int]
    largest_groups: list[dict[str, int]]          # {"group": keeper image id, "size": photos}
    by_query: dict[str, dict[str, int]]           # query → {"images", "duplicates"}


@dataclass(frozen=True)
class StatusReport:
    """The whole workspace at a glance; face states are the states in force (review decisions included)."""

    sources: dict[str, int]                       # ok | failed
    images: int
    crop: dict[str, int]                          # pending | done | no_face | failed (photos)
    face_states: dict[str, int]                   # state in force → faces
    photo_states: dict[str, int]                  # state → photos without a face row (pending, no_face, failed…)
    reasons: dict[str, int]                       # rule reason → faces it fired on
    by_label: dict[str, dict[str, int]] = field(default_factory=dict)
    dedup: DedupCounts | None = None


class CountsMixin(DedupMixin):
    def counts(self) -> StatusReport:
        one = self._scalar
        by_label: dict[str, dict[str, int]] = {}
        for row in self.conn.execute(
                "SELECT COALESCE(label, '') AS label, COUNT(*) AS images, "
                "SUM(crop_state IS NULL) AS pending, SUM(crop_state='done') AS with_face, "
                "SUM(crop_state='no_face') AS no_face, SUM(crop_state='failed') AS failed "
                "FROM images GROUP BY 1 ORDER BY 1"):
            by_label[row["label"]] = {k: int(row[k] or 0) for k in
                                      ("images", "pending", "with_face", "no_face", "failed")}
        for row in self.conn.execute(
                "SELECT COALESCE(i.label, '') AS label, s.state, COUNT(*) AS n FROM item_state s "
                "JOIN images i ON i.id = s.image_id WHERE s.face_id IS NOT NULL GROUP BY 1, 2"):
            by_label.setdefault(row["label"], {})[f"faces_{row['state']}"] = int(row["n"])
        return StatusReport(
            sources={"ok": one("SELECT COUNT(*) FROM sources WHERE status='ok'"),
                     "failed": one("SELECT COUNT(*) FROM sources WHERE status='failed'")},
            images=one("SELECT COUNT(*) FROM images"),
            crop={"pending": one("SELECT COUNT(*) FROM images WHERE crop_state IS NULL"),
                  "done": one("SELECT COUNT(*) FROM images WHERE crop_state='done'"),
                  "no_face": one("SELECT COUNT(*) FROM images WHERE crop_state='no_face'"),
                  "failed": one("SELECT COUNT(*) FROM images WHERE crop_state='failed'")},
            face_states={row["state"]: int(row["n"]) for row in self.conn.execute(
                "SELECT state, COUNT(*) AS n FROM item_state WHERE face_id IS NOT NULL GROUP BY state ORDER BY state")},
            photo_states={row["state"]: int(row["n"]) for row in self.conn.execute(
                "SELECT state, COUNT(*) AS n FROM item_state WHERE face_id IS NULL GROUP BY state ORDER BY state")},
            reasons={r[0]: int(r[1]) for r in self.conn.execute(
                "SELECT j.value, COUNT(*) FROM faces f, json_each(f.reasons) j GROUP BY 1 ORDER BY 2 DESC, 1")},
            by_label=by_label,
            dedup=DedupCounts(**self.dedup_counts()),
        )
