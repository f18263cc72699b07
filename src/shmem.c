/*-------------------------------------------------------------------------
 *
 * shmem.c
 *	  Shared state between the sam_ext worker and the backends, and the
 *	  wake-up path: a transaction that queues Unipile work sets the worker's
 *	  latch when it commits (never before, so the worker never looks for
 *	  rows it cannot see yet), as pg_net does, instead of the worker polling.
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

#include "sam_ext.h"

SamSharedState *sam_shared = NULL;

static bool wake_at_commit = false;
static bool xact_callback_registered = false;

PG_FUNCTION_INFO_V1(sam_wake_worker_sql);
PG_FUNCTION_INFO_V1(sam_outbox_wake_trigger);
PG_FUNCTION_INFO_V1(sam_worker_pid);

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

/* sam_wake_worker sets the worker's latch now, if a worker is running */
void
sam_wake_worker(void)
{
	Latch	   *latch = NULL;

	if (sam_shared == NULL)
		return;
	SpinLockAcquire(&sam_shared->mutex);
	latch = sam_shared->worker_latch;
	if (latch)
		sam_shared->wakeups++;
	SpinLockRelease(&sam_shared->mutex);
	if (latch)
		SetLatch(latch);
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
	/* the worker's own writes need not wake it */
	if (sam_shared == NULL || sam_shared->worker_pid != MyProcPid)
		sam_wake_worker_at_commit();
	return PointerGetDatum(NULL);
}

/*
 * SQL: sam.worker_pid() is the worker's pid, or NULL when none runs or it
 * has not yet reconciled the rows left in flight (the first thing it does
 * once it finds the extension installed)
 */
Datum
sam_worker_pid(PG_FUNCTION_ARGS)
{
	pid_t		pid = 0;

	if (sam_shared)
	{
		SpinLockAcquire(&sam_shared->mutex);
		if (sam_shared->worker_ready)
			pid = sam_shared->worker_pid;
		SpinLockRelease(&sam_shared->mutex);
	}
	if (pid == 0)
		PG_RETURN_NULL();
	PG_RETURN_INT32((int32) pid);
}
