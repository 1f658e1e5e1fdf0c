build/core/json.o: core/json.c core/json.h core/ck.h
core/json.h:
core/ck.h:
