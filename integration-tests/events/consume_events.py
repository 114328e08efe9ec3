#!/usr/bin/env python3
"""Reads a Tandem events topic (docs/EVENTS.md) and prints one JSON object per record.

A consumer in another language than Tandem's own, sharing no code with it: the record classes are
generated from proto/ at run time by grpcio-tools' protoc (into a temporary folder), and the topic
is read with confluent-kafka. It reads every partition from its beginning up to the high watermark
it finds at start (records written later are left for another run), and prints, in offset order
within each partition:

    {"partition": 0, "offset": 7, "key": "notes", "headers": {}, "type": "committed",
     "doc": "notes", "version": 3, "client": "...", "seq": 2, "op": [5, "abc", -1]}

`op` is the wire form of docs/PROTOCOL.md: a positive integer retains, a string inserts, a negative
integer deletes. `reacknowledged` records carry doc, client, seq and version; `rejected` ones doc,
client, seq, code (the protocol's snake_case name, or the number of a code this script does not
know), message and at_version. A record case that is not one of these three (added to the schema
after this script was written, or unknown to the proto/ it was given) is printed with its type alone,
as docs/EVENTS.md asks readers to skip it: `"type": "<case name>"`, or `"type": "unknown"` when the
schema has no name for it. A record without a value is printed with `"type": "no_value"`.

    py="$(integration-tests/chaos/venv.sh)"
    "$py" integration-tests/events/consume_events.py --brokers 127.0.0.1:9092 --topic tandem.events

Exit status: 0 when every record up to the high watermarks was read and decoded; 2, with a message
on stderr, on a usage, connection or decoding error (what was printed before it stays valid, but
the output is incomplete).
"""

from __future__ import annotations

import argparse
import importlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]


class Failure(Exception):
    """A usage, connection or decoding error: exit 2."""


def generate_records_module(proto_dir: Path, out_dir: Path) -> Any:
    """The Python module of tandem/v1/records.proto, generated from every .proto under proto_dir."""
    files = sorted(str(p.relative_to(proto_dir)) for p in proto_dir.rglob("*.proto"))
    if "tandem/v1/records.proto" not in files:
        raise Failure(f"no tandem/v1/records.proto under {proto_dir}")
    import grpc_tools

    well_known = Path(grpc_tools.__file__).parent / "_proto"
    cmd = [sys.executable, "-m", "grpc_tools.protoc", f"-I{proto_dir}", f"-I{well_known}",
           f"--python_out={out_dir}", *files]
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode != 0:
        raise Failure(f"protoc failed on {proto_dir}: {run.stderr.strip()}")
    sys.path.insert(0, str(out_dir))
    return importlib.import_module("tandem.v1.records_pb2")


def op_json(components: Any, where: str) -> list[Any]:
    """A repeated tandem.v1.Component in the JSON wire form of docs/PROTOCOL.md."""
    out: list[Any] = []
    for i, c in enumerate(components):
        kind = c.WhichOneof("kind")
        if kind == "retain":
            out.append(c.retain)
        elif kind == "insert":
            out.append(c.insert)
        elif kind == "delete":
            out.append(-c.delete)
        else:
            raise Failure(f"{where}: op[{i}] has no kind set (retain, insert or delete)")
    return out


def error_code(records: Any, value: int) -> Any:
    """ERROR_CODE_INVALID_OP -> "invalid_op"; a value this schema does not name stays a number."""
    try:
        name = records.ErrorCode.Name(value)
    except ValueError:
        return value
    return name.removeprefix("ERROR_CODE_").lower()


def decode(records: Any, partition: int, offset: int, key: bytes | None, value: bytes | None,
           headers: list[tuple[str, bytes | None]] | None) -> dict[str, Any]:
    where = f"partition {partition} offset {offset}"
    try:
        key_text = key.decode("utf-8") if key is not None else None
    except UnicodeDecodeError as e:
        raise Failure(f"{where}: the key is not UTF-8: {e}") from e
    out: dict[str, Any] = {
        "partition": partition,
        "offset": offset,
        "key": key_text,
        "headers": {name: (v.decode("utf-8", "replace") if v is not None else None) for name, v in headers or []},
    }
    if value is None:
        out["type"] = "no_value"
        return out
    record = records.SequencedRecord()
    try:
        record.ParseFromString(value)
    except Exception as e:  # noqa: BLE001 - protobuf raises its own DecodeError
        raise Failure(f"{where}: not a tandem.v1.SequencedRecord: {e}") from e
    case = record.WhichOneof("record")
    if case == "committed":
        c = record.committed
        out.update(type=case, doc=c.doc, version=c.version, client=c.client, seq=c.seq,
                   op=op_json(c.op, f"{where} (committed)"))
    elif case == "reacknowledged":
        r = record.reacknowledged
        out.update(type=case, doc=r.doc, client=r.client, seq=r.seq, version=r.version)
    elif case == "rejected":
        r = record.rejected
        out.update(type=case, doc=r.doc, client=r.client, seq=r.seq, code=error_code(records, r.code),
                   message=r.message, at_version=r.at_version)
    else:
        # A case this reader does not know: skipped, as the schema asks, and named when it can be.
        out["type"] = case if case is not None else "unknown"
    return out


def consume(brokers: str, topic: str, records: Any, timeout_s: float) -> int:
    """Prints every record of `topic` up to the high watermarks found at start; returns how many."""
    from confluent_kafka import KafkaException

    errors: list[str] = []
    try:
        return read_topic(brokers, topic, records, timeout_s, errors)
    except KafkaException as e:
        raise Failure(f"kafka {brokers}: {e}; errors: {errors[-3:]}") from e


def read_topic(brokers: str, topic: str, records: Any, timeout_s: float, errors: list[str]) -> int:
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

    consumer = Consumer({
        "bootstrap.servers": brokers,
        # Partitions are assigned by hand and no offset is ever committed, so this group is never
        # joined and leaves nothing on the broker; librdkafka wants one all the same.
        "group.id": f"tandem-consume-events-{uuid.uuid4()}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": True,
        "auto.offset.reset": "earliest",
        "error_cb": lambda err: errors.append(str(err)),
        # librdkafka would log every failed connection attempt to stderr; error_cb keeps them, and the
        # last ones go into the message of a failure.
        "log_level": 0,
    })
    printed = 0
    try:
        try:
            metadata = consumer.list_topics(topic=topic, timeout=min(timeout_s, 30))
        except KafkaException as e:
            raise Failure(f"kafka {brokers}: cannot read the metadata of {topic}: {e}") from e
        found = metadata.topics.get(topic)
        if found is None or found.error is not None or not found.partitions:
            why = found.error if found is not None else "absent"
            raise Failure(f"kafka {brokers}: topic {topic} is not there ({why}); errors: {errors[-3:]}")
        high: dict[int, int] = {}
        pending: set[int] = set()
        for p in sorted(found.partitions):
            try:
                low, high[p] = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=min(timeout_s, 30))
            except KafkaException as e:
                raise Failure(f"kafka {brokers}: no watermarks for {topic} partition {p}: {e}") from e
            if high[p] > low:
                pending.add(p)
        if pending:
            consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(pending)])
        deadline = time.monotonic() + timeout_s
        while pending:
            if time.monotonic() > deadline:
                raise Failure(f"kafka {brokers}: partitions {sorted(pending)} of {topic} not read up to their "
                              f"high watermarks within {timeout_s:.0f} s; errors: {errors[-3:]}")
            for msg in consumer.consume(num_messages=500, timeout=1.0):
                p = msg.partition()
                if msg.error():
                    if msg.error().code() == KafkaError._PARTITION_EOF:
                        if msg.offset() >= high.get(p, 0):
                            pending.discard(p)
                        continue
                    raise Failure(f"kafka {brokers}: reading {topic} partition {p}: {msg.error()}")
                if p not in pending or msg.offset() >= high[p]:
                    pending.discard(p)  # written after the start: for another run
                    continue
                print(json.dumps(decode(records, p, msg.offset(), msg.key(), msg.value(), msg.headers()),
                                 ensure_ascii=False))
                printed += 1
                if msg.offset() == high[p] - 1:
                    pending.discard(p)
    finally:
        consumer.close()
    return printed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--brokers", required=True, help="Kafka bootstrap brokers, host:port[,host:port]")
    ap.add_argument("--topic", default="tandem.events", help="the events topic, NAMESPACE.events (default tandem.events)")
    ap.add_argument("--proto-dir", default=str(REPO_ROOT / "proto"), help="the proto/ folder (default: this clone's)")
    ap.add_argument("--timeout", type=float, default=60.0,
                    help="seconds to reach the broker and read up to the high watermarks (default 60)")
    args = ap.parse_args(argv)
    sys.stdout.reconfigure(encoding="utf-8")

    out_dir = Path(tempfile.mkdtemp(prefix="tandem-events-proto-"))
    try:
        records = generate_records_module(Path(args.proto_dir), out_dir)
        count = consume(args.brokers, args.topic, records, args.timeout)
    except Failure as e:
        sys.stdout.flush()
        print(f"consume_events.py: {e}", file=sys.stderr)
        return 2
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    print(f"consume_events.py: {count} records of {args.topic}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
