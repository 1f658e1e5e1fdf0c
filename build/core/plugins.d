build/core/plugins.o: core/plugins.c core/conf.h core/ck.h core/pickle.h \
 core/../plugins/plugins.def
core/conf.h:
core/ck.h:
core/pickle.h:
core/../plugins/plugins.def:
