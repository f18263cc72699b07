/*-------------------------------------------------------------------------
 *
 * dropdb.c
 *	  The worker never blocks DROP DATABASE of the database it serves.
 *
 *	  A background worker connected to a database makes DROP DATABASE fail
 *	  ("being accessed by other users").  A utility hook sees DROP DATABASE
 *	  of sam.database_name, asks the workers to disconnect and waits until
 *	  they have; a restarted worker does not connect while the drop is pending,
 *	  nor after it succeeded, until CREATE DATABASE makes the database exist
 *	  again.  If the drop fails, the worker connects again at once.  A drop
 *	  that PostgreSQL would refuse anyway (not the owner, in a transaction
 *	  block) leaves the workers alone.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/dbcommands.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "pgstat.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/utility.h"
#include "utils/acl.h"
#include "utils/timestamp.h"

#include "sam_ext.h"

/* how long DROP DATABASE waits for the worker to disconnect */
#define SAM_DROP_WAIT_MS 10000

static ProcessUtility_hook_type prev_utility_hook = NULL;

/* set_drop_state publishes the state and wakes every worker, waiting or serving */
static void
set_drop_state(bool pending, bool dropped)
{
	Latch	   *latches[2 * SAM_MAX_WORKERS];
	int			n = 0;
	int			i;

	SpinLockAcquire(&sam_shared->mutex);
	sam_shared->drop_pending = pending;
	sam_shared->db_dropped = dropped;
	for (i = 0; i < SAM_MAX_WORKERS; i++)
	{
		if (sam_shared->workers[i].waiting_latch)
			latches[n++] = sam_shared->workers[i].waiting_latch;
		if (sam_shared->workers[i].latch)
			latches[n++] = sam_shared->workers[i].latch;
	}
	SpinLockRelease(&sam_shared->mutex);
	for (i = 0; i < n; i++)
		SetLatch(latches[i]);
}

/* wait_worker_gone waits (bounded) until no worker is connected */
static void
wait_worker_gone(void)
{
	TimestampTz give_up = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), SAM_DROP_WAIT_MS);

	for (;;)
	{
		bool		connected = false;
		int			i;

		SpinLockAcquire(&sam_shared->mutex);
		for (i = 0; i < SAM_MAX_WORKERS; i++)
			if (sam_shared->workers[i].pid != 0)
				connected = true;
		SpinLockRelease(&sam_shared->mutex);
		if (!connected || GetCurrentTimestamp() >= give_up)
			return;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 10L, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}

/*
 * drop_failed: the drop ended without dropping (an error, a cancel, or the
 * session's exit while it waited): the workers may connect again.  Also run
 * at exit (PG_ENSURE_ERROR_CLEANUP), where a PG_CATCH would not be.
 */
static void
drop_failed(int code, Datum arg)
{
	set_drop_state(false, false);
}

/*
 * may_drop: whether this DROP DATABASE would get past PostgreSQL's own
 * checks of the caller (the database exists, the caller owns it, not in a
 * transaction block).  Only then are the workers asked to leave: a drop
 * that is refused anyway must not disconnect them, whoever tries it.
 */
static bool
may_drop(const char *dbname, bool isTopLevel)
{
	Oid			db = get_database_oid(dbname, true);

	if (!OidIsValid(db) || !pg_database_ownercheck(db, GetUserId()))
		return false;
	/* raises the error standard_ProcessUtility would */
	PreventInTransactionBlock(isTopLevel, "DROP DATABASE");
	return true;
}

static void
sam_utility_hook(PlannedStmt *pstmt, const char *queryString, bool readOnlyTree,
				 ProcessUtilityContext context, ParamListInfo params,
				 QueryEnvironment *queryEnv, DestReceiver *dest, QueryCompletion *qc)
{
	Node	   *node = pstmt->utilityStmt;
	bool		dropping = false;
	bool		creating = false;

	if (sam_shared && sam_database_name)
	{
		if (IsA(node, DropdbStmt) && strcmp(((DropdbStmt *) node)->dbname, sam_database_name) == 0)
			dropping = may_drop(((DropdbStmt *) node)->dbname, context == PROCESS_UTILITY_TOPLEVEL);
		else if (IsA(node, CreatedbStmt) && strcmp(((CreatedbStmt *) node)->dbname, sam_database_name) == 0)
			creating = true;
	}

	if (dropping)
	{
		/*
		 * Whatever ends the wait or the drop early (statement_timeout, a
		 * cancel, pg_terminate_backend), the database is still there: the
		 * workers may connect again.
		 */
		PG_ENSURE_ERROR_CLEANUP(drop_failed, (Datum) 0);
		{
			set_drop_state(true, false);
			wait_worker_gone();
			if (prev_utility_hook)
				prev_utility_hook(pstmt, queryString, readOnlyTree, context, params, queryEnv, dest, qc);
			else
				standard_ProcessUtility(pstmt, queryString, readOnlyTree, context, params, queryEnv, dest, qc);
		}
		PG_END_ENSURE_ERROR_CLEANUP(drop_failed, (Datum) 0);
		set_drop_state(false, true);
		return;
	}

	if (prev_utility_hook)
		prev_utility_hook(pstmt, queryString, readOnlyTree, context, params, queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context, params, queryEnv, dest, qc);

	if (creating)
		set_drop_state(false, false);
}

/* sam_install_utility_hook is called from _PG_init */
void
sam_install_utility_hook(void)
{
	prev_utility_hook = ProcessUtility_hook;
	ProcessUtility_hook = sam_utility_hook;
}

/*
 * sam_wait_until_database_usable is called by the worker before it
 * connects: it sleeps on its latch while a drop of its database is pending
 * or after one succeeded, until the hook says otherwise.
 */
void
sam_wait_until_database_usable(void)
{
	bool		logged = false;

	SpinLockAcquire(&sam_shared->mutex);
	sam_shared->workers[sam_worker_number].waiting_latch = MyLatch;
	SpinLockRelease(&sam_shared->mutex);
	for (;;)
	{
		bool		wait;

		SpinLockAcquire(&sam_shared->mutex);
		wait = sam_shared->drop_pending || sam_shared->db_dropped;
		SpinLockRelease(&sam_shared->mutex);
		if (!wait)
			break;
		if (!logged)
			ereport(LOG,
					(errmsg("sam_ext worker waits: database \"%s\" is being dropped or was dropped",
							sam_database_name),
					 errhint("It connects again when the drop fails or CREATE DATABASE creates it again.")));
		logged = true;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 60000L, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
	SpinLockAcquire(&sam_shared->mutex);
	sam_shared->workers[sam_worker_number].waiting_latch = NULL;
	SpinLockRelease(&sam_shared->mutex);
}
