# bench/bench.mk -- the benchmark and the >4 GiB check; neither is part of
# `make test`.
#
#   make bench        bench/run_bench.py: A (Python) B (ckprep) C (cp+sync)
#                     rounds on a ~3 GiB AudioCraft checkpoint, the 10^5-key
#                     case and the daemon; writes bench/RESULTS.md.
#                     BENCH_ROUNDS=3, BENCH_LARGE=1 (adds the >4 GiB case),
#                     BENCH_SCALING_MAX=1000000 (keys of the largest many-N:
#                     4 N storages; its generation needs about 4 GiB),
#                     BENCH_DAEMON=0 (skips the daemon), BENCH_DIR (cache).
#   make test-large   a >4 GiB checkpoint through ckprep: zip64 offsets and
#                     sizes, output loaded with torch.load and compared.
#
# Generated checkpoints are cached in BENCH_DIR, keyed by their parameters.

BENCH_DIR ?= build/bench
# /usr/bin/time -f %M: each run's peak RSS (make bench, make test-large)
DEB_TEST += time
export BENCH_ROUNDS BENCH_LARGE BENCH_DAEMON BENCH_SCALING_MAX

bench: all
	$(Q)$(PYTHON) bench/run_bench.py --ckprep $(BIN) --dir $(BENCH_DIR)

test-large: all
	$(Q)$(PYTHON) bench/run_bench.py --ckprep $(BIN) --dir $(BENCH_DIR) --test-large

.PHONY: bench test-large
