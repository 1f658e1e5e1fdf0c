#!/usr/bin/python3
"""Generate hostile / malformed PyTorch checkpoints for ckprep.

usage: make_hostile.py OUTDIR

Writes into OUTDIR:
  base.pt, base_legacy.pt   unmodified torch.save outputs (positive controls)
  controls.json             list of the control files
  <case>.pt ...             one malformed file per case
  cases.json                [{"file", "expect_in_message", "what"}, ...]

The dangerous pickles are only ever built as raw bytes; nothing here loads
them. Every case is meant to be refused by ckprep (exit 1).
"""
import collections
import io
import json
import os
import pickle
import pickletools
import random
import struct
import sys
import warnings
import zipfile

import torch

ZIP_TIME = (1980, 1, 1, 0, 0, 0)

# --------------------------------------------------------------------------
# base checkpoints


def make_base(outdir):
    tensors = {
        "w": torch.arange(4, dtype=torch.float32),
        "b": torch.arange(3, dtype=torch.int64),
    }
    base = os.path.join(outdir, "base.pt")
    legacy = os.path.join(outdir, "base_legacy.pt")
    torch.save(tensors, base)  # zip format, protocol 2, archive folder "base"
    torch.save(tensors, legacy, _use_new_zipfile_serialization=False)
    return base, legacy


def read_zip_entries(path):
    """[(name, bytes)] in archive order."""
    with zipfile.ZipFile(path) as z:
        return [(i.filename, z.read(i.filename)) for i in z.infolist()]


# --------------------------------------------------------------------------
# zip writing / patching


def build_zip(entries, align=64):
    """entries: [(name, bytes)]. ZIP_STORED, fixed timestamps, record data
    aligned to `align` bytes with an 'FB' extra field like torch does."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names are intentional
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
            for name, data in entries:
                zi = zipfile.ZipInfo(name, date_time=ZIP_TIME)
                zi.compress_type = zipfile.ZIP_STORED
                zi.external_attr = 0o644 << 16
                if align:
                    off = buf.tell()
                    hdr = 30 + len(name.encode("utf-8")) + 4
                    pad = (-(off + hdr)) % align
                    zi.extra = b"FB" + struct.pack("<H", pad) + b"Z" * pad
                z.writestr(zi, data)
    return buf.getvalue()


def find_eocd(data):
    i = data.rfind(b"PK\x05\x06")
    assert i >= 0
    return i


def central_entries(data):
    """[(central_header_offset, name, local_header_offset)]"""
    e = find_eocd(data)
    n, cd_size, cd_off = struct.unpack_from("<HII", data, e + 10)
    out = []
    p = cd_off
    for _ in range(n):
        assert data[p:p + 4] == b"PK\x01\x02"
        nl, xl, cl = struct.unpack_from("<HHH", data, p + 28)
        lo = struct.unpack_from("<I", data, p + 42)[0]
        name = data[p + 46:p + 46 + nl].decode("utf-8")
        out.append((p, name, lo))
        p += 46 + nl + xl + cl
    return out


def patch(data, off, fmt, *vals):
    b = bytearray(data)
    struct.pack_into(fmt, b, off, *vals)
    return bytes(b)


def patch_entry(data, name, local_field, central_field, fmt, val):
    """Patch the same field in the local and central header of `name`.
    Offsets are relative to the header signature."""
    for cd, n, lo in central_entries(data):
        if n == name:
            data = patch(data, lo + local_field, fmt, val)
            data = patch(data, cd + central_field, fmt, val)
            return data
    raise KeyError(name)


# --------------------------------------------------------------------------
# pickle building helpers (no loading, ever)


class SRef:
    """Marker turned into a persistent id by CkPickler."""

    def __init__(self, pid):
        self.pid = pid


class FakeTensor:
    def __init__(self, sref, offset, size, stride):
        # fresh tuples each time so the pickler does not memo-share them
        self.args = (sref, offset, tuple(list(size)), tuple(list(stride)), False,
                     collections.OrderedDict())

    def __reduce__(self):
        return (torch._utils._rebuild_tensor_v2, self.args)


class CkPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, SRef):
            return obj.pid
        return None


def ck_pickle(obj):
    f = io.BytesIO()
    CkPickler(f, protocol=2).dump(obj)
    return f.getvalue()


def storage_pid(cls, key, numel, location="cpu"):
    return SRef(("storage", cls, key, location, numel))


def tensor(cls, key, numel, offset, size, stride):
    return FakeTensor(storage_pid(cls, key, numel), offset, size, stride)


def good_dict():
    return {
        "w": tensor(torch.FloatStorage, "0", 4, 0, (4,), (1,)),
        "b": tensor(torch.LongStorage, "1", 3, 0, (3,), (1,)),
    }


def utf8(s):
    b = s.encode("utf-8")
    return b"X" + struct.pack("<I", len(b)) + b


def short_u(s):
    b = s.encode("utf-8")
    return b"\x8c" + bytes([len(b)]) + b


def reduce_call(module, name, arg="id", stack_global=False):
    """Raw opcodes: push module.name, call it with (arg,) via REDUCE.
    Leaves the result on the stack (no STOP)."""
    if stack_global:
        g = short_u(module) + short_u(name) + b"\x93"
    else:
        g = b"c" + module.encode() + b"\n" + name.encode() + b"\n"
    return g + b"(" + utf8(arg) + b"tR"


# --------------------------------------------------------------------------
# cases added for issue 5 (hardening): the rest of the hostile-input list


def ck_pickle0(obj):
    """Protocol 0: text opcodes, text PERSID (the pid must be a str)."""
    f = io.BytesIO()
    CkPickler(f, protocol=0).dump(obj)
    return f.getvalue()


def patch_name(data, old, new):
    """Replace entry name `old` by the bytes `new` (same length) in every
    local and central header."""
    o = old.encode()
    assert len(o) == len(new), (o, new)
    n = data.count(o)
    assert n == 2, (old, n)
    return data.replace(o, new)


def zip64_records(data):
    """(offset of the zip64 end record, of its locator, of the end record)"""
    e = find_eocd(data)
    loc = e - 20
    assert data[loc:loc + 4] == b"PK\x06\x07"
    e64 = struct.unpack_from("<Q", data, loc + 8)[0]
    assert data[e64:e64 + 4] == b"PK\x06\x06"
    return e64, loc, e


# what each malformed pickle's message must say
PKL_EXPECT = {
    "pkl_binbytes_4g.pt": ["over the string limit"],
    "pkl_binbytes8_huge.pt": ["over the string limit"],
    "pkl_bytearray8_huge.pt": ["over the string limit"],
    "pkl_binunicode8_4g.pt": ["over the string limit"],
    "pkl_binstring_negative.pt": ["negative length"],
    "pkl_binstring_2g.pt": ["over the string limit"],
    "pkl_short_binbytes_past.pt": ["truncated"],
    "pkl_get_text_huge.pt": ["memo index"],
    "pkl_put_text_huge.pt": ["memo index"],
    "pkl_long_binput_huge.pt": ["memo index"],
    "pkl_memoize_empty.pt": ["underflow"],
    "pkl_dup_empty.pt": ["underflow"],
    "pkl_pop_empty.pt": ["no mark"],
    "pkl_pop_mark_none.pt": ["no mark"],
    "pkl_build_empty.pt": ["underflow"],
    "pkl_build_on_int.pt": ["not an object"],
    "pkl_build_twice.pt": ["twice"],
    "pkl_setitem_on_tuple.pt": ["not a dict"],
    "pkl_append_on_dict.pt": ["not a list"],
    "pkl_additems_on_list.pt": ["not a set"],
    "pkl_dict_odd.pt": ["odd"],
    "pkl_setitems_odd.pt": ["odd"],
    "pkl_reduce_args_list.pt": ["not a tuple"],
    "pkl_reduce_on_int.pt": ["not callable"],
    "pkl_newobj_ex_kwargs.pt": ["keyword"],
    "pkl_stack_global_ints.pt": ["not str"],
    "pkl_inst_no_mark.pt": ["no mark"],
    "pkl_obj_no_class.pt": ["without a class"],
    "pkl_int_text_bad.pt": ["integer"],
    "pkl_long_text_bad.pt": ["integer"],
    "pkl_float_text_bad.pt": ["float"],
    "pkl_float_text_hex.pt": ["float"],
    "pkl_string_unquoted.pt": ["not quoted"],
    "pkl_string_bad_escape.pt": ["escape"],
    "pkl_global_empty.pt": ["global name"],
    "pkl_proto_6.pt": ["protocol 6"],
    "pkl_only_proto.pt": ["truncated"],
    "pkl_empty.pt": ["truncated"],
}


def more_cases(add, with_pkl, torch_case, entries, rec, top, base_pkl,
               base_bytes, legacy_bytes, rebuilt):
    P2 = b"\x80\x02"
    P4 = b"\x80\x04"
    pkl_name = top + "/data.pkl"

    # ----------------------------------------------------------------- zip
    e = find_eocd(base_bytes)
    eocd = base_bytes[e:e + 22]
    add("zip_two_eocd_appended.pt", base_bytes + eocd,
        "a second end-of-central-directory record after the first",
        ["between the central directory and the end record"])
    add("zip_two_eocd_in_comment.pt",
        patch(base_bytes, e + 20, "<H", 22) + eocd,
        "the end record's comment holds a second end record",
        ["between the central directory and the end record"])
    e64, loc, _ = zip64_records(base_bytes)
    add("zip64_locator_oob.pt", patch(base_bytes, loc + 8, "<Q", 1 << 40),
        "zip64 locator points past the end of the file", ["zip64"])
    add("zip64_locator_wrong.pt", patch(base_bytes, loc + 8, "<Q", 0),
        "zip64 locator points at a local header, not a zip64 end record",
        ["zip64"])
    add("zip64_count_disagrees.pt",
        patch(patch(base_bytes, e64 + 24, "<Q", 5), e64 + 32, "<Q", 5),
        "zip64 end record says 5 entries, the classic one 4", ["disagree"])
    z = patch(base_bytes, e + 16, "<I", 0xFFFFFFFF)
    add("zip64_cd_offset_oob.pt", patch(z, e64 + 48, "<Q", 1 << 40),
        "zip64 end record's central directory offset past the end",
        ["out of bounds"])
    # data/0 declared long enough to run into data/1's local header
    cds = {n: (cd, lo) for cd, n, lo in central_entries(rebuilt)}
    lo0, lo1 = cds[top + "/data/0"][1], cds[top + "/data/1"][1]
    nl, xl = struct.unpack_from("<HH", rebuilt, lo0 + 26)
    span = lo1 - (lo0 + 30 + nl + xl) + 30
    z = patch_entry(rebuilt, top + "/data/0", 18, 20, "<I", span)
    z = patch_entry(z, top + "/data/0", 22, 24, "<I", span)
    add("zip_overlap.pt", z,
        "data/0's bytes overlap data/1's local header (zip bomb layout)",
        ["overlap"])
    add("zip_overlap_same_header.pt",
        patch(rebuilt, cds[top + "/data/1"][0] + 42, "<I", lo0),
        "two central entries share one local header", ["disagree"])
    for method, label in ((12, "bzip2"), (14, "lzma"), (93, "zstd")):
        add("zip_method_%s.pt" % label,
            patch_entry(rebuilt, top + "/data/1", 8, 10, "<H", method),
            "data/1 compressed with %s (method %d)" % (label, method),
            ["method"])
    add("zip_local_name_differs.pt",
        patch(rebuilt, lo0 + 30 + nl - 1, "<B", ord("7")),
        "local header of data/0 names data/7", ["disagree"])
    add("zip_local_method_differs.pt",
        patch(rebuilt, lo0 + 8, "<H", 8),
        "local header says deflated, central says stored", ["disagree"])
    pad = top + "/evil_name_0"
    for fname, raw, what in (
            ("zip_name_nul.pt", (top + "/evil\0name_0").encode(),
             "entry name with a NUL byte"),
            ("zip_name_bad_utf8.pt", (top + "/evil_").encode() + b"\xff\xfe\xc0\x80a0",
             "entry name that is not UTF-8 (0xff 0xfe, overlong NUL)"),
            ("zip_name_newline.pt", (top + "/evil\nname_0").encode(),
             "entry name with a newline"),
            ("zip_name_backslash.pt", (top + "\\..\\..\\evil0").encode(),
             "entry name with backslashes (..\\..\\)")):
        add(fname, patch_name(with_pkl(base_pkl, extra=[(pad, b"x")]), pad, raw),
            what, ["unsafe entry name"])
    add("zip_entry_no_folder.pt", with_pkl(base_pkl, extra=[("evil.txt", b"x")]),
        "an entry outside any folder", ["outside the top folder"])
    add("zip_constants_only.pt",
        with_pkl(base_pkl, extra=[(top + "/constants.pkl", P2 + b").")]),
        "constants.pkl beside data.pkl (TorchScript)", ["TorchScript"])

    # -------------------------------------------------------------- pickle
    for mod, name in (("builtins", "exec"), ("builtins", "__import__"),
                      ("builtins", "compile"), ("os", "popen"),
                      ("torch.serialization", "load"), ("runpy", "run_path")):
        tag = (mod.replace(".", "_") + "_" + name.strip("_")).lower()
        add("evil_%s.pt" % tag, with_pkl(P2 + reduce_call(mod, name) + b"."),
            "data.pkl is GLOBAL %s.%s + REDUCE" % (mod, name),
            ["%s.%s" % (mod, name)])
        add("evil_%s_in_dict.pt" % tag,
            with_pkl(base_pkl[:-2] + utf8("x") + reduce_call(mod, name) + b"u."),
            "real checkpoint dict with extra value %s.%s(...)" % (mod, name),
            ["%s.%s" % (mod, name)])
    add("evil_newobj_ex.pt",
        with_pkl(P4 + short_u("subprocess") + short_u("Popen") + b"\x93("
                 + utf8("id") + b"t}\x92."),
        "NEWOBJ_EX on subprocess.Popen", ["subprocess.Popen"])
    add("evil_ext2.pt", with_pkl(P2 + b"\x83\x01\x00)R."),
        "EXT2 extension-registry global", ["extension"])
    add("evil_ext4.pt", with_pkl(P2 + b"\x84\x01\x00\x00\x00)R."),
        "EXT4 extension-registry global", ["extension"])
    add("evil_obj_stack_global.pt",
        with_pkl(P4 + b"(" + short_u("posix") + short_u("system") + b"\x93"
                 + utf8("id") + b"o."),
        "OBJ whose class comes from STACK_GLOBAL posix.system", ["posix.system"])
    add("evil_stack_global_computed.pt",
        with_pkl(P4 + b"cbuiltins\nstr\n(" + short_u("posix") + b"tR"
                 + short_u("system") + b"\x93(" + utf8("id") + b"tR."),
        "STACK_GLOBAL whose module is computed: builtins.str('posix')",
        ["not str"])
    add("evil_stack_global_unicode.pt",
        with_pkl(P4 + b"V\\u0070osix\n" + b"Vsystem\n\x93(" + utf8("id")
                 + b"tR."),
        "STACK_GLOBAL of UNICODE text 'p' spelled \\u0070 (posix.system)",
        ["posix.system"])
    add("evil_stack_global_string.pt",
        with_pkl(P4 + b"S'\\x70osix'\n" + b"S'system'\n\x93(" + utf8("id")
                 + b"tR."),
        "STACK_GLOBAL of protocol 0 STRINGs with \\x escapes (posix.system)",
        ["posix.system"])
    d = good_dict()
    d["w"] = tensor(torch.FloatStorage, "0", 4, 0, (5,), (1,))
    dotted = ck_pickle(d).replace(b"ctorch._utils\n_rebuild_tensor_v2\n",
                                  b"ctorch\n_utils._rebuild_tensor_v2\n")
    add("torch_dotted_rebuild.pt", with_pkl(P4 + dotted[2:]),
        "protocol 4 global torch + '_utils._rebuild_tensor_v2' (dotted name) "
        "rebuilding a view past its storage", ["dotted"])
    add("evil_dotted_getattr.pt",
        with_pkl(P4 + b"ccollections\nOrderedDict.__init__.__globals__\n."),
        "dotted global name walking attributes (OrderedDict.__init__...)",
        ["dotted"])
    add("pkl_next_buffer.pt", with_pkl(b"\x80\x05\x97."),
        "NEXT_BUFFER (out-of-band buffer) in protocol 5", ["buffer"])
    add("pkl_readonly_buffer.pt", with_pkl(b"\x80\x05C\x03abc\x98."),
        "READONLY_BUFFER in protocol 5", ["buffer"])
    d = good_dict()
    d["w"] = FakeTensor(SRef("0"), 0, (4,), (1,))
    add("torch_pid_text.pt", with_pkl(ck_pickle0(d)),
        "protocol 0 pickle whose tensor uses a text PERSID '0'",
        ["persistent id is not a tuple"])
    add("pkl_laughs_dup.pt", with_pkl(P2 + b"]" + b"2\x86" * 100000 + b"R."),
        "x = (x, x) 100,000 times by DUP/TUPLE2 (2^100000 leaves), then "
        "REDUCE underflow", ["underflow"])
    add("pkl_laughs_dup_in_dict.pt",
        with_pkl(base_pkl[:-2] + utf8("x") + b"]" + b"2\x86" * 5000 + b"u."),
        "real checkpoint dict with a value x = (x, x) nested 5,000 deep",
        ["deeper"])
    for fname, data, what in (
            ("pkl_binbytes_4g.pt", b"\x80\x03B\xff\xff\xff\xffabc.",
             "BINBYTES claiming 2^32-1 bytes"),
            ("pkl_binbytes8_huge.pt", P4 + b"\x8e" + b"\xff" * 8 + b"abc.",
             "BINBYTES8 claiming 2^64-1 bytes"),
            ("pkl_bytearray8_huge.pt", b"\x80\x05\x96" + b"\xff" * 8 + b"abc.",
             "BYTEARRAY8 claiming 2^64-1 bytes"),
            ("pkl_binunicode8_4g.pt",
             P4 + b"\x8d" + struct.pack("<Q", (1 << 32) - 1) + b"abc.",
             "BINUNICODE8 claiming 2^32-1 bytes"),
            ("pkl_binstring_negative.pt", P2 + b"T\xff\xff\xff\xffabc.",
             "BINSTRING with length -1"),
            ("pkl_binstring_2g.pt", P2 + b"T\xff\xff\xff\x7fabc.",
             "BINSTRING claiming 2^31-1 bytes"),
            ("pkl_short_binbytes_past.pt", b"\x80\x03C\xffabc.",
             "SHORT_BINBYTES of 255 bytes, 4 present"),
            ("pkl_get_text_huge.pt", P2 + b"g99999999999999999999\n.",
             "GET of a 20-digit memo index"),
            ("pkl_put_text_huge.pt", P2 + b"Np4294967296\n.",
             "PUT at memo index 2^32"),
            ("pkl_long_binput_huge.pt", P2 + b"Nr\xff\xff\xff\xff.",
             "LONG_BINPUT at memo index 2^32-1"),
            ("pkl_memoize_empty.pt", P4 + b"\x94.", "MEMOIZE on an empty stack"),
            ("pkl_dup_empty.pt", P2 + b"2.", "DUP on an empty stack"),
            ("pkl_pop_empty.pt", P2 + b"0.", "POP on an empty stack"),
            ("pkl_pop_mark_none.pt", P2 + b"1.", "POP_MARK without a MARK"),
            ("pkl_build_empty.pt", P2 + b"}b.", "BUILD with one value on the stack"),
            ("pkl_build_on_int.pt", P2 + b"K\x01}b.", "BUILD on an int"),
            ("pkl_build_twice.pt",
             P2 + b"ccollections\nOrderedDict\n)R}b}b.",
             "BUILD twice on one object"),
            ("pkl_setitem_on_tuple.pt", P2 + b")K\x01K\x02s.",
             "SETITEM on a tuple"),
            ("pkl_append_on_dict.pt", P2 + b"}K\x01a.", "APPEND on a dict"),
            ("pkl_additems_on_list.pt", P4 + b"](K\x01\x90.",
             "ADDITEMS on a list"),
            ("pkl_dict_odd.pt", P2 + b"(K\x01d.", "DICT with an odd item count"),
            ("pkl_setitems_odd.pt", P2 + b"}(K\x01u.",
             "SETITEMS with an odd item count"),
            ("pkl_reduce_args_list.pt",
             P2 + b"ccollections\nOrderedDict\n]R.",
             "REDUCE whose arguments are a list"),
            ("pkl_reduce_on_int.pt", P2 + b"K\x01)R.", "REDUCE calling an int"),
            ("pkl_newobj_ex_kwargs.pt",
             P4 + b"ccollections\nOrderedDict\n)}" + utf8("a") + b"K\x01s\x92.",
             "NEWOBJ_EX with keyword arguments"),
            ("pkl_stack_global_ints.pt", P4 + b"K\x01K\x02\x93.",
             "STACK_GLOBAL of two ints"),
            ("pkl_inst_no_mark.pt", P2 + b"icollections\nOrderedDict\n.",
             "INST without a MARK"),
            ("pkl_obj_no_class.pt", P2 + b"(o.", "OBJ without a class"),
            ("pkl_int_text_bad.pt", P2 + b"I12abc\n.", "INT text '12abc'"),
            ("pkl_long_text_bad.pt", P2 + b"L0x10L\n.", "LONG text '0x10L'"),
            ("pkl_float_text_bad.pt", P2 + b"Fabc\n.", "FLOAT text 'abc'"),
            ("pkl_float_text_hex.pt", P2 + b"F0x1p3\n.",
             "FLOAT text '0x1p3' (Python refuses hex)"),
            ("pkl_string_unquoted.pt", P2 + b"Sabc\n.", "STRING not quoted"),
            ("pkl_string_bad_escape.pt", P2 + b"S'\\xZZ'\n.",
             "STRING with a bad \\x escape"),
            ("pkl_global_empty.pt", P2 + b"c\n\n.", "GLOBAL with empty names"),
            ("pkl_proto_6.pt", b"\x80\x06N.", "PROTO 6"),
            ("pkl_only_proto.pt", P2, "nothing but PROTO"),
            ("pkl_empty.pt", b"", "an empty data.pkl")):
        add(fname, with_pkl(data), what, PKL_EXPECT[fname])

    # --------------------------------------------------------------- torch
    d = good_dict()
    d["w"] = tensor(torch.FloatStorage, "0", 4, 0, (4,), (-1,))
    torch_case("torch_negative_stride.pt", d, "negative stride", ["negative"])
    d = good_dict()
    d["w"] = tensor(torch.FloatStorage, "0", 4, 0, (2, -2), (1, 1))
    torch_case("torch_negative_size_2d.pt", d, "negative size in a second dim",
               ["negative"])
    d = good_dict()
    d["w"] = tensor(torch.FloatStorage, "0", 1 << 62, 0, (4,), (1,))
    torch_case("torch_storage_bytes_overflow.pt", d,
               "storage of 2^62 floats: its byte count overflows 64 bits",
               ["overflows"])
    d = good_dict()
    d["w"] = tensor(torch.FloatStorage, "0", -4, 0, (4,), (1,))
    torch_case("torch_storage_numel_negative.pt", d, "storage numel -4",
               ["malformed"])
    d = good_dict()
    d["w"] = tensor(torch.FloatStorage, 0, 4, 0, (4,), (1,))
    torch_case("torch_storage_key_int.pt", d, "storage key is an int",
               ["malformed"])
    d = good_dict()
    d["w"] = FakeTensor(SRef(["storage", torch.FloatStorage, "0", "cpu", 4]),
                        0, (4,), (1,))
    torch_case("torch_pid_list.pt", d, "persistent id is a list",
               ["not a tuple"])
    d = good_dict()
    d["w"] = FakeTensor(SRef(("storage", collections.OrderedDict, "0", "cpu", 4)),
                        0, (4,), (1,))
    torch_case("torch_storage_class_not_torch.pt", d,
               "storage class collections.OrderedDict", ["not a torch class"])
    d = good_dict()
    d["w"] = FakeTensor(SRef(("storage", torch.UntypedStorage, "0", "cpu", 16)),
                        0, (4,), (1,))
    add("torch_untyped_no_dtype.pt",
        with_pkl(ck_pickle(d).replace(b"ctorch.storage\nUntypedStorage\n",
                                      b"ctorch\nUntypedStorage\n")),
        "_rebuild_tensor_v2 on a torch.UntypedStorage (no dtype)",
        ["untyped storage"])
    d = good_dict()
    d["b"] = tensor(torch.FloatStorage, "0", 2, 0, (2,), (1,))
    torch_case("torch_key_two_numels.pt", d,
               "storage key 0 used with 4 and with 2 elements", ["used as"],
               records={"0": rec[top + "/data/0"]})
    d = good_dict()
    d["w"] = tensor(torch.FloatStorage, "0", 4, 0, (4, 1 << 62), (1, 0))
    torch_case("torch_numel_overflow_zero_stride.pt", d,
               "element count 2^64 over a zero stride (extent fits)",
               ["overflows"])
    d = good_dict()
    d["w"] = tensor(torch.FloatStorage, "0", 4, 1 << 63, (1,), (1,))
    torch_case("torch_offset_2e63.pt", d, "storage offset 2^63", ["malformed"])

    # ------------------------------------------------- [security] limits
    # the base checkpoint passes with the defaults (the controls); each of
    # these sets one limit below what it needs
    base_zip = with_pkl(base_pkl)
    for fname, data, conf, what, expect in (
            ("limit_max_pickle_bytes.pt", base_zip, "max_pickle_bytes = 64",
             "data.pkl larger than max_pickle_bytes", ["over the limit of 64"]),
            ("limit_max_pickle_bytes_legacy.pt", legacy_bytes,
             "max_pickle_bytes = 64",
             "legacy pickles larger than max_pickle_bytes",
             ["larger than 64 bytes"]),
            ("limit_max_depth.pt", base_zip, "max_depth = 2",
             "nesting deeper than max_depth", ["deeper than 2"]),
            ("limit_max_memo.pt", base_zip, "max_memo = 3",
             "memo index past max_memo", ["memo index 3 over the limit 3"]),
            ("limit_max_string_bytes.pt", base_zip, "max_string_bytes = 4",
             "a string longer than max_string_bytes", ["longer than 4 bytes"])):
        add(fname, data, what, expect, conf="[security]\n%s\n" % conf)


def numpy_cases(add, top, legacy_bytes):
    """The hostile numpy pickles of tests/core/make_numpy_cases.py (object
    dtypes, flags marking object items, byte counts off, malformed states,
    numpy names reduced to something else), each as a checkpoint's
    data.pkl: refused for the numpy name by default, and for its own cause
    with [security] allow_numpy = yes."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                    "..", "core"))
    import make_numpy_cases

    for name, pkl, rc, text in make_numpy_cases.cases:
        if rc == "0":
            continue
        data = build_zip([(top + "/data.pkl", pkl), (top + "/version", b"3\n")])
        add("numpy_%s.pt" % name, data,
            "numpy %s, allow_numpy off" % name, ["numpy.", "not allowed"])
        add("numpy_%s_allowed.pt" % name, data,
            "numpy %s, allow_numpy = yes" % name, [text],
            conf="[security]\nallow_numpy = yes\n")
    # a legacy file whose sys_info pickle (not the data pickle, the only
    # one ckprep keeps) holds a numpy array: torch.load builds it too
    f = io.BytesIO(legacy_bytes)
    ends = []
    for _ in range(3):
        for op, _, pos in pickletools.genops(f):
            if op.name == "STOP":
                break
        ends.append(f.tell())
    import numpy as np
    info = pickle.loads(legacy_bytes[ends[1]:ends[2]])
    info["extra"] = np.arange(2.0)
    data = (legacy_bytes[:ends[1]] + pickle.dumps(info, protocol=2) +
            legacy_bytes[ends[2]:])
    add("numpy_legacy_sys_info.pt", data, "numpy array in a legacy sys_info, "
        "allow_numpy off", ["numpy.", "not allowed"])
    add("numpy_legacy_sys_info_allowed.pt", data, "numpy array in a legacy "
        "sys_info, allow_numpy = yes",
        ["legacy header pickle names numpy.core.multiarray._reconstruct"],
        conf="[security]\nallow_numpy = yes\n")


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: make_hostile.py OUTDIR")
    outdir = sys.argv[1]
    os.makedirs(outdir, exist_ok=True)
    base_path, legacy_path = make_base(outdir)
    base_bytes = open(base_path, "rb").read()
    legacy_bytes = open(legacy_path, "rb").read()
    entries = read_zip_entries(base_path)
    names = [n for n, _ in entries]
    top = names[0].split("/")[0]
    rec = dict(entries)
    pkl_name = top + "/data.pkl"
    base_pkl = rec[pkl_name]
    assert base_pkl.endswith(b"u."), base_pkl[-4:]

    # sanity: our hand pickler reproduces torch's own data.pkl
    assert ck_pickle(good_dict()) == base_pkl, "ck_pickle differs from torch"

    cases = []

    def add(fname, data, what, expect=(), conf=None):
        """conf: extra INI text the run uses (e.g. low [security] limits)."""
        assert not any(c["file"] == fname for c in cases), fname
        with open(os.path.join(outdir, fname), "wb") as f:
            f.write(data)
        cases.append({"file": fname, "expect_in_message": list(expect),
                      "what": what})
        if conf is not None:
            cases[-1]["conf"] = conf

    def with_pkl(pkl, drop=(), extra=(), replace=None):
        """Rebuild the base zip with data.pkl replaced by `pkl`."""
        out = []
        for n, d in entries:
            if n in drop:
                continue
            if n == pkl_name:
                d = pkl
            if replace and n in replace:
                d = replace[n]
            out.append((n, d))
        out.extend(extra)
        return build_zip(out)

    # sanity: a rebuilt, unmodified zip is byte-for-byte readable
    rebuilt = with_pkl(base_pkl)
    assert read_zip_entries(io.BytesIO(rebuilt)) == entries

    # ---------------------------------------------------------------- file
    add("trunc_half.pt", base_bytes[:len(base_bytes) // 2],
        "zip checkpoint cut at 50%")
    add("trunc_10.pt", base_bytes[:10], "zip checkpoint cut to its first 10 bytes")
    add("empty.pt", b"", "empty file")
    add("random.pt", random.Random(1).randbytes(4096), "4 KiB of random bytes")
    add("random_pk.pt", b"PK\x03\x04" + random.Random(2).randbytes(4092),
        "zip local-header magic followed by random bytes")
    add("text.pt", b"This is not a checkpoint.\nJust some text, line 2.\n" * 20,
        "plain text file")
    add("zip_not_torch.pt",
        build_zip([("readme.txt", b"hello\n"), ("notes/a.txt", b"x\n")]),
        "valid zip with no data.pkl")

    # -------------------------------------------------------------- pickle
    P2 = b"\x80\x02"
    add("pkl_no_stop.pt", with_pkl(base_pkl[:-1]), "data.pkl without STOP")
    add("pkl_after_stop.pt", with_pkl(base_pkl + b"N."),
        "data.pkl with bytes after STOP")
    add("pkl_binget_unset.pt", with_pkl(P2 + b"h\x07."),
        "BINGET of memo index never stored")
    add("pkl_long_binget_huge.pt", with_pkl(P2 + b"j\xff\xff\xff\xff."),
        "LONG_BINGET of memo index 2^32-1")
    add("pkl_binget_unset_in_dict.pt",
        with_pkl(base_pkl[:-2] + utf8("x") + b"h\x63u."),
        "real checkpoint dict with one value BINGET 99 (never stored)")
    add("pkl_underflow_reduce.pt", with_pkl(P2 + b"R."),
        "REDUCE on empty stack")
    add("pkl_underflow_setitem.pt", with_pkl(P2 + b"s."),
        "SETITEM on empty stack")
    add("pkl_underflow_stop.pt", with_pkl(P2 + b"."), "STOP on empty stack")
    add("pkl_unbalanced_mark.pt", with_pkl(P2 + b"(."),
        "MARK never closed before STOP")
    add("pkl_tuple_no_mark.pt", with_pkl(P2 + b"K\x01t."),
        "TUPLE with no MARK on the stack")
    add("pkl_appends_on_dict.pt", with_pkl(P2 + b"}(K\x01K\x02e."),
        "APPENDS applied to a dict")
    add("pkl_setitems_on_list.pt", with_pkl(P2 + b"](K\x01K\x02u."),
        "SETITEMS applied to a list")
    add("pkl_setitem_unhashable.pt", with_pkl(P2 + b"}]K\x01s."),
        "SETITEM with a list as dict key")
    add("pkl_deep_marks.pt", with_pkl(P2 + b"(" * 1000000 + b"."),
        "1,000,000 nested MARKs never closed")
    add("pkl_deep_lists.pt",
        with_pkl(P2 + b"]" * 1000000 + b"a" * 999999),
        "lists nested 1,000,000 deep, then no STOP")
    add("pkl_deep_tuples.pt",
        with_pkl(P2 + b"(" * 500000 + b"t" * 500000 + b"R."),
        "tuples nested 500,000 deep, then REDUCE underflow")
    add("pkl_deep_in_dict.pt",
        with_pkl(base_pkl[:-2] + utf8("x") + b"]" * 1000000
                 + b"a" * 999999 + b"u"),
        "real checkpoint dict with a 1,000,000-deep nested list value, no STOP")
    add("pkl_binunicode_huge.pt",
        with_pkl(P2 + b"X\xff\xff\xff\xffabc"),
        "BINUNICODE claiming 2^32-1 bytes, 3 present")
    add("pkl_binunicode8_huge.pt",
        with_pkl(b"\x80\x04\x8d" + b"\xff" * 8 + b"abc"),
        "BINUNICODE8 claiming 2^64-1 bytes, 3 present")
    add("pkl_binbytes_huge.pt",
        with_pkl(b"\x80\x03B\xff\xff\xff\x7fabc"),
        "BINBYTES claiming 2 GiB, 3 present")
    add("pkl_long4_1gib.pt",
        with_pkl(P2 + b"\x8b" + struct.pack("<I", 1 << 30) + b"\x01" * 10 + b"."),
        "LONG4 claiming 1 GiB of digits")
    add("pkl_long4_negative.pt",
        with_pkl(P2 + b"\x8b" + struct.pack("<i", -5) + b"\x01" * 10 + b"."),
        "LONG4 with negative length")
    add("pkl_bad_utf8.pt", with_pkl(P2 + b"X\x02\x00\x00\x00\xff\xfe."),
        "BINUNICODE with invalid UTF-8")
    add("pkl_unknown_opcode.pt", with_pkl(P2 + b"\xff."), "unknown opcode 0xff")
    add("pkl_bad_proto.pt", with_pkl(b"\x80\x09" + base_pkl[2:]),
        "PROTO 9 header")
    refs = b"(" + b"h\x00" * 1000 + b"e"
    add("pkl_laughs_refs.pt",
        with_pkl(P2 + b"]q\x00]" + refs * 1000 + b"R."),
        "list holding 10^6 BINGET references to one list, then REDUCE underflow")
    add("pkl_laughs_self.pt",
        with_pkl(P2 + b"]q\x00" + refs * 1000 + b"R."),
        "list appended to itself 10^6 times (cycle), then REDUCE underflow")
    bomb = P2 + b"K\x00q\x000"  # memo[0] = 0
    for lvl in range(1, 12):  # memo[lvl] = [memo[lvl-1]] * 10
        bomb += b"(" + (b"h" + bytes([lvl - 1])) * 10 + b"lq" + bytes([lvl]) + b"0"
    add("pkl_laughs_exp.pt", with_pkl(bomb + b"h\x0bR."),
        "10-way shared lists nested 11 levels (10^11 leaves), then REDUCE underflow")
    add("pkl_global_no_newline.pt",
        with_pkl(P2 + b"ctorch._utils\n_rebuild_tensor_v2"),
        "GLOBAL name without terminating newline")
    add("pkl_global_module_no_newline.pt", with_pkl(P2 + b"cposix"),
        "GLOBAL module without newline (EOF)")
    add("pkl_global_unknown.pt",
        with_pkl(P2 + reduce_call("foo_mod", "bar_fn") + b"."),
        "GLOBAL of an unknown callable foo_mod.bar_fn", ["foo_mod.bar_fn"])
    add("pkl_global_long_name.pt",
        with_pkl(P2 + b"c" + b"A" * 1000000 + b"\n" + b"B" * 1000000 + b"\n)R."),
        "GLOBAL with 1 MB module and name")

    # ----------------------------------------------------- dangerous globals
    dangerous = [
        ("posix", "system", ["posix.system"]),
        ("builtins", "eval", ["builtins.eval"]),
        ("__builtin__", "eval", ["eval"]),
        ("builtins", "getattr", ["builtins.getattr"]),
        ("nt", "system", ["nt.system"]),
        ("os", "system", ["os.system"]),
        ("subprocess", "Popen", ["subprocess.Popen"]),
        ("pkgutil", "resolve_name", ["pkgutil.resolve_name"]),
        ("functools", "partial", ["functools.partial"]),
        ("torch", "load", ["torch.load"]),
    ]
    for mod, name, exp in dangerous:
        tag = (mod.strip("_") + "_" + name).lower()
        add("evil_%s.pt" % tag,
            with_pkl(P2 + reduce_call(mod, name) + b"."),
            "data.pkl is GLOBAL %s.%s + REDUCE" % (mod, name), exp)
        add("evil_%s_in_dict.pt" % tag,
            with_pkl(base_pkl[:-2] + utf8("x") + reduce_call(mod, name) + b"u."),
            "real checkpoint dict with extra value %s.%s(...)" % (mod, name), exp)
    add("evil_stack_global.pt",
        with_pkl(b"\x80\x04" + reduce_call("posix", "system", stack_global=True)
                 + b"."),
        "protocol 4 STACK_GLOBAL posix.system + REDUCE", ["posix.system"])
    add("evil_stack_global_in_dict.pt",
        with_pkl(b"\x80\x04" + base_pkl[2:-2] + utf8("x")
                 + reduce_call("posix", "system", stack_global=True) + b"u."),
        "real checkpoint dict with extra STACK_GLOBAL posix.system(...)",
        ["posix.system"])
    add("evil_stack_global_memo.pt",
        with_pkl(b"\x80\x04" + short_u("posix") + b"\x94" + short_u("system")
                 + b"\x94" + b"0" + b"0" + b"h\x00h\x01\x93("
                 + utf8("id") + b"tR."),
        "STACK_GLOBAL whose strings come from the memo (MEMOIZE/BINGET)",
        ["posix.system"])
    add("evil_inst.pt",
        with_pkl(P2 + b"(" + utf8("id") + b"iposix\nsystem\n."),
        "INST opcode posix.system", ["posix.system"])
    add("evil_obj.pt",
        with_pkl(P2 + b"(cposix\nsystem\n" + utf8("id") + b"o."),
        "OBJ opcode posix.system", ["posix.system"])
    add("evil_newobj.pt",
        with_pkl(P2 + b"csubprocess\nPopen\n(" + utf8("id") + b"t\x81."),
        "NEWOBJ on subprocess.Popen", ["subprocess.Popen"])
    add("evil_build.pt",
        with_pkl(base_pkl[:-2] + utf8("x") + b"ccollections\nOrderedDict\n)R"
                 + b"}" + utf8("__setstate__") + b"cposix\nsystem\nsb" + b"u."),
        "BUILD with a state dict holding posix.system", ["posix.system"])
    add("evil_storage_class.pt",
        with_pkl(base_pkl.replace(b"ctorch\nFloatStorage\n",
                                  b"cposix\nsystem\n", 1)),
        "posix.system in the storage-class slot of a persistent id",
        ["posix.system"])
    add("evil_hooks_slot.pt",
        with_pkl(base_pkl.replace(b"ccollections\nOrderedDict\n",
                                  b"cposix\nsystem\n", 1)),
        "posix.system instead of OrderedDict (backward hooks slot)",
        ["posix.system"])
    add("evil_rebuild_slot.pt",
        with_pkl(base_pkl.replace(b"ctorch._utils\n_rebuild_tensor_v2\n",
                                  b"cbuiltins\neval\n", 1)),
        "builtins.eval instead of _rebuild_tensor_v2", ["builtins.eval"])
    add("evil_ext1.pt", with_pkl(P2 + b"\x82\x01)R."),
        "EXT1 extension-registry global", [])

    # --------------------------------------------------------------- torch
    def torch_case(fname, d, what, expect=(), records=None):
        """Zip with data.pkl = ck_pickle(d); records replaces the data/*
        entries when given ({key: bytes})."""
        out = [(pkl_name, ck_pickle(d))]
        if records is None:
            out += [(n, b) for n, b in entries if "/data/" in n]
        else:
            out += [(top + "/data/" + k, v) for k, v in records.items()]
        out += [(n, b) for n, b in entries if n == top + "/version"]
        add(fname, build_zip(out), what, expect)

    add("torch_missing_record.pt", with_pkl(base_pkl, drop=[top + "/data/0"]),
        "record data/0 missing from the zip", ["data/0"])
    add("torch_short_record.pt",
        with_pkl(base_pkl, replace={top + "/data/0": rec[top + "/data/0"][:-4]}),
        "record data/0 4 bytes shorter than its storage", ["data/0"])
    d = good_dict()
    d["w"] = tensor(torch.FloatStorage, "0", 1000, 0, (4,), (1,))
    torch_case("torch_numel_exceeds_record.pt", d,
               "persistent id claims 1000 elements, record has 4", ["data/0"])
    d = good_dict()
    d["w"] = tensor(torch.FloatStorage, "0", 4, 0, (5,), (1,))
    torch_case("torch_view_size_past.pt", d, "size 5 view on a 4-element storage")
    d = good_dict()
    d["w"] = tensor(torch.FloatStorage, "0", 4, 3, (4,), (1,))
    torch_case("torch_view_offset_past.pt", d,
               "storage offset 3 + size 4 on a 4-element storage")
    d = good_dict()
    d["w"] = tensor(torch.FloatStorage, "0", 4, 0, (4,), (2,))
    torch_case("torch_view_stride_past.pt", d,
               "stride 2 x size 4 on a 4-element storage")
    d = good_dict()
    d["w"] = tensor(torch.FloatStorage, "0", 4, 0, (-1,), (1,))
    torch_case("torch_negative_size.pt", d, "negative size")
    d = good_dict()
    d["w"] = tensor(torch.FloatStorage, "0", 4, -1, (4,), (1,))
    torch_case("torch_negative_offset.pt", d, "negative storage offset")
    d = good_dict()
    d["w"] = tensor(torch.FloatStorage, "0", 4, 0, (1 << 40, 1 << 40, 1 << 40),
                    (1, 1, 1))
    torch_case("torch_size_overflow.pt", d, "size product overflows 64 bits")
    d = good_dict()
    d["w"] = tensor(torch.FloatStorage, "0", 4, 0, (2, 2), (1 << 62, 1 << 62))
    torch_case("torch_stride_overflow.pt", d, "stride x size overflows 64 bits")
    d = good_dict()
    d["b"] = tensor(torch.LongStorage, "0", 2, 0, (2,), (1,))
    torch_case("torch_key_two_dtypes.pt", d,
               "storage key 0 used as FloatStorage and LongStorage",
               records={"0": rec[top + "/data/0"]})
    d = good_dict()
    d["w"] = FakeTensor(SRef("0"), 0, (4,), (1,))
    torch_case("torch_pid_string.pt", d, "persistent id is a string, not a tuple")
    d = good_dict()
    d["w"] = FakeTensor(SRef(("storage", torch.FloatStorage)), 0, (4,), (1,))
    torch_case("torch_pid_short.pt", d, "persistent id tuple with 2 items")
    d = good_dict()
    d["w"] = FakeTensor(SRef(("module", torch.FloatStorage, "0", "cpu", 4)),
                        0, (4,), (1,))
    torch_case("torch_pid_bad_tag.pt", d, "persistent id tag 'module'")
    add("torch_unknown_storage.pt",
        with_pkl(base_pkl.replace(b"ctorch\nFloatStorage\n",
                                  b"ctorch\nFooStorage\n", 1)),
        "unknown storage class torch.FooStorage")
    add("torch_key_traversal.pt",
        with_pkl(base_pkl.replace(b"X\x01\x00\x00\x000", utf8("../../x"), 1)),
        "storage key '../../x' (record name traversal)")
    add("torch_bad_version.pt",
        with_pkl(base_pkl, replace={top + "/version": b"999\n"}),
        "archive version record says 999")

    # ----------------------------------------------------------------- zip
    add("zip_no_eocd.pt", base_bytes[:find_eocd(base_bytes)],
        "end-of-central-directory record cut off")
    e = find_eocd(base_bytes)
    add("zip_cd_offset_oob.pt",
        patch(base_bytes, e + 16, "<I", len(base_bytes) + 0x100000),
        "EOCD central directory offset beyond end of file")
    add("zip_cd_size_oob.pt", patch(base_bytes, e + 12, "<I", 0x7FFFFFF0),
        "EOCD central directory size far beyond the file")
    add("zip_eocd_count_lies.pt", patch(patch(base_bytes, e + 8, "<H", 200),
                                        e + 10, "<H", 200),
        "EOCD claims 200 entries, 4 present")
    add("zip_dotdot.pt",
        with_pkl(base_pkl, extra=[(top + "/../../etc/evil", b"x")]),
        "extra entry named base/../../etc/evil")
    add("zip_dotdot_record.pt",
        build_zip([(n if not n.endswith("/data/0")
                    else top + "/data/../data/0", b) for n, b in entries]),
        "record stored as base/data/../data/0")
    add("zip_absolute.pt", with_pkl(base_pkl, extra=[("/etc/x", b"x")]),
        "extra entry with absolute path /etc/x")
    add("zip_dup_pkl.pt",
        with_pkl(base_pkl, extra=[(pkl_name, P2 + b"}.")]),
        "two data.pkl entries with different contents")
    add("zip_two_tops.pt",
        with_pkl(base_pkl, extra=[("other/data.pkl", base_pkl),
                                  ("other/version", rec[top + "/version"])]),
        "entries under two top folders (base/ and other/)")
    add("zip_torchscript.pt",
        with_pkl(base_pkl, extra=[(top + "/constants.pkl", P2 + b")."),
                                  (top + "/code/__torch__.py", b"x = 1\n")]),
        "TorchScript archive (constants.pkl, code/)")
    z = rebuilt
    z = patch_entry(z, top + "/data/0", 8, 10, "<H", 99)
    add("zip_method_99.pt", z, "data/0 with compression method 99")
    z = patch_entry(rebuilt, pkl_name, 8, 10, "<H", 99)
    add("zip_method_99_pkl.pt", z, "data.pkl with compression method 99")
    z = patch_entry(rebuilt, pkl_name, 6, 8, "<H", 1)
    add("zip_encrypted.pt", z, "data.pkl with general-purpose bit 0 (encrypted)")
    z = patch_entry(rebuilt, top + "/data/0", 18, 20, "<I", 0x7FFFFFF0)
    z = patch_entry(z, top + "/data/0", 22, 24, "<I", 0x7FFFFFF0)
    add("zip_size_huge.pt", z, "data/0 declares 2 GiB size in a tiny file")
    z = patch_entry(rebuilt, pkl_name, 18, 20, "<I", 0x7FFFFFF0)
    z = patch_entry(z, pkl_name, 22, 24, "<I", 0x7FFFFFF0)
    add("zip_size_huge_pkl.pt", z, "data.pkl declares 2 GiB size")
    # local header offset of data.pkl pointing past the end
    cd = [c for c in central_entries(rebuilt) if c[1] == pkl_name][0]
    add("zip_local_offset_oob.pt",
        patch(rebuilt, cd[0] + 42, "<I", len(rebuilt) + 4096),
        "central entry for data.pkl points past end of file")
    # data.pkl stored with deflate but then corrupted
    zz = io.BytesIO()
    with zipfile.ZipFile(zz, "w", zipfile.ZIP_DEFLATED) as zf:
        for n, b in entries:
            zi = zipfile.ZipInfo(n, date_time=ZIP_TIME)
            zi.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(zi, b)
    zd = bytearray(zz.getvalue())
    lo = [c for c in central_entries(bytes(zd)) if c[1] == pkl_name][0][2]
    nl, xl = struct.unpack_from("<HH", zd, lo + 26)
    ds = lo + 30 + nl + xl
    for i in range(ds + 2, ds + 40):
        zd[i] ^= 0x5A
    add("zip_deflate_corrupt.pt", bytes(zd), "deflated data.pkl with corrupted stream")

    # -------------------------------------------------------------- legacy
    add("legacy_trunc_storage.pt", legacy_bytes[:len(legacy_bytes) - 8],
        "legacy file cut in the middle of its last storage's data")
    lb = bytearray(legacy_bytes)
    assert lb[2:4] == b"\x8a\x0a"
    lb[13] ^= 0xFF  # last byte of the LONG1 magic number
    add("legacy_bad_magic.pt", bytes(lb), "legacy file with wrong magic number")
    # storage section: keys pickle, then per storage <int64 count><bytes>
    f = io.BytesIO(legacy_bytes)
    for _ in range(5):
        for _op in pickletools.genops(f):
            pass
    pos = f.tell()
    assert len(legacy_bytes) - pos == 8 + 24 + 8 + 16
    add("legacy_count_huge.pt",
        patch(legacy_bytes, pos, "<q", 1 << 40),
        "legacy storage element count 2^40")
    add("legacy_trunc_pickle.pt", legacy_bytes[:200],
        "legacy file cut inside its data pickle")
    lp = legacy_bytes.replace(b"ccollections\nOrderedDict\n", b"cposix\nsystem\n", 1)
    add("legacy_evil.pt", lp, "legacy file whose data pickle uses posix.system",
        ["posix.system"])

    more_cases(add, with_pkl, torch_case, entries, rec, top, base_pkl,
               base_bytes, legacy_bytes, rebuilt)
    numpy_cases(add, top, legacy_bytes)

    with open(os.path.join(outdir, "cases.json"), "w") as f:
        json.dump(cases, f, indent=1)
    with open(os.path.join(outdir, "controls.json"), "w") as f:
        json.dump([{"file": "base.pt", "what": "unmodified zip checkpoint"},
                   {"file": "base_legacy.pt",
                    "what": "unmodified legacy checkpoint"}], f, indent=1)
    return cases


if __name__ == "__main__":
    main()
