#!/usr/bin/python3
"""Strict oracle: does checkpoint OUT hold exactly what checkpoint IN holds?

CLI:  compare.py IN OUT [--weights-only-too] [--byte-identical] [--no-layout]
      exit 0 = equal, 1 = differ (reasons on stderr), 2 = usage error.
API:  compare(in_path, out_path, weights_only_too=False, byte_identical=False,
              check_layout=True) -> list of failure strings (empty = pass)
      check_layout(out_path) -> list of failure strings
      compare_objects(a, b) -> list of failure strings
"""
import argparse
import collections
import difflib
import io
import os
import re
import struct
import subprocess
import sys
import types
import warnings
import zipfile

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pickle_scan import ScanUnpickler, decode  # noqa: E402

warnings.filterwarnings("ignore")

try:
    from omegaconf import OmegaConf, DictConfig, ListConfig
except Exception:  # pragma: no cover
    OmegaConf = None
    DictConfig = ListConfig = ()

MAX_REASONS = 20


class Mismatch(Exception):
    pass


# ------------------------------------------------------------------ helpers
def torch_stem(path):
    """Top folder name torch.save uses: file name without its last extension
    (same rule as caffe2/serialize/inline_container.cc basename())."""
    name = os.path.basename(path)
    i = name.rfind(".")
    return name if i < 0 else name[:i]


def _untyped(storage):
    return storage._storage if isinstance(storage, torch.storage.TypedStorage) else storage


def _storage_bytes_tensor(storage):
    """A uint8 tensor over every byte of the storage (no copy)."""
    u = _untyped(storage)
    n = u.nbytes()
    return torch.empty(0, dtype=torch.uint8).set_(u, 0, (n,), (1,))


def _storage_key(storage):
    """Identity of the underlying StorageImpl (works for empty storages too)."""
    return _untyped(storage)._cdata


def _fbits(x):
    return struct.pack("<d", x).hex()


def _short(x, n=80):
    r = repr(x)
    return r if len(r) <= n else r[: n - 3] + "..."


def _is_identity_tracked(x):
    if x is None or isinstance(x, (bool, int, float, complex, str, bytes, type,
                                   types.FunctionType, types.BuiltinFunctionType,
                                   torch.dtype, torch.device)):
        return False
    if isinstance(x, tuple) and len(x) == 0:
        return False
    if isinstance(x, (frozenset,)) and len(x) == 0:
        return False
    return True


# ------------------------------------------------------------------ object comparison
class Comparer:
    def __init__(self):
        self.reasons = []
        self.seen_a = {}   # id -> first path
        self.seen_b = {}
        self.keep = []     # keep objects alive so ids stay unique
        self.tensors_a = []  # (path, storage key) in traversal order
        self.tensors_b = []

    def fail(self, path, msg):
        self.reasons.append(f"at {path or '<root>'}: {msg}")
        if len(self.reasons) >= MAX_REASONS:
            raise Mismatch()

    # -- entry
    def run(self, a, b):
        try:
            self.cmp(a, b, "")
            self.check_sharing()
        except Mismatch:
            pass
        return self.reasons

    def cmp(self, a, b, path):
        if type(a) is not type(b):
            return self.fail(path, f"type {type(a).__module__}.{type(a).__qualname__} in IN vs "
                                   f"{type(b).__module__}.{type(b).__qualname__} in OUT "
                                   f"(IN={_short(a)}, OUT={_short(b)})")
        if _is_identity_tracked(a):
            pa = self.seen_a.get(id(a))
            pb = self.seen_b.get(id(b))
            if pa is not None or pb is not None:
                if pa != pb:
                    if pa is None:
                        self.fail(path, f"OUT object is the same object as OUT {pb or '<root>'} "
                                        f"but in IN they are distinct objects")
                    elif pb is None:
                        self.fail(path, f"IN object is the same object as IN {pa or '<root>'} "
                                        f"but OUT has a distinct copy here")
                    else:
                        self.fail(path, f"identity differs: IN is same as IN {pa or '<root>'}, "
                                        f"OUT is same as OUT {pb or '<root>'}")
                return
            self.seen_a[id(a)] = path
            self.seen_b[id(b)] = path
            self.keep.append((a, b))
        self.cmp_value(a, b, path)

    def cmp_value(self, a, b, path):
        t = type(a)
        if a is None:
            return
        if t is bool or t is int:
            if a != b:
                self.fail(path, f"{t.__name__} {a!r} vs {b!r}")
            return
        if t is float:
            if _fbits(a) != _fbits(b):
                self.fail(path, f"float {a!r} (bits {_fbits(a)}) vs {b!r} (bits {_fbits(b)})")
            return
        if t is complex:
            if _fbits(a.real) != _fbits(b.real) or _fbits(a.imag) != _fbits(b.imag):
                self.fail(path, f"complex {a!r} vs {b!r}")
            return
        if t in (str, bytes, bytearray):
            if a != b:
                self.fail(path, f"{t.__name__} {_short(a)} vs {_short(b)}")
            return
        if isinstance(a, torch.Tensor):
            return self.cmp_tensor(a, b, path)
        if isinstance(a, (torch.storage.TypedStorage, torch.storage.UntypedStorage)):
            return self.cmp_storage(a, b, path, record=True)
        if isinstance(a, (torch.dtype, torch.device)):
            if a != b:
                self.fail(path, f"{a!r} vs {b!r}")
            return
        if isinstance(a, (type, types.FunctionType, types.BuiltinFunctionType, types.ModuleType)):
            if a is not b:
                self.fail(path, f"{a!r} vs {b!r}")
            return
        if DictConfig and isinstance(a, (DictConfig, ListConfig)):
            self.cmp_omegaconf(a, b, path)
            return self.cmp_attrs(a, b, path)
        if isinstance(a, dict):
            return self.cmp_dict(a, b, path)
        if isinstance(a, (list, tuple)):
            return self.cmp_seq(a, b, path)
        if isinstance(a, (set, frozenset)):
            if len(a) != len(b) or a != b:
                self.fail(path, f"{t.__name__} {_short(a)} vs {_short(b)}")
            self.cmp_attrs(a, b, path)
            return
        if hasattr(a, "__dict__") or hasattr(type(a), "__slots__"):
            return self.cmp_attrs(a, b, path)
        try:
            eq = a == b
            eq = bool(eq)
        except Exception:
            eq = repr(a) == repr(b)
        if not eq:
            self.fail(path, f"{t.__name__} {_short(a)} vs {_short(b)}")

    def cmp_attrs(self, a, b, path):
        da = getattr(a, "__dict__", None)
        db = getattr(b, "__dict__", None)
        if (da is None) != (db is None):
            return self.fail(path, "one side has a __dict__, the other not")
        if da is not None:
            # compare the attribute dict as a plain mapping (order-insensitive for attrs)
            ka, kb = set(da), set(db)
            if ka != kb:
                self.fail(path, f"attributes differ: only IN {sorted(ka - kb)}, only OUT {sorted(kb - ka)}")
            for k in sorted(ka & kb, key=str):
                self.cmp(da[k], db[k], f"{path}.{k}")
        for cls in type(a).__mro__:
            for s in getattr(cls, "__slots__", ()) if isinstance(getattr(cls, "__slots__", ()), (tuple, list)) else ():
                if s in ("__dict__", "__weakref__"):
                    continue
                ha, hb = hasattr(a, s), hasattr(b, s)
                if ha != hb:
                    self.fail(path, f"slot {s} set on one side only")
                elif ha:
                    self.cmp(getattr(a, s), getattr(b, s), f"{path}.{s}")

    def cmp_dict(self, a, b, path):
        if isinstance(a, collections.defaultdict):
            if a.default_factory is not b.default_factory:
                self.fail(path, f"defaultdict factory {a.default_factory!r} vs {b.default_factory!r}")
        ka, kb = list(a.keys()), list(b.keys())
        if len(ka) != len(kb):
            self.fail(path, f"dict has {len(ka)} keys in IN, {len(kb)} in OUT; "
                            f"only IN: {_short([k for k in ka if k not in b])}, "
                            f"only OUT: {_short([k for k in kb if k not in a])}")
            return
        for i, (x, y) in enumerate(zip(ka, kb)):
            sub = Comparer()
            sub.cmp_value(x, y, "") if type(x) is type(y) else sub.fail("", "key type")
            if sub.reasons:
                self.fail(path, f"key #{i} differs (key order or value): IN {x!r} vs OUT {y!r}")
                return
        for k in ka:
            self.cmp(a[k], b[k], f"{path}[{k!r}]")
        self.cmp_attrs(a, b, path)

    def cmp_seq(self, a, b, path):
        if len(a) != len(b):
            self.fail(path, f"{type(a).__name__} length {len(a)} vs {len(b)}")
            return
        for i, (x, y) in enumerate(zip(a, b)):
            self.cmp(x, y, f"{path}[{i}]")
        if not isinstance(a, torch.Size):
            self.cmp_attrs(a, b, path)

    def cmp_storage(self, sa, sb, path, record):
        if isinstance(sa, torch.storage.TypedStorage) and sa.dtype != sb.dtype:
            return self.fail(path, f"storage dtype {sa.dtype} vs {sb.dtype}")
        na, nb = _untyped(sa).nbytes(), _untyped(sb).nbytes()
        if na != nb:
            return self.fail(path, f"storage size {na} bytes in IN vs {nb} in OUT")
        if record:
            self.tensors_a.append((path, _storage_key(sa)))
            self.tensors_b.append((path, _storage_key(sb)))
        ba, bb = _storage_bytes_tensor(sa), _storage_bytes_tensor(sb)
        if not torch.equal(ba, bb):
            idx = int((ba != bb).nonzero()[0])
            self.fail(path, f"storage bytes differ (of {na}); first at byte {idx}: "
                            f"IN {int(ba[idx]):#04x} vs OUT {int(bb[idx]):#04x}")

    def cmp_tensor(self, a, b, path):
        for what, fa in (
            ("dtype", lambda t: t.dtype),
            ("layout", lambda t: t.layout),
            ("device", lambda t: t.device),
            ("shape", lambda t: tuple(t.shape)),
            ("requires_grad", lambda t: t.requires_grad),
            ("is_quantized", lambda t: t.is_quantized),
        ):
            va, vb = fa(a), fa(b)
            if va != vb:
                return self.fail(path, f"tensor {what} {va} vs {vb}")
        if a.layout == torch.sparse_coo:
            if a.is_coalesced() != b.is_coalesced():
                self.fail(path, "sparse is_coalesced differs")
            self.cmp(a._indices(), b._indices(), f"{path}._indices()")
            self.cmp(a._values(), b._values(), f"{path}._values()")
        elif a.layout != torch.strided:
            if not torch.equal(a.to_dense(), b.to_dense()):
                self.fail(path, f"{a.layout} tensor contents differ")
        else:
            if a.stride() != b.stride():
                self.fail(path, f"tensor stride {a.stride()} vs {b.stride()}")
            if a.storage_offset() != b.storage_offset():
                self.fail(path, f"tensor storage_offset {a.storage_offset()} vs {b.storage_offset()}")
            if a.is_quantized:
                qa, qb = a.qscheme(), b.qscheme()
                if qa != qb:
                    self.fail(path, f"qscheme {qa} vs {qb}")
                elif qa in (torch.per_tensor_affine, torch.per_tensor_symmetric):
                    if _fbits(a.q_scale()) != _fbits(b.q_scale()) or a.q_zero_point() != b.q_zero_point():
                        self.fail(path, "quantization scale/zero_point differ")
                else:
                    self.cmp(a.q_per_channel_scales(), b.q_per_channel_scales(), f"{path}.q_scales")
                    self.cmp(a.q_per_channel_zero_points(), b.q_per_channel_zero_points(), f"{path}.q_zero_points")
                    if a.q_per_channel_axis() != b.q_per_channel_axis():
                        self.fail(path, "q_per_channel_axis differs")
            self.cmp_storage(a.storage(), b.storage(), path, record=True)
        da, db = getattr(a, "__dict__", {}) or {}, getattr(b, "__dict__", {}) or {}
        if set(da) != set(db):
            self.fail(path, f"tensor python attributes {sorted(da)} vs {sorted(db)}")
        else:
            for k in sorted(da):
                self.cmp(da[k], db[k], f"{path}.{k}")

    def cmp_omegaconf(self, a, b, path):
        try:
            ya, yb = OmegaConf.to_yaml(a), OmegaConf.to_yaml(b)
            if ya != yb:
                d = [x for x in difflib.unified_diff(ya.splitlines(), yb.splitlines(), "IN", "OUT",
                                                     n=0, lineterm="") if not x.startswith("@@")]
                self.fail(path, "OmegaConf.to_yaml differs: " + " | ".join(d[2:12]))
            ca = OmegaConf.to_container(a, resolve=False)
            cb = OmegaConf.to_container(b, resolve=False)
            if ca != cb:
                self.fail(path, "OmegaConf.to_container(resolve=False) differs")
            if OmegaConf.is_struct(a) != OmegaConf.is_struct(b):
                self.fail(path, f"struct flag {OmegaConf.is_struct(a)} vs {OmegaConf.is_struct(b)}")
            if OmegaConf.is_readonly(a) != OmegaConf.is_readonly(b):
                self.fail(path, "readonly flag differs")
            na, nb = _omega_nodes(a), _omega_nodes(b)
            if na != nb:
                diff = [x for x in na if x not in nb][:3] + [x for x in nb if x not in na][:3]
                self.fail(path, f"OmegaConf node flags (missing/interpolation/node type) differ: {diff}")
            ra, rb = _omega_resolved(a), _omega_resolved(b)
            if ra != rb:
                self.fail(path, f"resolved config differs: IN {_short(ra, 200)} vs OUT {_short(rb, 200)}")
        except Mismatch:
            raise
        except Exception as e:  # pragma: no cover
            self.fail(path, f"OmegaConf comparison raised {type(e).__name__}: {e}")

    # -- storage sharing partition (uses the tensors/storages seen, in order)
    def check_sharing(self):
        def groups(items):
            by = collections.OrderedDict()
            for p, k in items:
                by.setdefault(k, []).append(p)
            return sorted(tuple(v) for v in by.values())

        ga, gb = groups(self.tensors_a), groups(self.tensors_b)
        if ga != gb:
            sa = [g for g in ga if g not in gb]
            sb = [g for g in gb if g not in ga]
            self.fail("<storages>", f"storage sharing differs: IN groups not in OUT {_short(sa, 300)}; "
                                    f"OUT groups not in IN {_short(sb, 300)}")


def _omega_nodes(cfg):
    out = []

    def walk(node, p):
        if isinstance(node, DictConfig):
            if node._is_missing() or node._is_none() or node._is_interpolation():
                return
            keys = list(node.keys())
        elif isinstance(node, ListConfig):
            if node._is_missing() or node._is_none() or node._is_interpolation():
                return
            keys = list(range(len(node)))
        else:
            return
        for k in keys:
            child = node._get_node(k)
            out.append((f"{p}.{k}", type(child).__name__, OmegaConf.is_missing(node, k),
                        OmegaConf.is_interpolation(node, k), child._get_flag("readonly"),
                        child._get_flag("struct")))
            walk(child, f"{p}.{k}")

    walk(cfg, "")
    return out


def _omega_resolved(cfg):
    try:
        return ("ok", OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False))
    except Exception as e:
        return ("error", type(e).__name__, str(e))


def compare_objects(a, b):
    return Comparer().run(a, b)


# ------------------------------------------------------------------ file-level checks
def _storage_itemsize(cls):
    if getattr(cls, "_gmodule", None) != "torch":
        return None
    real = getattr(torch, cls._gname, None)
    try:
        return torch.empty((), dtype=real.dtype).element_size()
    except Exception:
        return None


def check_layout(out_path):
    """The file-format contract on OUT. Returns a list of failure strings."""
    r = []
    try:
        z = zipfile.ZipFile(out_path)
    except Exception as e:
        return [f"OUT is not a readable zip: {e}"]
    with z, open(out_path, "rb") as raw:
        try:
            bad = z.testzip()
        except Exception as e:
            bad = f"<exception {e}>"
        if bad is not None:
            r.append(f"zip CRC/read check failed on {bad}")
        infos = z.infolist()
        names = [i.filename for i in infos]
        stem = torch_stem(out_path)
        tops = sorted({n.split("/", 1)[0] for n in names})
        if tops != [stem]:
            r.append(f"top folder(s) {tops}, expected exactly [{stem!r}] (OUT's stem)")
        if len(set(names)) != len(names):
            r.append("duplicate entry names in zip")
        compressed, misaligned = [], []
        for i in infos:
            if i.compress_type != zipfile.ZIP_STORED:
                compressed.append(f"{i.filename} (type {i.compress_type})")
            raw.seek(i.header_offset)
            h = raw.read(30)
            if len(h) != 30 or h[:4] != b"PK\x03\x04":
                r.append(f"{i.filename}: no local file header at offset {i.header_offset}")
                continue
            flags, _meth, _t, _d, crc, csize, usize, nlen, xlen = struct.unpack("<HHHHIIIHH", h[6:30])
            if not flags & 0x08 and crc != i.CRC:
                r.append(f"{i.filename}: local header CRC {crc:#x} != central directory {i.CRC:#x}")
            if not flags & 0x08 and 0xFFFFFFFF not in (csize, usize) and \
                    (csize, usize) != (i.compress_size, i.file_size):
                r.append(f"{i.filename}: local header sizes {(csize, usize)} != central directory "
                         f"{(i.compress_size, i.file_size)}")
            lname = raw.read(nlen)
            if lname != i.filename.encode("utf-8") and lname != i.filename.encode("cp437", "replace"):
                r.append(f"{i.filename}: local header name {lname!r} differs from central directory")
            off = i.header_offset + 30 + nlen + xlen
            if off % 64:
                misaligned.append(f"{i.filename} at {off}")
        if compressed:
            r.append(f"{len(compressed)} of {len(infos)} entries not stored (compress_type != 0): "
                     f"{', '.join(compressed[:4])}{' ...' if len(compressed) > 4 else ''}")
        if misaligned:
            r.append(f"{len(misaligned)} of {len(infos)} entries have data offsets that are not a "
                     f"multiple of 64: {', '.join(misaligned[:4])}{' ...' if len(misaligned) > 4 else ''}")
        rel = {n.split("/", 1)[1] if "/" in n else n: n for n in names}
        for need in ("data.pkl", "version", "byteorder"):
            if need not in rel:
                r.append(f"record {stem}/{need} missing")
        if "byteorder" in rel and z.read(rel["byteorder"]) != b"little":
            r.append(f"byteorder record is {z.read(rel['byteorder'])!r}, expected b'little'")
        if "version" in rel and z.read(rel["version"]) != b"3\n":
            r.append(f"version record is {z.read(rel['version'])!r}, expected b'3\\n'")
        data_keys = [k[len("data/"):] for k in rel if k.startswith("data/")]
        n = len(data_keys)
        if sorted(data_keys) != sorted(str(i) for i in range(n)):
            r.append(f"data/ records are {sorted(data_keys)[:10]}..., expected exactly 0..{n - 1}")
        extra = sorted(k for k in rel if k not in ("data.pkl", "version", "byteorder")
                       and not k.startswith("data/"))
        if extra:
            r.append(f"unexpected records {extra}")
        if "data.pkl" in rel:
            try:
                u = ScanUnpickler(io.BytesIO(z.read(rel["data.pkl"])))
                u.load()
                order = []
                sizes = {}
                for pid in u.pids:
                    if not isinstance(pid, tuple) or not pid or decode(pid[0]) != "storage":
                        r.append(f"unexpected persistent id {pid!r}")
                        continue
                    key = decode(pid[2])
                    if key not in order:
                        order.append(key)
                        sizes[key] = (pid[1], pid[4])
                if order != [str(i) for i in range(len(order))]:
                    r.append(f"storage keys not numbered 0..n-1 in order of first reference: "
                             f"{order[:12]}")
                if sorted(order) != sorted(data_keys):
                    r.append(f"storages referenced in data.pkl ({len(order)}) != data/ records "
                             f"({n}): unreferenced or missing storages")
                for key, (cls, numel) in sizes.items():
                    isz = _storage_itemsize(cls)
                    name = f"data/{key}"
                    if isz is not None and name in rel and isinstance(numel, int):
                        got = z.getinfo(rel[name]).file_size
                        if got != numel * isz:
                            r.append(f"record {name} is {got} bytes, pickle says {numel} x {isz}")
            except Exception as e:
                r.append(f"data.pkl could not be scanned: {type(e).__name__}: {e}")
    return r


# ------------------------------------------------------------------ libzip, a second reader
# The suites set this to tests/tools/zipcheck (their --zipcheck); compare()
# then reads every OUT with libzip too.  Unset (the selftests, test_bigrss),
# libzip_check() checks nothing.
ZIPCHECK = None
ZIPCHECK_TIMEOUT = 600


def use_zipcheck(binary):
    global ZIPCHECK
    ZIPCHECK = os.path.abspath(binary)


def _zipcheck_name(esc):
    return re.sub(rb"\\x([0-9a-f]{2})", lambda m: bytes([int(m.group(1), 16)]), esc)


def libzip_check(path, binary=None):
    """OUT read by libzip (zipcheck: ZIP_CHECKCONS, every record read to its
    end, so CRC-32 and header consistency are checked by a reader that shares
    no code with ckprep), and libzip's list of records (name, size, CRC)
    equal to Python's zipfile's.  ckprep writes only zip files, legacy inputs
    included, so a non-zip OUT is a failure.  Returns failure strings."""
    binary = binary or ZIPCHECK
    if binary is None:
        return []
    if not zipfile.is_zipfile(path):
        return [f"libzip: {path} is not a zip file (ckprep writes only zip)"]
    try:
        p = subprocess.run([binary, path], capture_output=True, stdin=subprocess.DEVNULL,
                           timeout=ZIPCHECK_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as e:
        return [f"libzip: zipcheck could not run: {e}"]
    if p.returncode != 0:
        err = p.stderr.decode("utf-8", "replace").strip()[-300:]
        return [f"libzip rejects OUT (zipcheck exit {p.returncode}): {err}"]
    got = []
    for line in p.stdout.splitlines():
        size, crc, name = line.split(b" ", 2)
        got.append((_zipcheck_name(name), int(size), int(crc, 16)))
    with zipfile.ZipFile(path) as z:
        want = [(i.orig_filename.encode("utf-8" if i.flag_bits & 0x800 else "cp437"),
                 i.file_size, i.CRC) for i in z.infolist()]
    if got != want:
        d = next((k for k in range(min(len(got), len(want))) if got[k] != want[k]),
                 min(len(got), len(want)))
        return [f"libzip and zipfile disagree: {len(got)} vs {len(want)} records, first difference "
                f"at record {d}: libzip {got[d] if d < len(got) else None} zipfile "
                f"{want[d] if d < len(want) else None}"]
    return []


def _data_pkl(path):
    with zipfile.ZipFile(path) as z:
        c = [n for n in z.namelist() if n.count("/") == 1 and n.endswith("/data.pkl")]
        if len(c) != 1:
            raise ValueError(f"{path}: expected one */data.pkl, found {c}")
        return z.read(c[0])


def _load(path, weights_only=False):
    return torch.load(path, map_location="cpu", weights_only=weights_only)


def compare(in_path, out_path, weights_only_too=False, byte_identical=False, check_layout_too=True):
    reasons = []
    if check_layout_too:
        reasons += [f"layout: {x}" for x in check_layout(out_path)]
    reasons += libzip_check(out_path)
    try:
        a = _load(in_path)
    except Exception as e:
        return reasons + [f"IN does not load: {type(e).__name__}: {e}"]
    try:
        b = _load(out_path)
    except Exception as e:
        return reasons + [f"OUT does not load with torch.load: {type(e).__name__}: {e}"]
    reasons += compare_objects(a, b)
    del a, b
    if weights_only_too:
        try:
            a = _load(in_path, weights_only=True)
        except Exception as e:
            reasons.append(f"IN does not load with weights_only=True (flag wrong?): {e}")
        else:
            try:
                b = _load(out_path, weights_only=True)
            except Exception as e:
                reasons.append(f"OUT does not load with weights_only=True: {str(e)[-200:]}")
            else:
                reasons += [f"weights_only: {x}" for x in compare_objects(a, b)]
    if byte_identical:
        try:
            pa, pb = _data_pkl(in_path), _data_pkl(out_path)
            if pa != pb:
                i = next((k for k in range(min(len(pa), len(pb))) if pa[k] != pb[k]), min(len(pa), len(pb)))
                reasons.append(f"data.pkl not byte-identical: IN {len(pa)} bytes, OUT {len(pb)} bytes, "
                               f"first difference at offset {i}: IN {pa[i:i + 16]!r} OUT {pb[i:i + 16]!r}")
        except Exception as e:
            reasons.append(f"byte-identical check failed: {e}")
    return reasons


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("inp", metavar="IN")
    ap.add_argument("out", metavar="OUT")
    ap.add_argument("--weights-only-too", action="store_true")
    ap.add_argument("--byte-identical", action="store_true")
    ap.add_argument("--no-layout", action="store_true", help="skip the zip layout checks on OUT")
    ap.add_argument("--zipcheck", help="tests/tools/zipcheck: read OUT with libzip too")
    args = ap.parse_args(argv)
    if args.zipcheck:
        use_zipcheck(args.zipcheck)
    reasons = compare(args.inp, args.out, args.weights_only_too, args.byte_identical,
                      check_layout_too=not args.no_layout)
    if reasons:
        for x in reasons:
            print(f"DIFF: {x}", file=sys.stderr)
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
