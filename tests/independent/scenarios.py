"""Independent-broker and fault scenarios for envelope-router.

Each scenario runs the router binary as separate processes against tansu,
feeds it with confluent-kafka and protobuf, reads every output topic back and
checks it against the generated workload. It prints one result line per
scenario and writes the figures to --json (RELIABILITY.md quotes them).

    python3 tests/independent/scenarios.py [--json out.json] [scenario ...]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import threading
import time
import traceback
from collections import Counter

import harness as h

INPUT = "raw"
PARTITIONS = 4


def verify(bootstrap, w: h.Workload, exact: bool, tls_ca=None) -> dict:
    """Reads every output topic and the dead-letter topic back.

    exact: no duplicates allowed (a clean run). Otherwise duplicates are
    counted; losses and unexpected records fail either way."""
    lost = dup = out = unexpected = corrupt = 0
    copies = Counter()  # output records by how many times they appear (n > 1)
    for topic, want in sorted(w.by_topic.items()):
        got = h.read_topic(bootstrap, topic, tls_ca)
        out += len(got)
        want_by_id = {r.message_id: r.value for r in want}
        seen = Counter(k for k, _, _ in got)
        corrupt += sum(1 for k, v, _ in got if k in want_by_id and v != want_by_id[k])
        unexpected += sum(n for k, n in seen.items() if k not in want_by_id)
        lost += sum(1 for k in want_by_id if k not in seen)
        dup += sum(n - 1 for k, n in seen.items() if k in want_by_id)
        copies.update(n for k, n in seen.items() if k in want_by_id and n > 1)
    dead = h.read_topic(bootstrap, "dead-letter", tls_ca)
    reasons = Counter()
    unique_dead = {}
    for k, _, hdrs in dead:
        reason = dict(hdrs).get("dlq.reason", b"").decode()
        unique_dead.setdefault((k, reason), 0)
        unique_dead[(k, reason)] += 1
    for (_, reason), _ in unique_dead.items():
        reasons[reason] += 1
    dead_dup = sum(n - 1 for n in unique_dead.values())
    res = {
        "in": len(w.records),
        "expected_out": sum(len(v) for v in w.by_topic.values()),
        "out": out,
        "lost": lost,
        "duplicated": dup,
        "copies": {str(n): c for n, c in sorted(copies.items())},
        "unexpected": unexpected,
        "corrupt": corrupt,
        "dead_letters": dict(reasons),
        "dead_letter_duplicates": dead_dup,
        "input_duplicates_dropped_expected": w.duplicates,
    }
    problems = []
    if lost or unexpected or corrupt:
        problems.append(f"lost {lost}, unexpected {unexpected}, corrupt {corrupt}")
    if dict(reasons) != w.dead:
        problems.append(f"dead letters {dict(reasons)} != expected {w.dead}")
    if exact and (dup or dead_dup):
        problems.append(f"{dup} duplicates and {dead_dup} dead-letter duplicates in a clean run")
    if problems:
        raise AssertionError("; ".join(problems) + f" — {res}")
    return res


def drained(bootstrap, group, n, partitions=PARTITIONS, topic=INPUT, tls_ca=None):
    """True once the group's committed offsets cover all `n` input records.
    (Offsets are counted rather than compared with high watermarks, which
    tansu does not report reliably.)"""
    got = h.committed(bootstrap, group, topic, partitions, tls_ca)
    return sum(max(o, 0) for o in got.values()) >= n


class Stream(threading.Thread):
    """Produces a workload in the background at a fixed rate."""

    def __init__(self, bootstrap, records, rate):
        super().__init__(daemon=True)
        self.args = (bootstrap, INPUT, records, rate)
        self.error = None

    def run(self):
        try:
            h.produce(*self.args)
        except Exception as e:  # noqa: BLE001
            self.error = e

    def finish(self, timeout=120):
        self.join(timeout)
        if self.is_alive():
            raise TimeoutError("the producer did not finish")
        if self.error:
            raise self.error


def setup(storage="memory", registry_ids=h.KNOWN_SCHEMAS):
    broker = h.Tansu(storage).start()
    broker.create_topic(INPUT, PARTITIONS)
    reg = h.Registry(registry_ids).start()
    return broker, reg


# --- scenarios -------------------------------------------------------------

def plain(rec):
    """Exact contents against tansu: every output topic, byte for byte,
    created by the router's admin client; every dead letter with its reason."""
    broker, reg = setup()
    try:
        w = h.make_workload(3000, seed=1)
        h.produce(broker.bootstrap, INPUT, w.records)
        r = h.Router(broker.bootstrap, reg.url, "plain", INPUT).start()
        t0 = time.time()
        h.until(lambda: drained(broker.bootstrap, "plain", len(w.records)), 120, "the router to commit the whole input")
        took = time.time() - t0
        dropped = r.metric('envelope_router_dropped_total{reason="duplicate"}')
        rc = r.stop()
        assert rc == 0, f"router exited {rc}"
        res = verify(broker.bootstrap, w, exact=True)
        assert dropped == w.duplicates, f"router counted {dropped} duplicates, the workload has {w.duplicates}"
        res.update(router_dropped_duplicates=dropped, drain_s=round(took, 2))
        rec(res)
    finally:
        broker.stop()
        reg.stop()


def tls(rec):
    """The same, through stunnel (TLS) with a throwaway CA: the router, the
    producer and the reader all connect with security.protocol=ssl. A secret
    comes from ${ROUTER_SECRET} and must appear in no log line or metric."""
    tls_port = h.free_port()
    broker = h.Tansu("memory", advertised=tls_port).start()
    tunnel = h.Stunnel(broker.port, tls_port).start()
    reg = h.Registry().start()
    try:
        broker.create_topic(INPUT, PARTITIONS)
        bootstrap = f"localhost:{tls_port}"
        w = h.make_workload(1000, seed=2)
        h.produce(bootstrap, INPUT, w.records, tls_ca=tunnel.ca)
        secret = "s3cr3t-" + h.random.randbytes(8).hex()
        r = h.Router(bootstrap, reg.url, "tls", INPUT,
                     kafka_extra={"security.protocol": "ssl", "ssl.ca.location": str(tunnel.ca),
                                  "ssl.key.password": "${ROUTER_SECRET}"},
                     env={"ROUTER_SECRET": secret}).start()
        h.until(lambda: r.metric("envelope_router_records_in_total") >= len(w.records), 120,
                "the router to read the input over TLS")
        h.until(lambda: drained(bootstrap, "tls", len(w.records), tls_ca=tunnel.ca), 60, "commits over TLS")
        metrics = json.dumps(r.metrics())
        assert r.stop() == 0
        assert secret not in r.logfile.read_text() and secret not in metrics, "the secret leaked"
        assert secret not in h.subprocess.run([str(h.ROUTER_BIN), "check-config", "--config", str(r.config)],
                                              env=r.env, capture_output=True, text=True, check=True).stdout
        res = verify(bootstrap, w, exact=True, tls_ca=tunnel.ca)
        rec(res)
    finally:
        tunnel.stop()
        broker.stop()
        reg.stop()


def kill9(rec, kills=5):
    """kill -9 at random points during a stream, restart each time."""
    broker, reg = setup()
    rng = random.Random(9)
    try:
        w = h.make_workload(8000, seed=3)
        stream = Stream(broker.bootstrap, w.records, rate=250)
        stream.start()
        r = h.Router(broker.bootstrap, reg.url, "kill9", INPUT, name="kill9").start()
        killed_at, committed_at_kill = [], []
        for _ in range(kills):
            # Kill only once this incarnation is working (a restarted member
            # gets its partitions when the killed one's session expires,
            # which tansu can take ~30 s to see). If the one before it
            # committed the whole input meanwhile, there is nothing left for
            # this one to read, nor to be killed in: the kills end there.
            h.until(lambda: r.metric("envelope_router_records_in_total") > 0
                    or drained(broker.bootstrap, "kill9", len(w.records)), 60, "the restarted router to read")
            if r.metric("envelope_router_records_in_total") == 0:
                break
            time.sleep(rng.uniform(0.2, 3.0))
            killed_at.append(int(r.metric("envelope_router_records_in_total")))
            committed_at_kill.append(sum(max(o, 0) for o in h.committed(broker.bootstrap, "kill9", INPUT, PARTITIONS).values()))
            r.kill9()
            r.start()
        stream.finish()
        t0 = time.time()
        h.until(lambda: drained(broker.bootstrap, "kill9", len(w.records)), 120, "the router to commit the whole input")
        recovery = time.time() - t0
        assert r.stop() == 0
        res = verify(broker.bootstrap, w, exact=False)
        # Reads by every incarnation: sampled just before each kill, and the
        # last one's own total. Duplicates must be explained by records read
        # again after a kill (from the last commit), or by input duplicates
        # whose first copy a killed incarnation saw (dedup state is in memory).
        reads = sum(killed_at) + r.final_counts()["records_in"]
        assert killed_at, "no incarnation was killed while it worked"
        res.update(kills=len(killed_at), records_in_at_kill=killed_at, committed_at_kill=committed_at_kill,
                   records_read_by_all=reads, re_read=reads - len(w.records), drain_after_stream_s=round(recovery, 2))
        assert res["duplicated"] <= res["re_read"] + w.duplicates, f"unexplained duplicates — {res}"
        rec(res)
    finally:
        broker.stop()
        reg.stop()


