#!/usr/bin/env bash
#
# bench/due_work.sh [SIZE...]
#     Due-work scaling of the two queueing jobs: for each table size, a
#     throw-away data set where 1% of the prospects are due for a follow-up
#     (connected, follow_up_due_at passed) and 1% are pending invitations of
#     running campaigns; the other 98% are not due (invited and waiting,
#     connected with a later step, completed).  Accounts are as many as the
#     caps need to let every due prospect go in one run (a campaign each).
#
#       process_pending_prospects()   renders each pending prospect's note and
#                                     queues its invitation (sam.outbox)
#       process_follow_ups()          renders the next step of each due prospect
#                                     and queues the message; at most 10,000
#                                     prospects per run (the job's own LIMIT)
#
#     Each job's queueing is run RUNS times inside a transaction that is rolled
#     back (the same due set every time); the time is the function's own, from
#     EXPLAIN ANALYZE.  process_follow_ups() hands its work to the worker and
#     waits for Unipile's answers: what is timed here is the job's queueing
#     body, sam._job_process_follow_ups_start(), which the worker runs (the
#     HTTP part is bench/delivery.sh's).  The plans of the queries that find
#     the due prospects are printed for each size: they must not grow with it.
#
#     SIZE         prospects (default: 10000 100000 1000000; 10000000 works,
#                  needs about 10 GB of disk and a long setup)
#     RUNS=5       repetitions of each job per size (median)
#     PG_PORT=21441
#     PLANS=0      do not print the plans
#     PGSS=1       prints the statements that took the most time in each job
#     BACKLOG=0    do not measure the pending job with a backlog: last for each
#                  size, the invited prospects (48%) are made pending, so that
#                  each campaign has ~50 times more pending prospects than its
#                  daily cap lets go; the due count (what the caps let go) is
#                  the same, and so must the time be
#     CEILING=0    do not measure the count behind the ceiling of invitations
#                  waiting for an answer (accounts.max_pending_invitations): the
#                  data set's accounts have none (their 4,800 waiting at 1M are
#                  past any), so the line "ceiling count" times that count for
#                  every account at the default ceiling, 500, on its own (its
#                  "due" column is the number of accounts)
#     FLOOR=0      do not measure the floor: the same number of outbox rows as
#                  the follow-ups queue, written by one INSERT ... SELECT of
#                  ready-made rows, into sam.outbox, into a copy of it without
#                  the foreign key, and into a plain table of the same columns
#                  with no index, constraint or default (what writing the rows
#                  costs, whatever the job around it does)
#
# bench/due_work.sh

set -euo pipefail
. "$(dirname "$0")/lib.sh"

sizes=${*:-"10000 100000 1000000"}
runs=${RUNS:-5}
bench_cluster_start "${PG_PORT:-21441}" "max_locks_per_transaction = 1024" "autovacuum = off"

bench_machine
echo "inputs: sizes $sizes prospects; 1% due for a follow-up, 1% pending invitations; RUNS=$runs (median); rolled back each run"
echo

# setup SIZE: the data set (prospects in campaign order, 100 due of each kind per account)
setup() {
	local size=$1 due accounts
	due=$((size / 100))
	accounts=$(((due + 99) / 100))
	q -c "TRUNCATE sam.outbox, sam.prospects, sam.campaigns, sam.accounts RESTART IDENTITY CASCADE" >/dev/null
	q <<-SQL >/dev/null
		SET synchronous_commit = off;
		-- no ceiling of invitations waiting for an answer: 48% of each account's prospects are
		-- invited and waiting (4,800 at 1,000,000), past any ceiling (at most 3,000), and nothing
		-- would be queued; what the ceiling's count costs is the "ceiling count" line
		INSERT INTO sam.accounts (account_id, working_days, work_start, work_end, daily_invite_cap, weekly_invite_cap,
		                          daily_message_cap, spacing_min, spacing_max, max_pending_invitations)
		SELECT 'acct' || a, '{1,2,3,4,5,6,7}', '00:00', '00:00', 100, 200, 150, '0', '0', NULL
		  FROM generate_series(1, $accounts) a;
		INSERT INTO sam.campaigns (account_id, name, status, connection_note, follow_ups)
		SELECT 'acct' || a, 'c' || a, 'running', 'Hi {first_name|there}, I enjoyed your post about {topic}.',
		       '[{"delay": "24 hours", "template": "Thanks for connecting, {first_name|there}! How is {company}?"},
		         {"delay": "5 days", "template": "{first_name|Hello}, a short follow-up about {topic}."}]'
		  FROM generate_series(1, $accounts) a;
		-- prospect i belongs to campaign (i % accounts) + 1; the first 2% of each campaign are due
		INSERT INTO sam.prospects (campaign_id, account_id, provider_id, first_name, last_name, company, variables,
		                           status, follow_up_due_at, follow_up_sequence_index, invited_at, connected_at)
		SELECT c, 'acct' || c, 'ACoP' || i, 'First' || i, 'Last' || i, 'Company ' || (i % 977),
		       jsonb_build_object('topic', 'topic ' || (i % 31)),
		       CASE WHEN k < 0.01 THEN 'connected' WHEN k < 0.02 THEN 'pending'
		            WHEN k < 0.50 THEN 'connection_request_sent' WHEN k < 0.75 THEN 'connected' ELSE 'completed' END,
		       CASE WHEN k < 0.01 THEN now() - interval '1 hour' WHEN k < 0.02 THEN NULL
		            WHEN k < 0.75 THEN now() + (1 + (i % 29)) * interval '1 day' END,
		       CASE WHEN k >= 0.50 AND k < 0.75 THEN 1 ELSE 0 END,
		       CASE WHEN k >= 0.02 OR k < 0.01 THEN now() - interval '5 days' END,
		       CASE WHEN k < 0.01 OR (k >= 0.50 AND k < 0.75) THEN now() - interval '2 days' END
		  FROM (SELECT i, (i % $accounts) + 1 AS c, ((i / $accounts) % 100) / 100.0 AS k
		          FROM generate_series(0, $size - 1) i) s;
		VACUUM ANALYZE sam.accounts;
		VACUUM ANALYZE sam.campaigns;
		VACUUM ANALYZE sam.prospects;
		VACUUM ANALYZE sam.outbox;
	SQL
	echo "$due $accounts"
}

# time_job SQL: runs SQL RUNS times, each in a transaction rolled back; prints
# the median milliseconds and the answer's counters of the last run
time_job() {
	local sql=$1 i
	for i in $(seq "$runs"); do
		q <<-SQL | sed -n 's/.*Execution Time: \([0-9.]*\) ms.*/\1/p'
			BEGIN;
			INSERT INTO sam.job_runs (job) VALUES ('bench') RETURNING id \gset
			EXPLAIN (ANALYZE, TIMING OFF, SUMMARY ON) $sql;
			ROLLBACK;
		SQL
		q -c "VACUUM sam.outbox, sam.prospects, sam.accounts, sam.job_runs" >/dev/null
	done | median
}

# the floor's tables: sam.outbox without its foreign key, and the bare columns
q <<-SQL >/dev/null
	CREATE TABLE public.floor_nofk (LIKE sam.outbox INCLUDING ALL);
	CREATE TABLE public.floor_plain (account_id text, campaign_id bigint, prospect_id bigint, kind text,
	                                 idempotency_key text, request jsonb, not_before timestamptz,
	                                 job_run_id bigint, context jsonb, created_at timestamptz, updated_at timestamptz);
SQL

