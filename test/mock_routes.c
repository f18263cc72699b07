/*-------------------------------------------------------------------------
 *
 * mock_routes.c
 *	  Simulated LinkedIn network and the HTTP routes of the mock Unipile
 *	  server: the Unipile v1 API (/api/v1/...) and the control API used by
 *	  tests (/_mock/...).
 *
 * Model.  People are upserted with POST /_mock/people.  Each account has
 * pending sent invitations, relations (sorted newest first) and 1:1
 * chats.  Time-driven behaviour (a person accepting an invitation, a
 * person replying) is kept in a min-heap of events keyed by simulated
 * time; every request, every clock change and a background tick pop the
 * due events, so evaluation is O(log n) per event and O(1) otherwise.
 *
 * Everything here runs under g_lock.  handle_request() takes the lock
 * itself; the *_locked functions expect the caller to hold it.
 *
 * test/mock_routes.c
 *
 *-------------------------------------------------------------------------
 */
#include "mock_unipile.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define INVITATION_ID_BASE	UINT64_C(7224673722165518336)
#define INVITATION_ID_STEP	UINT64_C(1000003)
#define SALT_CHAT			UINT64_C(0x43484154)
#define SALT_MESSAGE		UINT64_C(0x4D534753)
#define SALT_WEBHOOK		UINT64_C(0x57484F4F)
#define SALT_ATTENDEE		UINT64_C(0x41545444)
#define MAX_INVITE_CHARS	300
#define DEFAULT_REPLY_TEXT	"Thanks for reaching out!"

typedef struct Account Account;

typedef struct Person
{
	char	   *provider_id;
	char	   *public_identifier;
	char	   *first_name;
	char	   *last_name;
	char	   *headline;
	int64_t		accept_after_ms;	/* < 0: never accepts */
	int64_t		reply_after_ms; /* < 0: never replies */
	char	   *reply_text;
	int64_t		reply_after_step;	/* reply after our N-th message */
} Person;

typedef struct Invitation
{
	char		id[24];
	uint64_t	num;
	Person	   *person;
	char	   *text;			/* NULL: no note */
	int64_t		sent_at;
	Account    *account;
} Invitation;

typedef struct Relation
{
	Person	   *person;
	int64_t		created_at;
	uint64_t	conn_no;
} Relation;

typedef struct Message
{
	char		id[23];
	char	   *sender;			/* provider id */
	char	   *text;
	int64_t		ts;
} Message;

typedef struct Chat
{
	char		id[23];
	Account    *account;
	Person	   *attendee;
	PtrVec		messages;		/* oldest first */
	int64_t		our_sent;		/* messages we sent through the API */
	bool		reply_scheduled;
} Chat;

/* A webhook payload held back while its account is disconnected. */
typedef struct HeldEvent
{
	char	   *source;
	char	   *event;
	json_t	   *payload;
} HeldEvent;

struct Account
{
	char	   *id;
	char	   *provider_id;
	char	   *name;
	bool		connected;
	PtrVec		invitations;	/* pending, oldest first */
	HashMap		inv_by_person;	/* provider id -> Invitation */
	HashMap		relations;		/* provider id -> Relation */
	PtrVec		rel_sorted;		/* Relation, newest first */
	HashMap		chat_by_person; /* provider id -> Chat */
	PtrVec		chats;			/* Chat, creation order */
	PtrVec		held;			/* HeldEvent */
};

typedef struct Webhook
{
	char		id[23];
	char	   *source;
	char	   *url;
	char	   *name;
	char	   *format;
	bool		enabled;
	json_t	   *headers;		/* array of {key,value} */
	json_t	   *account_ids;	/* array of strings (maybe empty) */
	json_t	   *events;			/* array of strings (maybe empty) */
} Webhook;

typedef struct Fault
{
	uint64_t	id;
	char	   *method;			/* NULL: any */
	char	   *path_prefix;	/* NULL: any /api/v1 path */
	int			status;			/* 0: none */
	char	   *type;
	char	   *title;
	char	   *detail;
	int64_t		delay_ms;
	bool		drop;
	bool		garbage;
	bool		html;
	bool		after;			/* the request takes effect, then its answer
								 * is replaced by the fault's */
	int64_t		count;			/* remaining; -1 forever */
	uint64_t	applied;
} Fault;

typedef enum EventKind
{
	EV_ACCEPT,
	EV_REPLY
} EventKind;

typedef struct Event
{
	int64_t		due;
	uint64_t	seq;
	EventKind	kind;
	uint64_t	inv_num;		/* EV_ACCEPT */
	Chat	   *chat;			/* EV_REPLY */
} Event;

typedef enum RouteId
{
	R_INVITE,
	R_INVITE_SENT,
	R_INVITE_CANCEL,
	R_RELATIONS,
	R_ME,
	R_PROFILE,
	R_CHAT_START,
	R_CHAT_SEND,
	R_CHAT_MESSAGES,
	R_WEBHOOK_CREATE,
	R_WEBHOOK_LIST,
	R_WEBHOOK_DELETE,
	R_UNKNOWN,
	R_BAD_METHOD,
	R_HOOK,						/* POST /hooks/...: a notification receiver */
	R_COUNT
} RouteId;

static const char *const route_names[R_COUNT] = {
	"POST /api/v1/users/invite",
	"GET /api/v1/users/invite/sent",
	"DELETE /api/v1/users/invite/sent/{invitation_id}",
	"GET /api/v1/users/relations",
	"GET /api/v1/users/me",
	"GET /api/v1/users/{identifier}",
	"POST /api/v1/chats",
	"POST /api/v1/chats/{chat_id}/messages",
	"GET /api/v1/chats/{chat_id}/messages",
	"POST /api/v1/webhooks",
	"GET /api/v1/webhooks",
	"DELETE /api/v1/webhooks/{webhook_id}",
	"(unknown route)",
	"(method not allowed)",
	"POST /hooks/{any}"
};

/* ---------------------------------------------------------------------
 * State
 * ---------------------------------------------------------------------
 */
static HashMap people;			/* provider id -> Person (owned) */
static HashMap people_by_pub;	/* public identifier -> Person */
static HashMap accounts;		/* account id -> Account (owned) */
static HashMap invitations;		/* invitation id -> Invitation */
static HashMap chats;			/* chat id -> Chat */
static PtrVec webhooks;			/* Webhook (owned) */
static PtrVec faults;			/* Fault (owned) */

static Event *heap;
static size_t heap_n;
static size_t heap_cap;

static uint64_t inv_counter;
static uint64_t chat_counter;
static uint64_t msg_counter;
static uint64_t wh_counter;
static uint64_t conn_counter;
static uint64_t bulk_counter;
static uint64_t fault_counter;
static uint64_t event_seq;
static int64_t clock_offset;

static JsonRing req_log;
static uint64_t stat_requests;
static uint64_t stat_by_route[R_COUNT];
static uint64_t stat_by_status[600];

int64_t
sim_now_locked(void)
{
	return wall_ms() + clock_offset;
}

/* ---------------------------------------------------------------------
 * Event heap
 * ---------------------------------------------------------------------
 */
static bool
ev_before(const Event *a, const Event *b)
{
	return a->due < b->due || (a->due == b->due && a->seq < b->seq);
}

static void
heap_push(int64_t due, EventKind kind, uint64_t inv_num, Chat *chat)
{
	size_t		i;

	if (heap_n == heap_cap)
	{
		heap_cap = heap_cap ? heap_cap * 2 : 64;
		heap = realloc(heap, heap_cap * sizeof(Event));
		if (heap == NULL)
			abort();
	}
	i = heap_n++;
	heap[i].due = due;
	heap[i].seq = ++event_seq;
	heap[i].kind = kind;
	heap[i].inv_num = inv_num;
	heap[i].chat = chat;
	while (i > 0)
	{
		size_t		parent = (i - 1) / 2;
		Event		tmp;

		if (!ev_before(&heap[i], &heap[parent]))
			break;
		tmp = heap[i];
		heap[i] = heap[parent];
		heap[parent] = tmp;
		i = parent;
	}
}

static Event
heap_pop(void)
{
	Event		top = heap[0];
	size_t		i = 0;

	heap[0] = heap[--heap_n];
	for (;;)
	{
		size_t		l = 2 * i + 1,
					r = l + 1,
					m = i;
		Event		tmp;

		if (l < heap_n && ev_before(&heap[l], &heap[m]))
			m = l;
		if (r < heap_n && ev_before(&heap[r], &heap[m]))
			m = r;
		if (m == i)
			break;
		tmp = heap[i];
		heap[i] = heap[m];
		heap[m] = tmp;
		i = m;
	}
	return top;
}

/* ---------------------------------------------------------------------
 * Constructors / destructors
 * ---------------------------------------------------------------------
 */
static void
person_free(void *p)
{
	Person	   *person = p;

	free(person->provider_id);
	free(person->public_identifier);
	free(person->first_name);
	free(person->last_name);
	free(person->headline);
	free(person->reply_text);
	free(person);
}

/* Find a person by provider id, creating a never-accepting one if asked. */
static Person *
get_person(const char *provider_id, bool create)
{
	Person	   *p = hm_get(&people, provider_id);

	if (p == NULL && create)
	{
		p = xcalloc(1, sizeof(Person));
		p->provider_id = xstrdup(provider_id);
		p->accept_after_ms = -1;
		p->reply_after_ms = -1;
		p->reply_after_step = 1;
		hm_put(&people, provider_id, p);
	}
	return p;
}

static void
message_free(void *p)
{
	Message    *m = p;

	free(m->sender);
	free(m->text);
	free(m);
}

static void
chat_free(void *p)
{
	Chat	   *c = p;

	pv_free(&c->messages, message_free);
	free(c);
}

static void
invitation_free(void *p)
{
	Invitation *inv = p;

	free(inv->text);
	free(inv);
}

static void
held_free(void *p)
{
	HeldEvent  *h = p;

	free(h->source);
	free(h->event);
	json_decref(h->payload);
	free(h);
}

static void
account_free(void *p)
{
	Account    *a = p;

	pv_free(&a->invitations, invitation_free);
	hm_free(&a->inv_by_person, NULL);
	hm_free(&a->relations, free);
	pv_free(&a->rel_sorted, NULL);
	hm_free(&a->chat_by_person, NULL);
	pv_free(&a->chats, chat_free);
	pv_free(&a->held, held_free);
	free(a->id);
	free(a->provider_id);
	free(a->name);
	free(a);
}

/* Find an account; unknown accounts are created (status OK) if asked. */
static Account *
get_account(const char *id, bool create)
{
	Account    *a = hm_get(&accounts, id);

	if (a == NULL && create)
	{
		StrBuf		sb = {0};

		a = xcalloc(1, sizeof(Account));
		a->id = xstrdup(id);
		sb_printf(&sb, "ACoOWN%s", id);
		a->provider_id = sb.data;
		sb = (StrBuf) {0};
		sb_printf(&sb, "Mock User %s", id);
		a->name = sb.data;
		a->connected = true;
		hm_init(&a->inv_by_person);
		hm_init(&a->relations);
		hm_init(&a->chat_by_person);
		hm_put(&accounts, id, a);
	}
	return a;
}

static void
webhook_free(void *p)
{
	Webhook    *w = p;

	free(w->source);
	free(w->url);
	free(w->name);
	free(w->format);
	json_decref(w->headers);
	json_decref(w->account_ids);
	json_decref(w->events);
	free(w);
}

static void
fault_free(void *p)
{
	Fault	   *f = p;

	free(f->method);
	free(f->path_prefix);
	free(f->type);
	free(f->title);
	free(f->detail);
	free(f);
}

static void
state_init_locked(void)
{
	hm_init(&people);
	hm_init(&people_by_pub);
	hm_init(&accounts);
	hm_init(&invitations);
	hm_init(&chats);
	inv_counter = chat_counter = msg_counter = wh_counter = 0;
	conn_counter = bulk_counter = fault_counter = event_seq = 0;
	clock_offset = 0;
	heap_n = 0;
	stat_requests = 0;
	memset(stat_by_route, 0, sizeof(stat_by_route));
	memset(stat_by_status, 0, sizeof(stat_by_status));
}

static void
state_free_locked(void)
{
	hm_free(&accounts, account_free);
	hm_free(&invitations, NULL);
	hm_free(&chats, NULL);
	hm_free(&people_by_pub, NULL);
	hm_free(&people, person_free);
	pv_free(&webhooks, webhook_free);
	pv_free(&faults, fault_free);
	heap_n = 0;
}

void
state_init(void)
{
	pthread_mutex_lock(&g_lock);
	state_init_locked();
	ring_init(&req_log, g_config.log_max);
	pthread_mutex_unlock(&g_lock);
}

void
state_shutdown(void)
{
	pthread_mutex_lock(&g_lock);
	state_free_locked();
	free(heap);
	heap = NULL;
	heap_cap = 0;
	ring_clear(&req_log);
	free(req_log.items);
	req_log.items = NULL;
	pthread_mutex_unlock(&g_lock);
}

/* ---------------------------------------------------------------------
 * JSON helpers
 * ---------------------------------------------------------------------
 */
static json_t *
str_or_null(const char *s)
{
	return s ? json_string(s) : json_null();
}

/* "First Last", or NULL when the person has no name at all. */
static char *
full_name(const Person *p)
{
	StrBuf		sb = {0};

	if (p->first_name == NULL && p->last_name == NULL)
		return NULL;
	if (p->first_name)
		sb_puts(&sb, p->first_name);
	if (p->first_name && p->last_name && *p->first_name && *p->last_name)
		sb_puts(&sb, " ");
	if (p->last_name)
		sb_puts(&sb, p->last_name);
	return sb.data ? sb.data : xstrdup("");
}

/* https://www.linkedin.com/in/<slug>/ */
static json_t *
profile_url(const char *slug)
{
	StrBuf		sb = {0};
	json_t	   *j;

	sb_printf(&sb, "https://www.linkedin.com/in/%s/", slug);
	j = json_string(sb.data);
	free(sb.data);
	return j;
}

static json_t *
iso_json(int64_t ms)
{
	char		buf[40];

	format_iso8601(ms, buf, sizeof(buf));
	return json_string(buf);
}

/*
 * A request field as a string: plain strings as is, the first element of
 * a repeated (array) field, NULL otherwise.
 */
static const char *
field_str(json_t *obj, const char *key)
{
	json_t	   *v = json_is_object(obj) ? json_object_get(obj, key) : NULL;

	if (json_is_array(v))
		v = json_array_get(v, 0);
	return json_string_value(v);
}

static const char *
query_str(const MockRequest *req, const char *key)
{
	return field_str(req->query, key);
}

static bool
nonempty(const char *s)
{
	return s != NULL && *s != '\0';
}

static bool
json_array_has_string(json_t *arr, const char *s)
{
	size_t		i;
	json_t	   *v;

	json_array_foreach(arr, i, v)
	{
		if (json_is_string(v) && strcmp(json_string_value(v), s) == 0)
			return true;
	}
	return false;
}

/* ---------------------------------------------------------------------
 * Replies
 * ---------------------------------------------------------------------
 */
static void
reply_json(Reply *r, unsigned int status, json_t *body)
{
	r->kind = REPLY_JSON;
	r->status = status;
	r->json = body;
}

/* Unipile error body {"status","type","title","detail"}. */
static void
reply_error(Reply *r, unsigned int status, const char *type,
			const char *title, const char *detail)
{
	json_t	   *j = json_object();

	json_object_set_new(j, "status", json_integer(status));
	json_object_set_new(j, "type", json_string(type));
	json_object_set_new(j, "title", json_string(title));
	if (detail)
		json_object_set_new(j, "detail", json_string(detail));
	reply_json(r, status, j);
}

static void
reply_missing(Reply *r, const char *what)
{
	StrBuf		sb = {0};

	sb_printf(&sb, "Missing required parameter(s): %s.", what);
	reply_error(r, 400, "errors/missing_parameters", "Missing parameters", sb.data);
	free(sb.data);
}

static void
reply_invalid(Reply *r, const char *detail)
{
	reply_error(r, 400, "errors/invalid_parameters", "Invalid parameters", detail);
}

static void
reply_malformed(Reply *r)
{
	reply_error(r, 400, "errors/malformed_request", "Malformed request",
				"The request body could not be parsed as JSON.");
}

static void
reply_not_found(Reply *r, const char *detail)
{
	reply_error(r, 404, "errors/resource_not_found", "Resource not found.", detail);
}

static void
reply_disconnected(Reply *r)
{
	reply_error(r, 401, "errors/disconnected_account", "Disconnected account",
				"The account appears to be disconnected from the provider service.");
}

/* Default type/title for an injected error status. */
static void
fault_defaults(int status, const char **type, const char **title)
{
	switch (status)
	{
		case 400:
			*type = "errors/invalid_parameters";
			*title = "Invalid parameters";
			break;
		case 401:
			*type = "errors/disconnected_account";
			*title = "Disconnected account";
			break;
		case 403:
			*type = "errors/account_restricted";
			*title = "Account restricted";
			break;
		case 404:
			*type = "errors/resource_not_found";
			*title = "Resource not found.";
			break;
		case 422:
			*type = "errors/cannot_resend_yet";
			*title = "Cannot resend yet";
			break;
		case 429:
			*type = "errors/too_many_requests";
			*title = "Too many requests";
			break;
		case 501:
			*type = "errors/feature_not_implemented";
			*title = "Feature not implemented";
			break;
		case 503:
			*type = "errors/service_unavailable";
			*title = "Service unavailable";
			break;
		case 504:
			*type = "errors/request_timeout";
			*title = "Request timeout";
			break;
		default:
			if (status >= 500)
			{
				*type = "errors/unexpected_error";
				*title = "Unexpected error";
			}
			else
			{
				*type = "errors/invalid_request";
				*title = "Invalid request";
			}
			break;
	}
}

/* Parse an optional limit query parameter; false (and a 400) if invalid. */
static bool
parse_limit(const MockRequest *req, Reply *r, int64_t def, int64_t max,
			int64_t *limit)
{
	const char *s = query_str(req, "limit");
	StrBuf		sb = {0};

	*limit = def;
	if (s == NULL)
		return true;
	if (parse_int64(s, limit) && *limit >= 1 && *limit <= max)
		return true;
	sb_printf(&sb, "limit must be an integer between 1 and %lld.", (long long) max);
	reply_invalid(r, sb.data);
	free(sb.data);
	return false;
}

/*
 * Decode an opaque cursor: base64 of {"limit":L,"startIndex":N} like the
 * official SDK's decoded cursor type.  Without a cursor start is 0.
 */
static bool
parse_cursor(const MockRequest *req, Reply *r, int64_t *start)
{
	const char *s = query_str(req, "cursor");
	unsigned char *raw;
	size_t		len;
	json_t	   *j;
	json_t	   *si;

	*start = 0;
	if (s == NULL)
		return true;
	raw = base64_decode(s, &len);
	j = raw ? json_loadb((const char *) raw, len, 0, NULL) : NULL;
	free(raw);
	si = json_object_get(j, "startIndex");
	if (json_is_integer(si) && json_integer_value(si) >= 0)
	{
		*start = json_integer_value(si);
		json_decref(j);
		return true;
	}
	json_decref(j);
	reply_invalid(r, "Invalid cursor.");
	return false;
}

static json_t *
make_cursor(int64_t limit, int64_t start, size_t total)
{
	char		buf[96];
	char	   *enc;
	json_t	   *j;

	if ((size_t) start >= total)
		return json_null();
	snprintf(buf, sizeof(buf), "{\"limit\":%lld,\"startIndex\":%lld}",
			 (long long) limit, (long long) start);
	enc = base64_encode((const unsigned char *) buf, strlen(buf));
	j = json_string(enc);
	free(enc);
	return j;
}

/* ---------------------------------------------------------------------
 * Webhook emission
 * ---------------------------------------------------------------------
 */

/*
 * Queue `payload` (stolen) for every enabled webhook of `source` that
 * covers `account_id` and `event`.  For users/messaging payloads the
 * webhook's name is written into "webhook_name".
 */
static void
dispatch_event(const char *source, const char *event, const char *account_id,
			   json_t *payload)
{
	bool		named = strcmp(source, "account_status") != 0;

	for (size_t i = 0; i < webhooks.n; i++)
	{
		Webhook    *w = webhooks.items[i];
		char	   *s;

		if (!w->enabled || strcmp(w->source, source) != 0)
			continue;
		if (account_id && json_array_size(w->account_ids) > 0 &&
			!json_array_has_string(w->account_ids, account_id))
			continue;
		if (named && event && json_array_size(w->events) > 0 &&
			!json_array_has_string(w->events, event))
			continue;
		if (named)
			json_object_set_new(payload, "webhook_name", json_string(w->name));
		s = json_dumps(payload, JSON_COMPACT);
		if (s)
		{
			delivery_enqueue_locked(w->id, w->url, w->headers, s, event);
			free(s);
		}
	}
	json_decref(payload);
}

/*
 * Emit an event for an account.  While the account is disconnected,
 * users/messaging events are held and replayed on reconnection (Unipile
 * replays messages received during a disconnection).
 */
static void
emit_event(Account *acc, const char *source, const char *event, json_t *payload)
{
	if (acc && !acc->connected && strcmp(source, "account_status") != 0)
	{
		HeldEvent  *h = xcalloc(1, sizeof(HeldEvent));

		h->source = xstrdup(source);
		h->event = xstrdup_or_null(event);
		h->payload = payload;
		pv_push(&acc->held, h);
		return;
	}
	dispatch_event(source, event, acc ? acc->id : NULL, payload);
}

