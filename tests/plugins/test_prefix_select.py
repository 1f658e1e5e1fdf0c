#!/usr/bin/python3
"""prefix_select: keep/drop/strip on state dicts, root =, non-string
keys, dry runs, and its `ckprep check` errors.

usage: test_prefix_select.py --ckprep PATH --zipcheck PATH [--examples DIR] [--keep]
    [-k SUBSTR] [-v]
(or run_all.py for every file; helpers and fixtures in plugtest.py)
"""
import os
import sys

import torch

import plugtest
from plugtest import (E, LitModule, OD, SmallLM, assert_same, chain1, check, check_changes,
                      check_rejects, check_root_output, load, od_like, plugin_changes, select,
                      sharing, storage_records, storages_of, test)


@test
def select_drop_audiocraft():
    """drop linears.: those keys and modules go; the tied emb.0/out weights
    (also tied to the dropped linears.1.weight) still share one storage"""
    r = E.ok(chain1("prefix_select", {"drop": "linears."}), "ac")
    ck = load(r.inp)
    ck["best_state"]["model"] = select(ck["best_state"]["model"], drop=["linears."])
    out = load(r.out)
    assert_same(ck, out)
    md = list(out["best_state"]["model"]._metadata)
    check(not any(m.startswith("linears") for m in md) and "out" in md and "" in md,
          f"_metadata: {md}")
    check_changes(plugin_changes(r.rec), [("removed", "best_state/model", k) for k in
                                          ("linears.0.weight", "linears.0.bias",
                                           "linears.1.weight", "linears.1.bias")],
                  "op", "state", "key")


@test
def select_empty_metadata():
    """a state dict whose _metadata is an empty OrderedDict (no items after
    its call in the pickle): keep with strip and drop run (this crashed a
    build that kept no room for such a call's items), as select() gives"""
    src = os.path.join(E.fresh("md-empty"), "md.th")
    sd = OD([("model.w", torch.zeros(2)), ("other.w", torch.ones(2))])
    sd._metadata = OD()
    torch.save({"state_dict": sd}, src)
    for i, conf in enumerate(({"state": "state_dict", "keep": "model.", "strip": "yes"},
                              {"state": "state_dict", "drop": "other."})):
        r = E.ok(chain1("prefix_select", conf), src)
        ck = load(src)
        ck["state_dict"] = select(ck["state_dict"], keep=["model."] if i == 0 else (),
                                  drop=() if i == 0 else ["other."], strip=i == 0)
        out = load(r.out)
        assert_same(ck, out)
        check(list(out["state_dict"]._metadata.items()) == [], f"_metadata {out['state_dict']._metadata}")


@test
def select_keep_strip_lightning():
    """keep model.lm. with strip in a Lightning state_dict: a flat LM state
    dict that loads strictly into the bare module"""
    r = E.ok(chain1("prefix_select", {"state": "state_dict", "keep": "model.lm.",
                                      "strip": "yes"}), "pl")
    ck = load(r.inp)
    ck["state_dict"] = select(ck["state_dict"], keep=["model.lm."], strip=True)
    out = load(r.out)
    assert_same(ck, out)
    sd = out["state_dict"]
    check(list(sd._metadata) == ["", "emb", "layers", "layers.0", "layers.1", "bn", "head"],
          f"_metadata keys {list(sd._metadata)}")
    lm = SmallLM()
    lm.load_state_dict(sd, strict=True)
    check(torch.equal(lm.emb.weight.detach(), sd["emb.weight"]), "load_state_dict gave other values")
    check_changes(plugin_changes(r.rec),
                  [("removed", "model.other.weight", "None"), ("removed", "model.other.bias", "None")] +
                  [("renamed", k, k[len("model.lm."):]) for k in load(r.inp)["state_dict"]
                   if k.startswith("model.lm.")], "op", "key", "to")


@test
def select_keep_several_no_strip():
    """several keep prefixes, no strip: modules kept when NAME. starts with a
    keep prefix (the root module '' is not)"""
    r = E.ok(chain1("prefix_select", {"keep": "transformer. out_norm."}), "ac")
    ck = load(r.inp)
    ck["best_state"]["model"] = select(ck["best_state"]["model"], keep=["transformer.", "out_norm."])
    out = load(r.out)
    assert_same(ck, out)
    md = list(out["best_state"]["model"]._metadata)
    check("" not in md and "out_norm" in md and "transformer.layers.0.norm1" in md
          and "emb" not in md, f"_metadata keys {md}")


@test
def select_keep_drop_strip():
    """keep, then drop inside it, with strip"""
    r = E.ok(chain1("prefix_select", {"keep": "transformer.", "drop": "transformer.layers.0.norm",
                                      "strip": "yes"}), "ac")
    ck = load(r.inp)
    ck["best_state"]["model"] = select(ck["best_state"]["model"], keep=["transformer."],
                                       drop=["transformer.layers.0.norm"], strip=True)
    out = load(r.out)
    assert_same(ck, out)
    keys = list(out["best_state"]["model"])
    check(keys and all(k.startswith("layers.0.") and ".norm" not in k for k in keys), f"keys {keys}")


@test
def select_other_state_untouched():
    """only the named state dict changes: 'model' (fp32) and ema keep linears."""
    r = E.ok(chain1("prefix_select", {"state": "model", "drop": "linears. out."}), "ac")
    ck = load(r.inp)
    ck["model"] = select(ck["model"], drop=["linears.", "out."])
    assert_same(ck, load(r.out))


@test
def select_keep_nomatch_fails():
    """a keep prefix that matches nothing fails the job, naming it"""
    E.fails(chain1("prefix_select", {"keep": "transformer. transfromer_typo."}), "ac",
            "transfromer_typo.")


@test
def select_missing_state_fails():
    """state path that does not exist"""
    E.fails(chain1("prefix_select", {"state": "best_state/nosuch", "drop": "x"}), "ac",
            "best_state/nosuch")


@test
def select_state_not_dict_fails():
    """state path that is not a dict"""
    E.fails(chain1("prefix_select", {"state": "xp.sig", "drop": "x"}), "ac", "xp.sig")


@test
def select_dry_run():
    """--dry-run writes nothing and reports the same changes"""
    conf = chain1("prefix_select", {"state": "state_dict", "keep": "model.lm.", "strip": "yes"})
    real, dry = E.ok(conf, "pl"), E.ok(conf, "pl", dry=True)
    check(plugin_changes(dry.rec) == plugin_changes(real.rec),
          f"dry-run changes {plugin_changes(dry.rec)} != {plugin_changes(real.rec)}")


@test
def select_root_lightning():
    """root = state_dict alone: torch.load(out) is the Lightning state_dict
    (tensors bit for bit, the tied emb/head pair sharing one storage,
    _metadata kept); nothing else, and no other storage, is written"""
    r = E.ok(chain1("prefix_select", {"root": "state_dict"}), "pl")
    ck = load(r.inp)
    out = check_root_output(r, ck["state_dict"])
    check(any(len(g) > 1 for g in sharing(out)), "no tensors share a storage in the output")
    LitModule().load_state_dict(out, strict=True)
    dropped = sum(storages_of(ck).values()) - sum(storages_of(ck["state_dict"]).values())
    check(dropped > 0, "the input has nothing outside state_dict to drop")
    ch = plugin_changes(r.rec)
    check(len(ch) == 1 and ch[0].get("op") == "root" and ch[0].get("path") == "state_dict"
          and ch[0].get("removed") == [k for k in ck if k != "state_dict"]
          and ch[0].get("bytes") == dropped,
          f"changes {ch}, expected one root change removing {[k for k in ck if k != 'state_dict']} "
          f"and {dropped} bytes")
    check(os.path.getsize(r.out) < os.path.getsize(r.inp), "output not smaller")


@test
def select_root_keep_strip():
    """keep model.lm., strip, root = state_dict: the output is the bare LM's
    state dict and loads strictly into it"""
    r = E.ok(chain1("prefix_select", {"state": "state_dict", "keep": "model.lm.",
                                      "strip": "yes", "root": "state_dict"}), "pl")
    ck = load(r.inp)
    out = check_root_output(r, select(ck["state_dict"], keep=["model.lm."], strip=True))
    SmallLM().load_state_dict(out, strict=True)
    check(list(out._metadata) == ["", "emb", "layers", "layers.0", "layers.1", "bn", "head"],
          f"_metadata keys {list(out._metadata)}")


@test
def select_root_nested_audiocraft():
    """root = best_state/model (AudioCraft, fp16 copy) after drop linears.:
    the tied emb.0/out weights still share one storage; the fp32 model,
    the optimizers and the config are gone"""
    r = E.ok(chain1("prefix_select", {"drop": "linears.", "root": "best_state/model"}), "ac")
    ck = load(r.inp)
    out = check_root_output(r, select(ck["best_state"]["model"], drop=["linears."]))
    check(out["out.weight"].data_ptr() == out["emb.0.weight"].data_ptr(),
          "out.weight and emb.0.weight no longer share their storage")


@test
def select_root_dry_run():
    """--dry-run with root writes nothing and reports the same changes"""
    conf = chain1("prefix_select", {"root": "state_dict"})
    real, dry = E.ok(conf, "pl"), E.ok(conf, "pl", dry=True)
    check(plugin_changes(dry.rec) == plugin_changes(real.rec),
          f"dry-run changes {plugin_changes(dry.rec)} != {plugin_changes(real.rec)}")


@test
def select_root_fails():
    """root that does not exist, is not a dict, or is a tensor fails the job"""
    E.fails(chain1("prefix_select", {"root": "state_dict_ema"}), "pl", "state_dict_ema")
    E.fails(chain1("prefix_select", {"root": "epoch"}), "pl", "epoch", "not a dict")
    E.fails(chain1("prefix_select", {"root": "state_dict/model.other.bias"}), "pl",
            "model.other.bias", "not a dict")


@test
def check_root_outside_state():
    """keep with a state that root would drop is a configuration error"""
    check_rejects("[pipeline]\nchain = prefix_select\n\n[prefix_select]\nkeep = model.\n"
                  "root = state_dict\n", None, "best_state/model", "not inside root",
                  exact_line=False)


@test
def select_non_str_keys_keep():
    """keep: a state-dict key that is not a str (7, (1, 2), None) starts with
    no keep prefix: removed, and reported with its type and bytes"""
    r = E.ok(chain1("prefix_select", {"state": "model", "keep": "enc.", "strip": "yes"}), "odd")
    ck = load(r.inp)
    sd = ck["model"]
    ck["model"] = od_like(sd, [("w", sd["enc.w"])], OD([("", sd._metadata["enc"])]))
    assert_same(ck, load(r.out))
    ch = plugin_changes(r.rec)
    odd = sorted((c["op"], str(c["key"]), c.get("key_type"), c.get("bytes")) for c in ch
                 if c.get("key_type"))
    check(odd == [("removed", "7", "int", 20), ("removed", "<tuple>", "tuple", 8),
                  ("removed", "None", "NoneType", 0)],
          f"changes for the keys that are not a str: {odd}")
    check(any(c["key"] == 7 and type(c["key"]) is int for c in ch), "key 7 is not a JSON number")
    check(sum(c["op"] == "removed" for c in ch) == 4, f"changes {ch}")


@test
def select_non_str_keys_drop():
    """drop alone: a key that is not a str starts with no drop prefix: it
    stays, with its tensor, and the record says it was kept"""
    r = E.ok(chain1("prefix_select", {"state": "model", "drop": "dec."}), "odd")
    ck = load(r.inp)
    sd = ck["model"]
    ck["model"] = od_like(sd, [(k, v) for k, v in sd.items() if k != "dec.w"],
                          OD((k, v) for k, v in sd._metadata.items() if k != "dec"))
    out = load(r.out)
    assert_same(ck, out)
    check(list(out["model"]) == ["enc.w", 7, (1, 2), None], f"keys {list(out['model'])}")
    kept = sorted((str(c["key"]), c["key_type"]) for c in plugin_changes(r.rec)
                  if c["op"] == "kept")
    check(kept == [("7", "int"), ("<tuple>", "tuple"), ("None", "NoneType")], f"kept {kept}")


@test
def select_root_non_str_key():
    """root: a top-level key that is not a str is named as itself in the
    record (an int as a JSON number)"""
    r = E.ok(chain1("prefix_select", {"root": "model"}), "odd")
    ck = load(r.inp)
    check_root_output(r, ck["model"])
    ch = plugin_changes(r.rec)
    check(ch[0]["removed"] == [k for k in ck if k != "model"], f"removed {ch[0]['removed']}")


def _save_ids(path, obj, hook, legacy=False):
    """torch.save with each storage's persistent id passed through hook
    (what it returns is written), by the pure-Python Pickler"""
    import pickle
    import types

    class Pickler(pickle._Pickler):
        def save_pers(self, pid):
            if isinstance(pid, tuple) and pid[0] == "storage":
                pid = hook(pid)
            super().save_pers(pid)

    torch.save(obj, path, pickle_module=types.SimpleNamespace(__name__="pickle", Pickler=Pickler,
                                                          dump=pickle.dump),
               _use_new_zipfile_serialization=not legacy)


def _save_sharing_keys(path, obj, share):
    """torch.save, but a storage key str or whole persistent id that
    share maps the key to is written as that object, which obj holds too:
    the pickle's memo then shares it with a value, as a hand-made pickle
    may (torch.save never does)"""
    def hook(pid):
        if pid[2] not in share:
            return pid
        s = share[pid[2]]
        return s if isinstance(s, tuple) else pid[:2] + (s,) + pid[3:]

    _save_ids(path, obj, hook)


@test
def select_key_str_shared_with_value():
    """storage keys renumbered while the key's str is also a value (before
    the id, after it) or the whole id tuple is: the value keeps '1', the id
    names the record data/0 (an in-place rename broke one or the other)"""
    d = E.fresh("shared-key")
    for i, order in enumerate(("value-first", "value-after", "tuple")):
        src = os.path.join(d, f"{order}.th")
        key = "".join(["1"])  # a str object of its own
        sd = OD([("a.w", torch.zeros(2)), ("b.w", torch.arange(3.0))])
        if order == "tuple":
            key = ("storage", torch.FloatStorage, "1", "cpu", 3)
            obj = {"state_dict": sd, "name": key}
        elif order == "value-first":
            obj = {"name": key, "state_dict": sd}
        else:
            obj = {"state_dict": sd, "name": key}
        _save_sharing_keys(src, obj, {"1": key})
        with open(src, "rb") as f:
            raw = f.read()
        check(raw.count(b"X\x01\x00\x00\x001") == 1, f"{order}: key '1' not shared in the pickle")
        r = E.ok(chain1("prefix_select", {"state": "state_dict", "drop": "a."}), src)
        ck = load(src)
        out = load(r.out)
        for name in (ck["name"], out["name"]):  # torch.load maps the class
            check(name[2:] == key[2:] if order == "tuple" else name == key,
                  f"{order}: name {name!r}")
        ck["state_dict"] = select(ck["state_dict"], drop=["a."])
        ck["name"] = out["name"] = None
        assert_same(ck, out)
        check([os.path.basename(n) for n in storage_records(r.out)] == ["0"],
              f"{order}: records {storage_records(r.out)}")


@test
def select_legacy_id_shared_with_value():
    """a legacy file (torch < 1.6's format) whose persistent id, a 6-tuple
    ending in None, is also a value: the zip output's id has five items,
    the value keeps its six (the id was cut in place)"""
    import io

    seen = {}

    def hook(pid):
        return seen.setdefault(pid[2], pid)

    src = os.path.join(E.fresh("legacy-shared-id"), "legacy.th")
    sd = OD([("a.w", torch.zeros(2)), ("b.w", torch.arange(3.0))])
    obj = {"state_dict": sd}
    _save_ids(io.BytesIO(), obj, hook, legacy=True)  # the ids, to share one
    obj["name"] = next(t for t in seen.values() if t[4] == 3)
    _save_ids(src, obj, hook, legacy=True)
    r = E.ok(chain1("prefix_select", {"state": "state_dict", "drop": "a."}), src)
    ck, out = load(src), load(r.out)
    check(len(ck["name"]) == 6 and ck["name"][5] is None, f"input name {ck['name']!r}")
    check(out["name"][2:] == ck["name"][2:], f"name {out['name']!r}, input {ck['name']!r}")
    ck["state_dict"] = select(ck["state_dict"], drop=["a."])
    ck["name"] = out["name"] = None
    assert_same(ck, out)


@test
def check_strip_not_a_bool():
    check_rejects("[pipeline]\nchain = prefix_select\n[prefix_select]\nkeep = a.\nstrip = maybe\n",
                  5, "maybe")


if __name__ == "__main__":
    sys.exit(plugtest.main([__name__]))
