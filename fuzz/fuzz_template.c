/*-------------------------------------------------------------------------
 *
 * fuzz_template.c
 *	  libFuzzer harness of the template renderer core (src/template_core.c),
 *	  the code behind sam.render_template() and sam.template_variables().
 *
 * Input: the template, then optionally a NUL byte and a value given to
 * every variable whose name hashes to "present" (the others are missing,
 * so that fallbacks and the missing-variable error are exercised too).
 *
 * Invariants checked (a violation aborts, which libFuzzer reports):
 *	- counting the parts and storing them give the same parts;
 *	- a syntax error points at a "{" or "}" inside the template;
 *	- the parts tile the template in order; a literal holds only doubled
 *	  braces and unescapes to out_len bytes; a variable is "{...}" with a
 *	  valid lowercase name and a fallback inside it;
 *	- rendering stops exactly at the first variable with no value and no
 *	  fallback, and produces exactly the sum of the pieces' lengths
 *	  (bounded by the template and the values);
 *	- a value is never interpreted: escaping the rendered text and
 *	  rendering it again gives it back unchanged.
 *
 *-------------------------------------------------------------------------
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_check.h"
#include "template_core.h"

typedef struct Buf
{
	char	   *data;
	size_t		len;
	size_t		cap;
} Buf;

static void
buf_append(void *arg, const char *data, size_t len)
{
	Buf		   *b = arg;

	if (b->len + len > b->cap)
	{
		size_t		cap = b->cap ? b->cap : 64;

		while (cap < b->len + len)
			cap *= 2;
		b->data = realloc(b->data, cap);
		CHECK(b->data != NULL);
		b->cap = cap;
	}
	if (len > 0)
		memcpy(b->data + b->len, data, len);
	b->len += len;
}

typedef struct Values
{
	const char *value;			/* NULL: every variable is missing */
	size_t		value_len;
} Values;

/* a variable is present when its name's hash is odd */
static int
name_present(const char *name)
{
	unsigned	h = 5381;

	for (; *name; name++)
		h = h * 33 + (unsigned char) *name;
	return h & 1;
}

static const char *
lookup(void *arg, const char *name, size_t *len)
{
	Values	   *v = arg;

	if (v->value == NULL || !name_present(name))
		return NULL;
	*len = v->value_len;
	return v->value;
}

static const char *
lookup_none(void *arg, const char *name, size_t *len)
{
	(void) arg;
	(void) name;
	(void) len;
	return NULL;
}

static int
valid_name(const char *name)
{
	size_t		n = strlen(name);

	if (n == 0 || n > TC_MAX_VARIABLE_NAME || (name[0] >= '0' && name[0] <= '9'))
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!((name[i] >= 'a' && name[i] <= 'z') ||
			  (name[i] >= '0' && name[i] <= '9') || name[i] == '_'))
			return 0;
	return 1;
}

/* check_parts checks that the parts tile the template as documented */
static void
check_parts(const char *t, size_t len, const TemplatePart *parts, size_t n)
{
	size_t		pos = 0;

	for (size_t i = 0; i < n; i++)
	{
		const TemplatePart *p = &parts[i];

		CHECK(p->src_off == pos);
		CHECK(p->src_len > 0 && p->src_off + p->src_len <= len);
		if (!p->is_variable)
		{
			size_t		braces = 0;

			CHECK(i == 0 || parts[i - 1].is_variable);	/* literals merged */
			for (size_t k = p->src_off; k < p->src_off + p->src_len; k++)
				if (t[k] == '{' || t[k] == '}')
				{
					CHECK(k + 1 < p->src_off + p->src_len && t[k + 1] == t[k]);
					braces++;
					k++;
				}
			CHECK(p->out_len == p->src_len - braces);
		}
		else
		{
			CHECK(t[p->src_off] == '{');
			CHECK(t[p->src_off + p->src_len - 1] == '}');
			CHECK(valid_name(p->name));
			if (p->has_fallback)
			{
				CHECK(p->fallback_off > p->src_off);
				CHECK(t[p->fallback_off - 1] == '|');
				CHECK(p->fallback_off + p->fallback_len == p->src_off + p->src_len - 1);
				CHECK(memchr(t + p->fallback_off, '{', p->fallback_len) == NULL);
				CHECK(memchr(t + p->fallback_off, '}', p->fallback_len) == NULL);
			}
		}
		pos += p->src_len;
	}
	CHECK(pos == len);
}

