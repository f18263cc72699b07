# The ingest loses its database connection mid-request: the request it was
# serving is answered 503 (so that Unipile delivers it again), the ingest
# reconnects by itself, and the delivery made again is applied once.  Then a
# flood of distinct webhooks while the ingest's backends are killed over and
# over: each event, delivered again until it is answered 200 (as Unipile
# does), is stored once and applied once.
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

my $bin = ($ENV{TESTDIR} // '.') . '/ingest/sam_ingest';
plan skip_all => 'the ingest is not built' unless -x $bin;

my $mock = start_mock();
my $node = new_sam_node('ingest_faults', $mock);
my $http = HTTP::Tiny->new(timeout => 30);

$node->safe_psql('postgres', q{
CREATE ROLE sam_ingestd LOGIN IN ROLE sam_ingest;
});
my $secret = 'whsec-' . int(rand(1e12));
my ($in, $out, $err) = ('', '', '');
my $ingest;
{
	local $ENV{SAM_INGEST_DATABASE_URL} = 'host=' . $node->host . ' port=' . $node->port . ' dbname=postgres user=sam_ingestd';
	local $ENV{SAM_WEBHOOK_SECRET} = $secret;
	$ingest = IPC::Run::start([ $bin, '--port', '0', '--threads', '4' ], \$in, \$out, \$err);
	my $deadline = time() + 20;
	while ($out !~ /listening on [^:]+:(\d+)/ && time() < $deadline) { $ingest->pump_nb; usleep(20_000); }
	die "ingest did not start: $out $err" unless $out =~ /listening on [^:]+:(\d+)/;
}
$out =~ /listening on [^:]+:(\d+)/;
my $url = "http://127.0.0.1:$1/api/webhooks/unipile";

# prospects invited through the worker and the mock
$node->safe_psql('postgres', "SELECT sam.create_account('acc-if', working_days => '{1,2,3,4,5,6,7}', work_start => '00:00', work_end => '00:00', spacing_min => '0', spacing_max => '0', daily_invite_cap => 100)");
my $n = 60;
my $cid = $node->safe_psql('postgres', "SELECT sam.create_campaign('acc-if', 'ingest faults')->>'campaign_id'");
$node->safe_psql('postgres', "SELECT sam.add_prospects($cid, '[" . join(',', map { qq({"provider_id": "ACoIF$_"}) } 0 .. $n) . "]')");
$node->safe_psql('postgres', "SELECT sam.start_campaign($cid)");
poll_until_ok($node, "SELECT count(*) = $n + 1 FROM sam.prospects WHERE campaign_id = $cid AND status = 'connection_request_sent'",
	'the prospects are invited');

sub relation { return qq({"event": "new_relation", "account_id": "acc-if", "user_provider_id": "$_[0]"}); }

# the ingest's backends
my $ingest_backends = "SELECT pid FROM pg_stat_activity WHERE usename = 'sam_ingestd'";

# ---- one request, its connection killed while it runs ----------------------------------------
# a lock held on the prospect keeps the request inside sam.ingest_webhook() until its backend is
# killed; the ingest makes a call whose connection broke once more on a new one (the function
# deduplicates), so the backend is killed until the request is answered
my $holder = $node->background_psql('postgres');
$holder->query_safe("BEGIN; SELECT count(*) FROM (SELECT 1 FROM sam.prospects WHERE provider_id = 'ACoIF0' FOR UPDATE) s;");
my $h = IPC::Run::start([ 'curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', '-X', 'POST', '-H', "Unipile-Auth: $secret",
	'-H', 'Content-Type: application/json', '--data-binary', relation('ACoIF0'), $url ], \undef, \my $code);
my $killed = 0;
my $deadline = time() + 60;
while ($h->pumpable && time() < $deadline)
{
	my $pid = $node->safe_psql('postgres', "$ingest_backends AND wait_event_type = 'Lock' LIMIT 1");
	if ($pid)
	{
		$node->safe_psql('postgres', "SELECT pg_terminate_backend($pid)");
		$killed++;
	}
	$h->pump_nb;
	usleep(20_000);
}
$h->finish;
ok($killed >= 1, "the ingest's backend was killed mid-request ($killed times)");
is($code, '503', 'the request whose connection was lost is answered 503, so that Unipile delivers it again');
is($node->safe_psql('postgres', "SELECT count(*) FROM sam.webhook_events WHERE payload->>'user_provider_id' = 'ACoIF0'"), '0',
	'nothing of it was kept');
$holder->query_safe('COMMIT');
$holder->quit;
# Unipile delivers it again (through the mock's delivery, with its retries)
mock_call($mock, 'POST', '/_mock/webhooks/emit', { url => $url, headers => [ { key => 'Unipile-Auth', value => $secret } ],
	payload => decode_json(relation('ACoIF0')) });
poll_until_ok($node, "SELECT status = 'connected' FROM sam.prospects WHERE provider_id = 'ACoIF0'",
	'the delivery made again is applied: the ingest reconnected by itself');
is($node->safe_psql('postgres', "SELECT count(*) || ' ' || min(status) || ' ' || min(attempts) FROM sam.webhook_events WHERE payload->>'user_provider_id' = 'ACoIF0'"),
	'1 processed 1', 'stored once, applied once');

# ---- a flood while the ingest's backends are killed over and over ------------------------------
my @pending = (1 .. $n);
my %codes;
my $round = 0;
while (@pending && $round < 30)
{
	$round++;
	my $dir = File::Temp->newdir;
	my @curl = ('curl', '-s', '--no-progress-meter', '-Z', '--parallel-immediate', '--parallel-max', '8');
	for my $i (@pending)
	{
		my $f = "$dir/$i.json";
		open(my $fh, '>', $f) or die;
		print $fh relation("ACoIF$i");
		close $fh;
		push @curl, '-o', '/dev/null', '-w', "$i %{http_code}\\n", '-X', 'POST', '-H', "Unipile-Auth: $secret",
		  '-H', 'Content-Type: application/json', '--data-binary', "\@$f", $url, '--next';
	}
	pop @curl;
	my $res = '';
	my $flood = IPC::Run::start(\@curl, \undef, \$res);
	# kill the ingest's backends while the flood runs (the first rounds only, so that it ends)
	while ($flood->pumpable)
	{
		if ($round <= 3)
		{
			$node->safe_psql('postgres', "SELECT count(pg_terminate_backend(pid)) FROM ($ingest_backends) s");
		}
		$flood->pump_nb;
		usleep(30_000);
	}
	$flood->finish;
	my @again;
	for my $line (split /\n/, $res)
	{
		my ($i, $c) = split / /, $line;
		$codes{$c}++;
		push @again, $i if $c ne '200';
	}
	@pending = @again;
}
is(scalar @pending, 0, "every event was answered 200 in the end ($round rounds)");
ok(!grep({ $_ ne '200' && $_ ne '503' } keys %codes), 'failures were answered 503 (retried by Unipile), never anything else: '
	  . join(', ', map { "$_ x$codes{$_}" } sort keys %codes));
is($node->safe_psql('postgres', "SELECT count(*) || ' ' || count(DISTINCT dedupe_key) || ' ' || max(attempts) FROM sam.webhook_events"
	  . " WHERE payload->>'user_provider_id' <> 'ACoIF0'"), "$n $n 1", "$n events stored once each, each applied once");
is($node->safe_psql('postgres', "SELECT count(*) FROM sam.prospects WHERE campaign_id = $cid AND status = 'connected'"),
	$n + 1, 'every prospect connected');

# ---- a lock the webhook cannot get (lock_timeout): made once more, then 503; nothing stored -----
# applying it met another transaction's lock: not the event's fault, so it is not stored as failed
# (nothing would apply it again) but answered 503, and Unipile delivers it again
$node->safe_psql('postgres', "ALTER ROLE sam_ingestd SET lock_timeout = '200ms'");
$node->safe_psql('postgres', "SELECT count(pg_terminate_backend(pid)) FROM ($ingest_backends) s");
my $reply = q({"event": "message_received", "account_id": "acc-if", "chat_id": "chat-if0", "message_id": "m-if0",
	"message": "thanks", "sender": {"attendee_provider_id": "ACoIF0"}});
$holder = $node->background_psql('postgres');
$holder->query_safe("BEGIN; SELECT count(*) FROM (SELECT 1 FROM sam.prospects WHERE provider_id = 'ACoIF0' FOR UPDATE) s;");
my $post = sub {
	return $http->post($url, { headers => { 'Unipile-Auth' => $secret, 'Content-Type' => 'application/json' },
		content => $reply });
};
my $res = $post->();
is($res->{status}, 503, 'a webhook that cannot get its lock is answered 503') or diag($res->{content});
like($res->{content}, qr/database busy/, 'saying the database is busy');
is($node->safe_psql('postgres', "SELECT count(*) FROM sam.webhook_events WHERE payload->>'message_id' = 'm-if0'"), '0',
	'nothing of it was stored');
{
	my $twice = 0;
	for (1 .. 100)
	{
		# (the calls as log_statement shows them: the role's errors are not logged)
		my @n = slurp_file($node->logfile) =~ /execute sam_ingest_[0-9a-f]+: SELECT sam\.ingest_webhook[^\n]*\n[^\n]*DETAIL:[^\n]*"m-if0"/g;
		last if ($twice = (@n >= 2));
		usleep(50_000);
	}
	ok($twice, 'it was made twice before the answer');
}
$holder->query_safe('COMMIT');
$holder->quit;
$res = $post->();
is($res->{status}, 200, 'delivered again once the lock is gone: 200') or diag($res->{content});
is($node->safe_psql('postgres', "SELECT status FROM sam.prospects WHERE provider_id = 'ACoIF0'"), 'replied', 'and applied');

# ---- a batch that meets a lock: two deliveries made alone are answered 503, and the rest at once ----
# Made one by one, each delivery of a failed batch would wait for the same lock twice: the worker
# held for 2 * --batch lock timeouts while the queue grows.  After two 503 in a row the others are
# answered 503 without a call (Unipile delivers them again).
$node->safe_psql('postgres', "ALTER ROLE sam_ingestd SET lock_timeout = '2s'");
$node->safe_psql('postgres', "SELECT count(pg_terminate_backend(pid)) FROM ($ingest_backends) s");
(my $base = $url) =~ s{/api/.*}{};
sub queued { return ($http->get("$base/metrics/ingest")->{content} =~ /^sam_ingest_queued_requests (\d+)$/m) ? $1 : -1; }
sub posts
{
	my @cmd = ('curl', '-s', '--no-progress-meter', '-Z', '--parallel-immediate', '--parallel-max', scalar(@_));
	for my $i (0 .. $#_)
	{
		push @cmd, '-o', '/dev/null', '-w', '%{http_code}\n', '-X', 'POST', '-H', "Unipile-Auth: $secret",
		  '-H', 'Content-Type: application/json', '--data-binary', $_[$i], $url, ($i < $#_ ? '--next' : ());
	}
	my $codes = '';
	return [ IPC::Run::start(\@cmd, \undef, \$codes), \$codes ];
}
sub read_event { return qq({"event": "message_read", "account_id": "acc-if", "message_id": "busy-$_[0]"}); }
$holder = $node->background_psql('postgres');
$holder->query_safe('BEGIN; LOCK TABLE sam.webhook_events IN SHARE ROW EXCLUSIVE MODE;');
my @running;
for my $w (1 .. 4)
{
	push @running, posts(read_event("held$w"));
	poll_until_ok($node, "SELECT count(*) = $w FROM pg_stat_activity WHERE usename = 'sam_ingestd' AND wait_event_type = 'Lock'",
		"busy: worker $w waits for the lock");
}
push @running, posts(map { read_event("queued$_") } 1 .. 12);
{
	my $deadline = time() + 30;
	usleep(20_000) while queued() < 12 && time() < $deadline;
}
is(queued(), 12, 'busy: 12 deliveries queued behind the 4 held workers');
my $codes = '';
for my $r (@running)
{
	$r->[0]->finish;
	$codes .= ${ $r->[1] };
}
is(join(',', sort split /\n/, $codes), join(',', ('503') x 16), 'busy: all 16 answered 503 while the lock stays');
{
	my @calls = slurp_file($node->logfile) =~ /execute sam_ingest_[0-9a-f]+: SELECT sam\.ingest_webhook[^\n]*\n[^\n]*DETAIL:[^\n]*busy-queued/g;
	# the batch (its first call fails, the others are not run), then two deliveries alone, twice each
	cmp_ok(scalar(@calls), '<=', 5, 'busy: the queued deliveries took at most 5 calls in all, not 2 each')
	  or diag(scalar(@calls) . ' calls');
}
$holder->query_safe('COMMIT');
$holder->quit;
is($node->safe_psql('postgres', "SELECT count(*) FROM sam.webhook_events WHERE payload->>'message_id' LIKE 'busy-%'"), '0',
	'busy: nothing of them was stored');
my $again = posts(map { read_event("queued$_") } 1 .. 12);
$again->[0]->finish;
is(join(',', sort split /\n/, ${ $again->[1] }), join(',', ('200') x 12), 'busy: delivered again once the lock is gone: 200');

# one delivery whose prospect's row another session holds (left idle in its transaction) fails the
# batch it is first in; made alone it is answered 503, and the eleven after it are made and stored
# (a longer lock_timeout: the four workers are held on the table's lock while the queue fills)
$node->safe_psql('postgres', "ALTER ROLE sam_ingestd SET lock_timeout = '5s'");
$node->safe_psql('postgres', "SELECT count(pg_terminate_backend(pid)) FROM ($ingest_backends) s");
my $row_holder = $node->background_psql('postgres');
$row_holder->query_safe("BEGIN; SELECT count(*) FROM (SELECT 1 FROM sam.prospects WHERE provider_id = 'ACoIF1' FOR UPDATE) s;");
my $table_holder = $node->background_psql('postgres');
$table_holder->query_safe('BEGIN; LOCK TABLE sam.webhook_events IN SHARE ROW EXCLUSIVE MODE;');
@running = ();
for my $w (1 .. 4)
{
	push @running, posts(read_event("rowheld$w"));
	poll_until_ok($node, "SELECT count(*) = $w FROM pg_stat_activity WHERE usename = 'sam_ingestd' AND wait_event_type = 'Lock'",
		"row lock: worker $w waits");
}
push @running, posts(q({"event": "message_received", "account_id": "acc-if", "chat_id": "chat-if1", "message_id": "m-if1",
	"message": "hello", "sender": {"attendee_provider_id": "ACoIF1"}}));
{
	my $deadline = time() + 30;
	usleep(20_000) while queued() < 1 && time() < $deadline;
}
push @running, posts(map { read_event("after-poison$_") } 1 .. 11);
{
	my $deadline = time() + 30;
	usleep(20_000) while queued() < 12 && time() < $deadline;
}
is(queued(), 12, 'row lock: the held reply first in the queue, 11 deliveries after it');
$table_holder->query_safe('COMMIT');
$table_holder->quit;
$codes = '';
for my $r (@running)
{
	$r->[0]->finish;
	$codes .= ${ $r->[1] };
}
is(join(',', sort split /\n/, $codes), join(',', ('200') x 15, '503'),
	'row lock: the held reply is answered 503, the 15 others 200');
is($node->safe_psql('postgres', "SELECT count(*) FROM sam.webhook_events WHERE payload->>'message_id' LIKE 'busy-after-poison%'"), '11',
	'row lock: the eleven after it are stored');
$row_holder->query_safe('COMMIT');
$row_holder->quit;
$node->safe_psql('postgres', "ALTER ROLE sam_ingestd RESET lock_timeout");

$ingest->signal('TERM');
$ingest->finish;
$node->stop;
$mock->{handle}->kill_kill;
done_testing();
