#!/usr/bin/python3
"""cast: dtypes changed while streaming, byte for byte as torch's
.to(dtype): every float16 and bfloat16 bit pattern both ways, millions of
float32/float64 values with every edge class, views keeping shape, stride
and offset, tied tensors staying tied, storages split when shared with a
tensor not cast, casts chained, the record, and `ckprep check` errors.

usage: test_cast.py --ckprep PATH --zipcheck PATH [--examples DIR] [--keep]
    [-k SUBSTR] [-v]
(or run_all.py for every file; helpers and fixtures in plugtest.py)
"""
import collections
import os
import sys

import numpy as np
import torch

import plugtest
from plugtest import (E, OD, check, check_changes, check_rejects_line, chain1, ini, load,
                      plugin_changes, test)

FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
INT_OF = {2: torch.int16, 4: torch.int32, 8: torch.int64}


def bits(t):
    """A tensor's elements as integers of its width (NaN payloads kept)."""
    t = t.detach().contiguous()
    return t.view(INT_OF[t.element_size()]) if t.is_floating_point() else t


def same_bits(a, b, what):
    check(a.dtype == b.dtype, f"{what}: dtype {a.dtype}, expected {b.dtype}")
    check(a.shape == b.shape, f"{what}: shape {tuple(a.shape)}, expected {tuple(b.shape)}")
    x, y = bits(a), bits(b)
    bad = (x != y).nonzero()
    if len(bad):
        i = tuple(bad[0].tolist())
        check(False, f"{what}: {len(bad)} elements differ; first at {i}: "
                     f"{hex(int(x[i]) & 0xffffffffffffffff)} expected "
                     f"{hex(int(y[i]) & 0xffffffffffffffff)} (from torch .to)")


def save(obj, name):
    p = os.path.join(E.fresh("in"), name)
    torch.save(obj, p)
    return p


def from_bits(arr, dtype):
    t = torch.from_numpy(arr.copy())
    return t.view(dtype)


# ---- exactness ------------------------------------------------------------

def all16():
    pats = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.int16)
    return from_bits(pats, torch.float16), from_bits(pats, torch.bfloat16)


