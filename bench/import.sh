#!/usr/bin/env bash
#
# bench/import.sh [SIZE...]
#     add_prospects() of SIZE items at once into a campaign whose account
#     already has 100,000 prospects: 2% of the items are already prospects of
#     the account (duplicates), 1% are invalid (a provider id with a space),
#     the rest new, with a first name and a company the campaign's note uses.
#     Each call runs RUNS times in a transaction rolled back; the time is the
#     call's own (EXPLAIN ANALYZE), median.  Three times per size: with the
#     erasure and do-not-contact lists empty, with one do-not-contact entry
#     (each item is then looked up in both), and with DNC_ROWS entries (half
#     provider ids, half public identifiers; none matches an item).
#
#     SIZE         items per call (default: 1000 20000 100000; at most 100000)
#     RUNS=3       repetitions per size (median)
#     DNC_ROWS=10000  entries of the long do-not-contact list (0: that pass is skipped)
#     PG_PORT=21443
#
# bench/import.sh

set -euo pipefail
. "$(dirname "$0")/lib.sh"

sizes=${*:-"1000 20000 100000"}
runs=${RUNS:-3}
dnc_rows=${DNC_ROWS:-10000}
bench_cluster_start "${PG_PORT:-21443}" "autovacuum = off"

bench_machine
echo "inputs: sizes $sizes items a call; 2% duplicates, 1% invalid; 100,000 prospects already on the account; RUNS=$runs (median); rolled back each run"
echo

q <<-'SQL' >/dev/null
	SELECT sam.create_account('acct-import');
	SELECT sam.create_campaign('acct-import', 'Import', 'Hi {first_name|there}, about {company}');
	INSERT INTO sam.prospects (campaign_id, account_id, provider_id)
	SELECT 1, 'acct-import', 'EXIST' || i FROM generate_series(1, 100000) i;
	VACUUM ANALYZE sam.prospects;
SQL

# import N: median ms of add_prospects of N items, and the answer's counters of the last run
import() {
	local n=$1 i
	for i in $(seq "$runs"); do
		q <<-SQL | sed -n 's/.*Execution Time: \([0-9.]*\) ms.*/\1/p'
			BEGIN;
			EXPLAIN (ANALYZE, TIMING OFF, SUMMARY ON)
			SELECT sam.add_prospects(1, (SELECT jsonb_agg(CASE WHEN i % 50 = 0 THEN jsonb_build_object('provider_id', 'EXIST' || i)
			                                                  WHEN i % 97 = 0 THEN jsonb_build_object('provider_id', 'bad id')
			                                                  ELSE jsonb_build_object('provider_id', 'IMP' || i, 'first_name', 'F' || i,
			                                                                          'company', 'Co ' || (i % 100)) END)
			                               FROM generate_series(1, $n) i));
			ROLLBACK;
		SQL
	done | median
}

printf '%-8s %-22s %9s %10s %7s\n' items lists ms items/s load
for size in $sizes; do
	for lists in empty "one do-not-contact" "$dnc_rows do-not-contact"; do
		case "$lists" in
		empty)
			q -c "DELETE FROM sam.do_not_contact" >/dev/null ;;
		"one do-not-contact")
			q -c "SELECT sam.add_do_not_contact(company => 'Nobody Inc')" >/dev/null ;;
		"0 do-not-contact")
			continue ;;
		*)
			q -c "INSERT INTO sam.do_not_contact (identifier)
			      SELECT CASE WHEN i % 2 = 0 THEN 'ACoBLOCKED' || i ELSE 'blocked-' || i END
			        FROM generate_series(1, $dnc_rows) i" -c "ANALYZE sam.do_not_contact" >/dev/null ;;
		esac
		ms=$(import "$size")
		printf '%-8s %-22s %9.0f %10.0f %7s\n' "$size" "$lists" "$ms" \
			"$(echo "$size $ms" | awk '{ print ($2 > 0 ? $1 * 1000 / $2 : 0) }')" "$(bench_load)"
	done
done
