"""Tests of check.py, without Tandem's driver: a consistent soak outcome made here passes, and each
property broken on its own makes the check that guards it fail.

The database is a uniquely named one on the machine's Postgres (127.0.0.1:5432, user postgres, trust
auth; TANDEM_TEST_POSTGRES_URL overrides the server), with the real schema: the migration files that
libs/store/src/postgres/migrate.rs embeds, in its order. The topics are on the broker named by
TANDEM_TEST_BROKERS (`deploy/kafka.sh with -- ...` sets it); without it, a broker of this test's own
is started with deploy/kafka.sh and stopped at the end. Records are encoded with the classes that
check.py generates from proto/.

    py="$(integration-tests/chaos/venv.sh)"
    deploy/kafka.sh with -- "$py" -m pytest -q integration-tests/chaos/test_check.py
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any, Callable

import psycopg
import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import check  # noqa: E402

REPO = HERE.parents[1]
CHECK = HERE / "check.py"
ADMIN_URL = os.environ.get("TANDEM_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres")
PARTITIONS = 3

# --------------------------------------------------------------------------------------------------
# The independent op implementation against the repository's shared OT vectors.

VECTORS = json.loads((REPO / "libs/ot/vectors/ot-vectors.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("vector", VECTORS["apply"], ids=lambda v: json.dumps(v["op"], ensure_ascii=True)[:40])
def test_apply_matches_the_shared_vectors(vector: dict[str, Any]) -> None:
    assert check.apply_op(vector["text"], check.parse_op(vector["op"])) == vector["result"]


@pytest.mark.parametrize("vector", VECTORS["invalid"], ids=lambda v: v["error"] + ":" + json.dumps(v["op"])[:30])
def test_invalid_ops_are_refused_as_the_vectors_say(vector: dict[str, Any]) -> None:
    with pytest.raises(check.OpError) as e:
        check.apply_op(vector["text"], check.parse_op(vector["op"]))
    assert str(e.value) == vector["error"]


@pytest.mark.parametrize("vector", VECTORS["compose"] + VECTORS["transform"], ids=lambda v: json.dumps(v)[:40])
def test_normal_forms_of_the_vectors_are_kept(vector: dict[str, Any]) -> None:
    for key in ("result", "a_prime", "b_prime"):
        if key in vector:
            parsed = check.parse_op(vector[key])
            assert check.normalize(parsed) == parsed


def test_normalize_moves_an_insert_before_a_delete() -> None:
    assert check.normalize(check.parse_op([1, -2, "x", 0, "", 3, 1])) == [("r", 1), ("i", "x"), ("d", 2), ("r", 4)]


# --------------------------------------------------------------------------------------------------
# A consistent soak outcome


ALPHABET = list("abcxyz \n") + ["é", "e\u0301", "😀", "👍🏽", "漢", "字", "\u0000", "\u0301"]


def random_op(rng: random.Random, text: str) -> list[Any]:
    n = len(text)
    pos = rng.randint(0, n)
    dele = rng.randint(0, min(3, n - pos))
    ins = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0 if dele else 1, 4)))
    op: list[Any] = [pos, ins, -dele, n - pos - dele]
    return [c for c in op if c not in (0, "")]


class Fixture:
    """Docs, their committed events, what observers saw, and the Kafka records; all consistent."""

    def __init__(self, seed: int = 7):
        rng = random.Random(seed)
        self.docs = ["doc-a", "team/doc-b", "doc-c", "doc-never-edited"]
        self.events: list[dict[str, Any]] = []  # doc, version, client, seq, op (list)
        self.texts: dict[tuple[str, int], str] = {}
        self.last: dict[str, int] = {}
        for d, doc in enumerate(self.docs[:3]):
            text = ""
            seqs: dict[str, int] = {}
            self.texts[(doc, 0)] = ""
            for version in range(1, 41 + 5 * d):
                client = rng.choice(["alice-1", "bob-7", "carol-x"])
                seqs[client] = seqs.get(client, 0) + 1
                op = random_op(rng, text)
                text = check.apply_op(text, check.parse_op(op))
                self.events.append(dict(doc=doc, version=version, client=client, seq=seqs[client], op=op))
                self.texts[(doc, version)] = text
            self.last[doc] = version
        self.snapshots = [(doc, 10) for doc in self.docs[:3]] + [("doc-a", 0)]

    def observations(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for e in self.events:
            out.append({"kind": "ack", "doc": e["doc"], "client": e["client"], "seq": e["seq"], "version": e["version"]})
        # A resubmission's acknowledgement again, at the same version: allowed.
        e = self.events[3]
        out.append({"kind": "ack", "doc": e["doc"], "client": e["client"], "seq": e["seq"], "version": e["version"]})
        for doc in self.docs[:3]:
            n = self.last[doc]
            # o1 saw everything in one session; o2 reconnected and restarted from a snapshot at 14;
            # o3 opened late (a snapshot at 4) and left at version n - 5.
            out.append({"kind": "versions", "doc": doc, "observer": "o1", "versions": list(range(1, n + 1))})
            out.append({"kind": "versions", "doc": doc, "observer": "o2", "versions": list(range(1, 11))})
            out.append({"kind": "versions", "doc": doc, "observer": "o2", "versions": list(range(15, n + 1))})
            out.append({"kind": "versions", "doc": doc, "observer": "o3", "versions": list(range(5, n - 4))})
            for observer, v in (("o1", n), ("o2", n), ("o3", n - 5)):
                out.append({"kind": "final", "doc": doc, "observer": observer, "version": v, "text": self.texts[(doc, v)]})
        out.append({"kind": "final", "doc": "doc-never-edited", "observer": "o1", "version": 0, "text": ""})
        out.append({"kind": "versions", "doc": "doc-never-edited", "observer": "o1", "versions": []})
        return out

    def records(self, pb: Any) -> list[tuple[int, str, bytes]]:
        """(partition, key, value) of tandem.events, as a sequencer with one failover would write."""
        part = {doc: i % PARTITIONS for i, doc in enumerate(self.docs)}
        out: list[tuple[int, str, bytes]] = []

        def committed(e: dict[str, Any]) -> bytes:
            rec = pb.SequencedRecord()
            c = rec.committed
            c.doc, c.version, c.client, c.seq = e["doc"], e["version"], e["client"], e["seq"]
            for comp in e["op"]:
                p = c.op.add()
                if isinstance(comp, str):
                    p.insert = comp
                elif comp > 0:
                    p.retain = comp
                else:
                    p.delete = -comp
            return rec.SerializeToString()

        for e in self.events:
            out.append((part[e["doc"]], e["doc"], committed(e)))
        # A new owner republished doc-a's versions 5..8 (duplicates are allowed).
        for e in self.events:
            if e["doc"] == "doc-a" and 5 <= e["version"] <= 8:
                out.append((part["doc-a"], "doc-a", committed(e)))
        e = self.events[3]
        rec = pb.SequencedRecord()
        r = rec.reacknowledged
        r.doc, r.client, r.seq, r.version = e["doc"], e["client"], e["seq"], e["version"]
        out.append((part[e["doc"]], e["doc"], rec.SerializeToString()))
        rec = pb.SequencedRecord()
        j = rec.rejected
        j.doc, j.client, j.seq, j.code, j.message, j.at_version = "doc-c", "dave", 1, 5, "length", 3
        out.append((part["doc-c"], "doc-c", rec.SerializeToString()))
        # A record of a case this reader does not know (none set): skipped.
        out.append((part["doc-c"], "doc-c", b""))
        return out


# --------------------------------------------------------------------------------------------------
# Infrastructure: Postgres databases and Kafka topics of this test run


def migrations() -> list[str]:
    """The SQL of every migration, in the order migrate.rs applies them."""
    src = REPO / "libs/store/src/postgres/migrate.rs"
    paths = re.findall(r'include_str!\("([^"]+\.sql)"\)', src.read_text(encoding="utf-8"))
    assert paths, f"no include_str!(...sql) in {src}"
    return [(src.parent / p).resolve().read_text(encoding="utf-8") for p in paths]


def db_url(name: str) -> str:
    return re.sub(r"/[^/]*$", f"/{name}", ADMIN_URL)


def admin(sql: str) -> None:
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql)


@pytest.fixture(scope="module")
def brokers():
    if os.environ.get("TANDEM_TEST_BROKERS"):
        yield os.environ["TANDEM_TEST_BROKERS"]
        return
    work = tempfile.mkdtemp(prefix="tandem-chaos-kafka-")
    run = subprocess.run([str(REPO / "deploy/kafka.sh"), "start", work], capture_output=True, text=True)
    assert run.returncode == 0, f"deploy/kafka.sh start failed: {run.stderr}"
    try:
        yield run.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run([str(REPO / "deploy/kafka.sh"), "stop", work], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="module")
def pb():
    out = Path(tempfile.mkdtemp(prefix="tandem-chaos-test-proto-"))
    try:
        yield check.generate_proto(REPO / "proto", out)
    finally:
        shutil.rmtree(out, ignore_errors=True)


class World:
    """The fixture in a template database and a topic; scenarios copy and break it."""

    def __init__(self, brokers: str, pb: Any, work: Path):
        self.brokers, self.pb, self.work = brokers, pb, work
        self.fx = Fixture()
        self.run_id = uuid.uuid4().hex[:10]
        self.databases: list[str] = []

    def setup(self) -> None:
        self.base = self.new_database(template=None)
        with psycopg.connect(db_url(self.base), autocommit=True) as conn:
            for sql in migrations():
                conn.execute(sql)
            with conn.cursor() as cur:
                cur.executemany(
                    'INSERT INTO events (doc, version, client, seq, op, "partition", commit_seq) '
                    "VALUES (%s, %s, %s, %s, %s, %s, %s)",
                    [(e["doc"], e["version"], e["client"], e["seq"], json.dumps(e["op"], ensure_ascii=False),
                      self.fx.docs.index(e["doc"]) % PARTITIONS, e["version"]) for e in self.fx.events],
                )
                cur.executemany(
                    "INSERT INTO snapshots (doc, version, text, clients) VALUES (%s, %s, %s, '{}'::jsonb)",
                    [(doc, v, self.fx.texts[(doc, v)].encode("utf-8")) for doc, v in self.fx.snapshots],
                )
        self.topic = self.new_topic(self.fx.records(self.pb))

    def new_database(self, template: str | None) -> str:
        name = f"chaos_check_{self.run_id}_{len(self.databases)}"
        admin(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
        self.databases.append(name)
        return name

    def new_topic(self, records: list[tuple[int, str, bytes]]) -> str:
        from confluent_kafka import Producer
        from confluent_kafka.admin import AdminClient, NewTopic

        topic = f"chaos{self.run_id}n{len(self.databases)}{uuid.uuid4().hex[:4]}.events"
        client = AdminClient({"bootstrap.servers": self.brokers})  # kept alive until the topic exists
        for f in client.create_topics([NewTopic(topic, PARTITIONS, 1)]).values():
            f.result(timeout=30)
        producer = Producer({"bootstrap.servers": self.brokers, "enable.idempotence": True})
        for partition, key, value in records:
            producer.produce(topic, key=key.encode(), value=value, partition=partition)
        assert producer.flush(30) == 0, "records not delivered"
        return topic

    def drop(self) -> None:
        for name in reversed(self.databases):
            admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def run(self, name: str, sql: list[str] = (), observations: Callable[[list], list] | None = None,
            topic: str | None = None, postgres_url: str | None = None) -> tuple[int, dict[str, Any], str]:
        """check.py on a copy of the fixture with `sql` run on its database, `observations` applied
        to its observation list, and `topic` instead of the fixture's."""
        db = self.new_database(template=self.base)
        if sql:
            with psycopg.connect(db_url(db), autocommit=True) as conn:
                for statement in sql:
                    conn.execute(statement)
        obs = self.fx.observations()
        if observations:
            obs = observations(obs)
        folder = self.work / name
        folder.mkdir()
        (folder / "observations.jsonl").write_text("".join(json.dumps(o) + "\n" for o in obs), encoding="utf-8")
        manifest = {
            "seed": 7,
            "postgres_url": postgres_url or db_url(db),
            "brokers": self.brokers,
            "events_topic": topic or self.topic,
            "partitions": PARTITIONS,
            "observations": str(folder / "observations.jsonl"),
            "docs": self.fx.docs,
        }
        (folder / "MANIFEST.json").write_text(json.dumps(manifest), encoding="utf-8")
        proc = subprocess.run(
            [sys.executable, str(CHECK), "--manifest", str(folder / "MANIFEST.json"), "--out", str(folder / "RESULT.json")],
            capture_output=True, text=True, timeout=300,
        )
        result = json.loads((folder / "RESULT.json").read_text(encoding="utf-8"))
        print(f"--- {name}: exit {proc.returncode}\n{proc.stdout}{proc.stderr}")
        return proc.returncode, result, proc.stdout


@pytest.fixture(scope="module")
def world(brokers, pb):
    work = Path(tempfile.mkdtemp(prefix="tandem-chaos-test-"))
    w = World(brokers, pb, work)
    try:
        w.setup()
        yield w
    finally:
        w.drop()
        shutil.rmtree(work, ignore_errors=True)


def failing(result: dict[str, Any]) -> set[str]:
    return {name for name, c in result["checks"].items() if not c["ok"]}


def kinds(result: dict[str, Any], name: str) -> set[str]:
    return set(result["checks"][name]["by_kind"])


def assert_fails(code: int, result: dict[str, Any], expected: dict[str, set[str]]) -> None:
    """Exit 1, exactly the checks of `expected` failing, each with (at least) the kinds named."""
    assert code == 1, result
    assert result["ok"] is False
    assert failing(result) == set(expected), {n: c for n, c in result["checks"].items() if not c["ok"]}
    for name, want in expected.items():
        assert want <= kinds(result, name), (name, result["checks"][name])
        assert result["checks"][name]["count"] >= 1
        assert 1 <= len(result["checks"][name]["examples"]) <= 20


# --------------------------------------------------------------------------------------------------
# The scenarios


def test_a_consistent_soak_passes(world: World) -> None:
    code, result, stdout = world.run("consistent")
    assert code == 0, result
    assert result["ok"] is True
    assert failing(result) == set()
    fx = world.fx
    assert result["acked"] == len(fx.events)
    assert result["committed_versions"] == len(fx.events)
    # Every record, duplicates, the reacknowledgement, the rejection and the unknown case included.
    assert result["events_read"] == len(fx.records(world.pb))
    assert result["docs"] == len(fx.docs)
    assert result["checks"]["snapshot_texts"]["checked"] == len(fx.snapshots)
    assert result["checks"]["final_texts"]["checked"] == 10
    assert len([line for line in stdout.splitlines() if line.startswith(("ok", "FAIL"))]) == len(result["checks"]) + 1


def last_event(world: World, doc: str) -> dict[str, Any]:
    return next(e for e in world.fx.events if e["doc"] == doc and e["version"] == world.fx.last[doc])


def test_a_lost_acknowledged_event_fails(world: World) -> None:
    e = last_event(world, "doc-a")
    code, result, _ = world.run("lost", sql=[f"DELETE FROM events WHERE doc = 'doc-a' AND version = {e['version']}"])
    assert_fails(code, result, {
        "acked_in_log": {"lost"},
        # What was published and what observers applied is no longer in the log either.
        "kafka_events": {"not_in_log"},
        "final_texts": {"version_not_in_log"},
        "observed_in_log": {"applied_beyond_log", "final_beyond_log"},
    })
    ex = result["checks"]["acked_in_log"]["examples"][0]
    assert (ex["doc"], ex["client"], ex["seq"], ex["acked_version"]) == ("doc-a", e["client"], e["seq"], e["version"])


def test_an_ack_of_an_op_the_log_never_had_fails(world: World) -> None:
    code, result, _ = world.run("ack-not-in-log", observations=lambda o: o + [
        {"kind": "ack", "doc": "doc-c", "client": "zed", "seq": 1, "version": 3}])
    assert_fails(code, result, {"acked_in_log": {"lost"}})


def test_a_duplicated_version_fails(world: World) -> None:
    code, result, _ = world.run("duplicate-version", sql=[
        "ALTER TABLE events DROP CONSTRAINT events_pkey",
        "INSERT INTO events (doc, version, client, seq, op) "
        "SELECT doc, version, 'intruder', 1, op FROM events WHERE doc = 'team/doc-b' AND version = 5",
    ])
    assert_fails(code, result, {
        "log_versions_contiguous": {"duplicate_version"},
        # From version 5 on, the log has no one text: what depends on it cannot be confirmed.
        "final_texts": {"cannot_rebuild"},
        "snapshot_texts": {"cannot_rebuild"},
    })


def test_a_gap_in_the_log_fails(world: World) -> None:
    # A version in the middle of the log lost: a gap, and its acknowledged op is gone.
    code, result, _ = world.run("gap", sql=[
        "DELETE FROM events WHERE doc = 'doc-c' AND version = 7",
    ])
    assert "gap" in kinds(result, "log_versions_contiguous")
    assert "lost" in kinds(result, "acked_in_log")
    assert code == 1


def test_an_op_applied_twice_fails(world: World) -> None:
    e = world.fx.events[2]
    n = world.fx.last[e["doc"]]
    length = len(world.fx.texts[(e["doc"], n)])
    code, result, _ = world.run("applied-twice", sql=[
        "ALTER TABLE events DROP CONSTRAINT events_doc_client_seq_key",
        f"INSERT INTO events (doc, version, client, seq, op) VALUES "
        f"('{e['doc']}', {n + 1}, '{e['client']}', {e['seq']}, '[{length}]')",
    ])
    assert_fails(code, result, {
        "acked_in_log": {"duplicated"},
        # The second application was never published.
        "kafka_events": {"missing_in_kafka"},
    })


