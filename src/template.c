/*-------------------------------------------------------------------------
 *
 * template.c
 *	  The message template renderer shared by connection notes and
 *	  follow-up messages.
 *
 *	  Syntax: {name} is replaced by the variable's value, {name|fallback}
 *	  uses the fallback when the value is missing or empty, {{ and }} are
 *	  literal braces.  Names are letters, digits and underscores, not
 *	  starting with a digit, compared case-insensitively.  Values are always
 *	  inserted as plain text: nothing in a value is ever interpreted.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "nodes/pg_list.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"

#include "sam_ext.h"

#define SAM_MAX_VARIABLE_NAME 63

PG_FUNCTION_INFO_V1(sam_render_template);
PG_FUNCTION_INFO_V1(sam_template_variables);

/* one parsed piece of a template */
typedef struct TemplatePart
{
	bool		is_variable;
	char	   *text;			/* literal text, or the variable's name */
	char	   *fallback;		/* NULL when there is none */
} TemplatePart;

/*
 * parse_template splits a template into literal and variable parts, or
 * raises an error naming the position of the first syntax error.
 */
static List *
parse_template(const char *tmpl, int len)
{
	List	   *parts = NIL;
	StringInfoData lit;
	int			i = 0;

	initStringInfo(&lit);
	while (i < len)
	{
		char		c = tmpl[i];

		if (c == '{' && i + 1 < len && tmpl[i + 1] == '{')
		{
			appendStringInfoChar(&lit, '{');
			i += 2;
		}
		else if (c == '}' && i + 1 < len && tmpl[i + 1] == '}')
		{
			appendStringInfoChar(&lit, '}');
			i += 2;
		}
		else if (c == '}')
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid template: unmatched \"}\" at character %d",
							pg_mbstrlen_with_len(tmpl, i) + 1),
					 errhint("Write \"}}\" for a literal brace.")));
		else if (c == '{')
		{
			int			start = i;
			int			j = i + 1;
			int			name_start,
						name_end;
			TemplatePart *part;

			while (j < len && tmpl[j] == ' ')
				j++;
			name_start = j;
			while (j < len && (isalnum((unsigned char) tmpl[j]) || tmpl[j] == '_'))
				j++;
			name_end = j;
			while (j < len && tmpl[j] == ' ')
				j++;
			if (name_end == name_start || isdigit((unsigned char) tmpl[name_start]) ||
				name_end - name_start > SAM_MAX_VARIABLE_NAME ||
				j >= len || (tmpl[j] != '}' && tmpl[j] != '|'))
			{
				if (j >= len)
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							 errmsg("invalid template: unterminated variable at character %d",
									pg_mbstrlen_with_len(tmpl, start) + 1),
							 errhint("Variables look like {first_name} or {first_name|there}; write \"{{\" for a literal brace.")));
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("invalid template: bad variable name at character %d",
								pg_mbstrlen_with_len(tmpl, start) + 1),
						 errhint("Variables look like {first_name} or {first_name|there}; names are letters, digits and underscores.")));
			}

			if (lit.len > 0)
			{
				part = palloc0(sizeof(TemplatePart));
				part->text = pstrdup(lit.data);
				parts = lappend(parts, part);
				resetStringInfo(&lit);
			}
			part = palloc0(sizeof(TemplatePart));
			part->is_variable = true;
			part->text = pnstrdup(tmpl + name_start, name_end - name_start);
			for (char *ch = part->text; *ch; ch++)
				*ch = pg_ascii_tolower((unsigned char) *ch);
			if (tmpl[j] == '|')
			{
				int			fb_start = j + 1;

				j = fb_start;
				while (j < len && tmpl[j] != '}' && tmpl[j] != '{')
					j++;
				if (j >= len || tmpl[j] == '{')
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							 errmsg("invalid template: unterminated fallback of variable \"%s\" at character %d",
									part->text, pg_mbstrlen_with_len(tmpl, start) + 1)));
				part->fallback = pnstrdup(tmpl + fb_start, j - fb_start);
			}
			parts = lappend(parts, part);
			i = j + 1;
		}
		else
		{
			appendStringInfoChar(&lit, c);
			i++;
		}
	}
	if (lit.len > 0)
	{
		TemplatePart *part = palloc0(sizeof(TemplatePart));

		part->text = pstrdup(lit.data);
		parts = lappend(parts, part);
	}
	return parts;
}

