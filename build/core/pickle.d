build/core/pickle.o: core/pickle.c core/pickle.h core/ck.h
core/pickle.h:
core/ck.h:
