# Quick start: `make demo` and `make test`. Both set everything up themselves.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LINT_PATHS := src tests setup.py $(wildcard benchmarks scripts)

.PHONY: install system-deps demo test lint twins typecheck unit integration bench clean sanitize

$(STAMP): pyproject.toml setup.py src/osbox/_speedups.c
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	OSBOX_REQUIRE_SPEEDUPS=1 $(PY) -m pip install -q -e '.[dev]'
	# The credential proxy's mitmdump, in a virtualenv of its own: mitmproxy pins other versions of
	# libraries osbox uses (cryptography, h11); 11.0 is its last release for Python 3.11.
	$(PYTHON) -m venv $(VENV)/mitmproxy
	$(VENV)/mitmproxy/bin/pip install -q 'mitmproxy==11.0.2'
	touch $(STAMP)

install: $(STAMP) system-deps

DEBIAN_PACKAGES := bubblewrap nftables iproute2 python3-ipykernel curl passt \
	skopeo zstd docker-registry busybox-static apache2-utils mmdebstrap

# Debian packages the local runtime uses: isolation (bubblewrap, nftables, iproute2), passt (pasta:
# sandbox networks of a server that is not root), skopeo + zstd
# for the image store; mmdebstrap builds the Debian image (python3, ipykernel) that the demo and the
# tests run (cached outside the clone); docker-registry serves it, and busybox-static and
# apache2-utils (htpasswd) build the image tests' images; curl is the egress tests' client inside
# their network namespaces; python3-ipykernel serves image-less sandboxes' code contexts.
# Installed only when root and one is missing (waiting for another package manager's lock); tests
# that need them skip with a message otherwise.
system-deps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	   [ "$$(dpkg-query -W -f='$${db:Status-Status}\n' $(DEBIAN_PACKAGES) 2>/dev/null | grep -c '^installed$$')" \
	     != "$(words $(DEBIAN_PACKAGES))" ]; then \
		scripts/apt-install $(DEBIAN_PACKAGES); \
	fi

demo: install
	$(PY) -m osbox.demo

lint: $(STAMP)
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)
	$(PY) scripts/unasync.py --check

# The SDK's sync modules (src/osbox/_sync/) are generated from the async ones (src/osbox/_async/).
twins: $(STAMP)
	$(PY) scripts/unasync.py

typecheck: $(STAMP)
	$(VENV)/bin/mypy  # src, tests, benchmarks and scripts (pyproject.toml)

test: install lint typecheck
	$(VENV)/bin/pytest -q

bench: install
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

# The C output cutter under AddressSanitizer/UBSan, held to the pure-Python cutter (not part of `test`).
sanitize: install
	LD_PRELOAD=$$(gcc -print-file-name=libasan.so) ASAN_OPTIONS=detect_leaks=0 $(PY) scripts/sanitize_speedups.py