def registry_outage(rec):
    """The registry is stopped (3 s), then slow (3 s answers, 3 s), then
    failing with 500s for REGISTRY_OUTAGE_SECONDS (default 20; the issue's
    case is 60), while records with never-seen schema ids arrive. The
    router runs with the default backoff: output must resume within 1 s of
    the registry's return (before: 11 s, the backoff at its 10 s cap)."""
    outage_s = float(os.environ.get("REGISTRY_OUTAGE_SECONDS", "20"))
    broker, reg = setup(registry_ids=set(range(1, 100_000)) - {h.UNKNOWN_SCHEMA})
    try:
        # A fresh schema id every 10 records: the router must ask the registry.
        w = h.make_workload(6000, seed=4, schema_of=lambda i: 1000 + i // 10)
        stream = Stream(broker.bootstrap, w.records, rate=500)
        r = h.Router(broker.bootstrap, reg.url, "outage", INPUT).start()
        samples = []
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                m = r.metrics()
                samples.append((time.time(), reg.mode, m.get("envelope_router_paused_partitions", 0.0),
                                sum(v for k, v in m.items() if k.startswith("envelope_router_records_out_total"))))
                time.sleep(0.1)

        sampler = threading.Thread(target=sample, daemon=True)
        stream.start()
        sampler.start()
        time.sleep(2)
        phases = []
        reg.stop()
        phases.append(("down", time.time()))
        time.sleep(3)
        reg.start()
        reg.mode = "slow"
        phases.append(("slow", time.time()))
        time.sleep(3)
        reg.mode = "error"
        phases.append(("error", time.time()))
        time.sleep(outage_s)
        reg.mode = "up"
        back = time.time()
        phases.append(("up", back))
        stream.finish()
        h.until(lambda: drained(broker.bootstrap, "outage", len(w.records)), 120, "the router to commit the whole input")
        stop.set()
        sampler.join()
        assert r.stop() == 0
        res = verify(broker.bootstrap, w, exact=True)
        paused_max = max(p for _, mode, p, _ in samples if mode != "up") if samples else 0
        out_at_back = max((o for t, _, _, o in samples if t <= back), default=0)
        moved = next((t for t, _, p, o in samples if t > back and o > out_at_back), None)
        unpaused = next((t for t, _, p, _ in samples if t > back and p == 0), None)
        res.update(
            failing_registry_s=outage_s,
            paused_partitions_max_during_outage=paused_max,
            output_resumed_after_s=round(moved - back, 2) if moved else None,
            unpaused_after_s=round(unpaused - back, 2) if unpaused else None,
        )
        assert paused_max > 0, "no partition was reported paused during the outage"
        assert moved is not None and moved - back < 1.0, f"output resumed {res['output_resumed_after_s']}s after the registry came back"
        rec(res)
    finally:
        broker.stop()
        reg.stop()


def broker_restart(rec):
    """tansu on durable storage (libsql) is restarted mid-stream."""
    broker, reg = setup(storage="libsql")
    try:
        w = h.make_workload(4000, seed=5)
        # tansu 0.6's libsql engine panics (update_group: unreachable) when
        # topics are created while a group heartbeats, so topics come first.
        for t in [*w.by_topic, "dead-letter", "restart.dedup-changelog"]:
            broker.create_topic(t, 2)
        stream = Stream(broker.bootstrap, w.records, rate=300)
        r = h.Router(broker.bootstrap, reg.url, "restart", INPUT, output_extra={"create_topics": "none"}).start()
        stream.start()
        h.until(lambda: r.metric("envelope_router_records_in_total") > 1000, 60, "the router to be mid-stream")
        broker.stop()
        down = time.time()
        time.sleep(3)
        broker.start()
        stream.finish()
        h.until(lambda: drained(broker.bootstrap, "restart", len(w.records)), 120, "the router to commit the whole input")
        took = time.time() - down
        errors = r.metric("envelope_router_delivery_errors_total")
        assert r.stop() == 0
        res = verify(broker.bootstrap, w, exact=False)
        res.update(broker_down_s=3, drained_after_restart_s=round(took, 2), delivery_errors=errors)
        rec(res)
    finally:
        broker.stop()
        reg.stop()


def scale(rec):
    """1 → 3 → 1 instances in one group while the stream runs."""
    broker, reg = setup()
    try:
        w = h.make_workload(8000, seed=6)
        stream = Stream(broker.bootstrap, w.records, rate=800)
        stream.start()
        a = h.Router(broker.bootstrap, reg.url, "scale", INPUT, name="scale-a").start()
        time.sleep(2.5)
        extra = [h.Router(broker.bootstrap, reg.url, "scale", INPUT, name=f"scale-{n}").start() for n in "bc"]
        time.sleep(4)
        rcs = [x.stop() for x in extra]
        stream.finish()
        h.until(lambda: drained(broker.bootstrap, "scale", len(w.records)), 120, "the group to commit the whole input")
        assert a.stop() == 0 and rcs == [0, 0], f"exit codes {rcs}"
        # Every read and every routing by every instance, from the totals
        # each logs when it stops.
        finals = [x.final_counts() for x in [a, *extra]]
        reads = sum(f["records_in"] for f in finals)
        routed = sum(f["routed"] for f in finals)
        res = verify(broker.bootstrap, w, exact=False)
        res.update(instances="1-3-1", records_read_by_all=reads, re_read=reads - len(w.records),
                   routed_by_all=routed)
        # Each output record is one counted routing (no fan-out here), so
        # every duplicate is explained: a record read twice (by the old and
        # the new owner of a partition), or an input duplicate whose first
        # copy was seen by the previous owner (dedup state stays with its
        # instance).
        assert res["out"] == routed, f"{res['out']} output records but {routed} routings counted — {res}"
        assert res["duplicated"] <= res["re_read"] + w.duplicates, f"unexplained duplicates — {res}"
        rec(res)
    finally:
        broker.stop()
        reg.stop()


def missing_output(rec):
    """create_topics: none and an output topic that does not exist: the
    router pauses (backpressure) and says why; once the topic is created it
    publishes everything. Then the same for the dead-letter topic."""
    broker, reg = setup()
    try:
        w = h.make_workload(1500, seed=7)
        present = sorted(w.by_topic)[1:]
        missing = sorted(w.by_topic)[0]
        # The dedup changelog is not an output: with create_topics: none
        # the operator creates it (the router refuses to start otherwise).
        for t in [*present, "missing.dedup-changelog"]:
            broker.create_topic(t, 2)
        h.produce(broker.bootstrap, INPUT, w.records)
        r = h.Router(broker.bootstrap, reg.url, "missing", INPUT,
                     output_extra={"create_topics": "none"},
                     kafka_extra={"topic.metadata.propagation.max.ms": 1000}).start()
        h.until(lambda: r.metric("envelope_router_paused_partitions") > 0, 60, "a paused partition")
        time.sleep(3)
        stuck = not drained(broker.bootstrap, "missing", len(w.records))
        said = [e for e in r.log_lines() if "produce failed" in json.dumps(e)]
        assert stuck, "the group committed past records it could not publish"
        assert said, "no log line says why publishing stopped"
        broker.create_topic(missing, 2)
        broker.create_topic("dead-letter", 1)
        t0 = time.time()
        h.until(lambda: drained(broker.bootstrap, "missing", len(w.records)), 120, "the router to resume and commit")
        resumed = time.time() - t0
        assert r.stop() == 0
        res = verify(broker.bootstrap, w, exact=False)
        res.update(missing_topics=[missing, "dead-letter"], paused_then_resumed_after_s=round(resumed, 2),
                   why=said[0].get("fields", said[0]))
        rec(res)
    finally:
        broker.stop()
        reg.stop()


def poison(rec):
    """The reproduction of the poison-record issue: one record of 1,000,159
    bytes (over output.max_record_bytes, at a default broker's message
    limit) ahead of normal records on a one-partition topic. The big record
    is dead-lettered as too_large (written without its payload if the
    broker refuses it whole) and the partition's commit passes it. Before,
    its dead letter was retried every 10 s for ever and the committed
    offset never passed it."""
    broker, reg = setup()
    try:
        topic = "raw-poison"
        broker.create_topic(topic, 1)
        w = h.make_workload(100, seed=11, hostile=False)
        big_id = b"poison-record-0001"
        payload = b"x" * 1_000_000
        value = h.envelope(big_id, "prod", "glutton", "1234", "telemetry_match_event", 1, 1, payload)
        value = h.envelope(big_id, "prod", "glutton", "1234", "telemetry_match_event", 1, 1,
                           payload + b"x" * (1_000_159 - len(value)))
        assert len(value) == 1_000_159, len(value)
        w.records.insert(0, h.Record(key=big_id, value=value, expect=("dlq", "too_large"), message_id=big_id))
        w.dead["too_large"] = w.dead.get("too_large", 0) + 1
        p = h.Producer({**h.client_conf(broker.bootstrap), "message.max.bytes": 2_000_000, "linger.ms": 5})
        for r in w.records:
            p.produce(topic, r.value, r.key)
            p.poll(0)
        assert p.flush(60) == 0, "the test producer could not write the input"
        r = h.Router(broker.bootstrap, reg.url, "poison", topic).start()
        t0 = time.time()
        h.until(lambda: drained(broker.bootstrap, "poison", len(w.records), partitions=1, topic=topic),
                60, "the committed offset to pass the poison record")
        took = time.time() - t0
        assert r.stop() == 0
        res = verify(broker.bootstrap, w, exact=True)
        [dead] = [hdrs for k, _, hdrs in h.read_topic(broker.bootstrap, "dead-letter") if k == big_id]
        dead = {k: v.decode() for k, v in dead}
        assert dead["dlq.source.offset"] == "0", dead
        res.update(poison_bytes=len(value), committed_past_it_after_s=round(took, 2),
                   dead_letter_payload_omitted=dead.get("dlq.payload_omitted"),
                   dead_letter_omitted_because=dead.get("dlq.omitted_because"))
        rec(res)
    finally:
        broker.stop()
        reg.stop()


SCENARIOS = {f.__name__: f for f in [plain, tls, kill9, registry_outage, broker_restart, scale, missing_output,
                                      poison]}
# broker_restart is left out by default: tansu 0.6's libsql engine panics under
# concurrent produce and group traffic (RELIABILITY.md), before any restart.
# The mock-cluster test `every_broker_down_mid_stream_then_back_loses_nothing`
# covers a whole-cluster outage with the data kept.
DEFAULT = [n for n in SCENARIOS if n != "broker_restart"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("scenario", nargs="*", default=DEFAULT, help=f"of {', '.join(SCENARIOS)}")
    ap.add_argument("--json")
    args = ap.parse_args()
    unknown = [n for n in args.scenario if n not in SCENARIOS]
    if unknown:
        ap.error(f"unknown scenario {unknown}; known: {', '.join(SCENARIOS)}")
    results, failed = {}, []
    for name in args.scenario:
        h.log(f"== {name}")
        t0 = time.time()
        try:
            SCENARIOS[name](lambda res, n=name: results.__setitem__(n, res))
            results[name]["wall_s"] = round(time.time() - t0, 1)
            print(f"ok    {name:16} {json.dumps(results[name])}", flush=True)
        except Exception:  # noqa: BLE001
            failed.append(name)
            traceback.print_exc()
            print(f"FAIL  {name} (logs in {h.WORK})", flush=True)
        finally:
            h.Router.kill_all()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    if failed:
        raise SystemExit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
