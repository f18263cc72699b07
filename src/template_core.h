/*-------------------------------------------------------------------------
 *
 * template_core.h
 *	  The backend-independent core of the message template renderer:
 *	  parsing a template into literal and variable parts, and rendering
 *	  them with values a caller looks up.
 *
 *	  Plain C (no PostgreSQL headers, no allocation): src/template.c wraps
 *	  it as sam.render_template() / sam.template_variables(), and the
 *	  libFuzzer harness fuzz/fuzz_template.c calls it directly.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SAM_TEMPLATE_CORE_H
#define SAM_TEMPLATE_CORE_H

#include <stdbool.h>
#include <stddef.h>

/* longest variable name, in bytes */
#define TC_MAX_VARIABLE_NAME 63

typedef enum TemplateErrorKind
{
	TC_OK = 0,
	TC_UNMATCHED_CLOSE,			/* a lone "}" */
	TC_UNTERMINATED_VARIABLE,	/* "{" with no end */
	TC_BAD_VARIABLE_NAME,		/* "{" not followed by a valid name */
	TC_UNTERMINATED_FALLBACK	/* "{name|..." with no "}" (or a "{" in it) */
} TemplateErrorKind;

/* the first syntax error of a template */
typedef struct TemplateError
{
	TemplateErrorKind kind;
	size_t		offset;			/* byte offset of the offending "{" or "}" */
	char		name[TC_MAX_VARIABLE_NAME + 1]; /* TC_UNTERMINATED_FALLBACK */
} TemplateError;

/*
 * One part of a parsed template.  Both kinds cover the bytes [src_off,
 * src_off + src_len) of the template, and the parts of a template cover
 * it all, in order, without overlap.
 *
 * A literal part is raw template text in which every brace is doubled
 * ("{{" or "}}"); out_len is its length once those are made single.  A
 * variable part is the whole "{ name | fallback }"; its name is
 * lowercased, and its fallback (raw bytes, none when has_fallback is
 * false) is [fallback_off, fallback_off + fallback_len).
 */
typedef struct TemplatePart
{
	bool		is_variable;
	size_t		src_off;
	size_t		src_len;
	size_t		out_len;		/* literal: bytes once unescaped */
	char		name[TC_MAX_VARIABLE_NAME + 1];
	bool		has_fallback;
	size_t		fallback_off;
	size_t		fallback_len;
} TemplatePart;

/*
 * Looks up a variable's value: returns NULL when the variable is missing
 * or has no usable value (the fallback is used then), else the value and
 * its length in *len.
 */
typedef const char *(*tc_lookup_fn) (void *arg, const char *name, size_t *len);

/* Appends len bytes to the caller's output. */
typedef void (*tc_append_fn) (void *arg, const char *data, size_t len);

extern size_t tc_parse(const char *tmpl, size_t len, TemplatePart *parts,
					   size_t max_parts, TemplateError *err);
extern void tc_unescape_literal(const char *tmpl, const TemplatePart *part,
								tc_append_fn append, void *append_arg);
extern size_t tc_render(const char *tmpl, const TemplatePart *parts,
						size_t nparts, tc_lookup_fn lookup, void *lookup_arg,
						tc_append_fn append, void *append_arg);

#endif							/* SAM_TEMPLATE_CORE_H */
