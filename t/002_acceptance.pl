# Acceptance detection by polling (sam.check_relations, run inside the worker):
# an account with thousands of relations and a few new ones costs one page;
# cursors are followed while relations are newer than the oldest pending
# invitation; a disconnected account is reported and does not stop the
# others; stale invitations are withdrawn; the same job never runs twice.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use SamTest;
use Test::More;

my $mock = start_mock();
my $node = new_sam_node('acceptance', $mock);

sub make_account
{
	my ($id) = @_;
	$node->safe_psql('postgres',
		"SELECT sam.create_account('$id', working_days => '{1,2,3,4,5,6,7}', work_start => '00:00', "
		  . "work_end => '00:00', spacing_min => '0', spacing_max => '0')");
}

sub invite_all
{
	my ($account, @ids) = @_;
	my $cid = $node->safe_psql('postgres', "SELECT sam.create_campaign('$account', 'c-$account')->>'campaign_id'");
	$node->safe_psql('postgres',
		"SELECT sam.add_prospects($cid, '[" . join(',', map { qq({"provider_id": "$_"}) } @ids) . "]')");
	$node->safe_psql('postgres', "SELECT sam.start_campaign($cid)");
	poll_until_ok($node,
		"SELECT count(*) = " . scalar(@ids) . " FROM sam.prospects WHERE campaign_id = $cid AND status = 'connection_request_sent'",
		"$account: invitations sent");
	return $cid;
}

sub mock_now { return mock_call($mock, 'GET', '/_mock/clock')->{now_ms}; }

sub relation_pages
{
	my ($account) = @_;
	return scalar grep { $_->{path} eq '/api/v1/users/relations' && ($_->{account_id} // '') eq $account } @{ mock_log($mock) };
}

# ---- thousands of relations, a few new: one page ----------------------------
make_account('acc-big');
mock_call($mock, 'POST', '/_mock/relations',
	{ account_id => 'acc-big', count => 30000, newest_ms => mock_now() - 3600_000, spacing_ms => 60_000 });
my @new = map { "ACoNEW$_" } 1 .. 5;
mock_call($mock, 'POST', '/_mock/people', [ map { { provider_id => $_, accept_after_s => 60 } } @new[0 .. 2] ]);
invite_all('acc-big', @new);
mock_call($mock, 'POST', '/_mock/clock', { now_ms => mock_now() + 120_000 });

my $r = json_query($node, 'SELECT sam.check_relations()');
is($r->{success}, JSON::PP::true, 'check_relations succeeds');
is($r->{checked}, 5, 'it checked the five pending invitations');
is($r->{accepted}, 3, 'three were accepted');
is($r->{still_pending}, 2, 'two are still pending');
is_deeply($r->{errors}, [], 'no errors');
is(relation_pages('acc-big'), 1, 'one page of relations was fetched out of 30,000 relations');
is($node->safe_psql('postgres',
	"SELECT string_agg(provider_id || ':' || status || ':' || coalesce(connected_via, ''), ',' ORDER BY provider_id) FROM sam.prospects WHERE account_id = 'acc-big'"),
	'ACoNEW1:connected:relations,ACoNEW2:connected:relations,ACoNEW3:connected:relations,'
	  . 'ACoNEW4:connection_request_sent:,ACoNEW5:connection_request_sent:',
	'exactly the accepted prospects are connected, by the relations list');
ok($node->safe_psql('postgres',
	"SELECT bool_and(follow_up_due_at = connected_at + interval '24 hours') FROM sam.prospects WHERE account_id = 'acc-big' AND status = 'connected'") eq 't',
	'the first follow-up is due 24 hours after the acceptance');
my $again = json_query($node, 'SELECT sam.check_relations()');
is($again->{accepted}, 0, 'a second run finds nothing new');

# ---- many connections made since the invitation: the cursor is followed -------
make_account('acc-busy');
mock_call($mock, 'POST', '/_mock/people', [ { provider_id => 'ACoLATE', accept_after_s => 60 } ]);
invite_all('acc-busy', 'ACoLATE', 'ACoNEVER');
my $t0 = mock_now();
mock_call($mock, 'POST', '/_mock/clock', { now_ms => $t0 + 600_000 });
# 250 connections made after the acceptance, 2,000 long before the invitations
mock_call($mock, 'POST', '/_mock/relations',
	{ account_id => 'acc-busy', count => 250, newest_ms => $t0 + 590_000, spacing_ms => 1_000 });
mock_call($mock, 'POST', '/_mock/relations',
	{ account_id => 'acc-busy', count => 2000, newest_ms => $t0 - 30 * 86400_000, spacing_ms => 60_000 });
$r = json_query($node, 'SELECT sam.check_relations()');
is($node->safe_psql('postgres', "SELECT status FROM sam.prospects WHERE provider_id = 'ACoLATE'"), 'connected',
	'an acceptance behind 250 newer connections is found on a later page');
my $pages = relation_pages('acc-busy');
ok($pages >= 3 && $pages <= 5, "the cursor was followed, and paging stopped at the oldest pending invitation ($pages pages, not 23)");

# ---- a disconnected account is listed in errors and does not stop the others ---
make_account('acc-401');
invite_all('acc-401', 'ACoX1');
mock_call($mock, 'POST', '/_mock/people', [ { provider_id => 'ACoQUICK', accept_after_s => 1 } ]);
invite_all('acc-big', 'ACoQUICK');
mock_call($mock, 'POST', '/_mock/clock', { now_ms => mock_now() + 60_000 });
mock_call($mock, 'POST', '/_mock/accounts', { account_id => 'acc-401', status => 'disconnected' });
$r = json_query($node, 'SELECT sam.check_relations()');
is($r->{success}, JSON::PP::true, 'check_relations succeeds with one account failing');
is(scalar @{ $r->{errors} }, 1, 'one error');
is($r->{errors}[0]{account_id}, 'acc-401', 'for the disconnected account');
like($r->{errors}[0]{error}, qr/disconnected_account/, 'with the Unipile type');
is($node->safe_psql('postgres', "SELECT status FROM sam.accounts WHERE account_id = 'acc-401'"), 'disconnected',
	'the account is marked disconnected');
is($node->safe_psql('postgres', "SELECT status FROM sam.prospects WHERE provider_id = 'ACoQUICK'"), 'connected',
	'the other accounts were still checked');
$r = json_query($node, 'SELECT sam.check_relations()');
like($r->{errors}[0]{error}, qr/account is disconnected/, 'next time the disconnected account is reported without a call');

# ---- stale invitations are withdrawn --------------------------------------------
$node->safe_psql('postgres', "SELECT sam.advance_clock('22 days')");
$r = json_query($node, 'SELECT sam.check_relations()');
ok($r->{withdrawn} >= 1, "invitations pending longer than 21 days are withdrawn ($r->{withdrawn})");
is($node->safe_psql('postgres', "SELECT status FROM sam.prospects WHERE provider_id = 'ACoNEW4'"), 'withdrawn',
	'the prospect is withdrawn');
my @deletes = grep { $_->{method} eq 'DELETE' && $_->{path} =~ m{^/api/v1/users/invite/sent/} } @{ mock_log($mock) };
ok(scalar @deletes >= 1, 'through DELETE /api/v1/users/invite/sent/{id}');
my $state = mock_call($mock, 'GET', '/_mock/state?account_id=acc-big');
ok(!(grep { ($_->{invited_user_id} // '') eq 'ACoNEW4' } @{ $state->{invitations} }), 'the mock no longer holds it');

# ---- the run history and the job slot ---------------------------------------------
is($node->safe_psql('postgres', "SELECT count(*) FROM sam.job_runs WHERE job = 'check-relations' AND status = 'succeeded'"),
	'6', 'every run is in sam.job_runs');

# a run waits for the worker: with the worker busy on slow calls, a second call is skipped
mock_call($mock, 'POST', '/_mock/faults', { method => 'GET', path_prefix => '/api/v1/users/relations', delay_ms => 1500, count => -1 });
make_account('acc-slow');
invite_all('acc-slow', 'ACoS1');
my $bg = $node->background_psql('postgres');
$bg->query_until(qr/started/, "\\echo started\nSELECT sam.check_relations();\n");
$node->poll_query_until('postgres',
	"SELECT count(*) > 0 FROM sam.outbox WHERE kind = 'relations_page' AND account_id = 'acc-slow' AND state = 'in_flight'")
  or die 'slow run did not start';
$r = json_query($node, 'SELECT sam.check_relations()');
is($r->{skipped}, JSON::PP::true, 'a second run while one is waiting is skipped');
like($r->{reason}, qr/another run of check-relations is in progress/, 'and says why');
$bg->quit;
mock_call($mock, 'DELETE', '/_mock/faults');
# (the slow run ends before the next one)
poll_until_ok($node, "SELECT count(*) = 0 FROM sam.job_runs WHERE status = 'running'", 'the slow run ended');

# ---- invitations that cannot be withdrawn do not take the withdrawals' places ----------
# (fifty older ones without an invitation id took the 50 places of every run: nothing else was
# ever withdrawn again)
$node->safe_psql('postgres',
	"SELECT sam.create_account('acc-stale', working_days => '{1,2,3,4,5,6,7}', work_start => '00:00', "
	  . "work_end => '00:00', spacing_min => '0', spacing_max => '0', daily_invite_cap => 100, weekly_invite_cap => 200)");
invite_all('acc-stale', (map { "ACoSTALE$_" } 1 .. 51), 'ACoGONE');
$node->safe_psql('postgres', "UPDATE sam.prospects SET invitation_id = NULL, invited_at = invited_at - interval '1 hour'"
	  . " WHERE provider_id LIKE 'ACoSTALE%' AND provider_id <> 'ACoSTALE51'");
# (and one more without an id whose invitation LinkedIn no longer holds: declined and expired)
my $gone_id = $node->safe_psql('postgres', "SELECT invitation_id FROM sam.prospects WHERE provider_id = 'ACoGONE'");
mock_call($mock, 'DELETE', "/api/v1/users/invite/sent/$gone_id?account_id=acc-stale");
$node->safe_psql('postgres', "UPDATE sam.prospects SET invitation_id = NULL, invited_at = invited_at - interval '2 hours'"
	  . " WHERE provider_id = 'ACoGONE'");
$node->safe_psql('postgres', "SELECT sam.advance_clock('22 days')");
# (the first run cannot read the relations: an invitation missing from the sent list may be an acceptance)
mock_call($mock, 'POST', '/_mock/faults',
	{ method => 'GET', path_prefix => '/api/v1/users/relations', status => 400, type => 'errors/invalid_parameters', count => -1 });
$r = json_query($node, 'SELECT sam.check_relations()');
mock_call($mock, 'DELETE', '/_mock/faults');
is($node->safe_psql('postgres', "SELECT status FROM sam.prospects WHERE provider_id = 'ACoSTALE51'"), 'withdrawn',
	'the newer one that can be withdrawn is withdrawn, behind fifty older ones without an id');
my @sent_lists = grep { $_->{method} eq 'GET' && $_->{path} eq '/api/v1/users/invite/sent' } @{ mock_log($mock) };
is(scalar @sent_lists, 1, 'the pending sent invitations are read once (one page of 100)');
is($sent_lists[0]{query}{account_id}, 'acc-stale', 'for the account with stale invitations without an id');
is($r->{invitation_ids_found}, 50, 'the fifty are found there by their provider id');
is($r->{withdrawn}, 50, 'fifty withdrawals a run, the ones found included');
# (another account's stale invitation may take one of the fifty places)
is($node->safe_psql('postgres', "SELECT count(*) FROM sam.prospects WHERE provider_id LIKE 'ACoSTALE%' AND status = 'withdrawn'"),
	50 - $node->safe_psql('postgres', "SELECT count(*) FROM sam.outbox WHERE kind = 'withdraw_invite' AND state = 'done'"
		  . " AND account_id <> 'acc-stale' AND job_run_id = (SELECT max(id) FROM sam.job_runs WHERE job = 'check-relations')"),
	'the rest of the fifty are of the 51');
is($r->{no_longer_pending}, 0, 'with the relations unread, nothing is concluded');
is($node->safe_psql('postgres', "SELECT status FROM sam.prospects WHERE provider_id = 'ACoGONE'"), 'connection_request_sent',
	'of the invitation missing from the list');

my $gone = $node->safe_psql('postgres', "SELECT id FROM sam.prospects WHERE provider_id = 'ACoGONE'");
$r = json_query($node, 'SELECT sam.check_relations()');
is($node->safe_psql('postgres', "SELECT count(*) FROM sam.prospects WHERE provider_id LIKE 'ACoSTALE%' AND status = 'withdrawn'"),
	'51', 'the next run withdraws the last one');
is($r->{no_longer_pending} . ' ' . join(',', @{ $r->{missing_from_both_lists} }), "0 $gone",
	'and, the relations read, finds the invitation missing from both lists, once: not concluded yet');
$r = json_query($node, 'SELECT sam.check_relations()');
is($r->{no_longer_pending}, 1, 'missing again at the next run: it is no longer pending at LinkedIn');
is($node->safe_psql('postgres', "SELECT status || ': ' || last_error FROM sam.prospects WHERE provider_id = 'ACoGONE'"),
	'withdrawn: the invitation is no longer pending at LinkedIn (not among the sent invitations, and the person is '
	  . 'not a relation, in two runs): declined and expired, or withdrawn outside sam_ext',
	'whose prospect ends as withdrawn, with the reason');
$state = mock_call($mock, 'GET', '/_mock/state?account_id=acc-stale');
is(scalar(grep { ($_->{invited_user_id} // '') =~ /^ACoSTALE/ } @{ $state->{invitations} }), 0,
	'the mock holds none of them any more');
# (the pages' people, most of them no prospects, are applied, not kept)
like($node->safe_psql('postgres', "SELECT count(*) FILTER (WHERE response ? 'items') || '/' || "
	  . "count(*) FILTER (WHERE (response->>'items_not_kept')::int > 0) || '/' || count(DISTINCT kind)"
	  . " FROM sam.outbox WHERE kind IN ('relations_page', 'sent_invitations_page') AND state = 'done'"),
	qr{^0/[1-9]\d*/2$}, 'pages of relations and of sent invitations keep only the count of the people they listed');
$r = json_query($node, 'SELECT sam.check_relations()');
is($r->{no_longer_pending} . '/' . $r->{invitation_ids_found}, '0/0', 'a fourth run has nothing to do there');
@sent_lists = grep { $_->{method} eq 'GET' && $_->{path} eq '/api/v1/users/invite/sent' } @{ mock_log($mock) };
is(scalar @sent_lists, 3, 'and reads no sent list');
# an acceptance that shows later still counts
$node->safe_psql('postgres', q{SELECT sam.ingest_webhook('{"event": "new_relation", "account_id": "acc-stale", "user_provider_id": "ACoGONE"}')});
is($node->safe_psql('postgres', "SELECT status FROM sam.prospects WHERE provider_id = 'ACoGONE'"), 'connected',
	'a new_relation after that connects the prospect');

# ---- a withdrawal that finds no invitation under its id: looked up, and withdrawn under the right one ----------
$node->safe_psql('postgres',
	"SELECT sam.create_account('acc-reid', working_days => '{1,2,3,4,5,6,7}', work_start => '00:00', "
	  . "work_end => '00:00', spacing_min => '0', spacing_max => '0')");
invite_all('acc-reid', 'ACoREID');
$node->safe_psql('postgres', "UPDATE sam.prospects SET invitation_id = 'not-its-id' WHERE provider_id = 'ACoREID'");
$node->safe_psql('postgres', "SELECT sam.advance_clock('22 days')");
$r = json_query($node, 'SELECT sam.check_relations()');
is($node->safe_psql('postgres', "SELECT status || ' ' || coalesce(invitation_id, '-') FROM sam.prospects WHERE provider_id = 'ACoREID'"),
	'connection_request_sent -', 'a 404 to the withdrawal: the prospect waits, without the id');
$r = json_query($node, 'SELECT sam.check_relations()');
is($r->{invitation_ids_found}, 1, 'the next run finds its invitation in the sent list');
is($node->safe_psql('postgres', "SELECT p.status || ' ' || o.state || ' ' || o.attempts FROM sam.prospects p"
	  . " JOIN sam.outbox o ON o.prospect_id = p.id AND o.kind = 'withdraw_invite' WHERE p.provider_id = 'ACoREID'"),
	'withdrawn done 1', 'and withdraws it under that id');
$state = mock_call($mock, 'GET', '/_mock/state?account_id=acc-reid');
is(scalar(@{ $state->{invitations} }), 0, 'the mock no longer holds it');

$node->stop;
$mock->{handle}->kill_kill;
done_testing();
