#!/usr/bin/python3
"""key_remap: prefix and regex renames, conflicts, require_match, dry
runs, and its `ckprep check` errors.

usage: test_key_remap.py --ckprep PATH --zipcheck PATH [--examples DIR] [--keep]
    [-k SUBSTR] [-v]
(or run_all.py for every file; helpers and fixtures in plugtest.py)
"""
import sys

import torch

import plugtest
from plugtest import (E, OD, assert_same, bad_directive_tests, bad_section, chain1, check,
                      check_changes, check_rejects, check_rejects_line, load, od_like,
                      plugin_changes, remap, test)


def remap_test(rules, inp="ac", state="best_state/model", extra=()):
    items = [("state", state)] + [("rename", f"{a} => {b}") for a, b in rules] + list(extra)
    r = E.ok(chain1("key_remap", items), inp)
    ck = load(r.inp)
    for st in state.split():
        parts = st.split("/")
        parent = ck
        for p in parts[:-1]:
            parent = parent[p]
        parent[parts[-1]] = remap(parent[parts[-1]], rules)
    out = load(r.out)
    assert_same(ck, out)
    return r, load(r.inp), out


@test
def remap_prefix():
    """emb. => embeddings.: keys and _metadata renamed, sharing kept"""
    r, ck, out = remap_test([("emb.", "embeddings.")])
    md = list(out["best_state"]["model"]._metadata)
    check("embeddings" in md and "embeddings.1" in md and "emb" not in md, f"_metadata {md}")
    check_changes(plugin_changes(r.rec), [("renamed", "emb.0.weight", "embeddings.0.weight"),
                                          ("renamed", "emb.1.weight", "embeddings.1.weight")],
                  "op", "key", "to")


@test
def remap_regex():
    r"""re: rules with \1 \2 groups, anchored and unanchored"""
    r, ck, out = remap_test([(r"re:^transformer\.layers\.([0-9]+)\.norm([12])\.", r"blocks.\1.ln_\2."),
                             ("re:self_attn", "attn")])
    sd = out["best_state"]["model"]
    check("blocks.0.ln_1.weight" in sd and "transformer.layers.0.attn.in_proj_weight" in sd,
          f"keys {list(sd)}")
    check("blocks.0.ln_2" in sd._metadata and "transformer.layers.0.attn.out_proj" in sd._metadata,
          f"_metadata {list(sd._metadata)}")


@test
def remap_rules_in_order():
    """rules apply in order to every key, each to the previous result"""
    r, ck, out = remap_test([("emb.", "a."), ("a.", "b."), (r"re:\.bias$", ".b")])
    sd = out["best_state"]["model"]
    check("b.0.weight" in sd and "out_norm.b" in sd and "a.0.weight" not in sd, f"keys {list(sd)}")


@test
def remap_add_prefix():
    r"""re:^ => model. adds a prefix to every key (a bare state dict made
    Lightning-shaped): the root module's _metadata entry '' becomes 'model'
    and every module m becomes model.m"""
    r, ck, out = remap_test([("re:^", "model.")], inp="ex", state="best_state")
    src, md = ck["best_state"]._metadata, list(out["best_state"]._metadata)
    want = ["model" if m == "" else "model." + m for m in src]
    check(sorted(md) == sorted(want), f"_metadata keys {md}, expected {want}")


@test
def remap_several_states():
    """state = best_state/model model: both renamed"""
    remap_test([("out_norm.", "final_norm.")], state="best_state/model model")


@test
def remap_swap():
    """renaming onto a key that is itself renamed away is no conflict"""
    r, ck, out = remap_test([("emb.0.", "emb.X."), ("emb.1.", "emb.0.")])
    a, b = ck["best_state"]["model"], out["best_state"]["model"]
    check(torch.equal(b["emb.0.weight"], a["emb.1.weight"]) and
          torch.equal(b["emb.X.weight"], a["emb.0.weight"]), "swapped values wrong")


@test
def remap_conflict_fails():
    """renaming onto a key that stays fails, naming both keys"""
    E.fails(chain1("key_remap", [("rename", "out. => emb.0.")]), "ac", "out.weight", "emb.0.weight")


@test
def remap_two_onto_one_fails():
    """two keys renamed to the same name fail, naming them"""
    E.fails(chain1("key_remap", [("rename", r"re:^emb\.[01]\. => emb.")]), "ac",
            "emb.0.weight", "emb.1.weight")


@test
def remap_on_conflict_replace():
    """on_conflict = replace: the renamed key replaces the existing one"""
    r = E.ok(chain1("key_remap", [("rename", "linears.0. => linears.1."),
                                  ("on_conflict", "replace")]), "ac")
    ck = load(r.inp)
    sd = ck["best_state"]["model"]
    items = [(k.replace("linears.0.", "linears.1."), v) for k, v in sd.items()
             if not k.startswith("linears.1.")]
    md = OD((m.replace("linears.0", "linears.1"), v) for m, v in sd._metadata.items()
            if m != "linears.1")
    ck["best_state"]["model"] = od_like(sd, items, md)
    assert_same(ck, load(r.out))
    check_changes(plugin_changes(r.rec),
                  [("renamed", "linears.0.weight", "linears.1.weight"),
                   ("renamed", "linears.0.bias", "linears.1.bias"),
                   ("replaced", "linears.1.weight", "None"), ("replaced", "linears.1.bias", "None")],
                  "op", "key", "to")


@test
def remap_require_match_fails():
    """require_match = yes: a rule matching nothing fails, naming it"""
    E.fails(chain1("key_remap", [("rename", "emb. => e."), ("rename", "nosuch. => x."),
                                 ("require_match", "yes")]), "ac", "nosuch.")


@test
def remap_unmatched_reported():
    """without require_match, a rule matching nothing is reported; nothing changes"""
    r = E.ok(chain1("key_remap", [("rename", "nosuch. => x.")]), "ac")
    assert_same(load(r.inp), load(r.out))
    check_changes(plugin_changes(r.rec), [("unmatched", "nosuch.", "x.")], "op", "from", "to")


@test
def remap_missing_state_fails():
    """a state path that does not exist"""
    E.fails(chain1("key_remap", [("state", "best_state/model nosuch"),
                                 ("rename", "emb. => e.")]), "ac", "nosuch")


@test
def remap_dry_run():
    """--dry-run writes nothing and reports the same changes"""
    conf = chain1("key_remap", [("rename", "emb. => embeddings."), ("rename", "nosuch. => x.")])
    real, dry = E.ok(conf, "ac"), E.ok(conf, "ac", dry=True)
    check(plugin_changes(dry.rec) == plugin_changes(real.rec),
          f"dry-run changes {plugin_changes(dry.rec)} != {plugin_changes(real.rec)}")

BAD_RENAMES = [("a. -> b.", "a. -> b."), ("re:([a- => x", "([a-"), (" => x.", "FROM")]


bad_directive_tests(__name__, "key_remap", "rename", BAD_RENAMES)


@test
def check_bad_on_conflict():
    check_rejects_line("key_remap", "on_conflict = maybe", "maybe")


@test
def check_line_of_bad_rename():
    """the error points at the bad rename line, not at its section"""
    text, line = bad_section("key_remap", ["rename = a. => b.", "rename = c. -> d."])
    check_rejects(text, line, "c. -> d.")


if __name__ == "__main__":
    sys.exit(plugtest.main([__name__]))
