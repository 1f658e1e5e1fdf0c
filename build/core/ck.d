build/core/ck.o: core/ck.c core/ck.h
core/ck.h:
