#!/usr/bin/python3
"""optimizer_strip: the default drop list, detect, nested and partial
optimizer states, dry runs, and its `ckprep check` errors.

usage: test_optimizer_strip.py --ckprep PATH --zipcheck PATH [--examples DIR] [--keep]
    [-k SUBSTR] [-v]
(or run_all.py for every file; helpers and fixtures in plugtest.py)
"""
import os
import sys

import torch

import plugtest
from plugtest import (DEFAULT_STRIP, E, _untyped, assert_same, chain1, check, check_changes,
                      check_rejects, expected_default_strip, load, plugin_changes, test,
                      walk_tensors, without)


@test
def strip_default_audiocraft():
    """defaults: drop optimizer lr_scheduler scaler ema, detect the
    adversary's optimizer inside adv_losses; the file gets smaller"""
    r = E.ok(DEFAULT_STRIP, "ac")
    assert_same(expected_default_strip(load(r.inp)), load(r.out))
    check_changes(plugin_changes(r.rec), [("removed", "optimizer"), ("removed", "lr_scheduler"),
                                          ("removed", "scaler"), ("removed", "ema"),
                                          ("removed", "adv_losses/msstftd.optimizer")],
                  "op", "path")
    for c in plugin_changes(r.rec):
        check(isinstance(c.get("bytes"), int), f"change without a byte count: {c}")
    by = {c["path"]: c["bytes"] for c in plugin_changes(r.rec)}
    check(by["optimizer"] > 0 and by["ema"] > 0 and by["adv_losses/msstftd.optimizer"] > 0,
          f"removed byte counts should be positive: {by}")
    insize, outsize = os.path.getsize(r.inp), os.path.getsize(r.out)
    check(outsize < insize * 0.8, f"output {outsize} B is not clearly smaller than input {insize} B")
    check(r.rec["output"]["storage_bytes"] < sum(
        _untyped(t.storage()).nbytes() for t in
        {_untyped(t.storage()).data_ptr(): t for t in walk_tensors(load(r.inp)).values()}.values()),
        "storage bytes did not shrink")


@test
def strip_detect_cannot_remove_fails():
    """detect fails the job, naming the place, where it finds an optimizer
    it cannot remove (inside a tuple: Python rebuilds the tuple) or cannot
    look (nested deeper than 32): before, both were kept without a word;
    a tuple without one, and 30 levels, are walked as before"""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.ones(2))], lr=0.1).state_dict()
    conf = chain1("optimizer_strip", {"drop": "optimizer", "detect": "yes"})
    d = E.fresh("stuck")
    inp = os.path.join(d, "tuple.th")
    torch.save({"model": {"w": torch.ones(3)}, "opt_and_sched": (opt, {"k": 1})},
               inp)
    E.fails(conf, inp, "opt_and_sched/0", "inside a tuple")
    deep = {"o": opt}
    for _ in range(40):
        deep = {"d": deep}
    inp = os.path.join(d, "deep.th")
    torch.save({"model": {"w": torch.ones(3)}, "deep": deep}, inp)
    E.fails(conf, inp, "deeper than 32")
    inp = os.path.join(d, "ok.th")
    ok = {"o": opt}
    for _ in range(29):
        ok = {"d": ok}
    torch.save({"model": {"w": torch.ones(3)}, "pair": (1, {"x": [2]}),
                "deep": ok}, inp)
    r = E.ok(conf, inp)
    out = load(r.out)
    check(out["pair"] == (1, {"x": [2]}), f"pair: {out['pair']!r}")
    node = out["deep"]
    for _ in range(29):
        node = node["d"]
    check(node == {}, f"the bottom: {node!r}")


@test
def strip_detect_shared_lists():
    """a list holding the same list twice, 30 deep, with an optimizer state
    at the bottom (a few hundred bytes that would be 2^30 visits walked as a
    tree; found by fuzz_legacy): detect visits each list once, removes the
    optimizer from the one shared list and reports it once; torch.load of
    the output keeps the sharing"""
    import time
    opt = torch.optim.SGD([torch.nn.Parameter(torch.ones(2))], lr=0.1).state_dict()
    inner = [opt, 7]
    top = inner
    for _ in range(30):
        top = [top, top]
    ck = {"model": {"w": torch.ones(3)}, "deep": top}
    inp = os.path.join(E.fresh("shared"), "shared.th")
    torch.save(ck, inp)
    t0 = time.monotonic()
    r = E.ok(chain1("optimizer_strip", {"drop": "optimizer", "detect": "yes"}),
             inp)
    took = time.monotonic() - t0
    check(took < 20, f"took {took:.1f} s")
    ch = plugin_changes(r.rec)
    check(len(ch) == 1 and ch[0]["op"] == "removed" and
          ch[0]["path"] == "deep/" + "/".join(["1"] * 30) + "/0",
          f"changes: {ch}")
    out = load(r.out)
    node = out["deep"]
    for _ in range(30):
        check(node[0] is node[1], "a shared list came out as two lists")
        node = node[0]
    check(node == [7], f"the bottom list: {node!r}")


@test
def strip_detect_no():
    """detect = no: only the listed keys go; adv_losses keeps its optimizer"""
    r = E.ok(chain1("optimizer_strip", {"drop": "optimizer", "detect": "no"}), "ac")
    ck = load(r.inp)
    del ck["optimizer"]
    assert_same(ck, load(r.out))
    check_changes(plugin_changes(r.rec), [("removed", "optimizer")], "op", "path")


@test
def strip_detect_only():
    """detect finds the top-level optimizer by shape; ema (has 'state' but no
    'param_groups') and lr_scheduler stay when not listed"""
    r = E.ok(chain1("optimizer_strip", {"drop": "scaler", "detect": "yes"}), "ac")
    ck = load(r.inp)
    del ck["scaler"], ck["optimizer"]
    ck["adv_losses"] = without(ck["adv_losses"], "msstftd.optimizer")
    assert_same(ck, load(r.out))
    check_changes(plugin_changes(r.rec), [("removed", "scaler"), ("removed", "optimizer"),
                                          ("removed", "adv_losses/msstftd.optimizer")],
                  "op", "path")


@test
def strip_lightning():
    """Lightning: optimizer_states' only entry is detected, the emptied list
    goes with its key; lr_schedulers dropped; the rest untouched"""
    r = E.ok(chain1("optimizer_strip", {"drop": "lr_schedulers"}), "pl")
    ck = load(r.inp)
    del ck["optimizer_states"], ck["lr_schedulers"]
    assert_same(ck, load(r.out))
    check_changes(plugin_changes(r.rec), [("removed", "lr_schedulers"),
                                          ("removed", "optimizer_states/0"),
                                          ("removed", "optimizer_states")], "op", "path")
    check(os.path.getsize(r.out) < os.path.getsize(r.inp), "output not smaller")


@test
def strip_nested_and_partial_list():
    """an optimizer deep in nested dicts is found; a list keeps its other
    entries (and its key) when not emptied"""
    r = E.ok(chain1("optimizer_strip", {"drop": "nothere"}), "misc")
    ck = load(r.inp)
    ck["opts"] = ["keep-me"]
    del ck["nested"]["deep"]["o"]
    assert_same(ck, load(r.out))
    check_changes(plugin_changes(r.rec), [("removed", "opts/0"), ("removed", "nested/deep/o")],
                  "op", "path")


@test
def strip_empty_drop():
    """drop = (empty) drops no listed key; detect still works"""
    r = E.ok(chain1("optimizer_strip", {"drop": ""}), "ac")
    ck = load(r.inp)
    del ck["optimizer"]
    ck["adv_losses"] = without(ck["adv_losses"], "msstftd.optimizer")
    assert_same(ck, load(r.out))


@test
def strip_absent_keys():
    """absent drop keys are skipped: no change, everything identical"""
    r = E.ok(chain1("optimizer_strip", {"drop": "nothere alsonot", "detect": "no"}), "ac")
    assert_same(load(r.inp), load(r.out))
    check(plugin_changes(r.rec) == [], f"changes reported: {plugin_changes(r.rec)}")


@test
def strip_dry_run():
    """--dry-run writes nothing and reports the same changes"""
    real = E.ok(DEFAULT_STRIP, "ac")
    dry = E.ok(DEFAULT_STRIP, "ac", dry=True)
    check(dry.rec.get("dry_run") is True, "record has no dry_run: true")
    check(plugin_changes(dry.rec) == plugin_changes(real.rec),
          f"dry-run changes {plugin_changes(dry.rec)} != {plugin_changes(real.rec)}")


@test
def strip_not_a_dict_fails():
    """a checkpoint that is not a dict fails the job"""
    p = os.path.join(E.work, "inputs", "list.th")
    torch.save([torch.zeros(2)], p)
    E.fails(DEFAULT_STRIP, p, "not a dict")


@test
def check_detect_not_a_bool():
    check_rejects("[pipeline]\nchain = optimizer_strip\n[optimizer_strip]\ndetect = 2\n", 4, "2")


if __name__ == "__main__":
    sys.exit(plugtest.main([__name__]))
