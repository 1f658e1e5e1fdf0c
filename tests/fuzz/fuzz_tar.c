/*
 * fuzz_tar.c -- libFuzzer target for the legacy path's tar question:
 * torch 1.13 opens a non-zip file with Python's tarfile first and, when
 * the first 512 bytes pass tarfile's checksum, unpickles its members
 * instead of the stream.  The same checks as fuzz_legacy.c, and one more:
 * no input that ck_tar_header calls a tar may open.  Seeds are legacy
 * checkpoints whose first block is also a valid v7 or ustar header.
 */
#define FUZZ_TAR 1
#include "fuzz_ckpt.c"
