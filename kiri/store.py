"""The SQLite store: one file, KIRI_HOME/kiri.db, shared by every KIRI process.

    with open_store() as store:
        store.add_observation("pulse", {"C": 41.2, "M": 73.9}, source="linux")
        store.observations("pulse", since=time.time() - 3600)

Several processes write at once (the daemon, the drift CLI, the feedback CLI), so the
database runs in WAL mode (readers never block the writer), every write is one short
transaction, and a busy timeout makes a writer wait its turn instead of failing.
"""

import json
import os
import re
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import List, NamedTuple, Tuple

from .atoms.fit import misfit
from . import faults
from .ground import default_home, is_finite_number, one_line, remove_stale_temp_files

BUSY_TIMEOUT = 10.0  # seconds a writer waits for another writer's transaction

ATOM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}\Z")

# An event's kind is the atom's own short name for it (Drift: add, done, switch); the
# store checks only its shape, and the atom's fold turns counts per kind into values.
KIND_MAX = 32
PROJECT_MAX = 200


class StoreError(Exception):
    """A database KIRI cannot use: not SQLite, too new, or a migration that failed."""


class ImportReport(NamedTuple):
    imported: int                      # rows added to the store
    skipped: List[Tuple[int, str]]     # (1-based line number, reason) of the first SKIP_EXAMPLES bad lines
    duplicates: int = 0                # good lines that were already in the store
    skipped_count: int = 0             # bad lines in all


# An import reads a file anyone may have written, so each line is bounded before it is
# parsed (no line can take the memory or the parser's recursion), then checked on its own.
IMPORT_LINE_BYTES = 65536   # an exported reading is a few hundred bytes
IMPORT_DEPTH = 8            # an exported reading nests 2 deep: {"values": {...}}
IMPORT_BATCH = 1000         # good rows per transaction: memory and the write lock stay small
SKIP_EXAMPLES = 5           # bad lines an ImportReport names; the rest are counted
# How far a reading's ts may be ahead of this machine's clock (two machines' clocks differ a
# little): a reading from further in the future would look like the newest one for years.
FUTURE_SLACK = 300.0


class PruneReport(NamedTuple):
    deleted: dict                      # table -> rows deleted
    finished: bool                     # False when max_batches ran out first: prune again to go on


# ---------------------------------------------------------------------------
# Schema. MIGRATIONS[i] takes a database from version i to version i + 1; the
# version lives in PRAGMA user_version. Never edit a migration that has shipped:
# append a new one.

def _migrate_0_to_1(conn):
    # Deduplication: importing the same export twice must not double the data, so
    # (atom, ts, values, synthetic) is UNIQUE and imports use INSERT OR IGNORE.
    # `values` is stored as canonical JSON (sorted keys, no spaces) so that equal
    # dicts are equal text. `synthetic` is part of the key: a synthetic row that
    # happens to equal a real one is stored beside it, never instead of it.
    # The index starts with (atom, ts), so it also serves every time-range query.
    conn.execute("""
        CREATE TABLE observations (
            id        INTEGER PRIMARY KEY,
            atom      TEXT    NOT NULL,
            ts        REAL    NOT NULL,
            "values"  TEXT    NOT NULL,
            source    TEXT    NOT NULL DEFAULT '',
            synthetic INTEGER NOT NULL DEFAULT 0 CHECK (synthetic IN (0, 1))
        )""")
    conn.execute("""
        CREATE UNIQUE INDEX observations_atom_ts
            ON observations (atom, ts, "values", synthetic)""")

    conn.execute("""
        CREATE TABLE scores (
            id             INTEGER PRIMARY KEY,
            atom           TEXT NOT NULL,
            ts             REAL NOT NULL,
            observation_id INTEGER REFERENCES observations (id) ON DELETE SET NULL,
            score          REAL NOT NULL,
            threshold      REAL,
            verdict        TEXT NOT NULL DEFAULT '',
            tokens         TEXT NOT NULL DEFAULT '[]'
        )""")
    conn.execute("CREATE INDEX scores_atom_ts ON scores (atom, ts)")

    # The tables below are filled by Nerve, the notifiers and the feedback CLI.
    # Enumerations (action, source, verdict, state) are checked in Python, not by
    # CHECK constraints, because SQLite can only change a CHECK by rebuilding the table.
    conn.execute("""
        CREATE TABLE decisions (
            id          INTEGER PRIMARY KEY,
            ts          REAL NOT NULL,
            state       TEXT NOT NULL,
            action      TEXT NOT NULL,
            probability REAL,
            source      TEXT NOT NULL
        )""")
    conn.execute("CREATE INDEX decisions_ts ON decisions (ts)")

    conn.execute("""
        CREATE TABLE alerts (
            id          INTEGER PRIMARY KEY,
            ts          REAL NOT NULL,
            decision_id INTEGER REFERENCES decisions (id),
            atom        TEXT NOT NULL,
            message     TEXT NOT NULL,
            state       TEXT NOT NULL DEFAULT 'open'
        )""")
    conn.execute("CREATE INDEX alerts_state ON alerts (state, ts)")

    # One answer per alert: a second tap on a Telegram button must not count twice.
    conn.execute("""
        CREATE TABLE feedback (
            id       INTEGER PRIMARY KEY,
            alert_id INTEGER NOT NULL UNIQUE REFERENCES alerts (id),
            ts       REAL    NOT NULL,
            verdict  TEXT    NOT NULL,
            reward   INTEGER NOT NULL
        )""")

    # Messages waiting to be sent; dedup_key makes enqueueing the same alert idempotent.
    conn.execute("""
        CREATE TABLE outbox (
            id         INTEGER PRIMARY KEY,
            ts         REAL    NOT NULL,
            sink       TEXT    NOT NULL,
            payload    TEXT    NOT NULL,
            dedup_key  TEXT    UNIQUE,
            attempts   INTEGER NOT NULL DEFAULT 0,
            next_try   REAL,
            sent_ts    REAL,
            last_error TEXT
        )""")
    conn.execute("CREATE INDEX outbox_pending ON outbox (next_try) WHERE sent_ts IS NULL")

    conn.execute("CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT NOT NULL)")


def _migrate_1_to_2(conn):
    # Drift's raw task events. The atom learns from periods, not single events, so
    # fold_events() folds the pending events of a period into one observation
    # and records its id in period_id: NULL means "not counted yet", and an event is
    # never counted twice because only NULL rows are ever counted. The partial index
    # holds only pending rows, so finding them stays cheap however long history grows.
    # kind is checked in Python (a short name; which kinds exist is the atom's business).
    conn.execute("""
        CREATE TABLE events (
            id        INTEGER PRIMARY KEY,
            atom      TEXT NOT NULL,
            ts        REAL NOT NULL,
            kind      TEXT NOT NULL,
            project   TEXT NOT NULL DEFAULT '',
            period_id INTEGER REFERENCES observations (id)
        )""")
    conn.execute("CREATE INDEX events_pending ON events (atom, ts) WHERE period_id IS NULL")
    # Serves "which events made this observation" and the foreign key check when
    # an observation is deleted (which the reference refuses while events point at it).
    conn.execute("CREATE INDEX events_period ON events (period_id)")


