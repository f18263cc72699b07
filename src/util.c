/*-------------------------------------------------------------------------
 *
 * util.c
 *	  Small SQL-callable helpers written in C: URL encoding of path
 *	  segments and query values (with libcurl's encoder, the same one the
 *	  worker uses).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <curl/curl.h>

#include "fmgr.h"
#include "utils/builtins.h"

#include "sam_ext.h"

PG_FUNCTION_INFO_V1(sam_url_encode);

/* sam._url_encode(text) returns text: RFC 3986 percent-encoding */
Datum
sam_url_encode(PG_FUNCTION_ARGS)
{
	text	   *in = PG_GETARG_TEXT_PP(0);
	char	   *escaped;
	text	   *result;

	escaped = curl_easy_escape(NULL, VARDATA_ANY(in), VARSIZE_ANY_EXHDR(in));
	if (escaped == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	result = cstring_to_text(escaped);
	curl_free(escaped);
	PG_RETURN_TEXT_P(result);
}
