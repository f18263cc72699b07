/*-------------------------------------------------------------------------
 *
 * pool.c
 *	  The database worker pool: --threads threads, each with its own libpq
 *	  connection, taking requests that need SQL from one FIFO queue.
 *
 * The HTTP threads never wait for the database.  A request that needs a
 * SQL call is suspended (MHD_suspend_connection) and queued here.  The
 * first free worker runs its call, queues the answer and resumes the
 * connection, and the HTTP thread sends the answer.  Any free connection
 * therefore serves any request.  Were the calls made on the HTTP threads,
 * a thread that libmicrohttpd gave several keep-alive connections (it
 * accepts up to ten at a time) would serve them one after the other while
 * the other threads and their database connections stood idle.
 *
 * ingest/pool.c
 *
 *-------------------------------------------------------------------------
 */
#include "sam_ingest.h"

#include <pthread.h>
#include <stdlib.h>

static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pool_cond = PTHREAD_COND_INITIALIZER;
static PoolJob *queue_head;
static PoolJob *queue_tail;
static bool pool_stopping;		/* no new jobs; workers exit when drained */
static bool pool_aborting;		/* queued jobs are answered without SQL */
static pthread_t *workers;
static unsigned num_workers;
static void (*pool_run) (PoolJob *job, bool abort);

/*
 * pool_worker is the loop of one worker: take the oldest job, run it,
 * until the pool is stopping and the queue is empty.
 */
static void *
pool_worker(void *arg)
{
	(void) arg;
	for (;;)
	{
		PoolJob    *job;
		bool		abort;

		pthread_mutex_lock(&pool_lock);
		while (queue_head == NULL && !pool_stopping)
			pthread_cond_wait(&pool_cond, &pool_lock);
		job = queue_head;
		if (job == NULL)
		{
			pthread_mutex_unlock(&pool_lock);
			break;
		}
		queue_head = job->next;
		if (queue_head == NULL)
			queue_tail = NULL;
		abort = pool_aborting;
		pthread_mutex_unlock(&pool_lock);

		pool_run(job, abort);
	}
	return NULL;				/* the thread's database connection closes */
}

/*
 * pool_start starts n workers that hand each job to run().  The stop
 * signals must already be blocked (workers inherit the mask).
 */
void
pool_start(unsigned n, void (*run) (PoolJob *job, bool abort))
{
	unsigned	i;

	pool_run = run;
	workers = calloc(n, sizeof(pthread_t));
	if (workers == NULL)
	{
		ingest_log("out of memory");
		exit(1);
	}
	for (i = 0; i < n; i++)
	{
		if (pthread_create(&workers[i], NULL, pool_worker, NULL) != 0)
		{
			ingest_log("could not start database worker %u", i);
			exit(1);
		}
		num_workers++;
	}
}

/*
 * pool_submit suspends the connection and queues its job; false once the
 * pool is stopping (the connection is then left alone and the caller
 * answers by itself).  Both happen under the lock so that no connection
 * can be suspended after the workers are gone.
 */
bool
pool_submit(PoolJob *job, struct MHD_Connection *conn)
{
	pthread_mutex_lock(&pool_lock);
	if (pool_stopping)
	{
		pthread_mutex_unlock(&pool_lock);
		return false;
	}
	MHD_suspend_connection(conn);
	job->conn = conn;
	job->next = NULL;
	if (queue_tail)
		queue_tail->next = job;
	else
		queue_head = job;
	queue_tail = job;
	pthread_cond_signal(&pool_cond);
	pthread_mutex_unlock(&pool_lock);
	return true;
}

/*
 * pool_abort makes the workers answer the jobs still queued without SQL
 * and cancels the calls in progress, so that a shutdown past its grace
 * period does not wait for slow statements.
 */
void
pool_abort(void)
{
	pthread_mutex_lock(&pool_lock);
	pool_aborting = true;
	pthread_mutex_unlock(&pool_lock);
	db_cancel_all();
}

/*
 * pool_stop refuses new jobs, lets the workers finish the queue and waits
 * for them to exit.  After it no connection is left suspended.
 */
void
pool_stop(void)
{
	unsigned	i;

	pthread_mutex_lock(&pool_lock);
	pool_stopping = true;
	pthread_cond_broadcast(&pool_cond);
	pthread_mutex_unlock(&pool_lock);
	for (i = 0; i < num_workers; i++)
		pthread_join(workers[i], NULL);
	free(workers);
	workers = NULL;
	num_workers = 0;
}
