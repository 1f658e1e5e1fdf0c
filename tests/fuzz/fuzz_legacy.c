/*
 * fuzz_legacy.c -- libFuzzer target for the legacy (torch < 1.6, not zip)
 * checkpoint reader: the chain of pickles, the storage key list and the
 * storages that follow.  The same checks as fuzz_ckpt.c, on inputs that do
 * not start with a zip signature.
 */
#define FUZZ_LEGACY 1
#include "fuzz_ckpt.c"
