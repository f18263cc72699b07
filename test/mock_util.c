/*-------------------------------------------------------------------------
 *
 * mock_util.c
 *	  Small data structures and helpers for the mock Unipile server:
 *	  a string-keyed hash map, pointer vectors, string buffers, a ring of
 *	  serialized JSON records, clocks, ISO-8601 formatting, ids, base64.
 *
 * None of these functions lock anything; callers hold g_lock where the
 * data is shared.
 *
 * test/mock_util.c
 *
 *-------------------------------------------------------------------------
 */
#include "mock_unipile.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/*
 * Allocation helpers: the mock has no sensible way to continue when out
 * of memory, so they abort.
 */
void *
xmalloc(size_t n)
{
	void	   *p = malloc(n ? n : 1);

	if (p == NULL)
	{
		fprintf(stderr, "mock_unipile: out of memory\n");
		abort();
	}
	return p;
}

void *
xcalloc(size_t n, size_t sz)
{
	void	   *p = calloc(n ? n : 1, sz ? sz : 1);

	if (p == NULL)
	{
		fprintf(stderr, "mock_unipile: out of memory\n");
		abort();
	}
	return p;
}

char *
xstrdup(const char *s)
{
	size_t		len = strlen(s);
	char	   *p = xmalloc(len + 1);

	memcpy(p, s, len + 1);
	return p;
}

char *
xstrdup_or_null(const char *s)
{
	return s ? xstrdup(s) : NULL;
}

/* ---------------------------------------------------------------------
 * Hash map
 * ---------------------------------------------------------------------
 */

/* FNV-1a, good enough for ids. */
uint32_t
str_hash(const char *s)
{
	uint32_t	h = 2166136261u;

	for (; *s; s++)
	{
		h ^= (unsigned char) *s;
		h *= 16777619u;
	}
	return h;
}

void
hm_init(HashMap *m)
{
	m->nbuckets = 64;
	m->count = 0;
	m->buckets = xcalloc(m->nbuckets, sizeof(HashEntry *));
}

/* Double the bucket array once the load factor exceeds 1. */
static void
hm_grow(HashMap *m)
{
	size_t		nb = m->nbuckets * 2;
	HashEntry **b = xcalloc(nb, sizeof(HashEntry *));

	for (size_t i = 0; i < m->nbuckets; i++)
	{
		HashEntry  *e = m->buckets[i];

		while (e)
		{
			HashEntry  *next = e->next;
			size_t		j = e->hash & (nb - 1);

			e->next = b[j];
			b[j] = e;
			e = next;
		}
	}
	free(m->buckets);
	m->buckets = b;
	m->nbuckets = nb;
}

void *
hm_get(const HashMap *m, const char *key)
{
	uint32_t	h = str_hash(key);
	HashEntry  *e;

	for (e = m->buckets[h & (m->nbuckets - 1)]; e; e = e->next)
		if (e->hash == h && strcmp(e->key, key) == 0)
			return e->value;
	return NULL;
}

/* Insert or replace; the key is copied. */
void
hm_put(HashMap *m, const char *key, void *value)
{
	uint32_t	h = str_hash(key);
	size_t		i = h & (m->nbuckets - 1);
	HashEntry  *e;

	for (e = m->buckets[i]; e; e = e->next)
		if (e->hash == h && strcmp(e->key, key) == 0)
		{
			e->value = value;
			return;
		}
	e = xmalloc(sizeof(HashEntry));
	e->key = xstrdup(key);
	e->value = value;
	e->hash = h;
	e->next = m->buckets[i];
	m->buckets[i] = e;
	if (++m->count > m->nbuckets)
		hm_grow(m);
}

/* Remove a key; returns its value (or NULL). */
void *
hm_del(HashMap *m, const char *key)
{
	uint32_t	h = str_hash(key);
	HashEntry **pp = &m->buckets[h & (m->nbuckets - 1)];

	for (; *pp; pp = &(*pp)->next)
	{
		HashEntry  *e = *pp;

		if (e->hash == h && strcmp(e->key, key) == 0)
		{
			void	   *v = e->value;

			*pp = e->next;
			free(e->key);
			free(e);
			m->count--;
			return v;
		}
	}
	return NULL;
}

/* Free the map (and optionally every value), leaving it unusable. */
void
hm_free(HashMap *m, void (*free_value) (void *))
{
	if (m->buckets == NULL)
		return;
	for (size_t i = 0; i < m->nbuckets; i++)
	{
		HashEntry  *e = m->buckets[i];

		while (e)
		{
			HashEntry  *next = e->next;

			if (free_value)
				free_value(e->value);
			free(e->key);
			free(e);
			e = next;
		}
	}
	free(m->buckets);
	m->buckets = NULL;
	m->nbuckets = 0;
	m->count = 0;
}

