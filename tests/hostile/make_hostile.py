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

    def add(fname, data, what, expect=()):
        assert not any(c["file"] == fname for c in cases), fname
        with open(os.path.join(outdir, fname), "wb") as f:
            f.write(data)
        cases.append({"file": fname, "expect_in_message": list(expect),
                      "what": what})

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

    with open(os.path.join(outdir, "cases.json"), "w") as f:
        json.dump(cases, f, indent=1)
    with open(os.path.join(outdir, "controls.json"), "w") as f:
        json.dump([{"file": "base.pt", "what": "unmodified zip checkpoint"},
                   {"file": "base_legacy.pt",
                    "what": "unmodified legacy checkpoint"}], f, indent=1)
    return cases


if __name__ == "__main__":
    main()
