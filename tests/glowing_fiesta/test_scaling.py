"""docs/SCALING.md's plan for distributing the store by `metric_id` (Citus), against the schema
the migrations make, read from PostgreSQL's own catalog.

Citus is not packaged in Debian 12 for the machines this project is built on, so no Citus
cluster runs here: what is checked is that every table has a placement in the plan, that the
changes the plan lists before distribution are exactly the rules' gaps in today's schema (a
distributed table lacking `metric_id`, a unique key of one without it), and that every foreign
key is one Citus allows between those placements.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.db import connection

pytestmark = pytest.mark.django_db

DOC = Path(__file__).resolve().parents[2] / "docs" / "SCALING.md"
COLUMN = "metric_id"
DISTRIBUTED, REFERENCE, LOCAL = "distributed", "reference", "local"


@dataclass(frozen=True)
class Row:
    pattern: str
    placement: str
    changes: str


def _plan() -> list[Row]:
    text = DOC.read_text()
    header = "| table | placement | what must change first |"
    assert header in text, f"docs/SCALING.md has no table starting {header!r}"
    rows = []
    for line in text.split(header, 1)[1].splitlines()[2:]:
        if not line.startswith("|"):
            break
        name, placement, changes = (cell.strip() for cell in line.strip("|").split("|"))
        kind = placement.split()[0]
        assert kind in (DISTRIBUTED, REFERENCE, LOCAL), line
        if kind == DISTRIBUTED:
            assert placement == f"distributed by `{COLUMN}`", line
        rows.append(Row(name.strip("`"), kind, changes))
    return rows


def _tables() -> dict[str, dict]:
    """Every table of the schema (partitions counted with their parent): its columns and the
    column lists of its unique indexes."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT c.relname,
                   (SELECT array_agg(a.attname::text) FROM pg_attribute a
                    WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped),
                   (SELECT array_agg(array_to_string(ARRAY(
                        SELECT a.attname FROM unnest(i.indkey) WITH ORDINALITY k(attnum, n)
                        JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
                        ORDER BY k.n), ','))
                    FROM pg_index i WHERE i.indrelid = c.oid AND i.indisunique)
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')
              AND NOT c.relispartition
            """
        )
        return {
            name: {"columns": set(columns), "unique": [tuple(u.split(",")) for u in uniques or []]}
            for name, columns, uniques in cursor.fetchall()
        }


def _foreign_keys() -> list[tuple[str, str, tuple[str, ...]]]:
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT r.relname, t.relname,
                   ARRAY(SELECT a.attname::text FROM unnest(c.conkey) k(attnum)
                         JOIN pg_attribute a ON a.attrelid = r.oid AND a.attnum = k.attnum)
            FROM pg_constraint c JOIN pg_class r ON r.oid = c.conrelid
            JOIN pg_class t ON t.oid = c.confrelid
            WHERE c.contype = 'f' AND NOT r.relispartition
              AND r.relnamespace = current_schema()::regnamespace
            """
        )
        return [(source, target, tuple(columns)) for source, target, columns in cursor.fetchall()]


def _placements(plan: list[Row], tables: dict[str, dict]) -> dict[str, Row]:
    found: dict[str, Row] = {}
    unplaced = []
    for table in tables:
        rows = [row for row in plan if fnmatch.fnmatchcase(table, row.pattern)]
        if len(rows) != 1:
            unplaced.append(f"{table}: {len(rows)} rows")
        else:
            found[table] = rows[0]
    assert not unplaced, f"tables without exactly one placement in docs/SCALING.md: {unplaced}"
    unused = [row.pattern for row in plan if row not in found.values()]
    assert not unused, f"docs/SCALING.md places tables the schema does not have: {unused}"
    return found


def _listed_key_changes(changes: str) -> dict[tuple[str, ...], tuple[str, ...]]:
    pairs = re.findall(r"unique `\(([^)]*)\)` → `\(([^)]*)\)`", changes)
    return {
        tuple(c.strip() for c in old.split(",")): tuple(c.strip() for c in new.split(","))
        for old, new in pairs
    }


def test_every_table_has_one_placement_in_the_plan():
    placements = _placements(_plan(), _tables())
    assert placements["metric_points"].placement == DISTRIBUTED
    assert placements["metrics"].placement == REFERENCE
    assert placements["ingest_batches"].placement == LOCAL


def test_the_changes_listed_before_distribution_are_exactly_the_schemas_gaps():
    tables = _tables()
    placements = _placements(_plan(), tables)
    for table, row in placements.items():
        if row.placement != DISTRIBUTED:
            continue
        missing_column = COLUMN not in tables[table]["columns"]
        assert ("add `metric_id`" in row.changes) == missing_column, (
            f"{table}: {'lacks' if missing_column else 'has'} {COLUMN}; the plan says "
            f"{row.changes!r}"
        )
        gaps = {key for key in tables[table]["unique"] if COLUMN not in key}
        listed = _listed_key_changes(row.changes)
        assert set(listed) == gaps, f"{table}: unique keys without {COLUMN}: {sorted(gaps)}"
        for old, new in listed.items():
            assert new == (COLUMN, *old), f"{table}: {old} must become ({COLUMN}, …{old})"
        if not missing_column and not gaps:
            assert row.changes.startswith("nothing"), f"{table}: {row.changes!r}"


def test_every_foreign_key_is_one_citus_allows_between_the_placements():
    placements = _placements(_plan(), _tables())
    keys = _foreign_keys()
    assert ("series", "metrics", (COLUMN,)) in keys
    refused = []
    for source, target, columns in keys:
        kind, to = placements[source].placement, placements[target].placement
        allowed = {
            DISTRIBUTED: to == REFERENCE or (to == DISTRIBUTED and COLUMN in columns),
            REFERENCE: to == REFERENCE,
            LOCAL: to in (REFERENCE, LOCAL),
        }[kind]
        if not allowed:
            refused.append(f"{source} ({kind}) → {target} ({to}) on {columns}")
    assert not refused, f"foreign keys Citus refuses: {refused}"
