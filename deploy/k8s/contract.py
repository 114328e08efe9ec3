"""The manifest-to-binary contract test: the rendered manifests and the binaries cannot drift.

    contract.py RENDERED.yaml     (run by `deploy/k8s.sh contract`, under `deploy/kafka.sh with`)

For every Deployment of the rendered overlay it starts the real binary that the container's
`command` names (from $CARGO_TARGET_DIR/debug) with the container's args and environment, resolved
as the kubelet would (ConfigMaps, Secrets, field references, mounted Secret files), and checks:

  - every TANDEM_* variable the container sets is one the binary reads (its --help, or its text);
  - every Service's selector finds a Deployment and each targetPort names a declared containerPort;
  - every listening address the environment sets is on a declared containerPort;
  - the process starts and stays up; each probe (startup, liveness, readiness) answers as declared,
    on the port it names: httpGet 200-399, grpc grpc.health.v1 SERVING, tcpSocket a connection;
  - every port a Service targets is listened on, and every PodMonitor endpoint answers;
  - the KafkaTopics are the topics the sequencer really creates (partitions and configs);
  - SIGTERM after the preStop hook ends the process within terminationGracePeriodSeconds.

What is not on this machine is pointed at what is: listening addresses become 127.0.0.1 on ports
picked now, a Service's address becomes the local port of the container it targets, the Strimzi
bootstrap address becomes $TANDEM_TEST_BROKERS, CloudNativePG's application Secret becomes a fresh
database on the local Postgres ($TANDEM_TEST_POSTGRES, postgres://postgres@127.0.0.1:5432). Every
process started here is stopped on the way out, whatever happens. The last line is the tally.
"""

import base64
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import yaml

TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/tandem/target"))
BIN_DIR = os.environ.get("TANDEM_CONTRACT_BIN_DIR", os.path.join(TARGET, "debug"))
BROKERS = os.environ.get("TANDEM_TEST_BROKERS", "")
POSTGRES = os.environ.get("TANDEM_TEST_POSTGRES", "postgres://postgres@127.0.0.1:5432")
# A probe's own budget (failureThreshold x periodSeconds) can be minutes; a test waits at most this.
MAX_WAIT = float(os.environ.get("TANDEM_CONTRACT_MAX_WAIT", "45"))

passed = 0
failed = 0


def ok(message):
    global passed
    passed += 1
    print(f"ok   {message}", flush=True)


