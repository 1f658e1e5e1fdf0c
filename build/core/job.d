build/core/job.o: core/job.c core/job.h core/ckpt.h core/pickle.h \
 core/ck.h core/zip.h core/conf.h core/json.h
core/job.h:
core/ckpt.h:
core/pickle.h:
core/ck.h:
core/zip.h:
core/conf.h:
core/json.h:
