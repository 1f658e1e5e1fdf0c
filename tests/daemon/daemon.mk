# tests/daemon: `ckprep watch` with real files, processes and signals
# (kill -9 and restart, SIGHUP/SIGTERM/SIGUSR1, NOTIFY_SOCKET,
# JOURNAL_STREAM, two daemons on one folder, hostile names and links).
# `make SAN=1 test-daemon` runs it against the sanitized build.

CONFINE_SHIM := $(BUILD)/tests/daemon/confine_shim.so

# LD_PRELOAD'ed into the daemon by confined_jobs; no sanitizer of its own
$(CONFINE_SHIM): tests/daemon/confine_shim.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $@")
	$(Q)$(CC) -std=c11 $(WARN) $(CFLAGS) -fPIC -shared -o $@ $<

test-daemon: all $(CONFINE_SHIM)
	$(PYTHON) tests/daemon/test_watch.py --ckprep $(BIN) --shim $(CONFINE_SHIM)

TEST_EXTRA += test-daemon

.PHONY: test-daemon