/* ---------------------------------------------------------------------
 * Pointer vector
 * ---------------------------------------------------------------------
 */
void
pv_push(PtrVec *v, void *p)
{
	pv_insert(v, v->n, p);
}

void
pv_insert(PtrVec *v, size_t at, void *p)
{
	if (v->n == v->cap)
	{
		size_t		nc = v->cap ? v->cap * 2 : 8;
		void	  **ni = realloc(v->items, nc * sizeof(void *));

		if (ni == NULL)
		{
			fprintf(stderr, "mock_unipile: out of memory\n");
			abort();
		}
		v->items = ni;
		v->cap = nc;
	}
	if (at < v->n)
		memmove(&v->items[at + 1], &v->items[at], (v->n - at) * sizeof(void *));
	v->items[at] = p;
	v->n++;
}

void *
pv_remove(PtrVec *v, size_t at)
{
	void	   *p = v->items[at];

	memmove(&v->items[at], &v->items[at + 1], (v->n - at - 1) * sizeof(void *));
	v->n--;
	return p;
}

bool
pv_remove_ptr(PtrVec *v, void *p)
{
	for (size_t i = 0; i < v->n; i++)
		if (v->items[i] == p)
		{
			pv_remove(v, i);
			return true;
		}
	return false;
}

void
pv_free(PtrVec *v, void (*free_item) (void *))
{
	if (free_item)
		for (size_t i = 0; i < v->n; i++)
			free_item(v->items[i]);
	free(v->items);
	v->items = NULL;
	v->n = v->cap = 0;
}

/* ---------------------------------------------------------------------
 * String buffer
 * ---------------------------------------------------------------------
 */
void
sb_append(StrBuf *sb, const char *s, size_t len)
{
	if (sb->len + len + 1 > sb->cap)
	{
		size_t		nc = sb->cap ? sb->cap : 256;
		char	   *nd;

		while (nc < sb->len + len + 1)
			nc *= 2;
		nd = realloc(sb->data, nc);
		if (nd == NULL)
		{
			fprintf(stderr, "mock_unipile: out of memory\n");
			abort();
		}
		sb->data = nd;
		sb->cap = nc;
	}
	memcpy(sb->data + sb->len, s, len);
	sb->len += len;
	sb->data[sb->len] = '\0';
}

void
sb_puts(StrBuf *sb, const char *s)
{
	sb_append(sb, s, strlen(s));
}

void
sb_printf(StrBuf *sb, const char *fmt,...)
{
	char		buf[512];
	va_list		ap;
	int			n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t) n < sizeof(buf))
	{
		sb_append(sb, buf, n);
		return;
	}
	{
		char	   *big = xmalloc(n + 1);

		va_start(ap, fmt);
		vsnprintf(big, n + 1, fmt, ap);
		va_end(ap);
		sb_append(sb, big, n);
		free(big);
	}
}

/* ---------------------------------------------------------------------
 * JSON record ring
 * ---------------------------------------------------------------------
 */
void
ring_init(JsonRing *r, size_t cap)
{
	r->cap = cap ? cap : 1;
	r->items = xcalloc(r->cap, sizeof(char *));
	r->first_seq = 1;
	r->next_seq = 1;
}

/*
 * Append a serialized record (ownership taken); it gets seq r->next_seq.
 * When the ring is full the oldest record is dropped.
 */
void
ring_push(JsonRing *r, char *json)
{
	size_t		slot = r->next_seq % r->cap;

	if (r->next_seq - r->first_seq >= r->cap)
	{
		free(r->items[slot]);
		r->first_seq++;
	}
	r->items[slot] = json;
	r->next_seq++;
}

/* Drop every record and restart numbering at 1. */
void
ring_clear(JsonRing *r)
{
	for (size_t i = 0; i < r->cap; i++)
	{
		free(r->items[i]);
		r->items[i] = NULL;
	}
	r->first_seq = 1;
	r->next_seq = 1;
}

/*
 * Write {"items":[...],"next":N} with at most `limit` records of seq >=
 * since; `next` is the seq to ask for next time.
 */
