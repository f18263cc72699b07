/*-------------------------------------------------------------------------
 *
 * template_core.c
 *	  The backend-independent core of the message template renderer (see
 *	  template_core.h): no PostgreSQL headers and no allocation, so that the
 *	  extension and the fuzzing harness run the very same code.
 *
 *	  Syntax: {name} is replaced by the variable's value, {name|fallback}
 *	  uses the fallback when the value is missing or empty, {{ and }} are
 *	  literal braces.  Names are letters, digits and underscores, not
 *	  starting with a digit, compared case-insensitively (they are
 *	  lowercased).  Spaces around a name are allowed.  A fallback runs to
 *	  the next "}" and may not hold a "{".  Values are always inserted as
 *	  plain text: nothing in a value is ever interpreted.
 *
 *-------------------------------------------------------------------------
 */
#include "template_core.h"

#include <ctype.h>
#include <string.h>

/*
 * add_part stores a part when there is room for it; the count goes on
 * either way, so that a first call with no room tells how many there are.
 */
static void
add_part(TemplatePart *parts, size_t max_parts, size_t *n,
		 const TemplatePart *part)
{
	if (*n < max_parts)
		parts[*n] = *part;
	(*n)++;
}

/*
 * tc_parse splits a template of len bytes into its parts, storing at most
 * max_parts of them, and returns how many there are (parts may be NULL
 * with max_parts 0 to count them first).  On a syntax error it returns 0
 * and describes the first error in *err; err->kind is TC_OK otherwise.
 * The template need not be NUL-terminated.
 */
size_t
tc_parse(const char *tmpl, size_t len, TemplatePart *parts, size_t max_parts,
		 TemplateError *err)
{
	size_t		n = 0;
	size_t		i = 0;
	TemplatePart lit;
	bool		in_literal = false;

	memset(err, 0, sizeof(*err));
	memset(&lit, 0, sizeof(lit));
	while (i < len)
	{
		char		c = tmpl[i];

		if ((c == '{' || c == '}') && i + 1 < len && tmpl[i + 1] == c)
		{
			/* an escaped brace: part of the literal text */
			if (!in_literal)
			{
				memset(&lit, 0, sizeof(lit));
				lit.src_off = i;
				in_literal = true;
			}
			lit.out_len++;
			i += 2;
		}
		else if (c == '}')
		{
			err->kind = TC_UNMATCHED_CLOSE;
			err->offset = i;
			return 0;
		}
		else if (c == '{')
		{
			size_t		start = i;
			size_t		j = i + 1;
			size_t		name_start,
						name_end,
						k;
			TemplatePart var;

			while (j < len && tmpl[j] == ' ')
				j++;
			name_start = j;
			while (j < len && (isalnum((unsigned char) tmpl[j]) || tmpl[j] == '_'))
				j++;
			name_end = j;
			while (j < len && tmpl[j] == ' ')
				j++;
			if (name_end == name_start ||
				isdigit((unsigned char) tmpl[name_start]) ||
				name_end - name_start > TC_MAX_VARIABLE_NAME ||
				j >= len || (tmpl[j] != '}' && tmpl[j] != '|'))
			{
				err->kind = j >= len ? TC_UNTERMINATED_VARIABLE : TC_BAD_VARIABLE_NAME;
				err->offset = start;
				return 0;
			}

			memset(&var, 0, sizeof(var));
			var.is_variable = true;
			var.src_off = start;
			for (k = 0; k < name_end - name_start; k++)
			{
				char		ch = tmpl[name_start + k];

				if (ch >= 'A' && ch <= 'Z')
					ch += 'a' - 'A';
				var.name[k] = ch;
			}
			var.name[k] = '\0';
			if (tmpl[j] == '|')
			{
				var.has_fallback = true;
				var.fallback_off = j + 1;
				j = var.fallback_off;
				while (j < len && tmpl[j] != '}' && tmpl[j] != '{')
					j++;
				if (j >= len || tmpl[j] == '{')
				{
					err->kind = TC_UNTERMINATED_FALLBACK;
					err->offset = start;
					memcpy(err->name, var.name, sizeof(err->name));
					return 0;
				}
				var.fallback_len = j - var.fallback_off;
			}
			var.src_len = j + 1 - start;

			if (in_literal)
			{
				lit.src_len = start - lit.src_off;
				add_part(parts, max_parts, &n, &lit);
				in_literal = false;
			}
			add_part(parts, max_parts, &n, &var);
			i = j + 1;
		}
		else
		{
			if (!in_literal)
			{
				memset(&lit, 0, sizeof(lit));
				lit.src_off = i;
				in_literal = true;
			}
			lit.out_len++;
			i++;
		}
	}
	if (in_literal)
	{
		lit.src_len = len - lit.src_off;
		add_part(parts, max_parts, &n, &lit);
	}
	return n;
}

/*
 * tc_unescape_literal appends a literal part's text with its doubled
 * braces made single (out_len bytes in all).
 */
void
tc_unescape_literal(const char *tmpl, const TemplatePart *part,
					tc_append_fn append, void *append_arg)
{
	const char *p = tmpl + part->src_off;
	const char *end = p + part->src_len;
	const char *run = p;

	while (p < end)
	{
		if (*p == '{' || *p == '}')
		{
			/* keep the first brace of the pair, skip the second */
			append(append_arg, run, p + 1 - run);
			p += 2;
			run = p;
		}
		else
			p++;
	}
	if (end > run)
		append(append_arg, run, end - run);
}

/*
 * tc_render appends the rendered parts: literal text unescaped, each
 * variable's looked-up value, else its fallback.  It stops at the first
 * variable with neither and returns its index; it returns nparts when all
 * was rendered.
 */
size_t
tc_render(const char *tmpl, const TemplatePart *parts, size_t nparts,
		  tc_lookup_fn lookup, void *lookup_arg,
		  tc_append_fn append, void *append_arg)
{
	size_t		i;

	for (i = 0; i < nparts; i++)
	{
		const TemplatePart *part = &parts[i];
		const char *value;
		size_t		value_len = 0;

		if (!part->is_variable)
		{
			tc_unescape_literal(tmpl, part, append, append_arg);
			continue;
		}
		value = lookup(lookup_arg, part->name, &value_len);
		if (value == NULL && part->has_fallback)
		{
			value = tmpl + part->fallback_off;
			value_len = part->fallback_len;
		}
		if (value == NULL)
			return i;
		append(append_arg, value, value_len);
	}
	return nparts;
}