def f32_values():
    """2^21 random bit patterns and every edge class: zeros, subnormals,
    the float16/bfloat16 halfway points and their neighbours, overflow
    boundaries, infinities, NaNs with payloads."""
    rng = np.random.default_rng(14)
    rand = rng.integers(0, 1 << 32, size=1 << 21, dtype=np.uint64).astype(np.uint32)
    edge = []
    h = np.arange(65536, dtype=np.uint32).astype(np.uint16)
    hf = h.view(np.float16).astype(np.float32).view(np.uint32)
    edge += [hf, hf + 1, hf - 1, hf + (1 << 12), hf + (1 << 12) - 1, hf + (1 << 12) + 1]
    bf = h.astype(np.uint32) << 16
    edge += [bf, bf + 0x8000, bf + 0x7fff, bf + 0x8001, bf + 1]
    edge.append(np.array([0, 0x80000000, 1, 0x807fffff, 0x00800000, 0x7f7fffff, 0x7f800000,
                          0xff800000, 0x7fc00000, 0x7f800001, 0xffc00123, 0x477fe000,
                          0x477fefff, 0x477ff000, 0x33800000, 0x33000000, 0x33000001,
                          0x387fc000, 0x7f7f8000, 0x7f7f7fff], dtype=np.uint32))
    allv = np.concatenate([rand] + [e.astype(np.uint32) for e in edge])
    allv = allv[:len(allv) // 16 * 16]  # whole vectors: see dtype.h on NaN
    return from_bits(allv.view(np.int32), torch.float32)


def f64_values():
    rng = np.random.default_rng(41)
    rand = rng.integers(0, 1 << 63, size=1 << 21, dtype=np.uint64)
    rand ^= rng.integers(0, 2, size=rand.size, dtype=np.uint64) << np.uint64(63)
    # doubles near float16/bfloat16/float32 rounding points: twice-rounding cases
    f = f32_values().numpy()[::7].astype(np.float64)
    fb = f.view(np.uint64)
    near = [fb, fb + 1, fb - 1, fb + (1 << 28), fb + (1 << 28) + 1, fb + (1 << 28) - 1,
            fb + (1 << 29)]
    spec = np.array([0, 1 << 63, 1, 0x7ff0000000000000, 0xfff0000000000000, 0x7ff8000000000000,
                     0x7ff0000000000001, 0x7fefffffffffffff, 0x47efffffe0000000,
                     0x47efffffefffffff, 0x47effffff0000000, 0x3e70000000000000,
                     0x36a0000000000000, 0x369fffffffffffff], dtype=np.uint64)
    allv = np.concatenate([rand] + near + [spec])
    allv = allv[:len(allv) // 16 * 16]
    return from_bits(allv.view(np.int64), torch.float64)


def exact_run(src, name):
    """src tensors cast by ckprep to each other float dtype equal torch's."""
    p = save({"model": OD((f"t{i}", t) for i, t in enumerate(src))}, name)
    for to in FLOATS:
        r = E.ok(chain1("cast", {"state": "model", "to": str(to)[6:]}), p)
        out = load(r.out)["model"]
        for i, t in enumerate(src):
            same_bits(out[f"t{i}"], t.to(to), f"{t.dtype} -> {to}")


@test
def cast_every_16bit_pattern():
    """all 65,536 float16 and bfloat16 bit patterns to each float dtype
    (and so from float32/float64 back through the 16-bit ones)"""
    h, b = all16()
    exact_run([h, b], "all16.th")
    # and every 16-bit value back from float32/float64 exactly
    exact_run([h.float(), b.float(), h.double(), b.double()], "all16wide.th")


@test
def cast_float32_millions():
    """2.4 million float32 values (random bits and every edge class) to
    float16, bfloat16 and float64"""
    exact_run([f32_values()], "f32.th")


@test
def cast_float64_millions():
    """2.6 million float64 values (random bits, values next to every
    rounding point of the narrower types) to float32, float16, bfloat16:
    torch rounds twice through float32, and so does ckprep"""
    exact_run([f64_values()], "f64.th")


# ---- the model --------------------------------------------------------------

def audiocraft_fp32(ck):
    """best_state/model.float(), as a fine-tune starting from it wants."""
    return {k: (v.float() if v.is_floating_point() else v)
            for k, v in ck["best_state"]["model"].items()}


@test
def cast_best_state_to_fp32():
    """AudioCraft's fp16 best_state to float32: every tensor as torch's
    .float(), the rest of the checkpoint untouched, tied tensors still one
    storage, _metadata kept, the record's byte counts"""
    r = E.ok(chain1("cast", {"to": "float32"}), "ac")
    inp, out = load(r.inp), load(r.out)
    sd = out["best_state"]["model"]
    for k, v in audiocraft_fp32(inp).items():
        same_bits(sd[k], v, k)
    check(sd["out.weight"].data_ptr() == sd["emb.0.weight"].data_ptr() ==
          sd["linears.1.weight"].data_ptr(), "tied weights no longer share a storage")
    check(list(sd._metadata) == list(inp["best_state"]["model"]._metadata), "_metadata changed")
    rest_in = {k: v for k, v in inp.items() if k != "best_state"}
    rest_out = {k: v for k, v in out.items() if k != "best_state"}
    plugtest.assert_same(rest_in, rest_out)
    ch = plugin_changes(r.rec)
    exp = [(k, "float16", "float32", v.numel() * 2, v.numel() * 4, False)
           for k, v in inp["best_state"]["model"].items() if v.dtype == torch.float16]
    check_changes(ch, exp, "key", "from", "to", "bytes_before", "bytes_after", "split")


@test
def cast_views_keep_layout():
    """transposed, sliced and offset views of one storage, all cast: one
    storage converted once, each view's shape, stride and offset kept"""
    base = torch.randn(6, 8, dtype=torch.float64)
    sd = OD(w=base, wt=base.t(), mid=base[2:5, 1:7], row=base[3], flat=base.view(-1)[5:40:3])
    p = save({"model": sd}, "views.th")
    r = E.ok(chain1("cast", {"state": "model", "to": "bfloat16"}), p)
    out = load(r.out)["model"]
    ptrs = {out[k].untyped_storage().data_ptr() if hasattr(out[k], "untyped_storage")
            else out[k].storage().data_ptr() for k in sd}
    check(len(ptrs) == 1, f"{len(ptrs)} storages, expected 1")
    for k, v in sd.items():
        same_bits(out[k], v.to(torch.bfloat16), k)
        check(out[k].stride() == v.stride() and out[k].storage_offset() == v.storage_offset(),
              f"{k}: stride {out[k].stride()} offset {out[k].storage_offset()}, expected "
              f"{v.stride()} {v.storage_offset()}")


@test
def cast_split_shared_storage():
    """a storage shared by a tensor cast and one not: two storages, as
    {k: v.half()} would give; the one not cast keeps its dtype and bytes;
    the record says split"""
    w = torch.randn(4, 5)
    p = save({"model": OD(w=w, b=torch.randn(5)), "keep": w[1]}, "split.th")
    r = E.ok(chain1("cast", {"state": "model", "to": "float16"}), p)
    out = load(r.out)
    same_bits(out["model"]["w"], w.half(), "model.w")
    same_bits(out["keep"], w[1], "keep (not cast)")
    check(out["keep"].storage().data_ptr() != out["model"]["w"].storage().data_ptr(),
          "cast and uncast tensors share a storage")
    check_changes(plugin_changes(r.rec), [("w", True), ("b", False)], "key", "split")


@test
def cast_keys_and_from():
    """keys globs and from: only matching keys of the listed dtypes"""
    sd = OD([("enc.w", torch.randn(3)), ("enc.h", torch.randn(3).half()),
             ("dec.w", torch.randn(3)), ("enc.i", torch.arange(3))])
    p = save({"model": sd}, "keys.th")
    r = E.ok(chain1("cast", {"state": "model", "to": "bfloat16", "keys": "enc.*",
                             "from": "float32"}), p)
    out = load(r.out)["model"]
    same_bits(out["enc.w"], sd["enc.w"].bfloat16(), "enc.w")
    for k in ("enc.h", "dec.w", "enc.i"):
        same_bits(out[k], sd[k], k)
    check_changes(plugin_changes(r.rec), [("enc.w",)], "key")


@test
def cast_twice_rounds_twice():
    """cast:a to float16 then cast:b to float32 equals .half().float()
    (each step rounds, as in torch), not a direct copy"""
    x = f32_values()[:1 << 16]
    p = save({"model": {"x": x}}, "twice.th")
    conf = ini(("pipeline", {"chain": "cast:a cast:b"}),
               ("cast:a", {"state": "model", "to": "float16"}),
               ("cast:b", {"state": "model", "to": "float32"}))
    r = E.ok(conf, p)
    same_bits(load(r.out)["model"]["x"], x.half().float(), "x")


@test
def cast_safetensors_dry_run():
    """--dry-run: the record lists the casts, nothing is written"""
    r = E.ok(chain1("cast", {"to": "bfloat16"}), "ac", dry=True)
    check(len(plugin_changes(r.rec)) > 0, "no changes in a dry run's record")


@test
def cast_missing_state_fails():
    """a state dict that is not there fails the job, naming it"""
    E.fails(chain1("cast", {"state": "nope/model", "to": "float16"}), "ac", "nope/model")


@test
def cast_sparse_fails():
    """a sparse tensor among the keys cast: {k: v.to(float16)} casts it,
    ckprep cannot, so the job fails naming it rather than leave it float32
    without a word; kept out by keys, the rest is cast"""
    sd = OD([("dense", torch.randn(3)),
             ("emb.sparse", torch.sparse_coo_tensor(
                 torch.tensor([[0, 2]]), torch.tensor([1.5, 2.5]), (4,)))])
    p = save({"model": sd}, "sparse.th")
    E.fails(chain1("cast", {"state": "model", "to": "float16"}), p,
            "emb.sparse", "_rebuild_sparse_tensor")
    r = E.ok(chain1("cast", {"state": "model", "to": "float16",
                             "keys": "dense"}), p)
    out = load(r.out)["model"]
    same_bits(out["dense"], sd["dense"].half(), "dense")
    check(out["emb.sparse"].layout == torch.sparse_coo and
          torch.equal(out["emb.sparse"].to_dense(), sd["emb.sparse"].to_dense()),
          "the sparse tensor left out changed")


@test
def cast_check_errors():
    """from/to must be float dtypes"""
    check_rejects_line("cast", "from = int8", "int8")
    check_rejects_line("cast", "to = int32", "int32")


if __name__ == "__main__":
    sys.exit(plugtest.main([__name__]))
