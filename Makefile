# Parley: the two commands a user needs, and a few for developers.
#   make run    install what is missing, build, start parleyd (embedded, SQLite)
#   make test   install what is missing, build, run unit + integration tests
#               (under AddressSanitizer and UndefinedBehaviorSanitizer), then
#               each fuzz target for FUZZ_TEST_SECONDS
#   make install, make deb   install, or build a Debian package (docs/deploy.md)
#   make fuzz   build the fuzz targets (clang, libFuzzer) and run each one for
#               FUZZ_SECONDS on a copy of its seed corpus (tests/fuzz)
BUILD      ?= build
ASAN_BUILD ?= build-asan
JOBS       ?= $(shell nproc)
ARGS       ?=
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS      ?= 60
FUZZ_TEST_SECONDS ?= 15

.PHONY: all deps build run test fuzz fuzz-build cluster cluster-down format clean bench install deb

all: build

deps:
	@bash scripts/install-deps.sh

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

# make run also serves the web client (built into $(BUILD)/web, parleyd's
# default web root) and its WebSocket: open http://127.0.0.1:$(WS_PORT)/.
WS_PORT  ?= 7080
WEB_ARGS ?= --ws-port $(WS_PORT)
run: build
	@exec $(BUILD)/parleyd $(WEB_ARGS) $(ARGS)

test: build
	@cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DPARLEY_SANITIZE=ON -DPARLEY_WERROR=ON >/dev/null
	@cmake --build $(ASAN_BUILD) -j $(JOBS)
	@cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ctest --output-on-failure --timeout 900 -j $(JOBS)
	@$(MAKE) --no-print-directory fuzz-build
	@bash tests/fuzz/run.sh $(FUZZ_BUILD) $(FUZZ_TEST_SECONDS)

# libFuzzer targets (tests/fuzz), in a tree of their own built with clang.
# A failing target leaves its input in $(FUZZ_BUILD)/fuzz-artifacts/.
fuzz-build: deps
	@CC=clang cmake -S . -B $(FUZZ_BUILD) -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DPARLEY_FUZZ=ON >/dev/null
	@cmake --build $(FUZZ_BUILD) -j $(JOBS)

fuzz: fuzz-build
	@bash tests/fuzz/run.sh $(FUZZ_BUILD) $(FUZZ_SECONDS)

# A whole cluster on this machine (ZooKeeper, Redis, MariaDB, nginx, two
# gateways, two nodes of each service); state in CLUSTER_DIR.
CLUSTER_DIR ?= cluster-data
cluster: build
	@bash scripts/cluster.sh up $(CLUSTER_DIR)

cluster-down:
	@bash scripts/cluster.sh down $(CLUSTER_DIR)

# Throughput, latency and memory of Parley against a minimal relay (the
# floor); BENCH_QUICK=1 for a one-minute smoke run. See docs/performance.md.
bench:
	@bash bench/run.sh

# make install [PREFIX=/usr/local] [DESTDIR=]: parleyd, parley and parleyctl in
# PREFIX/bin, their man pages, the example config in PREFIX/share/doc/parley.
# make deb: dist/parley_VERSION_ARCH.deb with the systemd units, the parley
# user and /var/lib/parley (docs/deploy.md).
PREFIX  ?= /usr/local
DESTDIR ?=
DEB_DIR ?= dist
VERSION ?= 0.1
install: build
	@DESTDIR=$(DESTDIR) cmake --install $(BUILD) --prefix $(PREFIX) --strip

deb: build
	@bash deploy/debian/build-deb.sh $(BUILD) $(DEB_DIR) $(VERSION)

format:
	@clang-format -i $$(git ls-files 'src/*.c' 'src/*.h' 'tests/*.c' 'tests/*.h' 'bench/*.c')

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD) $(DEB_DIR)
