#!/usr/bin/python3
"""head_init: the documented generator (xoshiro256**, per-key streams,
rounding to half and bfloat16), like:/copy(), on_exists, dry runs, and
its `ckprep check` errors.

usage: test_head_init.py --ckprep PATH --zipcheck PATH [--examples DIR] [--keep]
    [-k SUBSTR] [-v]
(or run_all.py for every file; helpers and fixtures in plugtest.py)
"""
import math
import os
import sys

import numpy as np
import torch

import plugtest
from plugtest import (ini, OD, E, HEAD_B, HEAD_W, New, SPEC_ADDS, assert_same, bad_directive_tests,
                      bad_section, chain1, check, check_changes, check_rejects,
                      check_rejects_line, double_to_bf16_bits, load, plugin_changes,
                      reference_values, stats, tensor_bytes, test)


def head_test(adds, inp="ac", state="best_state/model", seed=7, extra=()):
    """Run head_init; check every other tensor is untouched and the new ones
    have the dtype and shape asked for.  Returns (record, output state dict)."""
    items = [("state", state), ("seed", seed)] + [("add", a) for a in adds] + list(extra)
    r = E.ok(chain1("head_init", items), inp)
    ck = load(r.inp)
    sd = ck
    for p in state.split("/"):
        sd = sd[p]
    added = []
    for a in adds:
        key, dt, shape, init = a.split()
        if shape.startswith("like:"):
            shape = tuple(sd[shape[5:]].shape)
        else:
            shape = tuple(int(x) for x in shape.split("x"))
        sd[key] = New(getattr(torch, dt), shape)
        added.append((key, dt, list(shape), a))
    out = load(r.out)
    assert_same(ck, out)
    osd = out
    for p in state.split("/"):
        osd = osd[p]
    check_changes(plugin_changes(r.rec), [("added", k, dt, s, a) for k, dt, s, a in added],
                  "op", "key", "dtype", "shape", "init")
    return r, osd


@test
def head_spec_example():
    """the spec's conditioner head: float16 16x12 normal(0,0.02) and zero bias;
    _metadata untouched, each new tensor on its own storage"""
    r, sd = head_test([a for _, a in SPEC_ADDS])
    w, b = sd[HEAD_W], sd[HEAD_B]
    check(torch.count_nonzero(b).item() == 0, "bias not all zeros")
    mean, std, _, _ = stats(w)
    check(abs(mean) < 0.006 and 0.015 < std < 0.025, f"normal(0,0.02): mean {mean:.5f} std {std:.5f}")
    check(len(torch.unique(w.float())) > 150, "weight values are not random")
    check(sd._metadata == load(r.inp)["best_state"]["model"]._metadata, "_metadata changed")


@test
def head_distributions():
    """normal / uniform / kaiming_uniform / xavier_uniform statistics"""
    adds = ["n.weight float32 256x128 normal(0.5,2)",
            "u.weight float64 128x128 uniform(-3,1)",
            "k.weight float32 64x256 kaiming_uniform",
            "kc.weight float32 32x8x3x3 kaiming_uniform",
            "x.weight float32 64x192 xavier_uniform",
            "bf.weight bfloat16 128x128 normal(0,1)",
            "h.weight float16 128x128 uniform(-0.5,0.5)"]
    r, sd = head_test(adds, inp="misc", state="sd", seed=11)
    errs = []

    def want(cond, msg):
        if not cond:
            errs.append(msg)

    m, s, lo, hi = stats(sd["n.weight"])
    want(abs(m - 0.5) < 0.06 and abs(s - 2) < 0.05, f"normal(0.5,2): mean {m:.4f} std {s:.4f}")
    m, s, lo, hi = stats(sd["u.weight"])
    want(lo >= -3 and hi < 1 and abs(m + 1) < 0.05 and abs(s - 4 / math.sqrt(12)) < 0.03
         and lo < -2.99 and hi > 0.99, f"uniform(-3,1): mean {m:.4f} std {s:.4f} range [{lo}, {hi}]")
    for key, bound in (("k.weight", 1 / math.sqrt(256)), ("kc.weight", 1 / math.sqrt(8 * 9)),
                       ("x.weight", math.sqrt(6 / (64 + 192)))):
        m, s, lo, hi = stats(sd[key])
        want(-bound <= lo and hi <= bound and lo < -0.97 * bound and hi > 0.97 * bound
             and abs(m) < 0.05 * bound and abs(s - bound / math.sqrt(3)) < 0.05 * bound / math.sqrt(3),
             f"{key}: bound {bound:.5f}, got range [{lo:.5f}, {hi:.5f}] mean {m:.5f} std {s:.5f}")
    m, s, lo, hi = stats(sd["bf.weight"])
    want(abs(m) < 0.05 and abs(s - 1) < 0.03, f"bfloat16 normal(0,1): mean {m:.4f} std {s:.4f}")
    m, s, lo, hi = stats(sd["h.weight"])
    want(lo >= -0.5 and hi <= 0.5 and abs(m) < 0.02 and abs(s - 1 / math.sqrt(12)) < 0.01,
         f"float16 uniform(-0.5,0.5): mean {m:.4f} std {s:.4f} range [{lo}, {hi}]")
    check(not errs, "; ".join(errs))


@test
def head_constants_and_copies():
    """ones / const / zeros (also integer dtypes), like:KEY shapes, copy()
    with dtype conversion, copy() of non-contiguous and offset views"""
    adds = ["a float64 3x4 const(2.5)",
            "b bfloat16 like:w ones",
            "c int64 5 const(7)",
            "d int32 2x2 zeros",
            "e float32 like:h16 copy(h16)",
            "f float16 6x4 copy(w)",
            "g float32 4x6 copy(wt)",
            "h float64 10 copy(tail)",
            "i float32 3x4 copy(bf)",
            "j int64 4x6 copy(ints)",
            "k float32 2x12 copy(ints)",
            "l float32 1 const(-1e-3)"]
    r, sd = head_test(adds, inp="misc", state="sd")
    src = load(E.inputs["misc"])["sd"]
    exp = {"a": torch.full((3, 4), 2.5, dtype=torch.float64),
           "b": torch.ones(6, 4, dtype=torch.bfloat16),
           "c": torch.full((5,), 7, dtype=torch.int64),
           "d": torch.zeros(2, 2, dtype=torch.int32),
           "e": src["h16"].float(),
           "f": src["w"].half(),
           "g": src["wt"].contiguous(),
           "h": src["tail"].double(),
           "i": src["bf"].float(),
           "j": src["ints"].clone(),
           "k": src["ints"].float().reshape(2, 12),
           "l": torch.tensor([-1e-3], dtype=torch.float32)}
    bad = [k for k, v in exp.items() if tensor_bytes(v) != tensor_bytes(sd[k])]
    check(not bad, "wrong values: " + ", ".join(f"{k}: got {sd[k].flatten()[:6].tolist()} "
                                                f"expected {exp[k].flatten()[:6].tolist()}" for k in bad))


@test
def head_same_seed_same_bytes():
    """the same seed gives the same bytes (and the same output file); another
    seed gives other values"""
    conf = chain1("head_init", [("seed", 7)] + SPEC_ADDS +
                  [("add", "z.weight bfloat16 8x8 kaiming_uniform"),
                   ("add", "y.weight float64 5 uniform(0,1)")])
    r1, r2 = E.ok(conf, "ac"), E.ok(conf, "ac")
    r3 = E.ok(conf.replace("seed = 7", "seed = 8"), "ac")
    a, b, c = (load(r.out)["best_state"]["model"] for r in (r1, r2, r3))
    for k in (HEAD_W, "z.weight", "y.weight"):
        check(tensor_bytes(a[k]) == tensor_bytes(b[k]), f"{k}: second run with seed 7 differs")
        check(tensor_bytes(a[k]) != tensor_bytes(c[k]), f"{k}: seed 8 gives the same values as seed 7")
    with open(r1.out, "rb") as f1, open(r2.out, "rb") as f2:
        check(f1.read() == f2.read(), "two runs with the same seed wrote different files")


