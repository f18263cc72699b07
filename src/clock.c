/*-------------------------------------------------------------------------
 *
 * clock.c
 *	  sam.now(), the engine's clock: the transaction's start time plus the
 *	  offset kept in sam.clock, or the instant sam.clock is frozen at.
 *
 * Everything in the engine reads time through sam.now(), so it is called
 * several times per webhook, per claimed call and per queued message, and
 * once per row by the column defaults.  Written in SQL it was planned again
 * in every transaction at every call site (PostgreSQL 15 keeps no plan of
 * an SQL function across queries) and run through the executor per call:
 * a fifth of the ingest's CPU.  Here it reads the one row of sam.clock
 * directly, with the caller's snapshot and privileges, as the SQL body
 * did.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "catalog/pg_type.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "sam_ext.h"

PG_FUNCTION_INFO_V1(sam_now);

/*
 * clock_attnum finds a column of sam.clock by name, so that the function
 * does not depend on the columns' order.
 */
static AttrNumber
clock_attnum(TupleDesc desc, const char *name, Oid type)
{
	int			i;

	for (i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (!att->attisdropped && att->atttypid == type &&
			strcmp(NameStr(att->attname), name) == 0)
			return att->attnum;
	}
	ereport(ERROR,
			(errcode(ERRCODE_UNDEFINED_COLUMN),
			 errmsg("column \"%s\" of relation \"sam.clock\" does not exist", name),
			 errhint("Reinstall the extension sam_ext.")));
	return InvalidAttrNumber;	/* not reached */
}

/*
 * sam.now() returns timestamptz: coalesce(frozen_at, now() + offset_by)
 * of sam.clock's row, or NULL when the table is empty (as the SQL body
 * answered).  The caller needs SELECT on sam.clock.
 */
Datum
sam_now(PG_FUNCTION_ARGS)
{
	Oid			nsp = get_namespace_oid("sam", false);
	Oid			relid = get_relname_relid("clock", nsp);
	AclResult	aclresult;
	Relation	rel;
	SysScanDesc scan;
	HeapTuple	tup;
	TupleDesc	desc;
	Datum		offset_by;
	Datum		frozen_at;
	bool		offset_null;
	bool		frozen_null;
	Datum		result = (Datum) 0;
	bool		found = false;

	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation \"sam.clock\" does not exist"),
				 errhint("Reinstall the extension sam_ext.")));
	aclresult = pg_class_aclcheck(relid, GetUserId(), ACL_SELECT);
	if (aclresult != ACLCHECK_OK)
		aclcheck_error(aclresult, OBJECT_TABLE, "clock");

	rel = table_open(relid, AccessShareLock);
	desc = RelationGetDescr(rel);
	scan = systable_beginscan(rel, InvalidOid, false,
							  ActiveSnapshotSet() ? GetActiveSnapshot() : GetTransactionSnapshot(),
							  0, NULL);
	tup = systable_getnext(scan);
	if (HeapTupleIsValid(tup))
	{
		frozen_at = heap_getattr(tup, clock_attnum(desc, "frozen_at", TIMESTAMPTZOID),
								 desc, &frozen_null);
		offset_by = heap_getattr(tup, clock_attnum(desc, "offset_by", INTERVALOID),
								 desc, &offset_null);
		if (!frozen_null)
		{
			result = frozen_at;
			found = true;
		}
		else if (!offset_null)
		{
			result = DirectFunctionCall2(timestamptz_pl_interval,
										 TimestampTzGetDatum(GetCurrentTransactionStartTimestamp()),
										 offset_by);
			found = true;
		}
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);

	if (!found)
		PG_RETURN_NULL();
	PG_RETURN_DATUM(result);
}
