#!/usr/bin/python3
"""Run the allocation-failure driver (failat.c) over real checkpoints.

usage: run_failat.py --failat PATH [--workdir DIR] [-v]

Makes, with real torch.save, the inputs beside tests/data/sample.th: the
same checkpoint in the legacy format, the same zip with deflated records,
and a Lightning-shaped checkpoint.  Then runs `failat --leak-selftest`
(the build must catch a leaking child) and `failat -c CONF IN` for each
(input, configuration) pair below; failat fails allocation n for every n
along the whole run (see failat.c for what each run must satisfy).
Prints each pair's result, then `N passed, M failed`; exit 1 if any failed.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
EX = os.path.join(REPO, "conf", "examples")


def make_inputs(d):
    sample = os.path.join(REPO, "tests", "data", "sample.th")
    obj = torch.load(sample, weights_only=False)  # our own fixture
    legacy = os.path.join(d, "sample_legacy.th")
    torch.save(obj, legacy, _use_new_zipfile_serialization=False)
    deflated = os.path.join(d, "sample_deflated.th")
    with zipfile.ZipFile(sample) as zi, \
            zipfile.ZipFile(deflated, "w", zipfile.ZIP_DEFLATED) as zo:
        for info in zi.infolist():
            zo.writestr(info.filename, zi.read(info.filename))
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(4, 3))
    opt = torch.optim.SGD([p], lr=0.1, momentum=0.9)
    p.sum().backward()
    opt.step()
    lightning = os.path.join(d, "lightning.ckpt")
    torch.save({
        "epoch": 3, "global_step": 120,
        "state_dict": {"model.lm.w": p.detach().clone(),
                       "model.lm.b": torch.zeros(4),
                       "model.other.w": torch.ones(2, 2)},
        "optimizer_states": [opt.state_dict()],
        "lr_schedulers": [{"step_size": 5, "gamma": 0.5}],
        "hyper_parameters": {"lr": 0.1, "name": "lm"},
    }, lightning)
    return sample, legacy, deflated, lightning


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--failat", required=True)
    ap.add_argument("--workdir")
    ap.add_argument("-v", action="store_true")
    a = ap.parse_args()
    failat = os.path.abspath(a.failat)
    work = tempfile.mkdtemp(prefix="ckprep-failat.", dir=a.workdir)
    t0 = time.monotonic()
    results = []
    try:
        sample, legacy, deflated, lightning = make_inputs(work)
        pairs = [
            ("audiocraft-finetune.ini", sample),
            ("exported-lr.ini", sample),
            ("audiocraft-finetune.ini", legacy),
            ("audiocraft-finetune.ini", deflated),
            ("lightning-extract.ini", lightning),
            ("release-safetensors.ini", sample),
            ("release-safetensors.ini", deflated),
            ("start-from-ema.ini", sample),
        ]
        env = dict(os.environ)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1:exitcode=86")
        d = os.path.join(work, "selftest")
        os.makedirs(d)
        p = subprocess.run([failat, "--leak-selftest", "-c",
                            os.path.join(EX, pairs[0][0]), "-d", d, sample],
                           capture_output=True, text=True, env=env)
        results.append(("leak-selftest", p.returncode == 0, p.stdout.strip()))
        for i, (conf, inp) in enumerate(pairs):
            d = os.path.join(work, "run%d" % i)
            os.makedirs(d)
            cmd = [failat, "-c", os.path.join(EX, conf), "-d", d, inp]
            if a.v:
                cmd.insert(1, "-v")
            p = subprocess.run(cmd, capture_output=True, text=True, env=env)
            out = (p.stdout + p.stderr).strip()
            results.append(("%s %s" % (conf, os.path.basename(inp)),
                            p.returncode == 0 and "0 problems" in out, out))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    failed = 0
    for name, ok, out in results:
        failed += not ok
        last = out.splitlines()[-1] if out else "(no output)"
        print("%s %s: %s" % ("ok  " if ok else "FAIL", name, last))
        if not ok or a.v:
            for line in out.splitlines()[:-1][:60]:
                print("     " + line)
    print("%d passed, %d failed (%.1f s)" % (len(results) - failed, failed,
                                             time.monotonic() - t0))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
