# ckprep -- prepare PyTorch checkpoints for fine-tuning.
#
#   make deps    install the Debian packages the build and the tests need
#   make         build build/ckprep
#   make run     build, then run ckprep on the bundled sample checkpoint
#   make test    build, then every test: unit (plain and sanitized), oracle
#                (real torch), streaming, hostile inputs, peak memory
#   make install install the binary, the systemd unit and an example config
#
# V=1 shows full commands.  SAN=1 builds with ASan+UBSan into build-san/.

CC       ?= cc
PREFIX   ?= /usr/local
DESTDIR  ?=
PYTHON   := /usr/bin/python3
SHARED   ?= $(abspath ../shared)
CORPUS   ?= $(SHARED)/corpus/third-party
PKGS     := inih zlib yaml-0.1 libcrypto libuv jansson libpcre2-8 libseccomp \
            libxxhash
UNIT_PKGS := cmocka
ZIPCHECK_PKGS := libzip
TEST_PKGS := $(UNIT_PKGS) $(ZIPCHECK_PKGS)

# The Debian packages `make deps` installs, each for what uses it:
#   build-essential    cc, make, ar; gcc's ASan/UBSan/LSan runtimes (SAN=1)
#   pkg-config         every library's flags (PKGS, TEST_PKGS)
#   libuv1-dev         the daemon's loop (core/watch.c)
#   libyaml-dev        config_override's YAML (plugins/config_override.c)
#   libinih-dev        the INI reader (core/conf.c)
#   zlib1g-dev         CRC-32 and raw inflate (core/zip.c)
#   libssl-dev         libcrypto's SHA-256 (core/ckpt.c, core/watch.c)
#   libxxhash-dev      XXH3, a safetensors file's per-tensor sums (its
#                      fingerprint: core/safetensors.c)
#   libjansson-dev     reading audit records back (core/audit.c)
#   libpcre2-dev       Python-compatible rename regexes (core/pyre.c)
#   libseccomp-dev     the parser's syscall filter (core/sandbox.c)
#   libcmocka-dev      the unit tests (tests/core, tests/plugins)
#   libzip-dev         tests/tools/zipcheck, the second zip reader
#   python3-torch      the oracle: torch.save/torch.load in every Python suite
#   python3-omegaconf  configs in checkpoints (oracle, plugin suites)
#   python3-numpy      the plugin suite's reference generator
#   python3-yaml       the plugin suite's YAML configs
#   systemd            systemd-analyze verify (make test-systemd)
# Fragments add their own: clang and libclang-rt-dev (tests/fuzz/fuzz.mk),
# valgrind (tests/faults/faults.mk), time (bench/bench.mk).
DEB_BUILD := build-essential pkg-config libuv1-dev libyaml-dev libinih-dev \
             zlib1g-dev libssl-dev libjansson-dev libpcre2-dev libseccomp-dev \
             libxxhash-dev
DEB_TEST  := libcmocka-dev libzip-dev python3-torch python3-omegaconf \
             python3-numpy python3-yaml systemd

ifeq ($(SAN),1)
BUILD    := build-san
SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer \
            -fno-sanitize-recover=undefined
else
BUILD    := build
SANFLAGS :=
endif

CFLAGS   ?= -O2 -g
WARN     := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes \
            -Wmissing-prototypes -Wno-unused-parameter \
            -Wno-missing-field-initializers
ALL_CFLAGS  = -std=c11 -D_POSIX_C_SOURCE=200809L $(WARN) $(CFLAGS) \
              $(SANFLAGS) -Icore $(shell pkg-config --cflags $(PKGS)) -MMD -MP
ALL_LDFLAGS = $(SANFLAGS) $(LDFLAGS)
LIBS        = $(shell pkg-config --libs $(PKGS)) -lm

ifeq ($(V),1)
Q :=
else
Q := @
endif

CORE_SRC := \
	core/allow.c \
	core/audit.c \
	core/ck.c \
	core/ckpt.c \
	core/ckpt_cast.c \
	core/ckpt_edit.c \
	core/ckpt_refuse.c \
	core/ckpt_stream.c \
	core/ckpt_write.c \
	core/conf.c \
	core/diff.c \
	core/dtype.c \
	core/fsutil.c \
	core/inspect.c \
	core/job.c \
	core/json.c \
	core/listing.c \
	core/log.c \
	core/manifest.c \
	core/numpy.c \
	core/omegaconf.c \
	core/ostream.c \
	core/pickle.c \
	core/pickle_graph.c \
	core/pickle_scan.c \
	core/pickle_text.c \
	core/pickle_window.c \
	core/pickle_write.c \
	core/plugins.c \
	core/pyre.c \
	core/pyval.c \
	core/record.c \
	core/safetensors.c \
	core/safetensors_write.c \
	core/sandbox.c \
	core/tarhdr.c \
	core/watch.c \
	core/watch_claim.c \
	core/watch_job.c \
	core/watch_metrics.c \
	core/watch_scan.c \
	core/watch_status.c \
	core/watch_table.c \
	core/watchconf.c \
	core/yamlval.c \
	core/zip.c \
	core/zip_stream.c \
	core/zip_write.c

