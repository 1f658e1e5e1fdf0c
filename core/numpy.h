/*
 * numpy.h -- numpy arrays, scalars and dtypes in a checkpoint's pickle, as
 * data: ckprep calls nothing, it checks that each numpy name sits in the
 * exact shape numpy's own __reduce__ gives and that no item is a Python
 * object, so a later torch.load only ever copies bytes.
 *
 * [security] allow_numpy = yes admits the names of ck_np_global; then
 * ck_ckpt_validate runs ck_np_check over the graph.  With the default (no)
 * the names are refused as any global off the allowlist.
 */
#ifndef CK_NUMPY_H
#define CK_NUMPY_H

#include "ckpt.h"

/*
 * 1 when module.name is one of the numpy names allow_numpy admits:
 * _reconstruct and scalar of numpy.core.multiarray (numpy 1) and
 * numpy._core.multiarray (numpy 2), _frombuffer of numpy.core.numeric and
 * numpy._core.numeric (protocol 5), numpy.ndarray and numpy.dtype.
 */
int ck_np_global(const char *module, const char *name);

/*
 * Every numpy name of c's graph in a well-formed array (_reconstruct with
 * its __setstate__ tuple, or _frombuffer), scalar or dtype whose items are
 * no Python objects, with exactly shape * itemsize bytes: 0, or CK_EUNSAFE
 * (an object dtype, a numpy name used otherwise) or CK_EFORMAT (a malformed
 * state) with a message naming the place, or CK_ENOMEM.  Quick when the
 * pickle names no numpy global.
 */
int ck_np_check(ck_ckpt_t *c, ck_err_t *err);

/*
 * p described for people when it is a well-formed numpy value: "ndarray
 * float64 (3,)", "float32 scalar 2.0", "dtype <U2".  1 with the text in
 * buf, else 0.  Safe on any graph (bounded work, nothing marked).
 */
int ck_np_describe(const ck_py_t *p, char *buf, size_t n);

#endif
