/*-------------------------------------------------------------------------
 *
 * shmem.c
 *	  Shared state between the sam_ext workers and the backends, and the
 *	  wake-up path: a transaction that queues Unipile work sets the workers'
 *	  latches when it commits (never before, so a worker never looks for
 *	  rows it cannot see yet), as pg_net does, instead of the workers polling.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/trigger.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/tuplestore.h"

#include "sam_ext.h"

SamSharedState *sam_shared = NULL;

static bool wake_at_commit = false;
static bool xact_callback_registered = false;

PG_FUNCTION_INFO_V1(sam_wake_worker_sql);
PG_FUNCTION_INFO_V1(sam_outbox_wake_trigger);
PG_FUNCTION_INFO_V1(sam_worker_pid);
PG_FUNCTION_INFO_V1(sam_workers_sql);

/* sam_shmem_request reserves the shared state (called from shmem_request_hook) */
void
sam_shmem_request(void)
{
	RequestAddinShmemSpace(MAXALIGN(sizeof(SamSharedState)));
}

/* sam_shmem_startup creates or attaches to the shared state */
void
sam_shmem_startup(void)
{
	bool		found;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	sam_shared = ShmemInitStruct("sam_ext", sizeof(SamSharedState), &found);
	if (!found)
	{
		memset(sam_shared, 0, sizeof(SamSharedState));
		SpinLockInit(&sam_shared->mutex);
	}
	LWLockRelease(AddinShmemInitLock);
}

/*
 * sam_wake_worker sets the latch of every running worker now (in a worker,
 * of every other one: it looks again itself after each record).  Each
 * claims with SKIP LOCKED, so those that find nothing left go back to
 * sleep.
 */
void
sam_wake_worker(void)
{
	Latch	   *latches[SAM_MAX_WORKERS];
	int			n = 0;
	int			i;

	if (sam_shared == NULL)
		return;
	SpinLockAcquire(&sam_shared->mutex);
	for (i = 0; i < SAM_MAX_WORKERS; i++)
	{
		SamWorkerSlot *w = &sam_shared->workers[i];

		if (w->latch && i != sam_worker_number)
		{
			w->wakeups++;
			latches[n++] = w->latch;
		}
	}
	SpinLockRelease(&sam_shared->mutex);
	for (i = 0; i < n; i++)
		SetLatch(latches[i]);
}

static void
sam_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			if (wake_at_commit)
				sam_wake_worker();
			wake_at_commit = false;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			/* prepared: COMMIT PREPARED (another session) wakes no one; the worker's poll finds it */
			wake_at_commit = false;
			break;
		default:
			break;
	}
}

/*
 * sam_wake_worker_at_commit arranges for the worker to be woken when the
 * current transaction commits; nothing happens if it aborts.
 */
void
sam_wake_worker_at_commit(void)
{
	if (!xact_callback_registered)
	{
		RegisterXactCallback(sam_xact_callback, NULL);
		xact_callback_registered = true;
	}
	wake_at_commit = true;
}

/* SQL: sam._wake_worker() wakes the worker at commit */
Datum
sam_wake_worker_sql(PG_FUNCTION_ARGS)
{
	sam_wake_worker_at_commit();
	PG_RETURN_VOID();
}

/* SQL: statement trigger on sam.outbox that wakes the worker at commit */
Datum
sam_outbox_wake_trigger(PG_FUNCTION_ARGS)
{
	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("sam._outbox_wake_trigger() must be called as a trigger")));
	/*
	 * In a worker, only rows it queues (a job's calls, a next page, an
	 * invitation after a profile lookup) wake the others: its claims and
	 * records are updates, and two workers waking each other with every
	 * claim would never sleep.  Without it, what worker 0's jobs queued
	 * waited for the other workers' timers (up to a minute), worker 0
	 * alone serving it meanwhile.
	 */
	if (sam_worker_number < 0 ||
		TRIGGER_FIRED_BY_INSERT(((TriggerData *) fcinfo->context)->tg_event))
		sam_wake_worker_at_commit();
	return PointerGetDatum(NULL);
}

/*
 * SQL: sam.worker_pid() is the pid of worker 0 (the one that also runs the
 * jobs), or NULL when it does not run or has not yet reconciled the rows it
 * left in flight (the first thing it does once it finds the extension
 * installed)
 */
Datum
sam_worker_pid(PG_FUNCTION_ARGS)
{
	pid_t		pid = 0;

	if (sam_shared)
	{
		SpinLockAcquire(&sam_shared->mutex);
		if (sam_shared->workers[0].ready)
			pid = sam_shared->workers[0].pid;
		SpinLockRelease(&sam_shared->mutex);
	}
	if (pid == 0)
		PG_RETURN_NULL();
	PG_RETURN_INT32((int32) pid);
}

/*
 * SQL: sam.workers() lists the sam.workers worker processes: number, pid
 * (NULL when not running), whether it has reconciled the rows it left in
 * flight, and how often a commit woke it.
 */
Datum
sam_workers_sql(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	SamWorkerSlot copy[SAM_MAX_WORKERS];
	int			i;

	InitMaterializedSRF(fcinfo, 0);
	if (sam_shared == NULL)
		return (Datum) 0;
	SpinLockAcquire(&sam_shared->mutex);
	memcpy(copy, sam_shared->workers, sizeof(copy));
	SpinLockRelease(&sam_shared->mutex);
	for (i = 0; i < sam_workers; i++)
	{
		Datum		values[4];
		bool		nulls[4] = {false, false, false, false};

		values[0] = Int32GetDatum(i);
		values[1] = Int32GetDatum((int32) copy[i].pid);
		nulls[1] = (copy[i].pid == 0);
		values[2] = BoolGetDatum(copy[i].pid != 0 && copy[i].ready);
		values[3] = Int64GetDatum(copy[i].wakeups);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
