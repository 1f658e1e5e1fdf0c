# tests/sight: inspect --tensors/--config/--manifest and ckprep diff against
# torch.load and OmegaConf.to_yaml, over the oracle cases and the
# third-party corpus; the expect plugin against load_state_dict(strict=True)
# on a few hundred generated surgeries.

test-sight: all $(CONFINE_SHIM)
	$(PYTHON) tests/sight/test_sight.py --ckprep $(BIN) --corpus $(CORPUS) \
		--shim $(CONFINE_SHIM)
	$(PYTHON) tests/sight/test_expect_oracle.py --ckprep $(BIN)

TEST_EXTRA += test-sight

.PHONY: test-sight