@test
def head_independent_streams():
    """each key has its own stream: adding other keys (before it, of any
    size) does not change a key's values"""
    one = E.ok(chain1("head_init", [("seed", 5), ("add", "k float32 40x30 normal(0,1)")]), "ac")
    two = E.ok(chain1("head_init", [("seed", 5), ("add", "a float32 1000 normal(0,1)"),
                                    ("add", "b float16 3x7 uniform(-1,1)"),
                                    ("add", "k float32 40x30 normal(0,1)")]), "ac")
    a = load(one.out)["best_state"]["model"]["k"]
    b = load(two.out)["best_state"]["model"]["k"]
    check(tensor_bytes(a) == tensor_bytes(b), "values of k changed when other keys were added")


def generator_case(dtype, init, n, a=0.0, b=1.0, fan_in=None, shape=None, key="gen.weight"):
    seed = 0x1234567890abcdef
    spec = {"normal": f"normal({a},{b})", "uniform": f"uniform({a},{b})",
            "kaiming": "kaiming_uniform"}[init]
    shape = shape or (n,)
    line = f"{key} {dtype} {'x'.join(map(str, shape))} {spec}"
    r = E.ok(chain1("head_init", [("state", "sd"), ("seed", seed), ("add", line)]), "misc")
    got = load(r.out)["sd"][key]
    ref = reference_values(seed, key, init, n, a, b, fan_in)
    if dtype == "float64":
        want = ref.view(np.uint64)
        have = got.numpy().view(np.uint64).reshape(-1)
    elif dtype == "float32":
        want = ref.astype(np.float32).view(np.uint32)
        have = got.numpy().view(np.uint32).reshape(-1)
    else:
        # made in float32, then converted by torch's own .to(dtype)
        want = torch.from_numpy(ref.astype(np.float32)).to(getattr(torch, dtype))
        want = want.view(torch.int16).numpy().view(np.uint16)
        have = got.view(torch.int16).numpy().view(np.uint16).reshape(-1)
    diff = np.nonzero(want != have)[0]
    check(len(diff) == 0, f"{line}: {len(diff)} of {n} values differ from the documented generator "
                          f"(first at {diff[:3].tolist()}: got bits {have[diff[:3]].tolist()}, "
                          f"expected {want[diff[:3]].tolist()}, double value {ref[diff[:3]].tolist()})")


@test
def head_generator_float64_float32():
    """values are exactly the documented xoshiro256**/SplitMix64/FNV-1a/
    Box-Muller generator, rounded to float64 / float32"""
    generator_case("float64", "normal", 3000, 0.25, 1.5)
    generator_case("float32", "normal", 3000, 0.0, 0.02)
    generator_case("float64", "uniform", 2000, -2.0, 3.0)
    generator_case("float32", "kaiming", 64 * 32, fan_in=32, shape=(64, 32))


@test
def head_generator_float16_rounding():
    """float16 values are the documented double values rounded to float32,
    then converted to float16 as torch's .half() does (header of
    plugins/head_init.c): a float16 head is exactly the float32 one .half()"""
    generator_case("float16", "normal", 60000, 0.0, 1.0)


@test
def head_generator_bfloat16_rounding():
    """bfloat16 values are the float32 ones converted as torch's
    .to(torch.bfloat16) does"""
    generator_case("bfloat16", "normal", 30000, 0.0, 1.0)


@test
def head_on_exists_error_fails():
    """adding an existing key fails by default, naming it"""
    E.fails(chain1("head_init", [("add", "out_norm.weight float32 6 ones")]), "ac", "out_norm.weight")


@test
def head_on_exists_skip():
    """on_exists = skip: unchanged, reported as skipped"""
    r = E.ok(chain1("head_init", [("add", "out_norm.weight float32 6 ones"),
                                  ("on_exists", "skip")]), "ac")
    assert_same(load(r.inp), load(r.out))
    check_changes(plugin_changes(r.rec), [("skipped", "out_norm.weight")], "op", "key")


