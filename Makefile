# Tandem — the two commands a newcomer needs are `make run` and `make test`.

# Builds are cached outside the clone so fresh clones (and CI) reuse them.
CARGO_TARGET_DIR ?= $(HOME)/.cache/tandem/target
export CARGO_TARGET_DIR
CARGO ?= cargo
# Flags for `make run`, e.g. make run ARGS="--listen 127.0.0.1:9000"
ARGS ?=

.PHONY: run run-auth token security-doc fuzz fuzz-smoke test deps infra lint unit-tests js-tests browser-tests bench vectors fmt clean-data k8s-validate k8s-test cluster cluster-down cluster-browser-test chaos chaos-smoke chaos-smoke-test chaos-checker-tests chaos-broken

## Start Tandem in single-process mode on http://127.0.0.1:8080/ (data in ./data), without
## authentication: for a first look on your own machine (it says so loudly at start).
run:
	@deploy/install-deps.sh --build-only
	$(CARGO) run --release -p tandem-standalone -- --insecure-no-auth $(ARGS)

# The development secret of `make run-auth` and `make token`.
DEV_SECRET ?= data/dev-jwt.secret

## The same with authentication: tokens signed with a development secret (made on first use in
## $(DEV_SECRET)); mint them with `make token`. Plain HTTP on loopback, so the cookie is not `Secure`.
run-auth: $(DEV_SECRET)
	@deploy/install-deps.sh --build-only
	$(CARGO) run --release -p tandem-standalone -- --jwt-key-file $(DEV_SECRET) --cookie-secure false $(ARGS)

## Mint a development token, e.g. make token ARGS="--user alice --write 'team-a/*' --read handbook"
token: $(DEV_SECRET)
	@$(CARGO) run -q -p tandem-auth --features cli --bin tandem-token -- mint --secret-file $(DEV_SECRET) $(ARGS)

$(DEV_SECRET):
	@mkdir -p $(dir $(DEV_SECRET))
	@umask 077 && $(CARGO) run -q -p tandem-auth --features cli --bin tandem-token -- new-secret > $(DEV_SECRET).tmp
	@mv $(DEV_SECRET).tmp $(DEV_SECRET)

## Install what the tests need, then run every check and test.
test: deps infra lint unit-tests k8s-test js-tests browser-tests fuzz-smoke chaos-checker-tests chaos-smoke-test

# Chromium and the browser tests' npm packages too: the Rust tests include the cluster browser test
# (integration-tests/tests/browser_cluster.rs), which needs them before `unit-tests` runs.
deps:
	@deploy/install-deps.sh
	@deploy/install-browser-test-deps.sh

# PostgreSQL on 127.0.0.1:5432 (installed and started when none answers), Apache Kafka's jars
# (deploy/kafka.sh, from Maven Central into ~/.cache/tandem) and Jaeger, the OTLP receiver of the
# tracing test (deploy/jaeger.sh, built once from the Go module proxy). The Rust tests share one
# broker, which `unit-tests` starts for their run; tests that kill the broker start their own.
infra:
	@deploy/postgres.sh
	@deploy/kafka.sh install >/dev/null
	@deploy/jaeger.sh install >/dev/null

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --all-features --locked -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --all-features --no-deps --locked

# Rust tests: unit, property, simulation, store contracts (SQLite and Postgres), the Kafka bus on
# Apache Kafka, and integration tests against real server processes (built first: the tests start
# them). One broker for the whole run (its address in TANDEM_TEST_BROKERS), stopped however it ends.
RUST_TEST_RUNNER = $(shell $(CARGO) nextest --version >/dev/null 2>&1 && echo "nextest run" || echo test)
unit-tests:
	$(CARGO) build --locked --workspace --all-features --bins
	deploy/kafka.sh with -- $(CARGO) $(RUST_TEST_RUNNER) --workspace --all-features --locked --no-fail-fast

# Kubernetes manifests (k8s/): every overlay renders, validates strictly against the Kubernetes and the
# operators' CRD schemas and passes checkov; then the manifest-to-binary contract test starts the
# binaries `unit-tests` built as the dev overlay declares them (deploy/k8s.sh; tools cached in
# ~/.cache/tandem/tools).
k8s-validate:
	@deploy/k8s.sh validate

k8s-test: k8s-validate
	@deploy/k8s.sh contract

# JavaScript client: shared OT vectors, state machine, and against the real server.
js-tests:
	$(CARGO) build --locked -p tandem-standalone
	cd libs/client-js && TANDEM_BIN=$(CARGO_TARGET_DIR)/debug/tandem-standalone \
		node --experimental-websocket --test test/*.test.mjs

## Rewrite the hostile-input table of docs/SECURITY.md from what the server does (review the diff).
security-doc:
	$(CARGO) build --locked -p tandem-standalone
	TANDEM_UPDATE_SECURITY=1 $(CARGO) test --locked -p tandem-integration-tests --test security

## Fuzz the message parser, the op parser and apply/transform for FUZZ_SECONDS each (default 60);
## prints executions per second and fails on a crash (cargo-fuzz, nightly or RUSTC_BOOTSTRAP).
FUZZ_SECONDS ?= 60
fuzz:
	@deploy/fuzz.sh run $(FUZZ_SECONDS)

# The short fuzz run of `make test`: each target for a few seconds.
fuzz-smoke:
	@deploy/fuzz.sh smoke

## Benchmarks: criterion (trace replay through libs/ot, the document state machine), then the load
## generator's presets against the single process and a fresh cluster, written into BENCHMARKS.md
## (RUNS=3 DURATION=30 by default; PRESETS=…, MODES=… to narrow).
bench: infra
	$(CARGO) bench -p tandem-ot --bench traces
	$(CARGO) bench -p tandem-sequencer --bench document
	services/loadgen/bench.sh
	services/loadgen/targets.sh

## Regenerate the shared OT test vectors after an intended change of the algebra.
vectors:
	$(CARGO) run -p tandem-ot --example gen-vectors

fmt:
	$(CARGO) fmt --all

clean-data:
	rm -rf data

## End-to-end test of the demo page in headless Chromium (Debian's) on the single process: editing,
## undo, history, presence (carets, who is here) and offline reload; prints where the screenshots are.
## The history test names versions with the `tandem` CLI. The same page across two gateways runs in
## `unit-tests` (integration-tests/tests/browser_cluster.rs, a cluster of its own), so `make test`
## runs every browser test.
browser-tests:
	$(CARGO) build --locked -p tandem-standalone -p tandem-cli
	@deploy/install-browser-test-deps.sh
	cd integration-tests/browser && TANDEM_BIN=$(CARGO_TARGET_DIR)/debug/tandem-standalone \
		TANDEM_CLI=$(CARGO_TARGET_DIR)/debug/tandem node --test --test-concurrency=1 demo.test.mjs history.test.mjs presence.test.mjs

## Distributed mode on loopback: Postgres, Apache Kafka, 2 sequencers, 2 gateways and the analytics
## consumer (pidfiles, logs and the broker's data in .tandem/cluster/); prints the gateways' URLs and
## the analytics consumer's metrics address. Ports: see deploy/cluster.sh.
cluster:
	@deploy/cluster.sh up

## Stops what `make cluster` started (never the system's Postgres).
cluster-down:
	@deploy/cluster.sh down

# The demo page on gateway A and on gateway B edit one document, in headless Chromium, against the
# cluster `make cluster` started (gateways from TANDEM_URL_A / TANDEM_URL_B, else its default ports).
cluster-browser-test:
	@deploy/install-browser-test-deps.sh
	cd integration-tests/browser && \
		TANDEM_URL_A="$${TANDEM_URL_A:-http://127.0.0.1:$${TANDEM_GATEWAY_A_PORT:-8081}}" \
		TANDEM_URL_B="$${TANDEM_URL_B:-http://127.0.0.1:$${TANDEM_GATEWAY_B_PORT:-8082}}" \
		node --test --test-concurrency=1 cluster-demo.test.mjs

## Fault-injection soak: a cluster (own Kafka broker, private Postgres, 3 sequencers, 2 gateways) and a
## typing load with gateway failover; FAULTS faults (default 1000) from a seeded schedule (SEED=n
## replays one; random by default, printed first): kill -9 / SIGSTOP of sequencers, kill -9 of a
## gateway and of the broker, fast and immediate Postgres restarts, a bad network between a sequencer
## and Postgres. Checked by integration-tests/chaos/check.py; rewrites docs/RELIABILITY.md. Run
## folder: .tandem/chaos/seed-SEED/ (observations, manifest, checker result, logs, schedule, report).
FAULTS ?= 1000
SEED ?= random
CHAOS_ARGS ?=
chaos:
	$(CARGO) build --locked --workspace --all-features --bins
	@deploy/kafka.sh install >/dev/null
	$(CARGO_TARGET_DIR)/debug/tandem-chaos --faults $(FAULTS) --seed $(SEED) --write-doc $(CHAOS_ARGS)

## The same with a few dozen faults (a few minutes); does not touch docs/RELIABILITY.md.
chaos-smoke: FAULTS = 30
chaos-smoke:
	$(CARGO) build --locked --workspace --all-features --bins
	@deploy/kafka.sh install >/dev/null
	$(CARGO_TARGET_DIR)/debug/tandem-chaos --faults $(FAULTS) --seed $(SEED) --make-target chaos-smoke $(CHAOS_ARGS)

# What `make test` runs of the soak: the smoke on one fixed seed (a schedule known to pass, so a red
# run means a change broke it; `make chaos-smoke` draws a new seed each time), and the checker's own
# tests: each property it checks, broken on purpose in real Postgres and Kafka, must make it fail.
CHAOS_SMOKE_SEED ?= 20261206
chaos-smoke-test:
	@$(MAKE) --no-print-directory chaos-smoke SEED=$(CHAOS_SMOKE_SEED)

chaos-checker-tests:
	@integration-tests/chaos/test.sh

## Shows the soak catches a real bug: builds Tandem with a deliberate break (a resubmitted op acked at
## the wrong version; integration-tests/chaos/breaks/) in its own target folder, runs the smoke on it,
## and succeeds only when the independent checker fails the run.
chaos-broken:
	@integration-tests/chaos/broken-build.sh reack-current-version $(if $(filter random,$(SEED)),20261206,$(SEED)) $(if $(filter 1000,$(FAULTS)),30,$(FAULTS))
