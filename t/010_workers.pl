# Several worker processes (sam.workers = 2) against the mock Unipile server:
# both claim and call (outbox.claimed_by names which), every invitation
# reaches the mock exactly once, a worker that is terminated and restarted
# alone reconciles only the calls it left in flight while the other's
# calls finish untouched, the jobs that wait for their calls still run
# (in worker 0), a result that meets a lock is recorded again in a new
# transaction, and sam.doctor() and sam.workers() report both.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use SamTest;
use Test::More;

my $mock = start_mock();
my $node = new_sam_node('workers', $mock, conf => qq{
sam.workers = 2
sam.max_concurrency = 4
sam.batch_size = 4
});

poll_until_ok($node,
	"SELECT count(*) = 2 AND bool_and(ready) AND count(DISTINCT pid) = 2 FROM sam.workers()",
	'sam.workers() lists two workers, each ready');
is($node->safe_psql('postgres',
	"SELECT string_agg(application_name, ',' ORDER BY application_name) FROM pg_stat_activity WHERE backend_type = 'sam_ext worker'"),
	'sam_ext worker,sam_ext worker 1', 'both show in pg_stat_activity, by number');
is($node->safe_psql('postgres',
	"SELECT sam.worker_pid() = pid FROM sam.workers() WHERE worker = 0"), 't',
	'sam.worker_pid() is worker 0');
like($node->safe_psql('postgres', "SELECT detail FROM sam.doctor() WHERE \"check\" = 'worker running' AND ok"),
	qr/^pids \d+, \d+$/, 'sam.doctor() names both workers');
is($node->safe_psql('postgres',
	"SELECT string_agg(metric || '=' || value, ',' ORDER BY metric) FROM sam.metrics WHERE metric LIKE 'sam_workers%'"),
	'sam_workers_configured=2,sam_workers_ready=2', 'sam.metrics counts them');

sub make_account
{
	my ($id) = @_;
	$node->safe_psql('postgres',
		"SELECT sam.create_account('$id', working_days => '{1,2,3,4,5,6,7}', work_start => '00:00', "
		  . "work_end => '00:00', spacing_min => '0', spacing_max => '0', daily_invite_cap => 100, weekly_invite_cap => 200)");
}

# a campaign of n prospects ACo<tag>1..n; returns its id
sub make_campaign
{
	my ($account, $tag, $n) = @_;
	my $cid = $node->safe_psql('postgres', "SELECT sam.create_campaign('$account', 'c-$account')->>'campaign_id'");
	$node->safe_psql('postgres',
		"SELECT sam.add_prospects($cid, '[" . join(',', map { qq({"provider_id": "ACo$tag$_"}) } 1 .. $n) . "]')");
	return $cid;
}

