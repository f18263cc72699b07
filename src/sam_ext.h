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
#include "utils/timestamp.h"

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

#define SAM_JOB_SLOTS 8
#define SAM_JOB_NAME_LEN 64

/* a job function's request to the worker, and its answer */
typedef enum SamJobSlotState
{
	SAM_SLOT_FREE = 0,
	SAM_SLOT_REQUESTED,			/* waiting for the worker to start it */
	SAM_SLOT_RUNNING,			/* started: its calls are being made */
	SAM_SLOT_DONE				/* finished: run_id holds the answer */
} SamJobSlotState;

typedef struct SamJobSlot
{
	SamJobSlotState state;
	char		job[SAM_JOB_NAME_LEN];
	Latch	   *requester;		/* NULL once the caller stopped waiting */
	int64		run_id;			/* sam.job_runs row */
	TimestampTz deadline;		/* when the worker answers with what it has */
} SamJobSlot;

/*
 * State in shared memory: where the worker's latch is, so that a committing
 * transaction that queued work can wake it, and the job slots.
 */
typedef struct SamSharedState
{
	slock_t		mutex;
	Latch	   *worker_latch;	/* NULL while no worker is running */
	pid_t		worker_pid;
	bool		worker_ready;	/* it has reconciled the rows left in flight */
	int64		wakeups;		/* how often the worker was woken */
	bool		drop_pending;	/* DROP DATABASE of the served database is waiting */
	bool		db_dropped;		/* it succeeded: wait for CREATE DATABASE */
	Latch	   *waiting_latch;	/* the worker's latch while it waits to connect */
	SamJobSlot	slots[SAM_JOB_SLOTS];
} SamSharedState;

extern SamSharedState *sam_shared;

/* shmem.c */
extern void sam_shmem_request(void);
extern void sam_shmem_startup(void);
extern void sam_wake_worker(void);
extern void sam_wake_worker_at_commit(void);
extern void sam_install_utility_hook(void);
extern void sam_wait_until_database_usable(void);

/* worker.c */
extern PGDLLEXPORT void sam_worker_main(Datum main_arg);
extern void sam_begin_tx(const char *activity);
extern void sam_end_tx(void);

/* template.c: nothing exported to C besides the SQL-callable functions */

#endif							/* SAM_EXT_H */
