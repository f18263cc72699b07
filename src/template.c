/*-------------------------------------------------------------------------
 *
 * template.c
 *	  The message template renderer shared by connection notes and
 *	  follow-up messages: the SQL functions sam.render_template(),
 *	  sam._try_render() (the same, answering errors as data, for the jobs
 *	  that render a batch in one statement, from a jsonb object or from a
 *	  prospect's fields) and sam.template_variables().
 *
 *	  The parsing and rendering themselves are in template_core.c, plain C
 *	  that the fuzzing harness (fuzz/fuzz_template.c) runs without a
 *	  backend; this file turns its results into values and errors, and
 *	  looks variables up in a jsonb object.  See template_core.c for the
 *	  syntax.  Values are always inserted as plain text: nothing in a value
 *	  is ever interpreted.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "catalog/pg_type.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"

#include "sam_ext.h"
#include "template_core.h"

PG_FUNCTION_INFO_V1(sam_render_template);
PG_FUNCTION_INFO_V1(sam_template_variables);
PG_FUNCTION_INFO_V1(sam_try_render);
PG_FUNCTION_INFO_V1(sam_try_render_fields);

/*
 * The standard fields of a prospect, in the order sam._try_render's
 * six-argument form takes them after variables; sam._prospect_vars() puts
 * them over the custom variables the same way.
 */
static const char *const field_names[] = {"first_name", "last_name", "company", "title"};

#define NFIELDS lengthof(field_names)

/* the lookup argument of a render from a prospect's fields */
typedef struct FieldVars
{
	Jsonb	   *variables;		/* custom variables, or NULL */
	text	   *fields[NFIELDS];	/* the standard fields; NULL when SQL NULL */
} FieldVars;

/*
 * template_error_message is the message of a template syntax error, the
 * position counted in characters from 1.
 */
static char *
template_error_message(const char *tmpl, const TemplateError *err)
{
	int			pos = pg_mbstrlen_with_len(tmpl, err->offset) + 1;

	switch (err->kind)
	{
		case TC_UNMATCHED_CLOSE:
			return psprintf("invalid template: unmatched \"}\" at character %d", pos);
		case TC_UNTERMINATED_VARIABLE:
			return psprintf("invalid template: unterminated variable at character %d", pos);
		case TC_BAD_VARIABLE_NAME:
			return psprintf("invalid template: bad variable name at character %d", pos);
		case TC_UNTERMINATED_FALLBACK:
			return psprintf("invalid template: unterminated fallback of variable \"%s\" at character %d",
							err->name, pos);
		case TC_OK:
			break;
	}
	return NULL;
}

/* template_error_hint is the hint raised with a template syntax error, if any */
static const char *
template_error_hint(TemplateErrorKind kind)
{
	switch (kind)
	{
		case TC_UNMATCHED_CLOSE:
			return "Write \"}}\" for a literal brace.";
		case TC_UNTERMINATED_VARIABLE:
			return "Variables look like {first_name} or {first_name|there}; write \"{{\" for a literal brace.";
		case TC_BAD_VARIABLE_NAME:
			return "Variables look like {first_name} or {first_name|there}; names are letters, digits and underscores.";
		default:
			return NULL;
	}
}

/*
 * parse_template splits a template into its parts (*nparts of them).  On a
 * syntax error it raises an error naming the position of the first one,
 * or, when error is not NULL, sets *error to that message and returns NULL.
 */
static TemplatePart *
parse_template(const char *tmpl, int len, size_t *nparts, char **error)
{
	TemplateError err;
	TemplatePart *parts;
	size_t		n;

	n = tc_parse(tmpl, len, NULL, 0, &err);
	if (err.kind != TC_OK)
	{
		char	   *msg = template_error_message(tmpl, &err);
		const char *hint;

		if (error != NULL)
		{
			*error = msg;
			return NULL;
		}
		hint = template_error_hint(err.kind);
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg_internal("%s", msg),
				 hint ? errhint("%s", hint) : 0));
	}
	parts = MemoryContextAllocHuge(CurrentMemoryContext,
								   Max(n, 1) * sizeof(TemplatePart));
	*nparts = tc_parse(tmpl, len, parts, n, &err);
	Assert(*nparts == n && err.kind == TC_OK);
	return parts;
}

/*
 * lookup_value finds a variable's value in a jsonb object (the lookup
 * callback of tc_render), as text; NULL when it is missing, JSON null or
 * an empty string.
 */