PLUGIN_SRC := $(patsubst %,plugins/%.c,$(shell sed -n 's/^PLUGIN(\(.*\))$$/\1/p' plugins/plugins.def))

UNIT_TESTS := $(basename $(sort $(wildcard tests/core/test_*.c tests/plugins/test_*.c)))

LIB_OBJ  := $(patsubst %.c,$(BUILD)/%.o,$(CORE_SRC) $(PLUGIN_SRC))
MAIN_OBJ := $(BUILD)/core/main.o
LIB      := $(BUILD)/libckprep.a
BIN      := $(BUILD)/ckprep
UNIT_BIN := $(addprefix $(BUILD)/,$(UNIT_TESTS))
ZIPCHECK := $(BUILD)/tests/tools/zipcheck

all: $(BIN)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $@")
	$(Q)$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(LIB): $(LIB_OBJ)
	@$(if $(Q),echo "  AR      $@")
	$(Q)rm -f $@ && ar rcs $@ $^

$(BIN): $(MAIN_OBJ) $(LIB)
	@$(if $(Q),echo "  LINK    $@")
	$(Q)$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LIBS)

$(BUILD)/tests/%: tests/%.c $(LIB)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  TEST    $@")
	$(Q)$(CC) $(ALL_CFLAGS) $(shell pkg-config --cflags $(UNIT_PKGS)) \
		-o $@ $< $(LIB) $(ALL_LDFLAGS) $(LIBS) $(shell pkg-config --libs $(UNIT_PKGS))

# libzip as a second reader of ckprep's output (the oracle and plugin suites
# pass it --zipcheck).  Built without -Icore: core/zip.h would shadow
# libzip's <zip.h>, and the point is a reader sharing no code with ckprep.
$(ZIPCHECK): tests/tools/zipcheck.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $@")
	$(Q)$(CC) -std=c11 -D_POSIX_C_SOURCE=200809L $(WARN) $(CFLAGS) $(SANFLAGS) \
		$(shell pkg-config --cflags $(ZIPCHECK_PKGS)) -o $@ $< \
		$(ALL_LDFLAGS) $(shell pkg-config --libs $(ZIPCHECK_PKGS))

units: $(UNIT_BIN)

# Installs only what is missing, so it is quick and quiet on a ready machine.
deps:
	@missing=$$(for p in $(DEB_BUILD) $(DEB_TEST); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; \
	done); \
	if [ -n "$$missing" ]; then \
		echo "  DEPS    installing:" $$missing; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends $$missing >/dev/null || exit 1; \
	fi

# The one-shot run, then the daemon on ./demo: the sample is written beside
# incoming/ and renamed in, as a training job would; once its record is in
# the audit log the daemon is stopped with SIGTERM.
run: deps all
	$(BIN) inspect tests/data/sample.th
	$(BIN) run -c conf/ckprep.ini -o $(BUILD)/sample.prep.th tests/data/sample.th
	@rm -rf demo && mkdir -p demo/incoming
	@echo "  DEMO    ckprep watch -c conf/ckprep.ini in ./demo"
	@(cd demo && exec ../$(BIN) watch -c ../conf/ckprep.ini) & pid=$$!; \
	cp tests/data/sample.th demo/incoming/.sample.th.part && \
	mv demo/incoming/.sample.th.part demo/incoming/sample.th; \
	for i in $$(seq 300); do [ -s demo/audit.jsonl ] && break; sleep 0.1; done; \
	kill -TERM $$pid; wait $$pid; rc=$$?; \
	echo "  DEMO    demo/output:"; ls -l demo/output; \
	echo "  DEMO    demo/audit.jsonl:"; cat demo/audit.jsonl; \
	[ $$rc -eq 0 ] && [ -s demo/output/sample.th ]
	$(BIN) inspect demo/output/sample.th

# Unit tests run under a timeout; the sanitized build runs them again.
test-units: units
	@set -e; for t in $(UNIT_BIN); do timeout 120 $$t; done

test-oracle: all $(ZIPCHECK)
	$(PYTHON) tests/oracle/test_roundtrip.py --ckprep $(BIN) --zipcheck $(ZIPCHECK) \
		--corpus $(CORPUS)

# The streaming suite: stdin and stdout against file mode; in the plain
# build also a 1 GiB checkpoint through a pipe in bounded memory.
test-stream: all $(ZIPCHECK)
	$(PYTHON) tests/oracle/test_stream.py --ckprep $(BIN) --zipcheck $(ZIPCHECK) \
		--corpus $(CORPUS) $(if $(filter 1,$(SAN)),,--big)

test-hostile: all
	$(PYTHON) tests/hostile/test_hostile.py --ckprep $(BIN)

# tests/plugins/test_*.py, one file per plugin, run in one process by
# run_all.py: a line per file, then the one total.
test-plugins: all $(ZIPCHECK)
	$(PYTHON) tests/plugins/run_all.py --ckprep $(BIN) --zipcheck $(ZIPCHECK)

test-rss: all
	$(PYTHON) tests/oracle/test_bigrss.py --ckprep $(BIN)

test: deps
	$(Q)$(MAKE) --no-print-directory all units
	$(Q)$(MAKE) --no-print-directory SAN=1 all units
	$(Q)$(MAKE) --no-print-directory test-units
	$(Q)$(MAKE) --no-print-directory SAN=1 test-units
	$(Q)$(MAKE) --no-print-directory test-oracle
	$(Q)$(MAKE) --no-print-directory SAN=1 test-hostile
	$(Q)$(MAKE) --no-print-directory SAN=1 test-oracle
	$(Q)$(MAKE) --no-print-directory test-stream
	$(Q)$(MAKE) --no-print-directory SAN=1 test-stream
	$(Q)$(MAKE) --no-print-directory test-plugins
	$(Q)$(MAKE) --no-print-directory test-rss
	$(Q)$(MAKE) --no-print-directory test-systemd
	$(Q)$(if $(TEST_EXTRA),$(MAKE) --no-print-directory $(TEST_EXTRA))

# The unit, checked the way systemd will read it (with this build's binary).
test-systemd: all
	@mkdir -p $(BUILD)/systemd
	@sed 's|/usr/local/bin/ckprep|$(abspath $(BIN))|g' systemd/ckprep.service \
		> $(BUILD)/systemd/ckprep.service
	@out=$$(systemd-analyze verify $(BUILD)/systemd/ckprep.service 2>&1); rc=$$?; \
	if [ $$rc -ne 0 ] || [ -n "$$out" ]; then \
		echo "$$out"; echo "systemd-analyze verify systemd/ckprep.service: failed"; exit 1; \
	fi; echo "systemd-analyze verify systemd/ckprep.service: ok"
	@x=$$(systemd-analyze security --offline=true $(BUILD)/systemd/ckprep.service \
		2>&1 | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p'); \
	echo "systemd-analyze security systemd/ckprep.service: exposure $$x (at most 1.0)"; \
	[ -n "$$x" ] && awk "BEGIN { exit !($$x <= 1.0) }"
	@# the sandbox's calls: Landlock per job thread, prctl (no_new_privs,
	@# and libseccomp's way in when seccomp(2) itself is filtered)
	@$(PYTHON) tests/tools/unit_syscalls.py systemd/ckprep.service \
		landlock_create_ruleset landlock_add_rule landlock_restrict_self prctl
	@rm -rf $(BUILD)/stage && $(MAKE) --no-print-directory -s install \
		DESTDIR=$(abspath $(BUILD)/stage) >/dev/null
	@for f in usr/local/bin/ckprep etc/systemd/system/ckprep.service \
		etc/ckprep/ckprep.ini etc/ckprep/ckprep.ini.example; do \
		[ -e $(BUILD)/stage/$$f ] || { echo "make install: no $$f"; exit 1; }; \
	done; $(BUILD)/stage/usr/local/bin/ckprep check \
		-c $(BUILD)/stage/etc/ckprep/ckprep.ini >/dev/null 2>&1 || \
		{ echo "make install: the installed configuration does not check"; exit 1; }; \
	echo "make install DESTDIR=$(BUILD)/stage: ok"

# The binary, the unit, the example configuration (also as the live one
# when there is none yet) and the service's user.
install: all
	install -D -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/ckprep
	sed 's|/usr/local|$(PREFIX)|g' systemd/ckprep.service > $(BUILD)/ckprep.service
	install -D -m 0644 $(BUILD)/ckprep.service $(DESTDIR)/etc/systemd/system/ckprep.service
	install -D -m 0640 conf/ckprep.ini $(DESTDIR)/etc/ckprep/ckprep.ini.example
	[ -e $(DESTDIR)/etc/ckprep/ckprep.ini ] || \
		install -m 0640 conf/ckprep.ini $(DESTDIR)/etc/ckprep/ckprep.ini
	install -D -m 0644 README.md $(DESTDIR)$(PREFIX)/share/doc/ckprep/README.md
	if [ -z "$(DESTDIR)" ] && ! getent passwd ckprep >/dev/null; then \
		useradd --system --home-dir /var/lib/ckprep --no-create-home \
			--shell /usr/sbin/nologin ckprep; \
	fi
	[ -n "$(DESTDIR)" ] || ! command -v systemctl >/dev/null || \
		systemctl daemon-reload 2>/dev/null || true

clean:
	rm -rf build build-san demo

.PHONY: all deps run test test-units test-oracle test-hostile test-plugins test-rss \
        test-systemd units install clean

# Fragments own their folders' targets; each may add to TEST_EXTRA, the
# targets `make test` runs after the ones above.
-include tests/fuzz/fuzz.mk tests/faults/faults.mk bench/bench.mk tests/daemon/daemon.mk \
         tests/sight/sight.mk tests/hostile/hostile.mk

-include $(LIB_OBJ:.o=.d) $(MAIN_OBJ:.o=.d) $(UNIT_BIN:=.d)
