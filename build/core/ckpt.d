build/core/ckpt.o: core/ckpt.c core/ckpt.h core/pickle.h core/ck.h \
 core/zip.h
core/ckpt.h:
core/pickle.h:
core/ck.h:
core/zip.h:
