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
 * Webhook deliveries are batched: a worker that takes a webhook also takes
 * the webhooks queued right behind it, up to --batch, and stores them in
 * one transaction (routes.c, db.c).  Nothing waits for a batch to fill:
 * when the database keeps up, each worker finds one job and runs it alone;
 * when it falls behind, requests queue while the workers are busy and the
 * next worker takes them together, paying for one commit and one round
 * trip instead of one per webhook.
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
static int	queue_length;
static pthread_t *workers;
static unsigned num_workers;
static unsigned batch_max = 1;
static void (*pool_run) (PoolJob **jobs, unsigned n, bool abort);

/*
 * pool_worker is the loop of one worker: take the oldest job (and, if it
 * is batchable, the batchable jobs right behind it), run them, until the
 * pool is stopping and the queue is empty.
 */
static void *
pool_worker(void *arg)
{
	PoolJob    *jobs[MAX_BATCH];

	(void) arg;
	for (;;)
	{
		unsigned	n = 0;
		bool		abort;

		pthread_mutex_lock(&pool_lock);
		while (queue_head == NULL && !pool_stopping)
			pthread_cond_wait(&pool_cond, &pool_lock);
		if (queue_head == NULL)
		{
			pthread_mutex_unlock(&pool_lock);
			break;
		}
		do
		{
			jobs[n++] = queue_head;
			queue_head = queue_head->next;
		} while (queue_head != NULL && n < batch_max &&
				 jobs[0]->batchable && queue_head->batchable);
		if (queue_head == NULL)
			queue_tail = NULL;
		queue_length -= (int) n;
		abort = pool_aborting;
		pthread_mutex_unlock(&pool_lock);

		pool_run(jobs, n, abort);
	}
	return NULL;				/* the thread's database connection closes */
}

/*
 * pool_start starts n workers that hand the jobs they take to run(), at
 * most max_batch batchable jobs at a time.  The stop signals must already
 * be blocked (workers inherit the mask).
 */
void
pool_start(unsigned n, unsigned max_batch,
		   void (*run) (PoolJob **jobs, unsigned n, bool abort))
{
	unsigned	i;

	pool_run = run;
	batch_max = max_batch < 1 ? 1 : max_batch > MAX_BATCH ? MAX_BATCH : max_batch;
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
	queue_length++;
	pthread_cond_signal(&pool_cond);
	pthread_mutex_unlock(&pool_lock);
	return true;
}

/*
 * pool_queued returns the number of jobs waiting for a worker (/metrics).
 */
int
pool_queued(void)
{
	int			n;

	pthread_mutex_lock(&pool_lock);
	n = queue_length;
	pthread_mutex_unlock(&pool_lock);
	return n;
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
