#!/usr/bin/python3
"""The ckprep benchmark (`make bench`) and the >4 GiB check (`make test-large`).

usage: run_bench.py --ckprep BIN [--dir DIR] [--results FILE]   benchmark
       run_bench.py --ckprep BIN [--dir DIR] --test-large        zip64 check

The benchmark runs three ways on the same AudioCraft-shaped checkpoint
(bench/make_bench.py, about 3 GiB), alternating A B C for BENCH_ROUNDS rounds
(default 3):
  A  the Python pattern: torch.load, set cfg.optim.lr, drop optimizer and
     model, drop linears.* and rename emb.* in best_state['model'],
     torch.save, fsync of the output
  B  ckprep run -c bench/bench.ini (the same edit; fsync, rename, fsync dir)
  C  cp of B's output, then sync of the copy: the floor, writing B's bytes
     durably; B's output is read once first (untimed), so cp finds it in the
     page cache as B found its input
and reports medians of wall time and peak RSS (/usr/bin/time's %M) and the
medians of the per-round ratios B/C and A/B; before each run, sync (untimed)
flushes what the previous one left.  B's output is checked once against A's
(torch.load both: same keys, tensors equal bit for bit, same cfg.optim.lr).
Then the same on a checkpoint with 10^5 keys per state dict (4x10^5
storages, small on disk) with ckprep alone at 1/4, 1/2 and all of the keys,
to show its time grows linearly; `inspect --tensors` and `diff` on the lm
case ("sight": milliseconds and a few MiB whatever the size); then the daemon (`ckprep watch`), unless
BENCH_DAEMON=0 or ckprep has no watch command.  BENCH_LARGE=1 adds the
>4 GiB case.  Results go to bench/RESULTS.md.

--test-large: the >4 GiB checkpoint through the bench chain (output compared
with the Python-edited reference), through an empty chain (a faithful copy
over 4 GiB: zip64 offsets, checked with zipfile and torch.load), and a
checkpoint with one record over 4 GiB (zip64 sizes); the last two also
through `cat | ckprep run -o - - | cat` (zip64 in the data descriptors).  Last line
"N passed, M failed"; exit status 1 on any failure.

lm-cast: ckprep alone (bench/bench-cast.ini: `model` fp32 -> bfloat16, the
rest copied) against C, cp+sync of its output; cast-many-100000 the same on
10^5 tiny tensors (part of `many`).  lm-safetensors: ckprep alone
(bench/bench-safetensors.ini: best_state/model fp16 -> float32, written as
safetensors) against cp+sync of that file.

stream: the lm case through `cat | ckprep run -o - - | cat > OUT` (an empty
chain, bench/bench-stream.ini) against `cat | cat > OUT`, alternating.

--only lm,large,sight,many,cast,safetensors,stream,scaling,daemon runs those parts (report in
DIR/RESULTS.partial.md).  Internal modes, run as children so each measures
or loads alone: --python-edit IN OUT, --digest FILE.
"""
import argparse
import datetime
import hashlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PY = sys.executable
MiB = 1 << 20
NEW_LR = 1e-5
DEFAULT_RESULTS = os.path.join(HERE, "RESULTS.md")


# ---- A: the Python pattern (run as a child) ------------------------------


def python_edit(inp, out):
    import torch

    ck = torch.load(inp, map_location="cpu")
    ck["xp.cfg"].optim.lr = NEW_LR
    del ck["optimizer"]
    del ck["model"]
    sd = ck["best_state"]["model"]
    for k in [k for k in sd if k.startswith("linears.")]:
        del sd[k]
    ck["best_state"]["model"] = {
        ("embeddings." + k[len("emb."):] if k.startswith("emb.") else k): v
        for k, v in sd.items()
    }
    torch.save(ck, out)
    fd = os.open(out, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)


# ---- what a checkpoint holds, as JSON with tensor digests (a child) ------


def skeleton(x, torch, OmegaConf, DictConfig, ListConfig):
    if isinstance(x, torch.Tensor):
        flat = x.detach().contiguous().reshape(-1)
        if flat.dtype == torch.bool:
            raw = flat.to(torch.uint8)
        else:
            raw = flat if flat.dtype == torch.uint8 else flat.view(torch.uint8)
        return {"tensor": [str(x.dtype), list(x.shape), list(x.stride()),
                           x.storage_offset(), type(x).__name__,
                           hashlib.sha256(memoryview(raw.numpy())).hexdigest()]}
    if isinstance(x, (DictConfig, ListConfig)):
        return {type(x).__name__: OmegaConf.to_container(x, resolve=False),
                "struct": OmegaConf.is_struct(x)}
    if isinstance(x, dict):
        return {"dict": type(x).__name__,
                "items": [[repr(k), skeleton(v, torch, OmegaConf, DictConfig,
                                             ListConfig)] for k, v in x.items()]}
    if isinstance(x, (list, tuple)):
        return {type(x).__name__: [skeleton(v, torch, OmegaConf, DictConfig,
                                            ListConfig) for v in x]}
    return {"value": [type(x).__name__, repr(x)]}


def digest(path):
    import torch
    from omegaconf import DictConfig, ListConfig, OmegaConf

    ck = torch.load(path, map_location="cpu")
    lr = None
    if isinstance(ck, dict) and "xp.cfg" in ck:
        lr = ck["xp.cfg"].optim.lr
    return {"skeleton": skeleton(ck, torch, OmegaConf, DictConfig, ListConfig),
            "lr": lr}


def child_digest(path):
    p = subprocess.run([PY, os.path.abspath(__file__), "--digest", path],
                       capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"torch.load {path} failed: {p.stderr.strip()[-600:]}")
    return json.loads(p.stdout)


def first_diff(a, b, where="ck"):
    if type(a) is not type(b):
        return f"{where}: {str(a)[:120]} != {str(b)[:120]}"
    if isinstance(a, dict):
        if list(a) != list(b):
            return f"{where}: keys {list(a)[:8]} != {list(b)[:8]}"
        for k in a:
            d = first_diff(a[k], b[k], f"{where}.{k}")
            if d:
                return d
        return None
    if isinstance(a, list):
        if len(a) != len(b):
            if len(a) and len(b) and all(isinstance(i, list) and len(i) == 2
                                         for i in a + b):
                ka = [i[0] for i in a]
                kb = [i[0] for i in b]
                return (f"{where}: {len(a)} != {len(b)} items; only in first "
                        f"{sorted(set(ka) - set(kb))[:5]}, only in second "
                        f"{sorted(set(kb) - set(ka))[:5]}")
            return f"{where}: {len(a)} != {len(b)} items"
        for i, (x, y) in enumerate(zip(a, b)):
            pair = isinstance(x, list) and len(x) == 2 and isinstance(x[0], str)
            d = first_diff(x, y, f"{where}[{x[0] if pair else i}]")
            if d:
                return d
        return None
    return None if a == b else f"{where}: {str(a)[:200]} != {str(b)[:200]}"


def same_checkpoint(ref, out, lr=None):
    """Reasons out differs from ref (torch.load of each, in children)."""
    da, db = child_digest(ref), child_digest(out)
    reasons = []
    d = first_diff(da["skeleton"], db["skeleton"])
    if d:
        reasons.append(f"{os.path.basename(out)} differs from "
                       f"{os.path.basename(ref)}: {d}")
    if lr is not None and not (da["lr"] == db["lr"] == lr):
        reasons.append(f"cfg.optim.lr: reference {da['lr']!r}, ckprep {db['lr']!r},"
                       f" expected {lr!r}")
    return reasons


# ---- running and measuring -----------------------------------------------


def measure(cmd, stdout=False):
    """(wall seconds, peak RSS MiB, stdout bytes) of cmd, which must succeed.

    Dirty data and pending discards of the deleted outputs are flushed
    first (untimed), so each run pays only for its own writes.  Peak RSS is
    /usr/bin/time's %M (its wait4), which, unlike a fork of this Python,
    does not start from the parent's size.
    """
    os.sync()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile(mode="r") as rss:
        t0 = time.monotonic()
        p = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", rss.name] + cmd,
                           stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        wall = time.monotonic() - t0
        if p.returncode != 0:
            err.seek(0)
            raise RuntimeError(f"{' '.join(cmd)}: exit {p.returncode}: "
                               f"{err.read().decode(errors='replace').strip()[-600:]}")
        out.seek(0)
        return wall, int(rss.read().split()[-1]) / 1024, out.read() if stdout else b""


def warm(path):
    """Read path once (untimed), so it is in the page cache like an input
    that was just made or read."""
    with open(path, "rb") as f:
        while f.read(8 * MiB):
            pass


def rm(*paths):
    for p in paths:
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass


def ensure_case(args, name):
    p = subprocess.run([PY, os.path.join(HERE, "make_bench.py"), "--dir",
                        args.dir, name], stdout=subprocess.PIPE, text=True)
    if p.returncode != 0:
        raise SystemExit(f"run_bench.py: generating {name} failed")
    return p.stdout.strip()


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def run_abc(args, name, work, rounds, verify=True, with_a=True, conf="bench.ini",
            label=None, ext=".th"):
    """A B C rounds on case name (B runs bench/CONF, its output named *EXT);
    returns a result dict."""
    inp = ensure_case(args, name)
    size = os.path.getsize(inp)
    out_a = os.path.join(work, "a.th")
    out_b = os.path.join(work, "b" + ext)
    out_c = os.path.join(work, "c" + ext)
    conf = os.path.join(HERE, conf)
    name = label or name
    r = {"case": name, "input_bytes": size, "rounds": [], "verify": None}
    print(f"## {name}: {size / MiB:.0f} MiB, {rounds} rounds", flush=True)
    for i in range(rounds):
        row = {}
        if with_a:
            rm(out_a)
            row["A"] = measure([PY, os.path.abspath(__file__), "--python-edit",
                                inp, out_a])[:2]
        rm(out_b)
        if not with_a:
            warm(inp)  # as A's run leaves it otherwise: in the page cache
        t, rss, rec = measure([args.ckprep, "run", "-c", conf, "-o", out_b, inp],
                              stdout=True)
        row["B"] = (t, rss)
        row["B_ms"] = json.loads(rec).get("duration_ms")
        row["out_bytes"] = os.path.getsize(out_b)
        rm(out_c)
        # C's source in the page cache, as B's input was: B may have written
        # it around the cache (O_DIRECT), and cp reading it from the disk
        # would make C slower than the floor it stands for
        warm(out_b)
        row["C"] = measure(["sh", "-c", 'cp "$1" "$2" && sync "$2"', "sh",
                            out_b, out_c])[:2]
        r["rounds"].append(row)
        print("   round %d: %sB %.2fs %.0f MiB  C %.2fs %.0f MiB" % (
            i + 1, "A %.2fs %.0f MiB  " % row["A"] if with_a else "",
            row["B"][0], row["B"][1], row["C"][0], row["C"][1]), flush=True)
        if i == 0 and verify and with_a:
            reasons = same_checkpoint(out_a, out_b, NEW_LR)
            r["verify"] = reasons
            print("   verified: " + ("B's output equals A's (keys, tensors bit "
                                     "for bit, cfg.optim.lr)" if not reasons
                                     else "FAILED: " + "; ".join(reasons)),
                  flush=True)
    rm(out_a, out_b, out_c)
    rs = r["rounds"]
    r["B/C"] = med([x["B"][0] / x["C"][0] for x in rs])
    r["A/B"] = med([x["A"][0] / x["B"][0] for x in rs]) if with_a else None
    for k in ("A", "B", "C"):
        if k in rs[0]:
            r[k] = (med([x[k][0] for x in rs]), med([x[k][1] for x in rs]))
    r["out_bytes"] = rs[0]["out_bytes"]
    with zipfile.ZipFile(inp) as z:
        r["pickle_bytes"] = sum(i.file_size for i in z.infolist()
                                if i.filename.endswith("/data.pkl"))
    r["conf"] = os.path.basename(conf)
    return r


def run_stream(args, work, rounds):
    """The lm case through a pipe: `cat IN | ckprep run -c
    bench/bench-stream.ini -o - - | cat > OUT` (S) against `cat IN | cat >
    OUT` (P), alternating; the output stays in the page cache (no fsync in
    either).  Returns the medians and the per-round ratios S/P."""
    inp = ensure_case(args, "lm")
    out = os.path.join(work, "stream.th")
    conf = os.path.join(HERE, "bench-stream.ini")
    ck = ['sh', '-c', 'cat "$1" | "$2" run -c "$3" -o - - 2>/dev/null | cat > "$4"',
          'sh', inp, args.ckprep, conf, out]
    cat = ['sh', '-c', 'cat "$1" | cat > "$2"', 'sh', inp, out]
    print(f"## stream: {os.path.getsize(inp) / MiB:.0f} MiB, {rounds} rounds",
          flush=True)
    warm(inp)
    rows = []
    for i in range(rounds):
        rm(out)
        s = measure(ck)[:2]
        size = os.path.getsize(out)
        rm(out)
        p = measure(cat)[:2]
        rows.append({"S": s, "P": p, "out_bytes": size})
        print("   round %d: ckprep %.2fs %.0f MiB  cat %.2fs" % (
            i + 1, s[0], s[1], p[0]), flush=True)
    rm(out)
    return {"input_bytes": os.path.getsize(inp), "rounds": rows,
            "S": med([x["S"][0] for x in rows]), "P": med([x["P"][0] for x in rows]),
            "rss": med([x["S"][1] for x in rows]),
            "S/P": med([x["S"][0] / x["P"][0] for x in rows])}


def fmt_stream(st):
    """The report's section on run_stream's result."""
    L = ["\nStreaming (`cat IN | ckprep run -c bench/bench-stream.ini -o - - | "
         "cat > OUT`, an empty chain, against `cat IN | cat > OUT`; the lm "
         "input, %.0f MiB, in the page cache; RSS is the largest process of "
         "the pipeline):\n" % (st["input_bytes"] / MiB),
         "| pipeline | time | ratio | RSS |", "|---|---|---|---|",
         "| `cat \\| ckprep run -o - - \\| cat` | %.2f s | **%.2fx** | %.0f MiB |"
         % (st["S"], st["S/P"], st["rss"]),
         "| `cat \\| cat` | %.2f s | 1x | |" % st["P"],
         "\nPer round (ckprep / cat): " + "; ".join(
             "%.2f / %.2f" % (x["S"][0], x["P"][0]) for x in st["rounds"])]
    return L


def run_scaling(args, work, sizes, rounds):
    """ckprep alone on many-N for each N: linear time means flat us/storage."""
    conf = os.path.join(HERE, "bench.ini")
    out = os.path.join(work, "s.th")
    rows = []
    print("## keys scaling (ckprep only)", flush=True)
    for n in sizes:
        inp = ensure_case(args, f"many-{n}")
        ts, rss = [], []
        for _ in range(rounds):
            rm(out)
            t, m, _ = measure([args.ckprep, "run", "-c", conf, "-o", out, inp])
            ts.append(t)
            rss.append(m)
        rm(out)
        rows.append({"keys": n, "storages": 4 * n, "B": med(ts), "rss": med(rss),
                     "us_per_storage": med(ts) / (4 * n) * 1e6})
        print(f"   {n} keys ({4 * n} storages): {med(ts):.2f}s, "
              f"{rows[-1]['us_per_storage']:.1f} us/storage, {med(rss):.0f} MiB",
              flush=True)
    return rows


# ---- the daemon ----------------------------------------------------------


def run_sight(args, work, rounds):
    """inspect --tensors and diff on the lm case: (name, wall s, RSS MiB).

    diff compares the input with ckprep's output of the bench chain
    (removed, renamed keys; the config changed), and the input with itself
    under --exact (the CRCs decide, so no tensor byte is read)."""
    inp = ensure_case(args, "lm")
    out = os.path.join(work, "sight.prep.th")
    rm(out)
    measure([args.ckprep, "run", "-c", os.path.join(HERE, "bench.ini"), "-o",
             out, inp])
    print("## sight (inspect --tensors, diff) on lm", flush=True)
    cmds = [
        ("inspect --tensors", [args.ckprep, "inspect", "--tensors", inp]),
        ("inspect --tensors --json", [args.ckprep, "inspect", "--tensors",
                                      "--json", inp]),
        ("inspect --config", [args.ckprep, "inspect", "--config", inp]),
        ("inspect --manifest", [args.ckprep, "inspect", "--manifest", inp]),
        ("diff lm its-output", ["sh", "-c", '"$0" diff "$1" "$2" >/dev/null; '
                                '[ $? -eq 1 ]', args.ckprep, inp, out]),
        ("diff --exact lm lm", [args.ckprep, "diff", "--exact", inp, inp]),
    ]
    rows = []
    for name, cmd in cmds:
        runs = [measure(cmd)[:2] for _ in range(rounds)]
        rows.append((name, med([r[0] for r in runs]), med([r[1] for r in runs])))
        print("  %-26s %.3f s  %.1f MiB" % rows[-1], flush=True)
    size = os.path.getsize(inp)
    rm(out)
    return {"input_bytes": size, "rows": rows}


