#!/usr/bin/python3
"""numpy values in a checkpoint ([security] allow_numpy): a Lightning
checkpoint holding numpy arrays, scalars and dtypes in its hyper-parameters
and callback state, saved by torch.save at protocols 2 (torch's default),
3, 4 and 5, goes through `ckprep run` with a plugin chain, and torch.load
of the output -- in a throwaway child, weights_only=False: it executes the
pickle -- gives equal numpy values (type, dtype, shape, memory order, every
byte) beside the chain's edits; an empty chain keeps data.pkl
byte-identical (protocol 2); the default (no allow_numpy) refuses them with
today's message; inspect shows them; numpy 2's numpy._core names (hand
built from numpy 1 bytes with the same structure: numpy 2 is not
installed, so no torch.load of them here) pass and are kept as they are.

usage: test_numpy.py --ckprep PATH --zipcheck PATH [--examples DIR] [--keep]
    [-k SUBSTR] [-v]
(or run_all.py for every file; helpers and fixtures in plugtest.py)
"""
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import torch

import plugtest
from plugtest import E, check, ini, test

ALLOW = ("security", {"allow_numpy": "yes"})

# Runs in a child: loads A (the input) and B (the output), applies the
# expected edit to A, and compares the two trees, numpy values exactly.
COMPARE = r"""
import sys, numpy as np, torch
kw = {"weights_only": False} if "weights_only" in torch.load.__code__.co_varnames else {}
a = torch.load(sys.argv[1], **kw)
b = torch.load(sys.argv[2], **kw)
exec(sys.argv[3])          # the edit: a statement on `a`
def same(x, y, path):
    if type(x) is not type(y):
        raise SystemExit(f"{path}: {type(y).__name__}, want {type(x).__name__}")
    if isinstance(x, dict):
        if list(x) != list(y):
            raise SystemExit(f"{path}: keys {list(y)}, want {list(x)}")
        for k in x:
            same(x[k], y[k], f"{path}/{k}")
    elif isinstance(x, (list, tuple)):
        if len(x) != len(y):
            raise SystemExit(f"{path}: {len(y)} items, want {len(x)}")
        for i, (p, q) in enumerate(zip(x, y)):
            same(p, q, f"{path}[{i}]")
    elif isinstance(x, np.ndarray):
        if (x.dtype, x.shape, x.flags.f_contiguous, x.flags.c_contiguous,
                x.tobytes("A")) != (y.dtype, y.shape, y.flags.f_contiguous,
                                    y.flags.c_contiguous, y.tobytes("A")):
            raise SystemExit(f"{path}: {y.dtype} {y.shape} differs from {x.dtype} {x.shape}")
    elif isinstance(x, np.generic):
        if x.dtype != y.dtype or x.tobytes() != y.tobytes():
            raise SystemExit(f"{path}: {y!r} ({y.dtype}), want {x!r} ({x.dtype})")
    elif isinstance(x, np.dtype):
        if x != y or x.str != y.str or x.descr != y.descr:
            raise SystemExit(f"{path}: dtype {y!r}, want {x!r}")
    elif isinstance(x, torch.Tensor):
        if x.dtype != y.dtype or not torch.equal(x, y):
            raise SystemExit(f"{path}: tensor differs")
    elif x != y:
        raise SystemExit(f"{path}: {y!r}, want {x!r}")
same(a, b, "")
n = [0]
def count(x):
    if isinstance(x, (np.ndarray, np.generic, np.dtype)):
        n[0] += 1
    elif isinstance(x, dict):
        for v in x.values():
            count(v)
    elif isinstance(x, (list, tuple)):
        for v in x:
            count(v)
count(b)
shared = b["hyper_parameters"]["mean"] is b["callbacks"]["Norm"]["mean"]
print(n[0], shared)
"""

REC = np.dtype([("a", "<f4"), ("b", "<i8", (2,))])
NESTED = np.dtype([("a", "<f4"), ("b", [("c", "u1"), ("d", ">U1")])],
                  align=True)


def lightning_numpy():
    """A Lightning-shaped checkpoint with numpy in hyper-parameters and
    callback state; 'mean' is one array under two keys."""
    torch.manual_seed(3)
    lin = torch.nn.Linear(3, 2)
    mean = np.linspace(0, 1, 5)
    hp = {
        "lr": np.float32(0.5), "steps": np.int64(7), "flag": np.bool_(True),
        "mean": mean, "dtype": np.dtype("<U2"),
        "fortran": np.arange(6, dtype=">i4").reshape(2, 3, order="F"),
        "records": np.array([(1.5, [2, 3])], dtype=REC),
        "nested": np.zeros(2, dtype=NESTED), "empty": np.zeros(0),
        "zero_d": np.array(2.5), "names": np.array(["ab", "c"]),
        "raw": np.array([b"xyz"]), "half": np.arange(4, dtype="f2"),
        "when": np.datetime64("2020-01-02", "D"),
        "delta": np.timedelta64(10, "s"), "c": np.complex128(1 - 2j),
        "strided": np.arange(10.0)[::3],
        "latin": np.frombuffer(bytes(range(256)), dtype="u1"),
    }
    return {
        "epoch": 2, "global_step": 40, "state_dict": lin.state_dict(),
        "hyper_parameters": hp,
        "callbacks": {"Norm": {"mean": mean, "best": np.float64(0.25)},
                      "EarlyStopping": {"wait_count": np.int32(3),
                                        "best_score": torch.tensor(0.1)}},
        "optimizer_states": [torch.optim.SGD(lin.parameters(), lr=0.1).state_dict()],
    }


def count_np(x):
    """numpy values in x, each time it is reached (as the child counts)."""
    if isinstance(x, (np.ndarray, np.generic, np.dtype)):
        return 1
    if isinstance(x, dict):
        return sum(count_np(v) for v in x.values())
    if isinstance(x, (list, tuple)):
        return sum(count_np(v) for v in x)
    return 0


def save(ck, proto, name=None):
    d = E.fresh("np-input")
    p = os.path.join(d, name or f"numpy-p{proto}.ckpt")
    torch.save(ck, p, pickle_protocol=proto)
    return p


def loads_equal(inp, out, edit="pass"):
    """The child's verdict: numpy values counted, and whether 'mean' is
    still one array under its two keys."""
    p = subprocess.run(["/usr/bin/python3", "-c", COMPARE, inp, out, edit],
                       capture_output=True, text=True, timeout=120)
    check(p.returncode == 0, "torch.load of the output differs: " +
          (p.stdout + p.stderr).strip().splitlines()[-1][:400])
    n, shared = p.stdout.split()
    return int(n), shared == "True"


def pkl_of(path):
    with zipfile.ZipFile(path) as z:
        return z.read(next(n for n in z.namelist() if n.endswith("/data.pkl")))


CHAIN = ini(("pipeline", {"chain": "optimizer_strip key_remap"}),
            ("optimizer_strip", {"drop": "optimizer_states"}),
            ("key_remap", {"state": "state_dict", "rename": "weight => w"}),
            ALLOW)
EDIT = ("del a['optimizer_states']; sd = a['state_dict']; "
        "a['state_dict'] = type(sd)((k.replace('weight', 'w'), v) for k, v in sd.items()); "
        "a['state_dict']._metadata = sd._metadata")


@test
def numpy_chain_roundtrip_protocols():
    """protocols 2, 3, 4 and 5 (protocol 5 pickles contiguous arrays as
    _frombuffer over an in-band buffer): optimizer_strip + key_remap with
    allow_numpy = yes; torch.load of the output equals the input with the
    same edit, every numpy value equal, the shared array still shared"""
    ck = lightning_numpy()
    for proto in (2, 3, 4, 5):
        inp = save(ck, proto)
        r = E.ok(CHAIN, inp)
        n, shared = loads_equal(inp, r.out, EDIT)
        check(n == count_np(ck) > 20,
              f"protocol {proto}: {n} numpy values in the output, want {count_np(ck)}")
        check(shared, f"protocol {proto}: 'mean' is no longer one array")
        if proto == 5:
            check(b"_frombuffer" in pkl_of(inp) and b"_frombuffer" in pkl_of(r.out),
                  "protocol 5 input without _frombuffer: the case is not tested")


