/*-------------------------------------------------------------------------
 *
 * jobs.c
 *	  Jobs that wait for Unipile's answers (check_relations,
 *	  process_follow_ups) run inside the worker.
 *
 *	  A job function cannot wait for calls it queued itself: its rows stay
 *	  invisible to the worker until it commits.  So the function hands the
 *	  job to the worker through a slot in shared memory and waits on its
 *	  latch.  The worker starts the job in a transaction of its own
 *	  (sam._job_async_start: decide and queue, commit), makes the calls like
 *	  any others, and when they are all recorded, or sam.job_wait_timeout has
 *	  passed, finishes it (sam._job_async_poll: the summary goes to
 *	  sam.job_runs, commit) and wakes the caller, who reads the answer from
 *	  sam.job_runs.  The worker never holds a transaction across HTTP, and a
 *	  job's calls are outbox rows like every other call.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "utils/builtins.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "sam_ext.h"
#include "jobs.h"

PG_FUNCTION_INFO_V1(sam_run_job_in_worker);

/* how long a caller waits beyond the job's deadline before giving up */
#define SAM_JOB_GRACE_MS 10000

/*
 * leave_slot: the caller stops waiting for its slot (cancelled, or its
 * session ends): the worker finishes the run on its own, and frees the slot
 * instead of marking it done for nobody.  Also run when the session exits
 * (pg_terminate_backend), which a PG_CATCH would not see.
 */
static void
leave_slot(int code, Datum arg)
{
	int			slot = DatumGetInt32(arg);

	SpinLockAcquire(&sam_shared->mutex);
	sam_shared->slots[slot].requester = NULL;
	if (sam_shared->slots[slot].state == SAM_SLOT_DONE)
		sam_shared->slots[slot].state = SAM_SLOT_FREE;
	SpinLockRelease(&sam_shared->mutex);
}

/*
 * sam._run_job_in_worker(job text) returns bigint: hands the job to the
 * worker and waits for it.  Returns the sam.job_runs id of the run, or
 * 0 when the same job is already running (skipped), -1 when no worker is
 * running, -2 when every slot is taken, -3 when the worker did not answer
 * in time.
 */
Datum
sam_run_job_in_worker(PG_FUNCTION_ARGS)
{
	char	   *job = text_to_cstring(PG_GETARG_TEXT_PP(0));
	int			slot = -1;
	int			i;
	int64		run_id = -3;
	Latch	   *worker_latch;
	TimestampTz give_up;

	if (strlen(job) == 0 || strlen(job) >= SAM_JOB_NAME_LEN)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid job: must be 1 to %d characters", SAM_JOB_NAME_LEN - 1)));

	/* worker 0 runs the jobs */
	SpinLockAcquire(&sam_shared->mutex);
	worker_latch = sam_shared->workers[0].latch;
	if (worker_latch == NULL)
	{
		SpinLockRelease(&sam_shared->mutex);
		PG_RETURN_INT64(-1);
	}
	for (i = 0; i < SAM_JOB_SLOTS; i++)
	{
		SamJobSlot *s = &sam_shared->slots[i];

		if ((s->state == SAM_SLOT_REQUESTED || s->state == SAM_SLOT_RUNNING) &&
			strcmp(s->job, job) == 0)
		{
			SpinLockRelease(&sam_shared->mutex);
			PG_RETURN_INT64(0);
		}
		if (slot < 0 && s->state == SAM_SLOT_FREE)
			slot = i;
	}
	if (slot < 0)
	{
		SpinLockRelease(&sam_shared->mutex);
		PG_RETURN_INT64(-2);
	}
	sam_shared->slots[slot].state = SAM_SLOT_REQUESTED;
	strlcpy(sam_shared->slots[slot].job, job, SAM_JOB_NAME_LEN);
	sam_shared->slots[slot].requester = MyLatch;
	sam_shared->slots[slot].run_id = 0;
	sam_shared->slots[slot].deadline =
		TimestampTzPlusMilliseconds(GetCurrentTimestamp(), sam_job_wait_timeout_ms);
	SpinLockRelease(&sam_shared->mutex);
	SetLatch(worker_latch);

	give_up = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
										  sam_job_wait_timeout_ms + SAM_JOB_GRACE_MS);
	PG_ENSURE_ERROR_CLEANUP(leave_slot, Int32GetDatum(slot));
	{
		for (;;)
		{
			bool		done = false;

			SpinLockAcquire(&sam_shared->mutex);
			if (sam_shared->slots[slot].state == SAM_SLOT_DONE)
			{
				run_id = sam_shared->slots[slot].run_id;
				sam_shared->slots[slot].state = SAM_SLOT_FREE;
				sam_shared->slots[slot].requester = NULL;
				done = true;
			}
			else if (GetCurrentTimestamp() >= give_up)
			{
				/* the worker finishes the run on its own and frees the slot */
				run_id = sam_shared->slots[slot].state == SAM_SLOT_RUNNING ?
					sam_shared->slots[slot].run_id : -3;
				sam_shared->slots[slot].requester = NULL;
				done = true;
			}
			SpinLockRelease(&sam_shared->mutex);
			if (done)
				break;
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 1000L, PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
			CHECK_FOR_INTERRUPTS();
		}
	}
	PG_END_ENSURE_ERROR_CLEANUP(leave_slot, Int32GetDatum(slot));

	PG_RETURN_INT64(run_id);
}