# floor TABLE N ACCOUNTS: median ms of inserting N follow-up-like rows of the benchmark's
# ACCOUNTS accounts into TABLE, rolled back
floor() {
	local table=$1 n=$2 accounts=$3 i
	for i in $(seq "$runs"); do
		q <<-SQL | sed -n 's/.*Execution Time: \([0-9.]*\) ms.*/\1/p'
			BEGIN;
			EXPLAIN (ANALYZE, TIMING OFF, SUMMARY ON)
			INSERT INTO $table (account_id, campaign_id, prospect_id, kind, idempotency_key, request, not_before,
			                    job_run_id, context, created_at, updated_at)
			SELECT 'acct' || (i % $accounts + 1), i % $accounts + 1, i, 'start_chat', 'message:' || i || ':1',
			       jsonb_build_object('method', 'POST', 'path', '/api/v1/chats',
			           'form', jsonb_build_array(jsonb_build_array('account_id', 'acct' || (i % $accounts + 1)),
			                                     jsonb_build_array('attendees_ids', 'ACoP' || i),
			                                     jsonb_build_array('text', 'Thanks for connecting, First' || i || '! How is Company 1?'))),
			       now() + i * interval '1 second', 1,
			       jsonb_build_object('step', 1, 'text', 'Thanks for connecting, First' || i || '! How is Company 1?',
			                          'chat_id', NULL),
			       now(), now()
			  FROM generate_series(1, $n) i;
			ROLLBACK;
		SQL
		q -c "VACUUM $table" >/dev/null
	done | median
}

