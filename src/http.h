/*-------------------------------------------------------------------------
 *
 * http.h
 *	  The worker's HTTP client: libcurl multi, many requests in flight on
 *	  kept-alive connections, each request's result kept as data.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SAM_HTTP_H
#define SAM_HTTP_H

#include <curl/curl.h>

#include "lib/ilist.h"
#include "lib/stringinfo.h"
#include "nodes/pg_list.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

typedef struct SamHttpRequest
{
	int64		id;				/* outbox row */
	MemoryContext cxt;			/* everything of this request lives here */

	/* what to send */
	char	   *method;			/* NULL when the request has none */
	bool		has_path;		/* false: the request names no path */
	char	   *url;
	bool		external;		/* not Unipile (a notification hook): no API key */
	bool		fresh_connection;	/* never on a reused connection (messages) */
	char	   *json_body;		/* NULL when none */
	int			requests_sent;	/* times libcurl was about to send it */
	bool		resend_refused; /* it wanted to send it again by itself */
	bool		address_refused;	/* a hook whose address is private */
	bool		address_tried;	/* a socket was opened to one of its addresses */
	int			nform;			/* multipart/form-data fields, when > 0 */
	char	  **form_names;
	char	  **form_values;

	/* in flight: sam.http_timeout counted from here (see sam_http_drive) */
	TimestampTz started;
	TimestampTz deadline;
	dlist_node	flying_node;

	/* what came back */
	long		status;			/* HTTP status, 0 when there was no answer */
	char	   *error;			/* transport error, NULL when none */
	bool		timed_out;
	StringInfoData response;
	bool		too_large;
	double		elapsed_ms;

	/* libcurl's own state, freed with curl's calls */
	CURL	   *easy;
	struct SamHeaderSet *headers;	/* shared, see http.c */
	curl_mime  *mime;
	char		errbuf[CURL_ERROR_SIZE];
} SamHttpRequest;

extern void sam_http_init(void);
extern void sam_http_shutdown(void);
extern SamHttpRequest *sam_http_new_request(MemoryContext parent, int64 id);
extern void sam_http_start(SamHttpRequest *req, const char *api_key);
extern int	sam_http_drive(int timeout_ms, List **finished);
extern void sam_http_release(SamHttpRequest *req);
extern void sam_http_trim(void);
extern void sam_http_forget_api_key(void);
extern int	sam_http_in_flight(void);

#endif							/* SAM_HTTP_H */