@test
def numpy_empty_chain_byte_identical():
    """an empty chain over the protocol-2 file (torch.save's default): the
    output's data.pkl is byte-identical to the input's, and loads equal"""
    ck = lightning_numpy()
    inp = save(ck, 2)
    r = E.ok(ini(("pipeline", {"chain": ""}), ALLOW), inp)
    check(pkl_of(r.out) == pkl_of(inp), "data.pkl changed")
    n, _ = loads_equal(inp, r.out)
    check(n == count_np(ck), f"{n} numpy values, want {count_np(ck)}")


@test
def numpy_tree_copy_keeps_identity():
    """tree copy = hyper_parameters/records => callbacks/records: torch.load
    shows one array object under both paths"""
    inp = save(lightning_numpy(), 2)
    r = E.ok(ini(("pipeline", {"chain": "tree"}),
                 ("tree", {"copy": "hyper_parameters/records => callbacks/records"}),
                 ALLOW), inp)
    loads_equal(inp, r.out, "a['callbacks']['records'] = a['hyper_parameters']['records']")
    p = subprocess.run(["/usr/bin/python3", "-c",
                        "import sys, torch; b = torch.load(sys.argv[1]); "
                        "print(b['callbacks']['records'] is b['hyper_parameters']['records'])",
                        r.out], capture_output=True, text=True, timeout=120)
    check(p.stdout.strip() == "True", f"not one object: {p.stdout!r} {p.stderr[-200:]!r}")


@test
def numpy_refused_by_default():
    """without allow_numpy the file is refused as today: exit 1, one line
    naming the numpy global, nothing written; inspect says the same"""
    inp = save(lightning_numpy(), 2)
    E.fails(ini(("pipeline", {"chain": ""})), inp,
            "pickle names global 'numpy.core.multiarray.scalar', which is not allowed")
    E.fails(ini(("pipeline", {"chain": ""}), ("security", {"allow_numpy": "no"})), inp,
            "numpy.core.multiarray.scalar")
    rc, _, err = E.cmd(["inspect", inp])
    check(rc == 1 and "numpy.core.multiarray.scalar" in err, f"inspect: {rc} {err!r}")


@test
def numpy_expect_reference():
    """expect's reference checkpoint opens under the configuration's
    [security], even when [security] comes after [expect] in the file: a
    Lightning checkpoint with numpy hyper-parameters as its own reference
    passes with allow_numpy = yes; without it the configuration is refused
    (exit 2) naming the numpy global and the [expect] line"""
    inp = save(lightning_numpy(), 2, "ref.th")
    text = ini(("pipeline", {"chain": "expect"}),
               ("expect", {"manifest": inp + " state_dict",
                           "state": "state_dict"}))
    r = E.ok(text + "\n" + ini(ALLOW), inp)
    ch = r.rec["plugins"][0]["changes"]
    check(len(ch) == 1 and ch[0].get("verdict") == "pass" and
          ch[0].get("manifest") == inp, f"expect's verdict: {ch}")
    conf = E.conf(text)
    rc, out, err = E.cmd(["run", "-n", "-c", conf, inp])
    check(rc == 2 and "numpy.core.multiarray" in err and
          conf + ":5: [expect]" in err, f"without allow_numpy: {rc} {err!r}")
    # given by --set, the error names the --set
    conf = E.conf(ini(("pipeline", {"chain": "expect"}),
                      ("expect", {"state": "state_dict"})))
    rc, out, err = E.cmd(["run", "-n", "-c", conf, "--set",
                          "expect.manifest=" + inp, inp])
    check(rc == 2 and f"--set 'expect.manifest={inp}'" in err and
          "numpy.core.multiarray" in err, f"--set: {rc} {err!r}")


@test
def numpy_inspect_shows_values():
    """inspect (text and --json) names each top-level numpy value with its
    dtype and shape; --config shows them inside the hyper-parameters;
    inspect and run -n agree"""
    ck = {"a": np.arange(3.0), "b": np.float64(1.5), "c": np.dtype(">f4"),
          "d": np.zeros((2, 3), dtype="U3"), "e": np.int8(-3),
          "hyper_parameters": {"mean": np.arange(2.0), "lr": np.float64(0.5)}}
    inp = save(ck, 2, "top.th")
    conf = E.conf(ini(("pipeline", {"chain": ""}), ALLOW))
    rc, out, err = E.cmd(["inspect", "-c", conf, inp])
    check(rc == 0, f"inspect exit {rc}: {err}")
    want = ("a (ndarray float64 (3,)), b (float64 scalar 1.5), c (dtype >float32), "
            "d (ndarray <U3 (2, 3)), e (int8 scalar -3)")
    check(want in out, f"inspect keys: {out!r}")
    rc, out, err = E.cmd(["inspect", "--json", "-c", conf, inp])
    kinds = {k["key"]: k["kind"] for k in json.loads(out)["keys"]}
    check(kinds["a"] == "ndarray float64 (3,)" and kinds["e"] == "int8 scalar -3",
          f"--json kinds {kinds}")
    rc, out, err = E.cmd(["inspect", "--config", "-c", conf, inp])
    check(rc == 0 and "mean: <ndarray float64 (2,)>" in out and
          "lr: <float64 scalar 0.5>" in out, f"--config: {rc} {out!r} {err!r}")
    rc2, _, _ = E.cmd(["run", "-c", conf, "-n", inp])
    check(rc2 == 0, f"run -n exit {rc2}, inspect 0")


def rezip(src, dst, fn):
    """Copy the zip src to dst with data.pkl changed by fn (stored, as
    torch.save writes; ckprep reads any well-formed zip)."""
    with zipfile.ZipFile(src) as zi, zipfile.ZipFile(dst, "w") as zo:
        for i in zi.infolist():
            b = zi.read(i)
            zo.writestr(i, fn(b) if i.filename.endswith("/data.pkl") else b)


@test
def numpy2_names_kept():
    """numpy 2's numpy._core.multiarray names (data.pkl made from the
    numpy 1 file by renaming the GLOBALs: the structure numpy 2 pickles is
    the same; numpy 2 is not installed, so torch.load cannot check these):
    refused by default, accepted with allow_numpy, data.pkl kept byte for
    byte by an empty chain, and after key_remap the output, renamed back,
    loads equal to the input with the same edit"""
    ck = lightning_numpy()
    ck.pop("optimizer_states")
    v1 = save(ck, 2, "np1.ckpt")
    v2 = os.path.join(os.path.dirname(v1), "np2.ckpt")
    to2 = lambda b: b.replace(b"cnumpy.core.multiarray\n", b"cnumpy._core.multiarray\n")
    to1 = lambda b: b.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
    rezip(v1, v2, to2)
    check(b"numpy._core.multiarray" in pkl_of(v2) and
          b"numpy.core.multiarray" not in pkl_of(v2), "the numpy 2 names are not there")
    E.fails(ini(("pipeline", {"chain": ""})), v2,
            "'numpy._core.multiarray.scalar', which is not allowed")
    r = E.ok(ini(("pipeline", {"chain": ""}), ALLOW), v2)
    check(pkl_of(r.out) == pkl_of(v2), "data.pkl changed")
    chain = ini(("pipeline", {"chain": "key_remap"}),
                ("key_remap", {"state": "state_dict", "rename": "weight => w"}), ALLOW)
    r = E.ok(chain, v2)
    back = os.path.join(r.outdir, "back.ckpt")
    rezip(r.out, back, to1)
    edit = EDIT.replace("del a['optimizer_states']; ", "")
    n, shared = loads_equal(v1, back, edit)
    check(n == count_np(ck) and shared, f"{n} numpy values, shared {shared}")


if __name__ == "__main__":
    sys.exit(plugtest.main([__name__]))