def fail(message):
    global failed
    failed += 1
    print(f"FAIL {message}", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


class Manifests:
    def __init__(self, path):
        with open(path) as f:
            self.docs = [d for d in yaml.safe_load_all(f) if d]
        self.namespace = next(
            (d["metadata"].get("namespace") for d in self.docs if d["kind"] == "Deployment"), "default"
        )

    def of(self, kind):
        return [d for d in self.docs if d["kind"] == kind]

    def named(self, kind, name):
        return next((d for d in self.of(kind) if d["metadata"]["name"] == name), None)


class Workload:
    """One Deployment's (single) container, as it will run here."""

    def __init__(self, deployment):
        self.name = deployment["metadata"]["name"]
        self.deployment = deployment
        self.pod = deployment["spec"]["template"]
        self.container = self.pod["spec"]["containers"][0]
        # containerPort -> the local port it becomes; port name -> containerPort.
        self.ports = {p["containerPort"]: free_port() for p in self.container.get("ports", [])}
        self.port_names = {p["name"]: p["containerPort"] for p in self.container.get("ports", []) if "name" in p}
        self.env = {}
        self.process = None
        self.log = None

    def container_port(self, port):
        """A probe's or Service's port (a name or a number) as a declared containerPort, or None."""
        if isinstance(port, str) and not port.isdigit():
            return self.port_names.get(port)
        port = int(port)
        return port if port in self.ports else None

    def selected_by(self, selector):
        labels = self.pod["metadata"].get("labels", {})
        return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def secret_value(secret, key):
    if key in secret.get("stringData", {}):
        return secret["stringData"][key]
    return base64.b64decode(secret["data"][key]).decode()


def resolve_env(m, w, externals, files):
    """The container's environment as the kubelet would give it, before the address rewrites."""
    env = {}
    for source in w.container.get("envFrom", []):
        for ref, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
            if ref not in source:
                continue
            name = source[ref]["name"]
            obj = m.named(kind, name)
            if obj is None:
                fail(f"{w.name}: envFrom {kind} {name} is not in the overlay")
                continue
            if kind == "ConfigMap":
                values = obj.get("data", {})
            else:
                keys = {**obj.get("data", {}), **obj.get("stringData", {})}
                values = {k: secret_value(obj, k) for k in keys}
            env.update({source.get("prefix", "") + k: v for k, v in values.items()})
    for var in w.container.get("env", []):
        name = var["name"]
        if "value" in var:
            env[name] = str(var["value"])
            continue
        ref = var.get("valueFrom", {})
        if "fieldRef" in ref:
            path = ref["fieldRef"]["fieldPath"]
            env[name] = {"metadata.name": f"{w.name}-contract", "metadata.namespace": m.namespace}.get(path, "")
        elif "configMapKeyRef" in ref:
            r = ref["configMapKeyRef"]
            config = m.named("ConfigMap", r["name"])
            if config is None or r["key"] not in config.get("data", {}):
                fail(f"{w.name}: {name} refers to ConfigMap {r['name']} key {r['key']}, not in the overlay")
                continue
            env[name] = config["data"][r["key"]]
        elif "secretKeyRef" in ref:
            r = ref["secretKeyRef"]
            secret = m.named("Secret", r["name"])
            if secret is not None:
                env[name] = secret_value(secret, r["key"])
            elif (r["name"], r["key"]) in externals:
                env[name] = externals[(r["name"], r["key"])]
            else:
                fail(f"{w.name}: {name} refers to Secret {r['name']}, which neither the overlay nor an operator makes")
        else:
            fail(f"{w.name}: {name}: unsupported valueFrom {ref}")
    # Mounted volumes become folders here; paths in the environment follow them.
    volumes = {v["name"]: v for v in w.pod["spec"].get("volumes", [])}
    mounts = {}
    for mount in w.container.get("volumeMounts", []):
        volume = volumes.get(mount["name"])
        if volume is None:
            fail(f"{w.name}: volumeMount {mount['name']} has no volume")
            continue
        local = os.path.join(files, w.name, mount["mountPath"].strip("/"))
        os.makedirs(local, exist_ok=True)
        if "secret" in volume:
            secret = m.named("Secret", volume["secret"]["secretName"])
            if secret is None:
                fail(f"{w.name}: volume {mount['name']}: Secret {volume['secret']['secretName']} is not in the overlay")
                continue
            for key in secret.get("data", {}):
                with open(os.path.join(local, key), "w") as f:
                    f.write(secret_value(secret, key))
        elif "configMap" in volume:
            config = m.named("ConfigMap", volume["configMap"]["name"])
            for key, value in (config or {}).get("data", {}).items():
                with open(os.path.join(local, key), "w") as f:
                    f.write(value)
        mounts[mount["mountPath"].rstrip("/")] = local
    # One pass over the original values, longest mount first: a local folder may itself lie under
    # a mount path (/tmp), and must not be rewritten again.
    if mounts:
        pattern = re.compile(
            r"(?<![\w/])(" + "|".join(re.escape(p) for p in sorted(mounts, key=len, reverse=True)) + r")(?=/|$|,)"
        )
        for name, value in env.items():
            env[name] = pattern.sub(lambda found: mounts[found.group(1)], value)
    return env


def rewrite_addresses(m, w, workloads, env):
    """Listening addresses onto local ports; Service and Kafka addresses onto what runs here."""
    services = {s["metadata"]["name"]: s for s in m.of("Service")}
    bootstraps = {
        f"{k['metadata']['name']}-kafka-bootstrap:{listener['port']}"
        for k in m.of("Kafka")
        for listener in k["spec"]["kafka"].get("listeners", [])
    }
    for name, value in list(env.items()):
        listen = re.fullmatch(r"(0\.0\.0\.0|\[::\]|::|127\.0\.0\.1):(\d+)", value)
        if listen:
            port = int(listen.group(2))
            if port in w.ports:
                env[name] = f"127.0.0.1:{w.ports[port]}"
                ok(f"{w.name}: {name}={value} listens on declared containerPort {port}")
            else:
                fail(f"{w.name}: {name}={value} listens on port {port}, which the container does not declare")
            continue
        parts = []
        for address in value.split(","):
            if address in bootstraps:
                parts.append(BROKERS)
                continue
            found = re.fullmatch(r"(\w+://)?([a-z0-9-]+)(\.[a-z0-9.-]+)?:(\d+)(/.*)?", address)
            if found and found.group(2) in services:
                service = services[found.group(2)]
                port = next((p for p in service["spec"]["ports"] if p["port"] == int(found.group(4))), None)
                target = next((t for t in workloads if t.selected_by(service["spec"].get("selector"))), None)
                local = target and port and target.container_port(port.get("targetPort", port["port"]))
                if not local:
                    fail(f"{w.name}: {name} names Service {found.group(2)} port {found.group(4)}, which leads to no container port")
                    parts.append(address)
                    continue
                parts.append(f"{found.group(1) or ''}127.0.0.1:{target.ports[local]}{found.group(5) or ''}")
                ok(f"{w.name}: {name} -> Service {found.group(2)}:{found.group(4)} -> {target.name} port {local}")
            else:
                parts.append(address)
        env[name] = ",".join(parts)


def check_variables(w, binary, env):
    """Every TANDEM_* variable set is one the binary reads: clap lists each in --help as
    `[env: NAME=...]`; a few are read directly (TANDEM_LOG, libs/telemetry) and are in its text."""
    help_text = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=30).stdout
    with open(binary, "rb") as f:
        image = f.read()
    for name in sorted(env):
        if not name.startswith("TANDEM_"):
            continue
        if f"[env: {name}=" in help_text or name.encode() in image:
            ok(f"{w.name}: {os.path.basename(binary)} reads {name}")
        else:
            fail(f"{w.name}: sets {name}, which {os.path.basename(binary)} does not read (not in its --help)")


