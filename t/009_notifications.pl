# Notification delivery over HTTP: sam.check_pending_notifications() queues
# a POST per notification for its hook (the account's own, else the
# workspace's); the worker sends it to the URL as-is, without the Unipile
# key, retries 5xx with backoff, gives up on a 4xx, and never sends a
# delivered notification twice.  The hooks are the mock's /hooks/ receiver.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use SamTest;
use Test::More;

my $mock = start_mock();
# the mock's hooks are on 127.0.0.1: allowed here (the default refuses private addresses, below)
my $node = new_sam_node('notifications', $mock, conf => "sam.allow_private_hook_addresses = on\n");

sub hook_posts
{
	my ($prefix) = @_;
	return [ grep { $_->{path} =~ m{^\Q$prefix\E} } @{ mock_log($mock) } ];
}

for my $acc ('acc-n1', 'acc-n2')
{
	$node->safe_psql('postgres',
		"SELECT sam.create_account('$acc', working_days => '{1,2,3,4,5,6,7}', work_start => '00:00', "
		  . "work_end => '00:00', spacing_min => '0', spacing_max => '0')");
}
my $workspace_hook = "$mock->{url}/hooks/slack/T000/B000/XXXXSECRETXXXX";
my $account_hook = "$mock->{url}/hooks/acc-n2";
$node->safe_psql('postgres', "SELECT sam.set_notification_url('$workspace_hook')");
$node->safe_psql('postgres', "SELECT sam.set_notification_url('$account_hook', 'acc-n2')");

# ---- an acceptance, delivered after two 500s -------------------------------------
mock_call($mock, 'POST', '/_mock/faults', { path_prefix => '/hooks/slack', status => 500, count => 2 });
my $cid = $node->safe_psql('postgres', "SELECT sam.create_campaign('acc-n1', 'Hooks')->>'campaign_id'");
$node->safe_psql('postgres',
	qq{SELECT sam.add_prospects($cid, '[{"provider_id": "ACoH1", "first_name": "Hana", "last_name": "Hook"}]')});
$node->safe_psql('postgres', "UPDATE sam.campaigns SET status = 'running' WHERE id = $cid");
$node->safe_psql('postgres',
	"UPDATE sam.prospects SET status = 'connection_request_sent', invited_at = sam.now() WHERE provider_id = 'ACoH1'");
my $w = json_query($node,
	q{SELECT sam.ingest_webhook('{"event": "new_relation", "account_id": "acc-n1", "user_provider_id": "ACoH1"}')});
is($w->{status}, 'processed', 'the acceptance webhook is applied');

my $r = json_query($node, 'SELECT sam.check_pending_notifications()');
is($r->{notified}, 1, 'one notification announced');
is($r->{http_queued}, 1, 'and its POST queued');
poll_until_ok($node, "SELECT http_state = 'delivered' FROM sam.notifications WHERE event = 'connection_accepted'",
	'the POST is delivered in the end');
my $posts = hook_posts('/hooks/slack/');
is_deeply([ map { $_->{status} } @$posts ], [ 500, 500, 200 ], 'two 500s, retried, then 200');
is(scalar(grep { $_->{api_key_sent} } @$posts), 0, 'the Unipile API key is never sent to a hook');
is($posts->[-1]{path}, '/hooks/slack/T000/B000/XXXXSECRETXXXX', 'to the URL as given');
is($posts->[-1]{body}{text}, 'Hana Hook accepted the connection request (campaign "Hooks", account acc-n1)',
	'a Slack-compatible text field');