static const char *
lookup_value(void *arg, const char *name, size_t *len)
{
	Jsonb	   *vars = arg;
	JsonbValue	v;
	JsonbValue *found;
	char	   *value;

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
			*len = found->val.string.len;
			return found->val.string.val;
		case jbvNumeric:
			value = DatumGetCString(DirectFunctionCall1(numeric_out,
														NumericGetDatum(found->val.numeric)));
			break;
		case jbvBool:
			value = found->val.boolean ? "true" : "false";
			break;
		default:
			return NULL;
	}
	*len = strlen(value);
	return value;
}

/*
 * lookup_field is the lookup callback of a render from a prospect's fields:
 * a standard field that is not NULL wins over a custom variable of the
 * same name (an empty one means no value, as in the jsonb form), as in
 * variables || jsonb_strip_nulls(jsonb_build_object(fields...)).
 */
static const char *
lookup_field(void *arg, const char *name, size_t *len)
{
	FieldVars  *fv = arg;
	int			i;

	for (i = 0; i < (int) NFIELDS; i++)
	{
		if (strcmp(name, field_names[i]) != 0)
			continue;
		if (fv->fields[i] == NULL)
			break;
		if (VARSIZE_ANY_EXHDR(fv->fields[i]) == 0)
			return NULL;
		*len = VARSIZE_ANY_EXHDR(fv->fields[i]);
		return VARDATA_ANY(fv->fields[i]);
	}
	return lookup_value(fv->variables, name, len);
}

/*
 * The longest rendered text (16 MB): far above any LinkedIn message or note, far
 * below what a template repeating a long value could otherwise build (a
 * million placeholders of a kilobyte each: a gigabyte of memory for one
 * call).
 */
#define RENDER_MAX_BYTES (16 * 1024 * 1024)

/* the append callback's state: the output, and whether it went past the limit */
typedef struct RenderOut
{
	StringInfo	buf;
	bool		overflow;
} RenderOut;

/*
 * append_output is the append callback of tc_render: into a StringInfo, up
 * to RENDER_MAX_BYTES; past them it appends nothing more and says so.
 */
static void
append_output(void *arg, const char *data, size_t len)
{
	RenderOut  *out = (RenderOut *) arg;

	if (out->overflow)
		return;
	if (len > RENDER_MAX_BYTES - (size_t) out->buf->len)
	{
		out->overflow = true;
		return;
	}
	appendBinaryStringInfo(out->buf, data, len);
}

/*
 * render renders a template with vars into *out.  A syntax error is raised,
 * or, when quiet, answered as its message, like a variable with no value
 * and no fallback (whose name is then in *missing) and a text longer than
 * RENDER_MAX_BYTES; NULL when it rendered.
 */
static char *
render_with(text *tmpl, const char *(*lookup) (void *, const char *, size_t *),
			void *lookup_arg, bool quiet, StringInfo out, char **missing)
{
	const char *src = VARDATA_ANY(tmpl);
	TemplatePart *parts;
	size_t		nparts;
	size_t		stopped;
	char	   *error = NULL;
	RenderOut	state;

	*missing = NULL;
	parts = parse_template(src, VARSIZE_ANY_EXHDR(tmpl), &nparts,
						   quiet ? &error : NULL);
	if (parts == NULL)
		return error;
	initStringInfo(out);
	state.buf = out;
	state.overflow = false;
	stopped = tc_render(src, parts, nparts, lookup, lookup_arg,
						append_output, &state);
	if (stopped < nparts)
	{
		*missing = pstrdup(parts[stopped].name);
		error = psprintf("template variable \"%s\" has no value and no fallback",
						 *missing);
	}
	else if (state.overflow)
	{
		if (!quiet)
			ereport(ERROR,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("invalid template: the rendered text would be longer than %d bytes",
							RENDER_MAX_BYTES)));
		error = psprintf("the rendered text would be longer than %d bytes", RENDER_MAX_BYTES);
	}
	pfree(parts);
	return error;
}

/* render renders a template with the variables of a jsonb object (see render_with) */
static char *
render(text *tmpl, Jsonb *vars, bool quiet, StringInfo out, char **missing)
{
	return render_with(tmpl, lookup_value, vars, quiet, out, missing);
}

/* try_render_result is sam._try_render's answer: {text, NULL} or {NULL, error} */
static Datum
try_render_result(StringInfo out, const char *error)
{
	Datum		elems[2];
	bool		nulls[2] = {false, false};
	int			dims[1] = {2};
	int			lbs[1] = {1};

	if (error == NULL)
	{
		elems[0] = PointerGetDatum(cstring_to_text_with_len(out->data, out->len));
		nulls[1] = true;
	}
	else
	{
		nulls[0] = true;
		elems[1] = PointerGetDatum(cstring_to_text(error));
	}
	return PointerGetDatum(construct_md_array(elems, nulls, 1, dims, lbs,
											  TEXTOID, -1, false, TYPALIGN_INT));
}

/*
 * sam.render_template(template text, vars jsonb) returns text: the template
 * with every variable replaced; a variable with no value and no fallback is
 * an error naming it.
 */
Datum
sam_render_template(PG_FUNCTION_ARGS)
{
	text	   *tmpl;
	Jsonb	   *vars = PG_ARGISNULL(1) ? NULL : PG_GETARG_JSONB_P(1);
	StringInfoData out;
	char	   *missing;
	char	   *error;

	/* not STRICT: a NULL template is a mistake to name, not a NULL to pass on */
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid template: must not be null")));
	if (vars != NULL && !JB_ROOT_IS_OBJECT(vars))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid vars: must be a JSON object"),
				 errhint("Pass the variables as {\"first_name\": \"Ada\", ...}.")));
	tmpl = PG_GETARG_TEXT_PP(0);
	error = render(tmpl, vars, false, &out, &missing);
	if (error != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg_internal("%s", error),
				 errhint("Give the prospect a value for \"%s\", or write {%s|fallback} in the template.",
						 missing, missing)));
	PG_RETURN_TEXT_P(cstring_to_text_with_len(out.data, out.len));
}

/*
 * sam._try_render(template text, vars jsonb) returns text[]: {text, NULL}
 * when the template renders, {NULL, error message} when it does not.  The
 * queueing jobs render a whole batch in one statement with it, where an
 * error raised for one prospect would need a subtransaction per prospect.
 */
Datum
sam_try_render(PG_FUNCTION_ARGS)
{
	Jsonb	   *vars = PG_ARGISNULL(1) ? NULL : PG_GETARG_JSONB_P(1);
	StringInfoData out;
	char	   *missing;
	char	   *error;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	error = render(PG_GETARG_TEXT_PP(0), vars, true, &out, &missing);
	PG_RETURN_DATUM(try_render_result(&out, error));
}

/*
 * sam._try_render(template text, variables jsonb, first_name text,
 * last_name text, company text, title text) returns text[]: the same as
 * sam._try_render(template, sam._prospect_vars(p)) for a prospect p, with
 * the fields looked up where they are instead of built into a jsonb object
 * per prospect (which cost the queueing jobs 2 to 5 us per prospect).
 */
Datum
sam_try_render_fields(PG_FUNCTION_ARGS)
{
	FieldVars	fv;
	StringInfoData out;
	char	   *missing;
	char	   *error;
	int			i;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	fv.variables = PG_ARGISNULL(1) ? NULL : PG_GETARG_JSONB_P(1);
	for (i = 0; i < (int) NFIELDS; i++)
		fv.fields[i] = PG_ARGISNULL(i + 2) ? NULL : PG_GETARG_TEXT_PP(i + 2);
	error = render_with(PG_GETARG_TEXT_PP(0), lookup_field, &fv, true, &out, &missing);
	PG_RETURN_DATUM(try_render_result(&out, error));
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
	const char *src = VARDATA_ANY(tmpl);
	TemplatePart *parts;
	size_t		nparts;
	StringInfoData out;
	int64		static_len = 0;
	bool		first = true;

	parts = parse_template(src, VARSIZE_ANY_EXHDR(tmpl), &nparts, NULL);
	initStringInfo(&out);
	appendStringInfoString(&out, "{\"variables\": [");
	for (size_t i = 0; i < nparts; i++)
	{
		TemplatePart *part = &parts[i];

		if (!part->is_variable)
		{
			/* each doubled brace is one character less once unescaped */
			static_len += pg_mbstrlen_with_len(src + part->src_off, part->src_len) -
				(int64) (part->src_len - part->out_len);
			continue;
		}
		if (!first)
			appendStringInfoString(&out, ", ");
		first = false;
		appendStringInfoString(&out, "{\"name\": ");
		escape_json(&out, part->name);
		appendStringInfoString(&out, ", \"fallback\": ");
		if (part->has_fallback)
			escape_json(&out, pnstrdup(src + part->fallback_off, part->fallback_len));
		else
			appendStringInfoString(&out, "null");
		appendStringInfoChar(&out, '}');
	}
	appendStringInfo(&out, "], \"static_length\": " INT64_FORMAT "}", static_len);
	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(out.data)));
}