def audit_records(path):
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return []
    recs = []
    for ln in lines:
        try:
            recs.append(json.loads(ln))
        except ValueError:
            pass
    return recs


def rec_name(rec, side):
    return os.path.basename(((rec.get(side) or {}).get("path")) or "")


def wait_for(pred, timeout, step=0.01):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return None


class LogTail:
    """The audit log read as it grows: each record once, by input name."""

    def __init__(self, path):
        self.path, self.off, self.part, self.by_name = path, 0, b"", {}

    def poll(self):
        try:
            with open(self.path, "rb") as f:
                f.seek(self.off)
                data = f.read()
        except FileNotFoundError:
            return
        self.off += len(data)
        lines = (self.part + data).split(b"\n")
        self.part = lines.pop()
        for ln in lines:
            try:
                r = json.loads(ln)
            except ValueError:
                continue
            self.by_name.setdefault(rec_name(r, "input"), r)


TINY_CHAIN = "[pipeline]\nchain = optimizer_strip\n"


def daemon_conf(work, d, audit, extra="", chain=None):
    conf = os.path.join(work, "watch", "watch.ini")
    if chain is None:
        with open(os.path.join(HERE, "bench.ini")) as f:
            text = f.read()
    else:
        text = chain
    with open(conf, "w") as f:
        f.write(text + f"\n[watch]\nincoming = {d['incoming']}\n"
                f"output = {d['output']}\nfailed = {d['failed']}\n"
                f"audit_log = {audit}\nsettle_ms = {DAEMON_SETTLE_MS}\n"
                f"rescan_s = 0\n{extra}")
    return conf


DAEMON_SETTLE_MS = 200


def vm_kib(pid, field):
    try:
        with open(f"/proc/{pid}/status") as f:
            for ln in f:
                if ln.startswith(field + ":"):
                    return int(ln.split()[1])
    except OSError:
        pass
    return 0


def make_tiny(path):
    """A checkpoint of 2 KiB (three 64-float tensors and a view, an epoch,
    an empty optimizer), as the daemon tests drop them."""
    code = ("import collections, sys, torch\n"
            "g = torch.Generator().manual_seed(1)\n"
            "sd = collections.OrderedDict(('layer%d.weight' % i, "
            "torch.randn(64, generator=g)) for i in range(3))\n"
            "sd['layer0.bias'] = sd['layer0.weight'][:8]\n"
            "torch.save({'model': sd, 'epoch': 1, 'optimizer': {'state': {}, "
            "'param_groups': [{'lr': 0.1, 'params': [0]}]}}, sys.argv[1])\n")
    subprocess.run([PY, "-c", code, path], check=True)
    return path


def daemon_rate(args, work, d, audit, small, n, chain=None):
    """n small checkpoints renamed into incoming at once (default workers):
    seconds from the first rename to the last record."""
    conf = daemon_conf(work, d, audit, chain=chain)
    log = open(os.path.join(work, "watch", "rate.log"), "wb")
    proc = subprocess.Popen([args.ckprep, "watch", "-c", conf],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        names = [f"small_{i:04d}.th" for i in range(n)]
        for nm in names:
            os.link(small, os.path.join(d["stage"], nm))
        time.sleep(1.0)
        if proc.poll() is not None:
            raise RuntimeError(f"ckprep watch exited with {proc.returncode}")
        tail = LogTail(audit)
        t0 = time.monotonic()
        for nm in names:
            os.rename(os.path.join(d["stage"], nm), os.path.join(d["incoming"], nm))

        def all_done():
            tail.poll()
            return sum(nm in tail.by_name for nm in names) >= n

        if not wait_for(all_done, 900, 0.005):
            raise RuntimeError(f"{n} small files not all done within 900 s")
        t = time.monotonic() - t0
        ok = sum(tail.by_name[nm].get("status") == "ok" for nm in names)
        return {"files": n, "ok": ok, "seconds": t, "files_per_s": n / t}
    finally:
        stop_daemon(proc)
        log.close()


def stop_daemon(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def daemon_latency(args, work, d, audit, small, big, samples):
    """Small files renamed in one at a time (every 20 ms) while a 3 GB job
    runs (a new name of it dropped whenever the last is done): each one's
    latency from its rename to its record in the log with its output there;
    also the first large job's rename -> output visible."""
    conf = daemon_conf(work, d, audit)
    log = open(os.path.join(work, "watch", "latency.log"), "wb")
    proc = subprocess.Popen([args.ckprep, "watch", "-c", conf],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    res = {}
    try:
        time.sleep(1.0)
        if proc.poll() is not None:
            raise RuntimeError(f"ckprep watch exited with {proc.returncode}")
        tail = LogTail(audit)
        big_names, lat, sent = [], [], {}
        nbig = 0

        def drop(src, nm):
            os.link(src, os.path.join(d["stage"], nm))
            ts = time.monotonic()
            os.rename(os.path.join(d["stage"], nm),
                      os.path.join(d["incoming"], nm))
            return ts

        def new_big():
            nonlocal nbig
            nbig += 1
            nm = f"big_{nbig:03d}.th"
            big_names.append((nm, drop(big, nm)))

        new_big()
        first_visible = wait_for(lambda: os.path.exists(
            os.path.join(d["output"], big_names[0][0])), 600, 0.002)
        if first_visible is None:
            raise RuntimeError("the large job made no output within 600 s")
        res["large_latency_s"] = time.monotonic() - big_names[0][1]
        res["large_bytes"] = os.path.getsize(big)
        wait_for(lambda: tail.poll() or big_names[0][0] in tail.by_name, 600)
        new_big()
        time.sleep(0.3)     # the job is running
        i = 0
        end = time.monotonic() + 900
        while len(lat) < samples and time.monotonic() < end:
            tail.poll()
            if big_names[-1][0] in tail.by_name:
                new_big()
                time.sleep(0.3)
                continue
            nm = f"late_{i:04d}.th"
            i += 1
            sent[nm] = drop(small, nm)
            while time.monotonic() < sent[nm] + 0.5:
                tail.poll()
                r = tail.by_name.get(nm)
                o = ((r or {}).get("output") or {}).get("path")
                if r is not None and o and os.path.exists(o):
                    break
                time.sleep(0.001)
            t = time.monotonic() - sent[nm]
            tail.poll()
            # a sample counts while the large job was still running
            if big_names[-1][0] not in tail.by_name:
                lat.append(t if nm in tail.by_name else float("inf"))
            time.sleep(0.02)
        if len(lat) < samples:
            raise RuntimeError(f"only {len(lat)} latency samples in 900 s")
        lat.sort()
        res.update(samples=len(lat), p50=lat[len(lat) // 2],
                   p90=lat[int(len(lat) * 0.9)], worst=lat[-5:],
                   p99=lat[min(len(lat) - 1, int(len(lat) * 0.99))],
                   max=lat[-1], large_jobs=nbig)
        return res
    finally:
        stop_daemon(proc)
        log.close()


def proc_cpu_s(pid):
    """CPU seconds (user + system) pid has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def daemon_startup(args, work, d, audit, small, lines):
    """Start-up with an audit log of `lines` records (the shape of the rate
    test's, each naming its own input, gone from incoming as after = move
    leaves them): seconds from the start to the log read back, and to the
    output of a file dropped at the start; peak RSS then."""
    with open(os.path.join(work, "rate.jsonl"), "rb") as f:
        proto = [ln for ln in f.read().split(b"\n") if ln][:100]
    if not proto:
        raise RuntimeError("no records to repeat")
    big_log = audit
    with open(big_log, "wb") as f:
        chunk = []
        for k in range(lines):
            r = proto[k % len(proto)]
            name = rec_name(json.loads(r), "input").encode()
            chunk.append(r.replace(name, b"gone_%07d.th" % k, 1)
                         .replace(b'{"seq":%d,' % json.loads(r)["seq"], b'{"seq":%d,' % (k + 1), 1))
            if len(chunk) == 10000:
                f.write(b"\n".join(chunk) + b"\n")
                chunk = []
        if chunk:
            f.write(b"\n".join(chunk) + b"\n")
    size = os.path.getsize(big_log)
    warm(big_log)
    conf = daemon_conf(work, d, big_log)
    log_path = os.path.join(work, "watch", "startup.log")
    log = open(log_path, "wb")
    os.link(small, os.path.join(d["stage"], "first.th"))
    os.rename(os.path.join(d["stage"], "first.th"),
              os.path.join(d["incoming"], "first.th"))
    t0 = time.monotonic()
    proc = subprocess.Popen([args.ckprep, "watch", "-c", conf],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        def read_back():
            with open(log_path, "rb") as f:
                return b"audit log read back" in f.read()
        if not wait_for(read_back, 600, 0.002):
            raise RuntimeError("the log was not read back within 600 s")
        t_read = time.monotonic() - t0
        cpu = proc_cpu_s(proc.pid)
        out = os.path.join(d["output"], "first.th")
        if not wait_for(lambda: os.path.exists(out), 600, 0.002):
            raise RuntimeError("first.th not done within 600 s")
        t_first = time.monotonic() - t0
        time.sleep(0.2)
        rss = vm_kib(proc.pid, "VmHWM") / 1024
        return {"lines": lines, "log_bytes": size, "read_s": t_read,
                "cpu_s": cpu, "first_s": t_first, "rss_mib": rss}
    finally:
        stop_daemon(proc)
        log.close()


def run_daemon(args, work):
    """Issue 16's three figures: files/s for many small files, p99 latency of
    a small file while a 3 GB job runs, start-up with a 1,000,000-line log."""
    p = subprocess.run([args.ckprep, "watch", "--help"], capture_output=True)
    if p.returncode != 0:
        print("daemon: not measured (ckprep has no watch command)", flush=True)
        return {"skipped": "ckprep has no watch command"}
    small = ensure_case(args, "small")
    big = ensure_case(args, "lm")
    n = env_int("BENCH_DAEMON_FILES", 2000)
    lines = env_int("BENCH_DAEMON_LOG_LINES", 1000000)
    samples = env_int("BENCH_DAEMON_SAMPLES", 200)
    res = {"settle_ms": DAEMON_SETTLE_MS, "workers": 2}
    tiny = make_tiny(os.path.join(work, "tiny.th"))
    parts = (("rate_tiny", lambda: daemon_rate(args, work, d, audit, tiny, n,
                                               TINY_CHAIN)),
             ("rate", lambda: daemon_rate(args, work, d, audit, small, n)),
             ("latency", lambda: daemon_latency(args, work, d, audit, small,
                                                big, samples)),
             ("startup", lambda: daemon_startup(args, work, d, audit, small,
                                                lines)))
    # Each part in folders of its own, all removed at the end: on ext4
    # without a journal, creating a file skips (reading each) the inodes
    # freed in the last minutes, so removing the previous part's thousands
    # of files first would slow the next one's every output and claim.
    # For the same reason a run waits until the last run's removal is
    # REMOVED_QUIET_S old (a minute, five more while the inode table's
    # block is dirty: fs/ext4/ialloc.c, recently_deleted): measured right
    # after it, 2,000 tiny files took 2.45 ms of daemon CPU each, not 1.33.
    wait_removed_quiet(args)
    for name, fn in parts:
        d = {k: os.path.join(work, "watch", name, k)
             for k in ("incoming", "output", "failed", "stage")}
        for v in d.values():
            os.makedirs(v)
        audit = os.path.join(work, "watch", name + ".jsonl")
        try:
            res[name] = fn()
            print(f"   daemon {name}: {res[name]}", flush=True)
        except Exception as e:  # report, do not lose the other results
            res.setdefault("error", f"{name}: {e}")
            print(f"   daemon {name}: FAILED: {e}", flush=True)
        if name == "rate":   # the startup test repeats its records
            keep = os.path.join(work, "rate.jsonl")
            if os.path.exists(audit):
                shutil.copyfile(audit, keep)
    remove_watch(args, work)
    return res


REMOVED_QUIET_S = 6 * 60


def remove_watch(args, work):
    """Remove the daemon parts' folders, noting when in DIR/watch.removed
    (each run works in a folder of its own)."""
    top = os.path.join(work, "watch")
    if os.path.exists(top):
        shutil.rmtree(top, ignore_errors=True)
        with open(os.path.join(args.dir, "watch.removed"), "w") as f:
            f.write("%f\n" % time.time())


def wait_removed_quiet(args):
    try:
        with open(os.path.join(args.dir, "watch.removed")) as f:
            left = float(f.read()) + REMOVED_QUIET_S - time.time()
    except (OSError, ValueError):
        return
    if left > 0:
        print("   daemon: waiting %.0f s: the last run's files were removed "
              "%.0f s ago, and ext4 without a journal passes over inodes "
              "freed in the last minutes on every create" %
              (left, REMOVED_QUIET_S - left), flush=True)
        time.sleep(min(left, REMOVED_QUIET_S))


# ---- the machine and the report --------------------------------------------


def machine(work):
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for ln in f:
                if ln.startswith("model name"):
                    cpu = ln.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as f:
            mem = int(f.readline().split()[1]) / (1 << 20)
    except OSError:
        mem = 0
    fs = subprocess.run(["findmnt", "-no", "FSTYPE,SOURCE,OPTIONS", "-T", work],
                        capture_output=True, text=True).stdout.strip()
    rev = subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty"],
                         capture_output=True, text=True).stdout.strip()
    return {"cpu": cpu, "cores": os.cpu_count(), "ram_gib": mem,
            "fs": fs or "?", "kernel": platform.release(),
            "date": datetime.datetime.now(datetime.timezone.utc)
            .strftime("%Y-%m-%d %H:%M UTC"), "rev": rev or "?"}


def fmt_case(r):
    a = r.get("A")
    return ("| %s | %.0f MiB | %.0f MiB | %s | %.2f s | %.2f s | **%.2fx** | %s |"
            " %s | %.0f MiB | %.0f MiB |" % (
                r["case"], r["input_bytes"] / MiB, r["out_bytes"] / MiB,
                "%.2f s" % a[0] if a else "-", r["B"][0], r["C"][0], r["B/C"],
                "**%.1fx**" % r["A/B"] if a else "-",
                "%.0f MiB" % a[1] if a else "-", r["B"][1], r["C"][1]))


def report(m, cases, scaling, daemon, rounds, sight=None, stream=None):
    L = []
    L.append("# ckprep benchmark results\n")
    L.append(f"Made by `make bench` (bench/run_bench.py), {m['date']}, ckprep "
             f"{m['rev']}.\n")
    L.append(f"- Machine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']:.1f} GiB "
             f"RAM, kernel {m['kernel']}")
    L.append(f"- Filesystem of the files: {m['fs']}")
    L.append(f"- {rounds} rounds of A B C, alternating; times are medians; ratios "
             "are medians of the per-round ratios.  The machine is shared and its "
             "disk is noisy: read the ratios, not the times.  Inputs are in the "
             "page cache (they were just made or read), outputs are fsynced.\n")
    L.append("lm-cast, lm-safetensors and cast-many-100000: B is `ckprep run "
             "-c bench/CONF` with the conf named in the table (no A); C is "
             "`cp`+`sync` of that output, the floor for writing its bytes.\n")
    L.append("A = Python: `torch.load`, set `cfg.optim.lr`, drop `optimizer` and "
             "`model`, drop `linears.*` and rename `emb.*` in "
             "`best_state['model']`, `torch.save`, fsync (the process, `import "
             "torch` included).  B = `ckprep run -c bench/bench.ini` (the same "
             "edit).  C = `cp` of B's output and `sync` of the copy.\n")
    head = ["| case | input | output | A | B | C | B/C | A/B | RSS A | RSS B "
            "| RSS C |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    L += head
    for r in cases:
        if not r["case"].startswith("many-"):
            L.append(fmt_case(r))
    many = [r for r in cases if r["case"].startswith("many-")]
    if many:
        L.append("\nMany keys (`many-N`: N tiny tensors in `model` and in "
                 "`best_state/model`, 2N optimizer moments, 4N storages; a "
                 "%.0f MiB pickle).  Here ckprep's time and memory go to the "
                 "object graph, not to the disk, so B/C does not apply:\n"
                 % (many[0].get("pickle_bytes", 0) / MiB))
        L += head
        for r in many:
            L.append(fmt_case(r))
    L.append("")
    for r in cases:
        if r.get("verify") is not None:
            L.append(f"- {r['case']}: B's output checked against A's with "
                     "`torch.load` (same keys, tensors bit for bit, same "
                     "`cfg.optim.lr`): " + ("equal" if not r["verify"] else
                                            "**DIFFERENT**: " + "; ".join(r["verify"])))
    L.append("\nPer round (seconds, A / B / C):\n")
    for r in cases:
        L.append(f"- {r['case']}: " + "; ".join(
            "%s%.2f / %.2f" % ("%.2f / " % x["A"][0] if "A" in x else "",
                               x["B"][0], x["C"][0]) for x in r["rounds"]))
    if scaling:
        L.append("\nMany keys, ckprep alone (`many-N`: N keys in `model` and in "
                 "`best_state/model`, 2N optimizer moments: 4N storages; linear "
                 "time keeps the time per storage flat):\n")
        L.append("| keys | storages | B | per storage | RSS B | RSS per storage |")
        L.append("|---|---|---|---|---|---|")
        for s in scaling:
            L.append(f"| {s['keys']} | {s['storages']} | {s['B']:.2f} s | "
                     f"{s['us_per_storage']:.1f} us | {s['rss']:.0f} MiB | "
                     f"{s['rss'] * MiB / s['storages']:.0f} bytes |")
    if sight:
        L.append("\nSight on the lm case (%.0f MiB; medians of %d runs; RSS "
                 "is /usr/bin/time's peak, the process included):\n"
                 % (sight["input_bytes"] / MiB, rounds))
        L.append("| command | time | RSS |")
        L.append("|---|---|---|")
        for name, wall, rss in sight["rows"]:
            L.append(f"| `ckprep {name}` | {wall * 1000:.0f} ms | {rss:.1f} MiB |")
    if stream:
        L += fmt_stream(stream)
    L.append("\nDaemon (`ckprep watch`, the default workers = 2, settle_ms = "
             f"{DAEMON_SETTLE_MS}, the bench chain):\n")
    if daemon is None:
        L.append("- not run (BENCH_DAEMON=0)")
    elif "skipped" in daemon:
        L.append(f"- not measured ({daemon['skipped']})")
    else:
        r = daemon.get("rate_tiny")
        if r:
            L.append(f"- {r['files']} tiny checkpoints (2 KiB, chain "
                     f"`optimizer_strip`) renamed in at once: {r['seconds']:.2f} "
                     f"s, **{r['files_per_s']:.0f} files/s** ({r['ok']} ok)")
        r = daemon.get("rate")
        if r:
            L.append(f"- {r['files']} small checkpoints (533 KiB, 262 records, "
                     f"the bench chain) renamed in at once: {r['seconds']:.2f} "
                     f"s, **{r['files_per_s']:.0f} files/s** ({r['ok']} ok)")
        r = daemon.get("latency")
        if r:
            L.append(f"- one {r['large_bytes'] / MiB:.0f} MiB checkpoint: output "
                     f"visible {r['large_latency_s']:.2f} s after its rename")
            L.append(f"- {r['samples']} small files renamed in one by one while "
                     f"that large job runs ({r['large_jobs']} in turn): rename -> "
                     f"record and output, p50 {r['p50'] * 1000:.0f} ms, **p99 "
                     f"{r['p99'] * 1000:.0f} ms**, max {r['max'] * 1000:.0f} ms")
        r = daemon.get("startup")
        if r:
            L.append(f"- start-up with a {r['lines']:,}-line audit log "
                     f"({r['log_bytes'] / MiB:.0f} MiB): read back in **"
                     f"{r['read_s']:.2f} s** ({r.get('cpu_s', 0):.2f} CPU-s), "
                     f"a file waiting at the start done at {r['first_s']:.2f} "
                     f"s, peak RSS **{r['rss_mib']:.0f} MiB**")
        if "error" in daemon:
            L.append(f"- **failed**: {daemon['error']}")
    return "\n".join(L) + "\n"


# ---- test-large ------------------------------------------------------------


def zip_check(path):
    """zipfile's view: every record's CRC, size and offset consistent."""
    with zipfile.ZipFile(path) as z:
        bad = z.testzip()
        infos = z.infolist()
    if bad is not None:
        return [f"{path}: record {bad} fails its CRC"]
    return [] if infos else [f"{path}: no records"]


def test_large(args, work):
    conf = os.path.join(HERE, "bench.ini")
    empty = os.path.join(work, "empty.ini")
    with open(empty, "w") as f:
        f.write("[pipeline]\nchain =\n")
    results = []

    def check(name, fn):
        t0 = time.monotonic()
        try:
            reasons = fn()
        except Exception as e:
            reasons = [f"{type(e).__name__}: {e}"]
        for r in reasons:
            print(f"FAIL {name}: {r}", flush=True)
        print(f"{'ok' if not reasons else 'FAILED'} {name} "
              f"({time.monotonic() - t0:.0f}s)", flush=True)
        results.append(not reasons)

    big = ensure_case(args, "large")
    size = os.path.getsize(big)
    print(f"# large: {size / MiB:.0f} MiB", flush=True)

    def chain():
        out, ref = os.path.join(work, "large.prep.th"), os.path.join(work, "ref.th")
        try:
            reasons = [] if size > (4 << 30) else [f"input only {size} bytes"]
            tb, rss, _ = measure([args.ckprep, "run", "-c", conf, "-o", out, big])
            ta, rssa, _ = measure([PY, os.path.abspath(__file__), "--python-edit",
                                   big, ref])
            print(f"   B {tb:.2f}s {rss:.0f} MiB, A {ta:.2f}s {rssa:.0f} MiB",
                  flush=True)
            if rss >= 64:
                reasons.append(f"ckprep peak RSS {rss:.0f} MiB >= 64 MiB")
            return reasons + zip_check(out) + same_checkpoint(ref, out, NEW_LR)
        finally:
            rm(out, ref)

    def copy():
        out = os.path.join(work, "large.copy.th")
        try:
            t, rss, _ = measure([args.ckprep, "run", "-c", empty, "-o", out, big])
            print(f"   copy {t:.2f}s {rss:.0f} MiB, "
                  f"{os.path.getsize(out) / MiB:.0f} MiB", flush=True)
            reasons = [] if os.path.getsize(out) > (4 << 30) else ["copy under 4 GiB"]
            return reasons + zip_check(out) + same_checkpoint(big, out)
        finally:
            rm(out)

    check("large checkpoint through the bench chain equals the Python edit", chain)
    check("large checkpoint copied (zip64 offsets) loads equal", copy)

    def bigrec():
        src = ensure_case(args, "bigrec")
        with open(src + ".sha256") as f:
            want = f.read().strip()
        out = os.path.join(work, "bigrec.copy.th")
        try:
            t, rss, _ = measure([args.ckprep, "run", "-c", empty, "-o", out, src])
            print(f"   bigrec copy {t:.2f}s {rss:.0f} MiB", flush=True)
            d = child_digest(out)["skeleton"]
            items = dict(d["items"])
            got = items["'w'"]["tensor"]
            reasons = zip_check(out)
            if got[5] != want:
                reasons.append("record over 4 GiB: tensor w differs after the copy")
            if got[1][0] < (4 << 30):
                reasons.append(f"tensor w has only {got[1][0]} bytes")
            return reasons + same_checkpoint(src, out)
        finally:
            rm(out)

    check("record over 4 GiB (zip64 sizes) copied loads equal", bigrec)

    def streamed(case):
        """case through `cat | ckprep run -o - - | cat`: zip64 in the data
        descriptors read and written, in one pass."""
        src = ensure_case(args, case)
        out = os.path.join(work, case + ".stream.th")
        try:
            t, rss, _ = measure(["bash", "-c", 'set -o pipefail; cat "$1" | "$2" run '
                                 '-c "$3" -o - - 2>/dev/null | cat > "$4"', "bash",
                                 src, args.ckprep, empty, out])
            print(f"   {case} streamed {t:.2f}s {rss:.0f} MiB, "
                  f"{os.path.getsize(out) / MiB:.0f} MiB", flush=True)
            reasons = [] if os.path.getsize(out) > (4 << 30) else ["output under 4 GiB"]
            return reasons + zip_check(out) + same_checkpoint(src, out)
        finally:
            rm(out)

    check("large checkpoint streamed (zip64 offsets) loads equal",
          lambda: streamed("large"))
    check("record over 4 GiB streamed (zip64 descriptors) loads equal",
          lambda: streamed("bigrec"))
    passed = sum(results)
    print(f"{passed} passed, {len(results) - passed} failed")
    return 0 if passed == len(results) else 1


# ---- main ----------------------------------------------------------------


def env_int(name, default):
    v = os.environ.get(name, "")
    return int(v) if v.strip() else default


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ckprep", default=os.path.join(ROOT, "build", "ckprep"))
    ap.add_argument("--dir", default=os.environ.get("BENCH_DIR") or
                    os.path.join(ROOT, "build", "bench"))
    ap.add_argument("--results", default=DEFAULT_RESULTS)
    ap.add_argument("--only", metavar="PARTS",
                    help="comma list of lm,large,sight,many,cast,safetensors,stream,scaling,daemon (the "
                    "report then goes to DIR/RESULTS.partial.md)")
    ap.add_argument("--test-large", action="store_true")
    ap.add_argument("--python-edit", nargs=2, metavar=("IN", "OUT"))
    ap.add_argument("--digest", metavar="FILE")
    args = ap.parse_args(argv)
    if args.python_edit:
        python_edit(*args.python_edit)
        return 0
    if args.digest:
        json.dump(digest(args.digest), sys.stdout)
        return 0
    args.ckprep = os.path.abspath(args.ckprep)
    args.dir = os.path.abspath(args.dir)
    os.makedirs(args.dir, exist_ok=True)
    work = tempfile.mkdtemp(dir=args.dir, prefix="run-")
    try:
        if args.test_large:
            return test_large(args, work)
        rounds = max(1, env_int("BENCH_ROUNDS", 3))
        only = set(args.only.split(",")) if args.only else None

        def part(name):
            return only is None or name in only

        cases, scaling, daemon, sight, stream = [], [], None, None, None
        if part("lm"):
            cases.append(run_abc(args, "lm", work, rounds))
        if env_int("BENCH_LARGE", 0) or (only and "large" in only):
            cases.append(run_abc(args, "large", work, rounds))
        if part("sight"):
            sight = run_sight(args, work, rounds)
        if part("many"):
            cases.append(run_abc(args, "many-100000", work, rounds))
            # a cast of 10^5 tensors (bench-cast.ini), quadratic once
            cases.append(run_abc(args, "many-100000", work, rounds, verify=False,
                                 with_a=False, conf="bench-cast.ini",
                                 label="cast-many-100000"))
        # the transformations of issue 14, against cp+sync of their outputs
        if part("cast"):
            cases.append(run_abc(args, "lm", work, rounds, verify=False, with_a=False,
                                 conf="bench-cast.ini", label="lm-cast"))
        if part("safetensors"):
            cases.append(run_abc(args, "lm", work, rounds, verify=False, with_a=False,
                                 conf="bench-safetensors.ini", label="lm-safetensors",
                                 ext=".safetensors"))
        if part("stream"):
            stream = run_stream(args, work, rounds)
        if part("scaling"):
            # up to 4,000,000 storages (issue 16): BENCH_SCALING_MAX keys
            sizes = [n for n in (25000, 50000, 100000, 250000, 1000000)
                     if n <= env_int("BENCH_SCALING_MAX", 1000000)]
            scaling = run_scaling(args, work, sizes, rounds)
        if part("daemon") and env_int("BENCH_DAEMON", 1):
            daemon = run_daemon(args, work)
        elif part("daemon"):
            print("daemon: not run (BENCH_DAEMON=0)")
        if only is not None and args.results == DEFAULT_RESULTS:
            args.results = os.path.join(args.dir, "RESULTS.partial.md")
        m = machine(args.dir)
        text = report(m, cases, scaling, daemon, rounds, sight, stream)
        print()
        print(text)
        with open(args.results, "w") as f:
            f.write(text)
        print(f"# wrote {args.results}")
        bad = [r for r in cases if r.get("verify")]
        return 1 if bad else 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
