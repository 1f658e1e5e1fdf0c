/*
 * pyre.h -- Python's re.sub(pattern, repl, key), for rename rules people
 * copy from their Python scripts.
 *
 * Patterns are read by PCRE2 (UTF-8, Unicode properties for \d \w \s, as
 * Python's str patterns), which takes Python's syntax: (?P<name>...),
 * (?P=name), non-greedy and possessive repeats, lookarounds; Python's \Z
 * (end of string) is PCRE2's \z and is translated.  What PCRE2 takes and
 * Python refuses or reads otherwise is refused at compile: PCRE2's own
 * extensions ((*VERB), (?U), (?R), (?<name>...) ...), POSIX classes
 * [[:digit:]], lookbehinds of more than one width, references to groups
 * not yet defined, \x without two hex digits, \S inside a set.  \s is
 * Python's set, spelled out (PCRE2's differs on U+001C to U+001F and
 * U+180E).  Under (?i) Python holds a few letters equal that PCRE2 does
 * not (i and U+0131 ...): a pattern naming one is refused, and a key
 * holding one fails with CK_EUNSUPPORTED.  The replacement is
 * Python's template: \1 to \99, \g<N>, \g<name>, \\ and the escapes
 * \a \b \f \n \r \t \v, octal \0 and \NNN; any other backslash before an
 * ASCII letter is an error, as in Python, and so is a reference to a group
 * the pattern does not have.  Every non-overlapping match is replaced, as
 * re.sub does (after an empty match the next one must start later or be
 * non-empty), and a group that did not take part gives "".
 *
 * A compiled rule is read-only: jobs in several threads share one.
 */
#ifndef CK_PYRE_H
#define CK_PYRE_H

#include "ck.h"

typedef struct ck_pyre ck_pyre_t;

/*
 * Compile pattern and repl into *out (free with ck_pyre_free).  Errors:
 * CK_ECONFIG with Python's words in err ("invalid group reference 2",
 * "bad escape \q", "unknown group name 'x'", or PCRE2's message and
 * offset for the pattern); CK_ENOMEM.
 */
int ck_pyre_compile(const char *pattern, const char *repl, ck_pyre_t **out,
                    ck_err_t *err);
void ck_pyre_free(ck_pyre_t *re);

/*
 * Append re.sub(pattern, repl, s[0..n)) to out; *count is the number of
 * replacements (0: out holds s unchanged).  Errors: CK_ELIMIT when a match
 * backtracks past the limit (a pattern that explodes on this key), with
 * the detail in err; CK_ENOMEM.
 */
int ck_pyre_sub(const ck_pyre_t *re, const char *s, size_t n, ck_buf_t *out,
                size_t *count, ck_err_t *err);

/* The number of capturing groups of the pattern. */
unsigned ck_pyre_groups(const ck_pyre_t *re);

#endif
