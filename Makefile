# moegate — one GNU Makefile for everything. `make help` lists the targets.
#
# Layout: every module folder (core/, adapters/, ...) is a static library
# built from all its .c files; cli/ links them into build/moegate. Tests are
# tests/unit/test_<module>.c (cmocka), one binary each. Objects live under
# $(BUILD) (build/ by default, build/asan for the sanitizer build).
#
# SIMD kernels are compiled per file: *_avx2.c with AVX2/FMA/F16C,
# *_avx512.c with AVX-512 (F/BW/VL/DQ/VNNI: exactly what
# the run-time check in core/tensor.c requires). The rest of the code is
# built for baseline x86-64 and picks a kernel table at run time, so one
# binary runs on any x86-64 server.

CC      ?= cc
PYTHON  ?= /usr/bin/python3
BUILD   ?= build
SAN     ?=
WERROR  ?=
MOEGATE_CACHE ?= $(HOME)/.cache/moegate
export MOEGATE_CACHE

# Every library the modules link; README.md says why each is there.
PKGS    := openblas libpcre2-8 yaml-0.1 libpq libcrypto jansson libmicrohttpd gnutls
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

OPT     ?= -O2 -g
CFLAGS  ?=
ALL_CFLAGS = $(OPT) -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wshadow -Wstrict-prototypes \
           -Wno-unused-parameter -fno-strict-aliasing -pthread -I. $(PKG_CFLAGS)
ALL_CFLAGS += $(CFLAGS)
ifneq ($(WERROR),)
ALL_CFLAGS += -Werror
endif
ifneq ($(SAN),)
ALL_CFLAGS += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
endif
ifneq ($(TSAN),)
ALL_CFLAGS += -fsanitize=thread -fno-omit-frame-pointer
LDFLAGS += -fsanitize=thread
endif
LDLIBS  += $(PKG_LIBS) -lm -pthread

AVX2_FLAGS   := -mavx2 -mfma -mf16c
AVX512_FLAGS := $(AVX2_FLAGS) -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vnni

# Link order: a module depends only on those after it.
MODULES := gateway domains policies audit adapters core
define module_objs
$(patsubst %.c,$(BUILD)/obj/%.o,$(wildcard $(1)/*.c))
endef
# Modules that have sources so far, each one static library build/lib/libmg<module>.a.
BUILT_MODULES := $(foreach m,$(MODULES),$(if $(wildcard $(m)/*.c),$(m)))
MODULE_LIBS := $(foreach m,$(BUILT_MODULES),$(BUILD)/lib/libmg$(m).a)
CLI_OBJS  := $(call module_objs,cli)

UNIT_SRCS := $(wildcard tests/unit/test_*.c)
UNIT_BINS := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRCS))
# Programs a module's test suite drives (tests/<module>/tool_*.c) and the
# benchmark programs (bench/bench_*.c): each links every module library.
TOOL_SRCS := $(wildcard tests/*/tool_*.c)
TOOL_BINS := $(patsubst %.c,$(BUILD)/tests/%,$(notdir $(TOOL_SRCS)))
BENCH_SRCS := $(wildcard bench/bench_*.c)
BENCH_BINS := $(patsubst bench/%.c,$(BUILD)/bench/%,$(BENCH_SRCS))

# Module libraries name their objects through $$(call ...).
.SECONDEXPANSION:

.PHONY: all help quickstart quickstart-stop quickstart-clean deps check check-build check-asan check-tsan bench clean fixtures fuzz format

all: $(BUILD)/moegate

help:
	@echo "make            build build/moegate"
	@echo "make quickstart install deps, build, start the whole platform locally (demo model, adapters,"
	@echo "                TLS, PostgreSQL audit) under var/quickstart and send a request per domain;"
	@echo "                MODEL=path.gguf serves your own model"
	@echo "make quickstart-stop   stop the quickstart's gateway and PostgreSQL (data kept)"
	@echo "make quickstart-clean  stop them and remove var/quickstart"
	@echo "make deps       install the Debian packages the build and tests need (apt-get; no-op when present)"
	@echo "make check      install deps, build, generate fixtures, run every test"
	@echo "make check-asan the same tests built with ASan+UBSan (objects under build/asan)"
	@echo "make check-tsan the unit tests and the quick suites built with ThreadSanitizer (build/tsan;"
	@echo "                a data race stops the process that has it, so its suite fails)"
	@echo "make bench      run the benchmarks (prints tables; see bench/README.md)"
	@echo "make fuzz       build the libFuzzer targets with clang (build/fuzz/)"
	@echo "make fixtures   generate the test models under build/fixtures"
	@echo "make format     clang-format every C file"
	@echo "make clean      remove build/"

deps:
	@sh deploy/install-deps.sh

# deps and the build are steps of the script (so it also runs on its own)
quickstart:
	@BUILD=$(BUILD) PYTHON=$(PYTHON) MODEL="$(MODEL)" MAKE="$(MAKE)" sh deploy/quickstart.sh

quickstart-stop:
	@sh deploy/quickstart-stop.sh

quickstart-clean:
	@sh deploy/quickstart-stop.sh --clean

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/obj/%_avx2.o: %_avx2.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(AVX2_FLAGS) -MMD -MP -c $< -o $@

$(BUILD)/obj/%_avx512.o: %_avx512.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(AVX512_FLAGS) -MMD -MP -c $< -o $@

$(BUILD)/lib/libmg%.a: $$(call module_objs,%)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/moegate: $(CLI_OBJS) $(MODULE_LIBS)
	$(CC) $(LDFLAGS) -o $@ $(CLI_OBJS) $(MODULE_LIBS) $(LDLIBS)

# Unit tests: each may #include its module's .c to reach statics, so it links
# against the library but the test's own definitions win.
$(BUILD)/tests/%: tests/unit/%.c $(MODULE_LIBS)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -MMD -MP -o $@ $< $(MODULE_LIBS) $(LDFLAGS) $(LDLIBS) -lcmocka

# A static pattern: a plain tool_% rule would also match the .d files
# next to the binaries and try to link them.
$(TOOL_BINS): $(BUILD)/tests/tool_%: $$(wildcard tests/*/tool_%.c) $(MODULE_LIBS)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -MMD -MP -o $@ $< $(MODULE_LIBS) $(LDFLAGS) $(LDLIBS)

$(BUILD)/bench/bench_%: bench/bench_%.c $(MODULE_LIBS)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -MMD -MP -o $@ $< $(MODULE_LIBS) $(LDFLAGS) $(LDLIBS)

$(BUILD)/tests/gguf_corrupt: tests/corrupt/gguf_corrupt.c $(MODULE_LIBS)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(MODULE_LIBS) $(LDFLAGS) $(LDLIBS)

fixtures:
	@sh tests/fixtures/fetch_tokenizers.sh >/dev/null
	@$(PYTHON) tests/fixtures/gen_models.py --out build/fixtures
	@$(PYTHON) tests/fixtures/gen_adapters.py --out build/fixtures/adapters

check-build: all $(UNIT_BINS) $(TOOL_BINS) $(BENCH_BINS) $(BUILD)/tests/gguf_corrupt

# make check: everything a clean clone on a fresh Debian 12 needs, a second
# build with clang (both compilers stay warning-free), then every
# test (a short libFuzzer run included); then the unit tests, the corruption
# test and a reference subset again built with ASan+UBSan. tests/run.sh ends with "tests: N passed, M failed".
check: deps
	@$(MAKE) --no-print-directory check-build fuzz
	@$(MAKE) --no-print-directory BUILD=build/clang CC=clang all
	@$(MAKE) --no-print-directory fixtures
	@BUILD=$(BUILD) PYTHON=$(PYTHON) sh tests/run.sh
	@$(MAKE) --no-print-directory BUILD=build/asan SAN=1 OPT="-O1 -g" check-build
	@BUILD=build/asan PYTHON=$(PYTHON) sh tests/run.sh --quick

# Every test, built with ASan+UBSan.
check-asan: deps
	@$(MAKE) --no-print-directory BUILD=build/asan SAN=1 OPT="-O1 -g" check-build
	@$(MAKE) --no-print-directory fixtures
	@BUILD=build/asan PYTHON=$(PYTHON) sh tests/run.sh

# The unit tests and the quick suites (the gateway's threads, the serving
# loop, the audit writer under real clients) built with ThreadSanitizer; not
# part of `make check` (16 minutes on 2 cores, build included). halt_on_error: a race
# aborts the server or test that has it, so the suite that drove it fails.
check-tsan: deps
	@$(MAKE) --no-print-directory BUILD=build/tsan TSAN=1 OPT="-O1 -g" check-build
	@$(MAKE) --no-print-directory fixtures
	@TSAN_OPTIONS="halt_on_error=1 $(TSAN_OPTIONS)" BUILD=build/tsan PYTHON=$(PYTHON) sh tests/run.sh --quick

bench: all $(BENCH_BINS)
	@sh bench/run.sh $(BUILD)

# libFuzzer targets (clang): every module's .c is compiled with the sanitizers
# and fuzzer coverage into build/fuzz/obj (SIMD files with their ISA flags, as
# for the library) and archived, so a target links only what it uses.
FUZZ_SRCS := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BINS := $(patsubst tests/fuzz/%.c,build/fuzz/%,$(FUZZ_SRCS))
FUZZ_CFLAGS := -std=c11 -D_GNU_SOURCE -g -O1 -I. $(PKG_CFLAGS) -fno-omit-frame-pointer \
               -fsanitize=address,undefined -fsanitize=fuzzer-no-link
FUZZ_OBJS := $(patsubst %.c,build/fuzz/obj/%.o,$(foreach m,$(BUILT_MODULES),$(wildcard $(m)/*.c)))
FUZZ_HDRS := $(foreach m,$(BUILT_MODULES),$(wildcard $(m)/*.h))
FUZZ_LIB  := build/fuzz/libmgall.a
fuzz: $(FUZZ_BINS)
$(filter-out %_avx2.o %_avx512.o,$(FUZZ_OBJS)): build/fuzz/obj/%.o: %.c $(FUZZ_HDRS)
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) -c $< -o $@
$(filter %_avx2.o,$(FUZZ_OBJS)): build/fuzz/obj/%.o: %.c $(FUZZ_HDRS)
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) $(AVX2_FLAGS) -c $< -o $@
$(filter %_avx512.o,$(FUZZ_OBJS)): build/fuzz/obj/%.o: %.c $(FUZZ_HDRS)
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) $(AVX512_FLAGS) -c $< -o $@
$(FUZZ_LIB): $(FUZZ_OBJS)
	rm -f $@ && ar rcs $@ $^
$(FUZZ_BINS): build/fuzz/%: tests/fuzz/%.c $(FUZZ_LIB) $(wildcard tests/corrupt/*.c)
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $< $(FUZZ_LIB) $(PKG_LIBS) -lm -pthread

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build

-include $(shell find $(BUILD)/obj $(BUILD)/tests $(BUILD)/bench -name '*.d' 2>/dev/null)
