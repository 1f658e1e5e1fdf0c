#!/usr/bin/python3
"""tree: copy, move and delete sub-trees, in order; a copy shares the
objects (torch.load shows the same tensors, no byte duplicated); existing
destinations, missing and optional sources; the record; `ckprep check`.

usage: test_tree.py --ckprep PATH --zipcheck PATH [--examples DIR] [--keep]
    [-k SUBSTR] [-v]
(or run_all.py for every file; helpers and fixtures in plugtest.py)
"""
import os
import sys

import torch

import plugtest
from plugtest import (E, assert_same, check, check_changes, check_rejects_line, chain1, ini,
                      load, plugin_changes, storages_of, test)


def tree(*lines, **kw):
    items = list(lines) + list(kw.items())
    return chain1("tree", items)


def storage_ptr(t):
    return t.storage().data_ptr()


@test
def tree_start_from_ema():
    """move = ema/state/model => best_state/model (on_exists = replace):
    the EMA weights become best_state/model, ema loses model, nothing
    else changes; the record's bytes are those of the EMA weights"""
    r = E.ok(tree(("move", "ema/state/model => best_state/model"), ("on_exists", "replace")),
             "ac")
    ck = load(r.inp)
    ema = ck["ema"]["state"]["model"]
    nbytes = sum(s.nbytes() for s in {storage_ptr(v): v.storage() for v in ema.values()}.values())
    ck["best_state"]["model"] = ema
    del ck["ema"]["state"]["model"]
    out = load(r.out)
    assert_same(ck, out)
    check_changes(plugin_changes(r.rec),
                  [("moved", "ema/state/model", "best_state/model", nbytes, True)],
                  "op", "path", "to", "bytes", "replaced")


@test
def tree_copy_shares_tensors():
    """copy = model => best_state/model: torch.load shows the two paths as
    the same tensors, and the output holds no more storages or bytes than
    the input minus the replaced best_state"""
    r = E.ok(tree(("copy", "model => best_state/model"), ("on_exists", "replace")), "ac")
    out = load(r.out)
    a, b = out["model"], out["best_state"]["model"]
    check(list(a) == list(b), "copied keys differ")
    for k in a:
        check(a[k].data_ptr() == b[k].data_ptr() and a[k].shape == b[k].shape,
              f"{k}: the copy is not the same tensor")
    ck = load(r.inp)
    ck["best_state"]["model"] = ck["model"]
    assert_same(ck, out)
    n_in = len(storages_of(ck))
    n_out = len(storages_of(out))
    check(n_out == n_in, f"{n_out} storages in the output, {n_in} in the edit made in Python")


@test
def tree_copy_new_path_and_delete():
    """copy into a new path (levels made as dicts), then delete, in order"""
    r = E.ok(tree(("copy", "fsdp_best_state => release/fsdp"), ("copy", "model => release/model"),
                  ("delete", "optimizer"), ("delete", "lr_scheduler")), "ac")
    ck = load(r.inp)
    ck["release"] = {"fsdp": ck["fsdp_best_state"], "model": ck["model"]}
    del ck["optimizer"], ck["lr_scheduler"]
    assert_same(ck, load(r.out))
    check_changes(plugin_changes(r.rec),
                  [("copied", "fsdp_best_state", "release/fsdp"),
                   ("copied", "model", "release/model"),
                   ("deleted", "optimizer", "None"), ("deleted", "lr_scheduler", "None")],
                  "op", "path", "to")


@test
def tree_optional_missing():
    """a missing SRC with '?' is skipped and reported; without it the job
    fails naming it"""
    r = E.ok(tree(("delete", "not_there?"), ("move", "nope? => x")), "ac")
    assert_same(load(r.inp), load(r.out))
    check_changes(plugin_changes(r.rec), [("skipped", "not_there"), ("skipped", "nope")],
                  "op", "path")
    E.fails(tree(("delete", "not_there")), "ac", "not_there")


@test
def tree_existing_destination_fails():
    """copy onto an existing path fails unless on_exists = replace"""
    E.fails(tree(("copy", "model => best_state/model")), "ac", "best_state/model", "exists")


@test
def tree_on_safetensors_input():
    """on a safetensors input (its root is the dict of tensors): delete one
    and copy another under a new name"""
    import stspec
    d = E.fresh("st")
    p = os.path.join(d, "in.safetensors")
    ts = {"a": torch.randn(3), "b": torch.arange(4)}
    stspec.write(p, ts)
    r = E.ok(tree(("delete", "a"), ("copy", "b => c")), p)
    out = load(r.out)
    check(sorted(out) == ["b", "c"] and torch.equal(out["c"], ts["b"]) and
          out["c"].data_ptr() == out["b"].data_ptr(), f"got {out}")


@test
def tree_example_start_from_ema():
    """conf/examples/start-from-ema.ini: best_state/model is the EMA weights
    as float32 (torch's .float()), optimizer, scheduler, scaler and the old
    model gone, ema keeps its count"""
    r = E.ok(None, "ac", conf_path=os.path.join(E.examples, "start-from-ema.ini"))
    ck = load(r.inp)
    ema = ck["ema"]["state"]["model"]
    out = load(r.out)
    check(sorted(out) == sorted(set(ck) - {"optimizer", "lr_scheduler", "scaler", "model"}),
          f"top keys {sorted(out)}")
    sd = out["best_state"]["model"]
    check(list(sd) == list(ema), "keys differ from the EMA's")
    for k, v in ema.items():
        w = v.float() if v.is_floating_point() else v
        check(sd[k].dtype == w.dtype and torch.equal(sd[k], w), f"{k} differs")
    check("model" not in out["ema"]["state"] and out["ema"]["count"] == ck["ema"]["count"],
          "ema changed beyond the move")


@test
def tree_check_errors():
    """bad lines are refused at load"""
    check_rejects_line("tree", "copy = a", "SRC => DST")
    check_rejects_line("tree", "move = a => a/b", "inside")
    check_rejects_line("tree", "delete = a//b", "a//b")
    check_rejects_line("tree", "on_exists = maybe", "maybe")


if __name__ == "__main__":
    sys.exit(plugtest.main([__name__]))