void
ring_dump(const JsonRing *r, uint64_t since, size_t limit, StrBuf *out)
{
	uint64_t	seq = since > r->first_seq ? since : r->first_seq;
	size_t		n = 0;

	sb_puts(out, "{\"items\":[");
	for (; seq < r->next_seq && n < limit; seq++, n++)
	{
		if (n > 0)
			sb_puts(out, ",");
		sb_puts(out, r->items[seq % r->cap]);
	}
	if (seq < since)
		seq = since;
	sb_printf(out, "],\"next\":%llu,\"first\":%llu}",
			  (unsigned long long) seq, (unsigned long long) r->first_seq);
}

/* ---------------------------------------------------------------------
 * Time
 * ---------------------------------------------------------------------
 */
int64_t
wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t
mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* "2023-09-24T13:49:07.965Z" */
void
format_iso8601(int64_t ms, char *buf, size_t buflen)
{
	time_t		secs = (time_t) (ms >= 0 ? ms / 1000 : (ms - 999) / 1000);
	int			frac = (int) (ms - (int64_t) secs * 1000);
	struct tm	tm;

	gmtime_r(&secs, &tm);
	snprintf(buf, buflen, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
			 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
			 tm.tm_hour, tm.tm_min, tm.tm_sec, frac);
}

/* ---------------------------------------------------------------------
 * Misc
 * ---------------------------------------------------------------------
 */

/* Number of UTF-8 code points (continuation bytes are not counted). */
size_t
utf8_codepoints(const char *s)
{
	size_t		n = 0;

	for (; *s; s++)
		if (((unsigned char) *s & 0xC0) != 0x80)
			n++;
	return n;
}

/* splitmix64 finalizer: turns counters into random-looking bits. */
uint64_t
mix64(uint64_t x)
{
	x += 0x9E3779B97F4A7C15ull;
	x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
	x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
	return x ^ (x >> 31);
}

/*
 * A deterministic 22-character base64url id (like Unipile's chat,
 * message and attendee ids) derived from a counter and a salt.
 */
void
make_id22(uint64_t n, uint64_t salt, char out[23])
{
	static const char alphabet[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	uint64_t	a = mix64(n ^ salt);
	uint64_t	b = mix64(a ^ (salt * 31 + n));

	for (int i = 0; i < 11; i++)
	{
		out[i] = alphabet[a & 63];
		a >>= 6;
		out[11 + i] = alphabet[b & 63];
		b >>= 6;
	}
	out[22] = '\0';
}

static const char b64chars[] =
"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Standard base64 with padding; result is malloc'ed. */
char *
base64_encode(const unsigned char *data, size_t len)
{
	char	   *out = xmalloc((len + 2) / 3 * 4 + 1);
	size_t		o = 0;

	for (size_t i = 0; i < len; i += 3)
	{
		uint32_t	v = (uint32_t) data[i] << 16;

		if (i + 1 < len)
			v |= (uint32_t) data[i + 1] << 8;
		if (i + 2 < len)
			v |= data[i + 2];
		out[o++] = b64chars[(v >> 18) & 63];
		out[o++] = b64chars[(v >> 12) & 63];
		out[o++] = i + 1 < len ? b64chars[(v >> 6) & 63] : '=';
		out[o++] = i + 2 < len ? b64chars[v & 63] : '=';
	}
	out[o] = '\0';
	return out;
}

static int
b64val(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+' || c == '-' || c == ' ')	/* ' ': unescaped '+' in a query */
		return 62;
	if (c == '/' || c == '_')
		return 63;
	return -1;
}

/*
 * Decode base64 (standard or url alphabet, padding optional).  Returns a
 * malloc'ed NUL-terminated buffer, or NULL if the input is invalid.
 */
unsigned char *
base64_decode(const char *s, size_t *outlen)
{
	size_t		len = strlen(s);
	unsigned char *out = xmalloc(len / 4 * 3 + 4);
	uint32_t	acc = 0;
	int			bits = 0;
	size_t		o = 0;

	for (size_t i = 0; i < len; i++)
	{
		int			v;

		if (s[i] == '=')
			break;
		v = b64val(s[i]);
		if (v < 0)
		{
			free(out);
			return NULL;
		}
		acc = (acc << 6) | (uint32_t) v;
		bits += 6;
		if (bits >= 8)
		{
			bits -= 8;
			out[o++] = (unsigned char) ((acc >> bits) & 0xFF);
		}
	}
	out[o] = '\0';
	*outlen = o;
	return out;
}

/* Strict decimal integer parse; false on junk or overflow. */
bool
parse_int64(const char *s, int64_t *out)
{
	char	   *end;
	long long	v;

	if (s == NULL || *s == '\0')
		return false;
	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno != 0 || *end != '\0')
		return false;
	*out = v;
	return true;
}
