build/core/main.o: core/main.c core/conf.h core/ck.h core/pickle.h \
 core/inspect.h core/ckpt.h core/zip.h core/json.h core/job.h
core/conf.h:
core/ck.h:
core/pickle.h:
core/inspect.h:
core/ckpt.h:
core/zip.h:
core/json.h:
core/job.h:
