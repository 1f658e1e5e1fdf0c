build/core/inspect.o: core/inspect.c core/inspect.h core/ckpt.h \
 core/pickle.h core/ck.h core/zip.h core/json.h
core/inspect.h:
core/ckpt.h:
core/pickle.h:
core/ck.h:
core/zip.h:
core/json.h:
