#!/usr/bin/python3
"""The whole chain of the five plugins against the same edit in Python,
the example configurations (conf/examples/, or --examples DIR), chain
labels and late failures, and `ckprep check` on whole configurations.

usage: test_chain.py --ckprep PATH --zipcheck PATH [--examples DIR] [--keep]
    [-k SUBSTR] [-v]
(or run_all.py for every file; helpers and fixtures in plugtest.py)
"""
import os
import sys

import torch
import yaml
from omegaconf import OmegaConf

import plugtest
from plugtest import (E, HEAD_B, HEAD_W, OD, New, SPEC_ADDS, SPEC_SETS, SmallLM, assert_same,
                      chain1, check, check_dictconfig, check_ok, check_rejects, check_root_output,
                      edit_cfg, expected_default_strip, ini, load, remap, select, spec_cfg_edit,
                      stats, test, yaml_paths)


SPEC_CHAIN = ini(
    ("pipeline", {"chain": "optimizer_strip prefix_select key_remap head_init config_override"}),
    ("prefix_select", {"drop": "linears."}),
    ("key_remap", {"rename": "emb. => embeddings."}),
    ("head_init", [("seed", 7)] + SPEC_ADDS),
    ("config_override", SPEC_SETS))


def spec_expected(ck):
    """The fine-tune edit of the spec, done in Python; the random head is New."""
    ck = expected_default_strip(ck)
    sd = remap(select(ck["best_state"]["model"], drop=["linears."]), [("emb.", "embeddings.")])
    sd[HEAD_W] = New(torch.float16, (16, 12))
    sd[HEAD_B] = New(torch.float16, (16,))
    ck["best_state"]["model"] = sd
    ck["xp.cfg"] = edit_cfg(ck["xp.cfg"], spec_cfg_edit)
    return ck


def check_spec_output(r):
    ck = spec_expected(load(r.inp))
    out = load(r.out)
    assert_same(ck, out)
    check_dictconfig(out["xp.cfg"], ck["xp.cfg"])
    sd = out["best_state"]["model"]
    check(torch.count_nonzero(sd[HEAD_B]).item() == 0, "head bias is not zeros")
    m, s, _, _ = stats(sd[HEAD_W])
    check(abs(m) < 0.006 and 0.015 < s < 0.025, f"head weight mean {m} std {s}")
    md = list(sd._metadata)
    check("embeddings.0" in md and not any(x.startswith(("emb.", "linears")) or x == "emb"
                                           for x in md), f"_metadata {md}")
    names = [p["name"] for p in r.rec["plugins"]]
    check(names == ["optimizer_strip", "prefix_select", "key_remap", "head_init",
                    "config_override"], f"record plugins {names}")
    check(all(p["changes"] for p in r.rec["plugins"]), "a plugin reported no change")
    check(os.path.getsize(r.out) < os.path.getsize(r.inp), "output not smaller than input")


@test
def chain_spec_equals_python():
    """optimizer_strip prefix_select key_remap head_init config_override, as
    in the spec, equals the same edit done in Python (but the random head)"""
    check_spec_output(E.ok(SPEC_CHAIN, "ac"))


@test
def chain_dry_run():
    """--dry-run of the whole chain reports the same changes, writes nothing"""
    real, dry = E.ok(SPEC_CHAIN, "ac"), E.ok(SPEC_CHAIN, "ac", dry=True)
    strip = [[{k: v for k, v in p.items() if k != "duration_ms"} for p in rec["plugins"]]
             for rec in (real.rec, dry.rec)]
    check(strip[0] == strip[1], f"dry-run plugins {strip[1]} != {strip[0]}")


@test
def chain_late_failure_writes_nothing():
    """a failure in the last plugin, after others changed the model: exit 1,
    nothing written"""
    conf = SPEC_CHAIN.replace("set = optim.lr=1e-5", "set = optim.lrr=1e-5")
    E.fails(conf, "ac", "lrr")


@test
def chain_labels():
    """the same plugin twice, with labels: [key_remap:a] then [key_remap:b]"""
    conf = ini(("pipeline", {"chain": "key_remap:a key_remap:b"}),
               ("key_remap:a", {"rename": "emb. => e."}),
               ("key_remap:b", {"rename": "e. => f."}))
    r = E.ok(conf, "ac")
    check([(p["name"], p["label"]) for p in r.rec["plugins"]] == [("key_remap", "a"), ("key_remap", "b")],
          f"record plugins {r.rec['plugins']}")
    ck = load(r.inp)
    ck["best_state"]["model"] = remap(ck["best_state"]["model"], [("emb.", "f.")])
    assert_same(ck, load(r.out))


@test
def chain_later_stage_sees_earlier_tensors():
    """a stage scans lazily what the stages before it changed (the chain
    scans after its last stage only): a tensor head_init added is dropped
    by the next stage with its bytes counted, a tensor key_remap renamed is
    found by head_init's copy() (as torch: equal values), and a storage a
    dropped view shared is cast whole by the stage after, as
    sd['b'].to(float16) after del sd['a'] (no split)"""
    src = os.path.join(E.fresh("lazy-scan"), "in.th")
    base = torch.arange(8, dtype=torch.float32)
    torch.save({"sd": OD([("a", base[:4]), ("b", base[4:]), ("c", torch.ones(3))])}, src)
    conf = ini(("pipeline", {"chain": "head_init:one prefix_select:one key_remap "
                                      "head_init:two prefix_select:two cast"}),
               ("head_init:one", [("state", "sd"), ("add", "new.w float32 4 const(2)")]),
               ("prefix_select:one", {"state": "sd", "drop": "new."}),
               ("key_remap", [("state", "sd"), ("rename", "c => d")]),
               ("head_init:two", [("state", "sd"), ("add", "e float32 3 copy(d)")]),
               ("prefix_select:two", {"state": "sd", "drop": "a"}),
               ("cast", [("state", "sd"), ("to", "float16")]))
    r = E.ok(conf, src)
    ch = {(p["name"], p["label"]): p["changes"] for p in r.rec["plugins"]}
    gone = ch[("prefix_select", "one")]
    check([(c["key"], c["bytes"]) for c in gone] == [("new.w", 16)], f"dropped {gone}")
    sd = load(r.out)["sd"]
    check(list(sd) == ["b", "d", "e"], f"keys {list(sd)}")
    check(torch.equal(sd["e"], torch.ones(3, dtype=torch.float16)), f"e {sd['e']}")
    check(torch.equal(sd["b"], base[4:].to(torch.float16)), f"b {sd['b']}")
    n = sd["b"].storage().size()
    check(n == 8 and sd["b"].storage_offset() == 4,
          f"b's storage of {n} elements, b at offset {sd['b'].storage_offset()}")


@test
def chain_repeatable():
    """running the output through the same chain again is possible, and
    idempotent for a config edit"""
    conf = chain1("config_override", [("set", "optim.lr=1e-5")])
    r1 = E.ok(conf, "ac")
    r2 = E.ok(conf, r1.out)
    assert_same(load(r1.out), load(r2.out))


@test
def example_audiocraft_finetune():
    """examples/audiocraft-finetune.ini is the spec chain"""
    check_spec_output(E.ok(None, "ac", conf_path=os.path.join(E.examples, "audiocraft-finetune.ini")))


@test
def example_lightning_extract():
    """examples/lightning-extract.ini: torch.load(out) IS the flat model.lm
    state dict (nothing else, only its storages); loads strictly into the
    bare LM"""
    r = E.ok(None, "pl", conf_path=os.path.join(E.examples, "lightning-extract.ini"))
    ck = load(r.inp)
    out = check_root_output(r, select(ck["state_dict"], keep=["model.lm."], strip=True))
    SmallLM().load_state_dict(out, strict=True)
    check(os.path.getsize(r.out) < os.path.getsize(r.inp), "output not smaller")


@test
def example_exported_lr():
    """examples/exported-lr.ini: optim.lr in an exported package's YAML xp.cfg"""
    r = E.ok(None, "ex", conf_path=os.path.join(E.examples, "exported-lr.ini"))
    ck = load(r.inp)
    src = ck["xp.cfg"]
    out = load(r.out)
    text = out["xp.cfg"]
    check(isinstance(text, str), "xp.cfg is no longer a YAML string")
    cfg = OmegaConf.create(src)
    cfg.optim.lr = 1e-5
    got = OmegaConf.create(text)
    check_dictconfig(got, cfg)
    check(got.optim.lr == 1e-05, f"optim.lr {got.optim.lr!r}")
    check(yaml_paths(yaml.safe_load(text)) == yaml_paths(yaml.safe_load(src)), "key order changed")
    ck["xp.cfg"] = text
    assert_same(ck, out)


@test
def check_accepts_examples():
    """ckprep check accepts the three example configs and the spec chain"""
    for f in ("audiocraft-finetune.ini", "lightning-extract.ini", "exported-lr.ini"):
        check_ok(os.path.join(E.examples, f))
    check_ok(E.conf(SPEC_CHAIN))


@test
def check_accepts_every_directive():
    """every directive with a valid value (file = is read at load: it
    exists)"""
    merge = os.path.join(E.fresh("merge"), "x.yaml")
    with open(merge, "w") as f:
        f.write("a: 2\n")
    check_ok(E.conf(ini(
        ("pipeline", {"chain": "optimizer_strip, prefix_select key_remap head_init config_override"}),
        ("optimizer_strip", [("drop", "optimizer ema"), ("drop", "scaler"), ("detect", "no")]),
        ("prefix_select", [("state", "model"), ("keep", "a. b."), ("keep", "c."), ("drop", "a.x."),
                           ("strip", "yes")]),
        ("key_remap", [("state", "model best_state/model"), ("rename", "a. => b."),
                       ("rename", r"re:^x\.([0-9]+)\. => y.\1."), ("on_conflict", "replace"),
                       ("require_match", "yes")]),
        ("head_init", [("state", "model"), ("seed", "18446744073709551615"),
                       ("add", "a float32 4x4 normal(0,1)"), ("add", "b float16 4 uniform(-1,1)"),
                       ("add", "c bfloat16 like:a xavier_uniform"), ("add", "d float64 3x3 kaiming_uniform"),
                       ("add", "e int64 2 const(3)"), ("add", "f float32 4x4 copy(a)"),
                       ("add", "g float32 2 ones"), ("add", "h float32 2 zeros"),
                       ("on_exists", "skip")]),
        ("config_override", [("config", "cfg"), ("set", "a=1"), ("set", "+b.c=[1, 2]"),
                             ("set", "++d={e: f}"), ("set", "~g"), ("file", merge)]))))


@test
def check_unknown_section():
    check_rejects("[pipeline]\nchain = head_init\n\n[head_init]\nseed = 1\n\n[nosuch]\nfoo = 1\n",
                  7, "nosuch")


@test
def check_unknown_directive():
    check_rejects("[pipeline]\nchain = head_init\n[head_init]\nseed = 1\nsede = 7\n", 5, "sede")


@test
def check_unknown_plugin_in_chain():
    check_rejects("; comment\n[pipeline]\nchain = optimizer_strip nosuch_plugin\n", 3, "nosuch_plugin")


if __name__ == "__main__":
    sys.exit(plugtest.main([__name__]))