@test
def head_on_exists_replace():
    """on_exists = replace: a new tensor in place of the old; tied keys keep
    sharing with each other"""
    r = E.ok(chain1("head_init", [("add", "out.weight float32 8x6 ones"),
                                  ("on_exists", "replace")]), "ac")
    ck = load(r.inp)
    ck["best_state"]["model"]["out.weight"] = New(torch.float32, (8, 6))
    out = load(r.out)
    assert_same(ck, out)
    check(torch.equal(out["best_state"]["model"]["out.weight"], torch.ones(8, 6)), "not ones")
    check_changes(plugin_changes(r.rec), [("replaced", "out.weight", "float32")], "op", "key", "dtype")


@test
def head_lightning_state():
    """adding to a Lightning state_dict (an OrderedDict with _metadata)"""
    r, sd = head_test(["model.lm.extra.weight float32 like:model.lm.emb.weight xavier_uniform"],
                      inp="pl", state="state_dict", seed=3)
    check(sd._metadata == load(r.inp)["state_dict"]._metadata, "_metadata changed")


@test
def head_like_missing_fails():
    """like: a key that does not exist"""
    E.fails(chain1("head_init", [("add", "n float32 like:nosuch.weight zeros")]), "ac", "nosuch.weight")


@test
def head_copy_missing_fails():
    """copy() of a key that does not exist"""
    E.fails(chain1("head_init", [("add", "n float32 4 copy(nosuch.weight)")]), "ac", "nosuch.weight")


@test
def head_copy_numel_fails():
    """copy() of a tensor with another number of elements"""
    E.fails(chain1("head_init", [("add", "n float32 5x5 copy(out_norm.weight)")]), "ac",
            "out_norm.weight")


@test
def head_kaiming_1d_fails():
    """kaiming_uniform needs two dimensions"""
    E.fails(chain1("head_init", [("add", "n.weight float32 16 kaiming_uniform")]), "ac",
            "n.weight", "kaiming_uniform")


@test
def head_missing_state_fails():
    """state that does not exist"""
    E.fails(chain1("head_init", [("state", "best_state/nosuch"), ("add", "n float32 4 zeros")]),
            "ac", "best_state/nosuch")


@test
def head_dry_run():
    """--dry-run writes nothing and reports the same changes"""
    conf = chain1("head_init", [("seed", 7)] + SPEC_ADDS)
    real, dry = E.ok(conf, "ac"), E.ok(conf, "ac", dry=True)
    check(plugin_changes(dry.rec) == plugin_changes(real.rec),
          f"dry-run changes {plugin_changes(dry.rec)} != {plugin_changes(real.rec)}")


@test
def check_seed_not_a_number():
    check_rejects("[pipeline]\nchain = head_init\n[head_init]\nstate = model\nseed = abc\n", 5, "abc")


BAD_ADDS = [("a float16 16x12", "a float16 16x12"),                      # three words
            ("a float16 16x12 normal(0,0.02) extra", "extra"),          # five words
            ("a float17 16 zeros", "float17"),
            ("a float16 16xx12 zeros", "16xx12"),
            ("a float16 -3 zeros", "-3"),
            ("a float16 16 gaussian(0,1)", "gaussian"),
            ("a float16 16 normal(0)", "normal(0)"),
            ("a float16 16 normal(0,-1)", "normal"),
            ("a float16 16 uniform(0,1", "uniform(0,1"),
            ("a int64 16 normal(0,1)", "int64")]


bad_directive_tests(__name__, "head_init", "add", BAD_ADDS)


@test
def check_bad_on_exists():
    check_rejects_line("head_init", "on_exists = maybe", "maybe")


@test
def check_line_of_bad_add():
    """the error points at the bad add line, not at its section"""
    text, line = bad_section("head_init", ["add = a float16 4 zeros", "add = b float16 16xx12 zeros"])
    check_rejects(text, line, "16xx12")


# ---- the same weights in every dtype; AudioCraft's initialisers -------------

INITS = ["normal(0, 0.02)", "trunc_normal(0.1, 0.5, -0.5, 0.9)", "uniform(-0.3, 0.2)",
         "xavier_uniform", "kaiming_uniform", "gaussian", "gaussian(12)", "uniform",
         "uniform(4)"]


