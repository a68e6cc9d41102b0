"""The annotation database: SQLite in WAL mode, one transaction per answer, a schema version
and migrations. A file of another tool or of a newer schema is refused and never written.

Tables: ``meta`` (the application's name and the schema version), ``units`` (the units to
annotate: layer, unit, how many images each shows), ``annotators`` (a name and a random token
each) and ``answers`` (one row per submitted answer: the description, the category, the
images marked as mismatches, and the client's request id, unique, so a retried request is
stored once). An annotator may answer a unit again; results use their latest answer.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

from cnnjax.units import SEMANTIC_TYPES

__all__ = ["APPLICATION", "CATEGORIES", "SCHEMA_VERSION", "AnnotationStore", "normalise_label"]

APPLICATION = "cnnjax-annotate"

#: The categories of task 3: Zhou et al.'s (2015) semantic types, simplest first.
CATEGORIES = SEMANTIC_TYPES

# Each migration takes the database from version i to i + 1.
_MIGRATIONS = (
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE units (id INTEGER PRIMARY KEY, layer TEXT NOT NULL, unit INTEGER NOT NULL,
                        images INTEGER NOT NULL, UNIQUE (layer, unit));
    CREATE TABLE annotators (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,
                             token TEXT NOT NULL UNIQUE, created REAL NOT NULL);
    CREATE TABLE answers (id INTEGER PRIMARY KEY, annotator INTEGER NOT NULL REFERENCES annotators (id),
                          unit INTEGER NOT NULL REFERENCES units (id), description TEXT NOT NULL,
                          category TEXT NOT NULL, mismatches TEXT NOT NULL, created REAL NOT NULL);
    """,
    """
    ALTER TABLE answers ADD COLUMN request TEXT;
    CREATE UNIQUE INDEX answers_request ON answers (request);
    CREATE INDEX answers_unit ON answers (unit, annotator);
    """,
)
SCHEMA_VERSION = len(_MIGRATIONS)

MAX_DESCRIPTION = 200
MAX_NAME = 60


def normalise_label(text: str) -> str:
    """A description as compared across annotators: case-folded, spaces collapsed.

    Example:
      >>> normalise_label("  Ocean   Waves ")
      'ocean waves'
    """
    return " ".join(str(text).casefold().split())


class AnnotationStore:
    """The annotations of one project, in the SQLite file ``path`` (created if missing).

    Raises:
      ValueError: ``path`` is not a SQLite database, is one of another tool, or has a newer
        schema than this cnnjax knows (the file is left as it was).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if self.path.exists():
            self._check_existing()
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            version = self._version(db)
            for i in range(version, SCHEMA_VERSION):
                with self._transaction(db):
                    for statement in filter(str.strip, _MIGRATIONS[i].split(";")):
                        db.execute(statement)
                    db.execute("INSERT OR REPLACE INTO meta VALUES ('application', ?)", (APPLICATION,))
                    db.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(i + 1),))

    # -- connections ---------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)  # explicit transactions
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA foreign_keys=ON")
        return db

    @contextlib.contextmanager
    def connection(self) -> Iterator[sqlite3.Connection]:
        db = self._connect()
        try:
            yield db
        finally:
            db.close()

    @staticmethod
    @contextlib.contextmanager
    def _transaction(db: sqlite3.Connection) -> Iterator[None]:
        db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def _check_existing(self) -> None:
        with open(self.path, "rb") as f:
            header = f.read(16)
        if header != b"SQLite format 3\x00":
            raise ValueError(f"{self.path} is not a SQLite database; give another --db file")
        try:
            with self.connection() as db:
                tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
                meta = dict(db.execute("SELECT key, value FROM meta")) if "meta" in tables else {}
        except sqlite3.DatabaseError as e:
            raise ValueError(f"{self.path} cannot be read as a SQLite database ({e})") from None
        if tables and meta.get("application") != APPLICATION:
            found = ", ".join(sorted(tables))
            raise ValueError(f"{self.path} is a database of another tool (tables: {found}); it is left as it "
                             "is: give another --db file")  # fmt: skip
        version = int(meta.get("schema_version", 0))
        if version > SCHEMA_VERSION:
            raise ValueError(f"{self.path} has schema version {version}, newer than this cnnjax's "
                             f"{SCHEMA_VERSION}; upgrade cnnjax to use it (the file is left as it "
                             "is)")  # fmt: skip

    @staticmethod
    def _version(db: sqlite3.Connection) -> int:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "meta" not in tables:
            return 0
        row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        return int(row[0]) if row else 0

    def schema_version(self) -> int:
        with self.connection() as db:
            return self._version(db)

    # -- units and annotators -----------------------------------------------------------------

    def add_units(self, layer: str, units: Sequence[int], images: int) -> None:
        """Register units to annotate (those already there are kept, with their answers)."""
        with self.connection() as db, self._transaction(db):
            for u in units:
                db.execute(
                    "INSERT OR IGNORE INTO units (layer, unit, images) VALUES (?, ?, ?)",
                    (layer, int(u), images),
                )

    def units(self) -> list[dict]:
        """Every unit: ``{"id", "layer", "unit", "images", "answers"}``, in registration order."""
        with self.connection() as db:
            rows = db.execute(
                "SELECT u.id, u.layer, u.unit, u.images, COUNT(a.id) FROM units u "
                "LEFT JOIN answers a ON a.unit = u.id GROUP BY u.id ORDER BY u.id"
            ).fetchall()
        return [dict(zip(("id", "layer", "unit", "images", "answers"), r)) for r in rows]

    def unit(self, layer: str, unit: int) -> dict | None:
        with self.connection() as db:
            row = db.execute("SELECT id, layer, unit, images FROM units WHERE layer = ? AND unit = ?",
                             (layer, unit)).fetchone()  # fmt: skip
        return dict(zip(("id", "layer", "unit", "images"), row)) if row else None

    def add_annotator(self, name: str) -> dict:
        """A new annotator named ``name``; returns ``{"id", "name", "token"}``.

        Raises:
          ValueError: an empty or too long name, or one already taken.
        """
        name = " ".join(str(name).split())
        if not name or len(name) > MAX_NAME:
            raise ValueError(f"a name must have 1 to {MAX_NAME} characters")
        token = secrets.token_urlsafe(24)
        with self.connection() as db:
            try:
                with self._transaction(db):
                    cur = db.execute("INSERT INTO annotators (name, token, created) VALUES (?, ?, ?)",
                                     (name, token, time.time()))  # fmt: skip
            except sqlite3.IntegrityError:
                raise ValueError(f"the name {name!r} is taken; choose another") from None
        return {"id": cur.lastrowid, "name": name, "token": token}

    def annotator(self, token: str) -> dict | None:
        """The annotator holding ``token``, or None."""
        if not isinstance(token, str) or not token:
            return None
        with self.connection() as db:
            row = db.execute("SELECT id, name FROM annotators WHERE token = ?", (token,)).fetchone()
        return {"id": row[0], "name": row[1]} if row else None

    def next_unit(self, annotator: int) -> dict | None:
        """The unit this annotator should do next: one they have not answered, the fewest
        answers first (units nobody has done come first), or None when they have done all."""
        with self.connection() as db:
            row = db.execute(
                "SELECT u.id, u.layer, u.unit, u.images FROM units u LEFT JOIN answers a ON a.unit = u.id "
                "WHERE u.id NOT IN (SELECT unit FROM answers WHERE annotator = ?) "
                "GROUP BY u.id ORDER BY COUNT(a.id), u.id LIMIT 1",
                (annotator,),
            ).fetchone()
        return dict(zip(("id", "layer", "unit", "images"), row)) if row else None

    def progress(self, annotator: int) -> dict:
        with self.connection() as db:
            done = db.execute(
                "SELECT COUNT(DISTINCT unit) FROM answers WHERE annotator = ?", (annotator,)
            ).fetchone()[0]
            total = db.execute("SELECT COUNT(*) FROM units").fetchone()[0]
        return {"done": done, "total": total}

    # -- answers -------------------------------------------------------------------------------

    def add_answer(
        self, annotator: int, unit_id: int, description: str, category: str, mismatches: Sequence[int],
        request: str | None = None,
    ) -> bool:  # fmt: skip
        """Store one answer in one transaction; False if ``request`` was stored before (a
        retried request), True otherwise.

        Raises:
          ValueError: an empty or too long description, an unknown category or unit, or
            mismatches that are not distinct image ranks of the unit.
        """
        description = " ".join(str(description).split())
        if not description or len(description) > MAX_DESCRIPTION:
            raise ValueError(f"the description must have 1 to {MAX_DESCRIPTION} characters")
        if category not in CATEGORIES:
            raise ValueError(f"the category must be one of: {'; '.join(CATEGORIES)}")
        with self.connection() as db:
            row = db.execute("SELECT images FROM units WHERE id = ?", (unit_id,)).fetchone()
            if row is None:
                raise ValueError(f"no unit with id {unit_id}")
            marks = list(mismatches)
            if (any(not isinstance(m, int) or isinstance(m, bool) or not 0 <= m < row[0] for m in marks)
                    or len(set(marks)) != len(marks)):  # fmt: skip
                raise ValueError(f"mismatches must be distinct image numbers in [0, {row[0]})")
            try:
                with self._transaction(db):
                    db.execute(
                        "INSERT INTO answers (annotator, unit, description, category, mismatches, created, "
                        "request) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (
                            annotator,
                            unit_id,
                            description,
                            category,
                            json.dumps(sorted(marks)),
                            time.time(),
                            request,
                        ),
                    )
            except sqlite3.IntegrityError:
                if request is not None:
                    return False
                raise
        return True

    def answers(self) -> list[dict]:
        """Every stored answer, oldest first."""
        with self.connection() as db:
            rows = db.execute(
                "SELECT a.id, n.name, u.layer, u.unit, a.description, a.category, a.mismatches, a.request "
                "FROM answers a JOIN annotators n ON n.id = a.annotator JOIN units u ON u.id = a.unit "
                "ORDER BY a.id"
            ).fetchall()
        keys = ("id", "annotator", "layer", "unit", "description", "category", "mismatches", "request")
        return [{**dict(zip(keys, r)), "mismatches": json.loads(r[6])} for r in rows]

    # -- results -------------------------------------------------------------------------------

    def results(self) -> dict:
        """Per unit: the agreed label (the most common description among the annotators'
        latest answers), its category (the most common), the precision (the share of the
        unit's images not marked as mismatches, averaged over annotators), the agreement (the
        share of annotators who gave the agreed label) and the number of annotators; per layer,
        how many units have each category (of those with answers)."""
        latest: dict[tuple[str, int], dict[str, dict]] = {}
        for a in self.answers():
            latest.setdefault((a["layer"], a["unit"]), {})[a["annotator"]] = a
        images = {(u["layer"], u["unit"]): u["images"] for u in self.units()}
        units, types = [], {}
        for (layer, unit), by_person in latest.items():
            answers = list(by_person.values())
            labels = Counter(normalise_label(a["description"]) for a in answers)
            label = max(labels, key=lambda k: (labels[k], -_first(answers, k)))
            categories = Counter(a["category"] for a in answers)
            category = max(categories, key=lambda k: (categories[k], -CATEGORIES.index(k)))
            k = images[(layer, unit)]
            precision = sum(1 - len(a["mismatches"]) / k for a in answers) / len(answers)
            agreement = labels[label] / len(answers)
            units.append({"layer": layer, "unit": unit, "label": label, "category": category,
                          "precision": round(precision, 4), "agreement": round(agreement, 4),
                          "annotators": len(answers)})  # fmt: skip
            counts = types.setdefault(layer, dict.fromkeys(CATEGORIES, 0))
            counts[category] += 1
        units.sort(key=lambda r: (r["layer"], r["unit"]))
        return {
            "units": units,
            "types": {layer: {k: v for k, v in c.items() if v} for layer, c in types.items()},
        }


def _first(answers: list[dict], label: str) -> int:
    """The id of the first answer giving ``label`` (ties go to the label given first)."""
    return min(a["id"] for a in answers if normalise_label(a["description"]) == label)
