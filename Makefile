# Tandem — the two commands a newcomer needs are `make run` and `make test`.

# Builds are cached outside the clone so fresh clones (and CI) reuse them.
CARGO_TARGET_DIR ?= $(HOME)/.cache/tandem/target
export CARGO_TARGET_DIR
CARGO ?= cargo
# Flags for `make run`, e.g. make run ARGS="--listen 127.0.0.1:9000"
ARGS ?=

.PHONY: run test deps lint unit-tests js-tests browser-tests bench vectors fmt clean-data

## Start Tandem in single-process mode on http://127.0.0.1:8080/ (data in ./data).
run:
	@deploy/install-deps.sh --build-only
	$(CARGO) run --release -p tandem-standalone -- $(ARGS)

## Install what the tests need, then run every check and test.
test: deps lint unit-tests js-tests browser-tests

deps:
	@deploy/install-deps.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

# Rust tests: unit, property, simulation, store contract, and integration tests against the real
# server process (built first, as the integration tests start it).
unit-tests:
	$(CARGO) build --locked -p tandem-standalone
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		$(CARGO) nextest run --workspace --locked --no-fail-fast; \
	else \
		$(CARGO) test --workspace --locked --no-fail-fast; \
	fi

# JavaScript client: shared OT vectors, state machine, and against the real server.
js-tests:
	$(CARGO) build --locked -p tandem-standalone
	cd libs/client-js && TANDEM_BIN=$(CARGO_TARGET_DIR)/debug/tandem-standalone \
		node --experimental-websocket --test test/*.test.mjs

## Criterion benchmarks (trace replay through libs/ot).
bench:
	$(CARGO) bench -p tandem-ot --bench traces

## Regenerate the shared OT test vectors after an intended change of the algebra.
vectors:
	$(CARGO) run -p tandem-ot --example gen-vectors

fmt:
	$(CARGO) fmt --all

clean-data:
	rm -rf data

## End-to-end test of the demo page in headless Chromium (Debian's); prints where the screenshots are.
browser-tests:
	$(CARGO) build --locked -p tandem-standalone
	@deploy/install-browser-test-deps.sh
	cd integration-tests/browser && TANDEM_BIN=$(CARGO_TARGET_DIR)/debug/tandem-standalone node --test demo.test.mjs
