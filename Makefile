# Sidecast - top-level build. `make` builds every process into build/, `make test` runs the
# unit and integration suites against real nats-server and redis-server, `make asan` runs the
# same under AddressSanitizer + UBSan (into build-asan/).

BUILD    ?= build
CC       ?= cc
SAN      ?= 0
PKGS     := libnats libmicrohttpd libjwt hiredis jansson libcrypto libssl libcurl gnutls libzmq
# pkg-config is asked when make reads this file. That is before any recipe runs, so a target
# that installs packages (up, test, asan, valgrind, bench, fuzz) runs `deps` first and then
# builds in a second make, which reads this file again with the packages present: the flags
# never depend on what happened to be installed when the first make started. A build on a
# machine without the packages stops at `pkgs-present` and says what to run.
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(filter-out libzmq,$(PKGS)) 2>/dev/null)
# ZeroMQ: linked only where it is used, the bridge (services/bridge, the ZeroMQ ingress) and
# bench/zmqhop (the measurement that took it out of the edge's fabric), so that no other
# binary, nor its image, loads libzmq.
ZMQ_LIBS   := $(shell pkg-config --libs libzmq 2>/dev/null)
URING_LIBS := $(shell pkg-config --libs liburing 2>/dev/null)

OPT      ?= -O2 -g
CFLAGS   := $(OPT) $(EXTRA_CFLAGS) -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow -Wformat=2 \
            -Wstrict-prototypes -Wmissing-prototypes -Wno-missing-field-initializers \
            -fno-strict-aliasing -pthread -Icommon $(PKG_CFLAGS) -MMD -MP
LDLIBS   := $(PKG_LIBS) -lcrypt -lz -lpthread -lm
ifeq ($(SAN),fuzz)
CFLAGS   += -fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer
LDFLAGS  := -fsanitize=fuzzer,address,undefined
endif
ifeq ($(SAN),1)
CFLAGS   += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS  := -fsanitize=address,undefined
endif

SERVICES     := $(notdir $(patsubst %/,%,$(dir $(wildcard services/*/main.c))))
# The layers (docs/ARCHITECTURE.md), each its own archive, so that a binary links only what
# it may use and a wrong dependency is an undefined reference: common/ (libcommon.a: config,
# logs, metrics, the bus and Redis clients, tokens), common/ws/ (libws.a: RFC 6455, the
# codec and the server core, over libcommon), common/proto/ (libproto.a: sidecast.v1's
# messages and topics, over libcommon), services/<name>/ (lib<name>.a).
COMMON_SRC   := $(wildcard common/*.c)
COMMON_OBJ   := $(COMMON_SRC:%.c=$(BUILD)/obj/%.o)
WS_OBJ       := $(patsubst %.c,$(BUILD)/obj/%.o,$(wildcard common/ws/*.c))
PROTO_OBJ    := $(patsubst %.c,$(BUILD)/obj/%.o,$(wildcard common/proto/*.c))
LAYER_LIBS   := $(BUILD)/libproto.a $(BUILD)/libws.a $(BUILD)/libcommon.a
# What each service links beside its own archive and libcommon.a.
LIBS_edge     := $(BUILD)/libproto.a $(BUILD)/libws.a
LIBS_producer := $(BUILD)/libproto.a
LIBS_gateway  := $(BUILD)/libproto.a
LIBS_bridge   := $(BUILD)/libproto.a
# Libraries beyond LDLIBS that one service needs.
LDLIBS_bridge := $(ZMQ_LIBS)
UNIT_SRC     := $(wildcard tests/unit/test_*.c)
UNIT_BIN     := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
TOOL_SRC     := $(wildcard tests/tools/*.c)
TOOL_BIN     := $(TOOL_SRC:tests/tools/%.c=$(BUILD)/tests/tools/%)
FUZZ_SRC     := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BIN     := $(FUZZ_SRC:tests/fuzz/%.c=$(BUILD)/fuzz/%)
FUZZ_TIME    ?= 60
BENCH_SRC    := $(wildcard bench/*.c)
BENCH_BIN    := $(BENCH_SRC:bench/%.c=$(BUILD)/bench/%)
# clients/<name>/*.c -> build/<name> (the CLI: clients/sidecast -> build/sidecast)
CLIENTS      := $(notdir $(patsubst %/,%,$(dir $(wildcard clients/*/main.c))))
# The C client library (clients/c, docs/CLIENT-C.md): its own code plus the codec objects it
# stands on (RFC 6455 frames and handshake, sidecast.v1's JSON checks), so that a program
# links one archive and what sidecast.pc names (OpenSSL, jansson).
SCLIB_OBJ    := $(patsubst %.c,$(BUILD)/obj/%.o,$(filter-out clients/c/example.c,$(wildcard clients/c/*.c)))
SCLIB_DEPS   := $(patsubst %,$(BUILD)/obj/common/%.o,ws/ws_frame ws/ws_reader ws/utf8 ws/ws_key ws/ws_url \
                proto/msg proto/topic err)
SCLIB_LIBS   := -lssl -lcrypto -ljansson
PREFIX       ?= /usr/local
DESTDIR      ?=
# The CLI's code but its main.c, for unit tests and fuzz targets (build/libcli.a).
CLI_OBJ      := $(patsubst %.c,$(BUILD)/obj/%.o,$(filter-out clients/sidecast/main.c,$(wildcard clients/sidecast/*.c)))

# Every service's code but its main.c goes into build/lib<svc>.a, so unit tests reach it.
svc_src = $(filter-out services/$(1)/main.c,$(wildcard services/$(1)/*.c))
svc_obj = $(call svc_src,$(1):%.c=$(BUILD)/obj/%.o)
# A service directory with code but no main.c yet still gets its archive (unit tests use it).
SVC_DIRS := $(sort $(notdir $(patsubst %/,%,$(dir $(wildcard services/*/*.c)))))
SVC_LIBS := $(SVC_DIRS:%=$(BUILD)/lib%.a)

