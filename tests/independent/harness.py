"""Processes and clients for the independent-broker tier.

Nothing here is ours except the router binary under test: the broker is
tansu, the clients are confluent-kafka (librdkafka) and the envelopes are
encoded by Google's protobuf runtime from proto/envelope.proto.
"""

from __future__ import annotations

import http.server
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parents[2]
WORK = Path(os.environ.get("INDEPENDENT_WORKDIR") or tempfile.mkdtemp(prefix="envelope-independent-"))


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 30.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def until(cond, timeout: float, what: str, step: float = 0.1):
    """Polls `cond` until it returns a truthy value; fails after `timeout`."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(step)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


# --- envelopes, encoded by protobuf's own runtime ---------------------------

def load_envelope_module():
    """Compiles proto/envelope.proto with grpcio-tools' bundled protoc."""
    out = WORK / "pb"
    out.mkdir(parents=True, exist_ok=True)
    from grpc_tools import protoc  # noqa: PLC0415

    rc = protoc.main(["protoc", f"-I{ROOT / 'proto'}", f"--python_out={out}", "envelope.proto"])
    if rc != 0:
        raise RuntimeError("protoc failed on proto/envelope.proto")
    sys.path.insert(0, str(out))
    import envelope_pb2  # noqa: PLC0415

    return envelope_pb2


pb = load_envelope_module()


@dataclass
class Record:
    key: bytes
    value: bytes
    # What the router must do with it: ("publish", topic) or ("dlq", reason) or ("duplicate", None).
    expect: tuple
    message_id: bytes = b""


KNOWN_SCHEMAS = {1, 2, 3}
UNKNOWN_SCHEMA = 999


@dataclass
class Workload:
    records: list[Record]
    by_topic: dict[str, list[Record]] = field(default_factory=dict)
    dead: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0


def envelope(mid: bytes, env, source, title, category, version, schema_id, payload: bytes) -> bytes:
    e = pb.Envelope()
    h = e.header
    h.message_id = mid
    h.env, h.source, h.title, h.category = env, source, title, category
    h.version, h.schema_id = version, schema_id
    h.event_time_ms = int(time.time() * 1000)
    h.producer = "python-protobuf"
    e.payload = payload
    return e.SerializeToString()


def make_workload(n: int, seed: int, hostile: bool = True, start: int = 0, schema_of=None) -> Workload:
    """`n` records over 8 streams: ~8% duplicates and, if `hostile`, unknown
    schema ids, malformed bytes and invalid headers (topic-name injection)."""
    rng = random.Random(seed)
    streams = [
        (env, src, title, cat, ver)
        for env in ("prod", "staging")
        for src, title in (("glutton", "1234"), ("billing", "56"))
        for cat, ver in (("telemetry_match_event", 1), ("store_purchase", 2))
    ]
    records: list[Record] = []
    sent: list[Record] = []
    for i in range(start, start + n):
        roll = rng.random()
        if sent and roll < 0.08:
            dup = rng.choice(sent)
            records.append(Record(dup.key, dup.value, ("duplicate", None), dup.message_id))
            continue
        mid = f"m-{seed}-{i:08d}".encode()
        env, src, title, cat, ver = rng.choice(streams)
        payload = rng.randbytes(rng.randint(20, 600))
        if hostile and roll < 0.10:
            value = rng.randbytes(rng.randint(1, 40)) + b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"
            records.append(Record(mid, value, ("dlq", "malformed"), mid))
            continue
        if hostile and roll < 0.12:
            bad = rng.choice(["..", "a/b", "x" * 300, "prod.evil", "caf\u00e9", ""])
            value = envelope(mid, env, bad, title, cat, ver, 1, payload)
            records.append(Record(mid, value, ("dlq", "invalid_header"), mid))
            continue
        if hostile and roll < 0.13:
            value = envelope(mid, env, src, title, cat, ver, UNKNOWN_SCHEMA, payload)
            records.append(Record(mid, value, ("dlq", "unknown_schema"), mid))
            continue
        sid = schema_of(i) if schema_of else 1 + i % 3
        value = envelope(mid, env, src, title, cat, ver, sid, payload)
        r = Record(mid, value, ("publish", f"{env}.{src}.{title}.{cat}-v{ver}"), mid)
        records.append(r)
        sent.append(r)
    w = Workload(records)
    for r in records:
        kind, what = r.expect
        if kind == "publish":
            w.by_topic.setdefault(what, []).append(r)
        elif kind == "dlq":
            w.dead[what] = w.dead.get(what, 0) + 1
        else:
            w.duplicates += 1
    return w


