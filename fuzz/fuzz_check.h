/*-------------------------------------------------------------------------
 *
 * fuzz_check.h
 *	  CHECK(), the invariant check of the libFuzzer harnesses: a violated
 *	  invariant is printed with its line and aborts, which libFuzzer
 *	  reports as a crash and saves as an artifact.
 *
 *-------------------------------------------------------------------------
 */
#ifndef FUZZ_CHECK_H
#define FUZZ_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#define CHECK(cond) \
	do { \
		if (!(cond)) \
		{ \
			fprintf(stderr, "%s: invariant failed: %s (line %d)\n", \
					__FILE__, #cond, __LINE__); \
			abort(); \
		} \
	} while (0)

#endif							/* FUZZ_CHECK_H */
