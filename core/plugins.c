/*
 * plugins.c -- the table of compiled-in plugins, made from plugins.def.
 */
#include "conf.h"

#define PLUGIN(name) extern const ck_plugin_t ck_plugin_##name;
#include "../plugins/plugins.def"
#undef PLUGIN

const ck_plugin_t *const ck_plugins[] = {
#define PLUGIN(name) &ck_plugin_##name,
#include "../plugins/plugins.def"
#undef PLUGIN
    NULL,
};