/*
 * lookup_value finds a variable's value in a jsonb object, as text; NULL when
 * it is missing, JSON null or an empty string.
 */
static char *
lookup_value(Jsonb *vars, const char *name)
{
	JsonbValue	v;
	JsonbValue *found;

	if (vars == NULL || !JB_ROOT_IS_OBJECT(vars))
		return NULL;
	found = getKeyJsonValueFromContainer(&vars->root, name, strlen(name), &v);
	if (found == NULL)
		return NULL;
	switch (found->type)
	{
		case jbvString:
			if (found->val.string.len == 0)
				return NULL;
			return pnstrdup(found->val.string.val, found->val.string.len);
		case jbvNumeric:
			return DatumGetCString(DirectFunctionCall1(numeric_out,
													   NumericGetDatum(found->val.numeric)));
		case jbvBool:
			return pstrdup(found->val.boolean ? "true" : "false");
		default:
			return NULL;
	}
}

/*
 * sam.render_template(template text, vars jsonb) returns text: the template
 * with every variable replaced; a variable with no value and no fallback is
 * an error naming it.
 */
Datum
sam_render_template(PG_FUNCTION_ARGS)
{
	text	   *tmpl = PG_GETARG_TEXT_PP(0);
	Jsonb	   *vars = PG_ARGISNULL(1) ? NULL : PG_GETARG_JSONB_P(1);
	List	   *parts;
	ListCell   *lc;
	StringInfoData out;

	parts = parse_template(VARDATA_ANY(tmpl), VARSIZE_ANY_EXHDR(tmpl));
	initStringInfo(&out);
	foreach(lc, parts)
	{
		TemplatePart *part = lfirst(lc);
		char	   *value;

		if (!part->is_variable)
		{
			appendStringInfoString(&out, part->text);
			continue;
		}
		value = lookup_value(vars, part->text);
		if (value == NULL)
			value = part->fallback;
		if (value == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("template variable \"%s\" has no value and no fallback",
							part->text),
					 errhint("Give the prospect a value for \"%s\", or write {%s|fallback} in the template.",
							 part->text, part->text)));
		appendStringInfoString(&out, value);
	}
	PG_RETURN_TEXT_P(cstring_to_text_with_len(out.data, out.len));
}

/*
 * sam.template_variables(template text) returns jsonb: the template's
 * variables (name and fallback, in order) and the length in characters of
 * its literal text; raises the syntax error if the template is invalid.
 */
Datum
sam_template_variables(PG_FUNCTION_ARGS)
{
	text	   *tmpl = PG_GETARG_TEXT_PP(0);
	List	   *parts;
	ListCell   *lc;
	StringInfoData out;
	int			static_len = 0;
	bool		first = true;

	parts = parse_template(VARDATA_ANY(tmpl), VARSIZE_ANY_EXHDR(tmpl));
	initStringInfo(&out);
	appendStringInfoString(&out, "{\"variables\": [");
	foreach(lc, parts)
	{
		TemplatePart *part = lfirst(lc);

		if (!part->is_variable)
		{
			static_len += pg_mbstrlen(part->text);
			continue;
		}
		if (!first)
			appendStringInfoString(&out, ", ");
		first = false;
		appendStringInfoString(&out, "{\"name\": ");
		escape_json(&out, part->text);
		appendStringInfoString(&out, ", \"fallback\": ");
		if (part->fallback)
			escape_json(&out, part->fallback);
		else
			appendStringInfoString(&out, "null");
		appendStringInfoChar(&out, '}');
	}
	appendStringInfo(&out, "], \"static_length\": %d}", static_len);
	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(out.data)));
}
