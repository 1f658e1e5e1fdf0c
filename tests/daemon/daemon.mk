# tests/daemon: `ckprep watch` with real files, processes and signals
# (kill -9 and restart, SIGHUP/SIGTERM/SIGUSR1, NOTIFY_SOCKET,
# JOURNAL_STREAM, two daemons on one folder, hostile names and links).
# `make SAN=1 test-daemon` runs it against the sanitized build.

# big_gives_way watches the daemon's syncs with strace
DEB_TEST += strace

CONFINE_SHIM := $(BUILD)/tests/daemon/confine_shim.so

# LD_PRELOAD'ed into the daemon by confined_jobs; no sanitizer of its own
$(CONFINE_SHIM): tests/daemon/confine_shim.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $@")
	$(Q)$(CC) -std=c11 $(WARN) $(CFLAGS) -fPIC -shared -o $@ $<

UNIT_FILTER := $(BUILD)/tests/daemon/unit_filter

# runs the daemon under the unit's system call allow list (under_unit_filter)
$(UNIT_FILTER): tests/daemon/unit_filter.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $@")
	$(Q)$(CC) -std=c11 $(WARN) $(CFLAGS) -o $@ $< \
		$(shell pkg-config --cflags --libs libseccomp)

test-daemon: all $(CONFINE_SHIM) $(UNIT_FILTER)
	$(PYTHON) tests/daemon/test_watch.py --ckprep $(BIN) --shim $(CONFINE_SHIM) \
		--unit-filter $(UNIT_FILTER) --unit systemd/ckprep.service

TEST_EXTRA += test-daemon

.PHONY: test-daemon
