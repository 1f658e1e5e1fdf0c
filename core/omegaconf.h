/*
 * omegaconf.h -- OmegaConf's node model as a pickle holds it, read and built
 * without OmegaConf: a DictConfig or ListConfig is a NEWOBJ of
 * omegaconf.dictconfig.DictConfig / omegaconf.listconfig.ListConfig whose
 * state holds _metadata (a ContainerMetadata), _parent and _content (a dict
 * of key -> node, or a list of nodes); a leaf is a NEWOBJ of
 * omegaconf.nodes.<Class> (AnyNode, IntegerNode, FloatNode, BooleanNode,
 * StringNode, ...) whose state holds _metadata (a Metadata), _parent and
 * _val (a plain Python value).  New nodes are made as OmegaConf 2.2 pickles
 * them, metadata and _parent links included.
 *
 * The reading functions need nothing but the graph; building needs a
 * ck_omc_ctx_t giving the arena and the checkpoint's globals.
 */
#ifndef CK_OMEGACONF_H
#define CK_OMEGACONF_H

#include "pickle.h"
#include "pyval.h"
#include "yamlval.h"

/* ---- reading ---------------------------------------------------------- */

/* 1 when p is an OmegaConf object of class cls ("DictConfig",
 * "ListConfig", "AnyNode", ...; any omegaconf.* module). */
int ck_omc_is(const ck_py_t *p, const char *cls);

/* The class name of a leaf node (omegaconf.nodes.*), or NULL. */
const char *ck_omc_leaf_class(const ck_py_t *n);

/*
 * The children of a container: a DictConfig's key/node pairs (k0 v0 k1 v1)
 * or a ListConfig's nodes; NULL for anything else or a container whose
 * _content is None or '???'.  *is_dict tells which, when not NULL.
 */
ck_py_vec_t *ck_omc_children(ck_py_t *c, int *is_dict);

/* A node's key (its _metadata.key), or NULL. */
ck_py_t *ck_omc_key(ck_py_t *node);

/*
 * 1 when OmegaConf takes node as read-only (it raises ReadonlyConfigError
 * on a change): its _metadata.flags say readonly, or, where they say
 * nothing, its nearest parent's do (flags_root stops the search there).
 */
int ck_omc_readonly(ck_py_t *node);

/*
 * A container's element_type or key_type (which) when it is not Any: the
 * class's name ("int", "str", a dataclass's), or "a typing construct"
 * (Optional[int], List[int], ...); NULL for Any, None or not said.
 */
const char *ck_omc_typed(ck_py_t *c, const char *which);

/*
 * 1 when c is a structured container: a DictConfig or ListConfig whose
 * ref_type is not Any (a dataclass field typed List[int], Dict[str, int],
 * a nested dataclass).  OmegaConf sets a scalar there with _set_value,
 * into the node, not in place of it (ck_omc_set_content).
 */
int ck_omc_structured(ck_py_t *c);

/*
 * A scalar set on the structured container c as OmegaConf's _set_value
 * sets it: None (when the field is Optional), '???' and an interpolation
 * become its _content, the node and its metadata kept (object_type
 * None, as OmegaConf leaves it).  0; 1 when
 * OmegaConf refuses the value (ValidationError); CK_ENOMEM.  With a NULL
 * arena it only says whether OmegaConf takes the value.
 */
int ck_omc_set_content(ck_arena_t *a, ck_py_t *c, const ck_pyval_t *t);

/* The Python value behind an OmegaConf node (a leaf's _val, a container's
 * _content); anything else as it is.  Fits ck_pyval_unwrap_cb. */
ck_py_t *ck_omc_unwrap(ck_py_t *p);

/*
 * The value p holds as a YAML tree written as OmegaConf.to_yaml writes it
 * (see ck_yval_of): a DictConfig or a dict a mapping, a ListConfig, a list
 * or a tuple a sequence, a leaf its _val (interpolations and '???' as
 * written), a container whose _content is None or '???' that scalar;
 * anything else (a tensor, an object) the str "<object>".  Nesting past 64,
 * and what lies past 2^20 nodes (a container shared many times over), is
 * "<...>".  NULL on CK_ENOMEM.
 */
ck_yval_t *ck_omc_yval(ck_arena_t *a, ck_py_t *p);

/* ---- building --------------------------------------------------------- */

/* The global module.name for new nodes (the checkpoint's own when it
 * names it already); NULL on CK_ENOMEM. */
typedef ck_py_t *(*ck_omc_global_cb)(void *ud, const char *module,
                                     const char *name);

typedef struct {
    ck_arena_t *a;
    ck_omc_global_cb global;
    void *ud;
} ck_omc_ctx_t;

/*
 * A new node for the YAML value v: an AnyNode holding a typed scalar, or a
 * DictConfig or ListConfig of such nodes, with key (a str, or an int in a
 * list) in its metadata and _parent set to parent, which must not be
 * NULL (pass a None for a root).  NULL on CK_ENOMEM or a NULL parent.
 */
ck_py_t *ck_omc_from_yval(const ck_omc_ctx_t *c, const ck_yval_t *v,
                          ck_py_t *key, ck_py_t *parent);

/*
 * A new element of a typed container (a DictConfig or ListConfig whose
 * element_type is int, float, bool or str), as OmegaConf's _maybe_wrap
 * makes it: an IntegerNode, FloatNode, BooleanNode or StringNode holding t
 * converted (see ck_omc_leaf_value), its Metadata's ref_type and
 * object_type the element type, not optional, key, _parent the container.
 * Returns 0 with *out set, 1 when OmegaConf refuses the value (None
 * included), CK_EUNSUPPORTED for another element type, CK_ENOMEM.  With
 * out NULL it only says which (no node is made).
 */
int ck_omc_typed_leaf(const ck_omc_ctx_t *c, ck_py_t *container,
                      const ck_pyval_t *t, ck_py_t *key, ck_py_t **out);

/*
 * The _val a typed leaf of class cls takes for t (NULL: a collection),
 * converted as OmegaConf 2.2 converts (FloatNode: float(v) of an int or
 * str; IntegerNode: int(v) of an int or str; BooleanNode: a bool, an int
 * != 0, or a str that is an int or yes/y/on/true/no/n/off/false;
 * StringNode: str(v)); None, '???' and interpolations go in any node.
 * Returns 0 with *out set, 1 when OmegaConf refuses the value,
 * CK_EUNSUPPORTED for a class it does not know, CK_ENOMEM.
 */
int ck_omc_leaf_value(ck_arena_t *a, const char *cls, const ck_pyval_t *t,
                      ck_py_t **out);

/* The value an OmegaConf node (its _val) or a plain value holds, as JSON,
 * for records: containers (DictConfig, ListConfig, dict, list) with their
 * content, past 32 levels "<container>". */
void ck_omc_json(ck_json_t *j, const ck_py_t *p);

#endif
