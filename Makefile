# Trine build.
#
#   make            build bin/ and lib/            make test     install deps, build, run every test
#   make run        local 3-node cluster           make lint     clang-tidy + cppcheck
#   make SAN=1 ...  ASan+UBSan build (build/san)   make fuzz     libFuzzer targets, FUZZ_SECONDS each
#   make sim        Raft simulation, SEEDS=N SEED=S              make proto    regenerate from proto/
#   make format     clang-format the tree          make install  PREFIX=/usr/local
#
# Layout: internal/<module>/*.c -> build/<flavour>/lib/lib<module>.a; a module
# links only the modules listed in LINK_<module> (DESIGN.md section 4: lower
# modules never depend on higher ones). tests/unit/test_<module>.c is one
# cmocka binary per module. cmd/<name>/*.c -> bin/<name>.

SAN ?= 0
FUZZ ?= 0
PREFIX ?= /usr/local
FUZZ_SECONDS ?= 60
SEEDS ?= 2000
SEED ?=

ifeq ($(SAN),1)
  FLAVOUR := san
  SANFLAGS := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
else ifeq ($(FUZZ),1)
  FLAVOUR := fuzz
  CC := clang
  SANFLAGS := -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all \
              -fno-omit-frame-pointer -DTRINE_FUZZING=1
else
  FLAVOUR := rel
  SANFLAGS :=
endif

BUILD := build/$(FLAVOUR)

# V=1 shows full command lines.
ifeq ($(V),1)
  Q :=
  say = @true
else
  Q := @
  say = @printf '  %-5s %s\n' $(1) $(2)
endif
# The default build puts user-facing binaries in bin/ and lib/; other flavours keep theirs apart.
ifeq ($(FLAVOUR),rel)
  BINDIR := bin
  LIBDIR := lib
else
  BINDIR := $(BUILD)/bin
  LIBDIR := $(BUILD)/pub
endif

PKGS := libevent libevent_openssl libevent_pthreads msgpack openssl libxxhash libisal
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS = $(shell pkg-config --libs $(PKGS) 2>/dev/null)
CMOCKA_LIBS = $(shell pkg-config --libs cmocka 2>/dev/null)

OPT ?= -O2
CPPFLAGS += -Iinternal -D_GNU_SOURCE
CFLAGS += -std=c11 $(OPT) -g -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes \
          -Wmissing-prototypes -Wno-missing-field-initializers -fPIC $(SANFLAGS) $(PKG_CFLAGS)
LDFLAGS += $(SANFLAGS)
EXT_LIBS = $(PKG_LIBS) -lleveldb -lpthread -lm

# Module dependencies, in link order (a module before what it uses).
LINK_base      := base
LINK_codec     := codec base
LINK_ring      := ring base
LINK_raft      := raft base
LINK_wal       := wal base
LINK_store     := store base
LINK_metrics   := metrics base
LINK_transport := transport codec base
LINK_replica   := replica raft wal store codec metrics base
LINK_server    := server replica transport ring raft wal store codec metrics base
LINK_client    := client ring codec base
LINK_bench     := bench client ring store wal codec base

# Binaries under cmd/ and what they link.
LINK_cmd_trine-bench := bench client ring store wal codec base
LINK_cmd_trined      := server replica transport ring raft wal store codec metrics base
LINK_cmd_trine       := client ring codec base

MODULES := $(notdir $(wildcard internal/*))
CMDS := $(notdir $(wildcard cmd/*))
UNIT_TESTS := $(patsubst tests/unit/test_%.c,%,$(wildcard tests/unit/test_*.c))

modlibs = $(foreach m,$(filter $(MODULES),$(1)),$(BUILD)/lib/lib$(m).a)
objs_of = $(patsubst %.c,$(BUILD)/obj/%.o,$(wildcard $(1)/*.c))

TESTLIB_OBJS := $(call objs_of,tests/lib)
TESTLIB := $(BUILD)/lib/libtestlib.a

.PHONY: all deps test test-all run lint format proto proto-check fuzz fuzz-short sim \
        install clean bench-storage bench-compare unit

all: $(foreach c,$(CMDS),$(BINDIR)/$(c)) $(foreach m,$(MODULES),$(BUILD)/lib/lib$(m).a)

# --- objects and archives ------------------------------------------------------

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(@D)
	$(call say,CC,$<)
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/obj/tests/%.o: CPPFLAGS += -Itests/lib

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)

define module_rule
$(BUILD)/lib/lib$(1).a: $(call objs_of,internal/$(1))
	@mkdir -p $$(@D)
	$$(call say,AR,$$@)
	$$(Q)rm -f $$@ && ar rcs $$@ $$^
endef
$(foreach m,$(MODULES),$(eval $(call module_rule,$(m))))

$(TESTLIB): $(TESTLIB_OBJS)
	@mkdir -p $(@D)
	$(call say,AR,$@)
	$(Q)rm -f $@ && ar rcs $@ $^

# --- binaries -----------------------------------------------------------------

define cmd_rule
$(BINDIR)/$(1): $(call objs_of,cmd/$(1)) $(call modlibs,$(LINK_cmd_$(1)))
	@mkdir -p $$(@D)
	$$(call say,LD,$$@)
	$$(Q)$$(CC) $$(LDFLAGS) -o $$@ $$^ $$(EXT_LIBS)
endef
$(foreach c,$(CMDS),$(eval $(call cmd_rule,$(c))))

# --- the public client library: lib/libtrine.{a,so}, trine.h, trine.pc ---------
# Only trine_* symbols are exported: the static archive is one relocatable
# object with every other global made local, the shared one uses a version script.

LIBTRINE_MODS := client ring codec base
LIBTRINE_OBJS = $(foreach m,$(LIBTRINE_MODS),$(call objs_of,internal/$(m)))
LIBTRINE_VERSION := 0.1.0

ifneq ($(wildcard internal/client/trine.h),)
all: $(LIBDIR)/libtrine.a $(LIBDIR)/libtrine.so
endif

$(LIBDIR)/libtrine.a: $(LIBTRINE_OBJS)
	@mkdir -p $(@D) $(BUILD)/pub
	$(call say,AR,$@)
	$(Q)ld -r -o $(BUILD)/pub/libtrine.o $^
	$(Q)objcopy --wildcard --keep-global-symbol='trine_*' $(BUILD)/pub/libtrine.o
	$(Q)rm -f $@ && ar rcs $@ $(BUILD)/pub/libtrine.o

$(LIBDIR)/libtrine.so: $(LIBTRINE_OBJS)
	@mkdir -p $(@D)
	@printf '{ global: trine_*; local: *; };\n' >$(BUILD)/libtrine.map
	$(call say,LD,$@)
	$(Q)$(CC) $(LDFLAGS) -shared -Wl,-soname,libtrine.so.0 -Wl,--version-script=$(BUILD)/libtrine.map \
	  -o $@ $^ $(PKG_LIBS)

# --- tests --------------------------------------------------------------------

define unit_rule
$(BUILD)/tests/test_$(1): $(BUILD)/obj/tests/unit/test_$(1).o $(TESTLIB) $(call modlibs,$(LINK_$(1)))
	@mkdir -p $$(@D)
	$$(call say,LD,$$@)
	$$(Q)$$(CC) $$(LDFLAGS) -o $$@ $$^ $$(EXT_LIBS) $$(CMOCKA_LIBS)
endef
$(foreach t,$(UNIT_TESTS),$(eval $(call unit_rule,$(t))))

# tests/raft: main_<x>.c gives binary raft_<x>; the other files are shared by all of them.
RAFT_MAINS := $(patsubst tests/raft/main_%.c,%,$(wildcard tests/raft/main_*.c))
RAFT_COMMON := $(patsubst %.c,$(BUILD)/obj/%.o,$(filter-out tests/raft/main_%.c,$(wildcard tests/raft/*.c)))
define raft_rule
$(BUILD)/tests/raft_$(1): $(BUILD)/obj/tests/raft/main_$(1).o $(RAFT_COMMON) $(TESTLIB) $(call modlibs,$(LINK_raft))
	@mkdir -p $$(@D)
	$$(call say,LD,$$@)
	$$(Q)$$(CC) $$(LDFLAGS) -o $$@ $$^ $$(EXT_LIBS) $$(CMOCKA_LIBS)
endef
$(foreach t,$(RAFT_MAINS),$(eval $(call raft_rule,$(t))))

TEST_BINS := $(foreach t,$(UNIT_TESTS),$(BUILD)/tests/test_$(t)) \
             $(foreach t,$(RAFT_MAINS),$(BUILD)/tests/raft_$(t))

unit: $(TEST_BINS)

# tests/fuzz/fuzz_<x>.c links the modules in LINK_fuzz_<x>.
FUZZERS := $(patsubst tests/fuzz/fuzz_%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
LINK_fuzz_codec := codec base
LINK_fuzz_wal   := wal base
LINK_fuzz_route := server replica transport ring raft wal store codec metrics base
define fuzz_rule
$(BUILD)/fuzz/fuzz_$(1): $(BUILD)/obj/tests/fuzz/fuzz_$(1).o $(TESTLIB) $(call modlibs,$(LINK_fuzz_$(1)))
	@mkdir -p $$(@D)
	$$(call say,LD,$$@)
	$$(Q)$$(CC) $$(LDFLAGS) -fsanitize=fuzzer -o $$@ $$^ $$(EXT_LIBS)
endef
ifeq ($(FUZZ),1)
$(foreach f,$(FUZZERS),$(eval $(call fuzz_rule,$(f))))
fuzzers: $(foreach f,$(FUZZERS),$(BUILD)/fuzz/fuzz_$(f))
endif

# --- the two commands ---------------------------------------------------------

deps:
	@scripts/install-deps.sh

# `make test`: install what is missing, build everything (normal or SAN=1), run every suite.
test: deps
	@$(MAKE) --no-print-directory test-all

test-all: proto-check all unit
	@$(MAKE) --no-print-directory FUZZ=1 SAN=0 fuzzers
	@BUILD=$(BUILD) BINDIR=$(BINDIR) FUZZ_BUILD=build/fuzz tests/run.sh

run: deps
	@$(MAKE) --no-print-directory all
	@scripts/run.sh

# --- other targets ------------------------------------------------------------

proto:
	@scripts/gen-proto.py

proto-check:
	@scripts/gen-proto.py --check

fuzz: deps
	@$(MAKE) --no-print-directory FUZZ=1 fuzzers
	@FUZZ_BUILD=build/fuzz FUZZ_SECONDS=$(FUZZ_SECONDS) tests/fuzz/run.sh

sim: deps
	@$(MAKE) --no-print-directory $(BUILD)/tests/raft_sim
	$(BUILD)/tests/raft_sim $(if $(SEED),--seed $(SEED) --trace,--seeds $(SEEDS))

bench-storage: all
	$(BINDIR)/trine-bench storage --workload fsync --seconds 3
	$(BINDIR)/trine-bench storage --workload wal --seconds 3

# Trine, a 3-member etcd and Redis (appendfsync always) side by side; writes the
# table into docs/benchmarks.md. BENCH_SECONDS per run (default 10).
bench-compare: # the script installs what it needs (deps + etcd, Redis)
	scripts/bench-compare.sh --seconds $(or $(BENCH_SECONDS),10)

# Sources we format and lint: everything but generated files (they say so on line 1).
SRC_C = $(shell find internal cmd tests -name '*.c' | xargs grep -L -m1 'generated by' 2>/dev/null)
SRC_H = $(shell find internal cmd tests -name '*.h' | xargs grep -L -m1 'generated by' 2>/dev/null)

lint: deps
	cppcheck --quiet --error-exitcode=1 --enable=warning,portability,performance \
	  --std=c11 --inline-suppr -Iinternal --suppress=missingIncludeSystem \
	  --suppress=unknownMacro internal cmd
	clang-tidy --quiet $(filter internal/% cmd/%,$(SRC_C)) -- $(CPPFLAGS) -std=c11 $(PKG_CFLAGS)
	clang-format --dry-run --Werror $(SRC_C) $(SRC_H)

format:
	clang-format -i $(SRC_C) $(SRC_H)

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/lib/pkgconfig
	install -m 755 $(foreach c,$(CMDS),$(BINDIR)/$(c)) $(DESTDIR)$(PREFIX)/bin/
	install -m 644 internal/client/trine.h $(DESTDIR)$(PREFIX)/include/trine.h
	install -m 644 $(LIBDIR)/libtrine.a $(DESTDIR)$(PREFIX)/lib/
	install -m 755 $(LIBDIR)/libtrine.so $(DESTDIR)$(PREFIX)/lib/libtrine.so.$(LIBTRINE_VERSION)
	ln -sf libtrine.so.$(LIBTRINE_VERSION) $(DESTDIR)$(PREFIX)/lib/libtrine.so.0
	ln -sf libtrine.so.0 $(DESTDIR)$(PREFIX)/lib/libtrine.so
	printf '%s\n' 'prefix=$(PREFIX)' 'libdir=$${prefix}/lib' 'includedir=$${prefix}/include' '' \
	  'Name: trine' 'Description: C client for the Trine key-value store' \
	  'Version: $(LIBTRINE_VERSION)' 'Requires.private: openssl msgpack libxxhash libisal' \
	  'Libs: -L$${libdir} -ltrine' 'Libs.private: -lpthread' 'Cflags: -I$${includedir}' \
	  >$(DESTDIR)$(PREFIX)/lib/pkgconfig/trine.pc

clean:
	rm -rf build bin lib

# --- fault harness (tests/fault, docs/testing.md) -------------------------------
# make test-fault [DURATION=SECONDS] [SEED=N] [NODES=3|5] [FAULTS=kill,pause,...] [MODE=mixed|alone]
# Real trined nodes in network namespaces under seeded faults, Porcupine-checked.
# fault-tools builds the client workload driver (C, against libtrine) and the checker (Go).
GO ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
DURATION ?= 600
NODES ?= 3
FAULTS ?= kill,pause,partition,loss,clock,fsync
MODE ?= mixed
FAULT_BUILD := $(BUILD)/fault

.PHONY: test-fault fault-tools

fault-tools: $(FAULT_BUILD)/worker $(FAULT_BUILD)/checker

$(FAULT_BUILD)/worker: tests/fault/worker.c $(LIBDIR)/libtrine.a internal/client/trine.h
	@mkdir -p $(@D)
	$(call say,CC,$@)
	$(Q)$(CC) $(CFLAGS) -D_GNU_SOURCE -Iinternal/client $(LDFLAGS) -o $@ $< $(LIBDIR)/libtrine.a \
	  $(PKG_LIBS) -lpthread -lm

$(FAULT_BUILD)/checker: $(wildcard tests/fault/checker/*.go) tests/fault/checker/go.mod tests/fault/checker/go.sum
	@mkdir -p $(@D)
	$(call say,GO,$@)
	$(Q)cd tests/fault/checker && GOTOOLCHAIN=local $(GO) build -o $(abspath $@) .

test-fault: deps
	@$(MAKE) --no-print-directory all fault-tools
	@BUILD=$(BUILD) BINDIR=$(BINDIR) tests/fault/harness.py --nodes $(NODES) \
	  --seconds $(DURATION) --faults $(FAULTS) --mode $(MODE) $(if $(SEED),--seed $(SEED))

# The fault-point flavour: trined with TRINE_FAULT_POINTS (internal/wal/faultpoint.h) in
# build/fp/bin, for the WAL crash matrix (tests/fault/crash_matrix.py). Never installed.
.PHONY: fault-points test-crash
fault-points:
	@CPPFLAGS=-DTRINE_FAULT_POINTS $(MAKE) --no-print-directory SAN=0 FUZZ=0 BUILD=build/fp \
	  BINDIR=build/fp/bin LIBDIR=build/fp/pub build/fp/bin/trined

test-crash: deps
	@$(MAKE) --no-print-directory all fault-tools fault-points
	@BUILD=$(BUILD) BINDIR=$(BINDIR) tests/fault/crash_matrix.py $(if $(SEED),--seed $(SEED))

# Regression tests for anomalies the fault harness found (docs/testing.md): a cmocka
# binary among the unit tests, so tests/run.sh runs it with them.
$(BUILD)/tests/test_fault_apply: $(BUILD)/obj/tests/fault/test_fault_apply.o $(TESTLIB) \
  $(call modlibs,$(LINK_replica))
	@mkdir -p $(@D)
	$(call say,LD,$@)
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(EXT_LIBS) $(CMOCKA_LIBS)
unit: $(BUILD)/tests/test_fault_apply

# --- docker compose demo (deploy/, scripts/demo.sh, docs/operations.md) ---------
# make demo         base image (scripts/docker-base.sh), images, 5 nodes + Prometheus,
#                   the tour; leaves the cluster running (compose project trine-demo)
# make demo-down    removes the demo's containers, network and volumes (images stay)
# make test-docker  the same on its own compose project with every step checked and a
#                   node killed; torn down at exit; ends "docker: N passed, N failed"
.PHONY: demo demo-down test-docker
demo:
	@scripts/demo.sh up

demo-down:
	@scripts/demo.sh down

test-docker:
	@scripts/demo.sh test
