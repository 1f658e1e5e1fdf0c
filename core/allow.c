/*
 * allow.c -- the allowlist of globals a checkpoint's pickle may name.
 * Nothing on it is ever called by ckprep: naming a global is all a pickle
 * can do here, and the list bounds what the file may ask of a later
 * torch.load.
 */
#include "ckpt.h"

#include <string.h>


/*
 * What torch's weights_only unpickler accepts, plus what OmegaConf configs
 * and common training checkpoints pickle.  None of these is ever called by
 * ckprep; the list bounds what a checkpoint may ask of torch.load later.
 * Modules are compared after Python 2 names are mapped (__builtin__ ->
 * builtins, copy_reg -> copyreg).
 */
static const char *const allowed[] = {
    "collections.OrderedDict",
    "collections.defaultdict",
    "collections.Counter",
    "torch._utils._rebuild_tensor",
    "torch._utils._rebuild_tensor_v2",
    "torch._utils._rebuild_tensor_v3",
    "torch._utils._rebuild_parameter",
    "torch._utils._rebuild_parameter_with_state",
    "torch._utils._rebuild_qtensor",
    "torch._utils._rebuild_sparse_tensor",
    "torch._utils._rebuild_meta_tensor_no_storage",
    "torch.per_tensor_affine",
    "torch.per_channel_affine",
    "torch.per_tensor_symmetric",
    "torch.per_channel_symmetric",
    "torch.per_channel_affine_float_qparams",
    "torch.sparse_coo",
    "torch.sparse_csr",
    "torch.strided",
    "torch._tensor._rebuild_from_type_v2",
    "torch.nn.parameter.Parameter",
    "torch.Tensor",
    "torch.Size",
    "torch.device",
    "torch.UntypedStorage",
    "torch.storage.TypedStorage",
    "torch.serialization._get_layout",
    "_codecs.encode",
    "builtins.set",
    "builtins.frozenset",
    "builtins.bytearray",
    "builtins.bytes",
    "builtins.complex",
    "builtins.dict",
    "builtins.list",
    "builtins.tuple",
    "builtins.int",
    "builtins.long",
    "builtins.float",
    "builtins.str",
    "builtins.unicode",
    "builtins.bool",
    "builtins.object",
    "copyreg._reconstructor",
    "typing.Any",
    "typing.Dict",
    "typing.List",
    "typing.Tuple",
    "typing.Optional",
    "typing.Union",
    "omegaconf.dictconfig.DictConfig",
    "omegaconf.listconfig.ListConfig",
    "omegaconf.nodes.AnyNode",
    "omegaconf.nodes.StringNode",
    "omegaconf.nodes.IntegerNode",
    "omegaconf.nodes.FloatNode",
    "omegaconf.nodes.BooleanNode",
    "omegaconf.nodes.EnumNode",
    "omegaconf.nodes.PathNode",
    "omegaconf.nodes.BytesNode",
    "omegaconf.nodes.InterpolationResultNode",
    "omegaconf.base.Metadata",
    "omegaconf.base.ContainerMetadata",
};

static int name_in(const char *module, const char *name,
                   const char *const *list, size_t n)
{
    size_t ml = strlen(module);

    for (size_t i = 0; n == SIZE_MAX ? list[i] != NULL : i < n; i++) {
        const char *e = list[i];

        if (strncmp(e, module, ml) == 0 && e[ml] == '.' &&
            strcmp(e + ml + 1, name) == 0)
            return 1;
    }
    return 0;
}

int ck_global_allowed(const char *module, const char *name,
                      const char *const *extra)
{
    const char *m = ck_py_module3(module);

    /* no built-in entry has a dotted name: "torch" + "_utils._rebuild_..."
     * would pass as the rebuild function yet escape its checks */
    if (strchr(name, '.') == NULL &&
        name_in(m, name, allowed, CK_ARRAY_SIZE(allowed)))
        return 1;
    if (strcmp(m, "torch") == 0 &&
        (ck_dtype_by_name(name) != NULL || ck_dtype_by_storage(name) != NULL))
        return 1;
    if (extra != NULL &&
        (name_in(m, name, extra, SIZE_MAX) || name_in(module, name, extra, SIZE_MAX)))
        return 1;
    return 0;
}

