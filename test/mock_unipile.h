/*-------------------------------------------------------------------------
 *
 * mock_unipile.h
 *	  Shared declarations of the mock Unipile v1 API server used by the
 *	  sam_ext tests and benchmarks.
 *
 * The server is split into four files:
 *	  mock_unipile.c	CLI, libmicrohttpd glue, request bodies, delays
 *	  mock_routes.c		simulated LinkedIn state, /api/v1 and /_mock routes
 *	  mock_delivery.c	webhook delivery thread (libcurl) and its records
 *	  mock_util.c		hash map, vectors, string buffers, ids, time
 *
 * All shared state lives behind the single mutex g_lock.
 *
 * test/mock_unipile.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef MOCK_UNIPILE_H
#define MOCK_UNIPILE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

/* ---------------------------------------------------------------------
 * Global configuration and lock (mock_unipile.c)
 * ---------------------------------------------------------------------
 */
typedef struct MockConfig
{
	char	   *api_key;		/* NULL or "" = no key check */
	bool		quiet;			/* no per-request stderr line */
	bool		log_enabled;	/* keep the /_mock/log request log */
	bool		echo_sent;		/* emit message_received for our own sends */
	size_t		log_max;		/* ring size of the request/delivery logs */
} MockConfig;

extern MockConfig g_config;
extern pthread_mutex_t g_lock;

/* ---------------------------------------------------------------------
 * Utilities (mock_util.c)
 * ---------------------------------------------------------------------
 */

/* String-keyed hash map; keys are copied, values are borrowed. */
typedef struct HashEntry
{
	char	   *key;
	void	   *value;
	uint32_t	hash;
	struct HashEntry *next;
} HashEntry;

typedef struct HashMap
{
	HashEntry **buckets;
	size_t		nbuckets;
	size_t		count;
} HashMap;

extern void hm_init(HashMap *m);
extern void *hm_get(const HashMap *m, const char *key);
extern void hm_put(HashMap *m, const char *key, void *value);
extern void *hm_del(HashMap *m, const char *key);
extern void hm_free(HashMap *m, void (*free_value) (void *));

/* Growable array of pointers. */
typedef struct PtrVec
{
	void	  **items;
	size_t		n;
	size_t		cap;
} PtrVec;

extern void pv_push(PtrVec *v, void *p);
extern void pv_insert(PtrVec *v, size_t at, void *p);
extern void *pv_remove(PtrVec *v, size_t at);
extern bool pv_remove_ptr(PtrVec *v, void *p);
extern void pv_free(PtrVec *v, void (*free_item) (void *));

/* Growable string buffer (malloc'ed; the data may be handed to MHD). */
typedef struct StrBuf
{
	char	   *data;
	size_t		len;
	size_t		cap;
} StrBuf;

extern void sb_append(StrBuf *sb, const char *s, size_t len);
extern void sb_puts(StrBuf *sb, const char *s);
extern void sb_printf(StrBuf *sb, const char *fmt,...)
			__attribute__((format(printf, 2, 3)));

/*
 * Ring of serialized JSON records with increasing sequence numbers
 * (request log and webhook delivery records).
 */
typedef struct JsonRing
{
	char	  **items;
	size_t		cap;
	uint64_t	first_seq;		/* seq of the oldest kept item */
	uint64_t	next_seq;		/* seq the next item gets */
} JsonRing;

extern void ring_init(JsonRing *r, size_t cap);
extern void ring_push(JsonRing *r, char *json);
extern void ring_clear(JsonRing *r);
extern void ring_dump(const JsonRing *r, uint64_t since, size_t limit,
					  StrBuf *out);

extern char *xstrdup(const char *s);
extern char *xstrdup_or_null(const char *s);
extern void *xmalloc(size_t n);
extern void *xcalloc(size_t n, size_t sz);

extern int64_t wall_ms(void);
extern int64_t mono_ms(void);
extern void format_iso8601(int64_t ms, char *buf, size_t buflen);
extern size_t utf8_codepoints(const char *s);
extern uint64_t mix64(uint64_t x);
extern uint32_t str_hash(const char *s);
extern void make_id22(uint64_t n, uint64_t salt, char out[23]);
extern char *base64_encode(const unsigned char *data, size_t len);
extern unsigned char *base64_decode(const char *s, size_t *outlen);
extern bool parse_int64(const char *s, int64_t *out);

/* ---------------------------------------------------------------------
 * Routes and state (mock_routes.c)
 * ---------------------------------------------------------------------
 */

/* What the HTTP layer must send back for one request. */
typedef enum ReplyKind
{
	REPLY_JSON,					/* body is a json_t (stolen) */
	REPLY_RAW,					/* body_raw with content_type */
	REPLY_DROP					/* close the connection, no answer */
} ReplyKind;

typedef struct Reply
{
	ReplyKind	kind;
	unsigned int status;
	json_t	   *json;			/* REPLY_JSON */
	char	   *raw;			/* REPLY_RAW: malloc'ed */
	size_t		raw_len;
	const char *content_type;	/* REPLY_RAW */
	int64_t		delay_ms;		/* answer after this many ms (> 0) */
	const char *allow;			/* Allow header for 405, or NULL */
} Reply;

/* One parsed incoming request, as seen by the routing code. */
typedef struct MockRequest
{
	const char *method;
	const char *path;			/* percent-decoded by MHD */
	json_t	   *query;			/* object: name -> string or array */
	json_t	   *body;			/* JSON body, form fields object, raw string
								 * or NULL */
	bool		body_is_json;	/* body came from a JSON document */
	bool		body_malformed; /* Content-Type JSON but body unparsable */
	bool		body_too_large;
	const char *api_key;		/* X-API-KEY header or NULL */
} MockRequest;

extern void state_init(void);
extern void state_shutdown(void);
extern void handle_request(const MockRequest *req, Reply *reply);
extern void state_tick(void);
extern int64_t sim_now_locked(void);

/* ---------------------------------------------------------------------
 * Webhook delivery (mock_delivery.c)
 * ---------------------------------------------------------------------
 */
extern void delivery_start(void);
extern void delivery_stop(void);
extern void delivery_enqueue_locked(const char *webhook_id, const char *url,
									json_t *headers, const char *body,
									const char *event);
extern void delivery_reset_locked(void);
extern json_t *deliveries_info_locked(void);
extern void deliveries_dump_locked(uint64_t since, size_t limit, StrBuf *out);
extern void deliveries_set_cap_locked(size_t cap);

#endif							/* MOCK_UNIPILE_H */
