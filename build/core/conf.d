build/core/conf.o: core/conf.c core/conf.h core/ck.h core/pickle.h
core/conf.h:
core/ck.h:
core/pickle.h:
