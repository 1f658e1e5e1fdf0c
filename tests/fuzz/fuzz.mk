# tests/fuzz/fuzz.mk -- libFuzzer targets, included by the top Makefile.
#
#   make fuzz                run every target for FUZZ_S seconds (default 60)
#                            on a copy of its seed corpus in build-fuzz/;
#                            fails on any crash, leak, timeout or OOM
#   make test-fuzz-regress   run each target once over its committed corpus
#                            and tests/fuzz/regress/<target>/ (part of make test)
#
# Everything is built with clang, ASan, UBSan and libFuzzer into build-fuzz/,
# apart from build/ and build-san/.  New corpus entries and crash artifacts
# go to build-fuzz/, never into the tree.  A crash is reproduced with
# build-fuzz/fuzz_TARGET FILE; tests/fuzz/make_corpus.py remakes the seeds.

FUZZ_CC      ?= clang
FUZZ_S       ?= 60
FUZZ_DIR     := build-fuzz
FUZZ_TARGETS := fuzz_pickle fuzz_ckpt fuzz_legacy fuzz_conf fuzz_override \
                fuzz_tar fuzz_zipdiff
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=undefined \
                -fno-omit-frame-pointer
# -Werror stays with the gcc build: a clang-only warning must not stop tests.
FUZZ_CFLAGS  = -std=c11 -D_POSIX_C_SOURCE=200809L $(filter-out -Werror,$(WARN)) \
               -O1 -g $(FUZZ_SAN) $(FUZZ_INC) \
               $(shell pkg-config --cflags $(PKGS) $(ZIPCHECK_PKGS)) \
               -MMD -MP
FUZZ_INC     := -Icore
FUZZ_OBJ     := $(patsubst %.c,$(FUZZ_DIR)/%.o,$(CORE_SRC) $(PLUGIN_SRC))
FUZZ_LIB     := $(FUZZ_DIR)/libckprep.a
FUZZ_BIN     := $(addprefix $(FUZZ_DIR)/,$(FUZZ_TARGETS))
FUZZ_OPTS    := -timeout=10 -rss_limit_mb=2048
FUZZ_ENV     := UBSAN_OPTIONS=print_stacktrace=1

# clang and its libFuzzer runtime (clang only recommends it); the
# unversioned libclang-rt-dev follows the default clang's version
DEB_TEST     += clang libclang-rt-dev

$(FUZZ_DIR)/%.o: %.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  FUZZCC  $@")
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c -o $@ $<

$(FUZZ_LIB): $(FUZZ_OBJ)
	@$(if $(Q),echo "  AR      $@")
	$(Q)rm -f $@ && ar rcs $@ $^

# fuzz_legacy.c and fuzz_tar.c include fuzz_ckpt.c; the others link the
# library only; fuzz_zipdiff also links libzip (the independent reader),
# whose <zip.h> core/zip.h would hide under -Icore.
$(FUZZ_DIR)/fuzz_zipdiff: FUZZ_INC := -iquote core
$(FUZZ_DIR)/fuzz_%: tests/fuzz/fuzz_%.c $(FUZZ_LIB)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  FUZZLD  $@")
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -MF $@.d -o $@ $< \
		$(FUZZ_LIB) $(LIBS) $(shell pkg-config --libs $(ZIPCHECK_PKGS))

# Each target runs in a scratch folder of its own (on tmpfs when there is
# one: the write path fsyncs), removed afterwards whatever happened.
fuzz: $(FUZZ_BIN)
	$(Q)fail=0; \
	base=/dev/shm; [ -d $$base ] && [ -w $$base ] || base=$${TMPDIR:-/tmp}; \
	for t in $(FUZZ_TARGETS); do \
		work=$(FUZZ_DIR)/corpus/$$t; art=$(FUZZ_DIR)/artifacts/$$t; \
		mkdir -p $$work $$art || exit 1; \
		for f in tests/fuzz/corpus/$$t/* tests/fuzz/regress/$$t/*; do \
			[ -f "$$f" ] && cp "$$f" $$work/; \
		done; \
		case $$t in fuzz_conf|fuzz_override) dict=ini;; *) dict=pickle;; esac; \
		tmp=$$(mktemp -d $$base/ckprep-fuzz-run.XXXXXX) || exit 1; \
		echo "  FUZZ    $$t for $(FUZZ_S) s"; \
		TMPDIR=$$tmp $(FUZZ_ENV) ./$(FUZZ_DIR)/$$t $(FUZZ_OPTS) \
			-max_total_time=$(FUZZ_S) -print_final_stats=1 \
			-dict=tests/fuzz/$$dict.dict -artifact_prefix=$$art/ \
			$$work >$(FUZZ_DIR)/$$t.log 2>&1; \
		rc=$$?; rm -rf $$tmp; \
		grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|Done)' \
			$(FUZZ_DIR)/$$t.log | sed 's/^/          /'; \
		if [ $$rc -ne 0 ]; then \
			echo "  FAIL    $$t (exit $$rc): see $(FUZZ_DIR)/$$t.log and $$art/"; \
			grep -E 'ERROR|SUMMARY|^fuzz_' $(FUZZ_DIR)/$$t.log | head -5; \
			fail=1; \
		fi; \
	done; \
	exit $$fail

# Every committed input once, no fuzzing: libFuzzer runs file arguments once.
test-fuzz-regress: $(FUZZ_BIN)
	$(Q)fail=0; \
	base=/dev/shm; [ -d $$base ] && [ -w $$base ] || base=$${TMPDIR:-/tmp}; \
	for t in $(FUZZ_TARGETS); do \
		files=$$(find tests/fuzz/corpus/$$t tests/fuzz/regress/$$t -type f \
			2>/dev/null | sort); \
		[ -n "$$files" ] || continue; \
		tmp=$$(mktemp -d $$base/ckprep-fuzz-run.XXXXXX) || exit 1; \
		echo "  REGRESS $$t ($$(echo "$$files" | wc -l) inputs)"; \
		TMPDIR=$$tmp $(FUZZ_ENV) ./$(FUZZ_DIR)/$$t $(FUZZ_OPTS) \
			-artifact_prefix=$$tmp/ $$files \
			>$(FUZZ_DIR)/$$t.regress.log 2>&1; \
		rc=$$?; rm -rf $$tmp; \
		if [ $$rc -ne 0 ]; then \
			echo "  FAIL    $$t: see $(FUZZ_DIR)/$$t.regress.log"; \
			grep -E 'ERROR|SUMMARY|^fuzz_|Running: ' \
				$(FUZZ_DIR)/$$t.regress.log | tail -5; \
			fail=1; \
		fi; \
	done; \
	exit $$fail

clean-fuzz:
	rm -rf $(FUZZ_DIR)

clean: clean-fuzz

TEST_EXTRA += test-fuzz-regress

.PHONY: fuzz test-fuzz-regress clean-fuzz

-include $(FUZZ_OBJ:.o=.d) $(addsuffix .d,$(FUZZ_BIN))
