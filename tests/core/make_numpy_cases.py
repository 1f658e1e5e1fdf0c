#!/usr/bin/python3
"""Writes tests/core/numpy_cases.h for test_numpy.c: pickles of {'v': X}
made by real numpy (Debian's python3-numpy, 1.24) and CPython's pickler,
and hostile variants built with __reduce__ returning numpy's own callables
with a changed argument or state.  numpy 2 is not installed: its
numpy._core names are made by replacing the GLOBAL text of the numpy 1
bytes at protocol 2 (GLOBAL is newline-ended text, so nothing else moves);
the structure is the same.

usage: /usr/bin/python3 tests/core/make_numpy_cases.py > tests/core/numpy_cases.h

tests/hostile/make_hostile.py imports `cases` for its numpy files.
"""
import _codecs
import collections
import pickle

import numpy as np

MA = np.core.multiarray


class R:
    """An object that pickles as fn(*args) [then BUILD state]."""
    def __init__(self, fn, args, state=None):
        self.r = (fn, args) if state is None else (fn, args, state)

    def __reduce__(self):
        return self.r


def dt(args, state):
    return R(np.dtype, args, state)


F8 = (3, '<', None, None, None, -1, -1, 0)


def arr(state, sub=np.ndarray):
    return R(MA._reconstruct, (sub, (0,), b'b'), state)


def p2(v, proto=2):
    return pickle.dumps({'v': v}, protocol=proto)


def np2(b):
    out = b.replace(b'cnumpy.core.multiarray\n', b'cnumpy._core.multiarray\n')
    assert out != b
    return out


def dropped(seg, pop=b'0', mark=b''):
    """{'v': 1} after seg (a pickled value, PROTO and STOP cut) is pushed
    and dropped by POP or MARK ... POP_MARK: the graph loses it, a
    torch.load builds it."""
    return (b'\x80\x02' + mark + seg[2:-1] + pop +
            b'}X\x01\x00\x00\x00vK\x01s.')


def called_dtype():
    """{'v': dtype('f8')('x')}, by hand: the pickler wants a callable."""
    seg = pickle.dumps(np.dtype('f8'), protocol=2)[2:-1]
    return (b'\x80\x02}X\x01\x00\x00\x00v' + seg +
            b'X\x01\x00\x00\x00x\x85Rs.')


rec = np.dtype([('a', '<f4'), ('b', '<i8', (2,))])
nested = np.dtype([('a', '<f4'), ('b', [('c', 'u1'), ('d', '>U1')])],
                  align=True)
# name, pickle, expected code ("0" or CK_E...), text: the description
# (accepted) or a piece of the message (refused)
cases = [
    ("arr_f8", p2(np.arange(3.0)), "0", "ndarray float64 (3,)"),
    ("arr_i4_be_fortran", p2(np.zeros((2, 3), dtype='>i4', order='F')), "0",
     "ndarray >int32 (2, 3)"),
    ("arr_struct_subarray", p2(np.array([(1.0, [2, 3])], dtype=rec)), "0",
     "ndarray struct V20 (1,)"),
    ("arr_struct_aligned_nested", p2(np.zeros(2, dtype=nested)), "0",
     "ndarray struct V12 (2,)"),
    ("arr_unicode", p2(np.array(['ab', 'c'])), "0", "ndarray <U2 (2,)"),
    ("arr_bytes", p2(np.array([b'abc'])), "0", "ndarray S3 (1,)"),
    ("arr_empty", p2(np.zeros(0)), "0", "ndarray float64 (0,)"),
    ("arr_0d", p2(np.array(3.0)), "0", "ndarray float64 ()"),
    ("arr_f16_proto3", p2(np.arange(4, dtype='f2'), 3), "0",
     "ndarray float16 (4,)"),
    ("arr_proto5_frombuffer", p2(np.arange(3.0), 5), "0",
     "ndarray float64 (3,)"),
    ("arr_proto5_readonly", p2(np.frombuffer(b'\x01\x02', dtype='u1'), 5),
     "0", "ndarray uint8 (2,)"),
    ("scalar_f8", p2(np.float64(1.5)), "0", "float64 scalar 1.5"),
    ("scalar_i8_neg", p2(np.int8(-3)), "0", "int8 scalar -3"),
    ("scalar_bool", p2(np.bool_(True)), "0", "bool scalar True"),
    ("scalar_c16", p2(np.complex128(1 + 2j)), "0", "complex128 scalar"),
    ("scalar_datetime", p2(np.datetime64('2020-01-01', 'D')), "0",
     "datetime64[D] scalar"),
    ("scalar_void", p2(np.void(b'ab')), "0", "V2 scalar"),
    ("dtype_be_f4", p2(np.dtype('>f4')), "0", "dtype >float32"),
    ("dtype_m8_10s", p2(np.dtype('m8[10s]')), "0", "dtype timedelta64[10s]"),
    ("dtype_titled", p2(np.dtype({'names': ['x'], 'formats': ['<f8'],
                                  'titles': ['T']})), "0", "dtype struct V8"),
    ("shared_dtype", p2([np.arange(2.0), np.float64(2), np.dtype('f8')]),
     "0", ""),
    ("np2_arr_f8", np2(p2(np.arange(3.0))), "0", "ndarray float64 (3,)"),
    ("np2_scalar_f8", np2(p2(np.float64(0.25))), "0", "float64 scalar 0.25"),
    # refused
    ("obj_array", p2(np.array([1, 'x'], dtype=object)), "CK_EUNSAFE",
     "object dtype 'O8'"),
    ("np2_obj_array", np2(p2(np.array([1, 'x'], dtype=object))),
     "CK_EUNSAFE", "object dtype 'O8'"),
    ("obj_field", p2(np.zeros(1, dtype=[('a', 'O'), ('b', '<f4')])),
     "CK_EUNSAFE", "object dtype 'O8'"),
    ("obj_scalar", p2(R(MA.scalar, (np.dtype('O'), b'\0' * 8))),
     "CK_EUNSAFE", "object dtype"),
    ("object_flags", p2(dt(('V8', False, True),
                           (3, '|', None, None, None, 8, 1, 63))),
     "CK_EUNSAFE", "flags 0x3f mark Python object"),
    ("count_mismatch", p2(arr((1, (4,), np.dtype('f8'), False, b'\0' * 24))),
     "CK_EFORMAT", "holds 24 bytes, 4 items of 8 bytes need 32"),
    ("scalar_short", p2(R(MA.scalar, (np.dtype('f8'), b'\0' * 4))),
     "CK_EFORMAT", "holds 4 bytes"),
    ("state_version2", p2(arr((2, (1,), np.dtype('f8'), False, b'\0' * 8))),
     "CK_EFORMAT", "state is not (1, shape"),
    ("state_4tuple", p2(arr(((1,), np.dtype('f8'), False, b'\0' * 8))),
     "CK_EFORMAT", "state is not (1, shape"),
    ("no_state", p2(R(MA._reconstruct, (np.ndarray, (0,), b'b'))),
     "CK_EFORMAT", "state is not"),
    ("reconstruct_other_class",
     p2(arr((1, (1,), np.dtype('f8'), False, b'\0' * 8),
            collections.OrderedDict)),
     "CK_EUNSAFE", "_reconstruct of collections.OrderedDict"),
    ("dtype_slot_other_call",
     p2(R(MA.scalar, (R(str, ('f8',)), b'\0' * 8))),
     "CK_EUNSAFE", "its dtype is a call of builtins.unicode"),
    ("bare_ndarray", p2(np.ndarray), "CK_EUNSAFE",
     "numpy.ndarray outside the pickle"),
    # by hand: the pickler refuses a __newobj__ of a class not the object's
    ("dtype_newobj", b'\x80\x02}X\x01\x00\x00\x00vcnumpy\ndtype\n'
     b'X\x02\x00\x00\x00f8\x85\x81s.',
     "CK_EUNSAFE", "numpy.dtype called through NEWOBJ"),
    ("ndarray_called", p2(R(np.ndarray, ((3,),))), "CK_EUNSAFE",
     "numpy.ndarray called"),
    ("dtype_result_called", called_dtype(), "CK_EUNSAFE",
     "the result of numpy.dtype is called"),
    ("data_list", p2(arr((1, (1,), np.dtype('f8'), False, [1.0]))),
     "CK_EUNSAFE", "a list of Python objects"),
    ("data_not_latin1",
     p2(arr((1, (1,), np.dtype('f8'), False,
             R(_codecs.encode, ('\u0100' * 8, 'latin1'))))),
     "CK_EFORMAT", "not bytes"),
    ("data_other_codec",
     p2(arr((1, (1,), np.dtype('f8'), False,
             R(_codecs.encode, ('a' * 8, 'utf-16'))))),
     "CK_EFORMAT", "not bytes"),
    ("datetime_object_flags",
     p2(dt(('M8', False, True),
           (4, '<', None, None, None, -1, -1, 1, ({}, (b'D', 1, 1, 1))))),
     "CK_EUNSAFE", "flags 0x01"),
    ("dropped_obj_array",
     dropped(pickle.dumps(np.array([1, 'x'], dtype=object), protocol=2)),
     "CK_EUNSAFE", "numpy array at a value POP drops: object dtype"),
    ("dropped_mark_flags",
     dropped(pickle.dumps(dt(('V8', False, True),
                             (3, '|', None, None, None, 8, 1, 1)), protocol=2),
             b'1', b'('),
     "CK_EUNSAFE", "at a value POP drops: dtype flags 0x01"),
    ("byteorder_pipe_f8", p2(dt(('f8', False, True),
                                (3, '|', None, None, None, -1, -1, 0))),
     "CK_EFORMAT", "byteorder"),
    ("dtype_args_align", p2(dt(('f8', True, True), F8)), "CK_EFORMAT",
     "dtype arguments are not (str, False, True)"),
    ("dtype_unknown_typestr", p2(dt(('q', False, True), F8)),
     "CK_EUNSUPPORTED", "'q' is not a numpy type string"),
    ("field_outside",
     p2(dt(('V4', False, True),
           (3, '|', None, ('a',), {'a': (np.dtype('f8'), 0)}, 4, 1, 16))),
     "CK_EFORMAT", "field of 8 bytes at offset 0 outside its 4-byte"),
    ("subarray_size",
     p2(dt(('V8', False, True),
           (3, '|', (np.dtype('f8'), (2,)), None, None, 8, 8, 0))),
     "CK_EFORMAT", "sub-array of 16 bytes in a dtype of 8"),
    ("metadata_f8", p2(np.dtype('f8', metadata={'k': 1})),
     "CK_EUNSUPPORTED", "metadata"),
    ("frombuffer_order",
     p2(R(np.core.numeric._frombuffer,
          (b'\0' * 8, np.dtype('f8'), (1,), 'X'))),
     "CK_EFORMAT", "_frombuffer arguments"),
    ("datetime_bad_unit",
     p2(dt(('M8', False, True),
           (4, '<', None, None, None, -1, -1, 0, ({}, (b'xx', 1, 1, 1))))),
     "CK_EFORMAT", "unknown datetime unit"),
]


def c_bytes(b):
    out, line = [], '    "'
    for x in b:
        t = '\\x%02x' % x
        if len(line) + len(t) > 76:
            out.append(line + '"')
            line = '    "'
        line += t
    out.append(line + '"')
    return "\n".join(out)


def main():
    print("/* numpy_cases.h -- made by make_numpy_cases.py from real numpy %s;"
          % np.__version__)
    print(" * do not edit. */")
    print("static const struct np_case {\n    const char *name;\n"
          "    const char *pkl;\n    size_t len;\n    int rc;\n"
          "    const char *text;\n} np_cases[] = {")
    for name, b, rc, text in cases:
        pickle.loads(b) if rc == "0" and not name.startswith("np2") else None
        print("    { \"%s\",\n%s,\n      %d, %s, \"%s\" }," % (
            name, c_bytes(b), len(b), rc, text))
    print("};")


if __name__ == "__main__":
    main()