@test
def head_same_weights_every_dtype():
    """one seed and add line, four dtypes (two labelled stages per pair, as
    a chain adding the head to model in float32 and to best_state/model in
    float16 would): float16 and bfloat16 are exactly the float32 head
    converted by torch, float32 the float64 head converted, for every init"""
    for init in INITS:
        conf = ini(("pipeline", {"chain": "head_init:a head_init:b head_init:c head_init:d"}),
                   ("head_init:a", [("state", "sd"), ("seed", 5), ("add", f"h.w float32 64x48 {init}")]),
                   ("head_init:b", [("state", "sd2"), ("seed", 5), ("add", f"h.w fp16 64x48 {init}")]),
                   ("head_init:c", [("state", "sd3"), ("seed", 5), ("add", f"h.w bf16 64x48 {init}")]),
                   ("head_init:d", [("state", "sd4"), ("seed", 5), ("add", f"h.w double 64x48 {init}")]))
        src = os.path.join(E.fresh("dtypes"), "in.th")
        torch.save({"sd": OD(), "sd2": OD(), "sd3": OD(), "sd4": OD()}, src)
        out = load(E.ok(conf, src).out)
        f32, f16, b16, f64 = (out[k]["h.w"] for k in ("sd", "sd2", "sd3", "sd4"))
        check(f16.dtype == torch.float16 and b16.dtype == torch.bfloat16 and
              f64.dtype == torch.float64, f"{init}: dtypes {f16.dtype} {b16.dtype} {f64.dtype}")
        check(torch.equal(f32.half().view(torch.int16), f16.view(torch.int16)),
              f"{init}: float16 head != float32 head .half()")
        check(torch.equal(f32.bfloat16().view(torch.int16), b16.view(torch.int16)),
              f"{init}: bfloat16 head != float32 head .bfloat16()")
        check(torch.equal(f64.float(), f32), f"{init}: float32 head != float64 head .float()")
        check(float(f32.abs().max()) > 0, f"{init}: all zeros")


def _stats_close(name, ours, theirs, lo=None, hi=None):
    """mean and std of ours within 6 standard errors of torch's; ours within
    [lo, hi]"""
    n = ours.numel()
    m1, m2 = float(ours.double().mean()), float(theirs.double().mean())
    s1, s2 = float(ours.double().std()), float(theirs.double().std())
    check(abs(m1 - m2) < 6 * s2 / math.sqrt(n) * math.sqrt(2), f"{name}: mean {m1} vs torch {m2}")
    check(abs(s1 - s2) < 6 * s2 / math.sqrt(2 * n) * math.sqrt(2) + 1e-12,
          f"{name}: std {s1} vs torch {s2}")
    if lo is not None:
        check(float(ours.min()) >= lo and float(ours.max()) <= hi,
              f"{name}: values outside [{lo}, {hi}]: {float(ours.min())} {float(ours.max())}")
        check(float(ours.min()) < lo + (hi - lo) * 0.01 and float(ours.max()) > hi - (hi - lo) * 0.01,
              f"{name}: does not reach near its bounds")