def probe_once(w, kind, probe):
    """(success, definitive, what): definitive failures (404, UNIMPLEMENTED) will not turn into
    successes by waiting."""
    if "httpGet" in probe:
        h = probe["httpGet"]
        port = w.container_port(h["port"])
        if port is None:
            return False, True, f"httpGet port {h['port']} is not a declared containerPort"
        url = f"http://127.0.0.1:{w.ports[port]}{h.get('path', '/')}"
        try:
            with urllib.request.urlopen(url, timeout=probe.get("timeoutSeconds", 1) + 1) as r:
                code = r.status
        except urllib.error.HTTPError as e:
            code = e.code
        except OSError as e:
            return False, False, f"GET {h.get('path', '/')} on port {h['port']}: {e}"
        return 200 <= code < 400, code == 404, f"GET {h.get('path', '/')} on port {h['port']} ({port}): {code}"
    if "grpc" in probe:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        g = probe["grpc"]
        port = w.container_port(g["port"])
        if port is None:
            return False, True, f"grpc port {g['port']} is not a declared containerPort"
        service = g.get("service", "")
        with grpc.insecure_channel(f"127.0.0.1:{w.ports[port]}") as channel:
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=service), timeout=probe.get("timeoutSeconds", 1) + 1
                )
            except grpc.RpcError as e:
                code = e.code()
                return False, code == grpc.StatusCode.UNIMPLEMENTED, (
                    f"grpc.health.v1.Health/Check({service!r}) on port {port}: {code.name} {e.details() or ''}".strip()
                )
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        return status == "SERVING", False, f"grpc.health.v1.Health/Check({service!r}) on port {port}: {status}"
    if "tcpSocket" in probe:
        port = w.container_port(probe["tcpSocket"]["port"])
        if port is None:
            return False, True, f"tcpSocket port {probe['tcpSocket']['port']} is not a declared containerPort"
        return listening(w.ports[port]), False, f"tcpSocket port {port}"
    return False, True, f"unsupported probe {sorted(probe)}"


def check_probe(w, kind):
    probe = w.container.get(kind)
    if probe is None:
        return True
    budget = min(MAX_WAIT, probe.get("failureThreshold", 3) * probe.get("periodSeconds", 10))
    deadline = time.monotonic() + budget
    while True:
        if w.process.poll() is not None:
            fail(f"{w.name}: {kind}: the process exited ({w.process.returncode}); its log: {w.log}")
            return False
        success, definitive, what = probe_once(w, kind, probe)
        if success:
            ok(f"{w.name}: {kind} {what}")
            return True
        if definitive or time.monotonic() >= deadline:
            fail(f"{w.name}: {kind} {what}" + ("" if definitive else f" (for {budget:.0f} s)"))
            return False
        time.sleep(0.5)


def check_topics(m):
    """The KafkaTopics against the topics the real sequencer created on the local broker."""
    from confluent_kafka.admin import AdminClient, ConfigResource

    admin = AdminClient({"bootstrap.servers": BROKERS, "log_level": 3})
    metadata = admin.list_topics(timeout=10)
    for topic in m.of("KafkaTopic"):
        name = topic["spec"].get("topicName", topic["metadata"]["name"])
        spec = topic["spec"]
        if name not in metadata.topics:
            fail(f"KafkaTopic {name}: the sequencer did not create it (TANDEM_KAFKA_NAMESPACE?)")
            continue
        partitions = len(metadata.topics[name].partitions)
        (ok if partitions == spec["partitions"] else fail)(
            f"KafkaTopic {name}: {spec['partitions']} partitions; the sequencer created {partitions}"
        )
        replicas = len(next(iter(metadata.topics[name].partitions.values())).replicas)
        (ok if replicas == spec["replicas"] else fail)(
            f"KafkaTopic {name}: replicas {spec['replicas']}; the sequencer created {replicas}"
        )
        resource = ConfigResource(ConfigResource.Type.TOPIC, name)
        configs = admin.describe_configs([resource])[resource].result(timeout=10)
        for key, value in spec.get("config", {}).items():
            actual = configs[key].value if key in configs else None
            (ok if str(actual) == str(value) else fail)(
                f"KafkaTopic {name}: {key}={value}; the sequencer created it with {actual}"
            )


def stop(w):
    """SIGTERM as the kubelet sends it after preStop; the process must be gone within the grace."""
    if w.process is None or w.process.poll() is not None:
        return
    spec = w.pod["spec"]
    grace = spec.get("terminationGracePeriodSeconds", 30)
    pre_stop = w.container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    start = time.monotonic()
    w.process.send_signal(signal.SIGTERM)
    try:
        w.process.wait(timeout=grace - pre_stop)
        took = time.monotonic() - start
        ok(f"{w.name}: exited {took:.1f} s after SIGTERM (exit {w.process.returncode}), within the "
           f"{grace} s grace less the {pre_stop} s preStop")
    except subprocess.TimeoutExpired:
        fail(f"{w.name}: still running {grace - pre_stop} s after SIGTERM: the kubelet would SIGKILL it")
        w.process.kill()
        w.process.wait()


def check_static(m, workloads):
    for service in m.of("Service"):
        name = service["metadata"]["name"]
        targets = [w for w in workloads if w.selected_by(service["spec"].get("selector"))]
        if not targets:
            fail(f"Service {name}: its selector matches no Deployment's pods")
            continue
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            for w in targets:
                if w.container_port(target) is None:
                    fail(f"Service {name} port {port['port']}: targetPort {target} is not a port of {w.name}")
                else:
                    ok(f"Service {name} port {port['port']}: targetPort {target} is {w.name}'s containerPort {w.container_port(target)}")
    for monitor in m.of("PodMonitor"):
        selector = monitor["spec"]["selector"].get("matchLabels", {})
        for endpoint in monitor["spec"]["podMetricsEndpoints"]:
            targets = [w for w in workloads if w.selected_by(selector)]
            good = targets and all(w.container_port(endpoint["port"]) for w in targets)
            (ok if good else fail)(f"PodMonitor {monitor['metadata']['name']}: port {endpoint['port']} on {[w.name for w in targets]}")


def main(argv):
    if len(argv) != 2 or not BROKERS:
        print(__doc__, file=sys.stderr)
        return 64
    m = Manifests(argv[1])
    workloads = [Workload(d) for d in m.of("Deployment")]
    check_static(m, workloads)
    scratch = tempfile.mkdtemp(prefix="tandem-k8s-contract.")
    database = f"tandem_k8s_contract_{os.getpid()}"
    psql = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", f"{POSTGRES}/postgres"]
    subprocess.run(psql + ["-c", f"CREATE DATABASE {database}"], check=True)
    # CloudNativePG makes Secret <cluster>-app for the application; here it is the fresh database.
    externals = {(f"{c['metadata']['name']}-app", "uri"): f"{POSTGRES}/{database}" for c in m.of("Cluster")}

    def interrupted(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)
    try:
        for w in workloads:
            w.env = resolve_env(m, w, externals, scratch)
        for w in workloads:
            rewrite_addresses(m, w, workloads, w.env)
        # Whatever a workload's environment points at starts first (the sequencers before the
        # gateways): a Deployment's own Services must not wait for it. Among equals, what more
        # others point at first: the sequencer also creates the Kafka topics, which the analytics
        # consumer (pointing at nothing of ours) needs before it is ready.
        def depends(w, other):
            ports = {str(p) for p in other.ports.values()}
            return any(re.search(rf"127\.0\.0\.1:({'|'.join(ports)})\b", v) for v in w.env.values()) if ports else False

        def start_key(w):
            others = [o for o in workloads if o is not w]
            return (sum(depends(w, o) for o in others), -sum(depends(o, w) for o in others))

        order = sorted(workloads, key=start_key)
        for w in order:
            command = w.container.get("command", [])
            if not command:
                fail(f"{w.name}: no command: the image's default would run, not a service")
                continue
            binary = os.path.join(BIN_DIR, os.path.basename(command[0]))
            if not os.access(binary, os.X_OK):
                fail(f"{w.name}: {binary} (from command {command[0]}) is not built")
                continue
            check_variables(w, binary, w.env)
            w.log = os.path.join(scratch, f"{w.name}.log")
            env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": scratch, **w.env}
            with open(w.log, "w") as log:
                w.process = subprocess.Popen(
                    [binary, *command[1:], *w.container.get("args", [])],
                    env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=scratch,
                    start_new_session=True,
                )
            print(f"     {w.name}: started {os.path.basename(binary)} (pid {w.process.pid}, log {w.log})", flush=True)
            started = check_probe(w, "startupProbe")
            check_probe(w, "livenessProbe")
            check_probe(w, "readinessProbe")
            for port, local in w.ports.items():
                if any(
                    w.container_port(p.get("targetPort", p["port"])) == port
                    for s in m.of("Service") if w.selected_by(s["spec"].get("selector"))
                    for p in s["spec"]["ports"]
                ):
                    (ok if listening(local) else fail)(f"{w.name}: Service-targeted containerPort {port} is listened on")
            for monitor in m.of("PodMonitor"):
                if not w.selected_by(monitor["spec"]["selector"].get("matchLabels", {})):
                    continue
                for endpoint in monitor["spec"]["podMetricsEndpoints"]:
                    scrape = {"httpGet": {"path": endpoint.get("path", "/metrics"), "port": endpoint["port"]}}
                    success, _, what = probe_once(w, "scrape", scrape)
                    (ok if success else fail)(f"{w.name}: PodMonitor {monitor['metadata']['name']} scrape {what}")
            if not started and w.process.poll() is not None:
                print(open(w.log).read()[-3000:], file=sys.stderr)
        if any(w.process for w in workloads):
            check_topics(m)
        for w in reversed(order):
            stop(w)
    except KeyboardInterrupt as e:
        fail(f"interrupted ({e})")
    finally:
        for w in workloads:
            if w.process is not None and w.process.poll() is None:
                w.process.kill()
                w.process.wait()
        subprocess.run(psql + ["-c", f"DROP DATABASE IF EXISTS {database} WITH (FORCE)"], check=False)
        if failed:
            print(f"     logs kept in {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    print(f"k8s contract: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