is($posts->[-1]{body}{event}, 'connection_accepted', 'with the event');
is($node->safe_psql('postgres',
		"SELECT o.attempts || ' ' || array_to_string(n.delivered_via, ',') || ' ' || (n.http_delivered_at IS NOT NULL)
		   FROM sam.notifications n JOIN sam.outbox o ON o.id = n.http_outbox_id WHERE n.event = 'connection_accepted'"),
	'3 notify,http true', 'marked with when and how, after three attempts');

# delivered once: another run sends nothing more
$r = json_query($node, 'SELECT sam.check_pending_notifications()');
is($r->{notified}, 0, 'a second run announces nothing');
$node->safe_psql('postgres', 'SELECT sam._wake_worker()');
is(scalar(@{ hook_posts('/hooks/slack/') }), 3, 'and posts nothing again');

# ---- the account's own hook; a disconnected account is still reported ------------
$node->safe_psql('postgres',
	"UPDATE sam.accounts SET status = 'disconnected', status_reason = 'CREDENTIALS', status_changed_at = sam.now()
	  WHERE account_id = 'acc-n2'");
$r = json_query($node, 'SELECT sam.check_pending_notifications()');
is($r->{http_queued}, 1, 'the disconnection is queued');
poll_until_ok($node, "SELECT http_state = 'delivered' FROM sam.notifications WHERE event = 'account_disconnected'",
	'and delivered although the account is disconnected');
$posts = hook_posts('/hooks/acc-n2');
is(scalar(@$posts), 1, "to the account's own hook");
like($posts->[0]{body}{text}, qr/acc-n2 is disconnected \(CREDENTIALS\)/, 'saying what happened');
is(scalar(@{ hook_posts('/hooks/slack/') }), 3, "not to the workspace's");

# ---- a hook that refuses: given up at once, and the doctor says so ----------------
mock_call($mock, 'POST', '/_mock/faults', { path_prefix => '/hooks/acc-n2', status => 404, count => -1 });
$node->safe_psql('postgres',
	"UPDATE sam.accounts SET status = 'active', status_changed_at = sam.now() + interval '1 minute'
	  WHERE account_id = 'acc-n2'");
json_query($node, 'SELECT sam.check_pending_notifications()');
poll_until_ok($node, "SELECT http_state = 'dead' FROM sam.notifications WHERE event = 'account_reconnected'",
	'a 404 is final');
is($node->safe_psql('postgres',
		"SELECT o.attempts || ' ' || n.http_error FROM sam.notifications n JOIN sam.outbox o ON o.id = n.http_outbox_id
		  WHERE n.event = 'account_reconnected'"),
	'1 HTTP 404 from the notification hook', 'after one attempt, with the reason');
is($node->safe_psql('postgres', "SELECT ok FROM sam.doctor() WHERE \"check\" = 'notifications delivered'"),
	'f', 'the doctor reports the dead delivery');
is($node->safe_psql('postgres', "SELECT count(*) FROM sam.notifications WHERE event = 'delivery_dead'"),
	'0', 'a dead notification is not itself notified');
mock_call($mock, 'DELETE', '/_mock/faults');

# ---- many POSTs, each on a connection of its own, closed after it ------------------------
$node->safe_psql('postgres',
	"SELECT sam._notify('job_failing', 'bulk:' || i, 'bulk ' || i, NULL, NULL, NULL) FROM generate_series(1, 300) i");
$r = json_query($node, 'SELECT sam.check_pending_notifications()');
is($r->{http_queued}, 300, '300 POSTs queued');
poll_until_ok($node, "SELECT count(*) = 300 FROM sam.notifications WHERE dedupe_key LIKE 'bulk:%' AND http_state = 'delivered'",
	'all delivered');
my $pid = $node->safe_psql('postgres', 'SELECT sam.worker_pid()');
my $sockets = grep { (readlink($_) // '') =~ /^socket:/ } glob("/proc/$pid/fd/*");
cmp_ok($sockets, '<', 40, "the worker holds $sockets sockets afterwards: the connections were closed, not cached");

# ---- by default a hook may not reach a private address: refused before any connection ----
$node->append_conf('postgresql.conf', "sam.allow_private_hook_addresses = off\n");
$node->reload;
poll_until_ok($node, "SELECT current_setting('sam.allow_private_hook_addresses') = 'off'", 'the setting is off');
my $before = scalar(@{ hook_posts('/hooks/') });
$node->safe_psql('postgres', "SELECT sam._notify('job_failing', 'private:1', 'to a private address', NULL, NULL, NULL)");
is(json_query($node, 'SELECT sam.check_pending_notifications()')->{http_queued}, 1, 'a POST queued');
poll_until_ok($node, "SELECT http_state = 'dead' FROM sam.notifications WHERE dedupe_key = 'private:1'",
	'it is dead at once');
like($node->safe_psql('postgres', "SELECT http_error FROM sam.notifications WHERE dedupe_key = 'private:1'"),
	qr/private address.*not sent/, 'saying why');
is($node->safe_psql('postgres', "SELECT o.attempts || ' ' || o.needs_check FROM sam.notifications n"
	  . " JOIN sam.outbox o ON o.id = n.http_outbox_id WHERE n.dedupe_key = 'private:1'"), '1 false',
	'after one attempt, with nothing to check');
is(scalar(@{ hook_posts('/hooks/') }), $before, 'the hook received nothing');

# ---- no key in any log ---------------------------------------------------------------
# (the test's own statements are logged, log_statement = all: only the others count)
my $log = join('', grep { !/ statement: / } split(/^/m, slurp_file($node->logfile)));
unlike($log, qr/XXXXSECRETXXXX/, 'the hook URL (it holds a token) is not in the server log');
unlike($log, qr/\Q$mock->{api_key}\E/, 'nor the Unipile key');

$node->stop;
$mock->{handle}->kill_kill;
done_testing();
