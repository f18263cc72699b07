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

# the ingest's role: only the ingest and job functions
$node->safe_psql('postgres', q{
CREATE ROLE sam_ingest LOGIN;
GRANT USAGE ON SCHEMA sam TO sam_ingest;
GRANT EXECUTE ON FUNCTION sam.ingest_webhook(text, text), sam.check_relations(), sam.process_follow_ups(),
    sam.execute_scheduled_campaigns(), sam.process_pending_prospects(), sam.process_outbox() TO sam_ingest;
});

my $webhook_secret = 'whsec-' . int(rand(1e12));
my $cron_secret = 'cron-' . int(rand(1e12));
my ($in, $out, $err) = ('', '', '');
my $bin = ($ENV{TESTDIR} // '.') . '/ingest/sam_ingest';
my $ingest;
sub start_ingest
{
	local $ENV{SAM_INGEST_DATABASE_URL} = 'host=' . $node->host . ' port=' . $node->port . ' dbname=postgres user=sam_ingest';
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

# twenty concurrent deliveries of the same event
my $dup = '{"event": "message_received", "account_id": "acc-hook", "message_id": "concurrent-1", "message": "hi", "sender": {"attendee_provider_id": "ACoHOOK1"}}';
my $tmp = File::Temp->new;
print $tmp $dup;
close $tmp;
my @curl = ('curl', '-s', '-Z', '--parallel-max', '20');
push @curl, map { ('-o', '/dev/null', '-w', '%{http_code}\n', '-X', 'POST', '-H', "Unipile-Auth: $webhook_secret",
	'-H', 'Content-Type: application/json', '--data-binary', '@' . $tmp->filename, "$base/api/webhooks/unipile",
	($_ < 20 ? '--next' : ())) } 1 .. 20;
my $codes = '';
IPC::Run::run(\@curl, \undef, \$codes);
is(join(',', sort { $a <=> $b } split /\n/, $codes), join(',', ('200') x 20), 'twenty concurrent deliveries: all acknowledged');
is($node->safe_psql('postgres', "SELECT count(*) FROM sam.webhook_events WHERE dedupe_key LIKE 'message_received:acc-hook:concurrent-1'"),
	'1', 'stored once');
is($node->safe_psql('postgres', "SELECT status FROM sam.prospects WHERE provider_id = 'ACoHOOK1'"), 'replied', 'and applied once');
($st, $body) = post('/api/webhooks/unipile', '{"event": "mail_opened", "account_id": "acc-hook"}', 'Unipile-Auth' => $webhook_secret);
like("$st $body", qr/^200 .*"status": "ignored"/, 'an unknown event is stored and ignored');

# ---- the ingest's role ---------------------------------------------------------------
my ($ret, $o, $e) = $node->psql('postgres', 'SELECT count(*) FROM sam.prospects', extra_params => [ '-U', 'sam_ingest' ]);
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
is($r->{status}, 501, 'a job not built yet answers 501');

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