@test
def head_distributions_as_torch():
    """trunc_normal, AudioCraft's gaussian (std 1/sqrt(in), at 3 std, /sqrt(2
    depth)) and uniform (bound sqrt(3) std) against torch's own trunc_normal_
    and uniform_ over 1024x512: mean, std and bounds; and the same line twice
    gives the same bytes"""
    shape = (1024, 512)
    lines = [("t", "trunc_normal(0.5, 2, -1, 3)", lambda t: torch.nn.init.trunc_normal_(t, 0.5, 2, -1, 3), -1, 3),
             ("g", "gaussian", None, None, None),
             ("g8", "gaussian(8)", None, None, None),
             ("u", "uniform", None, None, None),
             ("u3", "uniform(3)", None, None, None)]
    items = [("state", "sd"), ("seed", 11)] + [("add", f"{k} float32 1024x512 {i}") for k, i, *_ in lines]
    src = os.path.join(E.fresh("dist"), "in.th")
    torch.save({"sd": OD()}, src)
    r1, r2 = E.ok(chain1("head_init", items), src), E.ok(chain1("head_init", items), src)
    out, out2 = load(r1.out)["sd"], load(r2.out)["sd"]
    torch.manual_seed(0)
    for key, init, fn, lo, hi in lines:
        ours = out[key]
        check(torch.equal(ours, out2[key]), f"{init}: two runs differ")
        if fn is None:
            depth = int(init[init.index("(") + 1:-1]) if "(" in init else None
            std = 1 / math.sqrt(shape[1]) / (math.sqrt(2 * depth) if depth else 1)
            if init.startswith("gaussian"):
                lo, hi = -3 * std, 3 * std
                fn = lambda t, s=std: torch.nn.init.trunc_normal_(t, 0.0, s, -3 * s, 3 * s)
            else:
                lo, hi = -math.sqrt(3) * std, math.sqrt(3) * std
                fn = lambda t, b=hi: torch.nn.init.uniform_(t, -b, b)
        theirs = fn(torch.empty(shape))
        _stats_close(f"{key} {init}", ours, theirs, lo * (1 + 1e-6), hi * (1 + 1e-6))


def _bits(t):
    """t's elements as integers of its width (floats by their bits), flat."""
    t = t.detach().contiguous().reshape(-1)
    if t.is_floating_point():
        t = t.view({2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()])
    return t


def _torch_exact(sd, exp):
    """every sd[k] is exp[k] bit for bit (dtype, shape, every element)"""
    bad = []
    for k, want in exp.items():
        got = sd[k]
        if got.dtype != want.dtype or got.shape != want.shape:
            bad.append(f"{k}: {got.dtype} {tuple(got.shape)}, expected {want.dtype} {tuple(want.shape)}")
            continue
        diff = torch.nonzero(_bits(got) != _bits(want)).reshape(-1)
        if len(diff) or not torch.equal(_bits(got), _bits(want)):
            i = diff[:3].tolist()
            bad.append(f"{k}: {len(diff)} of {want.numel()} elements differ (at {i}: got "
                       f"{got.reshape(-1)[i].tolist()}, expected {want.reshape(-1)[i].tolist()})")
    check(not bad, "not as torch: " + "; ".join(bad))


@test
def head_const_as_torch_full():
    """const(V) is torch.full(shape, V, dtype) bit for bit: a float V goes
    to float16 / bfloat16 through float32 (rounded twice), an integer V is
    exact in int64 and converted from int64 to a float dtype directly"""
    cases = [("h", "float16", 1.0004882812509095, "1.0004882812509095"),   # 1 + 2^-11 + 2^-40
             ("b", "bfloat16", 1.0039062500009095, "1.0039062500009095"),  # 1 + 2^-8 + 2^-40
             ("hn", "float16", -1.0004882812509095, "-1.0004882812509095"),
             ("f", "float32", 1.0000000596046448 + 2 ** -40, repr(1.0000000596046448 + 2 ** -40)),
             ("d", "float64", 0.1, "0.1"),
             ("i", "int64", 9007199254740993, "9007199254740993"),
             ("in", "int64", -2 ** 63, str(-2 ** 63)),
             ("imax", "int64", 2 ** 63 - 1, str(2 ** 63 - 1)),
             ("i32", "int32", -2 ** 31, str(-2 ** 31)),
             ("fi", "float32", 2 ** 60 + 2 ** 36 + 1, str(2 ** 60 + 2 ** 36 + 1)),
             ("di", "float64", 2 ** 53 + 1, str(2 ** 53 + 1)),
             ("hi", "float16", 2049, "2049"),
             ("bi", "bfloat16", 2 ** 24 + 2 ** 16 + 1, str(2 ** 24 + 2 ** 16 + 1))]
    adds = [f"{k} {dt} 3 const({text})" for k, dt, _, text in cases]
    _, sd = head_test(adds, inp="misc", state="sd")
    _torch_exact(sd, {k: torch.full((3,), v, dtype=getattr(torch, dt)) for k, dt, v, _ in cases})


@test
def head_const_overflow_as_torch_full():
    """const(V) is refused where torch.full(shape, V, dtype) raises (a
    finite V past the float dtype's largest: it would be inf; an int past
    int64), and made where torch makes it: each case asks torch first"""
    cases = [("float16", "65504"), ("float16", "65504.5"), ("float16", "70000"),
             ("float16", "-65505"), ("float16", "inf"), ("float16", "-inf"),
             ("bfloat16", "3.3895313892515355e38"), ("bfloat16", "3.39e38"),
             ("bfloat16", "1000000"), ("float32", "3.4028234663852886e38"),
             ("float32", "3.4028235e38"), ("float64", "1.7e308"),
             ("float64", str(2 ** 70)), ("float32", str(2 ** 63 - 1))]
    refused = made = 0
    for dt, text in cases:
        v = int(text) if text.lstrip("-").isdigit() else float(text)
        try:
            want = torch.full((2,), v, dtype=getattr(torch, dt))
        except (RuntimeError, OverflowError):
            want = None
        if want is None:
            check_rejects_line("head_init", f"add = h {dt} 2 const({text})", "does not fit")
            refused += 1
        else:
            _, sd = head_test([f"h {dt} 2 const({text})"], inp="misc", state="sd")
            _torch_exact(sd, {"h": want})
            made += 1
    check(refused >= 6 and made >= 6, f"torch refused {refused} and made {made} of the cases")


@test
def head_copy_as_torch_to():
    """copy() converts as torch's .to(dtype): float64 to float16 and
    bfloat16 through float32 (randn(2**16) * 0.02, where a single rounding
    differs), int64 beyond 2^53 to int32 (wrapping), float32 and float16
    (no trip through double)"""
    g = torch.Generator().manual_seed(5)
    big = torch.tensor([2 ** 53 + 1, 2 ** 60 + 2 ** 36 + 1, -(2 ** 60 + 2 ** 36 + 1), 2 ** 63 - 1,
                        -2 ** 63, 2 ** 31 + 7, 2 ** 24 + 1, 65519], dtype=torch.int64)
    src = {"r64": torch.randn(2 ** 16, dtype=torch.float64, generator=g) * 0.02, "big": big,
           "i32": torch.tensor([-2 ** 31, 2 ** 31 - 1, 2 ** 24 + 1, 0], dtype=torch.int32)}
    path = os.path.join(E.fresh("copyexact"), "in.th")
    torch.save({"sd": OD(src)}, path)
    n = 2 ** 16
    adds = [f"h float16 {n} copy(r64)", f"b bfloat16 {n} copy(r64)", f"f float32 {n} copy(r64)",
            "bi32 int32 8 copy(big)", "bf32 float32 8 copy(big)", "bf64 float64 8 copy(big)",
            "bf16 bfloat16 8 copy(big)", "bi8 int8 8 copy(big)", "bu8 uint8 8 copy(big)",
            "bb bool 8 copy(big)", "if32 float32 4 copy(i32)", "ii64 int64 4 copy(i32)"]
    items = [("state", "sd"), ("seed", 1)] + [("add", a) for a in adds]
    sd = load(E.ok(chain1("head_init", items), path).out)["sd"]
    r64 = src["r64"]
    once = torch.from_numpy(r64.numpy().astype(np.float16))  # numpy rounds float64 once
    check(not torch.equal(once.view(torch.int16), r64.half().view(torch.int16)),
          "the float64 values do not show torch's double rounding")
    _torch_exact(sd, {"h": r64.to(torch.float16), "b": r64.to(torch.bfloat16), "f": r64.to(torch.float32),
                      "bi32": big.to(torch.int32), "bf32": big.to(torch.float32),
                      "bf64": big.to(torch.float64), "bf16": big.to(torch.bfloat16),
                      "bi8": big.to(torch.int8), "bu8": big.to(torch.uint8), "bb": big.to(torch.bool),
                      "if32": src["i32"].to(torch.float32), "ii64": src["i32"].to(torch.int64)})


if __name__ == "__main__":
    sys.exit(plugtest.main([__name__]))