/* finish_slot marks a slot done and wakes its caller, or frees it if nobody waits */
static void
finish_slot(int i, int64 run_id)
{
	Latch	   *requester;

	SpinLockAcquire(&sam_shared->mutex);
	requester = sam_shared->slots[i].requester;
	sam_shared->slots[i].run_id = run_id;
	sam_shared->slots[i].state = requester ? SAM_SLOT_DONE : SAM_SLOT_FREE;
	SpinLockRelease(&sam_shared->mutex);
	if (requester)
		SetLatch(requester);
}

/*
 * sam_service_jobs is called by the worker between batches: it starts the
 * requested jobs and finishes the running ones whose calls are all
 * recorded or whose deadline has passed.  Returns true while some job is
 * running (the worker then sleeps briefly instead of long).  The worker
 * must not be inside a transaction.
 */
bool
sam_service_jobs(void)
{
	int			i;
	bool		running = false;

	for (i = 0; i < SAM_JOB_SLOTS; i++)
	{
		SamJobSlotState state;
		char		job[SAM_JOB_NAME_LEN];
		int64		run_id;
		TimestampTz deadline;
		bool		finished = false;

		SpinLockAcquire(&sam_shared->mutex);
		state = sam_shared->slots[i].state;
		strlcpy(job, sam_shared->slots[i].job, SAM_JOB_NAME_LEN);
		run_id = sam_shared->slots[i].run_id;
		deadline = sam_shared->slots[i].deadline;
		SpinLockRelease(&sam_shared->mutex);

		if (state == SAM_SLOT_REQUESTED)
		{
			Oid			argtypes[2] = {TEXTOID, TIMESTAMPTZOID};
			Datum		args[2];
			bool		isnull;

			sam_begin_tx("sam_ext: starting a job");
			args[0] = CStringGetTextDatum(job);	/* in the transaction's memory */
			args[1] = TimestampTzGetDatum(deadline);
			if (SPI_execute_with_args("SELECT run_id, finished FROM sam._job_async_start($1, $2)",
									  2, argtypes, args, NULL, false, 1) != SPI_OK_SELECT ||
				SPI_processed != 1)
				elog(ERROR, "sam._job_async_start failed");
			run_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
			finished = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
			sam_end_tx();

			if (finished)
				finish_slot(i, run_id);
			else
			{
				SpinLockAcquire(&sam_shared->mutex);
				sam_shared->slots[i].run_id = run_id;
				sam_shared->slots[i].state = SAM_SLOT_RUNNING;
				SpinLockRelease(&sam_shared->mutex);
				running = true;
			}
		}
		else if (state == SAM_SLOT_RUNNING)
		{
			Oid			argtypes[2] = {INT8OID, BOOLOID};
			Datum		args[2];
			bool		isnull;

			args[0] = Int64GetDatum(run_id);
			args[1] = BoolGetDatum(GetCurrentTimestamp() >= deadline);
			sam_begin_tx("sam_ext: checking a job");
			if (SPI_execute_with_args("SELECT sam._job_async_poll($1, $2)",
									  2, argtypes, args, NULL, false, 1) != SPI_OK_SELECT ||
				SPI_processed != 1)
				elog(ERROR, "sam._job_async_poll failed");
			finished = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
			sam_end_tx();
			if (finished)
				finish_slot(i, run_id);
			else
				running = true;
		}
	}
	return running;
}

/*
 * sam_jobs_release_all is called when the worker starts: runs of a previous
 * worker are gone with it, so their callers are told (run_id -3).
 */
void
sam_jobs_release_all(void)
{
	int			i;

	for (i = 0; i < SAM_JOB_SLOTS; i++)
	{
		SamJobSlotState state;

		SpinLockAcquire(&sam_shared->mutex);
		state = sam_shared->slots[i].state;
		SpinLockRelease(&sam_shared->mutex);
		if (state == SAM_SLOT_RUNNING)
			finish_slot(i, -3);
	}
}

/* sam_jobs_pending tells whether some job slot needs the worker */
bool
sam_jobs_pending(void)
{
	int			i;
	bool		pending = false;

	SpinLockAcquire(&sam_shared->mutex);
	for (i = 0; i < SAM_JOB_SLOTS; i++)
		if (sam_shared->slots[i].state == SAM_SLOT_REQUESTED ||
			sam_shared->slots[i].state == SAM_SLOT_RUNNING)
			pending = true;
	SpinLockRelease(&sam_shared->mutex);
	return pending;
}