# Quiet by default; `make V=1` shows the commands.
ifeq ($(V),1)
Q :=
else
Q := @
endif
.SECONDARY:

.PHONY: all deps deps-run pkgs-present services demo fuzz fuzz-bins fuzz-build test asan valgrind \
        unit integration up clean bench fmt help install ktls-check ktls-bench
all: services $(UNIT_BIN) $(TOOL_BIN) $(BENCH_BIN) $(BUILD)/example-c $(BUILD)/sidecast.pc

# What `make up` runs, and the CLI: nothing that needs the test or bench packages.
services: $(SERVICES:%=$(BUILD)/%) $(CLIENTS:%=$(BUILD)/%)

help:
	@echo "make            build every process into $(BUILD)/"
	@echo "make deps       install every Debian package the project needs (build, run, test, bench)"
	@echo "make deps-run   only those building and running the topology need (what make up installs)"
	@echo "make services   build the processes and the CLI (what make up builds)"
	@echo "make up         run the whole topology locally (NATS, Redis, services)"
	@echo "make up EDGES=3 NATS_CLUSTER=3   three edges on a 3-node NATS cluster"
	@echo "make up TLS=1   also https://localhost:8443 and wss://localhost:8493/ws (a development CA)"
	@echo "make test       unit + integration tests against real NATS and Redis"
	@echo "make asan       the same tests under AddressSanitizer + UBSan"
	@echo "make valgrind   unit + integration tests, every Sidecast process under memcheck (slow)"
	@echo "make demo       a scripted CLI walk-through against the stack make up runs"
	@echo "make bench      benchmarks (results in docs/BENCHMARKS.md)"
	@echo "make ktls-check the edge's kTLS send path in a qemu guest (Debian 6.1 kernel; make ktls-bench: on vs off)"
	@echo "make fmt        format every C file as .clang-format says (make test checks it)"
	@echo "make install    the C client library: header, libsidecast.a, sidecast.pc (PREFIX, DESTDIR)"

deps:
	@bash scripts/deps.sh all

deps-run:
	@bash scripts/deps.sh run

# Every compile waits for this check: without the libraries' .pc files the flags above are
# empty, and the build would end in a page of undefined references instead of this line.
pkgs-present:
	@pkg-config --exists $(PKGS) 2>/dev/null || { \
	  printf 'make: pkg-config does not find:'; \
	  for p in $(PKGS); do pkg-config --exists $$p 2>/dev/null || printf ' %s' $$p; done; \
	  printf '\nmake: run `make deps` (or `make up` / `make test`, which install what they need) first\n'; \
	  exit 1; } >&2

$(BUILD)/obj/%.o: %.c | pkgs-present
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/libcommon.a: $(COMMON_OBJ)
	@rm -f $@
	$(Q)ar rcs $@ $^

$(BUILD)/libws.a: $(WS_OBJ)
	@rm -f $@
	$(Q)ar rcs $@ $^

$(BUILD)/libproto.a: $(PROTO_OBJ)
	@rm -f $@
	$(Q)ar rcs $@ $^

define LIB_RULES
$(BUILD)/lib$(1).a: $(patsubst %.c,$(BUILD)/obj/%.o,$(call svc_src,$(1))) $(BUILD)/obj/empty.o
	@mkdir -p $$(dir $$@)
	@rm -f $$@
	$(Q)ar rcs $$@ $$^
endef
$(foreach s,$(SVC_DIRS),$(eval $(call LIB_RULES,$(s))))

define SVC_RULES
$(BUILD)/$(1): $(BUILD)/obj/services/$(1)/main.o $(BUILD)/lib$(1).a $(LIBS_$(1)) $(BUILD)/libcommon.a
	@$(if $(Q),echo "  LINK    $$@")
	$(Q)$(CC) $(LDFLAGS) -o $$@ $$^ $(LDLIBS) $(LDLIBS_$(1))
endef
$(foreach s,$(SERVICES),$(eval $(call SVC_RULES,$(s))))

# A client links the C client library, the layers under it and no service archive.
define CLIENT_RULES
$(BUILD)/$(1): $(patsubst %.c,$(BUILD)/obj/%.o,$(wildcard clients/$(1)/*.c)) $(BUILD)/libsidecast.a $(LAYER_LIBS)
	@$(if $(Q),echo "  LINK    $$@")
	$(Q)$(CC) $(LDFLAGS) -o $$@ $$^ $(LDLIBS)
endef
$(foreach c,$(CLIENTS),$(eval $(call CLIENT_RULES,$(c))))

$(BUILD)/libsidecast.a: $(SCLIB_OBJ) $(SCLIB_DEPS)
	@rm -f $@
	$(Q)ar rcs $@ $^

$(BUILD)/obj/clients/c/example.o: CFLAGS += -Iclients/c
# the example program of docs/CLIENT-C.md, linked as a user would: one archive + sidecast.pc
$(BUILD)/example-c: $(BUILD)/obj/clients/c/example.o $(BUILD)/libsidecast.a
	@$(if $(Q),echo "  LINK    $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(SCLIB_LIBS)

# pkg-config file for the default PREFIX (install writes one for the PREFIX it is given;
# DESTDIR is never in it)
$(BUILD)/sidecast.pc: clients/c/sidecast.pc.in Makefile
	@mkdir -p $(dir $@)
	$(Q)sed -e 's|@PREFIX@|$(PREFIX)|g' $< >$@

# the header, the archive and the pkg-config file under $(DESTDIR)$(PREFIX)
install: $(BUILD)/libsidecast.a
	install -d $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/lib/pkgconfig
	install -m 0644 clients/c/sidecast.h $(DESTDIR)$(PREFIX)/include/sidecast.h
	install -m 0644 $(BUILD)/libsidecast.a $(DESTDIR)$(PREFIX)/lib/libsidecast.a
	sed -e 's|@PREFIX@|$(PREFIX)|g' clients/c/sidecast.pc.in >$(DESTDIR)$(PREFIX)/lib/pkgconfig/sidecast.pc
	chmod 0644 $(DESTDIR)$(PREFIX)/lib/pkgconfig/sidecast.pc

$(BUILD)/libcli.a: $(CLI_OBJ)
	@rm -f $@
	$(Q)ar rcs $@ $^

$(BUILD)/obj/empty.o:
	@mkdir -p $(dir $@)
	echo 'typedef int sc_empty_unit;' | $(CC) -x c -c -o $@ -

# Unit tests and fuzz targets reach into any archive; tools and benches only the layers.
$(BUILD)/tests/test_%: $(BUILD)/obj/tests/unit/test_%.o $(BUILD)/libcli.a $(BUILD)/libsidecast.a $(SVC_LIBS) $(LAYER_LIBS)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LINK    $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# the C client library's test program (tests/integration/test_client_c.py) links it alone
$(BUILD)/tests/tools/sc_probe: $(BUILD)/obj/tests/tools/sc_probe.o $(BUILD)/libsidecast.a
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LINK    $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(SCLIB_LIBS)

$(BUILD)/tests/tools/%: $(BUILD)/obj/tests/tools/%.o $(LAYER_LIBS)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LINK    $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/bench/%: $(BUILD)/obj/bench/%.o $(LAYER_LIBS)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LINK    $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) $(if $(filter zmqhop,$*),$(ZMQ_LIBS)) $(if $(filter sendpath,$*),$(URING_LIBS))

$(BUILD)/fuzz/fuzz_%: $(BUILD)/obj/tests/fuzz/fuzz_%.o $(BUILD)/libcli.a $(BUILD)/libsidecast.a $(SVC_LIBS) $(LAYER_LIBS)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LINK    $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

fuzz-bins: $(FUZZ_BIN)

# The targets below that install packages do it first, then build in a new make (see PKGS).
SUBMAKE := $(MAKE) --no-print-directory

# libFuzzer targets (clang), each run FUZZ_TIME seconds on its corpus in tests/fuzz/corpus/.
fuzz: deps
	@$(SUBMAKE) fuzz-build
	@FUZZ_TIME=$(FUZZ_TIME) bash tests/fuzz/run.sh

FUZZ_TEST_TIME ?= 5

test: deps
	@$(SUBMAKE) all
	@$(SUBMAKE) fuzz-build
	@BUILD=$(BUILD) FUZZ_TIME=$(FUZZ_TEST_TIME) bash tests/run.sh

# the libFuzzer targets (clang, ASan+UBSan) into build-fuzz/: make test runs each briefly
fuzz-build:
	@$(MAKE) --no-print-directory BUILD=build-fuzz SAN=fuzz CC=clang OPT="-O1 -g" fuzz-bins

unit: all
	@BUILD=$(BUILD) bash tests/run.sh unit

integration: all
	@BUILD=$(BUILD) bash tests/run.sh integration

asan: deps
	@$(SUBMAKE) fuzz-build
	@$(SUBMAKE) BUILD=build-asan SAN=1 OPT="-O1 -g" all
	@BUILD=build-asan SAN=1 FUZZ_TIME=$(FUZZ_TEST_TIME) bash tests/run.sh

# the unit and integration tests with every Sidecast process under valgrind (memcheck): no
# error, no definite leak. Slow (about ten times the plain run); not part of make test.
valgrind: deps
	@$(SUBMAKE) all
	@VALGRIND=1 INTEGRATION_TIMEOUT=7200 bash tests/run.sh

# Only the packages and binaries running needs: no test or bench tool chain (scripts/deps.sh).
up: deps-run
	@$(SUBMAKE) services
	@bash deploy/run-local.sh

demo: services
	@bash scripts/demo.sh

bench: deps
	@$(SUBMAKE) all
	@bash bench/run.sh

# The edge's kTLS send path in a qemu guest booting Debian's 6.1 kernel (tests/vm/ktls.sh; not
# part of `make test`: it fetches a kernel and takes minutes under emulation).
ktls-check: all
	@BUILD=$(BUILD) bash tests/vm/ktls.sh check

ktls-bench: all
	@BUILD=$(BUILD) bash tests/vm/ktls.sh bench

# every C file of the tree, as .clang-format says (clang-format 14); make test checks it
fmt:
	@python3 tests/house/format.py

clean:
	rm -rf build build-asan build-fuzz

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
