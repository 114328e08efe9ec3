#!/usr/bin/env python3
"""Independent checker of a Tandem fault-injection soak.

Reads what the soak's clients saw (observations.jsonl), what the Postgres event log holds and what
the events topic on Kafka holds, and checks that nothing acknowledged was lost, applied twice or
reordered. It shares no code or types with Tandem: it reads the tables with SQL, decodes the Kafka
records with Python classes generated from proto/ at run time, and applies operations with its own
implementation of the wire form of docs/PROTOCOL.md.

    python check.py --manifest MANIFEST.json --out RESULT.json

Exit status: 0 when every check passes, 1 when any fails, 2 on a usage, input or connection error
(then RESULT.json, when it can be written, holds {"ok": false, "error": "..."}).

The input format is described in integration-tests/chaos/README.md.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable

MAX_EXAMPLES = 20
U64 = (1 << 64) - 1
REPO_ROOT = Path(__file__).resolve().parents[2]


class InputError(Exception):
    """A usage, input or connection problem: no verdict is possible (exit 2)."""


# --------------------------------------------------------------------------------------------------
# Results


class Check:
    """One check's outcome: how many violations, and up to MAX_EXAMPLES of them."""

    def __init__(self, name: str, what: str):
        self.name = name
        self.what = what
        self.count = 0
        self.examples: list[dict[str, Any]] = []
        self.by_kind: dict[str, int] = defaultdict(int)
        self.checked = 0

    def fail(self, kind: str, **detail: Any) -> None:
        self.count += 1
        self.by_kind[kind] += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append({"kind": kind, **detail})

    @property
    def ok(self) -> bool:
        return self.count == 0

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "count": self.count,
            "checked": self.checked,
            "by_kind": dict(sorted(self.by_kind.items())),
            "examples": self.examples,
        }

    def summary(self) -> str:
        verdict = "ok  " if self.ok else "FAIL"
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(self.by_kind.items()))
        tail = f": {self.count} violation(s) ({kinds})" if self.count else ""
        return f"{verdict} {self.name}: {self.what}; {self.checked} checked{tail}"


# --------------------------------------------------------------------------------------------------
# Operations: the wire form of docs/PROTOCOL.md, applied independently of libs/ot.


class OpError(Exception):
    pass


def parse_op(value: Any) -> list[tuple[str, Any]]:
    """A JSON operation as components ("r", n) / ("i", s) / ("d", n), in any form (zero counts,
    empty inserts and adjacent components of one kind are accepted, as the server accepts them)."""
    if not isinstance(value, list):
        raise OpError("not_an_array")
    out: list[tuple[str, Any]] = []
    for c in value:
        if isinstance(c, bool) or not isinstance(c, (int, str)):
            raise OpError("bad_component")
        if isinstance(c, str):
            out.append(("i", c))
        elif c > 0:
            out.append(("r", c))
        elif c < 0:
            out.append(("d", -c))
    return out


