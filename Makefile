# Makefile for sam_ext (PGXS).
#
#   make && make install           build and install the extension
#   make installcheck              pg_regress + isolation + TAP on throw-away instances
#   make -C test / make -C ingest  the mock Unipile server and the webhook ingest
#   make SANITIZE=1                the extension, the mock and the ingest built
#                                  with AddressSanitizer + UndefinedBehaviorSanitizer
#                                  (make clean first; scripts/test-sanitize.sh runs
#                                  the whole suite that way)
#   make fuzz                      the libFuzzer harnesses (clang; scripts/fuzz.sh)
#
# Under PGXS only `make install && make installcheck` works (not `make check`):
# pg_regress and the isolation tester start their own temporary instance
# preloaded with pg_cron and sam_ext (see regress.conf).

EXTENSION = sam_ext
EXTVERSION = $(shell sed -n "s/^default_version = '\(.*\)'/\1/p" sam_ext.control)

MODULE_big = sam_ext
OBJS = sam_ext.o src/shmem.o src/worker.o src/http.o src/jobs.o src/dropdb.o src/template.o src/template_core.o src/util.o src/clock.o

DATA = $(wildcard sam_ext--*.sql)

PG_CFLAGS = -Wall -Wextra -Werror -Wno-unused-parameter -Wno-missing-field-initializers -Wno-sign-compare
PG_CPPFLAGS = -I$(srcdir)/src
SHLIB_LINK = -lcurl

# SANITIZE=1 (also seen by the helpers' Makefiles): ASan + UBSan.  A server
# that loads this build needs the ASan runtime preloaded (scripts/test-sanitize.sh).
SANITIZE_FLAGS = -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
ifdef SANITIZE
PG_CFLAGS += $(SANITIZE_FLAGS)
SHLIB_LINK += $(SANITIZE_FLAGS)
endif

REGRESS = $(patsubst sql/%.sql,%,$(sort $(wildcard sql/*.sql)))
REGRESS_OPTS = --temp-config=$(srcdir)/regress.conf --temp-instance=$(CURDIR)/tmp_check --inputdir=$(srcdir)
ISOLATION = $(patsubst specs/%.spec,%,$(sort $(wildcard specs/*.spec)))
ISOLATION_OPTS = --temp-config=$(srcdir)/regress.conf --temp-instance=$(CURDIR)/tmp_check_iso --inputdir=$(srcdir)
TAP_TESTS = 1
EXTRA_CLEAN = tmp_check tmp_check_iso output_iso results regression.diffs regression.out log

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# PGXS knows nothing of our headers: every object is rebuilt when one
# changes (a stale object would disagree with the others on the layout of
# the shared state).
$(OBJS): $(wildcard $(srcdir)/src/*.h)

# The mock Unipile server and the ingest daemon are plain programs with
# their own Makefiles; the TAP tests, the demo and the benchmarks use them.
all: helpers
.PHONY: helpers
helpers: all-shared-lib
	$(MAKE) -C test
	if [ -f ingest/Makefile ]; then $(MAKE) -C ingest; fi

clean: clean-helpers
.PHONY: clean-helpers
clean-helpers:
	-$(MAKE) -C test clean
	-if [ -f ingest/Makefile ]; then $(MAKE) -C ingest clean; fi
	-$(MAKE) -C fuzz clean

# The libFuzzer harnesses (fuzz/Makefile; run them with scripts/fuzz.sh).
.PHONY: fuzz sanitize
fuzz:
	$(MAKE) -C fuzz

# A sanitizer build from scratch of the extension, the mock and the ingest.
sanitize:
	$(MAKE) clean
	$(MAKE) SANITIZE=1
