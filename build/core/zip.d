build/core/zip.o: core/zip.c core/zip.h core/ck.h
core/zip.h:
core/ck.h:
