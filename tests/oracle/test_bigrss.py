#!/usr/bin/python3
"""Peak-memory test: `ckprep run` on a >= 1 GiB checkpoint must keep its peak RSS
under the limit (default 64 MiB): with an empty chain (a faithful copy), with a
cast of the model to float16 (each tensor equal to torch's .half()), and with
that cast written as safetensors (read back by tests/plugins/stspec.py).  And a
graph's memory stays near what it holds: 300 lists of 33,000 Nones copied in
under twice their items' bytes.

usage: test_bigrss.py --ckprep PATH [--limit-mib 64] [--keep]

The checkpoint is made in a temp dir under /tmp (removed afterwards unless --keep).
ckprep's peak RSS is measured by a small fresh python (no torch) that runs it and
reads getrusage(RUSAGE_CHILDREN).ru_maxrss, so this process's memory does not count;
the floor of that method (same wrapper running /bin/true) is printed too.
Last line printed: "N passed, M failed" (three runs).
"""
import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
warnings.filterwarnings("ignore")

import torch  # noqa: E402

import compare  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(HERE), "plugins"))
import stspec  # noqa: E402

MiB = 1 << 20
WRAPPER = r"""
import json, resource, subprocess, sys
p = subprocess.Popen(sys.argv[1:], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                     stderr=subprocess.PIPE)
try:
    out, err = p.communicate(timeout=float(__import__('os').environ.get('CKPREP_TIMEOUT', '600')))
except subprocess.TimeoutExpired:
    p.kill(); out, err = p.communicate(); p.returncode = -999
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"rc": p.returncode, "maxrss_kib": ru.ru_maxrss,
                  "stdout": out.decode("utf-8", "replace")[-2000:],
                  "stderr": err.decode("utf-8", "replace")[-2000:]}))
"""


def measured_run(cmd, timeout=600):
    env = dict(os.environ, CKPREP_TIMEOUT=str(timeout))
    p = subprocess.run([sys.executable, "-I", "-S", "-c", WRAPPER] + cmd, capture_output=True, env=env)
    if p.returncode != 0:
        raise RuntimeError(f"rss wrapper failed: {p.stderr.decode()[-500:]}")
    return json.loads(p.stdout)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for blk in iter(lambda: f.read(8 * MiB), b""):
            h.update(blk)
    return h.hexdigest()


def make_big(path):
    """~1.03 GiB of tensors, cheap to generate, plus a small config."""
    n = 64 * MiB  # elements
    a = torch.arange(n, dtype=torch.float32)                  # 256 MiB
    obj = {
        "config": {"name": "bigrss", "lr": 1e-4, "layers": [1, 2, 3]},
        "model": {
            "a": a,
            "b": torch.zeros(n, dtype=torch.float32),             # 256 MiB
            "c": torch.arange(n // 2, dtype=torch.float64),       # 256 MiB
            "d": torch.arange(n * 2, dtype=torch.int16),          # 256 MiB (wraps around)
            "e": torch.full((16 * MiB,), 7, dtype=torch.uint8),   # 16 MiB
            "a_view": a[1000:3000].view(40, 50),                  # shares a's storage
            "small": torch.randn(5, 3).half(),
        },
        "step": 12345,
    }
    torch.save(obj, path)
    return obj


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckprep", required=True)
    ap.add_argument("--limit-mib", type=float, default=64.0)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args(argv)
    ckprep = os.path.abspath(args.ckprep)
    torch.manual_seed(0)
    tmp = tempfile.mkdtemp(dir="/tmp", prefix="ckprep-bigrss-")
    reasons = []
    results = []
    rss_mib = None
    t0 = time.time()
    try:
        inp = os.path.join(tmp, "big.pt")
        obj = make_big(inp)
        size = os.path.getsize(inp)
        print(f"# input {size / MiB:.1f} MiB written in {time.time() - t0:.1f}s", flush=True)
        if size < 1024 * MiB:
            reasons.append(f"test input only {size} bytes (< 1 GiB)")
        conf = os.path.join(tmp, "empty.ini")
        with open(conf, "w") as f:
            f.write("[pipeline]\nchain =\n")
        outd = os.path.join(tmp, "out")
        os.makedirs(outd)
        out = os.path.join(outd, "big-out.pt")
        before = sha256(inp)
        base = measured_run(["/bin/true"])
        t1 = time.time()
        res = measured_run([ckprep, "run", "-c", conf, "-o", out, inp])
        rss_mib = res["maxrss_kib"] / 1024
        print(f"# ckprep: exit {res['rc']}, {time.time() - t1:.1f}s, peak RSS {rss_mib:.1f} MiB "
              f"(limit {args.limit_mib:g} MiB; measuring floor /bin/true = "
              f"{base['maxrss_kib'] / 1024:.1f} MiB)", flush=True)
        if res["rc"] != 0:
            reasons.append(f"exit code {res['rc']}, expected 0; stderr: {res['stderr'].strip()[-300:]}")
        else:
            if rss_mib >= args.limit_mib:
                reasons.append(f"peak RSS {rss_mib:.1f} MiB >= {args.limit_mib:g} MiB")
            try:
                if not isinstance(json.loads(res["stdout"]), dict):
                    reasons.append("stdout is not a JSON object")
            except Exception as e:
                reasons.append(f"stdout is not JSON ({e}): {res['stdout'][-200:]}")
            if sha256(inp) != before:
                reasons.append("input file changed")
            left = sorted(set(os.listdir(outd)) - {"big-out.pt"})
            if left:
                reasons.append(f"stray files next to OUT: {left}")
            if os.path.exists(out):
                loaded = torch.load(out, map_location="cpu")
                for k in ("a", "b", "c", "d", "e", "a_view", "small"):
                    x, y = obj["model"][k], loaded["model"][k]
                    if x.dtype != y.dtype or x.shape != y.shape or not torch.equal(x, y):
                        reasons.append(f"tensor model.{k} differs after round trip")
                del loaded
                reasons += compare.compare(inp, out, byte_identical=True)
            else:
                reasons.append("OUT does not exist")
        results.append(("copy", reasons))
        reasons = []
        for fmt in ("torch", "safetensors"):
            reasons = cast_run(ckprep, tmp, inp, obj, fmt, args.limit_mib)
            results.append((f"cast-{fmt}", reasons))
        reasons = []
        results.append(("lists", lists_run(ckprep, tmp, conf)))
    except Exception as e:
        reasons.append(f"oracle exception {type(e).__name__}: {e}")
    finally:
        if args.keep:
            print(f"# kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if reasons:
        results.append(("setup", reasons))
    failed = 0
    for name, rs in results:
        for r in rs:
            print(f"FAIL bigrss {name}: {r}")
        failed += bool(rs)
    rss = "n/a" if rss_mib is None else f"{rss_mib:.1f} MiB"
    print(f"# bigrss: copy peak RSS {rss}; total {time.time() - t0:.1f}s")
    print(f"{len(results) - failed} passed, {failed} failed")
    return 1 if failed or not results else 0


def lists_run(ckprep, tmp, conf):
    """300 lists of 33,000 Nones (264 KiB of items each, a 10 MB pickle):
    the graph is their items and a little more.  Rounding each list's
    items up to a 2 MiB huge page took 634 MB here; the limit is twice
    the items, and the output loads equal."""
    inp = os.path.join(tmp, "lists.pt")
    obj = {"lists": [[None] * 33000 for _ in range(300)]}
    torch.save(obj, inp)
    items = 300 * 33000 * 8 / MiB
    out = os.path.join(tmp, "out", "lists-out.pt")
    t1 = time.time()
    res = measured_run([ckprep, "run", "-c", conf, "-o", out, inp])
    rss = res["maxrss_kib"] / 1024
    print(f"# ckprep lists: exit {res['rc']}, {time.time() - t1:.1f}s, peak RSS "
          f"{rss:.1f} MiB (limit {2 * items:.0f} MiB: twice the lists' items)",
          flush=True)
    if res["rc"] != 0:
        return [f"exit code {res['rc']}; stderr: {res['stderr'].strip()[-300:]}"]
    reasons = []
    if rss >= 2 * items:
        reasons.append(f"peak RSS {rss:.1f} MiB >= {2 * items:.0f} MiB")
    if torch.load(out, map_location="cpu") != obj:
        reasons.append("the lists differ after the round trip")
    os.unlink(out)
    return reasons


def cast_run(ckprep, tmp, inp, obj, fmt, limit):
    """The model cast to float16 (written as fmt): peak RSS and values."""
    reasons = []
    conf = os.path.join(tmp, f"cast-{fmt}.ini")
    with open(conf, "w") as f:
        f.write("[pipeline]\nchain = cast\n[cast]\nstate = model\nto = float16\n"
                f"[output]\nformat = {fmt}\nstate = model\n")
    out = os.path.join(tmp, "out", "cast." + ("pt" if fmt == "torch" else "safetensors"))
    t1 = time.time()
    res = measured_run([ckprep, "run", "-c", conf, "-o", out, inp])
    rss = res["maxrss_kib"] / 1024
    print(f"# ckprep cast -> {fmt}: exit {res['rc']}, {time.time() - t1:.1f}s, peak RSS "
          f"{rss:.1f} MiB (limit {limit:g} MiB)", flush=True)
    if res["rc"] != 0:
        return [f"exit code {res['rc']}; stderr: {res['stderr'].strip()[-300:]}"]
    if rss >= limit:
        reasons.append(f"peak RSS {rss:.1f} MiB >= {limit:g} MiB")
    want = {k: (v.half() if v.is_floating_point() else v) for k, v in obj["model"].items()}
    if fmt == "torch":
        got = torch.load(out, map_location="cpu")["model"]
    else:
        meta, arrs, hdr = stspec.read(out)
        got = {k: stspec.to_torch(k, a, hdr) for k, a in arrs.items()}
    for k, v in want.items():
        g = got.get(k)
        if g is None or g.dtype != v.dtype or g.shape != v.shape or not torch.equal(
                g.contiguous().view(-1).view(torch.uint8), v.contiguous().view(-1).view(torch.uint8)):
            reasons.append(f"{fmt}: model.{k} differs from torch's .half()")
    os.unlink(out)
    return reasons


if __name__ == "__main__":
    sys.exit(main())
