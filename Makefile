# tokenwatch build. `make` builds build/tokenwatch; `make test` installs what
# is missing, then runs the unit and integration tests; `make asan` runs the
# same suite on an AddressSanitizer + UndefinedBehaviorSanitizer build.
# WERROR=1 turns warnings into errors (CI sets it). `make fuzz` builds the
# libFuzzer targets (tests/fuzz/fuzz_*.c) with clang and runs each for
# FUZZ_SECONDS, failing on any crash, leak or undefined behaviour.

CC ?= gcc
PKGS := libmongoc-1.0 hiredis libcurl libcrypto libmicrohttpd
TEST_PKGS := criterion

ifeq ($(SANITIZE),1)
BUILD ?= build-asan
SAN_FLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
OPT := -O1
else
BUILD ?= build
SAN_FLAGS :=
OPT := -O2
endif

WARN := -Wall -Wextra -Wstrict-prototypes -Wwrite-strings -Wshadow
ifeq ($(WERROR),1)
WARN += -Werror
endif

PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS))
PKG_LIBS = $(shell pkg-config --libs $(PKGS)) -lpthread -lm
TEST_CFLAGS = $(shell pkg-config --cflags $(TEST_PKGS))
TEST_LIBS = $(shell pkg-config --libs $(TEST_PKGS))

CFLAGS := -std=c11 -D_GNU_SOURCE $(OPT) -g $(WARN) $(SAN_FLAGS) -Iinclude -MMD -MP
LDFLAGS := $(SAN_FLAGS)

SRC := $(wildcard src/*.c)
LIB_SRC := $(filter-out src/main.c,$(SRC))
LIB_OBJ := $(LIB_SRC:src/%.c=$(BUILD)/obj/%.o)
MAIN_OBJ := $(BUILD)/obj/main.o
UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_OBJ := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/obj/tests/unit/%.o)
INTEG_SRC := $(wildcard tests/integration/*.c) $(wildcard tests/support/*.c)
INTEG_OBJ := $(INTEG_SRC:tests/%.c=$(BUILD)/obj/tests/%.o)
FAULT_SRC := $(wildcard tests/faults/*.c) tests/integration/fixture.c \
	tests/support/harness.c
FAULT_OBJ := $(FAULT_SRC:tests/%.c=$(BUILD)/obj/tests/%.o)

BINARY := $(BUILD)/tokenwatch
UNIT_BIN := $(BUILD)/tests/unit
INTEG_BIN := $(BUILD)/tests/integration
FAULT_BIN := $(BUILD)/tests/faults

# Criterion: one worker per core; integration tests each own their servers.
CRITERION_ARGS ?= --jobs 2
# Leaks and undefined behaviour are failures (see scripts/run-tests.sh).
TEST_ENV := LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp \
	UBSAN_OPTIONS=print_stacktrace=1 ASAN_OPTIONS=fast_unwind_on_malloc=0

# libFuzzer: the pure modules built again with clang and the sanitizers.
FUZZ_CC ?= clang
FUZZ_SECONDS ?= 20
FUZZ_BUILD := build-fuzz
FUZZ_SAN := -fsanitize=address,undefined -fno-sanitize-recover=undefined \
	-fno-omit-frame-pointer
FUZZ_CFLAGS := -std=c11 -D_GNU_SOURCE -O1 -g $(WARN) $(FUZZ_SAN) \
	-fsanitize=fuzzer-no-link -Iinclude -MMD -MP
FUZZ_SRC := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BIN := $(FUZZ_SRC:tests/fuzz/%.c=$(FUZZ_BUILD)/%)
FUZZ_LIB_OBJ := $(LIB_SRC:src/%.c=$(FUZZ_BUILD)/obj/%.o)

.PHONY: all deps test unit integration sim-selftest demo demo-check deploy-check image-test test-faults asan fuzz fuzz-build bench bench-json clean

all: $(BINARY)

deps:
	@sh scripts/deps.sh

$(BUILD)/obj/%.o: src/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(PKG_CFLAGS) -c $< -o $@

$(BUILD)/obj/tests/%.o: tests/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(PKG_CFLAGS) $(TEST_CFLAGS) -Itests/support -Itests/integration \
	    -DTW_SOURCE_DIR='"$(CURDIR)"' -DTW_BINARY='"$(CURDIR)/$(BINARY)"' -c $< -o $@

$(BINARY): $(LIB_OBJ) $(MAIN_OBJ)
	$(CC) $(LDFLAGS) $^ $(PKG_LIBS) -o $@

# tests/unit/test_settings.c sees every secret tokenwatch wipes: the unit
# binary's calls to tw_secret_free go through its __wrap_tw_secret_free.
$(UNIT_BIN): $(UNIT_OBJ) $(LIB_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -Wl,--wrap=tw_secret_free $^ $(PKG_LIBS) $(TEST_LIBS) -o $@

$(INTEG_BIN): $(INTEG_OBJ) $(LIB_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(PKG_LIBS) $(shell pkg-config --libs libbson-1.0) $(TEST_LIBS) -o $@

$(FAULT_BIN): $(FAULT_OBJ) $(LIB_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(PKG_LIBS) $(shell pkg-config --libs libbson-1.0) $(TEST_LIBS) -o $@

test: deps
	$(MAKE) unit integration sim-selftest demo-check deploy-check

unit: $(UNIT_BIN)
	$(TEST_ENV) sh scripts/run-tests.sh $(BUILD)/unit.log $(UNIT_BIN) $(CRITERION_ARGS)

integration: $(BINARY) $(INTEG_BIN)
	$(TEST_ENV) TW_BINARY=$(CURDIR)/$(BINARY) sh scripts/run-tests.sh \
	    $(BUILD)/integration.log $(INTEG_BIN) $(CRITERION_ARGS)

# The scripted replica set checks itself through pymongo.
sim-selftest:
	/usr/bin/python3 tests/sim/selftest.py

# A quiet weekend in under a minute: no MongoDB, no Docker (scripts/demo.sh).
demo: deps $(BINARY)
	@bash scripts/demo.sh

# The demo, with its output checked for the alerts, the replay and the gap.
demo-check: $(BINARY)
	sh tests/demo_check.sh $(BUILD)/demo.log

# The image and the manifests, checked without Docker (tests/deploy/README.md):
# the runtime stage provides every library the binary links, the manifests
# parse and name only real settings, Compose itself accepts the compose file,
# the alert rules load and pass their tests, the shell scripts pass shellcheck.
deploy-check: $(BINARY)
	sh tests/deploy/check_libs.sh $(BINARY) docker/Dockerfile
	/usr/bin/python3 tests/deploy/check_manifests.py $(CURDIR)/$(BINARY)
	docker-compose -f docker/compose.yaml config --quiet
	promtool check rules config/prometheus-rules.yml
	promtool test rules config/prometheus-rules.test.yml
	shellcheck scripts/*.sh docker/*.sh tests/deploy/*.sh tests/*.sh .ci/run

# docker/Dockerfile built and run for real, with a Docker daemon it starts
# when none answers (tests/deploy/image_test.sh: installs docker.io and
# debootstrap as root, makes debian:12 and debian:12-slim when missing).
image-test:
	bash tests/deploy/image_test.sh

# The standing evidence of tests/faults/README.md: kill -9 at random points,
# Redis, MongoDB and the webhook broken in every way listed there, and a stop
# request during each outage. Its figures are printed as "faults: ..." lines.
test-faults: $(BINARY) $(FAULT_BIN)
	$(TEST_ENV) TW_BINARY=$(CURDIR)/$(BINARY) sh scripts/run-tests.sh \
	    $(BUILD)/faults.log $(FAULT_BIN) $(CRITERION_ARGS)

asan:
	$(MAKE) SANITIZE=1 unit integration

$(FUZZ_BUILD)/obj/%.o: src/%.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(PKG_CFLAGS) -c $< -o $@

$(FUZZ_BUILD)/%: tests/fuzz/%.c tests/fuzz/fuzz.h $(FUZZ_LIB_OBJ)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer $(PKG_CFLAGS) $< \
	    $(FUZZ_LIB_OBJ) $(PKG_LIBS) -o $@

.PRECIOUS: $(FUZZ_BUILD)/obj/%.o

fuzz-build: $(FUZZ_BIN)

# Each target from its seeds (tests/fuzz/corpus/<target>/) for FUZZ_SECONDS.
fuzz: $(FUZZ_BIN)
	sh scripts/fuzz.sh $(FUZZ_BUILD) $(FUZZ_SECONDS) $(FUZZ_BIN)

# CPU time of libbson's relaxed JSON against tw_json_relaxed (bench/json_bench.c).
BENCH_JSON := $(BUILD)/bench/json_bench

$(BENCH_JSON): bench/json_bench.c $(BUILD)/obj/json.o $(BUILD)/obj/utf8.o
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(PKG_CFLAGS) $^ $(PKG_LIBS) -o $@

bench-json: $(BENCH_JSON)
	$(BENCH_JSON)

# The change-stream source and the bare libmongoc reader make bench runs
# tokenwatch against (bench/README.md).
BENCH_TOOLS := $(BUILD)/bench/bench_source $(BUILD)/bench/bench_bare

# Linked with libmongoc alone: the bare loop loads nothing tokenwatch's
# other libraries would add to its RSS.
$(BUILD)/bench/bench_%: bench/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(shell pkg-config --cflags libmongoc-1.0) $< \
	    $(shell pkg-config --libs libmongoc-1.0) -lpthread -o $@

bench: $(BINARY) $(BENCH_TOOLS) $(BENCH_JSON)
	/usr/bin/python3 bench/bench.py --build $(BUILD) $(BENCH_ARGS)

clean:
	rm -rf build build-asan build-fuzz

-include $(wildcard $(BUILD)/obj/*.d $(BUILD)/obj/tests/*/*.d $(FUZZ_BUILD)/obj/*.d \
	$(FUZZ_BUILD)/*.d)