static json_t *
attendee_json_self(const Account *acc)
{
	char		aid[23];

	make_id22(str_hash(acc->provider_id), SALT_ATTENDEE, aid);
	return json_pack("{s:s,s:s,s:s,s:o}",
					 "attendee_id", aid,
					 "attendee_name", acc->name,
					 "attendee_provider_id", acc->provider_id,
					 "attendee_profile_url", profile_url(acc->provider_id));
}

static json_t *
attendee_json_person(const Person *p)
{
	char		aid[23];
	char	   *name = full_name(p);
	json_t	   *j;

	make_id22(str_hash(p->provider_id), SALT_ATTENDEE, aid);
	j = json_pack("{s:s,s:s,s:s,s:o}",
				  "attendee_id", aid,
				  "attendee_name", name ? name : "",
				  "attendee_provider_id", p->provider_id,
				  "attendee_profile_url", profile_url(p->provider_id));
	free(name);
	return j;
}

/* message_received webhook for one message of a chat. */
static void
emit_message_received(Chat *chat, Message *msg)
{
	Account    *acc = chat->account;
	bool		from_us = strcmp(msg->sender, acc->provider_id) == 0;
	json_t	   *p = json_object();
	json_t	   *self = attendee_json_self(acc);
	json_t	   *other = attendee_json_person(chat->attendee);

	json_object_set_new(p, "account_id", json_string(acc->id));
	json_object_set_new(p, "account_type", json_string("LINKEDIN"));
	json_object_set_new(p, "account_info",
						json_pack("{s:s,s:s,s:s}", "type", "LINKEDIN",
								  "feature", "classic",
								  "user_id", acc->provider_id));
	json_object_set_new(p, "event", json_string("message_received"));
	json_object_set_new(p, "chat_id", json_string(chat->id));
	json_object_set_new(p, "timestamp", iso_json(msg->ts));
	json_object_set_new(p, "webhook_name", json_string(""));
	json_object_set_new(p, "message_id", json_string(msg->id));
	json_object_set_new(p, "message", json_string(msg->text));
	json_object_set(p, "sender", from_us ? self : other);
	json_object_set_new(p, "attendees", json_pack("[OO]", self, other));
	json_object_set_new(p, "is_group", json_false());
	json_decref(self);
	json_decref(other);
	emit_event(acc, "messaging", "message_received", p);
}

/* Flat new_relation webhook. */
static void
emit_new_relation(Account *acc, Person *person)
{
	char	   *name = full_name(person);
	const char *slug = person->public_identifier ? person->public_identifier
		: person->provider_id;
	json_t	   *p = json_object();

	json_object_set_new(p, "event", json_string("new_relation"));
	json_object_set_new(p, "account_id", json_string(acc->id));
	json_object_set_new(p, "account_type", json_string("LINKEDIN"));
	json_object_set_new(p, "webhook_name", json_string(""));
	json_object_set_new(p, "user_full_name", json_string(name ? name : ""));
	json_object_set_new(p, "user_provider_id", json_string(person->provider_id));
	json_object_set_new(p, "user_public_identifier", json_string(slug));
	json_object_set_new(p, "user_profile_url", profile_url(slug));
	json_object_set_new(p, "user_picture_url", json_string(""));
	free(name);
	emit_event(acc, "users", "new_relation", p);
}

static void
emit_account_status(Account *acc, const char *message)
{
	json_t	   *p = json_pack("{s:{s:s,s:s,s:s}}", "AccountStatus",
							  "account_id", acc->id,
							  "account_type", "LINKEDIN",
							  "message", message);

	emit_event(acc, "account_status", "account_status", p);
}

/* ---------------------------------------------------------------------
 * Network model
 * ---------------------------------------------------------------------
 */
static int
relation_cmp(const void *a, const void *b)
{
	const Relation *ra = *(const Relation *const *) a;
	const Relation *rb = *(const Relation *const *) b;

	if (ra->created_at != rb->created_at)
		return ra->created_at > rb->created_at ? -1 : 1;
	if (ra->conn_no != rb->conn_no)
		return ra->conn_no > rb->conn_no ? -1 : 1;
	return 0;
}

/*
 * Add a relation (no-op if it exists).  With `sorted` the newest-first
 * array is kept sorted by binary insertion; bulk loads pass false and
 * sort once at the end.
 */
