# The thin ingest for real on loopback, in front of the real extension: the
# mock's webhooks connect prospects within a second; wrong secret, oversize,
# not-JSON, duplicate and concurrent duplicate deliveries; unknown events;
# the database down then up (503, then recovery); the seed's curl test
# commands against the cron endpoints; the ingest's role may only call the
# ingest and job functions; no secret in its output.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use File::Temp ();
use HTTP::Tiny;
use IPC::Run;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use SamTest;
use Test::More;
use Time::HiRes qw(time usleep);

my $mock = start_mock();
my $node = new_sam_node('ingest', $mock);
my $http = HTTP::Tiny->new(timeout => 10);
my $json = JSON::PP->new->canonical(1);

# the ingest's login role: the extension's roles for the ingest, the jobs (cron
# routes) and monitoring (GET /metrics), nothing else
$node->safe_psql('postgres', q{
CREATE ROLE sam_ingestd LOGIN IN ROLE sam_ingest, sam_jobs, sam_monitor;
});

my $webhook_secret = 'whsec-' . int(rand(1e12));
my $cron_secret = 'cron-' . int(rand(1e12));
my ($in, $out, $err) = ('', '', '');
my $bin = ($ENV{TESTDIR} // '.') . '/ingest/sam_ingest';
my $ingest;
sub start_ingest
{
	local $ENV{SAM_INGEST_DATABASE_URL} = 'host=' . $node->host . ' port=' . $node->port . ' dbname=postgres user=sam_ingestd';
	local $ENV{SAM_WEBHOOK_SECRET} = $webhook_secret;
	local $ENV{SAM_CRON_SECRET} = $cron_secret;
	$out = '';
	$ingest = IPC::Run::start([ $bin, '--port', '0', '--threads', '4' ], \$in, \$out, \$err);
	my $deadline = time() + 20;
	while ($out !~ /listening on [^:]+:(\d+)/ && time() < $deadline) { $ingest->pump_nb; usleep(20_000); }
	die "ingest did not start: $out $err" unless $out =~ /listening on [^:]+:(\d+)/;
	return $1;
}
my $port = start_ingest();
my $base = "http://127.0.0.1:$port";
ok($port, "the ingest listens on port $port");

sub post
{
	my ($path, $body, %headers) = @_;
	my $r = $http->request('POST', "$base$path", { content => $body, headers => { 'Content-Type' => 'application/json', %headers } });
	return ($r->{status}, $r->{content});
}

# ---- the mock's webhooks connect prospects within a second ----------------------
for my $source ('users', 'messaging', 'account_status')
{
	my $r = $http->request('POST', "$mock->{url}/api/v1/webhooks", { headers => { 'X-API-KEY' => $mock->{api_key}, 'Content-Type' => 'application/json' },
		content => $json->encode({ source => $source, request_url => "$base/api/webhooks/unipile", name => "sam-$source",
			headers => [ { key => 'Unipile-Auth', value => $webhook_secret } ] }) });
	is($r->{status}, 201, "a $source webhook is registered at the mock");
}
$node->safe_psql('postgres', "SELECT sam.create_account('acc-hook', working_days => '{1,2,3,4,5,6,7}', work_start => '00:00', work_end => '00:00', spacing_min => '0', spacing_max => '0')");
mock_call($mock, 'POST', '/_mock/people', [ map { { provider_id => "ACoHOOK$_", public_identifier => "hook-$_", accept_after_s => 2 } } 1 .. 5 ]);
my $cid = $node->safe_psql('postgres', "SELECT sam.create_campaign('acc-hook', 'hooks')->>'campaign_id'");
$node->safe_psql('postgres', "SELECT sam.add_prospects($cid, '[" . join(',', map { qq({"provider_id": "ACoHOOK$_"}) } 1 .. 5) . "]')");
$node->safe_psql('postgres', "SELECT sam.start_campaign($cid)");
$node->poll_query_until('postgres', "SELECT count(*) = 5 FROM sam.prospects WHERE campaign_id = $cid AND status = 'connection_request_sent'")
  or die 'invitations not sent';
my $now = mock_call($mock, 'GET', '/_mock/clock')->{now_ms};
my $t0 = time();
mock_call($mock, 'POST', '/_mock/clock', { now_ms => $now + 5000 });
my $connected = 0;
while (time() - $t0 < 10)
{
	$connected = $node->safe_psql('postgres', "SELECT count(*) FROM sam.prospects WHERE campaign_id = $cid AND status = 'connected'");
	last if $connected == 5;
	usleep(10_000);
}
my $latency = time() - $t0;
is($connected, 5, 'new_relation webhooks from the mock, through the ingest, connected all five');
cmp_ok($latency, '<', 1.0, sprintf('within a second of the acceptances (%.0f ms)', $latency * 1000));
is($node->safe_psql('postgres', "SELECT string_agg(DISTINCT connected_via, ',') FROM sam.prospects WHERE campaign_id = $cid"),
	'webhook', 'by webhook');

# ---- the guards ----------------------------------------------------------------------
my $payload = '{"event": "new_relation", "account_id": "acc-hook", "user_provider_id": "ACoNOBODY"}';
my ($st, $body) = post('/api/webhooks/unipile', $payload);
is("$st $body", '401 {"error":"Unauthorized"}', 'no secret header: 401');
($st, $body) = post('/api/webhooks/unipile', $payload, 'Unipile-Auth' => 'wrong');
is("$st $body", '401 {"error":"Unauthorized"}', 'wrong secret: 401');
my $big = File::Temp->new;
print $big '{"x": "' . ('a' x (2 * 1024 * 1024)) . '"}';
close $big;
my $code = '';
IPC::Run::run([ 'curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', '-X', 'POST', '-H', "Unipile-Auth: $webhook_secret",
	'-H', 'Content-Type: application/json', '--data-binary', '@' . $big->filename, "$base/api/webhooks/unipile" ], \undef, \$code);
is($code, '413', 'a body over 1 MiB: 413');
($st, $body) = post('/api/webhooks/unipile', 'not json at all', 'Unipile-Auth' => $webhook_secret);
is($st, 400, 'not JSON: 400');
like($body, qr/invalid JSON/, 'with a clear message');
my $before = $node->safe_psql('postgres', 'SELECT count(*) FROM sam.webhook_events');
($st, $body) = post('/api/webhooks/unipile', $payload, 'Unipile-Auth' => $webhook_secret);
is($st, 200, 'a good delivery: 200');
like($body, qr/"duplicate": false/, 'stored');
($st, $body) = post('/api/webhooks/unipile-connection-accepted', $payload, 'Unipile-Auth' => $webhook_secret);
is($st, 200, 'Unipile retries it (the seed\'s URL): 200');
like($body, qr/"duplicate": true/, 'acknowledged as a duplicate');
is($node->safe_psql('postgres', 'SELECT count(*) FROM sam.webhook_events') - $before, 1, 'stored once');

# curl_posts(BODIES...): posts each body as a webhook, all at once (curl -Z); the curl
# process and a reference to its output (an HTTP code a line)
sub curl_posts
{
	my @bodies = @_;
	my @cmd = ('curl', '-s', '--no-progress-meter', '-Z', '--parallel-immediate', '--parallel-max', scalar(@bodies));
	for my $i (0 .. $#bodies)
	{
		push @cmd, '-o', '/dev/null', '-w', '%{http_code}\n', '-X', 'POST', '-H', "Unipile-Auth: $webhook_secret",
		  '-H', 'Content-Type: application/json', '--data-binary', $bodies[$i], "$base/api/webhooks/unipile",
		  ($i < $#bodies ? '--next' : ());
	}
	my $codes = '';
	return (IPC::Run::start(\@cmd, \undef, \$codes), \$codes);
}

# twenty concurrent deliveries of the same event
my $dup = '{"event": "message_received", "account_id": "acc-hook", "message_id": "concurrent-1", "message": "hi", "sender": {"attendee_provider_id": "ACoHOOK1"}}';
my ($twenty, $codes) = curl_posts(($dup) x 20);
$twenty->finish;
is(join(',', sort { $a <=> $b } split /\n/, $$codes), join(',', ('200') x 20), 'twenty concurrent deliveries: all acknowledged');
is($node->safe_psql('postgres', "SELECT count(*) FROM sam.webhook_events WHERE dedupe_key LIKE 'message_received:acc-hook:concurrent-1'"),
	'1', 'stored once');
is($node->safe_psql('postgres', "SELECT status FROM sam.prospects WHERE provider_id = 'ACoHOOK1'"), 'replied', 'and applied once');
($st, $body) = post('/api/webhooks/unipile', '{"event": "mail_opened", "account_id": "acc-hook"}', 'Unipile-Auth' => $webhook_secret);
like("$st $body", qr/^200 .*"status": "ignored"/, 'an unknown event is stored and ignored');

# ---- webhooks queued while the database is busy: stored in one transaction --------------
# A lock on the events table holds the 4 workers' calls (one delivery each, sent one after the
# other); 12 more deliveries queue behind them.  Once the lock goes, a worker takes the queued
# ones together (--batch: 16): they commit in one transaction.  A batch with a delivery that is
# not JSON fails as a whole, and its deliveries are made again one by one, so that each gets the
# answer it would have got alone.
sub metric
{
	my ($name) = @_;
	my $m = $http->get("$base/metrics/ingest")->{content};
	return $m =~ /^\Q$name\E (\d+)$/m ? $1 : -1;
}
sub batch_event { return qq({"event": "message_read", "account_id": "acc-hook", "message_id": "batch-$_[0]"}); }
# queued_round(NAME, BODIES...): the 4 workers held, BODIES queued, then released; the answers' codes, sorted
sub queued_round
{
	my ($name, @bodies) = @_;
	my $lock = $node->background_psql('postgres');
	$lock->query_safe('BEGIN; LOCK TABLE sam.webhook_events IN SHARE ROW EXCLUSIVE MODE;');
	my @running;
	for my $w (1 .. 4)
	{
		push @running, [ curl_posts(batch_event("$name-held$w")) ];
		poll_until_ok($node, "SELECT count(*) = $w FROM pg_stat_activity WHERE usename = 'sam_ingestd' AND wait_event_type = 'Lock'",
			"$name: worker $w waits for the lock");
	}
	push @running, [ curl_posts(@bodies) ];
	my $deadline = time() + 30;
	usleep(20_000) while metric('sam_ingest_queued_requests') < @bodies && time() < $deadline;
	is(metric('sam_ingest_queued_requests'), scalar(@bodies), "$name: the other deliveries wait in the queue");
	$lock->query_safe('COMMIT;');
	$lock->quit;
	my $codes = '';
	for my $r (@running)
	{
		$r->[0]->finish;
		$codes .= ${ $r->[1] };
	}
	return join(',', sort split /\n/, $codes);
}

my $committed_before = metric('sam_ingest_webhook_batches_total{result="committed"}');
my $failed_before = metric('sam_ingest_webhook_batches_total{result="failed"}');
my $batched_before = metric('sam_ingest_webhook_batched_total');
is(queued_round('good', map { batch_event("good$_") } 1 .. 12), join(',', ('200') x 16), 'good: all 16 answered 200');
is(metric('sam_ingest_webhook_batches_total{result="committed"}') - $committed_before, 1,
	'the 12 queued deliveries were stored in one batch');
is(metric('sam_ingest_webhook_batched_total') - $batched_before, 12, 'of 12');
is(queued_round('bad', (map { batch_event("bad$_") } 1 .. 11), '{"event": not json'), join(',', ('200') x 15, '400'),
	'bad: the 15 good deliveries answered 200, the one that is not JSON 400');
is(metric('sam_ingest_webhook_batches_total{result="failed"}') - $failed_before, 1,
	'the batch with the bad delivery failed as a whole, and was made again one by one');
is($node->safe_psql('postgres', "SELECT count(*) || ' ' || count(DISTINCT dedupe_key) || ' ' || count(*) FILTER (WHERE status = 'ignored' AND attempts = 1) FROM sam.webhook_events WHERE dedupe_key LIKE 'message_read:acc-hook:batch-%'"),
	'31 31 31', 'each delivery stored once and applied once');

# ---- the ingest's role ---------------------------------------------------------------
my ($ret, $o, $e) = $node->psql('postgres', 'SELECT count(*) FROM sam.prospects', extra_params => [ '-U', 'sam_ingestd' ]);
like($e, qr/permission denied/, 'the ingest\'s role cannot read the tables');

# ---- the seed's "Test Commands", verbatim but for host and secret ---------------------
sub seed_curl
{
	my ($path, $secret) = @_;
	my $res = '';
	local $ENV{CRON_SECRET} = $secret;
	IPC::Run::run([ 'bash', '-c', qq{curl -s -X POST $base$path \\
  -H "x-cron-secret: \${CRON_SECRET}" \\
  -H "Content-Type: application/json"} ], \undef, \$res);
	return $res;
}
my $cr = decode_json(seed_curl('/api/cron/check-relations', $cron_secret));
ok(exists $cr->{$_}, "check-relations answers \"$_\"") for qw(success checked accepted still_pending errors);
my $fu = decode_json(seed_curl('/api/campaigns/direct/process-follow-ups', $cron_secret));
ok(exists $fu->{$_}, "process-follow-ups answers \"$_\"") for qw(success processed sent pending completed failed results);
is(seed_curl('/api/cron/check-relations', 'wrong-secret'), '{"error":"Unauthorized"}', 'a wrong x-cron-secret: {"error":"Unauthorized"}');
like(seed_curl('/api/cron/process-outbox', $cron_secret), qr/"queue"/, 'process-outbox answers its queue report');
my $r = $http->request('POST', "$base/api/cron/gdpr-cleanup", { headers => { 'x-cron-secret' => $cron_secret } });
is($r->{status}, 200, 'gdpr-cleanup answers 200');
like($r->{content}, qr/"removed"/, 'with what it removed');

# ---- the database down, then up ----------------------------------------------------------
is($http->get("$base/healthz")->{status}, 200, 'healthz: 200 with the database up');
$node->stop('fast');
my $late = '{"event": "new_relation", "account_id": "acc-hook", "user_provider_id": "ACoLATER"}';
($st, $body) = post('/api/webhooks/unipile', $late, 'Unipile-Auth' => $webhook_secret);
is($st, 503, 'database down: 503, so that Unipile retries');
is($http->get("$base/healthz")->{status}, 503, 'healthz: 503');
$node->start;
$node->poll_query_until('postgres', 'SELECT true');
my $ok = 0;
for (1 .. 50)
{
	($st, $body) = post('/api/webhooks/unipile', $late, 'Unipile-Auth' => $webhook_secret);
	if ($st == 200) { $ok = 1; last; }
	usleep(100_000);
}
ok($ok, 'database up again: the retried delivery is accepted (the ingest reconnected by itself)');
is($node->safe_psql('postgres', "SELECT count(*) FROM sam.webhook_events WHERE payload->>'user_provider_id' = 'ACoLATER'"), '1',
	'nothing lost');

# ---- no secret in what the database shows -------------------------------------------------
my $secrets = qr/\Q$webhook_secret\E|\Q$cron_secret\E|\Q$mock->{api_key}\E/;
my $rows = $node->safe_psql('postgres', q{
SELECT string_agg(t, E'\n') FROM (
    SELECT row_to_json(r)::text AS t FROM sam.job_runs r
    UNION ALL SELECT row_to_json(o)::text FROM sam.outbox o
    UNION ALL SELECT row_to_json(w)::text FROM sam.webhook_events w
    UNION ALL SELECT row_to_json(n)::text FROM sam.notifications n
    UNION ALL SELECT row_to_json(d)::text FROM sam.doctor() d
    UNION ALL SELECT sam.metrics_text()) s});
cmp_ok(length($rows), '>', 5000, 'job runs, calls, webhook events, notifications, doctor and metrics hold data');
unlike($rows, $secrets, 'no secret in any of them');
for my $role ('sam_monitor', 'sam_app', 'sam_ingestd')
{
	my $settings = $node->safe_psql('postgres',
		"SET ROLE $role; SELECT string_agg(name || '=' || coalesce(setting, '') || ' ' || coalesce(reset_val, ''), E'\n') FROM pg_settings");
	like($settings, qr/sam\.max_attempts=/, "$role sees the sam settings it may");
	unlike($settings, $secrets, "$role sees no secret in pg_settings");
	unlike($settings, qr/sam\.unipile_api_key_file=/, "$role does not even see where the key file is");
}
unlike($node->safe_psql('postgres', "SELECT string_agg(name || '=' || setting, E'\n') FROM pg_settings"), $secrets,
	'nor a superuser: the key lives in a file, never in a setting');
my $activity = $node->safe_psql('postgres',
	"SELECT count(*) FILTER (WHERE application_name IN ('sam_ext worker', 'sam_ingest')) || E'\n'
	        || string_agg(coalesce(application_name, '') || ': ' || coalesce(query, ''), E'\n') FROM pg_stat_activity");
like($activity, qr/^[1-9]/, 'pg_stat_activity shows the worker and the ingest');
unlike($activity, $secrets, 'with no secret in it');
# a call that fails on the key (401): its error names the setting, not the key
my ($ret2, $o2, $e2) = $node->psql('postgres', 'SELECT sam.ingest_webhook(NULL)');
unlike("$o2$e2", $secrets, 'nor in an error message');

# ---- shutdown and secrets ---------------------------------------------------------------
$ingest->signal('TERM');
my $clean = $ingest->finish;
is(($ingest->full_results)[0], 0, 'SIGTERM: the ingest exits 0');
unlike("$out$err", qr/\Q$webhook_secret\E|\Q$cron_secret\E/, 'no secret in the ingest\'s output');
like($err, qr{POST /api/webhooks/unipile 200}, 'its access log has the requests');
unlike(slurp_file($node->logfile), qr/\Q$webhook_secret\E|\Q$cron_secret\E|\Q$mock->{api_key}\E/, 'no secret in the server log');

$node->stop;
$mock->{handle}->kill_kill;
done_testing();
