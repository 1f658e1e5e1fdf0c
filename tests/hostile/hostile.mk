# tests/hostile/hostile.mk -- the parser-differential suite, included by the
# top Makefile: files that torch 1.13 reads otherwise than ckprep once did
# (tar polyglot, FRAME crossing, case-twin names), each proven with a
# marker-only payload in a throwaway torch.load, plus the published attack
# files of ../shared/corpus/hostile-third-party (never unpickled here).

HOSTILE_3P ?= ../shared/corpus/hostile-third-party

test-differential: all
	$(PYTHON) tests/hostile/test_differential.py --ckprep $(BIN) \
		--third-party $(HOSTILE_3P)

TEST_EXTRA += test-differential

.PHONY: test-differential