static Relation *
add_relation(Account *acc, Person *p, int64_t created_at, bool sorted)
{
	Relation   *r = hm_get(&acc->relations, p->provider_id);
	size_t		lo = 0,
				hi;

	if (r)
		return r;
	r = xcalloc(1, sizeof(Relation));
	r->person = p;
	r->created_at = created_at;
	r->conn_no = ++conn_counter;
	hm_put(&acc->relations, p->provider_id, r);
	if (!sorted)
	{
		pv_push(&acc->rel_sorted, r);
		return r;
	}
	hi = acc->rel_sorted.n;
	while (lo < hi)
	{
		size_t		mid = (lo + hi) / 2;

		if (relation_cmp(&acc->rel_sorted.items[mid], &r) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	pv_insert(&acc->rel_sorted, lo, r);
	return r;
}

static Chat *
get_or_create_chat(Account *acc, Person *p)
{
	Chat	   *c = hm_get(&acc->chat_by_person, p->provider_id);

	if (c)
		return c;
	c = xcalloc(1, sizeof(Chat));
	make_id22(++chat_counter, SALT_CHAT, c->id);
	c->account = acc;
	c->attendee = p;
	hm_put(&acc->chat_by_person, p->provider_id, c);
	hm_put(&chats, c->id, c);
	pv_push(&acc->chats, c);
	return c;
}

static Message *
add_message(Chat *c, const char *sender, const char *text, int64_t ts)
{
	Message    *m = xcalloc(1, sizeof(Message));

	make_id22(++msg_counter, SALT_MESSAGE, m->id);
	m->sender = xstrdup(sender);
	m->text = xstrdup(text);
	m->ts = ts;
	pv_push(&c->messages, m);
	return m;
}

/* Remove a pending invitation from every index (does not free it). */
static void
unlink_invitation(Invitation *inv)
{
	Account    *acc = inv->account;

	hm_del(&invitations, inv->id);
	hm_del(&acc->inv_by_person, inv->person->provider_id);
	pv_remove_ptr(&acc->invitations, inv);
}

/*
 * The invitee accepts at `at`: the relation is dated `at`; a note becomes
 * the only message of a new chat (message_received, sender = us); then
 * new_relation is emitted.
 */
static void
accept_invitation(Invitation *inv, int64_t at)
{
	Account    *acc = inv->account;
	Person	   *p = inv->person;

	unlink_invitation(inv);
	add_relation(acc, p, at, true);
	if (nonempty(inv->text))
	{
		Chat	   *c = get_or_create_chat(acc, p);
		Message    *m = add_message(c, acc->provider_id, inv->text, at);

		emit_message_received(c, m);
	}
	emit_new_relation(acc, p);
	invitation_free(inv);
}

static void
invitation_key(uint64_t num, char *buf, size_t len)
{
	snprintf(buf, len, "%llu",
			 (unsigned long long) (INVITATION_ID_BASE + num * INVITATION_ID_STEP));
}

/*
 * Fire every event due at simulated time `now`.  Accept events are
 * re-validated against the current invitation and person (the person may
 * have been updated, the invitation withdrawn).
 */
static void
evaluate_due(int64_t now)
{
	while (heap_n > 0 && heap[0].due <= now)
	{
		Event		ev = heap_pop();

		if (ev.kind == EV_ACCEPT)
		{
			char		key[24];
			Invitation *inv;
			int64_t		due;

			invitation_key(ev.inv_num, key, sizeof(key));
			inv = hm_get(&invitations, key);
			if (inv == NULL || inv->person->accept_after_ms < 0)
				continue;
			due = inv->sent_at + inv->person->accept_after_ms;
			if (due > now)
			{
				heap_push(due, EV_ACCEPT, ev.inv_num, NULL);
				continue;
			}
			accept_invitation(inv, due);
		}
		else
		{
			Chat	   *c = ev.chat;
			Person	   *p = c->attendee;
			Message    *m = add_message(c, p->provider_id,
										p->reply_text ? p->reply_text : DEFAULT_REPLY_TEXT,
										ev.due);

			emit_message_received(c, m);
		}
	}
}

/*
 * Record a message we sent through the API: echo it as message_received
 * (Unipile also reports own messages) and schedule the person's reply
 * once our message count reaches their reply_after_step.
 */
static void
our_message_sent(Chat *c, Message *m)
{
	Person	   *p = c->attendee;

	c->our_sent++;
	if (!c->reply_scheduled && p->reply_after_ms >= 0 &&
		c->our_sent >= p->reply_after_step)
	{
		c->reply_scheduled = true;
		heap_push(m->ts + p->reply_after_ms, EV_REPLY, 0, c);
	}
	if (g_config.echo_sent)
		emit_message_received(c, m);
}

/* ---------------------------------------------------------------------
 * /api/v1 routes
 * ---------------------------------------------------------------------
 */

/* Split "/api/v1/..." into a route id and up to one path parameter. */
static RouteId
match_route(const char *method, const char *path, char *param, size_t plen,
			const char **allow)
{
	char		buf[1024];
	char	   *seg[6];
	int			n = 0;
	char	   *save = NULL;
	char	   *tok;
	bool		get = strcmp(method, "GET") == 0;
	bool		post = strcmp(method, "POST") == 0;
	bool		del = strcmp(method, "DELETE") == 0;

	param[0] = '\0';
	*allow = NULL;
	if (strlen(path) >= sizeof(buf))
		return R_UNKNOWN;
	strcpy(buf, path + strlen("/api/v1"));
	for (tok = strtok_r(buf, "/", &save); tok && n < 6; tok = strtok_r(NULL, "/", &save))
		seg[n++] = tok;
	if (tok != NULL || n == 0)
		return R_UNKNOWN;

	if (strcmp(seg[0], "users") == 0)
	{
		if (n == 2 && strcmp(seg[1], "invite") == 0)
		{
			*allow = "POST";
			return post ? R_INVITE : R_BAD_METHOD;
		}
		if (n == 3 && strcmp(seg[1], "invite") == 0 && strcmp(seg[2], "sent") == 0)
		{
			*allow = "GET";
			return get ? R_INVITE_SENT : R_BAD_METHOD;
		}
		if (n == 4 && strcmp(seg[1], "invite") == 0 && strcmp(seg[2], "sent") == 0)
		{
			snprintf(param, plen, "%s", seg[3]);
			*allow = "DELETE";
			return del ? R_INVITE_CANCEL : R_BAD_METHOD;
		}
		if (n == 2 && strcmp(seg[1], "relations") == 0)
		{
			*allow = "GET";
			return get ? R_RELATIONS : R_BAD_METHOD;
		}
		if (n == 2 && strcmp(seg[1], "me") == 0)
		{
			*allow = "GET";
			return get ? R_ME : R_BAD_METHOD;
		}
		if (n == 2)
		{
			snprintf(param, plen, "%s", seg[1]);
			*allow = "GET";
			return get ? R_PROFILE : R_BAD_METHOD;
		}
	}
	else if (strcmp(seg[0], "chats") == 0)
	{
		if (n == 1)
		{
			*allow = "POST";
			return post ? R_CHAT_START : R_BAD_METHOD;
		}
		if (n == 3 && strcmp(seg[2], "messages") == 0)
		{
			snprintf(param, plen, "%s", seg[1]);
			*allow = "GET, POST";
			return get ? R_CHAT_MESSAGES : post ? R_CHAT_SEND : R_BAD_METHOD;
		}
	}
	else if (strcmp(seg[0], "webhooks") == 0)
	{
		if (n == 1)
		{
			*allow = "GET, POST";
			return get ? R_WEBHOOK_LIST : post ? R_WEBHOOK_CREATE : R_BAD_METHOD;
		}
		if (n == 2)
		{
			snprintf(param, plen, "%s", seg[1]);
			*allow = "DELETE";
			return del ? R_WEBHOOK_DELETE : R_BAD_METHOD;
		}
	}
	return R_UNKNOWN;
}

/* POST /api/v1/users/invite */
static void
api_invite(const MockRequest *req, Reply *r, int64_t now)
{
	json_t	   *b = req->body;
	const char *provider_id;
	const char *account_id;
	json_t	   *msgj;
	const char *message = NULL;
	Account    *acc;
	Person	   *p;
	Invitation *inv;

	if (req->body_malformed)
		return reply_malformed(r);
	provider_id = field_str(b, "provider_id");
	account_id = field_str(b, "account_id");
	if (!nonempty(provider_id) || !nonempty(account_id))
		return reply_missing(r, !nonempty(provider_id) && !nonempty(account_id)
							 ? "provider_id, account_id"
							 : !nonempty(provider_id) ? "provider_id" : "account_id");
	msgj = json_object_get(b, "message");
	if (json_is_array(msgj))
		msgj = json_array_get(msgj, 0);
	if (msgj && !json_is_null(msgj))
	{
		if (!json_is_string(msgj))
			return reply_invalid(r, "message must be a string.");
		message = json_string_value(msgj);
		if (utf8_codepoints(message) > MAX_INVITE_CHARS)
			return reply_error(r, 400, "errors/too_many_characters",
							   "Too many characters",
							   "The provided content exceeds the character limit.");
	}
	acc = get_account(account_id, true);
	if (hm_get(&acc->relations, provider_id))
		return reply_error(r, 422, "errors/already_connected", "Already connected",
						   "You are already connected to this user.");
	if (hm_get(&acc->inv_by_person, provider_id))
		return reply_error(r, 422, "errors/already_invited_recently",
						   "Should delay new invitation to this recipient",
						   "An invitation has already been sent recently to this recipient. Please try again later.");
	p = get_person(provider_id, true);
	inv = xcalloc(1, sizeof(Invitation));
	inv->num = ++inv_counter;
	invitation_key(inv->num, inv->id, sizeof(inv->id));
	inv->person = p;
	inv->text = nonempty(message) ? xstrdup(message) : NULL;
	inv->sent_at = now;
	inv->account = acc;
	pv_push(&acc->invitations, inv);
	hm_put(&acc->inv_by_person, provider_id, inv);
	hm_put(&invitations, inv->id, inv);
	if (p->accept_after_ms >= 0)
		heap_push(now + p->accept_after_ms, EV_ACCEPT, inv->num, NULL);
	reply_json(r, 201, json_pack("{s:s,s:s}", "object", "UserInvitationSent",
								 "invitation_id", inv->id));
}

/* "Sent today", "Sent 3 days ago", ... like LinkedIn's relative dates. */
static json_t *
relative_sent_date(int64_t sent, int64_t now)
{
	int64_t		days = (now - sent) / 86400000;
	char		buf[64];

	if (days <= 0)
		snprintf(buf, sizeof(buf), "Sent today");
	else if (days == 1)
		snprintf(buf, sizeof(buf), "Sent yesterday");
	else if (days < 7)
		snprintf(buf, sizeof(buf), "Sent %lld days ago", (long long) days);
	else if (days < 30)
		snprintf(buf, sizeof(buf), "Sent %lld week%s ago", (long long) (days / 7),
				 days / 7 > 1 ? "s" : "");
	else
		snprintf(buf, sizeof(buf), "Sent %lld month%s ago", (long long) (days / 30),
				 days / 30 > 1 ? "s" : "");
	return json_string(buf);
}

/* GET /api/v1/users/invite/sent */
static void
api_invite_sent(const MockRequest *req, Reply *r, int64_t now)
{
	const char *account_id = query_str(req, "account_id");
	int64_t		limit,
				start;
	Account    *acc;
	json_t	   *items;
	size_t		total;

	if (!nonempty(account_id))
		return reply_missing(r, "account_id");
	if (!parse_limit(req, r, 10, 100, &limit) || !parse_cursor(req, r, &start))
		return;
	acc = get_account(account_id, true);
	items = json_array();
	total = acc->invitations.n;
	for (int64_t i = start; i < start + limit && (size_t) i < total; i++)
	{
		Invitation *inv = acc->invitations.items[total - 1 - i];
		Person	   *p = inv->person;
		char	   *name = full_name(p);
		json_t	   *it = json_object();

		json_object_set_new(it, "object", json_string("InvitationSent"));
		json_object_set_new(it, "id", json_string(inv->id));
		json_object_set_new(it, "date", relative_sent_date(inv->sent_at, now));
		json_object_set_new(it, "parsed_datetime", iso_json(inv->sent_at));
		json_object_set_new(it, "invitation_text", str_or_null(inv->text));
		json_object_set_new(it, "invited_user", str_or_null(name));
		json_object_set_new(it, "invited_user_id", json_string(p->provider_id));
		json_object_set_new(it, "invited_user_public_id", str_or_null(p->public_identifier));
		json_object_set_new(it, "invited_user_description", str_or_null(p->headline));
		json_object_set_new(it, "specifics", json_pack("{s:s}", "provider", "LINKEDIN"));
		json_array_append_new(items, it);
		free(name);
	}
	reply_json(r, 200, json_pack("{s:s,s:o,s:o}", "object", "InvitationList",
								 "items", items,
								 "cursor", make_cursor(limit, start + limit, total)));
}

/* DELETE /api/v1/users/invite/sent/{invitation_id} */
static void
api_invite_cancel(const MockRequest *req, Reply *r, const char *id)
{
	const char *account_id = query_str(req, "account_id");
	Invitation *inv;

	if (!nonempty(account_id))
		return reply_missing(r, "account_id");
	inv = hm_get(&invitations, id);
	if (inv == NULL || strcmp(inv->account->id, account_id) != 0)
		return reply_not_found(r, "Invitation not found.");
	unlink_invitation(inv);
	invitation_free(inv);
	reply_json(r, 200, json_pack("{s:s}", "object", "InvitationCanceled"));
}

/* GET /api/v1/users/relations */
static void
api_relations(const MockRequest *req, Reply *r)
{
	const char *account_id = query_str(req, "account_id");
	int64_t		limit,
				start;
	Account    *acc;
	json_t	   *items;
	size_t		total;

	if (!nonempty(account_id))
		return reply_missing(r, "account_id");
	if (!parse_limit(req, r, 100, 1000, &limit) || !parse_cursor(req, r, &start))
		return;
	acc = get_account(account_id, true);
	items = json_array();
	total = acc->rel_sorted.n;
	for (int64_t i = start; i < start + limit && (size_t) i < total; i++)
	{
		Relation   *rel = acc->rel_sorted.items[i];
		Person	   *p = rel->person;
		const char *slug = p->public_identifier ? p->public_identifier : p->provider_id;
		json_t	   *it = json_object();
		char		urn[256];

		json_object_set_new(it, "object", json_string("UserRelation"));
		json_object_set_new(it, "first_name", json_string(p->first_name ? p->first_name : ""));
		json_object_set_new(it, "last_name", json_string(p->last_name ? p->last_name : ""));
		json_object_set_new(it, "headline", json_string(p->headline ? p->headline : ""));
		json_object_set_new(it, "public_identifier", json_string(slug));
		json_object_set_new(it, "public_profile_url", profile_url(slug));
		json_object_set_new(it, "created_at", json_integer(rel->created_at));
		json_object_set_new(it, "member_id", json_string(p->provider_id));
		snprintf(urn, sizeof(urn), "urn:li:fsd_profile:%s", p->provider_id);
		json_object_set_new(it, "member_urn", json_string(urn));
		snprintf(urn, sizeof(urn), "urn:li:fsd_connection:%llu",
				 (unsigned long long) (6000000000ull + rel->conn_no));
		json_object_set_new(it, "connection_urn", json_string(urn));
		json_array_append_new(items, it);
	}
	reply_json(r, 200, json_pack("{s:s,s:o,s:o}", "object", "UserRelationsList",
								 "items", items,
								 "cursor", make_cursor(limit, start + limit, total)));
}

/* GET /api/v1/users/me: the account owner's profile. */
static void
api_me(const MockRequest *req, Reply *r)
{
	const char *account_id = query_str(req, "account_id");
	Account    *acc;

	if (!nonempty(account_id))
		return reply_missing(r, "account_id");
	acc = get_account(account_id, true);
	reply_json(r, 200, json_pack("{s:s,s:s,s:s,s:s,s:o}",
								 "object", "AccountOwnerProfile",
								 "provider", "LINKEDIN",
								 "provider_id", acc->provider_id,
								 "first_name", acc->name,
								 "public_profile_url", profile_url(acc->provider_id)));
}

/* GET /api/v1/users/{identifier}: provider id or public identifier. */
static void
api_profile(const MockRequest *req, Reply *r, const char *ident)
{
	const char *account_id = query_str(req, "account_id");
	Account    *acc;
	Person	   *p;
	bool		rel;
	json_t	   *j;

	if (!nonempty(account_id))
		return reply_missing(r, "account_id");
	p = hm_get(&people, ident);
	if (p == NULL)
		p = hm_get(&people_by_pub, ident);
	if (p == NULL)
		return reply_not_found(r, "User not found");
	acc = get_account(account_id, true);
	rel = hm_get(&acc->relations, p->provider_id) != NULL;
	j = json_object();
	json_object_set_new(j, "object", json_string("UserProfile"));
	json_object_set_new(j, "provider", json_string("LINKEDIN"));
	json_object_set_new(j, "provider_id", json_string(p->provider_id));
	json_object_set_new(j, "public_identifier", str_or_null(p->public_identifier));
	json_object_set_new(j, "first_name", str_or_null(p->first_name));
	json_object_set_new(j, "last_name", str_or_null(p->last_name));
	json_object_set_new(j, "headline", json_string(p->headline ? p->headline : ""));
	json_object_set_new(j, "public_profile_url",
						profile_url(p->public_identifier ? p->public_identifier : p->provider_id));
	json_object_set_new(j, "is_relationship", json_boolean(rel));
	json_object_set_new(j, "network_distance",
						json_string(rel ? "FIRST_DEGREE" : "SECOND_DEGREE"));
	if (hm_get(&acc->inv_by_person, p->provider_id))
		json_object_set_new(j, "invitation",
							json_pack("{s:s,s:s}", "type", "SENT", "status", "PENDING"));
	reply_json(r, 200, j);
}

/* The text field of a chat request, or NULL. */
static const char *
chat_text(const MockRequest *req)
{
	return field_str(req->body, "text");
}

/* POST /api/v1/chats (multipart primary, JSON accepted) */
static void
api_chat_start(const MockRequest *req, Reply *r, int64_t now)
{
	const char *account_id;
	const char *text;
	json_t	   *att = json_array();
	const char *keys[] = {"attendees_ids", "attendees_ids[]"};
	Account    *acc;
	Person	   *p;
	Chat	   *c;
	Message    *m;
	const char *attendee;

	if (req->body_malformed)
	{
		json_decref(att);
		return reply_malformed(r);
	}
	for (int k = 0; k < 2; k++)
	{
		json_t	   *v = json_is_object(req->body) ? json_object_get(req->body, keys[k]) : NULL;
		size_t		i;
		json_t	   *e;

		if (json_is_string(v) && *json_string_value(v))
			json_array_append(att, v);
		else if (json_is_array(v))
		{
			json_array_foreach(v, i, e)
			{
				if (json_is_string(e) && *json_string_value(e))
					json_array_append(att, e);
			}
		}
	}
	account_id = field_str(req->body, "account_id");
	text = chat_text(req);
	if (!nonempty(account_id) || json_array_size(att) == 0 || !nonempty(text))
	{
		StrBuf		sb = {0};

		if (!nonempty(account_id))
			sb_puts(&sb, "account_id");
		if (json_array_size(att) == 0)
			sb_printf(&sb, "%sattendees_ids", sb.len ? ", " : "");
		if (!nonempty(text))
			sb_printf(&sb, "%stext", sb.len ? ", " : "");
		reply_missing(r, sb.data);
		free(sb.data);
		json_decref(att);
		return;
	}
	if (json_array_size(att) > 1)
	{
		json_decref(att);
		return reply_invalid(r, "The mock only supports 1:1 chats (one attendee).");
	}
	attendee = json_string_value(json_array_get(att, 0));
	acc = get_account(account_id, true);
	p = get_person(attendee, false);
	if (p == NULL || hm_get(&acc->relations, attendee) == NULL)
	{
		json_decref(att);
		return reply_error(r, 422, "errors/no_connection_with_recipient",
						   "Recipient cannot be reached",
						   "The recipient appears not to be first degree connection");
	}
	json_decref(att);
	c = get_or_create_chat(acc, p);
	m = add_message(c, acc->provider_id, text, now);
	our_message_sent(c, m);
	reply_json(r, 201, json_pack("{s:s,s:s,s:s}", "object", "ChatStarted",
								 "chat_id", c->id, "message_id", m->id));
}

/* POST /api/v1/chats/{chat_id}/messages */
static void
api_chat_send(const MockRequest *req, Reply *r, const char *chat_id, int64_t now)
{
	Chat	   *c;
	const char *account_id;
	const char *text;
	Message    *m;

	if (req->body_malformed)
		return reply_malformed(r);
	c = hm_get(&chats, chat_id);
	if (c == NULL)
		return reply_not_found(r, "Chat not found.");
	if (!c->account->connected)
		return reply_disconnected(r);
	account_id = field_str(req->body, "account_id");
	if (nonempty(account_id) && strcmp(account_id, c->account->id) != 0)
		return reply_error(r, 403, "errors/account_mismatch", "Account mismatch",
						   "The chat does not belong to the provided account.");
	text = chat_text(req);
	if (!nonempty(text))
		return reply_missing(r, "text");
	m = add_message(c, c->account->provider_id, text, now);
	our_message_sent(c, m);
	reply_json(r, 201, json_pack("{s:s,s:s}", "object", "MessageSent",
								 "message_id", m->id));
}

/* GET /api/v1/chats/{chat_id}/messages, newest first */
static void
api_chat_messages(const MockRequest *req, Reply *r, const char *chat_id)
{
	Chat	   *c = hm_get(&chats, chat_id);
	int64_t		limit,
				start;
	json_t	   *items;
	size_t		total;
	char		self_aid[23];
	char		other_aid[23];

	if (c == NULL)
		return reply_not_found(r, "Chat not found.");
	if (!c->account->connected)
		return reply_disconnected(r);
	if (!parse_limit(req, r, 100, 250, &limit) || !parse_cursor(req, r, &start))
		return;
	make_id22(str_hash(c->account->provider_id), SALT_ATTENDEE, self_aid);
	make_id22(str_hash(c->attendee->provider_id), SALT_ATTENDEE, other_aid);
	items = json_array();
	total = c->messages.n;
	for (int64_t i = start; i < start + limit && (size_t) i < total; i++)
	{
		Message    *m = c->messages.items[total - 1 - i];
		bool		mine = strcmp(m->sender, c->account->provider_id) == 0;
		json_t	   *it = json_object();

		json_object_set_new(it, "object", json_string("Message"));
		json_object_set_new(it, "id", json_string(m->id));
		json_object_set_new(it, "account_id", json_string(c->account->id));
		json_object_set_new(it, "chat_id", json_string(c->id));
		json_object_set_new(it, "text", json_string(m->text));
		json_object_set_new(it, "sender_id", json_string(m->sender));
		json_object_set_new(it, "sender_attendee_id", json_string(mine ? self_aid : other_aid));
		json_object_set_new(it, "is_sender", json_integer(mine ? 1 : 0));
		json_object_set_new(it, "timestamp", iso_json(m->ts));
		json_object_set_new(it, "attachments", json_array());
		json_object_set_new(it, "seen", json_integer(0));
		json_object_set_new(it, "hidden", json_integer(0));
		json_object_set_new(it, "deleted", json_integer(0));
		json_object_set_new(it, "edited", json_integer(0));
		json_object_set_new(it, "is_event", json_integer(0));
		json_object_set_new(it, "delivered", json_integer(1));
		json_array_append_new(items, it);
	}
	reply_json(r, 200, json_pack("{s:s,s:o,s:o}", "object", "MessageList",
								 "items", items,
								 "cursor", make_cursor(limit, start + limit, total)));
}

static json_t *
webhook_json(const Webhook *w)
{
	return json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:b,s:O,s:O,s:O}",
					 "object", "Webhook",
					 "id", w->id,
					 "name", w->name,
					 "source", w->source,
					 "request_url", w->url,
					 "format", w->format,
					 "enabled", w->enabled,
					 "account_ids", w->account_ids,
					 "events", w->events,
					 "headers", w->headers);
}

/* Validate an optional array of strings; returns a new reference. */
static bool
string_array(json_t *v, json_t **out)
{
	size_t		i;
	json_t	   *e;

	*out = NULL;
	if (v == NULL || json_is_null(v))
	{
		*out = json_array();
		return true;
	}
	if (!json_is_array(v))
		return false;
	json_array_foreach(v, i, e)
	{
		if (!json_is_string(e))
			return false;
	}
	*out = json_deep_copy(v);
	return true;
}

/* POST /api/v1/webhooks */
static void
api_webhook_create(const MockRequest *req, Reply *r)
{
	static const char *const sources[] = {
		"messaging", "users", "account_status", "email", "email_tracking",
		"calendar_event", NULL
	};
	json_t	   *b = req->body;
	const char *source;
	const char *url;
	json_t	   *v;
	json_t	   *headers;
	size_t		i;
	json_t	   *h;
	Webhook    *w;
	bool		ok = false;

	if (req->body_malformed)
		return reply_malformed(r);
	source = field_str(b, "source");
	url = field_str(b, "request_url");
	if (!nonempty(source) || !nonempty(url))
		return reply_missing(r, !nonempty(source) ? "source" : "request_url");
	for (int k = 0; sources[k]; k++)
		if (strcmp(sources[k], source) == 0)
			ok = true;
	if (!ok)
		return reply_invalid(r, "source must be one of messaging, users, account_status, email, email_tracking, calendar_event.");
	v = json_object_get(b, "headers");
	if (v && !json_is_null(v) && !json_is_array(v))
		return reply_invalid(r, "headers must be an array of {key, value}.");
	headers = json_array();
	json_array_foreach(v, i, h)
	{
		const char *k = json_string_value(json_object_get(h, "key"));
		const char *val = json_string_value(json_object_get(h, "value"));

		if (k == NULL || val == NULL)
		{
			json_decref(headers);
			return reply_invalid(r, "headers must be an array of {key, value}.");
		}
		json_array_append_new(headers, json_pack("{s:s,s:s}", "key", k, "value", val));
	}
	w = xcalloc(1, sizeof(Webhook));
	w->headers = headers;
	if (!string_array(json_object_get(b, "account_ids"), &w->account_ids) ||
		!string_array(json_object_get(b, "events"), &w->events))
	{
		webhook_free(w);
		return reply_invalid(r, "account_ids and events must be arrays of strings.");
	}
	make_id22(++wh_counter, SALT_WEBHOOK, w->id);
	w->source = xstrdup(source);
	w->url = xstrdup(url);
	w->name = xstrdup(field_str(b, "name") ? field_str(b, "name") : "");
	w->format = xstrdup(field_str(b, "format") ? field_str(b, "format") : "json");
	v = json_object_get(b, "enabled");
	w->enabled = json_is_boolean(v) ? json_is_true(v) : true;
	pv_push(&webhooks, w);
	reply_json(r, 201, json_pack("{s:s,s:s}", "object", "WebhookCreated",
								 "webhook_id", w->id));
}

/* GET /api/v1/webhooks */
static void
api_webhook_list(Reply *r)
{
	json_t	   *items = json_array();

	for (size_t i = 0; i < webhooks.n; i++)
		json_array_append_new(items, webhook_json(webhooks.items[i]));
	reply_json(r, 200, json_pack("{s:s,s:o,s:n}", "object", "WebhookList",
								 "items", items, "cursor"));
}

