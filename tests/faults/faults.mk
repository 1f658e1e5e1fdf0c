# tests/faults -- fault injection, included by the top Makefile.
#
#   make test-faults     allocation failure at every N along a whole run,
#                        under ASan+UBSan+LSan (failat.c, run_failat.py);
#                        output write failures (RLIMIT_FSIZE, a full tmpfs)
#                        and the input changing mid-run (test_faults.py);
#                        about 1.5 minutes on 2 cores
#   make check-valgrind  the oracle suite with every ckprep run under
#                        valgrind memcheck (about 4 minutes on 2 cores)

FAILAT_SAN := build-san/tests/faults/failat

# valgrind-ckprep.sh runs memcheck (make check-valgrind, in .ci/run)
DEB_TEST += valgrind

# test_faults.py runs against $(BIN) and, from a plain build, the sanitized
# binary too.
test-faults: all
	$(Q)$(MAKE) --no-print-directory SAN=1 all $(FAILAT_SAN)
	$(PYTHON) tests/faults/run_failat.py --failat $(FAILAT_SAN)
	$(PYTHON) tests/faults/test_faults.py --ckprep $(BIN)
	$(if $(SANFLAGS),,$(PYTHON) tests/faults/test_faults.py --ckprep build-san/ckprep)

# The plain build's failat, run under valgrind with --leak-selftest, proves
# the wrapper's flags turn a definite leak into a failure.  The suite runs a
# copy of the binary, so a rebuild during its minutes cannot disturb it.
VG_DIR := $(BUILD)/tests/faults/vg

check-valgrind: all $(BUILD)/tests/faults/failat $(ZIPCHECK)
	@mkdir -p $(VG_DIR)
	CKPREP_BIN=$(abspath $(BUILD)/tests/faults/failat) \
		tests/faults/valgrind-ckprep.sh --leak-selftest \
		-c conf/examples/audiocraft-finetune.ini -d $(VG_DIR) \
		tests/data/sample.th 2>/dev/null
	cp $(BIN) $(VG_DIR)/ckprep
	CKPREP_BIN=$(abspath $(VG_DIR)/ckprep) $(PYTHON) tests/oracle/test_roundtrip.py \
		--ckprep tests/faults/valgrind-ckprep.sh --zipcheck $(ZIPCHECK) \
		--corpus $(CORPUS)

TEST_EXTRA += test-faults

.PHONY: test-faults check-valgrind