def normalize(components: Iterable[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """Normal form: no empty component, adjacent ones of a kind merged, an insert next to a delete
    before it. Only used to compare two encodings of one op (Kafka's and Postgres')."""
    out: list[tuple[str, Any]] = []
    for kind, v in components:
        if (kind == "i" and v == "") or (kind != "i" and v == 0):
            continue
        if kind == "i" and out and out[-1][0] == "d":
            # Move the insert before the run of deletes (merging with an insert before it).
            d = out.pop()
            if out and out[-1][0] == "i":
                out[-1] = ("i", out[-1][1] + v)
            else:
                out.append(("i", v))
            out.append(d)
            continue
        if out and out[-1][0] == kind:
            out[-1] = (kind, out[-1][1] + v)
        else:
            out.append((kind, v))
    return out


def apply_op(text: str, components: list[tuple[str, Any]]) -> str:
    """The text after the op. Python strings index code points, which is the protocol's unit."""
    pieces: list[str] = []
    pos = 0
    n = len(text)
    for kind, v in components:
        if kind == "i":
            pieces.append(v)
        elif kind == "r":
            if pos + v > n:
                raise OpError("base_length_mismatch")
            pieces.append(text[pos : pos + v])
            pos += v
        else:
            if pos + v > n:
                raise OpError("base_length_mismatch")
            pos += v
    if pos != n:
        raise OpError("base_length_mismatch")
    return "".join(pieces)


def proto_op(components: Iterable[Any]) -> list[tuple[str, Any]]:
    """A repeated tandem.v1.Component as components; an unset oneof is an error."""
    out: list[tuple[str, Any]] = []
    for c in components:
        which = c.WhichOneof("kind")
        if which == "retain":
            out.append(("r", c.retain))
        elif which == "insert":
            out.append(("i", c.insert))
        elif which == "delete":
            out.append(("d", c.delete))
        else:
            raise OpError("bad_component")
    return out


# --------------------------------------------------------------------------------------------------
# Inputs


def load_manifest(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            m = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"cannot read the manifest {path}: {e}") from e
    need = {
        "postgres_url": str,
        "brokers": str,
        "events_topic": str,
        "partitions": int,
        "observations": str,
        "docs": list,
    }
    if not isinstance(m, dict):
        raise InputError(f"manifest {path}: not a JSON object")
    for key, typ in need.items():
        if key not in m or not isinstance(m[key], typ) or isinstance(m[key], bool):
            raise InputError(f"manifest {path}: field {key!r} missing or not a {typ.__name__}")
    if not all(isinstance(d, str) for d in m["docs"]):
        raise InputError(f"manifest {path}: docs must be strings")
    obs = Path(m["observations"])
    if not obs.is_absolute():
        # Relative to the manifest's folder.
        m["observations"] = str(Path(path).resolve().parent / obs)
    return m


def _field(rec: dict[str, Any], key: str, typ: type, where: str) -> Any:
    v = rec.get(key)
    if not isinstance(v, typ) or isinstance(v, bool):
        raise InputError(f"{where}: field {key!r} missing or not a {typ.__name__}")
    return v


class Observations:
    def __init__(self) -> None:
        # (doc, client, seq) -> list of (version, line number)
        self.acks: dict[tuple[str, str, int], list[tuple[int, int]]] = defaultdict(list)
        self.ack_lines = 0
        # (doc, observer) -> list of (line number, versions) in file order: one entry per session
        self.versions: dict[tuple[str, str], list[tuple[int, list[int]]]] = defaultdict(list)
        # list of (doc, observer, version, text, line number)
        self.finals: list[tuple[str, str, int, str, int]] = []


def load_observations(path: str) -> Observations:
    obs = Observations()
    try:
        f = open(path, encoding="utf-8")
    except OSError as e:
        raise InputError(f"cannot read the observations {path}: {e}") from e
    with f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"{where}: not JSON: {e}") from e
            if not isinstance(rec, dict):
                raise InputError(f"{where}: not a JSON object")
            kind = rec.get("kind")
            doc = _field(rec, "doc", str, where)
            if kind == "ack":
                client = _field(rec, "client", str, where)
                seq = _field(rec, "seq", int, where)
                version = _field(rec, "version", int, where)
                obs.acks[(doc, client, seq)].append((version, lineno))
                obs.ack_lines += 1
            elif kind == "versions":
                observer = _field(rec, "observer", str, where)
                versions = _field(rec, "versions", list, where)
                if not all(isinstance(v, int) and not isinstance(v, bool) for v in versions):
                    raise InputError(f"{where}: versions must be integers")
                obs.versions[(doc, observer)].append((lineno, versions))
            elif kind == "final":
                observer = _field(rec, "observer", str, where)
                version = _field(rec, "version", int, where)
                text = _field(rec, "text", str, where)
                obs.finals.append((doc, observer, version, text, lineno))
            else:
                raise InputError(f"{where}: unknown kind {kind!r} (expected ack, versions or final)")
    return obs


# --------------------------------------------------------------------------------------------------
# Postgres


class Event:
    __slots__ = ("doc", "version", "client", "seq", "op")

    def __init__(self, doc: str, version: int, client: str, seq: int, op: str):
        self.doc, self.version, self.client, self.seq, self.op = doc, version, client, seq, op


def read_postgres(url: str) -> tuple[list[Event], list[tuple[str, int, bytes]]]:
    """Every event row, and every snapshot row (doc, version, text bytes) if the table exists."""
    import psycopg

    try:
        conn = psycopg.connect(url, connect_timeout=10, autocommit=True)
    except psycopg.Error as e:
        raise InputError(f"cannot connect to postgres ({url}): {e}") from e
    try:
        with conn.cursor() as cur:
            # One snapshot of the database for both reads.
            cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            try:
                cur.execute("SELECT doc, version, client, seq, op FROM events ORDER BY doc, version")
            except psycopg.errors.UndefinedTable as e:
                raise InputError(f"postgres ({url}) has no events table: {e}") from e
            # seq is stored bit-for-bit as a bigint: back to the client's u64.
            events = [Event(d, v, c, s & U64, op) for d, v, c, s, op in cur.fetchall()]
            cur.execute("SELECT to_regclass('snapshots') IS NOT NULL")
            snapshots: list[tuple[str, int, bytes]] = []
            if cur.fetchone()[0]:
                cur.execute("SELECT doc, version, text FROM snapshots ORDER BY doc, version")
                snapshots = [(d, v, bytes(t)) for d, v, t in cur.fetchall()]
            cur.execute("COMMIT")
    except psycopg.OperationalError as e:
        raise InputError(f"postgres ({url}): {e}") from e
    finally:
        conn.close()
    return events, snapshots


# --------------------------------------------------------------------------------------------------
# Kafka


def generate_proto(proto_dir: Path, out_dir: Path) -> Any:
    """Python classes for every .proto under proto_dir, generated by grpcio-tools' protoc; returns
    the module of tandem/v1/records.proto."""
    files = sorted(str(p.relative_to(proto_dir)) for p in proto_dir.rglob("*.proto"))
    if "tandem/v1/records.proto" not in files:
        raise InputError(f"no tandem/v1/records.proto under {proto_dir}")
    import grpc_tools

    well_known = Path(grpc_tools.__file__).parent / "_proto"
    cmd = [
        sys.executable, "-m", "grpc_tools.protoc",
        f"-I{proto_dir}", f"-I{well_known}", f"--python_out={out_dir}", *files,
    ]
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode != 0:
        raise InputError(f"protoc failed on {proto_dir}: {run.stderr.strip()}")
    sys.path.insert(0, str(out_dir))
    return importlib.import_module("tandem.v1.records_pb2")


class KafkaView:
    def __init__(self) -> None:
        self.records = 0
        # (doc, version) -> list of (client, seq, op components, partition, offset)
        self.committed: dict[tuple[str, int], list[tuple[str, int, list, int, int]]] = defaultdict(list)
        # (doc, client, seq, version, partition, offset)
        self.reacks: list[tuple[str, str, int, int, int, int]] = []
        self.rejections = 0
        self.skipped = 0
        # (kind, detail) problems with single records: undecodable, key differs from doc, ...
        self.bad: list[tuple[str, dict[str, Any]]] = []
        self.partitions_found = 0
        self.low_watermarks: dict[int, int] = {}
        self.high_watermarks: dict[int, int] = {}


def read_kafka(brokers: str, topic: str, records_pb2: Any, timeout_s: float) -> KafkaView:
    """Every record of `topic` from the beginning of each partition up to its high watermark taken
    at start, in a consumer group of our own."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

    view = KafkaView()
    errors: list[str] = []
    consumer = Consumer({
        "bootstrap.servers": brokers,
        "group.id": f"tandem-chaos-check-{uuid.uuid4()}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        "error_cb": lambda err: errors.append(str(err)),
    })
    try:
        try:
            md = consumer.list_topics(topic=topic, timeout=30)
        except KafkaException as e:
            raise InputError(f"kafka ({brokers}): cannot read metadata: {e}") from e
        tmd = md.topics.get(topic)
        if tmd is None or tmd.error is not None or not tmd.partitions:
            why = tmd.error if tmd is not None else "absent"
            raise InputError(f"kafka ({brokers}): topic {topic} is not there ({why}); errors: {errors[-3:]}")
        parts = sorted(tmd.partitions)
        view.partitions_found = len(parts)
        for p in parts:
            try:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
            except KafkaException as e:
                raise InputError(f"kafka ({brokers}): no watermarks for {topic}/{p}: {e}") from e
            view.low_watermarks[p], view.high_watermarks[p] = low, high
        pending = {p for p in parts if view.high_watermarks[p] > view.low_watermarks[p]}
        if pending:
            consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(pending)])
        deadline = time.monotonic() + timeout_s
        while pending:
            if time.monotonic() > deadline:
                raise InputError(
                    f"kafka ({brokers}): did not reach the high watermarks of {topic} partitions "
                    f"{sorted(pending)} within {timeout_s:.0f} s; errors: {errors[-3:]}"
                )
            msgs = consumer.consume(num_messages=1000, timeout=1.0)
            for msg in msgs:
                p = msg.partition()
                if msg.error():
                    if msg.error().code() == KafkaError._PARTITION_EOF:
                        if msg.offset() >= view.high_watermarks.get(p, 0):
                            pending.discard(p)
                        continue
                    raise InputError(f"kafka ({brokers}): error reading {topic}/{p}: {msg.error()}")
                off = msg.offset()
                if off >= view.high_watermarks[p]:
                    pending.discard(p)
                    continue  # written after we started: not ours to judge
                if off == view.high_watermarks[p] - 1:
                    pending.discard(p)
                view.records += 1
                decode_record(view, records_pb2, msg.key(), msg.value(), p, off)
    finally:
        consumer.close()
    return view


def decode_record(view: KafkaView, records_pb2: Any, key: bytes | None, value: bytes | None,
                  partition: int, offset: int) -> None:
    where = {"partition": partition, "offset": offset}
    rec = records_pb2.SequencedRecord()
    try:
        rec.ParseFromString(value or b"")
    except Exception as e:  # noqa: BLE001 - protobuf raises its own DecodeError
        view.bad.append(("undecodable_record", {**where, "error": str(e)}))
        return
    which = rec.WhichOneof("record")
    key_text = key.decode("utf-8", "replace") if key is not None else None
    if which == "committed":
        c = rec.committed
        try:
            op = proto_op(c.op)
        except OpError as e:
            view.bad.append(("bad_op_in_record", {**where, "doc": c.doc, "version": c.version, "error": str(e)}))
            return
        view.committed[(c.doc, c.version)].append((c.client, c.seq, op, partition, offset))
        doc = c.doc
    elif which == "reacknowledged":
        r = rec.reacknowledged
        view.reacks.append((r.doc, r.client, r.seq, r.version, partition, offset))
        doc = r.doc
    elif which == "rejected":
        view.rejections += 1
        doc = rec.rejected.doc
    else:
        # A case added after this checker was written: skip it, as the schema asks readers to.
        view.skipped += 1
        return
    if key_text != doc:
        view.bad.append(("key_differs_from_doc", {**where, "key": key_text, "doc": doc}))


# --------------------------------------------------------------------------------------------------
# The checks


def run_checks(manifest: dict[str, Any], obs: Observations, events: list[Event],
               snapshots: list[tuple[str, int, bytes]], kafka: KafkaView) -> tuple[list[Check], dict[str, Any]]:
    by_doc: dict[str, list[Event]] = defaultdict(list)
    by_key: dict[tuple[str, str, int], list[Event]] = defaultdict(list)
    for e in events:
        by_doc[e.doc].append(e)
        by_key[(e.doc, e.client, e.seq)].append(e)
    docs = set(manifest["docs"]) | set(by_doc) | {d for d, _, _ in obs.acks} | {d for d, _ in obs.versions}
    docs |= {f[0] for f in obs.finals}

    # ---- 1. every acknowledged op is in the log exactly once, at its acknowledged version.
    acked = Check("acked_in_log", "every acked (doc, client, seq) is in the Postgres log once, at its acked version")
    for (doc, client, seq), seen in sorted(obs.acks.items()):
        acked.checked += 1
        versions = sorted({v for v, _ in seen})
        if len(versions) > 1:
            acked.fail("conflicting_acks", doc=doc, client=client, seq=seq, acked_versions=versions,
                       lines=[ln for _, ln in seen][:5])
        version = versions[0]
        rows = by_key.get((doc, client, seq), [])
        if not rows:
            acked.fail("lost", doc=doc, client=client, seq=seq, acked_version=version, line=seen[0][1])
        elif len(rows) > 1:
            acked.fail("duplicated", doc=doc, client=client, seq=seq, acked_version=version,
                       log_versions=[r.version for r in rows])
        elif rows[0].version not in versions:
            acked.fail("misplaced", doc=doc, client=client, seq=seq, acked_version=version,
                       log_version=rows[0].version)

    # ---- 2. each document's versions are exactly 1..N.
    contiguous = Check("log_versions_contiguous", "each document's versions in Postgres are exactly 1..N")
    last_version: dict[str, int] = {}
    for doc in sorted(by_doc):
        rows = by_doc[doc]
        contiguous.checked += len(rows)
        counts: dict[int, int] = defaultdict(int)
        for r in rows:
            counts[r.version] += 1
        top = max(counts)
        last_version[doc] = top
        for v, n in sorted(counts.items()):
            if v < 1:
                contiguous.fail("not_positive", doc=doc, version=v)
            if n > 1:
                contiguous.fail("duplicate_version", doc=doc, version=v, rows=n,
                                authors=[[r.client, r.seq] for r in rows if r.version == v][:5])
        missing = [v for v in range(1, top + 1) if v not in counts]
        for start, end in _ranges(missing):
            contiguous.fail("gap", doc=doc, missing_from=start, missing_to=end, last_version=top)
    committed_versions = sum(len({r.version for r in rows}) for rows in by_doc.values())

    # ---- 3. the events topic holds every committed version, matching the log.
    kcheck = Check("kafka_events", f"{manifest['events_topic']} holds every committed (doc, version), matching Postgres")
    if kafka.partitions_found != manifest["partitions"]:
        kcheck.fail("partition_count", expected=manifest["partitions"], found=kafka.partitions_found)
    for kind, detail in kafka.bad:
        kcheck.fail(kind, **detail)
    log_at: dict[tuple[str, int], list[Event]] = defaultdict(list)
    for e in events:
        log_at[(e.doc, e.version)].append(e)
    for (doc, version), rows in sorted(log_at.items()):
        kcheck.checked += 1
        recs = kafka.committed.get((doc, version))
        if not recs:
            kcheck.fail("missing_in_kafka", doc=doc, version=version)
            continue
        if len(rows) != 1:
            continue  # the log itself is wrong here (check 2); nothing to compare with
        row = rows[0]
        try:
            row_op = normalize(parse_op(json.loads(row.op)))
        except (OpError, json.JSONDecodeError):
            row_op = None  # reported by check 4
        for client, seq, op, p, off in recs:
            diffs = {}
            if client != row.client:
                diffs["client"] = [row.client, client]
            if seq != row.seq:
                diffs["seq"] = [row.seq, seq]
            if row_op is not None and normalize(op) != row_op:
                diffs["op"] = [row.op, _op_json(op)]
            if diffs:
                kcheck.fail("differs_from_log", doc=doc, version=version, partition=p, offset=off,
                            log_vs_kafka=diffs)
    for (doc, version), recs in sorted(kafka.committed.items()):
        if (doc, version) not in log_at:
            _, _, _, p, off = recs[0]
            kcheck.fail("not_in_log", doc=doc, version=version, partition=p, offset=off, copies=len(recs))
    for doc, client, seq, version, p, off in kafka.reacks:
        rows = by_key.get((doc, client, seq), [])
        if not any(r.version == version for r in rows):
            kcheck.fail("reack_differs_from_log", doc=doc, client=client, seq=seq, version=version,
                        partition=p, offset=off, log_versions=[r.version for r in rows])

    # ---- 4. every observer's final text is the log's text at that version (and every snapshot's).
    finals = Check("final_texts", "each observer's final text equals the text rebuilt from the Postgres log at its version")
    snaps = Check("snapshot_texts", "each stored snapshot's text equals the text rebuilt from the log at its version")
    wanted: dict[str, set[int]] = defaultdict(set)
    for doc, _, version, _, _ in obs.finals:
        wanted[doc].add(version)
    for doc, version, _ in snapshots:
        wanted[doc].add(version)
    texts: dict[tuple[str, int], str] = {}
    broken_at: dict[str, tuple[int, str]] = {}  # doc -> first version that cannot be rebuilt, why
    for doc in sorted(docs):
        text = ""
        if 0 in wanted[doc]:
            texts[(doc, 0)] = ""
        rows = by_doc.get(doc, [])
        counts = defaultdict(int)
        for r in rows:
            counts[r.version] += 1
        # The first version without exactly one row: no text is known from there on.
        if any(v < 1 for v in counts):
            bad = 1
        else:
            bad = next(v for v in range(1, len(rows) + 2) if counts.get(v, 0) != 1)
        for r in rows:
            if r.version < 1 or r.version >= bad:
                broken_at[doc] = (bad, "the log has no single row for this version")
                break
            try:
                text = apply_op(text, parse_op(json.loads(r.op)))
            except (OpError, json.JSONDecodeError) as e:
                broken_at[doc] = (r.version, f"op does not apply: {e}")
                finals.fail("op_does_not_apply", doc=doc, version=r.version, error=str(e), op=r.op[:200])
                break
            if r.version in wanted[doc]:
                texts[(doc, r.version)] = text
    for doc, observer, version, text, lineno in obs.finals:
        finals.checked += 1
        _compare_text(finals, texts, broken_at, last_version, doc, version, text,
                      {"observer": observer, "line": lineno})
    for doc, version, raw in snapshots:
        snaps.checked += 1
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            snaps.fail("not_utf8", doc=doc, version=version, error=str(e))
            continue
        _compare_text(snaps, texts, broken_at, last_version, doc, version, text, {})

    # ---- 5. no observer applied versions out of order.
    order = Check("observer_order", "each observer applied each document's versions in order: +1 within a session, increasing across sessions")
    beyond = Check("observed_in_log", "every version an observer applied or ended at is in the Postgres log")
    for (doc, observer), sessions in sorted(obs.versions.items()):
        prev: int | None = None
        for lineno, versions in sessions:
            order.checked += 1
            for i, v in enumerate(versions):
                if prev is not None:
                    if i == 0 and v <= prev:
                        order.fail("session_goes_back", doc=doc, observer=observer, line=lineno,
                                   previous=prev, first=v)
                    elif i > 0 and v != prev + 1:
                        order.fail("not_next_version", doc=doc, observer=observer, line=lineno,
                                   index=i, previous=prev, got=v)
                elif v < 1:
                    order.fail("not_positive", doc=doc, observer=observer, line=lineno, got=v)
                prev = v
            top = last_version.get(doc, 0)
            over = [v for v in versions if v > top]
            beyond.checked += len(versions)
            if over:
                beyond.fail("applied_beyond_log", doc=doc, observer=observer, line=lineno,
                            log_last_version=top, versions=over[:10], count=len(over))
    for doc, observer, version, _, lineno in obs.finals:
        beyond.checked += 1
        if version > last_version.get(doc, 0):
            beyond.fail("final_beyond_log", doc=doc, observer=observer, line=lineno, version=version,
                        log_last_version=last_version.get(doc, 0))

    checks = [acked, contiguous, kcheck, finals, snaps, order, beyond]
    stats = {
        "acked": len(obs.acks),
        "committed_versions": committed_versions,
        "events_read": kafka.records,
        "docs": len(docs),
        "kafka": {
            "committed_records": sum(len(v) for v in kafka.committed.values()),
            "reacknowledged_records": len(kafka.reacks),
            "rejection_records": kafka.rejections,
            "skipped_records": kafka.skipped,
            "partitions": kafka.partitions_found,
            "low_watermarks": {str(k): v for k, v in sorted(kafka.low_watermarks.items())},
            "high_watermarks": {str(k): v for k, v in sorted(kafka.high_watermarks.items())},
        },
        "postgres": {"event_rows": len(events), "snapshots": len(snapshots)},
        "observations": {
            "ack_lines": obs.ack_lines,
            "versions_lines": sum(len(s) for s in obs.versions.values()),
            "finals": len(obs.finals),
        },
    }
    return checks, stats


def _compare_text(check: Check, texts: dict[tuple[str, int], str], broken_at: dict[str, tuple[int, str]],
                  last_version: dict[str, int], doc: str, version: int, text: str, extra: dict[str, Any]) -> None:
    if (doc, version) in texts:
        want = texts[(doc, version)]
        if want != text:
            i = next((k for k, (a, b) in enumerate(zip(want, text)) if a != b), min(len(want), len(text)))
            check.fail("text_differs", doc=doc, version=version, **extra, first_difference_at=i,
                       log_length=len(want), seen_length=len(text),
                       log_excerpt=want[max(0, i - 20) : i + 40], seen_excerpt=text[max(0, i - 20) : i + 40])
    elif doc in broken_at and version >= broken_at[doc][0]:
        check.fail("cannot_rebuild", doc=doc, version=version, **extra, broken_at=broken_at[doc][0],
                   why=broken_at[doc][1])
    else:
        check.fail("version_not_in_log", doc=doc, version=version, **extra,
                   log_last_version=last_version.get(doc, 0))


def _ranges(values: list[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for v in values:
        if out and out[-1][1] == v - 1:
            out[-1] = (out[-1][0], v)
        else:
            out.append((v, v))
    return out


def _op_json(components: list[tuple[str, Any]]) -> str:
    return json.dumps([v if k == "i" else (v if k == "r" else -v) for k, v in components], ensure_ascii=False)


# --------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--manifest", required=True, help="MANIFEST.json written by the soak driver")
    ap.add_argument("--out", required=True, help="where to write RESULT.json")
    ap.add_argument("--proto-dir", default=str(REPO_ROOT / "proto"), help="the proto/ folder (default: this clone's)")
    ap.add_argument("--kafka-timeout", type=float, default=120.0,
                    help="seconds to read the events topic up to its high watermarks (default 120)")
    args = ap.parse_args(argv)

    gen_dir = Path(tempfile.mkdtemp(prefix="tandem-chaos-proto-"))
    try:
        manifest = load_manifest(args.manifest)
        obs = load_observations(manifest["observations"])
        records_pb2 = generate_proto(Path(args.proto_dir), gen_dir)
        events, snapshots = read_postgres(manifest["postgres_url"])
        kafka = read_kafka(manifest["brokers"], manifest["events_topic"], records_pb2, args.kafka_timeout)
    except InputError as e:
        print(f"check.py: {e}", file=sys.stderr)
        _write(args.out, {"ok": False, "error": str(e)})
        return 2
    finally:
        shutil.rmtree(gen_dir, ignore_errors=True)

    checks, stats = run_checks(manifest, obs, events, snapshots, kafka)
    ok = all(c.ok for c in checks)
    result = {"ok": ok, "checks": {c.name: c.to_json() for c in checks}, **stats, "seed": manifest.get("seed")}
    for c in checks:
        print(c.summary())
    print(f"{'ok' if ok else 'FAIL'}: {stats['docs']} docs, {stats['acked']} acked ops, "
          f"{stats['committed_versions']} committed versions, {stats['events_read']} event records read")
    if not _write(args.out, result):
        return 2
    return 0 if ok else 1


def _write(path: str, result: dict[str, Any]) -> bool:
    try:
        tmp = f"{path}.tmp.{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2, ensure_ascii=False)
            f.write("\n")
        os.replace(tmp, path)
        return True
    except OSError as e:
        print(f"check.py: cannot write {path}: {e}", file=sys.stderr)
        return False


if __name__ == "__main__":
    sys.exit(main())