# --- the broker --------------------------------------------------------------

class Tansu:
    """A tansu broker on a free localhost port, memory or libsql storage."""

    def __init__(self, storage: str = "memory", port: int | None = None, advertised: int | None = None):
        self.port = port or free_port()
        self.advertised = advertised or self.port
        self.storage = storage
        self.db = WORK / f"tansu-{self.port}.db"
        self.proc = None
        self.logfile = WORK / f"tansu-{self.port}.log"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self):
        # tansu reads the sqlite path relative to its working directory.
        storage = "memory://tansu/" if self.storage == "memory" else f"sqlite://{self.db.name}"
        cmd = [
            "tansu", "broker",
            "--listener-url", f"tcp://127.0.0.1:{self.port}",
            "--advertised-listener-url", f"tcp://127.0.0.1:{self.advertised}",
            "--storage-engine", storage,
        ]
        env = dict(os.environ, RUST_LOG=os.environ.get("TANSU_LOG", "warn"))
        self.proc = subprocess.Popen(cmd, stdout=open(self.logfile, "ab"), stderr=subprocess.STDOUT, env=env,
                                     cwd=WORK)
        wait_port(self.port)
        return self

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def create_topic(self, name: str, partitions: int):
        subprocess.run(
            ["tansu", "topic", "create", "--broker", f"tcp://127.0.0.1:{self.port}",
             "--partitions", str(partitions), name],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )


class Stunnel:
    """stunnel4 terminating TLS on `port` in front of a plaintext broker,
    with a throwaway CA and server certificate made with openssl."""

    def __init__(self, backend_port: int, port: int):
        self.backend_port, self.port = backend_port, port
        self.dir = WORK / f"tls-{port}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ca = self.dir / "ca.pem"
        self.proc = None

    def make_certs(self):
        d = self.dir
        run = lambda *a: subprocess.run(a, check=True, cwd=d, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: E731
        run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=envelope-router test CA", "-keyout", "ca.key", "-out", "ca.pem")
        run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
            "-keyout", "server.key", "-out", "server.csr")
        (d / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
        run("openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "1", "-extfile", "san.ext", "-out", "server.pem")

    def start(self):
        self.make_certs()
        conf = self.dir / "stunnel.conf"
        conf.write_text(
            f"foreground = yes\npid =\ndebug = 3\n[kafka]\naccept = 127.0.0.1:{self.port}\n"
            f"connect = 127.0.0.1:{self.backend_port}\n"
            f"cert = {self.dir / 'server.pem'}\nkey = {self.dir / 'server.key'}\n"
        )
        self.proc = subprocess.Popen(["stunnel4", str(conf)], stdout=open(self.dir / "stunnel.log", "ab"),
                                     stderr=subprocess.STDOUT)
        wait_port(self.port)
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


# --- the schema registry -----------------------------------------------------

class Registry:
    """A Confluent-style registry: /schemas/ids/{id}. Its mode can be switched
    to `down` (the server is stopped), `slow` (answers after `slow_seconds`)
    or `error` (HTTP 500)."""

    def __init__(self, ids=KNOWN_SCHEMAS):
        self.ids = set(ids)
        self.port = free_port()
        self.mode = "up"
        self.slow_seconds = 3.0
        self.requests = 0
        self.server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self):
        reg = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def handle(self):
                try:
                    super().handle()
                except OSError:
                    pass

            def do_GET(self):  # noqa: N802
                reg.requests += 1
                if reg.mode == "slow":
                    time.sleep(reg.slow_seconds)
                if reg.mode == "error":
                    return self.reply(500, {"error_code": 50001, "message": "store unavailable"})
                parts = self.path.strip("/").split("/")
                if len(parts) >= 3 and parts[:2] == ["schemas", "ids"] and parts[2].isdigit():
                    if int(parts[2]) in reg.ids:
                        return self.reply(200, {"schema": '"string"'})
                    return self.reply(404, {"error_code": 40403, "message": "Schema not found"})
                self.reply(404, {"error_code": 404, "message": "no such path"})

            def reply(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/vnd.schemaregistry.v1+json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except OSError:
                    pass  # the router gave up waiting (timeout): expected in `slow` mode

        http.server.ThreadingHTTPServer.allow_reuse_address = True
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.mode = "up"
        return self

    def stop(self):
        if self.server:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        self.mode = "down"


# --- the router under test ---------------------------------------------------

ROUTER_BIN = Path(os.environ.get("ENVELOPE_ROUTER_BIN", ROOT / "target" / "debug" / "envelope-router"))


class Router:
    """The router binary as a separate process, with its own metrics port."""

    count = 0
    started: list["Router"] = []  # every instance, so a failed scenario leaves none running

    def __init__(self, bootstrap: str, registry_url: str, group: str, input_topic: str,
                 kafka_extra: dict | None = None, output_extra: dict | None = None, name: str | None = None,
                 env: dict | None = None):
        Router.count += 1
        self.name = name or f"router-{Router.count}"
        self.metrics_port = free_port()
        self.config = WORK / f"{self.name}.yaml"
        self.logfile = WORK / f"{self.name}.log"
        kafka = {"bootstrap.servers": bootstrap, **(kafka_extra or {})}
        output = {"create_topics": "admin", "partitions": 2, **(output_extra or {})}
        cfg = {
            "kafka": {**kafka, "consumer": {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500},
                      "producer": {"linger.ms": 5}},
            "input": {"topics": [input_topic], "group_id": group},
            "output": output,
            "dead_letter": {"topic": "dead-letter"},
            # The registry's backoff is what a new user gets (the defaults).
            "schema": {"registry": {"url": registry_url, "timeout": "1s"}},
            "routes": [],
            "default_route": "canonical",
            "metrics": {"listen": f"127.0.0.1:{self.metrics_port}"},
            "log": {"format": "json", "level": "info"},
            "shutdown_timeout": "10s",
        }
        # JSON is YAML: no YAML writer needed on the Python side.
        self.config.write_text(json.dumps(cfg, indent=2))
        self.env = dict(os.environ, **(env or {}))
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen([str(ROUTER_BIN), "run", "--config", str(self.config)],
                                     stdout=subprocess.DEVNULL, stderr=open(self.logfile, "ab"), env=self.env)
        Router.started.append(self)
        until(self.healthy, 30, f"{self.name} /health")
        return self

    def healthy(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see {self.logfile}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/health", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def metrics(self) -> dict[str, float]:
        """Prometheus text → {'name{labels}': value}; empty if unreachable."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2) as r:
                text = r.read().decode()
        except OSError:
            return {}
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                try:
                    out[name] = float(value)
                except ValueError:
                    pass
        return out

    def metric(self, prefix: str) -> float:
        return sum(v for k, v in self.metrics().items() if k == prefix or k.startswith(prefix + "{"))

    @classmethod
    def kill_all(cls):
        """Kills every instance still running (after a scenario, pass or fail)."""
        for r in cls.started:
            r.kill9()
        cls.started.clear()

    def kill9(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self, timeout: float = 30) -> int:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise RuntimeError(f"{self.name} did not stop within {timeout}s after SIGTERM")
        return self.proc.returncode if self.proc else 0

    def final_counts(self) -> dict:
        """The totals the router logs when it stops ("router stopped")."""
        stops = [e["fields"] for e in self.log_lines() if e.get("fields", {}).get("message") == "router stopped"]
        if not stops:
            raise RuntimeError(f"{self.name} logged no final counts; see {self.logfile}")
        return stops[-1]

    def log_lines(self) -> list[dict]:
        out = []
        for line in self.logfile.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                pass
        return out


# --- clients -----------------------------------------------------------------

def client_conf(bootstrap: str, tls_ca: Path | None = None) -> dict:
    c = {"bootstrap.servers": bootstrap}
    if tls_ca:
        c.update({"security.protocol": "ssl", "ssl.ca.location": str(tls_ca)})
    return c


def produce(bootstrap: str, topic: str, records: list[Record], rate: float | None = None,
            tls_ca: Path | None = None):
    """Produces `records` (keyed by message id) and waits for every delivery;
    a record whose delivery fails is produced again (at least once, like any
    careful producer). With `rate`, paces them at about that many per second."""
    p = Producer({**client_conf(bootstrap, tls_ca), "linger.ms": 5, "acks": "all",
                  "partitioner": "murmur2_random"})
    failed: list[Record] = []

    def send(r: Record):
        def report(err, _msg, r=r):
            if err:
                failed.append(r)
        while True:
            try:
                p.produce(topic, r.value, r.key, on_delivery=report)
                return
            except BufferError:
                p.poll(0.05)

    start = time.time()
    for i, r in enumerate(records):
        send(r)
        p.poll(0)
        if rate:
            ahead = (i + 1) / rate - (time.time() - start)
            if ahead > 0:
                time.sleep(ahead)
    for _ in range(20):
        left = p.flush(60)
        if not failed and not left:
            return
        retry, failed[:] = list(failed), []
        log(f"producing to {topic}: re-sending {len(retry)} failed records")
        for r in retry:
            send(r)
    raise RuntimeError(f"producing to {topic}: records still failing after 20 rounds")


def read_topic(bootstrap: str, topic: str, tls_ca: Path | None = None, timeout: float = 60,
               idle: float = 1.0) -> list[tuple]:
    """Every record of `topic` from the beginning: [(key, value, headers)].
    Reads until every partition reported its end and then `idle` seconds
    pass with nothing new (tansu's ListOffsets high watermarks are not
    reliable, so they are not used). An unknown topic reads as empty."""
    c = Consumer({**client_conf(bootstrap, tls_ca), "group.id": "reader", "enable.auto.commit": False,
                  "enable.partition.eof": True, "fetch.wait.max.ms": 100})
    try:
        md = c.list_topics(topic, timeout=10)
        t = md.topics.get(topic)
        if t is None or t.error is not None or not t.partitions:
            return []
        c.assign([TopicPartition(topic, p, 0) for p in t.partitions])
        todo = set(t.partitions)
        out = []
        deadline = time.time() + timeout
        last = time.time()
        while time.time() < deadline:
            m = c.poll(0.1)
            if m is None:
                if not todo and time.time() - last > idle:
                    return out
                continue
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    todo.discard(m.partition())
                    continue
                raise RuntimeError(f"reading {topic}: {m.error()}")
            last = time.time()
            out.append((m.key(), m.value(), m.headers() or []))
        raise TimeoutError(f"reading {topic}: not read to the end in {timeout}s (partitions {sorted(todo)} left)")
    finally:
        c.close()


def topics(bootstrap: str, tls_ca: Path | None = None) -> set[str]:
    return set(AdminClient(client_conf(bootstrap, tls_ca)).list_topics(timeout=10).topics)


def committed(bootstrap: str, group: str, topic: str, partitions: int, tls_ca: Path | None = None) -> dict[int, int]:
    """The group's committed offsets (negative: none yet)."""
    c = Consumer({**client_conf(bootstrap, tls_ca), "group.id": group, "enable.auto.commit": False})
    try:
        tps = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return {tp.partition: tp.offset for tp in tps}
    except KafkaException as e:
        log(f"committed offsets of {group} unavailable: {e}")
        return {}
    finally:
        c.close()