def test_reordered_ops_fail(world: World) -> None:
    # The ops of versions 4 and 5 of doc-c swap places in the log (their authors and seqs).
    a, b = (next(e for e in world.fx.events if e["doc"] == "doc-c" and e["version"] == v) for v in (4, 5))
    code, result, _ = world.run("reordered", sql=[
        "ALTER TABLE events DROP CONSTRAINT events_doc_client_seq_key",
        f"UPDATE events SET client = '{b['client']}', seq = {b['seq']}, op = '{json.dumps(b['op'], ensure_ascii=False)}' "
        "WHERE doc = 'doc-c' AND version = 4 AND client = '" + a["client"] + "'",
        f"UPDATE events SET client = '{a['client']}', seq = {a['seq']}, op = '{json.dumps(a['op'], ensure_ascii=False)}' "
        "WHERE doc = 'doc-c' AND version = 5",
    ])
    assert "misplaced" in kinds(result, "acked_in_log")
    assert "differs_from_log" in kinds(result, "kafka_events")
    assert code == 1
    assert {"log_versions_contiguous", "observer_order"}.isdisjoint(failing(result))


def test_an_event_record_missing_from_kafka_fails(world: World) -> None:
    records = world.fx.records(world.pb)
    # Drop doc-c version 7's committed record (published once only).
    target = next(i for i, (_, key, value) in enumerate(records) if key == "doc-c" and value and
                  world.pb.SequencedRecord.FromString(value).committed.version == 7)
    topic = world.new_topic(records[:target] + records[target + 1:])
    code, result, _ = world.run("kafka-skip", topic=topic)
    assert_fails(code, result, {"kafka_events": {"missing_in_kafka"}})
    ex = result["checks"]["kafka_events"]["examples"]
    assert ex == [{"kind": "missing_in_kafka", "doc": "doc-c", "version": 7}]


def test_a_kafka_record_that_differs_from_the_log_fails(world: World) -> None:
    records = world.fx.records(world.pb)
    i = next(i for i, (_, key, value) in enumerate(records) if key == "doc-a" and value and
             world.pb.SequencedRecord.FromString(value).committed.version == 9)
    rec = world.pb.SequencedRecord.FromString(records[i][2])
    rec.committed.seq += 100
    records[i] = (records[i][0], records[i][1], rec.SerializeToString())
    topic = world.new_topic(records)
    code, result, _ = world.run("kafka-differs", topic=topic)
    assert_fails(code, result, {"kafka_events": {"differs_from_log"}})