def _migrate_2_to_3(conn):
    # The feedback loop. situation is a key for "the same thing happening again", so
    # repeats can be merged and cooled down (daemon.same_situation); details keeps the scores and
    # per-token explanations as JSON, so an alert can explain itself long after.
    # An outbox row remembers which alert it carries and the sink's id of the sent
    # message, so a button pressed under that message finds its alert (message_alert).
    # ADD COLUMN with a constant default is cheap: existing rows are not rewritten.
    conn.execute("ALTER TABLE alerts ADD COLUMN situation TEXT NOT NULL DEFAULT ''")
    conn.execute("ALTER TABLE alerts ADD COLUMN details TEXT NOT NULL DEFAULT '{}'")
    conn.execute("ALTER TABLE outbox ADD COLUMN alert_id INTEGER REFERENCES alerts (id)")
    conn.execute("ALTER TABLE outbox ADD COLUMN message_id TEXT")
    conn.execute("CREATE INDEX alerts_situation ON alerts (situation, ts)")
    # Serves labelled_decisions' join and the foreign key check on decisions.
    conn.execute("CREATE INDEX alerts_decision ON alerts (decision_id)")
    conn.execute("CREATE INDEX outbox_message ON outbox (sink, message_id)"
                 " WHERE message_id IS NOT NULL")


def _migrate_3_to_4(conn):
    # A score's likelihood: how unusual the atom's recent readings are together (NULL for
    # scores stored before it existed, and for readings typed in by hand).
    conn.execute("ALTER TABLE scores ADD COLUMN likelihood REAL")


def _migrate_4_to_5(conn):
    # Retention (Store.prune) deletes old observations and alerts. For each deleted row
    # SQLite finds the rows pointing at it (to SET NULL a score's observation_id, to check
    # an outbox row's alert_id), which without an index is a scan of the whole child
    # table per row: 2.7 s for a batch of 500 readings against 100,000 scores, all of it
    # holding the write lock. With these indexes the same batch takes about a millisecond.
    conn.execute("CREATE INDEX scores_observation ON scores (observation_id)")
    conn.execute("CREATE INDEX outbox_alert ON outbox (alert_id)")


def _migrate_5_to_6(conn):
    # An alert's situation can go on for hours (a disk filling over a day): last_ts is the
    # last time a repeat merged into it, so the cooldown runs from then, not from the
    # first reading. NULL (alerts stored before) means "never repeated": ts stands.
    conn.execute("ALTER TABLE alerts ADD COLUMN last_ts REAL")


def _migrate_6_to_7(conn):
    # A decision that merged into a running alert instead of raising its own (a repeat)
    # names that alert in repeat_of, so the owner's answer to the alert labels its repeats
    # too: a dismissed alert that repeated twenty times must not teach Nerve "alert" twenty
    # times against one "suppress". SET NULL: pruning an unanswered alert forgets the link.
    conn.execute("ALTER TABLE decisions ADD COLUMN repeat_of INTEGER REFERENCES alerts (id) ON DELETE SET NULL")
    conn.execute("CREATE INDEX decisions_repeat ON decisions (repeat_of) WHERE repeat_of IS NOT NULL")


MIGRATIONS = [_migrate_0_to_1, _migrate_1_to_2, _migrate_2_to_3, _migrate_3_to_4, _migrate_4_to_5,
              _migrate_5_to_6, _migrate_6_to_7]


# ---------------------------------------------------------------------------
# Validation. Errors are ValueErrors whose message starts with the field's name.

def _check_atom(atom):
    if not isinstance(atom, str) or not ATOM_NAME.match(atom):
        raise ValueError("atom: must be a name of letters, digits and _ "
                         "(not starting with a digit, at most 64 chars), got %r" % (atom,))
    return atom


def _check_number(field, x):
    if is_finite_number(x):
        return x
    # The value is named, not printed whole: it may be a 400-digit number or a page of text.
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise ValueError("%s: must be a number, got %s" % (field, one_line(repr(x), 60)))
    raise ValueError("%s: must be finite, got %s" % (field, one_line(repr(x), 60)))


def _check_values(values):
    if not isinstance(values, dict):
        raise ValueError("values: must be a dict of name -> number, got %s"
                         % type(values).__name__)
    if not values:
        raise ValueError("values: must not be empty")
    for key, x in values.items():
        if not isinstance(key, str) or not key:
            raise ValueError("values: keys must be non-empty strings, got %r" % (key,))
        _check_number("values[%r]" % key, x)
    return values


def _check_ts(ts):
    return float(_check_number("ts", ts))


def _check_text(field, text, non_empty=False, limit=None):
    # non_empty is for names (a sink, an action, a kind): free text may be empty, a name may not.
    what = "a non-empty string" if non_empty else "a string"
    if not isinstance(text, str) or (non_empty and not text):
        raise ValueError("%s: must be %s, got %r" % (field, what, text))
    if limit is not None and len(text) > limit:
        raise ValueError("%s: must be at most %d characters, got %d" % (field, limit, len(text)))
    try:   # SQLite keeps UTF-8, which a lone surrogate (JSON's "\ud800", bytes that were not UTF-8) is not
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError("%s: must be UTF-8 text, got %s (character %d)" % (field, one_line(repr(text), 60), e.start + 1)) \
            from None
    return text


def _check_synthetic(synthetic):
    # 0/1 are accepted too: JSON written by other tools often spells booleans so.
    if isinstance(synthetic, bool) or (isinstance(synthetic, int) and synthetic in (0, 1)):
        return int(synthetic)
    raise ValueError("synthetic: must be true or false, got %r" % (synthetic,))


DECISION_SOURCES = ("rule", "model", "inject")
VERDICTS = {"approve": (1, "approved"), "dismiss": (-1, "dismissed")}  # -> (reward, alert state)


def _check_choice(field, value, choices):
    # isinstance first: an unhashable value (a list) would make `in` raise TypeError.
    if not isinstance(value, str) or value not in choices:
        raise ValueError("%s: must be one of %s, got %r"
                         % (field, ", ".join(repr(c) for c in choices), value))
    return value


def _check_id(field, x, optional=False):
    if x is None and optional:
        return None
    if isinstance(x, bool) or not isinstance(x, int):
        raise ValueError("%s: must be an integer id, got %r" % (field, x))
    return x


def _json_field(field, obj):
    try:
        return _canonical_json(obj)
    except (TypeError, ValueError) as e:
        raise ValueError("%s: must be JSON with finite numbers: %s" % (field, e)) from None


