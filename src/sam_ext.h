/*-------------------------------------------------------------------------
 *
 * sam_ext.h
 *	  Declarations shared by the files of sam_ext: configuration variables,
 *	  the shared-memory state used to wake the background worker, and the
 *	  entry points of each concern (worker, HTTP client, templates).
 *
 *-------------------------------------------------------------------------
 */
#ifndef SAM_EXT_H
#define SAM_EXT_H

#include "postgres.h"

#include "storage/latch.h"
#include "storage/spin.h"

/* configuration (GUCs), defined in sam_ext.c */
extern char *sam_database_name;
extern char *sam_unipile_dsn;
extern char *sam_unipile_api_key_file;
extern int	sam_max_concurrency;
extern int	sam_batch_size;
extern int	sam_http_timeout_ms;
extern int	sam_connect_timeout_ms;
extern int	sam_max_attempts;
extern int	sam_job_wait_timeout_ms;
extern int	sam_max_response_bytes;
extern int	sam_retry_base_delay_ms;

/*
 * State in shared memory: where the worker's latch is, so that a committing
 * transaction that queued work can wake it.
 */
typedef struct SamSharedState
{
	slock_t		mutex;
	Latch	   *worker_latch;	/* NULL while no worker is running */
	pid_t		worker_pid;
	int64		wakeups;		/* how often the worker was woken */
} SamSharedState;

extern SamSharedState *sam_shared;

/* shmem.c */
extern void sam_shmem_request(void);
extern void sam_shmem_startup(void);
extern void sam_wake_worker(void);
extern void sam_wake_worker_at_commit(void);

/* worker.c */
extern PGDLLEXPORT void sam_worker_main(Datum main_arg);

/* template.c: nothing exported to C besides the SQL-callable functions */

#endif							/* SAM_EXT_H */
