/*-------------------------------------------------------------------------
 *
 * sam_ingest.h
 *	  Shared declarations of sam_ingest, the thin HTTP front of sam_ext:
 *	  configuration, the route table, the database worker pool and its
 *	  per-thread connections, metrics and logging.
 *
 * sam_ingest receives Unipile webhooks and the scheduler's cron calls and
 * turns each into exactly one fixed SQL call.  It holds no business logic:
 * everything it does not check here (secret header, body size, route) is
 * decided by the extension's SQL functions.
 *
 * ingest/sam_ingest.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef SAM_INGEST_H
#define SAM_INGEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <libpq-fe.h>
#include <microhttpd.h>

#define SAM_INGEST_VERSION	"1.0"

/* What a route does; decides which checks and which SQL call apply. */
typedef enum RouteKind
{
	RK_WEBHOOK,					/* POST, webhook secret, sam.ingest_webhook() */
	RK_CRON,					/* POST, x-cron-secret, SELECT sam.<fn>() */
	RK_HEALTHZ,					/* GET, SELECT 1 */
	RK_METRICS,					/* GET, own counters + sam.metrics_text() */
	RK_METRICS_SELF,			/* GET, own counters only, no SQL */
	RK_NOT_FOUND				/* everything else */
} RouteKind;

typedef struct Route
{
	const char *path;			/* exact path, no query string */
	RouteKind	kind;
	const char *source;			/* RK_WEBHOOK: the source argument */
	const char *function;		/* RK_CRON: "sam.check_relations()" */
	const char *sql;			/* RK_CRON: fixed SQL text */
} Route;

/* The routes; the last entry is the catch-all (404). */
extern const Route routes[];
extern const int num_routes;

typedef struct IngestConfig
{
	char	   *database_url;
	char	   *listen;
	unsigned	port;
	char	   *webhook_secret;	/* NULL: every webhook is 401 */
	size_t		webhook_secret_len;
	char	   *webhook_header;
	char	   *cron_secret;	/* NULL: every cron call is 401 */
	size_t		cron_secret_len;
	char	   *metrics_secret;	/* NULL: /metrics needs none */
	size_t		metrics_secret_len;
	size_t		max_body;
	unsigned	threads;
	unsigned	batch;			/* most webhooks stored in one transaction */
	unsigned	max_connections;	/* open HTTP connections at most */
	unsigned	per_ip_connections; /* of them from one address, 0: no limit */
	unsigned	idle_timeout;	/* seconds a connection may stay silent */
	unsigned	metrics_max_age;	/* seconds sam.metrics_text() is reused */
} IngestConfig;

extern IngestConfig ingest_config;

/* Set once SIGTERM/SIGINT arrived: answers carry "Connection: close". */
extern volatile int ingest_shutting_down;

/* Requests between their first callback and their completion. */
extern int	ingest_in_flight;

/* sam_ingest.c */
extern void ingest_log(const char *fmt,...) __attribute__((format(printf, 1, 2)));
extern int64_t monotonic_ns(void);

/* db.c */
typedef enum DbOutcome
{
	DB_OK,						/* one non-NULL value in value/value_len */
	DB_NULL,					/* the call returned SQL NULL */
	DB_ERROR,					/* SQL error: sqlstate and message are set */
	DB_UNAVAILABLE				/* no connection, or it broke during the call */
} DbOutcome;

typedef struct DbResult
{
	DbOutcome	outcome;
	PGresult   *res;			/* owned; released by db_result_clear() */
	const char *value;			/* DB_OK: points into res */
	size_t		value_len;
	char		sqlstate[6];	/* DB_ERROR: five characters, or "" */
	const char *message;		/* DB_ERROR: primary message */
} DbResult;

extern void db_init(const char *conninfo);
extern void db_call(const char *sql, int nparams, const char *const *values,
					const int *lengths, const int *formats, bool may_retry,
					DbResult *out);
extern bool db_call_batch(const char *sql, unsigned n, int nparams,
						  const char *const *values, const int *lengths,
						  const int *formats, DbResult *outs, char *sqlstate);
extern void db_result_clear(DbResult *r);
extern void db_cancel_all(void);

/* pool.c */
#define MAX_BATCH	64			/* largest --batch */

typedef struct PoolJob
{
	struct PoolJob *next;
	struct MHD_Connection *conn;	/* suspended while queued and run */
	bool		batchable;		/* may run with others of its kind (webhooks) */
} PoolJob;

extern void pool_start(unsigned n, unsigned max_batch,
					   void (*run) (PoolJob **jobs, unsigned n, bool abort));
extern int	pool_queued(void);
extern bool pool_submit(PoolJob *job, struct MHD_Connection *conn);
extern void pool_abort(void);
extern void pool_stop(void);

/* metrics.c */
typedef enum WebhookReject
{
	WR_UNAUTHORIZED,
	WR_TOO_LARGE,
	WR_INVALID_JSON,
	WR_DB_UNAVAILABLE,
	WR_INTERNAL,
	NUM_WEBHOOK_REJECTS
} WebhookReject;

typedef struct StrBuf
{
	char	   *data;
	size_t		len;
	size_t		cap;
} StrBuf;

extern void sb_append(StrBuf *sb, const char *s, size_t n);
extern void sb_appends(StrBuf *sb, const char *s);
extern void sb_appendf(StrBuf *sb, const char *fmt,...) __attribute__((format(printf, 2, 3)));
extern void sb_append_json_string(StrBuf *sb, const char *s, size_t max_bytes);
extern void sb_free(StrBuf *sb);

extern void metrics_init(void);
extern void metrics_observe(int route, unsigned status, int64_t duration_ns);
extern void metrics_webhook_reject(WebhookReject why);
extern void metrics_db_connect(bool ok);
extern void metrics_webhook_batch(unsigned n, bool committed);
extern void metrics_render(StrBuf *sb);

/* routes.c */
extern int	route_lookup(const char *path);
extern enum MHD_Result handle_request(void *cls, struct MHD_Connection *conn,
									  const char *url, const char *method,
									  const char *version,
									  const char *upload_data,
									  size_t *upload_data_size, void **con_cls);
extern void request_completed(void *cls, struct MHD_Connection *conn,
							  void **con_cls,
							  enum MHD_RequestTerminationCode toe);
extern void run_jobs(PoolJob **jobs, unsigned n, bool abort);

#endif							/* SAM_INGEST_H */