def _canonical_json(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


# -- import: what a line of someone else's file must pass --------------------------------

def _lines(fileobj, limit):
    """(number, line) for each line of a binary file, a line cut at limit + 1 bytes: the rest
    of a longer one is read and dropped, never held whole, and what is kept shows it too long."""
    number = 0
    while True:
        line = fileobj.readline(limit + 1)
        if not line:
            return
        number += 1
        rest = line
        while not rest.endswith(b"\n") and len(rest) > limit:
            rest = fileobj.readline(limit + 1)
        yield number, line


def _nests_deeper(text, limit):
    """Whether [ and { nest more than `limit` deep in JSON text (outside its strings): asked
    before parsing, as the parser recurses once per level."""
    if text.count("[") + text.count("{") <= limit:
        return False   # too few brackets to nest that deep: no need to walk the text
    depth, in_string, escaped = 0, False, False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > limit:
                return True
        elif ch in "]}":
            depth -= 1
    return False


def _check_import_ts(ts, now):
    if ts < 0:
        raise ValueError("ts: %r is before 1970" % ts)
    ahead = from_the_future(ts, now)
    if ahead:
        raise ValueError("ts: %r is %s; a reading cannot come from the future" % (ts, ahead))


def from_the_future(ts, now):
    """How far a reading's ts is ahead of `now` in words, when more than FUTURE_SLACK; else None."""
    return "%.3g h ahead of this machine's clock" % ((ts - now) / 3600) if ts > now + FUTURE_SLACK else None


def _check_fit(specs, atom, values):
    if atom not in specs:
        raise ValueError("atom: %r is not an atom this installation runs (declare [atom:%s] in config.ini"
                         " to import its readings)" % (atom, atom))
    problem = misfit(specs[atom], values)
    if problem:
        raise ValueError("values do not fit %s: %s" % (atom, problem))


# ---------------------------------------------------------------------------

def _query(select, where, order=None, limit=None):
    """(sql, args): `select`, WHERE the (clause, value) pairs of `where` that apply, ORDER BY
    `order` and LIMIT `limit` when given. A clause with a `?` applies when its value is not
    None and takes it as its argument; a clause without one applies when its value is True."""
    used = [(clause, value) for clause, value in where if value is not None and value is not False]
    sql = select + (" WHERE " + " AND ".join(clause for clause, _ in used) if used else "")
    args = [value for clause, value in used if "?" in clause]
    if order is not None:
        sql += " ORDER BY " + order
    if limit is not None:
        sql += " LIMIT ?"
        args.append(int(limit))
    return sql, args


def _decoded(row, *json_columns):
    """A row as a dict, in the SELECT's column order, with the JSON text of json_columns decoded."""
    result = dict(row)
    for column in json_columns:
        result[column] = json.loads(result[column])
    return result


def open_store(home=None):
    """Open home/kiri.db (home defaults to default_home()), creating home with mode 0700 and
    kiri.db with 0600: they hold the machine's history. What cannot work is refused up front
    in one line (StoreError): a home that is a file, a database that is a folder. The temp
    files of atomic writes a kill left in home and home/weights are removed here, at the next start.
    """
    home = Path(home) if home is not None else default_home()
    try:
        home.mkdir(parents=True)
        os.chmod(str(home), 0o700)  # explicit, so a permissive umask cannot widen it
    except FileExistsError:
        # made already (perhaps this instant, by another KIRI process starting with us)
        if not home.is_dir():
            raise StoreError("the KIRI home %s is not a folder: it is a file" % home) from None
    path = home / "kiri.db"
    if path.is_dir():
        raise StoreError("%s is a folder, not KIRI's database" % path)
    _private_database(path)
    for folder in (home, home / "weights"):
        remove_stale_temp_files(folder)
    return Store(path)


def _private_database(path):
    """Create kiri.db with mode 0600 (SQLite would make it 0644, and its -wal and -shm take the
    database's mode), and take group and other access away from an existing one and its -wal
    and -shm (an older KIRI made them 0644). Best effort: what is not ours is left to SQLite."""
    try:
        os.close(os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError:   # there already (an empty file is a new database to SQLite), or not ours to make
        pass
    for end in ("", "-wal", "-shm"):
        try:
            mode = os.stat(str(path) + end).st_mode
            if mode & 0o077:
                os.chmod(str(path) + end, mode & 0o700)
        except OSError:
            continue


PRUNE_BATCH = 500   # rows per delete transaction: about a millisecond of the write lock

# What prune deletes, table by table, in an order that never breaks a foreign key: a row
# goes only after (or without) the rows that point at it. Each condition says what may go.
_PRUNE = (
    # Scores first: a score outliving its reading would only lose its observation_id.
    ("scores", "ts < ?"),
    # A folded event points at its period's observation; a pending one (NULL) still counts.
    ("events", "ts < ? AND period_id IS NOT NULL"),
    ("observations", "ts < ? AND NOT EXISTS (SELECT 1 FROM events e WHERE e.period_id = observations.id)"),
    # Only delivered messages: an unsent one is still owed to its sink.
    ("outbox", "ts < ? AND sent_ts IS NOT NULL"),
    # An answered alert is Nerve's training data; an alert an unsent message carries stays with it.
    ("alerts", "ts < ? AND NOT EXISTS (SELECT 1 FROM feedback f WHERE f.alert_id = alerts.id)"
               " AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.alert_id = alerts.id)"),
    # A decision stays while an alert (so: an answered one) points at it, or while it
    # repeats an answered alert: the answer labels it too (labelled_decisions).
    ("decisions", "ts < ? AND NOT EXISTS (SELECT 1 FROM alerts a WHERE a.decision_id = decisions.id)"
                  " AND NOT EXISTS (SELECT 1 FROM feedback f WHERE f.alert_id = decisions.repeat_of)"),
)


class Store:
    """One connection to a KIRI database. Use as a context manager, or call close()."""

    def __init__(self, path, timeout=BUSY_TIMEOUT, clock=time.time):
        self.path = str(path)
        self.clock = clock  # default timestamp for new rows; tests inject a fixed clock
        # isolation_level=None: no implicit transactions. Reads run in autocommit, and
        # every write opens its own BEGIN IMMEDIATE in _write().
        try:
            self.conn = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
        except sqlite3.DatabaseError as e:   # "unable to open database file": a folder it cannot enter
            raise StoreError("cannot open %s: %s" % (self.path, e)) from e
        self.conn.row_factory = sqlite3.Row
        try:
            self._use_wal(timeout)
            # NORMAL is safe from corruption in WAL mode; a power cut can lose only
            # the last few commits, which a monitor can afford for far fewer fsyncs.
            self.conn.execute("PRAGMA synchronous = NORMAL")
            self.conn.execute("PRAGMA foreign_keys = ON")
            self._migrate()
        except sqlite3.DatabaseError as e:
            self.conn.close()
            raise StoreError("cannot open %s: %s" % (self.path, e)) from e
        except UnicodeDecodeError as e:   # SQLite's message quotes a damaged schema's bytes
            self.conn.close()
            raise StoreError("cannot open %s: its schema is damaged (database disk image is malformed)"
                             % self.path) from e
        except BaseException:
            self.conn.close()
            raise

    def _use_wal(self, timeout):
        # Turning a new database into WAL needs it to itself for a moment, and when
        # another process is in it SQLite says "locked" at once, without waiting out
        # the busy timeout. That happens when two processes create kiri.db together
        # (daemon and CLI on a fresh install), so wait here instead. Once the file
        # is in WAL mode, this pragma is a no-op that never conflicts.
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.conn.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    def _version(self, target):
        # The schema version, refusing one from a newer KIRI: its tables may mean other things.
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if version > target:
            raise StoreError("%s has schema version %d, but this KIRI only knows versions up"
                             " to %d; upgrade KIRI to open it" % (self.path, version, target))
        return version

    def _migrate(self):
        target = len(MIGRATIONS)
        if self._version(target) == target:
            return
        with self._write():
            # Re-read under the write lock: another process may have migrated meanwhile.
            version = self._version(target)
            for i in range(version, target):
                try:
                    MIGRATIONS[i](self.conn)
                except sqlite3.DatabaseError as e:
                    raise StoreError("%s: migration from schema version %d to %d failed: %s"
                                     % (self.path, i, i + 1, e)) from e
            # user_version lives in the database header, so it commits (or rolls
            # back) together with the migrations: a half-migrated db cannot exist.
            self.conn.execute("PRAGMA user_version = %d" % target)

    @contextmanager
    def _write(self, point=None, detail=None):
        # BEGIN IMMEDIATE takes the write lock up front, so waiting for another
        # writer happens in the busy timeout; a deferred transaction that reads and
        # then writes can instead fail at once with "database is locked".
        self.conn.execute("BEGIN IMMEDIATE")
        with self.conn:  # commit on success, roll back on any exception
            yield self.conn
        if point:   # a commit point of the daemon's cycle: the kill tests die here (faults.py)
            faults.point(point, detail)

    def close(self):
        self.conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- observations --------------------------------------------------------

    def _observation_row(self, atom, values, ts=None, source="", synthetic=False):
        # Validated before any transaction starts, so a bad row never holds the lock.
        return (_check_atom(atom),
                self.clock() if ts is None else _check_ts(ts),
                _canonical_json(_check_values(values)),
                _check_text("source", source),
                _check_synthetic(synthetic))

    # OR IGNORE skips rows that break the UNIQUE dedupe index (an observation we
    # already have). It would also hide NOT NULL and CHECK failures, but rows are
    # validated before they get here. (ON CONFLICT DO NOTHING would be exact, but
    # needs SQLite 3.24, newer than some Python 3.9 builds ship with.)
    _INSERT_OBSERVATION = ('INSERT OR IGNORE INTO observations'
                           ' (atom, ts, "values", source, synthetic) VALUES (?, ?, ?, ?, ?)')

    def add_observation(self, atom, values, ts=None, source="", synthetic=False):
        """Store one observation (a dict of raw values) and return its id.

        ts defaults to now. An identical observation (same atom, ts, values and
        synthetic flag) is stored once; adding it again returns the existing id.
        """
        row = self._observation_row(atom, values, ts, source, synthetic)
        with self._write("observation", row[0]) as conn:
            cur = conn.execute(self._INSERT_OBSERVATION, row)
            if cur.rowcount:
                return cur.lastrowid
            return conn.execute(
                'SELECT id FROM observations WHERE atom = ? AND ts = ? AND "values" = ?'
                ' AND synthetic = ?', (row[0], row[1], row[2], row[4])).fetchone()[0]

    def add_observations(self, rows):
        """Store many observations in one transaction; return how many were new.

        rows: dicts with keys atom, values and optionally ts, source, synthetic.
        If any row is invalid, nothing is stored and the ValueError names the row.
        """
        checked = []
        for i, row in enumerate(rows):
            try:
                checked.append(self._observation_row(**row))
            except (ValueError, TypeError) as e:
                raise ValueError("row %d: %s" % (i, e)) from None
        return self._insert_observations(checked)

    def _insert_observations(self, rows):
        with self._write() as conn:
            before = conn.total_changes
            conn.executemany(self._INSERT_OBSERVATION, rows)
            return conn.total_changes - before

    @staticmethod
    def _observation(row):
        return {"id": row["id"], "atom": row["atom"], "ts": row["ts"],
                "values": json.loads(row["values"]), "source": row["source"],
                "synthetic": bool(row["synthetic"])}

    def observations(self, atom, since=None, until=None, limit=None, real_only=False, injected=True):
        """Observations of atom with since <= ts < until, oldest first.

        limit keeps the newest `limit` of them (still returned oldest first), which is
        what "the last N observations" means for training and scoring; the index on
        (atom, ts) is walked newest first and the walk stops there, so older rows are
        never read. real_only leaves out synthetic rows, injected=False the made-up ones
        (`daemon --inject`), in SQL, so the limit counts only the rows that are wanted.
        """
        sql, args = _query("SELECT * FROM observations",
                           [("atom = ?", atom), ("ts >= ?", since), ("ts < ?", until), ("synthetic = 0", real_only),
                            ("source != 'inject'", not injected)],
                           "ts DESC, id DESC", limit)
        newest_first = [self._observation(r) for r in self.conn.execute(sql, args)]
        return newest_first[::-1]

    def observation(self, observation_id):
        row = self.conn.execute("SELECT * FROM observations WHERE id = ?", (observation_id,)).fetchone()
        return None if row is None else self._observation(row)

    def latest_observation(self, atom, real_only=False):
        rows = self.observations(atom, limit=1, real_only=real_only)
        return rows[0] if rows else None

    def count_observations(self, atom=None):
        """{"real": n, "synthetic": m, "injected": k} for atom (or all atoms): injected rows
        (`daemon --inject`, made up by hand) are neither real readings nor synthetic history."""
        counts = {"real": 0, "synthetic": 0, "injected": 0}
        sql, args = _query("SELECT synthetic, source = 'inject', COUNT(*) FROM observations", [("atom = ?", atom)])
        for synthetic, injected, n in self.conn.execute(sql + " GROUP BY 1, 2", args):
            counts["injected" if injected else "synthetic" if synthetic else "real"] += n
        return counts

    def count_real(self, atom, at_most):
        """How many real readings (not synthetic, not injected) an atom has, counted up to
        `at_most`: enough to know whether it may learn, without walking its whole history."""
        row = self.conn.execute("SELECT COUNT(*) FROM (SELECT 1 FROM observations WHERE atom = ? AND synthetic = 0"
                                " AND source != 'inject' LIMIT ?)", (_check_atom(atom), int(at_most))).fetchone()
        return row[0]

    def atoms(self):
        """Sorted names of the atoms that have at least one observation."""
        # DISTINCT walks the (atom, ts, ...) index, not the table.
        return [r[0] for r in self.conn.execute(
            "SELECT DISTINCT atom FROM observations ORDER BY atom")]

    def each_observation(self, atom):
        """Every observation of atom, oldest first, one at a time: a walk over the whole
        history (`kiri check`) that never holds it in memory. Values that are not JSON (a
        database edited by hand) come as their text, for the caller to call unfit."""
        for row in self.conn.execute("SELECT * FROM observations WHERE atom = ? ORDER BY ts, id", (_check_atom(atom),)):
            obs = dict(row, synthetic=bool(row["synthetic"]))
            try:
                obs["values"] = json.loads(obs["values"])
            except ValueError:
                pass
            yield obs

    def forget_observations(self, atom, since=None, until=None, source=None, among=None, dry_run=False):
        """Delete atom's readings with since <= ts < until, of `source`, and among the ids in
        `among` (each filter when given), each with its scores and the task events folded into
        it; return how many readings went (with dry_run: would go, and nothing is deleted).
        PRUNE_BATCH readings per transaction, so the daemon waits at most one batch."""
        sql, args = _query("SELECT id FROM observations",
                           [("atom = ?", _check_atom(atom)),
                            ("ts >= ?", None if since is None else _check_ts(since)),
                            ("ts < ?", None if until is None else _check_ts(until)),
                            ("source = ?", None if source is None else _check_text("source", source))], "id")
        ids = [r[0] for r in self.conn.execute(sql, args)]
        if among is not None:
            among = set(among)
            ids = [i for i in ids if i in among]
        if dry_run:
            return len(ids)
        for start in range(0, len(ids), PRUNE_BATCH):
            batch = ids[start:start + PRUNE_BATCH]
            marks = ",".join("?" * len(batch))
            with self._write() as conn:
                # Events first: a folded event points at its reading (and was counted in it).
                for sql in ("DELETE FROM events WHERE period_id IN (%s)", "DELETE FROM scores WHERE observation_id IN (%s)",
                            "DELETE FROM observations WHERE id IN (%s)"):
                    conn.execute(sql % marks, batch)
        return len(ids)

    # -- events ------------------------------------------------------------------

    def add_event(self, atom, kind, project="", ts=None):
        """Store one event of atom and return its id.

        kind is the atom's short name for what happened (e.g. Drift's 'add'); which
        kinds exist is the atom's to check. ts defaults to now. The event stays
        pending until fold_events() counts it.
        """
        row = (_check_atom(atom),
               self.clock() if ts is None else _check_ts(ts),
               _check_text("kind", kind, non_empty=True, limit=KIND_MAX),
               _check_text("project", project, limit=PROJECT_MAX))
        with self._write() as conn:
            return conn.execute("INSERT INTO events (atom, ts, kind, project) VALUES (?, ?, ?, ?)",
                                row).lastrowid

    def pending_events(self, atom):
        """Events of atom not yet counted by fold_events(), oldest first."""
        return [dict(r) for r in self.conn.execute(
                    "SELECT * FROM events WHERE atom = ? AND period_id IS NULL"
                    " ORDER BY ts, id", (atom,))]

    def fold_events(self, atom, fold, until=None, ts=None, source="events"):
        """Fold atom's pending events with ts < until into one observation; return its id.

        fold(counts) gets {kind: number of those events} and returns the observation's
        values, stored at ts (default: until, which defaults to now). The counted
        events are marked with the observation's id, so they are never counted again.
        With no pending event before until, nothing is written and the result is None.
        """
        _check_atom(atom)
        if not callable(fold):
            raise ValueError("fold: must be a function of the counts per kind, got %r" % (fold,))
        until = self.clock() if until is None else float(_check_number("until", until))
        ts = until if ts is None else _check_ts(ts)
        _check_text("source", source)
        pending = "atom = ? AND period_id IS NULL AND ts < ?"
        # Count, insert and mark in one write transaction: BEGIN IMMEDIATE holds the
        # write lock from the count on, so no other process can count the same events
        # or add one that would be marked here without having been counted.
        with self._write("observation", atom) as conn:
            counts = dict(conn.execute("SELECT kind, COUNT(*) FROM events WHERE " + pending
                                       + " GROUP BY kind", (atom, until)).fetchall())
            if not counts:
                return None
            # A fold that raises or returns bad values rolls back: the events stay pending.
            values = _check_values(fold(counts))
            try:
                # Plain INSERT, not OR IGNORE: folding these events into an existing
                # identical observation would silently lose them from the counts.
                period = conn.execute(
                    'INSERT INTO observations (atom, ts, "values", source, synthetic)'
                    " VALUES (?, ?, ?, ?, 0)",
                    (atom, ts, _canonical_json(values), source)).lastrowid
            except sqlite3.IntegrityError:
                # Rolled back with the transaction, so the events stay pending.
                raise ValueError("ts: %s already has an observation %s at %r; pass another ts"
                                 % (atom, _canonical_json(values), ts)) from None
            conn.execute("UPDATE events SET period_id = ? WHERE " + pending,
                         (period, atom, until))
            return period

    # -- scores ----------------------------------------------------------------

    def add_score(self, atom, score, threshold=None, verdict="", tokens=None, ts=None,
                  observation_id=None, likelihood=None):
        """Store an atom's score of one sequence and return its id.

        tokens: JSON-able per-token detail, e.g. [{"token": "M9", "surprise": 3.1,
        "expected": "M5"}], kept so an alert can explain itself later.
        """
        row = (_check_atom(atom),
               self.clock() if ts is None else _check_ts(ts),
               observation_id,
               float(_check_number("score", score)),
               None if threshold is None else float(_check_number("threshold", threshold)),
               _check_text("verdict", verdict),
               _json_field("tokens", [] if tokens is None else tokens),
               None if likelihood is None else float(_check_number("likelihood", likelihood)))
        with self._write("score", row[0]) as conn:
            return conn.execute(
                "INSERT INTO scores (atom, ts, observation_id, score, threshold, verdict, tokens, likelihood)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)", row).lastrowid

    def reading_ratios(self, atom, limit, exclude_observation=None):
        """score / threshold of an atom's newest `limit` collected readings, oldest first.

        One value per observation (its newest score), and only readings that were really
        collected: not typed in, not injected, not synthetic — the history against which
        "are the recent readings unusual?" is asked. Ratios, not raw scores, so a retrain
        that moves the scale of surprise does not look like a change of the machine.
        """
        sql = ("SELECT s.observation_id, s.score / s.threshold AS ratio FROM scores s"
               " JOIN observations o ON o.id = s.observation_id"
               " WHERE s.atom = ? AND s.threshold > 0 AND o.source != 'inject' AND o.synthetic = 0"
               " ORDER BY s.ts DESC, s.id DESC LIMIT ?")
        seen, ratios = {exclude_observation}, []
        # Twice the rows asked for: an observation scored twice (daemon, then CLI) counts once.
        for row in self.conn.execute(sql, (_check_atom(atom), 2 * int(limit))):
            if row["observation_id"] not in seen and len(ratios) < limit:
                seen.add(row["observation_id"])
                ratios.append(row["ratio"])
        return ratios[::-1]

    def scored_since(self, atom):
        """When the oldest stored score of an atom's collected readings was made (None: none yet)."""
        row = self.conn.execute("SELECT s.ts FROM scores s JOIN observations o ON o.id = s.observation_id"
                                " WHERE s.atom = ? AND s.threshold > 0 AND o.source != 'inject'"
                                " AND o.synthetic = 0 ORDER BY s.ts LIMIT 1", (_check_atom(atom),)).fetchone()
        return None if row is None else row[0]

    def latest_scores(self, atom=None, limit=10, since=None):
        """The newest scores (of atom, or of all atoms; with ts >= since), newest first."""
        sql, args = _query("SELECT id, atom, ts, observation_id, score, threshold, verdict, likelihood, tokens"
                           " FROM scores", [("atom = ?", atom), ("ts >= ?", since)], "ts DESC, id DESC", limit)
        return [_decoded(r, "tokens") for r in self.conn.execute(sql, args)]

    # -- decisions, alerts, feedback ---------------------------------------------

    def add_decision(self, state, action, probability=None, source="rule", ts=None):
        """Store one Nerve decision and return its id.

        state: the dict Nerve decided on (stored as JSON); action: the action token;
        probability: the model's probability of action, if a model chose it;
        source: 'rule', 'model' or 'inject'.
        """
        if not isinstance(state, dict):
            raise ValueError("state: must be a dict, got %s" % type(state).__name__)
        if probability is not None:
            probability = float(_check_number("probability", probability))
            if not 0.0 <= probability <= 1.0:
                raise ValueError("probability: must be between 0 and 1, got %r" % probability)
        row = (self.clock() if ts is None else _check_ts(ts),
               _json_field("state", state),
               _check_text("action", action, non_empty=True),
               probability,
               _check_choice("source", source, DECISION_SOURCES))
        with self._write("decision", row[2]) as conn:
            return conn.execute("INSERT INTO decisions (ts, state, action, probability, source)"
                                " VALUES (?, ?, ?, ?, ?)", row).lastrowid

    def decisions(self, since=None, limit=None):
        """Decisions with ts >= since, oldest first; limit keeps the newest `limit`."""
        sql, args = _query("SELECT * FROM decisions", [("ts >= ?", since)], "ts DESC, id DESC", limit)
        newest_first = [_decoded(r, "state") for r in self.conn.execute(sql, args)]
        return newest_first[::-1]

    def add_alert(self, atom, message, decision_id=None, situation="", details=None, ts=None, sinks=()):
        """Store one alert (state 'open') and return its id.

        situation: what the alert is about, for merging repeats (see alerts.same_situation);
        details: a JSON-able dict, e.g. the host and the scores with per-token explanations;
        sinks: the names of the sinks it must reach: each gets an outbox row in the same
        transaction, whose payload is the alert (alerts.Alert.to_json's form).
        """
        if details is not None and not isinstance(details, dict):
            raise ValueError("details: must be a dict, got %s" % type(details).__name__)
        row = (self.clock() if ts is None else _check_ts(ts),
               _check_id("decision_id", decision_id, optional=True),
               _check_atom(atom),
               _check_text("message", message),
               _check_text("situation", situation),
               _json_field("details", {} if details is None else details))
        sinks = [_check_text("sink", sink, non_empty=True) for sink in sinks]
        with self._write("alert") as conn:
            alert_id = conn.execute(
                "INSERT INTO alerts (ts, decision_id, atom, message, situation, details)"
                " VALUES (?, ?, ?, ?, ?, ?)", row).lastrowid
            payload = _canonical_json(dict(json.loads(row[5]), id=alert_id, ts=row[0], atom=atom,
                                           message=message, situation=situation))
            conn.executemany("INSERT INTO outbox (ts, sink, payload, dedup_key, alert_id, next_try)"
                             " VALUES (?, ?, ?, ?, ?, ?)",
                             [(row[0], sink, payload, f"{sink}:alert:{alert_id}", alert_id, row[0]) for sink in sinks])
            return alert_id

    _SELECT_ALERTS = ("SELECT a.*, f.verdict, f.reward, f.ts AS feedback_ts"
                      " FROM alerts a LEFT JOIN feedback f ON f.alert_id = a.id")

    @staticmethod
    def _alert(r):
        feedback = None
        if r["verdict"] is not None:
            feedback = {"verdict": r["verdict"], "reward": r["reward"], "ts": r["feedback_ts"]}
        return {"id": r["id"], "ts": r["ts"], "last_ts": r["last_ts"] or r["ts"], "decision_id": r["decision_id"],
                "atom": r["atom"], "message": r["message"], "situation": r["situation"],
                "details": json.loads(r["details"]), "state": r["state"], "feedback": feedback}

    def alert(self, alert_id):
        """One alert by id (with its feedback, or feedback None), or None."""
        row = self.conn.execute(self._SELECT_ALERTS + " WHERE a.id = ?", (alert_id,)).fetchone()
        return None if row is None else self._alert(row)

    def alerts(self, state=None, limit=100, since=None, active_since=None):
        """The newest alerts (in state 'open', 'approved' or 'dismissed', or all; with ts >=
        since, or last seen (last_ts) >= active_since, when given), newest first."""
        sql, args = _query(self._SELECT_ALERTS, [("a.state = ?", state), ("a.ts >= ?", since),
                                                 ("COALESCE(a.last_ts, a.ts) >= ?", active_since)],
                           "a.ts DESC, a.id DESC", limit)
        return [self._alert(r) for r in self.conn.execute(sql, args)]

    def approved_spans(self, atom, since=None):
        """(first, last seen) times of the alerts the owner approved that flagged `atom`
        (as their main atom or among their scores), last seen at `since` or later; oldest first."""
        sql, args = _query("SELECT atom, ts, COALESCE(last_ts, ts) AS last, details FROM alerts",
                           [("state = 'approved'", True), ("COALESCE(last_ts, ts) >= ?", since)], "ts", None)
        spans = []
        for r in self.conn.execute(sql, args):
            flagged = {s.get("atom") for s in json.loads(r["details"]).get("scores", []) if isinstance(s, dict)}
            if atom == r["atom"] or atom in flagged:
                spans.append((r["ts"], r["last"]))
        return spans

    def alert_seen(self, alert_id, ts, decision_id=None, going_on=True):
        """A repeat merged into this alert at ts. going_on: its situation is still going on,
        so its cooldown runs from ts. The decision that saw the repeat, if given, becomes
        one of the alert's repeats, labelled by its answer (labelled_decisions)."""
        ts, decision_id = _check_ts(ts), _check_id("decision_id", decision_id, optional=True)
        with self._write("alert_seen") as conn:
            if going_on:
                conn.execute("UPDATE alerts SET last_ts = MAX(COALESCE(last_ts, ts), ?) WHERE id = ?",
                             (ts, alert_id))
            if decision_id is not None:
                conn.execute("UPDATE decisions SET repeat_of = ? WHERE id = ?", (alert_id, decision_id))

    def add_feedback(self, alert_id, verdict, ts=None):
        """Record the user's answer to an alert: 'approve' (+1) or 'dismiss' (-1).

        Sets the alert's state to 'approved' / 'dismissed'. An alert has one answer:
        a second one replaces the first; the result is True when that changed the
        verdict (the same answer twice is not a replacement). An unknown alert_id
        raises KeyError.
        """
        _check_id("alert_id", alert_id)
        reward, state = VERDICTS[_check_choice("verdict", verdict, tuple(VERDICTS))]
        ts = self.clock() if ts is None else _check_ts(ts)
        with self._write("feedback") as conn:
            if conn.execute("SELECT 1 FROM alerts WHERE id = ?", (alert_id,)).fetchone() is None:
                raise KeyError("alert %d does not exist" % alert_id)
            earlier = conn.execute("SELECT verdict FROM feedback WHERE alert_id = ?", (alert_id,)).fetchone()
            if earlier is None:
                conn.execute("INSERT INTO feedback (alert_id, ts, verdict, reward)"
                             " VALUES (?, ?, ?, ?)", (alert_id, ts, verdict, reward))
            else:  # UPDATE, so a replaced answer keeps its row id
                conn.execute("UPDATE feedback SET ts = ?, verdict = ?, reward = ? WHERE alert_id = ?",
                             (ts, verdict, reward, alert_id))
            conn.execute("UPDATE alerts SET state = ? WHERE id = ?", (state, alert_id))
            return earlier is not None and earlier[0] != verdict

    def decision_counts(self):
        """(decisions, decisions whose alert was answered): what Nerve's readiness needs, counted in SQL."""
        row = self.conn.execute(
            "SELECT COUNT(DISTINCT d.id), COUNT(DISTINCT a.decision_id) FROM decisions d"
            " LEFT JOIN alerts a ON a.decision_id = d.id"
            " AND EXISTS (SELECT 1 FROM feedback f WHERE f.alert_id = a.id)").fetchone()
        return row[0], row[1]

    def alert_counts(self):
        """{(atom, state): alerts}. A scan of `alerts`, which stays small: a few rows a day at most
        (one per situation, repeats merge), retention deletes the unanswered ones, and each one
        it keeps took a person's answer."""
        return {(atom, state): n for atom, state, n in
                self.conn.execute("SELECT atom, state, COUNT(*) FROM alerts GROUP BY atom, state")}

    def answer_counts(self):
        """{verdict: answers}. A scan of `feedback`: one row per alert a person answered."""
        return dict(self.conn.execute("SELECT verdict, COUNT(*) FROM feedback GROUP BY verdict").fetchall())

    def labelled_decisions(self, since=None):
        """Every decision (ts >= since), oldest first, with the answer to its alert.

        verdict and reward are None when no alert of the decision was answered. One
        row per decision: if several of its alerts were answered, the latest answer wins.
        A decision that only repeated a running alert takes that alert's answer, and says
        so in repeat_of (its alert's id; None for a decision that raised its own).
        """
        sql, args = _query("SELECT d.id, d.ts, d.state, d.action, d.source, d.repeat_of,"
                           " COALESCE(f.verdict, r.verdict) AS verdict, COALESCE(f.reward, r.reward) AS reward"
                           " FROM decisions d LEFT JOIN feedback f ON f.id = ("
                           "   SELECT f2.id FROM alerts a JOIN feedback f2 ON f2.alert_id = a.id"
                           "   WHERE a.decision_id = d.id ORDER BY f2.ts DESC, f2.id DESC LIMIT 1)"
                           " LEFT JOIN feedback r ON r.alert_id = d.repeat_of",
                           [("d.ts >= ?", since)], "d.ts, d.id")
        return [_decoded(r, "state") for r in self.conn.execute(sql, args)]

    # -- outbox ------------------------------------------------------------------

    def enqueue(self, sink, payload, dedup_key, alert_id=None, ts=None):
        """Queue a message for sink and return its id, or None if dedup_key is queued already.

        payload: any JSON-able value (returned decoded by outbox_due). It is due at ts.
        """
        ts = self.clock() if ts is None else _check_ts(ts)
        row = (ts, _check_text("sink", sink, non_empty=True), _json_field("payload", payload),
               _check_text("dedup_key", dedup_key, non_empty=True),
               _check_id("alert_id", alert_id, optional=True), ts)
        with self._write("enqueue", row[1]) as conn:
            # OR IGNORE: the row is validated above, so only the dedup_key can conflict.
            cur = conn.execute("INSERT OR IGNORE INTO outbox"
                               " (ts, sink, payload, dedup_key, alert_id, next_try)"
                               " VALUES (?, ?, ?, ?, ?, ?)", row)
            return cur.lastrowid if cur.rowcount else None

    # What a sender needs to know about a message; outbox_row adds how its delivery went.
    _OUTBOX_COLUMNS = "id, ts, sink, payload, dedup_key, alert_id, attempts"

    def outbox_due(self, sink, now):
        """Unsent messages of sink with next_try <= now, oldest first."""
        return [_decoded(r, "payload") for r in self.conn.execute(
            "SELECT " + self._OUTBOX_COLUMNS + " FROM outbox"
            " WHERE sent_ts IS NULL AND sink = ? AND next_try <= ? ORDER BY ts, id", (sink, now))]

    def _update_outbox(self, outbox_id, sql, args, point):
        with self._write(point) as conn:
            if not conn.execute(sql, args + (outbox_id,)).rowcount:
                raise KeyError("outbox %r does not exist" % (outbox_id,))

    def outbox_sent(self, outbox_id, message_id=None, ts=None):
        """Mark a message sent (at ts, default now), with the sink's id for it."""
        if message_id is not None:
            if isinstance(message_id, bool) or not isinstance(message_id, (str, int)):
                raise ValueError("message_id: must be a string or integer, got %r"
                                 % (message_id,))
            message_id = str(message_id)  # Telegram's ids are ints; other sinks' are text
        ts = self.clock() if ts is None else _check_ts(ts)
        self._update_outbox(outbox_id, "UPDATE outbox SET sent_ts = ?, message_id = ?"
                            " WHERE id = ?", (ts, message_id), "outbox_sent")

    def outbox_failed(self, outbox_id, error, next_try):
        """Count a failed send, keep str(error), and retry no earlier than next_try."""
        next_try = float(_check_number("next_try", next_try))
        self._update_outbox(outbox_id, "UPDATE outbox SET attempts = attempts + 1,"
                            " last_error = ?, next_try = ? WHERE id = ?", (str(error), next_try), "outbox_failed")

    def outbox_pending(self, sink=None):
        """How many messages (of sink, or of all sinks) are not sent yet."""
        sql, args = _query("SELECT COUNT(*) FROM outbox", [("sent_ts IS NULL", True), ("sink = ?", sink)])
        return self.conn.execute(sql, args).fetchone()[0]

    def outbox_row(self, outbox_id):
        """Everything about one outbox row, or None."""
        row = self.conn.execute("SELECT " + self._OUTBOX_COLUMNS + ", next_try, sent_ts, message_id, last_error"
                                " FROM outbox WHERE id = ?", (outbox_id,)).fetchone()
        return None if row is None else _decoded(row, "payload")

    def message_alert(self, sink, message_id):
        """The id of the alert that sink's sent message message_id carried, or None."""
        row = self.conn.execute(
            "SELECT alert_id FROM outbox WHERE sink = ? AND message_id = ?"
            " ORDER BY id DESC LIMIT 1", (sink, str(message_id))).fetchone()
        return None if row is None else row[0]

    # -- retention ---------------------------------------------------------------

    def prune(self, before_ts, batch=PRUNE_BATCH, max_batches=None):
        """Delete what is older than before_ts and no longer needed; returns a PruneReport.

        Goes: readings, scores, decisions, delivered outbox rows, Drift's folded events and
        unanswered alerts. Stays, whatever its age: feedback, every answered alert and the
        decision it came from (Nerve learns from them), pending events, unsent messages,
        and any row one of those still points at. Rows go `batch` at a time, each batch
        its own short transaction, so a cycle or another writer waits at most one batch;
        with max_batches the call stops after that many batches that deleted something
        (a table with nothing to delete costs one look) and says it is not finished.
        """
        before_ts = _check_ts(before_ts)
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ValueError("batch: must be a whole number of rows, at least 1, got %r" % (batch,))
        deleted = {table: 0 for table, _ in _PRUNE}
        batches = 0
        for table, where in _PRUNE:
            while True:
                if max_batches is not None and batches >= max_batches:
                    return PruneReport(deleted, finished=False)
                with self._write("prune", table) as conn:
                    n = conn.execute("DELETE FROM %s WHERE id IN (SELECT id FROM %s WHERE %s LIMIT ?)"
                                     % (table, table, where), (before_ts, batch)).rowcount
                batches += n > 0
                deleted[table] += n
                if n < batch:
                    break
        return PruneReport(deleted, finished=True)

    def damage(self, quick=False, limit=20):
        """What SQLite finds wrong in the database file: at most `limit` of its messages, []
        when the file is sound. PRAGMA integrity_check, or with `quick` quick_check, which
        reads every page but does not compare the indexes with their tables (tens of ms for
        months of readings). A file too damaged to be checked at all is one message."""
        try:
            found = [row[0] for row in self.conn.execute(
                "PRAGMA %s(%d)" % ("quick_check" if quick else "integrity_check", limit))]
        except sqlite3.DatabaseError as e:
            return [str(e)]
        if found == ["ok"]:
            return []
        # A message may span lines, under a header naming the schema ("*** in database main ***").
        return [line for message in found for line in message.splitlines()
                if line.strip() and not line.startswith("*** ")][:limit]

    def size_bytes(self):
        """The database's size on disk: kiri.db and its write-ahead log."""
        total = 0
        for path in (self.path, self.path + "-wal"):
            try:
                total += os.path.getsize(path)
            except OSError:   # no log yet (or just checkpointed away)
                pass
        return total

    # -- small persisted state ---------------------------------------------------

    def get_kv(self, key, default=None):
        row = self.conn.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def set_kv(self, key, value):
        """Store any JSON-able value under key (JSON, so 42 comes back as 42, not '42')."""
        text = _canonical_json(value)
        with self._write("kv", key) as conn:
            conn.execute("INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)", (key, text))

    # -- JSONL -------------------------------------------------------------------

    def export_jsonl(self, fileobj, atom=None, hosts=None):
        """Write observations (of atom, or all) as JSON lines, oldest first; return the count.
        hosts: {atom: the machine it watches}, written as each line's "host" (import ignores it)."""
        sql, args = _query("SELECT * FROM observations", [("atom = ?", atom)], "ts, id")
        count = 0
        for row in self.conn.execute(sql, args):
            line = self._observation(row)
            del line["id"]  # ids are this database's own; an import gives each row a new one
            if hosts and row["atom"] in hosts:
                line["host"] = hosts[row["atom"]]
            fileobj.write(json.dumps(line, allow_nan=False) + "\n")
            count += 1
        return count

    def import_jsonl(self, fileobj, specs=None):
        """Import JSON lines as written by export_jsonl from a binary file; return an ImportReport.

        Each line is checked on its own, and a bad one is skipped with its reason, whatever
        is wrong with it: not UTF-8, longer than IMPORT_LINE_BYTES, nested deeper than
        IMPORT_DEPTH, not JSON, a field missing or of the wrong kind, a number that is not
        finite, a ts before 1970 or more than FUTURE_SLACK ahead of this machine's clock;
        with `specs` ({atom: AtomSpec}, the atoms this installation runs) also an atom not
        among them, or values that do not fit its schema (atoms/fit.py). Good lines are
        stored IMPORT_BATCH at a time, each batch one transaction. Nothing stored is ever
        changed, and lines already in the store are not added again, so importing the same
        file twice is harmless. A line without "source" gets source 'import'.
        """
        now = self.clock()
        rows, examples = [], []
        imported = good = skipped = 0
        for number, line in _lines(fileobj, IMPORT_LINE_BYTES):
            try:
                row = self._import_row(line, specs, now)
            except ValueError as e:
                skipped += 1
                if len(examples) < SKIP_EXAMPLES:
                    examples.append((number, str(e)))
                continue
            if row is not None:
                rows.append(row)
            if len(rows) == IMPORT_BATCH:
                imported, good, rows = imported + self._insert_observations(rows), good + len(rows), []
        if rows:
            imported, good = imported + self._insert_observations(rows), good + len(rows)
        return ImportReport(imported=imported, skipped=examples, duplicates=good - imported, skipped_count=skipped)

    def _import_row(self, line, specs, now):
        """The store row of one line of an import (bytes), or None for a blank line;
        a ValueError says what is wrong with it."""
        if len(line) > IMPORT_LINE_BYTES:
            raise ValueError("longer than %d bytes" % IMPORT_LINE_BYTES)
        try:
            text = line.decode("utf-8").lstrip("\ufeff")   # a BOM: some editors start a file with one
        except UnicodeDecodeError as e:
            raise ValueError("not UTF-8 (byte 0x%02x at column %d)" % (line[e.start], e.start + 1)) from None
        if not text.strip():
            return None
        if _nests_deeper(text, IMPORT_DEPTH):
            raise ValueError("JSON nested deeper than %d levels" % IMPORT_DEPTH)
        try:
            # json accepts NaN and Infinity; they are refused below, by a check that
            # can name the field they are in.
            obj = json.loads(text)
        except ValueError as e:  # json.JSONDecodeError is a ValueError; so is a 5000-digit number
            raise ValueError("not JSON: %s" % e) from None
        if not isinstance(obj, dict):
            raise ValueError("not a JSON object, got %s" % type(obj).__name__)
        for field in ("atom", "ts", "values"):
            if field not in obj:
                raise ValueError("%s: missing" % field)
        row = self._observation_row(obj["atom"], obj["values"], obj["ts"],
                                    obj.get("source", "import"), obj.get("synthetic", False))
        _check_import_ts(row[1], now)
        if specs is not None:
            _check_fit(specs, obj["atom"], obj["values"])
        return row
