"""The many-row writes of `store.dialect` (arrays unnested on PostgreSQL, multi-row statements
on SQLite) give the same rows on both databases."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from snapshots.store import dialect
from snapshots.store.db import Database

METADATA = sa.MetaData()
PROBE = sa.Table(
    "dialect_probe",
    METADATA,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(5)),
    sa.Column("data", sa.JSON),
    sa.Column("amount", sa.Float),
    sa.Column("done", sa.Boolean),
    sa.Column("note", sa.Text),
    sa.Column("raw", sa.LargeBinary),
)


@pytest.fixture
def probe(db: Database) -> Iterator[Database]:
    METADATA.create_all(db.engine)
    yield db
    METADATA.drop_all(db.engine)


def _rows(db: Database) -> list[dict[str, object]]:
    with db.read() as tx:
        return [dict(r._mapping) for r in tx.execute(sa.select(PROBE).order_by(PROBE.c.seq))]


def test_insert_upsert_and_update_rows(probe: Database) -> None:
    new = [
        {
            "name": f"n{i}",
            "data": {"i": i, "s": "x'\"{}"} if i % 2 else None,
            "amount": i / 3,
            "done": i == 0,
            "note": None,
        }
        for i in range(7)
    ]
    with probe.write() as tx:
        dialect.insert_rows(tx, PROBE, new)
    stored = _rows(probe)
    assert [r["name"] for r in stored] == [f"n{i}" for i in range(7)]  # seq in the rows' order
    assert stored[1]["data"] == {"i": 1, "s": "x'\"{}"} and stored[1]["amount"] == 1 / 3
    with probe.read() as tx:  # None in a JSON column is SQL NULL, not JSON null
        assert tx.execute(sa.select(sa.func.count()).where(PROBE.c.data.is_(None))).scalar() == 4
    changed = [r | {"name": "u" + r["name"], "data": [r["seq"]]} for r in stored[:3]]
    with probe.write() as tx:
        dialect.upsert_rows(tx, PROBE, changed, key="seq")
        dialect.update_rows(
            tx,
            PROBE,
            [{"seq": stored[5]["seq"], "name": "five"}, {"seq": stored[6]["seq"], "name": None}],
            key="seq",
            same={"note": "set", "done": True},
        )
    after = _rows(probe)
    assert [r["name"] for r in after] == ["un0", "un1", "un2", "n3", "n4", "five", None]
    assert [r["data"] for r in after[:3]] == [[r["seq"]] for r in stored[:3]]
    assert [(r["note"], r["done"]) for r in after[4:]] == [
        (None, False),
        ("set", True),
        ("set", True),
    ]
    assert after[3] == stored[3]


def test_executemany_writes_what_sqlalchemy_would(probe: Database) -> None:
    # On SQLite the rows go to the driver as tuples, through the columns' bind converters.
    rows = [
        {"name": f"m{i}", "data": [{"i": i}, "ü"] if i % 2 else None, "done": i == 1}
        for i in range(4)
    ]
    with probe.write() as tx:
        tx.execute(PROBE.insert(), rows)
        dialect.executemany(tx, PROBE.insert(), [r | {"name": r["name"] + "x"} for r in rows])
        raw = tx.execute(sa.text("SELECT data FROM dialect_probe ORDER BY seq")).scalars().all()
    stored = _rows(probe)
    assert raw[:4] == raw[4:]  # None as JSON null, as SQLAlchemy binds it
    assert [r["name"] for r in stored] == [f"m{i}" for i in range(4)] + [f"m{i}x" for i in range(4)]
    assert [{k: r[k] for k in ("data", "done")} for r in stored[4:]] == [
        {k: r[k] for k in ("data", "done")} for r in rows
    ]


def test_insert_rows_can_skip_the_existing_ones(probe: Database) -> None:
    with probe.write() as tx:
        dialect.insert_rows(tx, PROBE, [{"seq": 1, "name": "a", "data": {"k": [1]}}])
        dialect.insert_rows(
            tx,
            PROBE,
            [{"seq": 1, "name": "b", "data": None}, {"seq": 2, "name": "c", "data": {"k": "ü"}}],
            skip_existing=True,
        )
    assert [(r["seq"], r["name"], r["data"]) for r in _rows(probe)] == [
        (1, "a", {"k": [1]}),
        (2, "c", {"k": "ü"}),
    ]
    with pytest.raises(sa.exc.IntegrityError), probe.write() as tx:
        dialect.insert_rows(tx, PROBE, [{"seq": 2, "name": "d", "data": None}])


def test_text_and_numbers_arrive_as_they_were_sent(probe: Database) -> None:
    # PostgreSQL gets each column as one array literal (`dialect.arrays`): what its syntax
    # quotes or escapes must come back unchanged, and a NULL stay a NULL, not the text "NULL".
    notes = ['a"b', "c\\d", "{e,f}", "NULL", "", " g ", "h\tî😀", '\\"', None]
    amounts = [1 / 3, -0.0, 1e-300, 2.5e300, float("inf"), float("-inf"), 7.0, None, 0.1]
    done = [True, False, None, True, False, None, True, False, None]
    rows = [
        {"name": str(i), "note": note, "amount": amount, "done": flag, "data": [note]}
        for i, (note, amount, flag) in enumerate(zip(notes, amounts, done, strict=True))
    ]
    with probe.write() as tx:
        dialect.insert_rows(tx, PROBE, rows)
    stored = _rows(probe)
    assert [r["note"] for r in stored] == notes
    assert [r["amount"] for r in stored] == amounts
    assert [r["done"] for r in stored] == done
    assert [r["data"] for r in stored] == [[note] for note in notes]
    with probe.write() as tx:  # integers (the key) and mixed kinds the driver sends itself
        dialect.update_rows(
            tx,
            PROBE,
            [
                {"seq": r["seq"], "amount": value}
                for r, value in zip(stored[:3], [1, 2.5, None], strict=True)
            ],
            key="seq",
            same={},
        )
    assert [r["amount"] for r in _rows(probe)[:3]] == [1.0, 2.5, None]


def test_bytes_arrive_as_they_were_sent(probe: Database) -> None:
    # PostgreSQL gets a bytea array in psycopg's binary format (`dialect.arrays`): every byte
    # value, the ones text quoting escapes too, must come back unchanged, as must SQL NULL.
    every = bytes(range(256)) * 30
    raws: list[bytes | None] = [every, b"", None, b'\\x00"{},NULL', every[::-1]]
    with probe.write() as tx:
        dialect.insert_rows(tx, PROBE, [{"name": f"b{i}", "raw": r} for i, r in enumerate(raws)])
        dialect.insert_rows(tx, PROBE, [{"name": "none", "raw": None}])  # of None alone
    stored = _rows(probe)
    assert [r["raw"] for r in stored] == [*raws, None]
    with probe.write() as tx:
        dialect.update_rows(
            tx, PROBE, [{"seq": stored[2]["seq"], "raw": every}], key="seq", same={}
        )
    assert _rows(probe)[2]["raw"] == every


@pytest.mark.postgres
def test_a_value_too_long_for_its_column_fails_on_postgresql(probe: Database) -> None:
    if probe.dialect != "postgresql":
        pytest.skip("SQLite does not enforce column lengths")
    with pytest.raises(sa.exc.DataError), probe.write() as tx:
        dialect.insert_rows(tx, PROBE, [{"name": "toolong", "note": "x"}])
    with probe.write() as tx:
        dialect.insert_rows(tx, PROBE, [{"name": "ok", "note": "x"}])
        seq = _rows_in(tx)[0]
    with pytest.raises(sa.exc.DataError), probe.write() as tx:
        dialect.update_rows(tx, PROBE, [{"seq": seq, "name": "toolong"}], key="seq", same={})
    with pytest.raises(sa.exc.DataError), probe.write() as tx:
        dialect.upsert_rows(tx, PROBE, [{"seq": seq, "name": "toolong", "note": None}], key="seq")


def _rows_in(tx: sa.Connection) -> list[int]:
    return list(tx.execute(sa.select(PROBE.c.seq)).scalars())


def test_lookup_gives_the_first_row_as_its_columns(probe: Database) -> None:
    with probe.write() as tx:
        dialect.insert_rows(
            tx,
            PROBE,
            [
                {"name": "a", "amount": 2.5, "note": "x'\"<"},
                {"name": "b", "amount": 1.0, "note": None},
            ],
        )
    stmt = (
        sa.select(PROBE.c.name, PROBE.c.amount, PROBE.c.note.label("text"))
        .where(PROBE.c.name == sa.bindparam("wanted"))
        .order_by(PROBE.c.seq)
    )
    assert probe.lookup(stmt, {"wanted": "a"}) == {"name": "a", "amount": 2.5, "text": "x'\"<"}
    assert probe.lookup(stmt, {"wanted": "b"}) == {"name": "b", "amount": 1.0, "text": None}
    assert probe.lookup(stmt, {"wanted": "c"}) is None
    # What the read gives, through a transaction and outside one.
    with probe.read() as tx:
        assert dict(tx.execute(stmt, {"wanted": "a"}).one()._mapping) == probe.lookup(
            stmt, {"wanted": "a"}
        )


def test_lookup_fails_as_a_transaction_read_does(db: Database) -> None:
    """A database error is SQLAlchemy's (the console's 503 page catches those)."""
    missing = sa.Table("dialect_missing", sa.MetaData(), sa.Column("name", sa.String(5)))
    with pytest.raises(
        sa.exc.ProgrammingError if db.dialect == "postgresql" else sa.exc.OperationalError
    ):
        db.lookup(sa.select(missing.c.name), {})
