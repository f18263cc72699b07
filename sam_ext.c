/*-------------------------------------------------------------------------
 *
 * sam_ext.c
 *	  Module entry point of sam_ext: refuses to load unless preloaded,
 *	  defines the configuration variables (sam.*), reserves shared memory
 *	  and registers the background workers that make every Unipile call.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"
#include "utils/guc.h"

#include "sam_ext.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

char	   *sam_database_name = NULL;
char	   *sam_unipile_dsn = NULL;
char	   *sam_unipile_api_key_file = NULL;
bool		sam_allow_private_hook_addresses = false;
int			sam_max_concurrency = 16;
int			sam_batch_size = 100;
int			sam_http_timeout_ms = 30000;
int			sam_connect_timeout_ms = 10000;
int			sam_max_attempts = 5;
int			sam_job_wait_timeout_ms = 30000;
int			sam_max_response_bytes = 8 * 1024 * 1024;
int			sam_retry_base_delay_ms = 30000;
int			sam_workers = 1;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static void sam_shmem_request_hook(void);
static void sam_shmem_startup_hook(void);

/*
 * _PG_init is called when the library is loaded.  sam_ext must be in
 * shared_preload_libraries: it needs shared memory and a background worker.
 */
void
_PG_init(void)
{
	BackgroundWorker worker;
	int			i;

	if (!process_shared_preload_libraries_in_progress)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("sam_ext can only be loaded via shared_preload_libraries"),
				 errhint("Add sam_ext to the shared_preload_libraries configuration variable in postgresql.conf and restart the server.")));

	/* pg_upgrade's server must not start workers that write */
	if (IsBinaryUpgrade)
		return;

	DefineCustomStringVariable("sam.database_name",
							   "Database in which the sam_ext worker serves the sam schema.",
							   NULL,
							   &sam_database_name,
							   "postgres",
							   PGC_POSTMASTER,
							   GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("sam.unipile_dsn",
							   "Base URL of the Unipile API (https://apiN.unipile.com:PORT).",
							   "Empty means the worker does not send anything.",
							   &sam_unipile_dsn,
							   "",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("sam.unipile_api_key_file",
							   "File holding the Unipile API key (X-API-KEY).",
							   "The key itself is never a setting, so it never appears in pg_settings or in the server log.",
							   &sam_unipile_api_key_file,
							   "",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);

	DefineCustomBoolVariable("sam.allow_private_hook_addresses",
							 "Lets notification hooks reach loopback, link-local and private addresses.",
							 "Off: a hook URL set by the application (sam.set_notification_url) cannot make "
							 "the worker post to the database server's own network, such as a cloud metadata service.",
							 &sam_allow_private_hook_addresses,
							 false,
							 PGC_SIGHUP,
							 0,
							 NULL, NULL, NULL);

	DefineCustomIntVariable("sam.max_concurrency",
							"Maximum number of Unipile requests in flight at once.",
							NULL,
							&sam_max_concurrency,
							16, 1, 1024,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("sam.batch_size",
							"Maximum number of outbox rows claimed or recorded in one transaction.",
							NULL,
							&sam_batch_size,
							100, 1, 10000,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("sam.http_timeout",
							"Timeout of one Unipile request.",
							NULL,
							&sam_http_timeout_ms,
							30000, 100, 600000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("sam.connect_timeout",
							"Timeout of establishing a connection to Unipile.",
							NULL,
							&sam_connect_timeout_ms,
							10000, 100, 600000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("sam.max_attempts",
							"Attempts of one Unipile call before it is dead.",
							NULL,
							&sam_max_attempts,
							5, 1, 100,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("sam.job_wait_timeout",
							"How long a job function waits for the worker's Unipile answers.",
							NULL,
							&sam_job_wait_timeout_ms,
							30000, 0, 3600000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("sam.max_response_size",
							"Largest Unipile response body accepted.",
							NULL,
							&sam_max_response_bytes,
							8 * 1024 * 1024, 1024, 256 * 1024 * 1024,
							PGC_SIGHUP, GUC_UNIT_BYTE,
							NULL, NULL, NULL);

	DefineCustomIntVariable("sam.retry_base_delay",
							"Delay before the first retry of a failed Unipile call; doubles on each attempt, with jitter.",
							NULL,
							&sam_retry_base_delay_ms,
							30000, 10, 3600000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("sam.workers",
							"Number of worker processes that make the Unipile calls.",
							"Each claims its own rows and keeps up to sam.max_concurrency requests in flight; worker 0 also runs the jobs that wait for their calls.",
							&sam_workers,
							1, 1, SAM_MAX_WORKERS,
							PGC_POSTMASTER, 0,
							NULL, NULL, NULL);

	MarkGUCPrefixReserved("sam");

	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = sam_shmem_request_hook;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = sam_shmem_startup_hook;

	sam_install_utility_hook();

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 1;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "sam_ext");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "sam_worker_main");
	snprintf(worker.bgw_type, BGW_MAXLEN, "sam_ext worker");
	worker.bgw_notify_pid = 0;
	for (i = 0; i < sam_workers; i++)
	{
		if (i == 0)
			snprintf(worker.bgw_name, BGW_MAXLEN, "sam_ext worker");
		else
			snprintf(worker.bgw_name, BGW_MAXLEN, "sam_ext worker %d", i);
		worker.bgw_main_arg = Int32GetDatum(i);
		RegisterBackgroundWorker(&worker);
	}
}

static void
sam_shmem_request_hook(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	sam_shmem_request();
}

static void
sam_shmem_startup_hook(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	sam_shmem_startup();
}
