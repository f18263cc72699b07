# End to end: campaigns' connection requests reach the mock Unipile server over
# real HTTP through the worker; caps spread a campaign over simulated days;
# faults are retried, then dead; 401 disconnects the account; killing the
# worker or the whole server with calls in flight loses nothing and sends
# nothing twice (the mock's request log and state are the proof).
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use SamTest;
use Test::More;

my $mock = start_mock();
my $node = new_sam_node('invitations', $mock);

poll_until_ok($node,
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'sam_ext worker' AND datname = 'postgres'",
	'the worker shows in pg_stat_activity');
poll_until_ok($node,
	"SELECT sam.worker_pid() = pid FROM pg_stat_activity WHERE backend_type = 'sam_ext worker'",
	'sam.worker_pid() reports it once it has reconciled the rows left in flight');

# an account that may send at any time, with no spacing
sub make_account
{
	my ($id, %o) = @_;
	my $caps = join('', map { ", $_ => $o{$_}" } sort keys %o);
	$node->safe_psql('postgres',
		"SELECT sam.create_account('$id', working_days => '{1,2,3,4,5,6,7}', work_start => '00:00', "
		  . "work_end => '00:00', spacing_min => '0', spacing_max => '0'$caps)");
}

sub make_campaign
{
	my ($account, $note, $prospects) = @_;
	my $n = defined $note ? "'$note'" : 'NULL';
	my $cid = $node->safe_psql('postgres',
		"SELECT sam.create_campaign('$account', 'c-$account', $n)->>'campaign_id'");
	$node->safe_psql('postgres', "SELECT sam.add_prospects($cid, '$prospects')");
	return $cid;
}