/*
 * check_round_trip: the rendered text, its braces doubled, is a template
 * of at most one literal part that renders to the same text.
 */
static void
check_round_trip(const Buf *out)
{
	Buf			esc = {0};
	Buf			again = {0};
	TemplatePart part;
	TemplateError err;
	size_t		n;

	for (size_t i = 0; i < out->len; i++)
	{
		buf_append(&esc, out->data + i, 1);
		if (out->data[i] == '{' || out->data[i] == '}')
			buf_append(&esc, out->data + i, 1);
	}
	n = tc_parse(esc.data ? esc.data : "", esc.len, &part, 1, &err);
	CHECK(err.kind == TC_OK);
	CHECK(n == (out->len > 0 ? 1 : 0));
	if (n == 1)
	{
		CHECK(!part.is_variable && part.out_len == out->len);
		CHECK(tc_render(esc.data, &part, 1, lookup_none, NULL, buf_append, &again) == 1);
		CHECK(again.len == out->len && memcmp(again.data, out->data, out->len) == 0);
	}
	free(esc.data);
	free(again.data);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *t = (const char *) data;
	const char *nul = memchr(data, '\0', size);
	size_t		len = nul ? (size_t) (nul - t) : size;
	Values		values = {0};
	TemplateError err,
				err2;
	TemplatePart *parts,
			   *parts2;
	size_t		n,
				n2,
				stop,
				expect_len = 0,
				first_missing;
	Buf			out = {0};

	if (nul)
	{
		values.value = nul + 1;
		values.value_len = size - len - 1;
	}

	n = tc_parse(t, len, NULL, 0, &err);
	if (err.kind != TC_OK)
	{
		CHECK(n == 0);
		CHECK(err.offset < len);
		if (err.kind == TC_UNMATCHED_CLOSE)
			CHECK(t[err.offset] == '}');
		else
			CHECK(t[err.offset] == '{');
		if (err.kind == TC_UNTERMINATED_FALLBACK)
			CHECK(valid_name(err.name));
		return 0;
	}
	CHECK(n <= len);

	parts = calloc(n + 1, sizeof(TemplatePart));
	parts2 = calloc(n + 1, sizeof(TemplatePart));
	CHECK(parts && parts2);
	CHECK(tc_parse(t, len, parts, n, &err2) == n && err2.kind == TC_OK);
	/* storing only a prefix stores the same prefix */
	n2 = tc_parse(t, len, parts2, n / 2, &err2);
	CHECK(n2 == n && memcmp(parts, parts2, (n / 2) * sizeof(TemplatePart)) == 0);
	check_parts(t, len, parts, n);

	/* render: the expected stop and length */
	first_missing = n;
	for (size_t i = 0; i < n; i++)
	{
		const TemplatePart *p = &parts[i];

		if (!p->is_variable)
			expect_len += p->out_len;
		else if (values.value && name_present(p->name))
			expect_len += values.value_len;
		else if (p->has_fallback)
			expect_len += p->fallback_len;
		else
		{
			first_missing = i;
			break;
		}
	}
	stop = tc_render(t, parts, n, lookup, &values, buf_append, &out);
	CHECK(stop == first_missing);
	CHECK(out.len == expect_len);
	CHECK(out.len <= len + n * values.value_len);
	if (stop == n)
		check_round_trip(&out);

	free(out.data);
	free(parts);
	free(parts2);
	return 0;
}
