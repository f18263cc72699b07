# Follow-up sequences end to end with the clock moved forward: FU1..FU4 at the
# right simulated times with the right text, completion 7 days after FU4;
# stop on reply at each stage, including a reply that lands while a message
# is queued; chat reuse; the daily message cap and working hours; permanent
# and transient failures; pause and resume; overlapping runs never send a
# step twice.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use SamTest;
use Test::More;

my $mock = start_mock();
my $node = new_sam_node('follow_ups', $mock);
mock_call($mock, 'POST', '/_mock/config', { echo_sent_messages => JSON::PP::false });

# both clocks: Monday 2 March 2026 08:00 UTC, moved together
my $epoch = 1772438400;
sub set_time
{
	my ($t) = @_;
	$epoch = $t;
	$node->safe_psql('postgres', "SELECT sam.set_clock(to_timestamp($t), frozen => true)");
	mock_call($mock, 'POST', '/_mock/clock', { now_ms => $t * 1000 });
}
sub advance { set_time($epoch + $_[0]); }
set_time($epoch);

my $steps = '[{"delay": "24 hours", "template": "FU1 for {first_name|there}"},'
  . ' {"delay": "5 days", "template": "FU2 about {company|your team}"},'
  . ' {"delay": "7 days", "template": "FU3"}, {"delay": "5 days", "template": "FU4 last"}]';

sub make_account
{
	my ($id, %o) = @_;
	my %args = (working_days => "'{1,2,3,4,5,6,7}'", work_start => "'00:00'", work_end => "'00:00'",
		spacing_min => "'0'", spacing_max => "'0'", %o);
	$node->safe_psql('postgres',
		"SELECT sam.create_account('$id', " . join(', ', map { "$_ => $args{$_}" } sort keys %args) . ")");
}

# a campaign whose prospects are connected (accepted at once, seen by check_relations)
sub connected_campaign
{
	my ($account, $note, @people) = @_;
	mock_call($mock, 'POST', '/_mock/people', [ map { { accept_after_s => 1, %$_ } } @people ]);
	my $n = defined $note ? "'$note'" : 'NULL';
	my $cid = $node->safe_psql('postgres', "SELECT sam.create_campaign('$account', 'c-$account', $n, '$steps')->>'campaign_id'");
	my $list = join(',', map { my $p = $_; '{' . join(', ', map { qq("$_": "$p->{$_}") } grep { /provider_id|first_name|company/ } sort keys %$p) . '}' } @people);
	$node->safe_psql('postgres', "SELECT sam.add_prospects($cid, '[$list]')");
	$node->safe_psql('postgres', "SELECT sam.start_campaign($cid)");
	$node->poll_query_until('postgres',
		"SELECT count(*) = 0 FROM sam.prospects WHERE campaign_id = $cid AND status = 'pending'") or die 'invitations not sent';
	advance(60);
	my $cr = json_query($node, 'SELECT sam.check_relations()');
	diag("check_relations: " . JSON::PP->new->canonical->encode($cr)) unless $cr->{success} && !@{ $cr->{errors} };
	is($node->safe_psql('postgres', "SELECT count(*) FROM sam.prospects WHERE campaign_id = $cid AND status = 'connected'"),
		scalar(@people), "$account: every prospect connected");
	return $cid;
}

sub messages_to
{
	my ($provider) = @_;
	my %chat_of;
	my @out;
	for my $e (@{ mock_log($mock) })
	{
		next unless $e->{method} eq 'POST' && $e->{path} =~ m{^/api/v1/chats} && $e->{status} == 201;
		my $b = $e->{body};
		my $att = ref $b->{attendees_ids} eq 'ARRAY' ? $b->{attendees_ids}[0] : $b->{attendees_ids};
		push @out, $b->{text} if ($att // '') eq $provider
		  || ($e->{path} =~ m{/chats/([^/]+)/messages} && ($chat_of{$1} // '') eq $provider);
	}
	my $state = mock_call($mock, 'GET', '/_mock/state?account_id=' . ($_[1] // 'acc-seq'));
	return @out if @out;
	for my $c (@{ $state->{chats} })
	{
		next unless ($c->{attendee} // $c->{attendee_provider_id} // '') eq $provider;
		push @out, map { $_->{text} } grep { $_->{is_sender} || ($_->{sender_provider_id} // '') ne $provider } @{ $c->{messages} };
	}
	return @out;
}

sub our_messages
{
	my ($account, $provider) = @_;
	my $state = mock_call($mock, 'GET', "/_mock/state?account_id=$account");
	my @texts;
	for my $c (@{ $state->{chats} })
	{
		my $att = $c->{attendee} // $c->{attendee_provider_id} // '';
		next unless $att eq $provider;
		for my $m (@{ $c->{messages} })
		{
			my $from = $m->{sender_provider_id} // $m->{sender_id} // '';
			push @texts, $m->{text} if $from ne $provider;
		}
	}
	return @texts;
}

# faults match by path: keep the other campaigns out of the way while one is injected
sub only_campaign
{
	my ($cid) = @_;
	$node->safe_psql('postgres', "UPDATE sam.campaigns SET status = 'paused' WHERE status = 'running' AND id <> $cid");
}

sub run_follow_ups
{
	my $r = json_query($node, 'SELECT sam.process_follow_ups()');
	die 'process_follow_ups failed: ' . ($r->{error} // '') unless $r->{success};
	return $r;
}

# ---- the whole sequence -----------------------------------------------------
make_account('acc-seq');
my $cid = connected_campaign('acc-seq', undef,
	{ provider_id => 'ACoSEQ', first_name => 'Sam', company => 'Acme' });
my $r = run_follow_ups();
is($r->{sent}, 0, 'nothing is due right after the acceptance');
advance(24 * 3600);
$r = run_follow_ups();
is($r->{sent}, 1, 'FU1 is sent 24 hours after the acceptance');
is_deeply([ our_messages('acc-seq', 'ACoSEQ') ], ['FU1 for Sam'], 'with the rendered text, in a new chat');
ok(my $chat = $node->safe_psql('postgres', "SELECT chat_id FROM sam.prospects WHERE provider_id = 'ACoSEQ'"), 'the chat id is stored');
advance(5 * 86400 - 3600);
is(run_follow_ups()->{sent}, 0, 'FU2 is not due an hour early');
advance(3600);
is(run_follow_ups()->{sent}, 1, 'FU2 goes 5 days after FU1');
advance(7 * 86400);
is(run_follow_ups()->{sent}, 1, 'FU3 goes 7 days after FU2');
advance(5 * 86400);
is(run_follow_ups()->{sent}, 1, 'FU4 goes 5 days after FU3');
is_deeply([ our_messages('acc-seq', 'ACoSEQ') ], [ 'FU1 for Sam', 'FU2 about Acme', 'FU3', 'FU4 last' ],
	'four messages, in order, in the same chat, each once');
my $chats = grep { $_->{method} eq 'POST' && $_->{path} eq '/api/v1/chats' } @{ mock_log($mock) };
is($chats, 1, 'only the first message started a chat; the others used its chat_id');
advance(7 * 86400 - 3600);
is(run_follow_ups()->{completed}, 0, 'not completed before 7 days after FU4');
advance(3600);
$r = run_follow_ups();
is($r->{completed}, 1, '7 days after FU4 with no reply the prospect is completed');
is($node->safe_psql('postgres', "SELECT status FROM sam.prospects WHERE provider_id = 'ACoSEQ'"), 'completed', 'completed');
is($node->safe_psql('postgres', "SELECT status FROM sam.campaigns WHERE id = $cid"), 'completed',
	'the campaign is completed when every prospect reached a final state');

# ---- stop on reply at each stage --------------------------------------------
make_account('acc-reply');
my @who = map { { provider_id => "ACoRP$_", first_name => "R$_" } } 0 .. 3;
my $rc = connected_campaign('acc-reply', undef, @who);
sub reply_from
{
	my ($provider, $msgid) = @_;
	my $chat = $node->safe_psql('postgres', "SELECT coalesce(chat_id, 'chat-$provider') FROM sam.prospects WHERE provider_id = '$provider'");
	return json_query($node, qq{SELECT sam.ingest_webhook('{"event": "message_received", "account_id": "acc-reply", "chat_id": "$chat",
		"message_id": "$msgid", "message": "Thanks, not now", "sender": {"attendee_provider_id": "$provider"}}')});
}
reply_from('ACoRP0', 'r0');   # replies before any follow-up
my @delays = (24 * 3600, 5 * 86400, 7 * 86400, 5 * 86400);
for my $stage (1 .. 3)
{
	advance($delays[ $stage - 1 ]);
	run_follow_ups();
	reply_from("ACoRP$stage", "r$stage");    # replies after FU<stage>
}
advance(5 * 86400);
run_follow_ups();
advance(7 * 86400);
run_follow_ups();
for my $i (0 .. 3)
{
	my @sent = our_messages('acc-reply', "ACoRP$i");
	is(scalar @sent, $i, "ACoRP$i replied after $i follow-up(s): no message after the reply");
	is($node->safe_psql('postgres', "SELECT status FROM sam.prospects WHERE provider_id = 'ACoRP$i'"), 'replied', "ACoRP$i is replied");
}

# ---- a reply whose webhook never came: the chat is read before the next step ---
# (no webhook is registered with the mock here: its person's reply is only in the chat)
make_account('acc-lost');
connected_campaign('acc-lost', undef,
	{ provider_id => 'ACoLOST', first_name => 'Lou', reply_after_step => 1, reply_after_s => 60,
	  reply_text => 'Not now, thanks' });
advance(24 * 3600);
is(run_follow_ups()->{sent}, 1, 'lost reply: FU1 goes');
advance(5 * 86400);
$r = run_follow_ups();
is($r->{sent}, 0, 'lost reply: FU2 does not go');
is($node->safe_psql('postgres', "SELECT status FROM sam.prospects WHERE provider_id = 'ACoLOST'"), 'replied',
	'the reply found in the chat before FU2 stops the sequence');
is_deeply([ our_messages('acc-lost', 'ACoLOST') ], ['FU1 for Lou'], 'only FU1 reached the prospect');
is($node->safe_psql('postgres', "SELECT o.state || ': ' || o.error FROM sam.outbox o JOIN sam.prospects p ON p.id = o.prospect_id WHERE p.provider_id = 'ACoLOST' AND o.kind = 'send_message'"),
	'cancelled: checked before sending: the prospect replied in the chat', 'FU2 was cancelled after the look at the chat');
my @looks = grep { $_->{method} eq 'GET' && $_->{path} =~ m{^/api/v1/chats/[^/]+/messages} } @{ mock_log($mock) };
ok(scalar(@looks) >= 1, 'the chat was read (GET its messages)');

# ---- a reply that lands while the message is queued cancels it ----------------
make_account('acc-race');
my $race = connected_campaign('acc-race', undef,
	{ provider_id => 'ACoRACE1', first_name => 'A' }, { provider_id => 'ACoRACE2', first_name => 'B' });
$node->safe_psql('postgres', "UPDATE sam.accounts SET spacing_min = '50 minutes', spacing_max = '50 minutes' WHERE account_id = 'acc-race'");
advance(24 * 3600);
$r = run_follow_ups();
is($r->{sent}, 1, 'spacing: the first FU1 goes now');
is($r->{pending}, 1, 'the second waits 50 minutes in the queue (spacing)');
my $queued = $node->safe_psql('postgres', "SELECT p.provider_id FROM sam.outbox o JOIN sam.prospects p ON p.id = o.prospect_id WHERE o.account_id = 'acc-race' AND o.state = 'queued'");
json_query($node, qq{SELECT sam.ingest_webhook('{"event": "message_received", "account_id": "acc-race", "chat_id": "c-x",
	"message_id": "race-1", "message": "Please stop", "sender": {"attendee_provider_id": "$queued"}}')});
advance(3 * 3600);
$node->poll_query_until('postgres', "SELECT count(*) = 0 FROM sam.outbox WHERE account_id = 'acc-race' AND state IN ('queued', 'in_flight')");
is(scalar(our_messages('acc-race', $queued)), 0, 'the queued message was never sent after the reply');
is($node->safe_psql('postgres', "SELECT o.state || ': ' || o.error FROM sam.outbox o JOIN sam.prospects p ON p.id = o.prospect_id WHERE p.provider_id = '$queued' AND o.kind IN ('start_chat', 'send_message')"),
	'cancelled: the prospect replied', 'it was cancelled by the reply');

# ---- chat reuse: the note's chat (acceptance evidence) carries the follow-ups ---
make_account('acc-note', own_provider_id => "'ACoOWNNOTE'");
mock_call($mock, 'POST', '/_mock/accounts', { account_id => 'acc-note', provider_id => 'ACoOWNNOTE' });
my $nc = connected_campaign('acc-note', 'Hi {first_name|there}, let us connect',
	{ provider_id => 'ACoNOTE1', first_name => 'Nia' });
my $state = mock_call($mock, 'GET', '/_mock/state?account_id=acc-note');
my ($note_chat) = map { $_->{chat_id} } grep { ($_->{attendee} // $_->{attendee_provider_id} // '') eq 'ACoNOTE1' } @{ $state->{chats} };
ok($note_chat, 'accepting an invitation with a note opened a chat at the mock');
json_query($node, qq{SELECT sam.ingest_webhook('{"event": "message_received", "account_id": "acc-note", "chat_id": "$note_chat",
	"message_id": "note-1", "message": "Hi Nia, let us connect", "account_info": {"user_id": "ACoOWNNOTE"},
	"sender": {"attendee_provider_id": "ACoOWNNOTE"},
	"attendees": [{"attendee_provider_id": "ACoOWNNOTE"}, {"attendee_provider_id": "ACoNOTE1"}]}')});
is($node->safe_psql('postgres', "SELECT chat_id FROM sam.prospects WHERE provider_id = 'ACoNOTE1'"), $note_chat,
	'the chat id of the note is recorded');
advance(24 * 3600);
is(run_follow_ups()->{sent}, 1, 'FU1 sent');
my @into = grep { $_->{method} eq 'POST' && $_->{path} eq "/api/v1/chats/$note_chat/messages" } @{ mock_log($mock) };
is(scalar @into, 1, 'into the known chat (POST /api/v1/chats/{chat_id}/messages), no new chat');

# ---- the daily message cap and working hours ----------------------------------
make_account('acc-cap', daily_message_cap => 2);
my $capc = connected_campaign('acc-cap', undef, map { { provider_id => "ACoCAP$_" } } 1 .. 3);
advance(24 * 3600);
$r = run_follow_ups();
is($r->{sent}, 2, 'daily message cap 2: two messages today');
is($r->{pending}, 1, 'the third stays due');
like(join(' ', map { $_->{reason} // '' } @{ $r->{results} }), qr/daily message cap reached/, 'and the answer says why');
advance(24 * 3600);
is(run_follow_ups()->{sent}, 1, 'it goes the next day');
make_account('acc-hours', time_zone => "'Europe/Paris'");
my $hc = connected_campaign('acc-hours', undef, { provider_id => 'ACoHOURS' });
$node->safe_psql('postgres', "UPDATE sam.accounts SET working_days = '{1,2,3,4,5}', work_start = '09:00', work_end = '18:00' WHERE account_id = 'acc-hours'");
my $due = $node->safe_psql('postgres', "SELECT extract(epoch FROM follow_up_due_at)::bigint FROM sam.prospects WHERE provider_id = 'ACoHOURS'");
# the first Saturday after it is due, 21:00 UTC (22:00 in Paris)
my $day = int($due / 86400) + 1;
$day++ while (($day + 4) % 7) != 6;
set_time($day * 86400 + 21 * 3600);
$r = run_follow_ups();
is(scalar(our_messages('acc-hours', 'ACoHOURS')), 0, 'nothing is sent outside the account\'s working hours');
is($node->safe_psql('postgres', "SELECT follow_up_due_at <= sam.now() FROM sam.prospects WHERE provider_id = 'ACoHOURS'"),
	't', 'it is not taken: it stays due, in its place');
# the Monday after, 08:30 UTC (09:30 or 10:30 in Paris)
set_time(($day + 2) * 86400 + 8 * 3600 + 1800);
run_follow_ups();
is(scalar(our_messages('acc-hours', 'ACoHOURS')), 1, 'it goes once the window opens');

# ---- permanent and transient failures -----------------------------------------------
make_account('acc-fail');
my $fc = connected_campaign('acc-fail', undef, { provider_id => 'ACoPERM' });
only_campaign($fc);
mock_call($mock, 'POST', '/_mock/faults', { method => 'POST', path_prefix => '/api/v1/chats', status => 422,
	type => 'errors/no_connection_with_recipient', title => 'Recipient cannot be reached', count => 1 });
advance(24 * 3600);
$r = run_follow_ups();
is($r->{failed}, 1, 'a permanent error fails the step');
like($node->safe_psql('postgres', "SELECT status || ' ' || last_error FROM sam.prospects WHERE provider_id = 'ACoPERM'"),
	qr{^failed errors/no_connection_with_recipient: }, 'the prospect fails with the Unipile type as the reason');
make_account('acc-transient');
my $tc = connected_campaign('acc-transient', undef, { provider_id => 'ACoTRANS' });
only_campaign($tc);
mock_call($mock, 'POST', '/_mock/faults', { method => 'POST', path_prefix => '/api/v1/chats', status => 503,
	type => 'errors/service_unavailable', count => 1 });
advance(24 * 3600);
$r = run_follow_ups();
is($node->safe_psql('postgres', "SELECT follow_up_sequence_index FROM sam.prospects WHERE provider_id = 'ACoTRANS'"), '0',
	'a transient failure does not advance the sequence');
advance(600);
$node->poll_query_until('postgres', "SELECT follow_up_sequence_index = 1 FROM sam.prospects WHERE provider_id = 'ACoTRANS'")
  or diag('retry did not go through');
is(scalar(our_messages('acc-transient', 'ACoTRANS')), 1, 'after the retry the step is delivered exactly once');

# ---- pause and resume -------------------------------------------------------------
make_account('acc-pause');
my $pc = connected_campaign('acc-pause', undef, { provider_id => 'ACoPAUSE' });
$node->safe_psql('postgres', "SELECT sam.pause_campaign($pc)");
advance(24 * 3600);
$r = run_follow_ups();
is(scalar(our_messages('acc-pause', 'ACoPAUSE')), 0, 'a paused campaign sends nothing');
$node->safe_psql('postgres', "SELECT sam.resume_campaign($pc)");
is(run_follow_ups()->{sent}, 1, 'resumed, it continues where it stopped');

# ---- two overlapping runs never send a step twice -----------------------------------
make_account('acc-overlap');
my $oc = connected_campaign('acc-overlap', undef, map { { provider_id => "ACoOV$_" } } 1 .. 6);
only_campaign($oc);
mock_call($mock, 'POST', '/_mock/faults', { method => 'POST', path_prefix => '/api/v1/chats', delay_ms => 800, count => 6 });
advance(24 * 3600);
my $bg = $node->background_psql('postgres');
$bg->query_until(qr/started/, "\\echo started\nSELECT sam.process_follow_ups();\n");
$node->poll_query_until('postgres', "SELECT count(*) > 0 FROM sam.outbox WHERE account_id = 'acc-overlap' AND state = 'in_flight'");
$r = json_query($node, 'SELECT sam.process_follow_ups()');
is($r->{skipped}, JSON::PP::true, 'a second run while one is in progress is skipped');
$bg->quit;
$node->poll_query_until('postgres', "SELECT count(*) = 6 FROM sam.prospects WHERE account_id = 'acc-overlap' AND follow_up_sequence_index = 1");
$r = run_follow_ups();
is($r->{sent}, 0, 'a later run finds nothing more to send');
my $total = 0;
$total += scalar(our_messages('acc-overlap', "ACoOV$_")) for 1 .. 6;
is($total, 6, 'six prospects, six messages');

$node->stop;
$mock->{handle}->kill_kill;
done_testing();