sub invites_to
{
	my ($provider, %o) = @_;
	return grep {
		$_->{method} eq 'POST' && $_->{path} eq '/api/v1/users/invite'
		  && ref $_->{body} eq 'HASH' && ($_->{body}{provider_id} // '') eq $provider
		  && (!defined $o{status} || $_->{status} == $o{status})
	} @{ mock_log($mock) };
}

# ---- a small campaign reaches the mock --------------------------------------
mock_call($mock, 'POST', '/_mock/people', [
	{ provider_id => 'ACoDANA', public_identifier => 'dana-d', first_name => 'Dana', last_name => 'D' } ]);
make_account('acc-main');
my $cid = make_campaign('acc-main', 'Hi {first_name|there}, glad to connect.',
	'[{"provider_id": "ACoALICE", "first_name": "Alice"}, {"provider_id": "ACoBOB"},'
	  . ' {"provider_id": "ACoCAROL", "first_name": "Carol"}, {"profile_url": "https://www.linkedin.com/in/dana-d/"}]');
my $r = json_query($node, "SELECT sam.start_campaign($cid)");
is($r->{queued}, 3, 'start_campaign queues the prospects with a provider id');
is($r->{resolving}, 1, 'and looks up the one known by profile URL');
poll_until_ok($node,
	"SELECT count(*) = 4 FROM sam.prospects WHERE campaign_id = $cid AND status = 'connection_request_sent'",
	'every prospect of the campaign becomes connection_request_sent');
my @alice = invites_to('ACoALICE');
is(scalar @alice, 1, 'one invitation to Alice reached the mock');
is($alice[0]{body}{message}, 'Hi Alice, glad to connect.', 'with the rendered note');
is($alice[0]{body}{account_id}, 'acc-main', 'from the right account');
is((invites_to('ACoBOB'))[0]{body}{message}, 'Hi there, glad to connect.', 'the fallback is used without a first name');
my @lookups = grep { $_->{method} eq 'GET' && $_->{path} eq '/api/v1/users/dana-d' } @{ mock_log($mock) };
is(scalar @lookups, 1, 'the profile URL was resolved through GET /api/v1/users/{identifier}');
is(scalar invites_to('ACoDANA'), 1, 'and the resolved provider id was invited');
is($node->safe_psql('postgres',
	"SELECT count(*) FROM sam.prospects WHERE campaign_id = $cid AND invitation_id IS NOT NULL AND follow_up_due_at - invited_at = interval '3 days'"),
	'4', 'invitation ids are kept and the first check is due 3 days later');
is($node->safe_psql('postgres', "SELECT count(*) FROM sam.outbox WHERE account_id = 'acc-main' AND state <> 'done'"),
	'0', 'every call of the campaign is done');
unlike($node->safe_psql('postgres', "SELECT string_agg(request::text || coalesce(response::text, ''), ' ') FROM sam.outbox"),
	qr/\Q$mock->{api_key}\E/, 'the API key is stored in no outbox row');

# ---- caps spread 60 prospects over several simulated days --------------------
$node->safe_psql('postgres', "SELECT sam.set_clock('2026-03-02 10:00+00', frozen => true)");
make_account('acc-caps', daily_invite_cap => 20, weekly_invite_cap => 100);
my $list = join(',', map { qq({"provider_id": "ACoCAP$_"}) } 1 .. 60);
my $caps = make_campaign('acc-caps', undef, "[$list]");
is(json_query($node, "SELECT sam.start_campaign($caps)")->{queued}, 20, 'day 1: the daily cap (20) is queued');
poll_until_ok($node, "SELECT count(*) = 20 FROM sam.prospects WHERE campaign_id = $caps AND status = 'connection_request_sent'",
	'day 1: 20 invitations confirmed');
is(json_query($node, 'SELECT sam.process_pending_prospects()')->{queued}, 0, 'day 1: nothing more today');
for my $day (2, 3)
{
	$node->safe_psql('postgres', "SELECT sam.advance_clock('1 day')");
	is(json_query($node, 'SELECT sam.process_pending_prospects()')->{queued}, 20, "day $day: 20 more queued");
	poll_until_ok($node,
		"SELECT count(*) = 20 * $day FROM sam.prospects WHERE campaign_id = $caps AND status = 'connection_request_sent'",
		"day $day: confirmed");
}
is($node->safe_psql('postgres',
	"SELECT string_agg(n::text, ',' ORDER BY d) FROM (SELECT date_trunc('day', invited_at) d, count(*) n FROM sam.prospects WHERE campaign_id = $caps GROUP BY 1) s"),
	'20,20,20', 'invitations went out 20 a day over three days');
my %seen;
$seen{ $_->{body}{provider_id} }++ for grep { $_->{path} eq '/api/v1/users/invite' && ($_->{account_id} // '') eq 'acc-caps' } @{ mock_log($mock) };
is(scalar(keys %seen), 60, 'the mock received invitations for all 60');
ok(!(grep { $_ > 1 } values %seen), 'and nobody twice');
$node->safe_psql('postgres', 'SELECT sam.reset_clock()');

# ---- faults: retried with backoff, then dead --------------------------------
make_account('acc-faults');
my $fc = make_campaign('acc-faults', undef, '[]');
$node->safe_psql('postgres', "SELECT sam.start_campaign($fc)");
sub add_and_send
{
	my ($provider) = @_;
	$node->safe_psql('postgres', qq{SELECT sam.add_prospects($fc, '[{"provider_id": "$provider"}]')});
	$node->safe_psql('postgres', "SELECT sam.send_connection_requests($fc)");
}

mock_call($mock, 'POST', '/_mock/faults',
	{ method => 'POST', path_prefix => '/api/v1/users/invite', status => 429, type => 'errors/too_many_requests', count => 2 });
add_and_send('ACoRETRY429');
# a 429 is the account's limit: its invitations pause (6 hours, limit_pause), the call waits for the
# end of the pause without spending an attempt, and its prospect is not failed
my $held429 = "SELECT o.state = 'queued' AND o.attempts = 0 AND o.not_before > sam.now() + interval '%s'
	AND p.status = 'pending' AND a.invites_paused_until = o.not_before
	FROM sam.outbox o JOIN sam.prospects p ON p.id = o.prospect_id JOIN sam.accounts a ON a.account_id = o.account_id
	WHERE p.provider_id = 'ACoRETRY429'";
poll_until_ok($node, sprintf($held429, '5 hours'), '429: the invitation is held, the account\'s invitations paused');
is(scalar invites_to('ACoRETRY429', status => 429), 1, 'the mock answered 429 once');
# the pause over, the call goes again; a second 429 within a day of the first pause pauses 24 hours
$node->safe_psql('postgres', "SELECT sam.advance_clock('6 hours 5 minutes')");
poll_until_ok($node, sprintf($held429, '23 hours'), '429 again after the pause: paused 24 hours');
is(scalar invites_to('ACoRETRY429', status => 429), 2, 'the mock answered 429 twice');
$node->safe_psql('postgres', "SELECT sam.advance_clock('24 hours 5 minutes')");
poll_until_ok($node, "SELECT status = 'connection_request_sent' FROM sam.prospects WHERE provider_id = 'ACoRETRY429'",
	'then accepted on the third attempt');
is(scalar invites_to('ACoRETRY429', status => 201), 1, 'and accepted it once');

mock_call($mock, 'POST', '/_mock/faults',
	{ method => 'POST', path_prefix => '/api/v1/users/invite', status => 500, type => 'errors/unexpected_error', count => -1 });
add_and_send('ACoDEAD500');
poll_until_ok($node, "SELECT status = 'failed' FROM sam.prospects WHERE provider_id = 'ACoDEAD500'",
	'500 on every attempt: the prospect fails');
is($node->safe_psql('postgres', "SELECT state || ' ' || attempts FROM sam.outbox WHERE request->'json'->>'provider_id' = 'ACoDEAD500'"),
	'dead 5', 'the call is dead after sam.max_attempts attempts');
like($node->safe_psql('postgres', "SELECT last_error FROM sam.prospects WHERE provider_id = 'ACoDEAD500'"),
	qr/gave up after 5 attempts: HTTP 500/, 'with the reason');
is(scalar invites_to('ACoDEAD500'), 5, 'five POSTs reached the mock');
my @checks = grep { $_->{method} eq 'GET' && $_->{path} eq '/api/v1/users/ACoDEAD500' } @{ mock_log($mock) };
is(scalar @checks, 4, 'before each resend after a 500 the engine checked whether the invitation existed');
mock_call($mock, 'DELETE', '/_mock/faults');

mock_call($mock, 'POST', '/_mock/faults',
	{ method => 'POST', path_prefix => '/api/v1/users/invite', delay_ms => 3500, count => 1 });
add_and_send('ACoSLOW');
poll_until_ok($node, "SELECT status = 'connection_request_sent' FROM sam.prospects WHERE provider_id = 'ACoSLOW'",
	'a request slower than sam.http_timeout is retried and goes through');
my @slow = grep { $_->{path} =~ m{^/api/v1/users/(invite|ACoSLOW)$} && ($_->{method} eq 'GET' || ($_->{body}{provider_id} // '') eq 'ACoSLOW') } @{ mock_log($mock) };
is(join(' ', map { $_->{method} } @slow), 'POST GET' . (@slow > 2 ? ' POST' : ''),
	'after the timeout the engine checked the outcome (GET) before any resend');
my $pending = mock_call($mock, 'GET', '/_mock/state?account_id=acc-faults');
is(scalar(grep { $_->{invited_user_id} eq 'ACoSLOW' || ($_->{provider_id} // '') eq 'ACoSLOW' } @{ $pending->{invitations} }),
	1, 'the mock holds exactly one invitation to the slow prospect');

mock_call($mock, 'POST', '/_mock/faults',
	{ method => 'POST', path_prefix => '/api/v1/users/invite', status => 401, type => 'errors/disconnected_account', count => 1 });
add_and_send('ACoAFTER401');
poll_until_ok($node, "SELECT status = 'disconnected' FROM sam.accounts WHERE account_id = 'acc-faults'",
	'401 errors/disconnected_account disconnects the account');
is($node->safe_psql('postgres', "SELECT p.status || ' ' || o.state FROM sam.prospects p JOIN sam.outbox o ON o.prospect_id = p.id WHERE p.provider_id = 'ACoAFTER401'"),
	'pending queued', 'its invitation is held, not lost');
is(json_query($node, "SELECT sam.send_connection_requests($fc)")->{reason}, 'account is disconnected',
	'the disconnected account queues nothing');
$node->safe_psql('postgres', "SELECT sam.resume_account('acc-faults')");
poll_until_ok($node, "SELECT status = 'connection_request_sent' FROM sam.prospects WHERE provider_id = 'ACoAFTER401'",
	'once resumed, the held invitation goes out');

# ---- crashes with calls in flight -------------------------------------------
sub crash_case
{
	my ($label, $crash) = @_;
	my $acct = "acc-$label";
	make_account($acct);
	my @ids = map { "ACo\U$label\E$_" } 1 .. 5;
	my $c = make_campaign($acct, 'Hello {first_name|there}', '[' . join(',', map { qq({"provider_id": "$_"}) } @ids) . ']');
	mock_call($mock, 'POST', '/_mock/faults',
		{ method => 'POST', path_prefix => '/api/v1/users/invite', delay_ms => 1500, count => -1 });
	$node->safe_psql('postgres', "SELECT sam.start_campaign($c)");
	poll_until_ok($node, "SELECT count(*) = 5 FROM sam.outbox WHERE account_id = '$acct' AND state = 'in_flight'",
		"$label: five calls in flight");
	$crash->();
	mock_call($mock, 'DELETE', '/_mock/faults');
	poll_until_ok($node,
		"SELECT count(*) = 5 FROM sam.prospects WHERE campaign_id = $c AND status = 'connection_request_sent'",
		"$label: every invitation is confirmed after the restart");
	my %ok;
	for my $e (@{ mock_log($mock) })
	{
		next unless $e->{path} eq '/api/v1/users/invite' && ($e->{account_id} // '') eq $acct;
		$ok{ $e->{body}{provider_id} }++ if $e->{status} >= 200 && $e->{status} < 300;
	}
	is(join(',', map { $ok{$_} // 0 } @ids), '1,1,1,1,1', "$label: each invitation was accepted by the mock exactly once");
	my $state = mock_call($mock, 'GET', "/_mock/state?account_id=$acct");
	is(scalar @{ $state->{invitations} }, 5, "$label: the mock holds five invitations, no duplicate");
	is($node->safe_psql('postgres', "SELECT count(*) FROM sam.outbox WHERE account_id = '$acct' AND state <> 'done'"),
		'0', "$label: nothing left in the outbox");
}

crash_case('sigkill', sub {
	my $pid = $node->safe_psql('postgres', 'SELECT sam.worker_pid()');
	kill 'KILL', $pid;
	$node->poll_query_until('postgres', "SELECT sam.worker_pid() IS NOT NULL AND sam.worker_pid() <> $pid")
	  or die 'worker did not come back';
});

crash_case('sigterm', sub {
	my $pid = $node->safe_psql('postgres', 'SELECT sam.worker_pid()');
	$node->safe_psql('postgres', "SELECT pg_terminate_backend($pid)");
	$node->poll_query_until('postgres', "SELECT sam.worker_pid() IS NOT NULL AND sam.worker_pid() <> $pid")
	  or die 'worker did not come back';
});

crash_case('immediate', sub {
	$node->stop('immediate');
	$node->start;
});

# ---- a wrong API key is not the account's fault -------------------------------
open(my $fh, '>', $node->basedir . '/unipile_api_key') or die;
print $fh "wrong-key\n";
close $fh;
$node->reload;
make_account('acc-key');
my $kc = make_campaign('acc-key', undef, '[{"provider_id": "ACoKEY1"}]');
$node->safe_psql('postgres', "SELECT sam.start_campaign($kc)");
poll_until_ok($node, "SELECT error LIKE '%sam.unipile_api_key_file%' FROM sam.outbox WHERE account_id = 'acc-key'",
	'a 401 about the API key is retried with a hint, not taken for a disconnection');
is($node->safe_psql('postgres', "SELECT status FROM sam.accounts WHERE account_id = 'acc-key'"), 'active',
	'the account stays active');
open($fh, '>', $node->basedir . '/unipile_api_key') or die;
print $fh "$mock->{api_key}\n";
close $fh;
$node->reload;
poll_until_ok($node, "SELECT status = 'connection_request_sent' FROM sam.prospects WHERE provider_id = 'ACoKEY1'",
	'after the key is fixed and reloaded, the invitation goes out');

# ---- after an outage, what came due meanwhile does not go in one burst ----------
# (no DSN keeps the worker from sending; the clock moves 2 hours; the server starts again with it)
$node->append_conf('postgresql.conf', "sam.unipile_dsn = ''");
$node->restart;
$node->safe_psql('postgres',
	"SELECT sam.create_account('acc-outage', working_days => '{1,2,3,4,5,6,7}', work_start => '00:00', "
	  . "work_end => '00:00', spacing_min => '10 minutes', spacing_max => '10 minutes')");
my $oc = make_campaign('acc-outage', undef,
	'[{"provider_id": "ACoOUT1"}, {"provider_id": "ACoOUT2"}, {"provider_id": "ACoOUT3"}, {"provider_id": "ACoOUT4"}]');
is(json_query($node, "SELECT sam.start_campaign($oc)")->{queued}, 4, 'outage: four invitations queued, 10 minutes apart');
$node->safe_psql('postgres', "SELECT sam.advance_clock('2 hours')");
$node->append_conf('postgresql.conf', "sam.unipile_dsn = '$mock->{url}'");
$node->restart;
poll_until_ok($node, "SELECT count(*) = 1 FROM sam.prospects WHERE campaign_id = $oc AND status = 'connection_request_sent'",
	'after the outage, the first invitation goes');
is($node->safe_psql('postgres',
	"SELECT count(*) FROM sam.outbox WHERE account_id = 'acc-outage' AND state = 'queued' AND not_before > sam.now() + interval '9 minutes'"),
	'3', 'the other three are spaced again from now, not sent at once with it');
is(scalar(grep { ref $_->{body} eq 'HASH' && ($_->{body}{provider_id} // '') =~ /^ACoOUT/ } @{ mock_log($mock) }), 1,
	'one invitation of the four reached the mock');
like(slurp_file($node->logfile), qr/4 actions of account "acc-outage" came due while no worker was running/, 'the server log says so');

my $log = slurp_file($node->logfile);
unlike($log, qr/\Q$mock->{api_key}\E/, 'the API key appears nowhere in the server log');

$node->stop;
$mock->{handle}->kill_kill;
done_testing();