printf '%-10s %-9s %-27s %8s %10s %12s %6s\n' size due job ms due/s queued load
for size in $sizes; do
	t0=$(date +%s)
	read -r due accounts <<<"$(setup "$size")"
	echo "setup of $size prospects ($accounts accounts): $(($(date +%s) - t0)) s; table $(q -c "SELECT pg_size_pretty(pg_total_relation_size('sam.prospects'))")" >&2
	for job in pending follow_ups; do
		if [ "$job" = pending ]; then
			sql="SELECT sam._job_process_pending_prospects()"
			count="SELECT sam._job_process_pending_prospects()->>'queued'"
		else
			sql="SELECT sam._job_process_follow_ups_start(:id)"
			count="SELECT sam._job_process_follow_ups_start(:id)->>'queued'"
		fi
		[ -z "${PGSS:-}" ] || q -c "SELECT pg_stat_statements_reset()" >/dev/null
		ms=$(time_job "$sql")
		bench_top_statements 8 | sed 's/^/    /' >&2
		queued=$(q <<-SQL | tail -1
			BEGIN;
			INSERT INTO sam.job_runs (job) VALUES ('bench') RETURNING id \gset
			$count;
			ROLLBACK;
		SQL
		)
		printf '%-10s %-9s %-27s %8.0f %10.0f %12s %6s\n' "$size" "$due" "$job" "$ms" \
			"$(echo "$queued $ms" | awk '{ print ($2 > 0 ? $1 * 1000 / $2 : 0) }')" "$queued" "$(bench_load)"
	done
	if [ "${CEILING:-1}" != 0 ]; then
		# what the pending job adds per run for accounts at the default ceiling (500): the count
		# of each account's invitations waiting, which stops at 500 (all accounts here have more)
		ms=$(time_job "SELECT sum(sam._pending_invitations(a.account_id, 500)) FROM sam.accounts a")
		printf '%-10s %-9s %-27s %8.0f %10s %12s %6s\n' "$size" "$accounts" "ceiling count (500), each" "$ms" \
			- - "$(bench_load)"
	fi
	if [ "${FLOOR:-1}" != 0 ]; then
		for table in sam.outbox public.floor_nofk public.floor_plain; do
			ms=$(floor "$table" "$due" "$accounts")
			printf '%-10s %-9s %-27s %8.0f %10.0f %12s %6s\n' "$size" "$due" "floor: $table" "$ms" \
				"$(echo "$due $ms" | awk '{ print ($2 > 0 ? $1 * 1000 / $2 : 0) }')" "$due" "$(bench_load)"
		done
	fi
	if [ "${PLANS:-1}" != 0 ]; then
		echo "  plans at $size prospects (the queries that find due work):"
		# the same statements as sam._job_process_follow_ups_start, the pending job's list of
		# campaigns, and sam._queue_invites (OFFSET 0 included: keep them in step).  The last
		# one is planned with a history in the outbox (a done invitation for each invited
		# prospect, at most 100,000, analyzed, rolled back): with an empty outbox any index of
		# it costs the same to the planner, and the plan would show an arbitrary one.
		q <<-SQL | sed -e '/^BEGIN$/d' -e '/^ROLLBACK$/d' -e '/^ANALYZE$/d' -e '/^INSERT /d' -e 's/^/    /'
			EXPLAIN (COSTS OFF) WITH acc AS MATERIALIZED (
			    SELECT a.account_id,
			           sam._in_working_hours(a, sam.now())
			           AND a.daily_message_cap > sam._actions_since(a.account_id, '{start_chat,send_message}',
			                                                        sam._local_day_start(a, sam.now())) AS sending
			      FROM sam.accounts a WHERE a.status = 'active')
			SELECT pr.id, pr.follow_up_due_at
			  FROM sam.prospects pr
			  JOIN sam.campaigns c ON c.id = pr.campaign_id AND c.status = 'running'
			  JOIN acc ON acc.account_id = pr.account_id
			 WHERE pr.follow_up_due_at <= sam.now() AND pr.status IN ('connection_request_sent', 'connected')
			   AND (acc.sending OR pr.status = 'connection_request_sent'
			        OR pr.follow_up_sequence_index >= jsonb_array_length(c.follow_ups))
			 ORDER BY pr.follow_up_due_at, pr.id LIMIT 10000 FOR UPDATE OF pr SKIP LOCKED;
			EXPLAIN (COSTS OFF) SELECT DISTINCT x.id FROM sam.campaigns x
			 WHERE x.status = 'running'
			   AND EXISTS (SELECT 1 FROM sam.prospects p WHERE p.campaign_id = x.id AND p.status = 'pending');
			BEGIN;
			INSERT INTO sam.outbox (account_id, campaign_id, prospect_id, kind, idempotency_key, request, state, finished_at)
			SELECT p.account_id, p.campaign_id, p.id, 'invite', 'invite:' || p.id, '{}', 'done', now()
			  FROM sam.prospects p WHERE p.status = 'connection_request_sent' LIMIT 100000;
			ANALYZE sam.outbox;
			EXPLAIN (COSTS OFF) SELECT * FROM sam.prospects x
			 WHERE x.campaign_id = 1 AND x.status = 'pending'
			   AND NOT EXISTS (SELECT 1 FROM sam.outbox o WHERE o.account_id = x.account_id
			                     AND o.idempotency_key IN ('invite:' || x.id, 'resolve:' || x.id)
			                     AND o.state IN ('queued', 'in_flight', 'failed', 'done')
			                     AND (o.kind = 'invite' OR x.provider_id IS NULL)
			                   OFFSET 0)
			 ORDER BY x.id LIMIT 100 FOR UPDATE SKIP LOCKED;
			ROLLBACK;
		SQL
	fi
	if [ "${BACKLOG:-1}" != 0 ]; then
		# the invited prospects (48%) become pending: each campaign then has ~50 times more
		# pending prospects than its cap lets go today; the run still queues the same ones
		q -c "UPDATE sam.prospects SET status = 'pending', follow_up_due_at = NULL, invited_at = NULL
		       WHERE status = 'connection_request_sent'" -c "VACUUM ANALYZE sam.prospects" >/dev/null
		backlog=$(q -c "SELECT count(*) FROM sam.prospects WHERE status = 'pending'")
		ms=$(time_job "SELECT sam._job_process_pending_prospects()")
		queued=$(q <<-SQL | tail -1
			BEGIN;
			SELECT sam._job_process_pending_prospects()->>'queued';
			ROLLBACK;
		SQL
		)
		printf '%-10s %-9s %-27s %8.0f %10.0f %12s %6s\n' "$size" "$due" "pending, $backlog waiting" "$ms" \
			"$(echo "$queued $ms" | awk '{ print ($2 > 0 ? $1 * 1000 / $2 : 0) }')" "$queued" "$(bench_load)"
	fi
done
