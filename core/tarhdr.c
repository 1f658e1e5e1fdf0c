/*
 * tarhdr.c -- does a block look like a tar header to Python's tarfile?
 *
 * torch 1.13's legacy loader first hands the file to tarfile.open(mode='r:')
 * and, when that works, unpickles the members 'storages', 'tensors' and
 * 'pickle'.  tarfile takes the first 512 bytes for a header when the
 * checksum field (bytes 148..155, read by tarfile.nti) equals the sum of
 * the block's other bytes plus 256, counted unsigned or signed
 * (tarfile.calc_chksums).  There is no magic to look for: a v7 header has
 * none.  A block of 512 NULs opens as an empty archive and is a tar too.
 * This file decides the same question from the same bytes, leaning to
 * "tar" where Python's int() could read the field more than one way.
 */
#include "ckpt.h"

#include <stdint.h>
#include <string.h>

/* str.strip()'s ASCII whitespace */
static int py_space(uint8_t ch)
{
    return ch == ' ' || (ch >= '\t' && ch <= '\r') ||
           (ch >= 0x1c && ch <= 0x1f);
}

/*
 * tarfile.nti on the 8-byte checksum field: int(s.strip() or "0", 8) after
 * cutting at the first NUL, or base-256 when the first byte is 0x80/0xff.
 * Returns 0 and *v, or -1 where Python raises ValueError.
 */
static int nti8(const uint8_t f[8], int64_t *v)
{
    size_t b = 0, e = 8;
    int64_t n = 0;
    int neg = 0, digits = 0;

    if (f[0] == 0x80 || f[0] == 0xff) {
        for (int i = 1; i < 8; i++)
            n = n << 8 | f[i];
        *v = f[0] == 0xff ? n - ((int64_t)1 << 56) : n;
        return 0;
    }
    for (size_t i = 0; i < 8; i++)
        if (f[i] == 0) {
            e = i;
            break;
        }
    for (size_t i = 0; i < e; i++)
        if (f[i] >= 0x80)
            return -1; /* not ascii */
    while (b < e && py_space(f[b]))
        b++;
    while (e > b && py_space(f[e - 1]))
        e--;
    if (b == e) {
        *v = 0;
        return 0;
    }
    if (f[b] == '+' || f[b] == '-')
        neg = f[b++] == '-';
    if (e - b >= 2 && f[b] == '0' && (f[b + 1] == 'o' || f[b + 1] == 'O')) {
        b += 2;
        if (b < e && f[b] == '_')
            b++; /* int('0o_7', 8) is 7 */
    }
    for (size_t i = b; i < e; i++) {
        if (f[i] == '_' && digits && i + 1 < e && f[i + 1] != '_')
            continue;
        if (f[i] < '0' || f[i] > '7')
            return -1;
        n = n * 8 + (f[i] - '0');
        digits++;
    }
    if (!digits)
        return -1;
    *v = neg ? -n : n;
    return 0;
}

int ck_tar_header(const uint8_t *blk, size_t n)
{
    int64_t u = 256, s = 256, want;
    size_t zeros = 0;

    if (n < 512)
        return 0; /* tarfile: truncated header, not a tar */
    for (size_t i = 0; i < 512; i++) {
        zeros += blk[i] == 0;
        if (i >= 148 && i < 156)
            continue;
        u += blk[i];
        s += (int8_t)blk[i];
    }
    if (zeros == 512)
        return 1;
    if (nti8(blk + 148, &want) < 0)
        return 0;
    return want == u || want == s;
}