/* DELETE /api/v1/webhooks/{id} */
static void
api_webhook_delete(Reply *r, const char *id)
{
	for (size_t i = 0; i < webhooks.n; i++)
	{
		Webhook    *w = webhooks.items[i];

		if (strcmp(w->id, id) == 0)
		{
			pv_remove(&webhooks, i);
			webhook_free(w);
			reply_json(r, 200, json_pack("{s:s}", "object", "WebhookDeleted"));
			return;
		}
	}
	reply_not_found(r, "Webhook not found.");
}

/* The first registered fault matching the request, consuming one use. */
static Fault *
take_fault(const char *method, const char *path)
{
	for (size_t i = 0; i < faults.n; i++)
	{
		Fault	   *f = faults.items[i];

		if (f->method && strcasecmp(f->method, method) != 0)
			continue;
		if (f->path_prefix && strncmp(path, f->path_prefix, strlen(f->path_prefix)) != 0)
			continue;
		f->applied++;
		if (f->count > 0)
			f->count--;
		return f;
	}
	return NULL;
}

/* Drop faults whose count reached zero (after take_fault). */
static void
prune_faults(void)
{
	for (size_t i = 0; i < faults.n;)
	{
		Fault	   *f = faults.items[i];

		if (f->count == 0)
		{
			pv_remove(&faults, i);
			fault_free(f);
		}
		else
			i++;
	}
}

/*
 * Turn a fault into the reply.  Returns false for a delay-only fault, in
 * which case the request is processed normally and answered late.
 */
static bool
apply_fault(const Fault *f, Reply *r)
{
	static const char html_page[] =
		"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
		"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
		"</body>\r\n</html>\r\n";
	static const char garbage[] =
		"<<mock garbage>> {\"object\": \"UserInvitationSent\", \"invitation_id\": ";

	r->delay_ms = f->delay_ms;
	if (f->drop)
	{
		r->kind = REPLY_DROP;
		r->status = 0;
		return true;
	}
	if (f->html || f->garbage)
	{
		r->kind = REPLY_RAW;
		r->status = f->status ? f->status : (f->html ? 502 : 200);
		r->raw = xstrdup(f->html ? html_page : garbage);
		r->raw_len = strlen(r->raw);
		r->content_type = f->html ? "text/html" : "application/json; charset=utf-8";
		return true;
	}
	if (f->status)
	{
		const char *type,
				   *title;

		fault_defaults(f->status, &type, &title);
		reply_error(r, f->status, f->type ? f->type : type,
					f->title ? f->title : title,
					f->detail ? f->detail :
					f->status == 429 ? "The provider cannot accept any more requests at the moment. Please try again later." :
					"Injected by mock_unipile.");
		return true;
	}
	return false;
}

/* Append one request to the request log (if enabled) and count it. */
static void
log_request(const MockRequest *req, RouteId route, const char *account_id,
			int64_t now, const Reply *r, bool fault)
{
	/* the counters are the Unipile API's; hook receipts are only logged */
	if (route != R_HOOK)
	{
		stat_requests++;
		stat_by_route[route]++;
		stat_by_status[r->status < 600 ? r->status : 599]++;
	}
	if (g_config.log_enabled)
	{
		json_t	   *e = json_object();
		char	   *s;

		json_object_set_new(e, "seq", json_integer((json_int_t) req_log.next_seq));
		json_object_set_new(e, "at_ms", json_integer(now));
		json_object_set_new(e, "method", json_string(req->method));
		json_object_set_new(e, "path", json_string(req->path));
		json_object_set(e, "query", req->query);
		json_object_set_new(e, "account_id", str_or_null(account_id));
		json_object_set(e, "body", req->body ? req->body : json_null());
		json_object_set_new(e, "status", json_integer(r->status));
		json_object_set_new(e, "fault", json_boolean(fault));
		json_object_set_new(e, "route", json_string(route_names[route]));
		json_object_set_new(e, "api_key_sent", json_boolean(req->api_key != NULL));
		s = json_dumps(e, JSON_COMPACT);
		json_decref(e);
		if (s)
			ring_push(&req_log, s);
	}
}

/* One /api/v1 request, under g_lock. */
static void
handle_api_locked(const MockRequest *req, Reply *r, int64_t now)
{
	char		param[1024];
	const char *allow;
	RouteId		route = match_route(req->method, req->path, param, sizeof(param), &allow);
	const char *account_id = query_str(req, "account_id");
	Account    *acc;
	Fault	   *f = NULL;
	bool		faulted = false;

	if (account_id == NULL)
		account_id = field_str(req->body, "account_id");
	if ((route == R_CHAT_SEND || route == R_CHAT_MESSAGES) && account_id == NULL)
	{
		Chat	   *c = hm_get(&chats, param);

		if (c)
			account_id = c->account->id;
	}

	if (nonempty(g_config.api_key) &&
		(req->api_key == NULL || strcmp(req->api_key, g_config.api_key) != 0))
	{
		reply_error(r, 401, "errors/invalid_api_key", "Unauthorized",
					"Missing or invalid X-API-KEY header");
		log_request(req, route, account_id, now, r, false);
		return;
	}
	f = take_fault(req->method, req->path);
	if (f)
	{
		faulted = true;
		if (!f->after && apply_fault(f, r))
		{
			prune_faults();
			log_request(req, route, account_id, now, r, true);
			return;
		}
		if (!f->after)
		{
			prune_faults();
			f = NULL;
		}
	}

	acc = nonempty(account_id) ? get_account(account_id, false) : NULL;
	if (req->body_too_large)
		reply_error(r, 413, "errors/content_too_large", "Content too large",
					"The request body is too large.");
	else if (route == R_UNKNOWN)
		reply_not_found(r, "Route not found.");
	else if (route == R_BAD_METHOD)
	{
		reply_error(r, 405, "errors/method_not_allowed", "Method not allowed",
					"This route does not support this HTTP method.");
		r->allow = allow;
	}
	else if (acc && !acc->connected)
		reply_disconnected(r);
	else
	{
		switch (route)
		{
			case R_INVITE:
				api_invite(req, r, now);
				break;
			case R_INVITE_SENT:
				api_invite_sent(req, r, now);
				break;
			case R_INVITE_CANCEL:
				api_invite_cancel(req, r, param);
				break;
			case R_RELATIONS:
				api_relations(req, r);
				break;
			case R_ME:
				api_me(req, r);
				break;
			case R_PROFILE:
				api_profile(req, r, param);
				break;
			case R_CHAT_START:
				api_chat_start(req, r, now);
				break;
			case R_CHAT_SEND:
				api_chat_send(req, r, param, now);
				break;
			case R_CHAT_MESSAGES:
				api_chat_messages(req, r, param);
				break;
			case R_WEBHOOK_CREATE:
				api_webhook_create(req, r);
				break;
			case R_WEBHOOK_LIST:
				api_webhook_list(r);
				break;
			case R_WEBHOOK_DELETE:
				api_webhook_delete(r, param);
				break;
			default:
				reply_not_found(r, "Route not found.");
				break;
		}
	}
	if (f)
	{
		/* an "after" fault: the request took effect, its answer is lost */
		json_decref(r->json);
		r->json = NULL;
		free(r->raw);
		r->raw = NULL;
		r->allow = NULL;
		(void) apply_fault(f, r);
		prune_faults();
	}
	log_request(req, route, account_id, now, r, faulted);
}

/* ---------------------------------------------------------------------
 * /_mock control routes
 * ---------------------------------------------------------------------
 */
static void
reply_raw_json(Reply *r, unsigned int status, StrBuf *sb)
{
	r->kind = REPLY_RAW;
	r->status = status;
	r->raw = sb->data;
	r->raw_len = sb->len;
	r->content_type = "application/json; charset=utf-8";
}

static json_t *
account_json(const Account *a)
{
	return json_pack("{s:s,s:s,s:s,s:s,s:I,s:I,s:I,s:I}",
					 "account_id", a->id,
					 "status", a->connected ? "OK" : "disconnected",
					 "provider_id", a->provider_id,
					 "name", a->name,
					 "invitations_pending", (json_int_t) a->invitations.n,
					 "relations_count", (json_int_t) a->rel_sorted.n,
					 "chats_count", (json_int_t) a->chats.n,
					 "held_webhooks", (json_int_t) a->held.n);
}

/* Upsert one account from /_mock/accounts; emits account_status changes. */
static bool
upsert_account(json_t *o, Reply *r, json_t *out)
{
	const char *id = json_string_value(json_object_get(o, "account_id"));
	json_t	   *st = json_object_get(o, "status");
	const char *pid = json_string_value(json_object_get(o, "provider_id"));
	const char *name = json_string_value(json_object_get(o, "name"));
	const char *msg = json_string_value(json_object_get(o, "message"));
	Account    *a;

	if (!nonempty(id))
	{
		reply_missing(r, "account_id");
		return false;
	}
	if (st && (!json_is_string(st) ||
			   (strcasecmp(json_string_value(st), "OK") != 0 &&
				strcasecmp(json_string_value(st), "disconnected") != 0)))
	{
		reply_invalid(r, "status must be \"OK\" or \"disconnected\".");
		return false;
	}
	a = get_account(id, true);
	if (nonempty(pid))
	{
		free(a->provider_id);
		a->provider_id = xstrdup(pid);
	}
	if (nonempty(name))
	{
		free(a->name);
		a->name = xstrdup(name);
	}
	if (st)
	{
		bool		want = strcasecmp(json_string_value(st), "OK") == 0;

		if (want != a->connected)
		{
			a->connected = want;
			if (!want)
				emit_account_status(a, msg ? msg : "CREDENTIALS");
			else
			{
				emit_account_status(a, msg ? msg : "RECONNECTED");
				for (size_t i = 0; i < a->held.n; i++)
				{
					HeldEvent  *h = a->held.items[i];

					dispatch_event(h->source, h->event, a->id, h->payload);
					h->payload = NULL;
					held_free(h);
				}
				a->held.n = 0;
			}
		}
	}
	json_array_append_new(out, account_json(a));
	return true;
}

/* Update the public identifier index when a person's slug changes. */
static void
set_public_identifier(Person *p, const char *pub)
{
	if (p->public_identifier)
	{
		if (hm_get(&people_by_pub, p->public_identifier) == p)
			hm_del(&people_by_pub, p->public_identifier);
		free(p->public_identifier);
		p->public_identifier = NULL;
	}
	if (pub)
	{
		p->public_identifier = xstrdup(pub);
		hm_put(&people_by_pub, pub, p);
	}
}

/* Parse a seconds field into ms; absent keeps *ms, null = never (-1). */
static bool
seconds_field(json_t *o, const char *key, int64_t *ms)
{
	json_t	   *v = json_object_get(o, key);

	if (v == NULL)
		return true;
	if (json_is_null(v))
	{
		*ms = -1;
		return true;
	}
	if (!json_is_number(v) || json_number_value(v) < 0)
		return false;
	*ms = (int64_t) llround(json_number_value(v) * 1000.0);
	return true;
}

static bool
string_field(json_t *o, const char *key, char **dst)
{
	json_t	   *v = json_object_get(o, key);

	if (v == NULL)
		return true;
	if (!json_is_string(v) && !json_is_null(v))
		return false;
	free(*dst);
	*dst = xstrdup_or_null(json_string_value(v));
	return true;
}

/* Upsert one person; pending invitations to them are re-scheduled. */
static bool
upsert_person(json_t *o, Reply *r)
{
	const char *pid = json_string_value(json_object_get(o, "provider_id"));
	json_t	   *pub = json_object_get(o, "public_identifier");
	json_t	   *step = json_object_get(o, "reply_after_step");
	Person	   *p;

	if (!nonempty(pid))
	{
		reply_missing(r, "provider_id");
		return false;
	}
	p = get_person(pid, true);
	if (!string_field(o, "first_name", &p->first_name) ||
		!string_field(o, "last_name", &p->last_name) ||
		!string_field(o, "headline", &p->headline) ||
		!string_field(o, "reply_text", &p->reply_text) ||
		!seconds_field(o, "accept_after_s", &p->accept_after_ms) ||
		!seconds_field(o, "reply_after_s", &p->reply_after_ms) ||
		(pub && !json_is_string(pub) && !json_is_null(pub)) ||
		(step && !json_is_null(step) && (!json_is_integer(step) || json_integer_value(step) < 1)))
	{
		reply_invalid(r, "Invalid person field type.");
		return false;
	}
	if (pub)
		set_public_identifier(p, json_string_value(pub));
	if (step)
		p->reply_after_step = json_is_null(step) ? 1 : json_integer_value(step);
	if (p->accept_after_ms >= 0)
	{
		for (size_t b = 0; b < accounts.nbuckets; b++)
			for (HashEntry *e = accounts.buckets[b]; e; e = e->next)
			{
				Account    *a = e->value;
				Invitation *inv = hm_get(&a->inv_by_person, pid);

				if (inv)
					heap_push(inv->sent_at + p->accept_after_ms, EV_ACCEPT, inv->num, NULL);
			}
	}
	return true;
}

/* POST /_mock/relations: bulk (count) or single (provider_id). */
static void
ctl_relations(json_t *b, Reply *r, int64_t now)
{
	const char *account_id = json_string_value(json_object_get(b, "account_id"));
	const char *pid = json_string_value(json_object_get(b, "provider_id"));
	json_t	   *cnt = json_object_get(b, "count");
	json_t	   *newest = json_object_get(b, "newest_ms");
	json_t	   *spacing = json_object_get(b, "spacing_ms");
	json_t	   *created = json_object_get(b, "created_at");
	int64_t		newest_ms = json_is_integer(newest) ? json_integer_value(newest) : now;
	int64_t		spacing_ms = json_is_integer(spacing) ? json_integer_value(spacing) : 60000;
	Account    *acc;
	int64_t		n = 0;

	if (!nonempty(account_id))
		return reply_missing(r, "account_id");
	acc = get_account(account_id, true);
	if (nonempty(pid))
	{
		Person	   *p = get_person(pid, true);

		if (hm_get(&acc->inv_by_person, pid))
		{
			Invitation *inv = hm_get(&acc->inv_by_person, pid);

			unlink_invitation(inv);
			invitation_free(inv);
		}
		if (!hm_get(&acc->relations, pid))
			n = 1;
		add_relation(acc, p, json_is_integer(created) ? json_integer_value(created) : now, true);
	}
	else
	{
		if (!json_is_integer(cnt) || json_integer_value(cnt) < 0 ||
			json_integer_value(cnt) > 10000000)
			return reply_invalid(r, "count must be an integer between 0 and 10000000.");
		for (int64_t i = 0; i < json_integer_value(cnt); i++)
		{
			char		id[64];
			char		buf[64];
			Person	   *p;
			uint64_t	k = ++bulk_counter;

			snprintf(id, sizeof(id), "ACoBULK%llu", (unsigned long long) k);
			p = hm_get(&people, id);
			if (p == NULL)
			{
				p = get_person(id, true);
				p->first_name = xstrdup("Bulk");
				snprintf(buf, sizeof(buf), "%llu", (unsigned long long) k);
				p->last_name = xstrdup(buf);
				snprintf(buf, sizeof(buf), "bulk-%llu", (unsigned long long) k);
				set_public_identifier(p, buf);
				snprintf(buf, sizeof(buf), "Synthetic relation %llu", (unsigned long long) k);
				p->headline = xstrdup(buf);
			}
			if (!hm_get(&acc->relations, id))
				n++;
			add_relation(acc, p, newest_ms - i * spacing_ms, false);
		}
		qsort(acc->rel_sorted.items, acc->rel_sorted.n, sizeof(void *), relation_cmp);
	}
	reply_json(r, 200, json_pack("{s:I,s:I}", "created", (json_int_t) n,
								 "relations_count", (json_int_t) acc->rel_sorted.n));
}

/* Parse one fault object; NULL (and a 400) if invalid. */
static Fault *
parse_fault(json_t *o, Reply *r)
{
	Fault	   *f = xcalloc(1, sizeof(Fault));
	json_t	   *v;

	f->count = 1;
	if (!string_field(o, "method", &f->method) ||
		!string_field(o, "path_prefix", &f->path_prefix) ||
		!string_field(o, "type", &f->type) ||
		!string_field(o, "title", &f->title) ||
		!string_field(o, "detail", &f->detail))
		goto bad;
	if ((v = json_object_get(o, "status")) && !json_is_null(v))
	{
		if (!json_is_integer(v) || json_integer_value(v) < 100 || json_integer_value(v) > 599)
			goto bad;
		f->status = (int) json_integer_value(v);
	}
	if ((v = json_object_get(o, "delay_ms")) && !json_is_null(v))
	{
		if (!json_is_integer(v) || json_integer_value(v) < 0)
			goto bad;
		f->delay_ms = json_integer_value(v);
	}
	if ((v = json_object_get(o, "count")) && !json_is_null(v))
	{
		if (!json_is_integer(v) || json_integer_value(v) == 0 || json_integer_value(v) < -1)
			goto bad;
		f->count = json_integer_value(v);
	}
	f->drop = json_is_true(json_object_get(o, "drop"));
	f->garbage = json_is_true(json_object_get(o, "garbage"));
	f->html = json_is_true(json_object_get(o, "html"));
	f->after = json_is_true(json_object_get(o, "after"));
	if (!f->status && !f->drop && !f->garbage && !f->html && f->delay_ms == 0)
		goto bad;
	/* "after" replaces the answer: it needs something to replace it with */
	if (f->after && !f->status && !f->drop && !f->garbage && !f->html)
		goto bad;
	f->id = ++fault_counter;
	return f;
bad:
	fault_free(f);
	reply_invalid(r, "Invalid fault: need one of status, drop, garbage, html, delay_ms; count >= 1 or -1; \"after\" with status, drop, garbage or html.");
	return NULL;
}

static json_t *
fault_json(const Fault *f)
{
	return json_pack("{s:I,s:o,s:o,s:i,s:o,s:o,s:o,s:I,s:b,s:b,s:b,s:b,s:I,s:I}",
					 "id", (json_int_t) f->id,
					 "method", str_or_null(f->method),
					 "path_prefix", str_or_null(f->path_prefix),
					 "status", f->status,
					 "type", str_or_null(f->type),
					 "title", str_or_null(f->title),
					 "detail", str_or_null(f->detail),
					 "delay_ms", (json_int_t) f->delay_ms,
					 "drop", f->drop, "garbage", f->garbage, "html", f->html,
					 "after", f->after,
					 "count", (json_int_t) f->count,
					 "applied", (json_int_t) f->applied);
}

/* GET /_mock/state?account_id=A */
static void
ctl_state(const MockRequest *req, Reply *r)
{
	const char *account_id = query_str(req, "account_id");
	Account    *a;
	json_t	   *invs = json_array();
	json_t	   *cs = json_array();
	json_t	   *j;

	if (!nonempty(account_id))
	{
		json_decref(invs);
		json_decref(cs);
		return reply_missing(r, "account_id");
	}
	a = get_account(account_id, false);
	if (a)
	{
		for (size_t i = 0; i < a->invitations.n; i++)
		{
			Invitation *inv = a->invitations.items[i];

			json_array_append_new(invs, json_pack("{s:s,s:s,s:o,s:I}",
												  "id", inv->id,
												  "provider_id", inv->person->provider_id,
												  "text", str_or_null(inv->text),
												  "sent_at", (json_int_t) inv->sent_at));
		}
		for (size_t i = 0; i < a->chats.n; i++)
		{
			Chat	   *c = a->chats.items[i];
			json_t	   *ms = json_array();

			for (size_t k = 0; k < c->messages.n; k++)
			{
				Message    *m = c->messages.items[k];

				json_array_append_new(ms, json_pack("{s:s,s:s,s:s,s:I}",
													"id", m->id,
													"sender_provider_id", m->sender,
													"text", m->text,
													"timestamp", (json_int_t) m->ts));
			}
			json_array_append_new(cs, json_pack("{s:s,s:s,s:o}",
												"chat_id", c->id,
												"attendee", c->attendee->provider_id,
												"messages", ms));
		}
	}
	j = json_pack("{s:o,s:o,s:I,s:o}",
				  "account", a ? account_json(a) : json_null(),
				  "invitations", invs,
				  "relations_count", (json_int_t) (a ? a->rel_sorted.n : 0),
				  "chats", cs);
	reply_json(r, 200, j);
}

static json_t *
config_json(void)
{
	return json_pack("{s:b,s:b,s:b,s:I,s:b}",
					 "log", g_config.log_enabled,
					 "quiet", g_config.quiet,
					 "echo_sent_messages", g_config.echo_sent,
					 "log_max", (json_int_t) g_config.log_max,
					 "api_key_required", nonempty(g_config.api_key));
}

static json_t *
stats_json(void)
{
	json_t	   *routes = json_object();
	json_t	   *statuses = json_object();

	for (int i = 0; i < R_COUNT; i++)
		if (stat_by_route[i])
			json_object_set_new(routes, route_names[i], json_integer((json_int_t) stat_by_route[i]));
	for (int i = 0; i < 600; i++)
		if (stat_by_status[i])
		{
			char		k[8];

			snprintf(k, sizeof(k), "%d", i);
			json_object_set_new(statuses, k, json_integer((json_int_t) stat_by_status[i]));
		}
	return json_pack("{s:I,s:o,s:o,s:o}",
					 "requests", (json_int_t) stat_requests,
					 "by_route", routes,
					 "by_status", statuses,
					 "deliveries", deliveries_info_locked());
}

