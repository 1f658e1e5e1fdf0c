# tests/daemon: `ckprep watch` with real files, processes and signals
# (kill -9 and restart, SIGHUP/SIGTERM/SIGUSR1, NOTIFY_SOCKET,
# JOURNAL_STREAM, two daemons on one folder, hostile names and links).
# `make SAN=1 test-daemon` runs it against the sanitized build.

test-daemon: all
	$(PYTHON) tests/daemon/test_watch.py --ckprep $(BIN)

TEST_EXTRA += test-daemon

.PHONY: test-daemon
