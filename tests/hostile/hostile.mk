# tests/hostile/hostile.mk -- the parser-differential suite, included by the
# top Makefile: files that torch 1.13 reads otherwise than ckprep once did
# (tar polyglot, FRAME crossing, case-twin names), each proven with a
# marker-only payload in a throwaway torch.load, plus the published attack
# files of ../shared/corpus/hostile-third-party (never unpickled here);
# and the seeded differential harness (diff_harness.py).

HOSTILE_3P ?= ../shared/corpus/hostile-third-party

test-differential: all
	$(PYTHON) tests/hostile/test_differential.py --ckprep $(BIN) \
		--third-party $(HOSTILE_3P)

# The differential harness: seeded mutants of small torch.save files, each
# one ckprep accepts read by torch's own zip reader and torch.load (marker
# payloads, one throwaway child).  DIFF_N mutants per seed.
DIFF_N     ?= 300
DIFF_SEEDS ?= 12 1

test-diff-harness: all
	$(Q)for s in $(DIFF_SEEDS); do \
		$(PYTHON) tests/hostile/diff_harness.py --ckprep $(BIN) \
			--count $(DIFF_N) --seed $$s || exit 1; \
	done

TEST_EXTRA += test-differential test-diff-harness

.PHONY: test-differential test-diff-harness
