# audience-sync: the commands a user and CI run. `make demo` and `make test` work on a fresh machine:
# they create the Python venv (moto server for AWS tests) themselves.

SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
MOTO := $(VENV)/bin/moto_server
# moto is only ever started through tests/moto/atomic_moto.py (DynamoDB made atomic), by this Python.
MOTO_PY := $(abspath $(PY))
SAMVENV := .venv-sam
CARGO ?= cargo

# Headless Chromium for the console's browser test (tests/tests/console/browser.rs): Debian's chromium and
# chromium-driver. Installed only when missing (apt needs root, or sudo).
browser-deps:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; else \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver; \
	fi

.PHONY: browser-deps test lint fmt-check clippy unit bench demo venv clean-venv template-lint sam-build fuzz bench-e2e deploy-check

$(MOTO):
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check 'moto[server]==5.2.5'

venv: $(MOTO)

# cfn-lint for infra/template.yaml (its own small venv; the SAM CLI is only needed for `make sam-build`).
$(SAMVENV)/bin/cfn-lint:
	python3 -m venv $(SAMVENV)
	$(SAMVENV)/bin/pip install --quiet --disable-pip-version-check 'cfn-lint==1.58.0'

# samtranslator (the SAM transform's library) for the IAM test (tests/tests/template/iam.rs).
$(SAMVENV)/.samtranslator: $(SAMVENV)/bin/cfn-lint
	$(SAMVENV)/bin/pip install --quiet --disable-pip-version-check 'aws-sam-translator==1.115.0'
	touch $@

template-lint: $(SAMVENV)/bin/cfn-lint
	$(SAMVENV)/bin/cfn-lint infra/template.yaml

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

lint: fmt-check clippy

# All tests. AWS tests start their own moto server from the venv (or use AWS_ENDPOINT_URL if set).
unit: venv $(SAMVENV)/.samtranslator browser-deps
	MOTO_PYTHON=$(MOTO_PY) SAM_PYTHON=$(abspath $(SAMVENV))/bin/python $(CARGO) test --workspace

test: lint template-lint unit

ARCH ?= arm64
# Builds the three Lambda bootstraps as SAM does for `sam deploy` (installs the SAM CLI and cargo-lambda into
# .venv-sam; arm64 needs `rustup target add aarch64-unknown-linux-gnu`). Not part of `make test`.
# The architecture is chosen here, at build time: `make sam-build ARCH=x86_64` builds from a copy of the
# template whose one `# ARCH` line says x86_64, and `sam build` writes that literal into
# .aws-sam/build/template.yaml, the template `sam deploy` uploads: deploy cannot disagree with the build.
sam-build: $(SAMVENV)/bin/cfn-lint
	@case "$(ARCH)" in arm64|x86_64) ;; *) echo "ARCH must be arm64 or x86_64" >&2; exit 2;; esac
	$(SAMVENV)/bin/pip install --quiet --disable-pip-version-check 'aws-sam-cli==1.170.0' 'cargo-lambda==1.9.2'
	sed -E 's/- (arm64|x86_64) # ARCH/- $(ARCH) # ARCH/' infra/template.yaml > infra/template.build.yaml
	PATH=$(abspath $(SAMVENV))/bin:$$PATH SAM_CLI_TELEMETRY=0 $(SAMVENV)/bin/sam validate --lint --template infra/template.build.yaml
	PATH=$(abspath $(SAMVENV))/bin:$$PATH SAM_CLI_TELEMETRY=0 $(SAMVENV)/bin/sam build --template infra/template.build.yaml

# The deploy rehearsal (not part of `make test`; ~20 min of release build on 2 cores): builds the three
# bootstraps as `sam build` does (cargo lambda build --release --target ...; x86_64 by default so they run
# here, DEPLOY_CHECK_TARGET=aarch64-unknown-linux-gnu with qemu-user for arm64), runs them under cargo-lambda's
# Lambda Runtime API emulator against moto provisioned from the translated template, sends every event of
# tests/deploy-check/events and checks the answers of tests/deploy-check/cases.json.
DEPLOY_CHECK_TARGET ?= x86_64-unknown-linux-gnu
deploy-check: venv $(SAMVENV)/.samtranslator
	$(SAMVENV)/bin/pip install --quiet --disable-pip-version-check 'cargo-lambda==1.9.2'
	for b in sync-runner oauth-callback save-mapping; do \
		PATH=$(abspath $(SAMVENV))/bin:$$PATH $(SAMVENV)/bin/cargo-lambda lambda build --release \
			--target $(DEPLOY_CHECK_TARGET) --bin $$b || exit 1; \
	done
	$(PY) scripts/deploy_check.py $${CARGO_TARGET_DIR:-target}/lambda $(abspath $(SAMVENV))/bin/cargo-lambda \
		$(MOTO_PY) $(abspath $(SAMVENV))/bin/python

bench:
	$(CARGO) bench -p audience-core --bench pipeline
	$(CARGO) build --release -p audience-sync-cli
	scripts/bench_preview.sh 3000000 9

# The local demo: moto, the local stack (the real handlers) and the TikTok sandbox tell the story of a sync
# from connect to delta; exits 0 only if the TikTok audience ends equal to the cohort.
demo: venv
	$(CARGO) build --quiet -p audience-sync-tests --bin audience-sync-local
	MOTO_PYTHON=$(MOTO_PY) ./scripts/demo.sh target/debug/audience-sync-local

FUZZ_SECONDS ?= 300
# Coverage-guided fuzzing of the cohort reader and the normalizer (nightly toolchain + `cargo install
# cargo-fuzz`); bounded in time, not part of `make test`. See fuzz/README.md.
fuzz:
	cd fuzz && for t in cohort_reader normalizer; do \
		mkdir -p corpus/$$t && \
		cargo +nightly fuzz run -O $$t corpus/$$t seeds/$$t -- -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 || exit 1; \
	done

USERS ?= 1000000
# End-to-end benchmark on moto + the sandbox (USERS=10000000 for 10M); figures in BENCHMARKS.md.
# BENCH_E2E_ARGS: e.g. `--first-only --streaming 0 --memory-mb 512` (the 50M curve in BENCHMARKS.md).
BENCH_E2E_ARGS ?=
bench-e2e: venv
	$(CARGO) build --release -p tiktok-sandbox -p audience-sync-tests --bin tiktok-sandbox --bin bench-e2e
	MOTO_PYTHON=$(MOTO_PY) target/release/bench-e2e $(USERS) $(BENCH_E2E_ARGS) --out target/bench-e2e-$(USERS).json

clean-venv:
	rm -rf $(VENV)

# Deterministic simulation (tests/sim): SEEDS seeded histories; a failing seed prints its replay command.
SEEDS ?= 1000
.PHONY: soak
soak:
	SIM_SEEDS=$(SEEDS) $(CARGO) test -p audience-sim --test sim -- --nocapture