# provider id => number of invitations the mock accepted (2xx), for one account
sub accepted_invites
{
	my ($account) = @_;
	my %by;
	for my $e (@{ mock_log($mock) })
	{
		next unless $e->{method} eq 'POST' && $e->{path} eq '/api/v1/users/invite'
		  && ($e->{account_id} // '') eq $account && $e->{status} >= 200 && $e->{status} < 300;
		$by{ $e->{body}{provider_id} }++;
	}
	return \%by;
}

# ---- both workers deliver, nothing twice -----------------------------------------------
make_account('acc-many');
my $cid = make_campaign('acc-many', 'MANY', 100);
$node->safe_psql('postgres', "SELECT sam.start_campaign($cid)");
poll_until_ok($node,
	"SELECT count(*) = 100 FROM sam.prospects WHERE campaign_id = $cid AND status = 'connection_request_sent'",
	'100 invitations sent');
my $by = accepted_invites('acc-many');
is(scalar(keys %$by), 100, 'the mock accepted an invitation for each of the 100');
is(join(',', grep { $by->{$_} != 1 } sort keys %$by), '', 'and none twice');
is($node->safe_psql('postgres',
	"SELECT string_agg(DISTINCT claimed_by::text, ',') FROM sam.outbox WHERE account_id = 'acc-many'"),
	'0,1', 'both workers made some of the calls');

# ---- worker 1 stops with calls in flight: only its calls are reconciled ----------------
make_account('acc-stop');
$cid = make_campaign('acc-stop', 'STOP', 8);
mock_call($mock, 'POST', '/_mock/faults',
	{ method => 'POST', path_prefix => '/api/v1/users/invite', count => -1, delay_ms => 5000 });
$node->safe_psql('postgres', "SELECT sam.start_campaign($cid)");
poll_until_ok($node,
	"SELECT count(*) FILTER (WHERE claimed_by = 0) = 4 AND count(*) FILTER (WHERE claimed_by = 1) = 4"
	  . " FROM sam.outbox WHERE account_id = 'acc-stop' AND state = 'in_flight'",
	'each worker has four calls in flight');
my $pid1 = $node->safe_psql('postgres', 'SELECT pid FROM sam.workers() WHERE worker = 1');
my $pid0 = $node->safe_psql('postgres', 'SELECT pid FROM sam.workers() WHERE worker = 0');
$node->safe_psql('postgres', "SELECT pg_terminate_backend($pid1)");
poll_until_ok($node,
	"SELECT ready AND pid <> $pid1 FROM sam.workers() WHERE worker = 1",
	'worker 1 is restarted alone');
is($node->safe_psql('postgres', 'SELECT pid FROM sam.workers() WHERE worker = 0'), $pid0,
	'worker 0 kept running');
# worker 1's calls are in the mock's hands (it answers after the delay): they must be checked
is($node->safe_psql('postgres',
	"SELECT count(*) FILTER (WHERE claimed_by = 1 AND needs_check)"
	  . " || '/' || count(*) FILTER (WHERE claimed_by = 0 AND state = 'in_flight' AND NOT needs_check)"
	  . " FROM sam.outbox WHERE account_id = 'acc-stop'"),
	'4/4', "worker 1's four calls are to be checked, worker 0's four are still in flight as they were");
mock_call($mock, 'DELETE', '/_mock/faults');
poll_until_ok($node,
	"SELECT count(*) = 8 FROM sam.prospects WHERE campaign_id = $cid AND status = 'connection_request_sent'",
	'all eight prospects end with their invitation sent');
$by = accepted_invites('acc-stop');
is(join(',', map { "$_:" . ($by->{"ACoSTOP$_"} // 0) } 1 .. 8), join(',', map { "$_:1" } 1 .. 8),
	'the mock accepted each invitation exactly once');
is(scalar(grep { $_->{method} eq 'POST' && $_->{path} eq '/api/v1/users/invite' && ($_->{account_id} // '') eq 'acc-stop' }
			@{ mock_log($mock) }),
	8, 'the mock saw eight invitations in all: the four reconciled calls were checked, not sent again');

# ---- jobs that wait for their calls run in worker 0 ------------------------------------
my $woken = $node->safe_psql('postgres', 'SELECT wakeups FROM sam.workers() WHERE worker = 1');
my $r = json_query($node, 'SELECT sam.check_relations()');
is($r->{success}, JSON::PP::true, 'check_relations succeeds with two workers');
is_deeply($r->{errors}, [], 'without errors');
# (the calls a job queues in worker 0 wake worker 1 too: they waited for its timer)
cmp_ok($node->safe_psql('postgres', 'SELECT wakeups FROM sam.workers() WHERE worker = 1'), '>', $woken,
	"the job's calls, queued by worker 0, woke worker 1");

# ---- a result that meets a lock is recorded again, in a new transaction ----------------
# lock_timeout for the workers' database: recording a 401 disconnects the account, a row that
# another session holds here; the worker gives up waiting, records the result again in a new
# transaction, and it goes through once the row is free (never 'dead')
$node->safe_psql('postgres', "ALTER DATABASE postgres SET lock_timeout = '2s'");
my $old_pids = join(',', split(/\n/, $node->safe_psql('postgres', 'SELECT pid FROM sam.workers()')));
$node->safe_psql('postgres', 'SELECT pg_terminate_backend(pid) FROM sam.workers()');
poll_until_ok($node,
	"SELECT count(*) = 2 AND bool_and(ready) AND bool_and(pid NOT IN ($old_pids)) FROM sam.workers()",
	'both workers connected again, with lock_timeout');
make_account('acc-lock');
$cid = make_campaign('acc-lock', 'LOCK', 1);
mock_call($mock, 'POST', '/_mock/accounts', { account_id => 'acc-lock', status => 'disconnected' });
mock_call($mock, 'POST', '/_mock/faults',
	{ method => 'POST', path_prefix => '/api/v1/users/invite', count => -1, delay_ms => 1000 });
my $log_pos = -s $node->logfile;
$node->safe_psql('postgres', "SELECT sam.start_campaign($cid)");
my $holder = $node->background_psql('postgres');
$holder->query_safe("BEGIN; SELECT count(*) FROM (SELECT 1 FROM sam.accounts WHERE account_id = 'acc-lock' FOR UPDATE) s;");
ok($node->wait_for_log(qr/sam_ext worker records 1 results again: they met a deadlock or a lock/, $log_pos),
	'the worker records the result again after its lock timed out');
$holder->query_safe('COMMIT');
$holder->quit;
mock_call($mock, 'DELETE', '/_mock/faults');
poll_until_ok($node,
	"SELECT a.status = 'disconnected' AND o.state = 'queued' AND o.error_type = 'errors/disconnected_account'"
	  . " FROM sam.accounts a JOIN sam.outbox o ON o.account_id = a.account_id WHERE a.account_id = 'acc-lock'",
	'then it is recorded: the account is disconnected and the invitation held, not dead');
$node->safe_psql('postgres', 'ALTER DATABASE postgres RESET lock_timeout');

# ---- a job's caller killed while it waits leaves no slot behind ---------------------------
# (the slot stayed 'done' for a caller that was gone: after eight such kills every job answered
# "too many jobs are waiting for the worker" until the server restarted)
mock_call($mock, 'POST', '/_mock/faults',
	{ method => 'GET', path_prefix => '/api/v1/users/relations', delay_ms => 1000, count => -1 });
my $caller = "SELECT pid FROM pg_stat_activity WHERE query LIKE 'SELECT sam.check_relations()%' AND pid <> pg_backend_pid()";
for my $k (1 .. 9)
{
	my $bg = $node->background_psql('postgres', on_error_stop => 0);
	$bg->query_until(qr/started/, "\\echo started\nSELECT sam.check_relations();\n");
	poll_until_ok($node, "SELECT count(*) = 1 FROM ($caller AND wait_event_type = 'Extension') s",
		"job caller $k waits for the worker");
	$node->safe_psql('postgres', "SELECT pg_terminate_backend(pid) FROM ($caller) s");
	eval { $bg->quit; };
	poll_until_ok($node, "SELECT count(*) = 0 FROM sam.job_runs WHERE status = 'running'",
		"the run of killed caller $k ends in the worker");
}
mock_call($mock, 'DELETE', '/_mock/faults');
$r = json_query($node, 'SELECT sam.check_relations()');
is($r->{success}, JSON::PP::true, 'after nine callers were killed while they waited, a job still gets a slot');

done_testing();
