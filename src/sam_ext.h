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
extern int	sam_workers;
extern bool sam_allow_private_hook_addresses;

/* the most worker processes sam.workers may ask for */
#define SAM_MAX_WORKERS 8

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

/* one worker process (sam.workers of them; number 0 also runs the jobs) */
typedef struct SamWorkerSlot
{
	Latch	   *latch;			/* NULL while this worker is not running */
	pid_t		pid;
	bool		ready;			/* it has reconciled the rows it left in flight */
	int64		wakeups;		/* how often it was woken */
	Latch	   *waiting_latch;	/* its latch while it waits to connect */
} SamWorkerSlot;

/*
 * State in shared memory: where the workers' latches are, so that a
 * committing transaction that queued work can wake them, and the job slots.
 */
typedef struct SamSharedState
{
	slock_t		mutex;
	SamWorkerSlot workers[SAM_MAX_WORKERS];
	bool		drop_pending;	/* DROP DATABASE of the served database is waiting */
	bool		db_dropped;		/* it succeeded: wait for CREATE DATABASE */
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
extern int	sam_worker_number;	/* this process's worker number, -1 if none */
extern void sam_begin_tx(const char *activity);
extern void sam_end_tx(void);

/* template.c: nothing exported to C besides the SQL-callable functions */

#endif							/* SAM_EXT_H */