def test_a_wrong_final_text_fails(world: World) -> None:
    def change(obs: list) -> list:
        for o in obs:
            if o["kind"] == "final" and o["doc"] == "team/doc-b" and o["observer"] == "o2":
                o["text"] = o["text"][:3] + "Q" + o["text"][4:]
        return obs

    code, result, _ = world.run("wrong-final", observations=change)
    assert_fails(code, result, {"final_texts": {"text_differs"}})
    ex = result["checks"]["final_texts"]["examples"][0]
    assert (ex["doc"], ex["observer"], ex["first_difference_at"]) == ("team/doc-b", "o2", 3)


def test_an_op_changed_in_the_log_fails_the_texts(world: World) -> None:
    # Same shape, another inserted character: only the rebuilt texts (and the published op) differ.
    e = next(e for e in world.fx.events if e["doc"] == "doc-a" and e["version"] == 2)
    op = [("Z" * len(c)) if isinstance(c, str) else c for c in e["op"]]
    code, result, _ = world.run("op-changed", sql=[
        f"UPDATE events SET op = '{json.dumps(op)}' WHERE doc = 'doc-a' AND version = 2"])
    assert_fails(code, result, {
        "final_texts": {"text_differs"},
        "snapshot_texts": {"text_differs"},
        "kafka_events": {"differs_from_log"},
    })


def test_a_wrong_snapshot_fails(world: World) -> None:
    code, result, _ = world.run("wrong-snapshot", sql=[
        "UPDATE snapshots SET text = text || '\\x41'::bytea WHERE doc = 'doc-c' AND version = 10"])
    assert_fails(code, result, {"snapshot_texts": {"text_differs"}})


def with_versions(doc: str, observer: str, edit: Callable[[list[list[int]]], None]) -> Callable[[list], list]:
    def change(obs: list) -> list:
        lines = [o for o in obs if o["kind"] == "versions" and o["doc"] == doc and o["observer"] == observer]
        vs = [o["versions"] for o in lines]
        edit(vs)
        for o, v in zip(lines, vs):
            o["versions"] = v
        return obs
    return change


def test_versions_applied_out_of_order_fail(world: World) -> None:
    def swap(vs: list[list[int]]) -> None:
        vs[0][5], vs[0][6] = vs[0][6], vs[0][5]

    code, result, _ = world.run("out-of-order", observations=with_versions("doc-a", "o1", swap))
    assert_fails(code, result, {"observer_order": {"not_next_version"}})


def test_a_gap_within_a_session_fails(world: World) -> None:
    def skip(vs: list[list[int]]) -> None:
        del vs[0][9]

    code, result, _ = world.run("session-gap", observations=with_versions("doc-c", "o3", skip))
    assert_fails(code, result, {"observer_order": {"not_next_version"}})


def test_a_version_applied_twice_by_an_observer_fails(world: World) -> None:
    def repeat(vs: list[list[int]]) -> None:
        vs[0].insert(4, vs[0][3])

    code, result, _ = world.run("observer-repeat", observations=with_versions("team/doc-b", "o1", repeat))
    assert_fails(code, result, {"observer_order": {"not_next_version"}})


def test_a_session_that_goes_back_fails(world: World) -> None:
    def back(vs: list[list[int]]) -> None:
        vs[1][:] = list(range(8, vs[1][-1] + 1))  # second session restarts below the first's end (10)

    code, result, _ = world.run("session-back", observations=with_versions("doc-a", "o2", back))
    assert_fails(code, result, {"observer_order": {"session_goes_back"}})


def test_unreachable_postgres_is_exit_2(world: World) -> None:
    code, result, _ = world.run("no-postgres", postgres_url="postgres://postgres@127.0.0.1:1/nothing")
    assert code == 2
    assert result["ok"] is False and "postgres" in result["error"]


def test_an_unknown_observation_kind_is_exit_2(world: World) -> None:
    code, result, _ = world.run("bad-input", observations=lambda o: o + [{"kind": "acked", "doc": "doc-a"}])
    assert code == 2
    assert "unknown kind" in result["error"]


def test_a_missing_topic_is_exit_2(world: World) -> None:
    code, result, _ = world.run("no-topic", topic="no-such-topic.events")
    assert code == 2
    assert "no-such-topic.events" in result["error"]