/* ?since= and ?limit= for the log endpoints. */
static bool
since_limit(const MockRequest *req, Reply *r, int64_t *since, int64_t *limit)
{
	const char *s = query_str(req, "since");
	const char *l = query_str(req, "limit");

	*since = 0;
	*limit = 10000;
	if ((s && (!parse_int64(s, since) || *since < 0)) ||
		(l && (!parse_int64(l, limit) || *limit < 1)))
	{
		reply_invalid(r, "since and limit must be non-negative integers.");
		return false;
	}
	return true;
}

/* POST /_mock/webhooks/emit {"url"?, "payload", "source"?, "headers"?} */
static void
ctl_emit(json_t *b, Reply *r)
{
	json_t	   *payload = json_object_get(b, "payload");
	const char *url = json_string_value(json_object_get(b, "url"));
	const char *source = json_string_value(json_object_get(b, "source"));
	const char *event;
	char	   *s;
	int			n = 0;

	if (payload == NULL)
		return reply_missing(r, "payload");
	event = json_string_value(json_object_get(payload, "event"));
	if (event == NULL && json_object_get(payload, "AccountStatus"))
		event = "account_status";
	s = json_dumps(payload, JSON_COMPACT | JSON_ENCODE_ANY);
	if (s == NULL)
		return reply_invalid(r, "payload cannot be serialized.");
	if (nonempty(url))
	{
		delivery_enqueue_locked(NULL, url, json_object_get(b, "headers"), s, event);
		n = 1;
	}
	else
		for (size_t i = 0; i < webhooks.n; i++)
		{
			Webhook    *w = webhooks.items[i];

			if (source && strcmp(source, w->source) != 0)
				continue;
			delivery_enqueue_locked(w->id, w->url, w->headers, s, event);
			n++;
		}
	free(s);
	reply_json(r, 200, json_pack("{s:i}", "queued", n));
}

/* Clear all simulated state (keeps the configuration). */
static void
ctl_reset(void)
{
	state_free_locked();
	state_init_locked();
	ring_clear(&req_log);
	delivery_reset_locked();
}

/* One /_mock request, under g_lock. */
static void
handle_control_locked(const MockRequest *req, Reply *r)
{
	const char *m = req->method;
	const char *p = req->path + strlen("/_mock");
	bool		get = strcmp(m, "GET") == 0;
	bool		post = strcmp(m, "POST") == 0;
	bool		del = strcmp(m, "DELETE") == 0;
	json_t	   *b = req->body;
	int64_t		now = sim_now_locked();

	if (post && (req->body_malformed || req->body_too_large ||
				 (b && !req->body_is_json)))
		return reply_malformed(r);

	if (strcmp(p, "/health") == 0 && get)
		return reply_json(r, 200, json_pack("{s:b}", "ok", 1));

	if (strcmp(p, "/clock") == 0 && (get || post))
	{
		if (post)
		{
			json_t	   *nv = json_object_get(b, "now_ms");
			json_t	   *adv = json_object_get(b, "advance_ms");

			if (json_is_number(nv))
				clock_offset = (int64_t) json_number_value(nv) - wall_ms();
			else if (json_is_number(adv))
				clock_offset += (int64_t) json_number_value(adv);
			else
				return reply_missing(r, "now_ms (or advance_ms)");
			now = sim_now_locked();
			evaluate_due(now);
		}
		return reply_json(r, 200, json_pack("{s:I,s:I}", "now_ms", (json_int_t) now,
											"offset_ms", (json_int_t) clock_offset));
	}

	if (strcmp(p, "/accounts") == 0 && (get || post))
	{
		json_t	   *out = json_array();

		if (get)
		{
			for (size_t k = 0; k < accounts.nbuckets; k++)
				for (HashEntry *e = accounts.buckets[k]; e; e = e->next)
					json_array_append_new(out, account_json(e->value));
		}
		else if (json_is_array(b))
		{
			size_t		i;
			json_t	   *o;

			json_array_foreach(b, i, o)
			{
				if (!upsert_account(o, r, out))
				{
					json_decref(out);
					return;
				}
			}
		}
		else if (!upsert_account(b, r, out))
		{
			json_decref(out);
			return;
		}
		return reply_json(r, 200, json_pack("{s:o}", "items", out));
	}

	if (strcmp(p, "/people") == 0 && (get || post))
	{
		size_t		n = 0;

		if (post)
		{
			if (json_is_array(b))
			{
				size_t		i;
				json_t	   *o;

				json_array_foreach(b, i, o)
				{
					if (!upsert_person(o, r))
						return;
					n++;
				}
			}
			else
			{
				if (!upsert_person(b, r))
					return;
				n = 1;
			}
			evaluate_due(now);
		}
		else
		{
			const char *pid = query_str(req, "provider_id");
			Person	   *pp = pid ? hm_get(&people, pid) : NULL;

			if (pid)
			{
				if (pp == NULL)
					return reply_not_found(r, "Person not found.");
				return reply_json(r, 200,
								  json_pack("{s:s,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:I}",
											"provider_id", pp->provider_id,
											"public_identifier", str_or_null(pp->public_identifier),
											"first_name", str_or_null(pp->first_name),
											"last_name", str_or_null(pp->last_name),
											"headline", str_or_null(pp->headline),
											"accept_after_s", pp->accept_after_ms < 0 ? json_null() : json_real(pp->accept_after_ms / 1000.0),
											"reply_after_s", pp->reply_after_ms < 0 ? json_null() : json_real(pp->reply_after_ms / 1000.0),
											"reply_text", str_or_null(pp->reply_text),
											"reply_after_step", (json_int_t) pp->reply_after_step));
			}
		}
		return reply_json(r, 200, json_pack("{s:I,s:I}", "upserted", (json_int_t) n,
											"people_count", (json_int_t) people.count));
	}

	if (strcmp(p, "/relations") == 0 && post)
		return ctl_relations(b, r, now);

	if (strcmp(p, "/webhooks/emit") == 0 && post)
		return ctl_emit(b, r);

	if (strcmp(p, "/deliveries") == 0 && get)
	{
		int64_t		since,
					limit;
		StrBuf		sb = {0};

		if (!since_limit(req, r, &since, &limit))
			return;
		deliveries_dump_locked((uint64_t) since, (size_t) limit, &sb);
		return reply_raw_json(r, 200, &sb);
	}

	if (strcmp(p, "/log") == 0 && get)
	{
		int64_t		since,
					limit;
		StrBuf		sb = {0};

		if (!since_limit(req, r, &since, &limit))
			return;
		ring_dump(&req_log, (uint64_t) since, (size_t) limit, &sb);
		return reply_raw_json(r, 200, &sb);
	}

	if (strcmp(p, "/faults") == 0 && (get || post || del))
	{
		json_t	   *out = json_array();

		if (del)
			pv_free(&faults, fault_free);
		else if (post)
		{
			json_t	   *arr = json_is_array(b) ? json_incref(b) : json_pack("[O]", b ? b : json_null());
			size_t		i;
			json_t	   *o;

			json_array_foreach(arr, i, o)
			{
				Fault	   *f = parse_fault(o, r);

				if (f == NULL)
				{
					json_decref(arr);
					json_decref(out);
					return;
				}
				pv_push(&faults, f);
			}
			json_decref(arr);
		}
		for (size_t i = 0; i < faults.n; i++)
			json_array_append_new(out, fault_json(faults.items[i]));
		return reply_json(r, 200, json_pack("{s:o}", "items", out));
	}

	if (strcmp(p, "/stats") == 0 && get)
		return reply_json(r, 200, stats_json());

	if (strcmp(p, "/config") == 0 && (get || post))
	{
		if (post)
		{
			json_t	   *v;

			if ((v = json_object_get(b, "log")) && json_is_boolean(v))
				g_config.log_enabled = json_is_true(v);
			if ((v = json_object_get(b, "quiet")) && json_is_boolean(v))
				g_config.quiet = json_is_true(v);
			if ((v = json_object_get(b, "echo_sent_messages")) && json_is_boolean(v))
				g_config.echo_sent = json_is_true(v);
			if ((v = json_object_get(b, "log_max")) && json_is_integer(v) &&
				json_integer_value(v) > 0 && (size_t) json_integer_value(v) != g_config.log_max)
			{
				g_config.log_max = (size_t) json_integer_value(v);
				ring_clear(&req_log);
				free(req_log.items);
				ring_init(&req_log, g_config.log_max);
				deliveries_set_cap_locked(g_config.log_max);
			}
		}
		return reply_json(r, 200, config_json());
	}

	if (strcmp(p, "/reset") == 0 && post)
	{
		ctl_reset();
		return reply_json(r, 200, json_pack("{s:b}", "reset", 1));
	}

	if (strcmp(p, "/state") == 0 && get)
		return ctl_state(req, r);

	reply_not_found(r, "Unknown control route or method.");
}

/*
 * POST /hooks/{any}: stands for a notification receiver such as a Slack
 * incoming webhook.  Answers 200 "ok" as text (as Slack does); faults whose
 * path prefix matches apply, so that a test can make the receiver fail.
 * Every request is logged, with whether it carried an X-API-KEY.
 */
static void
handle_hook_locked(const MockRequest *req, Reply *r, int64_t now)
{
	Fault	   *f;

	if (strcmp(req->method, "POST") != 0)
	{
		reply_error(r, 405, "errors/method_not_allowed", "Method not allowed",
					"A hook only takes POST.");
		r->allow = "POST";
		log_request(req, R_HOOK, NULL, now, r, false);
		return;
	}
	f = take_fault(req->method, req->path);
	if (f && apply_fault(f, r))
	{
		prune_faults();
		log_request(req, R_HOOK, NULL, now, r, true);
		return;
	}
	if (f)
		prune_faults();
	r->kind = REPLY_RAW;
	r->status = 200;
	r->raw = xstrdup("ok");
	r->raw_len = 2;
	r->content_type = "text/plain; charset=utf-8";
	log_request(req, R_HOOK, NULL, now, r, false);
}

/* Entry point from the HTTP layer: route one complete request. */
void
handle_request(const MockRequest *req, Reply *r)
{
	int64_t		now;

	memset(r, 0, sizeof(*r));
	r->kind = REPLY_JSON;
	r->status = 200;

	pthread_mutex_lock(&g_lock);
	now = sim_now_locked();
	evaluate_due(now);
	if (strncmp(req->path, "/api/v1/", 8) == 0)
		handle_api_locked(req, r, now);
	else if (strncmp(req->path, "/_mock/", 7) == 0)
		handle_control_locked(req, r);
	else if (strncmp(req->path, "/hooks/", 7) == 0)
		handle_hook_locked(req, r, now);
	else
		reply_not_found(r, "Route not found.");
	pthread_mutex_unlock(&g_lock);
}

/* Background evaluation of due events (called by the timer thread). */
void
state_tick(void)
{
	pthread_mutex_lock(&g_lock);
	if (heap_n > 0)
		evaluate_due(sim_now_locked());
	pthread_mutex_unlock(&g_lock);
}
